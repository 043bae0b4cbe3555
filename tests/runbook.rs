//! `strait runbook` end to end: the shipped playbooks load and plan; a broken one is refused
//! with its file, line and column; a dry run checks its guards against real sites and a real
//! mirror, predicts the loss, and changes nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mirror::{flow_config, wait_for_records, MirrorDaemon};
use common::{generated_record, now_ms, strait_bin, wait_for, Broker};

fn runbook(dir: &Path, args: &[&str]) -> Output {
    Command::new(strait_bin())
        .arg("runbook")
        .arg("--playbooks")
        .arg(dir)
        .args(args)
        .env_remove("STRAIT_PLAYBOOKS")
        .output()
        .expect("run strait runbook")
}

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dr-playbooks")
}

#[test]
fn the_shipped_playbooks_load_list_and_plan() {
    let out = runbook(&shipped(), &["list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "failback",
            "forced-failover",
            "planned-failover",
            "volume-backup",
            "volume-restore"
        ]
    );

    let out = runbook(
        &shipped(),
        &[
            "plan",
            "planned-failover",
            "--param",
            "flow=orders",
            "--param",
            "drain_wait_ms=5000",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8(out.stdout).unwrap();
    // The steps in order, with the parameters in their arguments.
    let fence = plan
        .find("1. fence the source: fence_topics(flow=orders")
        .expect(&plan);
    let drain = plan
        .find("2. drain to lag 0: wait_for_zero_lag(flow=orders")
        .expect(&plan);
    let open = plan
        .find("6. open the target for writes: release_mirror_topics")
        .expect(&plan);
    assert!(fence < drain && drain < open, "{plan}");
    assert!(plan.contains("wait_ms=5000"), "{plan}");
    assert!(plan.contains("undo: unfence_topics(flow=orders"), "{plan}");
    // Nothing pretends to run: every action is marked until it has an executor.
    assert!(
        plan.contains("cannot run yet: strait has no executor for"),
        "{plan}"
    );
}

#[test]
fn bad_playbooks_and_bad_parameters_are_refused_with_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("oops.yaml"),
        "name: oops\ndescription: broken\nsteps:\n  - name: one\n    action: launch_missiles\n    timeout_ms: 10\non_failure: stop\n",
    )
    .unwrap();
    let out = runbook(dir.path(), &["list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oops.yaml:5:13: unknown action `launch_missiles`"),
        "{err}"
    );

    let out = runbook(
        &shipped(),
        &["plan", "planned-failover", "--param", "drain_wait_ms=10"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`drain_wait_ms` = 10 is outside 1000..=3600000"),
        "{err}"
    );

    let out = runbook(&shipped(), &["plan", "no-such-playbook"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no playbook `no-such-playbook`"), "{err}");
    assert!(err.contains("planned-failover"), "{err}");
}

fn report_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("the report was written")).unwrap()
}

#[test]
fn a_dry_run_checks_the_guards_predicts_the_loss_and_changes_nothing() {
    let a = Broker::start();
    let mut b = Broker::start();
    a.create_topic("orders", 2, &[]);
    let config = flow_config(&a, &b, "");
    let mirror = MirrorDaemon::start(&config);
    let producer = a.producer(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ts = now_ms();
    for i in 0..400 {
        producer
            .send(
                "orders",
                Some((i % 2) as i32),
                i,
                &generated_record("o", i, ts),
                deadline,
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30));
    for p in 0..2 {
        wait_for_records(&b, "a.orders", p, 200, Duration::from_secs(60));
    }
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();
    let http = mirror.http_addr().to_string();
    let report = dir.path().join("report.json");
    let dry_run = |playbook: &str, extra: &[&str]| {
        let param = format!("mirror_config={}", mirror_config.display());
        let mut args = vec![
            "run",
            playbook,
            "--dry-run",
            "--param",
            &param,
            "--mirror-http",
            &http,
        ];
        args.extend_from_slice(&["--report", report.to_str().unwrap()]);
        args.extend_from_slice(extra);
        runbook(&shipped(), &args)
    };
    // The mirror holds every partition once the heartbeats topic is in too.
    wait_for(
        "the flow_running guard to hold",
        Duration::from_secs(60),
        || {
            dry_run("planned-failover", &[])
                .status
                .success()
                .then_some(())
        },
    );

    let out = dry_run("planned-failover", &[]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&report);
    assert_eq!(r["outcome"], "dry_run", "{r:#}");
    assert_eq!(r["playbook"], "planned-failover");
    let steps = r["steps"].as_array().unwrap();
    let kinds = |kind: &str, outcome: &str| {
        steps
            .iter()
            .filter(|s| s["kind"] == kind && s["outcome"] == outcome)
            .count()
    };
    assert_eq!(kinds("guard", "succeeded"), 3, "{r:#}");
    assert_eq!(kinds("prediction", "succeeded"), 1, "{r:#}");
    assert_eq!(kinds("step", "would_run"), 6, "{r:#}");
    // The prediction covers the mirrored partitions, caught up here.
    let orders: Vec<&serde_json::Value> = r["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["topic"] == "orders")
        .collect();
    assert_eq!(orders.len(), 2, "{r:#}");
    for p in &orders {
        assert_eq!(p["source_end_offset"], 200, "{r:#}");
        assert_eq!(p["lag_records"], 0, "{r:#}");
    }
    assert_eq!(r["rpo_records"], 0, "{r:#}");
    assert!(printed.contains("dry run (nothing changed)"), "{printed}");
    eprintln!("{printed}");

    // Nothing changed: the source still takes writes, and the mirror still copies them.
    for i in 400..410 {
        producer
            .send(
                "orders",
                Some(0),
                i,
                &generated_record("o", i, ts),
                deadline,
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30));
    assert_eq!(
        producer.delivered_count(),
        410,
        "the source still takes writes"
    );
    wait_for_records(&b, "a.orders", 0, 205, Duration::from_secs(60));
    assert!(mirror.held_partitions() > 0, "the mirror still runs");

    // A forced failover's guard refuses while the source answers.
    let out = dry_run("forced-failover", &["--param", "source_timeout_ms=300"]);
    assert!(!out.status.success());
    let r = report_of(&report);
    assert_eq!(r["outcome"], "failed", "{r:#}");
    let guard = &r["steps"][0];
    assert_eq!(guard["action"], "site_unreachable");
    assert_eq!(guard["outcome"], "failed");
    assert!(
        guard["detail"]
            .as_str()
            .unwrap()
            .contains("site `a` is reachable"),
        "{r:#}"
    );
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["kind"] == "step")
            .all(|s| s["outcome"] == "skipped"),
        "{r:#}"
    );

    // With the target gone, the planned failover's guard says so.
    b.sigkill();
    let out = dry_run("planned-failover", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a guard failed"), "{err}");
    let r = report_of(&report);
    let target_guard = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "the target site is healthy")
        .unwrap()
        .clone();
    assert_eq!(target_guard["outcome"], "failed", "{r:#}");

    // And without --dry-run nothing runs: the engine says what is missing.
    let param = format!("mirror_config={}", mirror_config.display());
    let out = runbook(&shipped(), &["run", "planned-failover", "--param", &param]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not built yet"), "{err}");
}
