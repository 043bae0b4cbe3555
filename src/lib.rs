//! The `strait` package: the command line's library half (benchmarks, process helpers), so
//! that nothing the binary does is out of reach of tests.

pub mod bench;
pub mod cluster;

/// The line `strait broker` prints on stdout once the node is up (registered and unfenced),
/// which `strait cluster` and the tests wait for.
pub fn broker_ready_line(
    node_id: i32,
    addr: std::net::SocketAddr,
    data_dir: &std::path::Path,
) -> String {
    format!(
        "strait broker: node {node_id} listening on {addr}, data dir {}",
        data_dir.display()
    )
}

/// The node id and listener address of a [`broker_ready_line`]; `None` for any other line.
pub fn parse_broker_ready_line(line: &str) -> Option<(i32, std::net::SocketAddr)> {
    let rest = line.strip_prefix("strait broker: node ")?;
    let (id, rest) = rest.split_once(" listening on ")?;
    let addr = rest.split(',').next()?;
    Some((id.parse().ok()?, addr.parse().ok()?))
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler; waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("received Ctrl-C"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_parses_back() {
        let addr: std::net::SocketAddr = "127.0.0.1:9093".parse().unwrap();
        let line = broker_ready_line(2, addr, std::path::Path::new("data/a, b"));
        assert_eq!(parse_broker_ready_line(&line), Some((2, addr)));
        assert_eq!(parse_broker_ready_line(&format!("[node-2] {line}")), None);
        assert_eq!(
            parse_broker_ready_line("strait broker: node x listening on 1.2.3.4:5, data dir d"),
            None
        );
    }
}
