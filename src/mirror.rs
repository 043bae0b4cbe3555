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
    if let Some(MirrorCommand::Status(s)) = args.command {
        return status(s).await;
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

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let addr = match (args.http, &args.config) {
        (Some(a), _) => a,
        (None, Some(path)) => MirrorConfig::load(path)?.http.unwrap_or_else(default_http),
        (None, None) => default_http(),
    };
    let status = strait_mirror::http::fetch_status(addr, Duration::from_secs(10)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", strait_mirror::metrics::render_status(&status));
    Ok(())
}
