//! `strait up`: the whole local DR setup in one command. Site a and site b (three nodes each,
//! `strait cluster` children) start together; once both are up, the a -> b mirror (`strait
//! mirror`) starts. One summary says where everything listens. SIGTERM or Ctrl-C stops the
//! mirror first (so it records its offset runs and commits while both sites still run), then
//! both sites.
//!
//! Each part is the same process a user would start by hand, so `strait up` adds nothing the
//! parts do not do alone: it is [`crate::supervise`] over three children.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use strait_mirror::config::{MirrorConfig, HTTP_DEFAULT};

use crate::cluster::ClusterFile;
use crate::supervise::{ChildSpec, Supervisor};

/// `strait up`'s arguments.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Keep all data under DIR: DIR/site-a/node-N, DIR/site-b/node-N and DIR/mirror (instead
    /// of each config's own data_dir, which for the shipped configs is data/ in the checkout).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cluster file of the primary site.
    #[arg(long, value_name = "FILE", default_value = "configs/site-a.yaml")]
    pub site_a: PathBuf,
    /// Cluster file of the DR site.
    #[arg(long, value_name = "FILE", default_value = "configs/site-b.yaml")]
    pub site_b: PathBuf,
    /// Mirror config; its clusters must point at the two sites.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "configs/mirror-a-to-b.yaml"
    )]
    pub mirror: PathBuf,
    /// Stop everything and exit non-zero if the sites, or then the mirror, are not up after
    /// this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub startup_timeout_s: u64,
    /// After SIGTERM / Ctrl-C, how long the mirror and then each site get to stop cleanly
    /// before they are killed (SIGKILL).
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_s: u64,
}

/// Labels of the three children (their output is prefixed `[site-a]`, `[site-b]`, `[mirror]`).
const SITE_A: &str = "site-a";
const SITE_B: &str = "site-b";
const MIRROR: &str = "mirror";

/// The line `strait up` prints once everything is up.
pub fn ready_line(site_a: &str, site_b: &str, mirror_http: &str) -> String {
    format!("strait up: ready: site-a {site_a}; site-b {site_b}; mirror http://{mirror_http}")
}

/// Site a's bootstrap, site b's bootstrap and the mirror's HTTP address of a [`ready_line`].
pub fn parse_ready_line(line: &str) -> Option<(String, String, SocketAddr)> {
    let rest = line.strip_prefix("strait up: ready: site-a ")?;
    let (a, rest) = rest.split_once("; site-b ")?;
    let (b, http) = rest.split_once("; mirror http://")?;
    Some((a.to_string(), b.to_string(), http.parse().ok()?))
}

/// Fails when a config `strait up` starts from is missing, saying how to find it (the
/// defaults are relative to the checkout's root).
fn check_exists(path: &Path, flag: &str) -> anyhow::Result<()> {
    if !path.exists() {
        bail!(
            "{}: no such file; run strait up from the repository's root (the defaults are relative to it) or pass {flag} FILE",
            path.display()
        );
    }
    Ok(())
}

/// The Kafka listeners of a site's nodes (as clients are told to reach them).
fn site_addresses(site: &ClusterFile) -> BTreeSet<String> {
    site.nodes
        .iter()
        .map(|n| {
            n.config
                .advertised
                .clone()
                .unwrap_or_else(|| n.config.listen.to_string())
        })
        .collect()
}

/// Every enabled flow of the mirror must read from site a and write to site b; anything else
/// would start a mirror that waits forever for clusters `strait up` does not run.
fn check_mirror_points_at_sites(
    mirror: &MirrorConfig,
    mirror_path: &Path,
    site_a: &ClusterFile,
    site_b: &ClusterFile,
) -> anyhow::Result<()> {
    let a = site_addresses(site_a);
    let b = site_addresses(site_b);
    let mut flows = 0;
    for flow in mirror.enabled_flows() {
        flows += 1;
        for (role, alias, site, addrs) in [
            ("source", &flow.source, site_a, &a),
            ("target", &flow.target, site_b, &b),
        ] {
            let servers = &mirror.cluster(alias).bootstrap_servers;
            if !servers.split(',').any(|s| addrs.contains(s.trim())) {
                bail!(
                    "{}: flow {}: its {role} `{alias}` ({servers}) is none of {}'s nodes ({}), which strait up runs as the {role}",
                    mirror_path.display(),
                    flow.name,
                    site.name,
                    addrs.iter().cloned().collect::<Vec<_>>().join(",")
                );
            }
        }
    }
    if flows == 0 {
        bail!("{}: no enabled flow to run", mirror_path.display());
    }
    Ok(())
}

