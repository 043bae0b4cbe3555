//! `strait mirror` and `strait mirror status`: the command-line edge of strait-mirror.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strait_mirror::config::{MirrorConfig, HTTP_DEFAULT};
use strait_mirror::daemon::{ready_line, Daemon, DaemonOptions};
use tokio::sync::watch;

/// Arguments of `strait mirror`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MirrorArgs {
    /// Mirror config (YAML): clusters by alias and the flows between them, e.g.
    /// configs/mirror-a-to-b.yaml.
    #[arg(long, value_name = "FILE", required = false)]
    pub config: Option<PathBuf>,
    /// Keep the offset index (sled) in DIR instead of the config's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Serve /metrics and /status on HOST:PORT instead of the config's `http` (port 0 picks a
    /// free port; the ready line says which).
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Option<MirrorCommand>,
}

/// Subcommands of `strait mirror`.
#[derive(Debug, clap::Subcommand)]
pub enum MirrorCommand {
    /// Print a running daemon's flows, topics and per-partition lag (from its /status).
    Status(StatusArgs),
    /// Resume a partition the mirror stopped because its source diverged (truncated below
    /// what was mirrored, or deleted and recreated): stops the flow, records that the
    /// source is copied again from --from (default: where it diverged), appended after what
    /// the target holds, and starts the flow again. The target's copies of records the
    /// source no longer holds stay there, no longer translated; their offsets are printed.
    ResolveDivergence(ResolveArgs),
}

/// Arguments of `strait mirror resolve-divergence`.
#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    /// The daemon's HTTP address; defaults to the config's `http`, else 127.0.0.1:9780.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
    /// Read the daemon's address from this mirror config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The flow (as named in the mirror config).
    #[arg(long)]
    pub flow: String,
    /// The source topic.
    #[arg(long)]
    pub topic: String,
    /// The partition.
    #[arg(long)]
    pub partition: i32,
    /// Copy the source again from this offset (at most where it diverged, which is the
    /// default).
    #[arg(long, value_name = "OFFSET")]
    pub from: Option<i64>,
}

/// Arguments of `strait mirror status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The daemon's HTTP address; defaults to the config's `http`, else 127.0.0.1:9780.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
    /// Read the daemon's address from this mirror config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the raw JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn default_http() -> SocketAddr {
    HTTP_DEFAULT.parse().expect("HTTP_DEFAULT is an address")
}

/// Runs `strait mirror`.
pub async fn run(args: MirrorArgs) -> anyhow::Result<()> {
    match args.command {
        Some(MirrorCommand::Status(s)) => return status(s).await,
        Some(MirrorCommand::ResolveDivergence(r)) => return resolve_divergence(r).await,
        None => {}
    }
    let path = args
        .config
        .context("--config FILE is required (e.g. configs/mirror-a-to-b.yaml)")?;
    let config = MirrorConfig::load(&path)?;
    let data_dir = args
        .data_dir
        .or_else(|| config.data_dir.clone())
        .with_context(|| {
            format!(
                "{}: no data_dir; set one or pass --data-dir DIR",
                path.display()
            )
        })?;
    let http = args.http.or(config.http).unwrap_or_else(default_http);
    let flows: Vec<_> = config.enabled_flows().cloned().collect();
    if flows.is_empty() {
        tracing::warn!(config = %path.display(), "no enabled flow; serving status only");
    }
    let daemon = Daemon::bind(DaemonOptions {
        config,
        data_dir: data_dir.clone(),
        http,
    })
    .await?;
    let shutdown = crate::shutdown_signal();
    let flow_refs: Vec<_> = flows.iter().collect();
    println!("{}", ready_line(daemon.http_addr(), &flow_refs));
    tracing::info!(data_dir = %data_dir.display(), "offset index in {}/index", data_dir.display());
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(daemon.run(stop));
    shutdown.await;
    let _ = stop_tx.send(true);
    run.await.context("the mirror daemon panicked")??;
    tracing::info!("mirror stopped cleanly");
    Ok(())
}

/// The daemon's address: `--http`, else the config's `http`, else the default.
fn daemon_addr(http: Option<SocketAddr>, config: Option<&PathBuf>) -> anyhow::Result<SocketAddr> {
    Ok(match (http, config) {
        (Some(a), _) => a,
        (None, Some(path)) => MirrorConfig::load(path)?.http.unwrap_or_else(default_http),
        (None, None) => default_http(),
    })
}

async fn resolve_divergence(args: ResolveArgs) -> anyhow::Result<()> {
    use strait_mirror::http::{fetch_status, post_control};
    let addr = daemon_addr(args.http, args.config.as_ref())?;
    let timeout = Duration::from_secs(40);
    let flow = &args.flow;
    let status = fetch_status(addr, timeout).await?;
    let was_stopped = status
        .flows
        .iter()
        .find(|f| &f.name == flow)
        .with_context(|| format!("the daemon at {addr} runs no flow `{flow}`"))?
        .stopped;
    if !was_stopped {
        eprintln!("stopping flow {flow}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = post_control(addr, flow, "stop", timeout).await?;
            if answer["state"] == "stopped" {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "flow {flow} did not stop within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let mut action = format!(
        "resolve-divergence?topic={}&partition={}",
        args.topic, args.partition
    );
    if let Some(from) = args.from {
        action.push_str(&format!("&from={from}"));
    }
    let resolved = post_control(addr, flow, &action, timeout).await;
    if !was_stopped {
        eprintln!("starting flow {flow} again");
        post_control(addr, flow, "start", timeout).await?;
    }
    let resolved = resolved?;
    let r = &resolved["resolved"];
    println!(
        "{}/{}: the source is copied again from offset {}, to the target from offset {}",
        args.topic, args.partition, r["cursor"]["source_next"], r["cursor"]["target_next"]
    );
    let stale = &r["stale_target_offsets"];
    if stale[0] != stale[1] {
        println!(
            "target offsets {}..{} hold copies of source records mirrored before the divergence; they stay on the target and are no longer translated",
            stale[0], stale[1]
        );
    }
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let addr = daemon_addr(args.http, args.config.as_ref())?;
    let status = strait_mirror::http::fetch_status(addr, Duration::from_secs(10)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", strait_mirror::metrics::render_status(&status));
    Ok(())
}
