//! The `strait` package: the command line's library half (benchmarks, process helpers), so
//! that nothing the binary does is out of reach of tests.

pub mod bench;
pub mod cluster;
pub mod mirror;
pub mod runbook;
pub mod supervise;
pub mod up;

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

/// A future that completes on SIGTERM or Ctrl-C (SIGINT).
///
/// The handlers are installed by this call, not when the future is first polled: call it
/// before telling anyone the process is up (a ready line), so that a SIGTERM sent right after
/// that line is a clean shutdown rather than the signal's default action, death. Must be
/// called inside a tokio runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, Signal, SignalKind};
    let installed = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the {name} handler; {name} will not stop this process cleanly");
            None
        }
    };
    let mut term = installed(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = installed(SignalKind::interrupt(), "SIGINT");
    async fn received(signal: &mut Option<Signal>) {
        match signal {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            _ = received(&mut term) => tracing::info!("received SIGTERM"),
            _ = received(&mut interrupt) => tracing::info!("received Ctrl-C"),
        }
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