fn cluster_spec(label: &str, site: &ClusterFile, data_root: Option<&Path>) -> ChildSpec {
    let mut args: Vec<OsString> = vec![
        "cluster".into(),
        "--config".into(),
        site.path.clone().into(),
    ];
    let data = match data_root {
        Some(root) => {
            let dir = root.join(label);
            args.push("--data-dir".into());
            args.push(dir.clone().into());
            format!("data in {}/node-N", dir.display())
        }
        None => "data in each node file's data_dir".to_string(),
    };
    let name = site.name.clone();
    ChildSpec {
        label: label.to_string(),
        display: site.name.clone(),
        args,
        details: format!("strait cluster --config {}, {data}", site.path.display()),
        ready: Arc::new(move |line: &str| {
            crate::cluster::parse_ready_line(line)
                .filter(|(ready_name, _)| *ready_name == name)
                .map(|(_, bootstrap)| bootstrap)
        }),
        env: Vec::new(),
    }
}

fn mirror_spec(path: &Path, data_root: Option<&Path>) -> ChildSpec {
    let mut args: Vec<OsString> = vec!["mirror".into(), "--config".into(), path.into()];
    let data = match data_root {
        Some(root) => {
            let dir = root.join(MIRROR);
            args.push("--data-dir".into());
            args.push(dir.clone().into());
            format!("index in {}", dir.display())
        }
        None => "index in the config's data_dir".to_string(),
    };
    ChildSpec {
        label: MIRROR.to_string(),
        display: MIRROR.to_string(),
        args,
        details: format!("strait mirror --config {}, {data}", path.display()),
        ready: Arc::new(|line: &str| {
            strait_mirror::daemon::parse_ready_line(line).map(|a| a.to_string())
        }),
        env: Vec::new(),
    }
}

/// `strait up`: see the module documentation. Fails, after stopping whatever runs, if a part
/// exits or is not up in time during startup, or if a part does not stop cleanly.
///
/// Must be polled on a thread that lives as long as the supervisor (see
/// [`crate::supervise`]): `Runtime::block_on(run(args))` does that.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    check_exists(&args.site_a, "--site-a")?;
    check_exists(&args.site_b, "--site-b")?;
    check_exists(&args.mirror, "--mirror")?;
    let site_a = ClusterFile::load(&args.site_a)?;
    let site_b = ClusterFile::load(&args.site_b)?;
    let mirror = MirrorConfig::load(&args.mirror)?;
    check_mirror_points_at_sites(&mirror, &args.mirror, &site_a, &site_b)?;
    if args.data_dir.is_none() && mirror.data_dir.is_none() {
        bail!(
            "{}: no data_dir; set one or pass --data-dir DIR",
            args.mirror.display()
        );
    }
    let flows: Vec<String> = mirror
        .enabled_flows()
        .map(|f| format!("{} ({} -> {})", f.name, f.source, f.target))
        .collect();
    let data_root = args.data_dir.as_deref();

    let mut sup = Supervisor::new(
        "strait up",
        "",
        "; `strait up` does not restart it, stop it with Ctrl-C and run it again",
    )?;
    // Installed before anything starts, so a signal during startup stops what runs.
    let shutdown = crate::shutdown_signal();
    tokio::pin!(shutdown);
    let startup_timeout = Duration::from_secs(args.startup_timeout_s);
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_s);

    sup.say(format_args!(
        "starting {} and {} (three nodes each), then the mirror {}",
        site_a.name,
        site_b.name,
        flows.join(", ")
    ))
    .await;
    let mut started: anyhow::Result<Vec<String>> = Ok(Vec::new());
    for spec in [
        cluster_spec(SITE_A, &site_a, data_root),
        cluster_spec(SITE_B, &site_b, data_root),
    ] {
        if let Err(e) = sup.spawn(spec).await {
            started = Err(e);
            break;
        }
    }
    if started.is_ok() {
        started = sup
            .wait_ready(
                startup_timeout,
                "a site is up once all its nodes are",
                &mut shutdown,
            )
            .await;
    }
    if started.is_ok() {
        started = match sup.spawn(mirror_spec(&args.mirror, data_root)).await {
            Ok(()) => {
                sup.wait_ready(
                    startup_timeout,
                    "the mirror is up once its HTTP port serves",
                    &mut shutdown,
                )
                .await
            }
            Err(e) => Err(e),
        };
    }
    let reports = match started {
        Ok(reports) => reports,
        Err(e) => {
            sup.warn(format_args!("{e:#}; stopping everything")).await;
            sup.stop(Some(&[MIRROR]), shutdown_timeout).await;
            sup.stop(None, shutdown_timeout).await;
            sup.finish().await;
            return Err(e);
        }
    };
    // In start order: site a, site b, mirror.
    let [a_bootstrap, b_bootstrap, http] = <[String; 3]>::try_from(reports)
        .map_err(|r| anyhow::anyhow!("expected three parts up, have {}", r.len()))?;
    let line = ready_line(&a_bootstrap, &b_bootstrap, &http);
    sup.say(line.strip_prefix("strait up: ").unwrap_or(&line))
        .await;
    let status_hint = if http == HTTP_DEFAULT {
        "strait mirror status".to_string()
    } else {
        format!("strait mirror status --http {http}")
    };
    for text in [
        format!("  {:<8} Kafka bootstrap {a_bootstrap}", site_a.name),
        format!("  {:<8} Kafka bootstrap {b_bootstrap}", site_b.name),
        format!(
            "  {:<8} {}: http://{http}/metrics, http://{http}/status",
            MIRROR,
            flows.join(", ")
        ),
        format!("  {:<8} {status_hint}", "lag"),
        format!(
            "  {:<8} {}",
            "data",
            match data_root {
                Some(d) => d.display().to_string(),
                None => "each config's data_dir".to_string(),
            }
        ),
        "Ctrl-C or SIGTERM stops the mirror, then both sites.".to_string(),
    ] {
        sup.say(text).await;
    }

    let supervised = sup.supervise(&mut shutdown).await;
    // The mirror first: it flushes its offset runs to site b and commits on site a, so both
    // must still run.
    let mut problems = sup.stop(Some(&[MIRROR]), shutdown_timeout).await;
    problems.extend(sup.stop(None, shutdown_timeout).await);
    if supervised.is_ok() && problems.is_empty() {
        sup.say("stopped").await;
    }
    sup.finish().await;
    supervised?;
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_parses_back() {
        let line = ready_line("127.0.0.1:1,127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:9780");
        let (a, b, http) = parse_ready_line(&line).unwrap();
        assert_eq!(a, "127.0.0.1:1,127.0.0.1:2");
        assert_eq!(b, "127.0.0.1:3");
        assert_eq!(http, "127.0.0.1:9780".parse().unwrap());
        assert!(parse_ready_line(&format!("[mirror] {line}")).is_none());
    }

    #[test]
    fn the_shipped_mirror_runs_between_the_shipped_sites_and_not_the_other_way() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let a = ClusterFile::load(&root.join("site-a.yaml")).unwrap();
        let b = ClusterFile::load(&root.join("site-b.yaml")).unwrap();
        let a_to_b = root.join("mirror-a-to-b.yaml");
        let mirror = MirrorConfig::load(&a_to_b).unwrap();
        check_mirror_points_at_sites(&mirror, &a_to_b, &a, &b).unwrap();
        let err = check_mirror_points_at_sites(&mirror, &a_to_b, &b, &a)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("flow a-to-b: its source `a` (127.0.0.1:9092,"),
            "{err}"
        );
        assert!(err.contains("none of site-b's nodes"), "{err}");
    }
}
