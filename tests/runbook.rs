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
        .find("8. open the target for writes: release_mirror_topics")
        .expect(&plan);
    assert!(fence < drain && drain < open, "{plan}");
    assert!(plan.contains("wait_ms=5000"), "{plan}");
    assert!(plan.contains("undo: unfence_topics(flow=orders"), "{plan}");
    // Every action of the failovers and the failback has an executor; the volume backup
    // has none yet, and its plan says so rather than pretend.
    assert!(!plan.contains("cannot run yet"), "{plan}");
    let out = runbook(&shipped(), &["plan", "failback"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !plan.contains("cannot run yet"),
        "{plan}"
    );
    assert!(
        plan.contains("3. cut the source's divergent tail: truncate_divergent_tail"),
        "{plan}"
    );
    let out = runbook(
        &shipped(),
        &["plan", "volume-backup", "--param", "to=/nowhere"],
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        plan.contains("cannot run yet: strait has no executor for backup_site"),
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

/// The report's entry for the guard, step or check called `name`.
fn step_named(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {report:#}"))
        .clone()
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

    // The prediction reads the mirror's /status, whose source ends come from the consumer's
    // statistics (every second) and whose cursors move as acknowledgements are taken: the
    // target holding every record does not mean /status says so yet.
    wait_for(
        "the mirror's status to show both partitions caught up",
        Duration::from_secs(60),
        || {
            let status = mirror.status();
            let parts = status["flows"][0]["topics"]
                .as_array()?
                .iter()
                .find(|t| t["topic"] == "orders")?["partitions"]
                .as_array()?
                .clone();
            (parts.len() == 2
                && parts
                    .iter()
                    .all(|p| p["mirrored_offset"] == 200 && p["source_end_offset"] == 200))
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
    assert_eq!(kinds("step", "would_run"), 8, "{r:#}");
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
        assert_eq!(p["target_end_offset"], 200, "{r:#}");
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
    // Unless the operator accepts two sites taking writes: then the guard passes and says so.
    let out = dry_run(
        "forced-failover",
        &[
            "--param",
            "source_timeout_ms=300",
            "--param",
            "allow_split_brain=true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&report);
    let guard = &r["steps"][0];
    assert_eq!(guard["outcome"], "succeeded", "{r:#}");
    assert!(
        guard["detail"]
            .as_str()
            .unwrap()
            .contains("--allow-split-brain"),
        "{r:#}"
    );
    // strait failover takes that only with --forced and --yes.
    let out = Command::new(strait_bin())
        .args([
            "failover",
            "--planned",
            "--allow-split-brain",
            "--dry-run",
            "--mirror",
        ])
        .arg(&mirror_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--allow-split-brain goes with --forced and --yes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An unknown flow, and a mirror config whose flow the running mirror does not serve:
    // refused with the reason, before anything changes.
    let out = Command::new(strait_bin())
        .args([
            "failover",
            "--planned",
            "--dry-run",
            "--flow",
            "nope",
            "--mirror",
        ])
        .arg(&mirror_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no flow `nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_config = dir.path().join("other.yaml");
    std::fs::write(&other_config, flow_config(&a, &b, "    name: other\n")).unwrap();
    let out = Command::new(strait_bin())
        .args([
            "failover",
            "--planned",
            "--dry-run",
            "--mirror-http",
            &http,
            "--mirror",
        ])
        .arg(&other_config)
        .args(["--playbooks"])
        .arg(shipped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the running mirror has no flow `other`"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(protection_of(&a, "orders"), None, "nothing was fenced");

    // With the target gone, the planned failover's guard says so.
    b.sigkill();
    let out = dry_run("planned-failover", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed at guard `the target site is healthy`"),
        "{err}"
    );
    let r = report_of(&report);
    let target_guard = step_named(&r, "the target site is healthy");
    assert_eq!(target_guard["outcome"], "failed", "{r:#}");

    // A playbook with an action strait cannot execute does not start: the engine names it.
    let journal = dir.path().join("journal");
    let out = runbook(
        &shipped(),
        &[
            "run",
            "volume-backup",
            "--param",
            "to=/nowhere",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run yet: strait has no executor for backup_site"),
        "{err}"
    );
    assert!(!journal.exists(), "a refused run journals nothing");
}

/// A playbook of actions strait can execute (they only read), for the engine's tests: its
/// second step holds while a site stays silent, long enough to kill the run there.
const HOLD: &str = r#"name: hold
description: read-only steps, one of which waits, for the engine's tests
params:
  mirror_config: { type: string, description: the mirror config }
  flow: { type: string, default: a-to-b, description: the flow }
  silent_site: { type: string, default: c, description: a site that must not answer }
  hold_ms: { type: integer, default: 6000, min: 0, description: how long it must stay silent }
guards:
  - name: the flow runs
    check: flow_running
    with: { mirror_config: "${mirror_config}", flow: "${flow}" }
steps:
  - name: measure
    action: predict_loss
    with: { mirror_config: "${mirror_config}", flow: "${flow}" }
    timeout_ms: 10000
  - name: the site stays silent
    action: site_unreachable
    with: { mirror_config: "${mirror_config}", site: "${silent_site}", wait_ms: "${hold_ms}" }
    timeout_ms: 60000
    retry: { attempts: 2, initial_backoff_ms: 100, max_backoff_ms: 100 }
  - name: rpo
    action: record_rpo
    with: { mirror_config: "${mirror_config}", flow: "${flow}" }
    timeout_ms: 10000
verify:
  - name: the flow still runs
    check: flow_running
    with: { mirror_config: "${mirror_config}", flow: "${flow}" }
on_failure: stop
"#;

fn audit_lines(journal: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(journal.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
        .collect()
}

#[test]
fn a_run_is_journalled_locked_audited_and_resumed_after_sigkill() {
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 1, &[]);
    let config = flow_config(&a, &b, "");
    let mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    // A third site that is down: nothing listens on its port.
    let silent_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(
        &mirror_config,
        config.replace(
            "flows:\n",
            &format!("  c:\n    bootstrap_servers: 127.0.0.1:{silent_port}\nflows:\n"),
        ),
    )
    .unwrap();
    let playbooks = dir.path().join("playbooks");
    std::fs::create_dir(&playbooks).unwrap();
    std::fs::write(playbooks.join("hold.yaml"), HOLD).unwrap();
    let journal = dir.path().join("journal");
    let http = mirror.http_addr().to_string();
    let config_param = format!("mirror_config={}", mirror_config.display());
    let report = dir.path().join("report.json");
    let command = |args: &[&str]| {
        let mut c = Command::new(strait_bin());
        c.arg("runbook")
            .arg("--playbooks")
            .arg(&playbooks)
            .arg("--journal")
            .arg(&journal)
            .arg("--operator")
            .arg("tester")
            .args(args)
            .env_remove("STRAIT_PLAYBOOKS")
            .env_remove("STRAIT_JOURNAL");
        c
    };
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "hold",
            "--param",
            &config_param,
            "--mirror-http",
            &http,
        ];
        args.extend_from_slice(&["--report", report.to_str().unwrap()]);
        args.extend_from_slice(extra);
        command(&args).output().unwrap()
    };
    wait_for("the flow to run", Duration::from_secs(60), || {
        run(&["--dry-run"]).status.success().then_some(())
    });
    // Starts a run in the background and returns it with its id once it holds in its second
    // step (the first run whose audit shows that step starting that was not there before).
    let start_holding = || {
        let earlier: Vec<serde_json::Value> = audit_lines(&journal)
            .into_iter()
            .map(|l| l["run_id"].clone())
            .collect();
        let child = command(&[
            "run",
            "hold",
            "--param",
            &config_param,
            "--mirror-http",
            &http,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        let started = wait_for(
            "a run to reach its second step",
            Duration::from_secs(30),
            || {
                audit_lines(&journal).into_iter().find(|l| {
                    l["event"] == "step_start"
                        && l["step"] == "the site stays silent"
                        && !earlier.contains(&l["run_id"])
                })
            },
        );
        (child, started["run_id"].as_str().unwrap().to_string())
    };

    // A step that fails after its attempts stops the run (on_failure: stop).
    let out = run(&["--param", "silent_site=a", "--param", "hold_ms=200"]);
    assert!(!out.status.success());
    let r = report_of(&report);
    assert_eq!(r["outcome"], "failed", "{r:#}");
    let failed = step_named(&r, "the site stays silent");
    assert_eq!(failed["outcome"], "failed", "{r:#}");
    assert_eq!(failed["attempts"], 2, "both attempts made: {r:#}");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("site `a` is reachable"),
        "{r:#}"
    );
    assert!(
        !r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "rpo"),
        "nothing after the failed step: {r:#}"
    );

    // A run killed while its second step holds...
    let (mut first, run_id) = start_holding();
    // ...holds the flow's lock: a second run is refused, naming the holder.
    let out = run(&["--param", "hold_ms=0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("run {run_id} (hold by tester")) && err.contains("holds flow a-to-b"),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let history = command(&["history"]).output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout).to_string();
    assert!(
        history
            .lines()
            .any(|l| l.starts_with(&run_id) && l.contains("running") && l.contains("1/3 steps")),
        "{history}"
    );

    // Resumed: guards again, the completed step not repeated, the interrupted one (read-only,
    // idempotent) repeated, then the rest and the verification.
    let out = command(&[
        "resume",
        &run_id,
        "--mirror-http",
        &http,
        "--report",
        report.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&report);
    assert_eq!(r["outcome"], "succeeded", "{r:#}");
    assert_eq!(r["run_id"], run_id.as_str());
    let names: Vec<(String, String)> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("guard".to_string(), "the flow runs".to_string()),
            ("step".to_string(), "the site stays silent".to_string()),
            ("step".to_string(), "rpo".to_string()),
            ("verify".to_string(), "the flow still runs".to_string()),
        ],
        "{r:#}"
    );
    assert_eq!(r["rpo_records"], 0, "{r:#}");
    let audit: Vec<serde_json::Value> = audit_lines(&journal)
        .into_iter()
        .filter(|l| l["run_id"] == run_id.as_str())
        .collect();
    let events: Vec<&str> = audit.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"run_start"), "{events:?}");
    assert_eq!(events.last(), Some(&"run_end"), "{events:?}");
    let resumed = audit
        .iter()
        .find(|l| l["event"] == "resume")
        .expect("a resume line");
    assert_eq!(resumed["step"], "the site stays silent");
    assert_eq!(resumed["detail"], "repeating the interrupted step");
    let silent = step_named(&r, "the site stays silent");
    assert_eq!(
        silent["attempts"], 2,
        "one attempt before the kill, one after: {r:#}"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|l| l["event"] == "step_start" && l["step"] == "measure")
            .count(),
        1,
        "a completed step is not repeated: {events:?}"
    );
    assert!(audit
        .iter()
        .all(|l| l["operator"] == "tester" && l["params"].is_object()));

    // A run resumed while a guard does not hold stays open and keeps its lock.
    let (mut second, second_id) = start_holding();
    second.kill().unwrap();
    second.wait().unwrap();
    let dead_mirror = "127.0.0.1:9"; // nothing serves /status there: `the flow runs` fails
    let out = command(&["resume", &second_id, "--mirror-http", dead_mirror])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        printed.contains("the run stays open"),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["--param", "hold_ms=0"]);
    assert!(!out.status.success(), "the open run still holds the flow");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("run {second_id}")));
    let out = command(&["resume", &second_id, "--mirror-http", &http])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An ended run is not resumed again, and the lock is free for the next run.
    let out = command(&["resume", &run_id, "--mirror-http", &http])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
    let out = run(&["--param", "hold_ms=0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let history = command(&["history"]).output().unwrap();
    let history = String::from_utf8_lossy(&history.stdout).to_string();
    assert!(
        history
            .lines()
            .any(|l| l.starts_with(&run_id) && l.contains("succeeded") && l.contains("resumed 1x")),
        "{history}"
    );
}

/// `strait ARGS` against the shipped playbooks, a running mirror at `http` and `journal`,
/// approving every step.
fn dr_command(args: &[&str], http: &str, journal: &Path) -> Command {
    let mut c = Command::new(strait_bin());
    c.args(args)
        .args(["--mirror-http", http, "--yes", "--playbooks"])
        .arg(shipped())
        .arg("--journal")
        .arg(journal)
        .env_remove("STRAIT_PLAYBOOKS");
    c
}

/// `strait failover KIND --mirror CONFIG --report REPORT EXTRA...`, run to its end.
fn failover(
    kind: &str,
    mirror_config: &Path,
    report: &Path,
    extra: &[&str],
    http: &str,
    journal: &Path,
) -> Output {
    let mut args = vec![
        "failover",
        kind,
        "--mirror",
        mirror_config.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dr_command(&args, http, journal)
        .output()
        .expect("run strait failover")
}

/// The record values of `partition` of `topic` on `site`, in offset order.
fn values_of(site: &Broker, topic: &str, partition: i32) -> Vec<Option<Vec<u8>>> {
    common::mirror::read_partition(site, topic, partition)
        .into_iter()
        .map(|c| c.value)
        .collect()
}

/// Asserts that `remote` on `b` holds exactly the records of `topic` on `a`, partition by
/// partition and in order; returns how many there are.
fn assert_exact_copy(
    a: &Broker,
    topic: &str,
    b: &Broker,
    remote: &str,
    partitions: i32,
    what: &str,
) -> usize {
    let mut records = 0;
    for p in 0..partitions {
        let src = values_of(a, topic, p);
        let dst = values_of(b, remote, p);
        assert_eq!(
            src.len(),
            dst.len(),
            "{what}: partition {p}: source and target differ in length"
        );
        assert!(
            src == dst,
            "{what}: partition {p}: the target is not the source's copy"
        );
        records += src.len();
    }
    records
}

/// The write protection of `topic` on `site`, as DescribeConfigs reports it.
fn protection_of(site: &Broker, topic: &str) -> Option<String> {
    use rdkafka::admin::{AdminOptions, ResourceSpecifier};
    let admin = site.admin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = rt
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
        .expect("DescribeConfigs");
    let resource = results
        .into_iter()
        .next()
        .unwrap()
        .expect("the topic's configs");
    resource
        .entries
        .into_iter()
        .find(|e| e.name == "strait.write.protection")
        .and_then(|e| e.value)
}

/// The delivery error of one record produced to `topic` partition 0 of `site` (`None`: acked).
fn produce_one(site: &Broker, topic: &str) -> Option<rdkafka::types::RDKafkaErrorCode> {
    let producer = site.producer(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    producer
        .send(
            topic,
            Some(0),
            0,
            &generated_record("x", 0, now_ms()),
            deadline,
        )
        .unwrap();
    producer.flush(Duration::from_secs(30));
    producer.take_deliveries()[0].error_code()
}

#[test]
fn a_planned_failover_under_load_copies_everything_once_moves_the_groups_and_opens_the_target() {
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 2, &[]);
    let config = flow_config(&a, &b, "");
    let mut mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();

    // A steady producer on the source until the failover fences it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, bootstrap) = (stop.clone(), a.bootstrap());
        std::thread::spawn(move || {
            let producer = common::TestProducer::new(&bootstrap, &[]);
            let deadline = Instant::now() + Duration::from_secs(300);
            let ts = now_ms();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = producer.send(
                    "orders",
                    Some((i % 2) as i32),
                    i,
                    &generated_record("o", i, ts),
                    deadline,
                );
                i += 1;
                if i % 20 == 0 {
                    producer.poll(Duration::from_millis(10));
                }
            }
            producer.flush(Duration::from_secs(60));
            (i, producer.acked_count())
        })
    };
    for p in 0..2 {
        wait_for_records(&b, "a.orders", p, 300, Duration::from_secs(60));
    }
    // A group that consumed part of the source.
    common::mirror::commit(&a, "billing", "orders", &[(0, 150), (1, 170)]);

    // While the flow runs, its mirror topics take no writes but the mirror's.
    wait_for(
        "the mirror topic to be write-protected",
        Duration::from_secs(30),
        || protection_of(&b, "a.orders").map(|_| ()),
    );
    assert_eq!(
        protection_of(&b, "a.orders").as_deref(),
        Some("flow=a-to-b,writer=strait-mirror-a-to-b")
    );
    assert_eq!(produce_one(&b, "a.orders"), Some(PolicyViolation));

    let report = dir.path().join("report.json");
    let http = mirror.http_addr().to_string();
    let journal = dir.path().join("journal");
    // A live consumer group on the source: it reads along until the runbook asks for
    // consumers to stop (as its operator would), commits what it processed and leaves.
    let live_read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let live = {
        let (bootstrap, audit) = (a.bootstrap(), journal.join("audit.jsonl"));
        let live_read = live_read.clone();
        std::thread::spawn(move || {
            use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
            use rdkafka::Message;
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "live")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .unwrap();
            consumer.subscribe(&["orders"]).unwrap();
            let mut read = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                    read.push((m.partition(), m.offset()));
                    live_read.store(read.len(), std::sync::atomic::Ordering::Relaxed);
                    // Slower than the producer, so it is behind when the failover comes and
                    // goes on reading on the target.
                    std::thread::sleep(Duration::from_millis(2));
                }
                let asked = std::fs::read_to_string(&audit).is_ok_and(|a| {
                    a.lines().any(|l| {
                        l.contains("\"step_start\"")
                            && l.contains("consumers on the source have stopped")
                    })
                });
                if asked || Instant::now() > deadline {
                    break;
                }
            }
            // What it processed, per partition: one past the last record it read (0 where it
            // read nothing yet, having started from the beginning).
            let mut done = rdkafka::TopicPartitionList::new();
            for p in 0..2 {
                let next = read
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, o)| *o + 1)
                    .max()
                    .unwrap_or(0);
                done.add_partition_offset("orders", p, rdkafka::Offset::Offset(next))
                    .unwrap();
            }
            consumer.commit(&done, CommitMode::Sync).unwrap();
            read
        })
    };
    wait_for(
        "the live group to read on the source",
        Duration::from_secs(60),
        || (live_read.load(std::sync::atomic::Ordering::Relaxed) >= 200).then_some(()),
    );
    let started = Instant::now();
    let out = failover("--planned", &mirror_config, &report, &[], &http, &journal);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, acked) = load.join().expect("load thread");
    let read_on_a = live.join().expect("live consumer");
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}failover took {took:?}; the load sent {sent} records, {acked} acked before the fence");
    let r = report_of(&report);
    assert_eq!(r["outcome"], "succeeded", "{r:#}");
    assert_eq!(r["rpo_records"], 0, "{r:#}");
    assert!(r["rto_ms"].as_u64().is_some(), "{r:#}");
    let groups = r["groups"].as_array().unwrap();
    assert_eq!(
        groups.iter().filter(|g| g["group"] == "billing").count(),
        2,
        "{r:#}"
    );
    assert!(groups.iter().all(|g| g["verified"] == true), "{r:#}");

    // Every record the source holds is on the target once, in order: nothing lost, nothing
    // duplicated. The source was fenced under load, so some sends were refused, never acked.
    let on_source = assert_exact_copy(&a, "orders", &b, "a.orders", 2, "planned failover");
    assert!(
        acked <= on_source && acked > 600,
        "acked {acked}, on the source {on_source}"
    );
    assert!(sent > acked, "the fence refused the producer's later sends");
    // The group resumes on the target exactly where it stopped on the source.
    assert_eq!(
        common::mirror::committed(&b, "billing", "a.orders", 2),
        vec![Some(150), Some(170)]
    );
    // The live group goes on on the target from its translated offsets: together with what
    // it read on the source, every record once (the copy's offsets are the source's here).
    let ends: Vec<i64> = (0..2).map(|p| b.watermarks("a.orders", p).1).collect();
    let read_on_b = {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("group.id", "live")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "error")
            .create()
            .unwrap();
        consumer.subscribe(&["a.orders"]).unwrap();
        let mut read = Vec::new();
        let mut done = [false, false];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done.iter().all(|d| *d) {
            assert!(
                Instant::now() < deadline,
                "the live group did not reach the end on b"
            );
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    read.push((m.partition(), m.offset()));
                    if m.offset() + 1 >= ends[m.partition() as usize] {
                        done[m.partition() as usize] = true;
                    }
                }
                Some(Err(e)) => panic!("the live group on b: {e}"),
                None => {
                    for p in 0..2 {
                        let committed = common::mirror::committed(&b, "live", "a.orders", 2)[p];
                        if ends[p] == 0 || committed == Some(ends[p]) {
                            done[p] = true;
                        }
                    }
                }
            }
        }
        read
    };
    let (mut re_read, mut skipped) = (0usize, 0usize);
    for p in 0..2 {
        let mut seen: Vec<i64> = read_on_a
            .iter()
            .chain(&read_on_b)
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        seen.sort_unstable();
        let before = seen.len();
        seen.dedup();
        re_read += before - seen.len();
        skipped += (0..ends[p as usize])
            .filter(|o| seen.binary_search(o).is_err())
            .count();
    }
    eprintln!(
        "live group: {} records read on the source, {} on the target, {re_read} re-read, {skipped} skipped",
        read_on_a.len(),
        read_on_b.len()
    );
    assert!(
        !read_on_a.is_empty() && !read_on_b.is_empty(),
        "the group read on both sides"
    );
    assert_eq!(
        (re_read, skipped),
        (0, 0),
        "the live group re-read or skipped records"
    );
    // The source is fenced, the target takes writes, and the flow stays stopped.
    assert_eq!(produce_one(&a, "orders"), Some(PolicyViolation));
    assert_eq!(produce_one(&b, "a.orders"), None);
    assert_eq!(mirror.status()["flows"][0]["stopped"], true);
    mirror.sigterm_and_wait();
    mirror.restart();
    wait_for(
        "the restarted mirror to report the flow stopped",
        Duration::from_secs(30),
        || (mirror.status()["flows"][0]["stopped"] == true).then_some(()),
    );
    let on_target: i64 = (0..2).map(|p| b.watermarks("a.orders", p).1).sum();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (0..2).map(|p| b.watermarks("a.orders", p).1).sum::<i64>(),
        on_target,
        "a stopped flow copies nothing after a restart"
    );
}

#[test]
fn a_forced_failover_after_sigkill_of_the_source_loses_at_most_its_last_second_and_moves_the_groups(
) {
    let mut a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 2, &[]);
    let config = flow_config(&a, &b, "");
    let mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();

    // A steady load of about 4,000 records/s on the source; the acknowledged count is
    // sampled every 20 ms so the last second before the kill can be measured.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, usize)>::new()));
    let load = {
        let (stop, samples, bootstrap) = (stop.clone(), samples.clone(), a.bootstrap());
        std::thread::spawn(move || {
            let producer = common::TestProducer::new(&bootstrap, &[("message.timeout.ms", "3000")]);
            let deadline = Instant::now() + Duration::from_secs(300);
            let ts = now_ms();
            let started = Instant::now();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // 80 records every 20 ms.
                let due = (started.elapsed().as_millis() as usize / 20 + 1) * 80;
                while i < due {
                    let _ = producer.send(
                        "orders",
                        Some((i % 2) as i32),
                        i,
                        &generated_record("o", i, ts),
                        deadline,
                    );
                    i += 1;
                }
                producer.poll(Duration::from_millis(20));
                samples
                    .lock()
                    .unwrap()
                    .push((Instant::now(), producer.acked_count()));
            }
            producer.purge();
            producer.poll(Duration::from_millis(100));
        })
    };
    for p in 0..2 {
        wait_for_records(&b, "a.orders", p, 3_000, Duration::from_secs(60));
    }
    common::mirror::commit(&a, "billing", "orders", &[(0, 1_000), (1, 1_200)]);
    wait_for(
        "the group's offsets to reach the target",
        Duration::from_secs(30),
        || {
            (common::mirror::committed(&b, "billing", "a.orders", 2)
                == vec![Some(1_000), Some(1_200)])
            .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    a.sigkill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().expect("load thread");
    let samples = samples.lock().unwrap().clone();
    let acked_at = |t: Instant| {
        samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= t)
            .map_or(0, |s| s.1)
    };
    let acked_by_kill = acked_at(killed);
    let last_second = acked_by_kill - acked_at(killed - Duration::from_secs(1));
    assert!(
        last_second >= 2_000,
        "the load was {last_second} records/s, below 2,000"
    );

    let report = dir.path().join("report.json");
    let http = mirror.http_addr().to_string();
    let journal = dir.path().join("journal");
    let out = failover(
        "--forced",
        &mirror_config,
        &report,
        &["--source-timeout-ms", "1000"],
        &http,
        &journal,
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    let r = report_of(&report);
    assert_eq!(r["outcome"], "succeeded", "{r:#}");
    assert!(r["rto_ms"].as_u64().is_some(), "{r:#}");
    let rpo_records = r["rpo_records"].as_i64().expect("rpo_records");
    let groups = r["groups"].as_array().unwrap();
    let billing: Vec<&serde_json::Value> =
        groups.iter().filter(|g| g["group"] == "billing").collect();
    assert_eq!(billing.len(), 2, "{r:#}");
    assert!(billing.iter().all(|g| g["verified"] == true), "{r:#}");
    // The group resumes on the target where it stopped on the source: nothing skipped.
    assert_eq!(
        common::mirror::committed(&b, "billing", "a.orders", 2),
        vec![Some(1_000), Some(1_200)],
        "the report's groups: {:#}",
        r["groups"]
    );
    // The target takes writes; the flow is stopped.
    let copied: Vec<Vec<Option<Vec<u8>>>> = (0..2).map(|p| values_of(&b, "a.orders", p)).collect();
    assert_eq!(produce_one(&b, "a.orders"), None);
    assert_eq!(mirror.status()["flows"][0]["stopped"], true);

    // The source comes back: what the target holds is a prefix of it, and what is missing is
    // at most what it accepted in its last second.
    a.restart();
    let mut lost = 0usize;
    for (p, dst) in copied.iter().enumerate() {
        let src = values_of(&a, "orders", p as i32);
        assert!(
            dst.len() <= src.len(),
            "partition {p}: the target holds more than the source"
        );
        assert!(
            *dst == src[..dst.len()],
            "partition {p}: the target is not a prefix of the source"
        );
        lost += src.len() - dst.len();
    }
    eprintln!(
        "records not copied: {lost}; reported rpo_records {rpo_records}; the source acked {acked_by_kill}, {last_second} in its last second"
    );
    assert!(
        lost <= last_second,
        "{lost} records lost, more than the last second's {last_second}"
    );
}

#[test]
fn a_planned_failover_whose_verification_fails_rolls_back_and_leaves_both_sites_as_they_were() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 2, &[]);
    let config = flow_config(&a, &b, "");
    let mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();
    let producer = a.producer(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..200 {
        producer
            .send(
                "orders",
                Some((i % 2) as i32),
                i,
                &generated_record("o", i, now_ms()),
                deadline,
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30));
    for p in 0..2 {
        wait_for_records(&b, "a.orders", p, 100, Duration::from_secs(60));
    }
    // The same group already runs on the target: the mirror must not move its offsets, so
    // the verification cannot pass. It joins there before it commits on the source, or a
    // checkpoint round (every 500 ms) could sync the offsets while it joins.
    let squatter: BaseConsumer = b
        .client_config()
        .set("group.id", "billing")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    squatter.subscribe(&["a.orders"]).unwrap();
    wait_for(
        "the target's member to join",
        Duration::from_secs(30),
        || {
            let _ = squatter.poll(Duration::from_millis(100));
            (squatter.assignment().map(|a| a.count()).unwrap_or(0) > 0).then_some(())
        },
    );
    common::mirror::commit(&a, "billing", "orders", &[(0, 40), (1, 60)]);
    let wait_protected = || {
        wait_for(
            "the mirror topic to be write-protected",
            Duration::from_secs(30),
            || protection_of(&b, "a.orders").map(|_| ()),
        )
    };
    wait_protected();

    let report = dir.path().join("report.json");
    let http = mirror.http_addr().to_string();
    let journal = dir.path().join("journal");
    let out = failover("--planned", &mirror_config, &report, &[], &http, &journal);
    let _ = squatter.poll(Duration::from_millis(10));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success(),
        "a failover with a wrong group offset succeeded"
    );
    let r = report_of(&report);
    assert_eq!(r["outcome"], "rolled_back", "{r:#}");
    let verify = step_named(&r, "verify every group's translation");
    assert_eq!(verify["outcome"], "failed", "{r:#}");
    assert!(
        verify["detail"].as_str().unwrap().contains("billing"),
        "{r:#}"
    );
    let undone: Vec<&str> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "undo" && s["outcome"] == "succeeded")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(undone.contains(&"fence the source"), "{r:#}");
    // Both sites as before: the source takes writes, the target's replica does not, the flow
    // runs and copies the new record.
    assert_eq!(produce_one(&a, "orders"), None);
    assert_eq!(mirror.status()["flows"][0]["stopped"], false);
    assert_eq!(produce_one(&b, "a.orders"), Some(PolicyViolation));
    wait_for_records(&b, "a.orders", 0, 101, Duration::from_secs(60));
}

/// The steps of the shipped planned failover, in order.
const PLANNED_STEPS: [&str; 8] = [
    "fence the source",
    "drain to lag 0",
    "consumers on the source have stopped",
    "final checkpoint and group sync",
    "verify every group's translation",
    "stop the flow",
    "nothing reached the source after the drain",
    "open the target for writes",
];

#[test]
fn a_planned_failover_killed_at_any_step_and_resumed_still_copies_everything_once() {
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let a = Broker::start();
    let b = Broker::start();
    for (k, step) in PLANNED_STEPS.iter().enumerate() {
        let StepFlow {
            topic,
            remote,
            group,
            mirror,
            dir: _dir,
            mirror_config,
            journal,
            ..
        } = step_flow(&a, &b, k);
        let producer = a.producer(&[]);
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..100 {
            producer
                .send(
                    &topic,
                    Some((i % 2) as i32),
                    i,
                    &generated_record("o", i, now_ms()),
                    deadline,
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(30));
        for p in 0..2 {
            wait_for_records(&b, &remote, p, 50, Duration::from_secs(60));
        }
        common::mirror::commit(&a, &group, &topic, &[(0, 20), (1, 30)]);
        let http = mirror.http_addr().to_string();
        wait_for(
            "the flow to hold its partitions",
            Duration::from_secs(60),
            || (mirror.held_partitions() == 2).then_some(()),
        );
        kill_at_step_and_resume(
            &[
                "failover",
                "--planned",
                "--mirror",
                mirror_config.to_str().unwrap(),
            ],
            step,
            &mirror_config,
            &http,
            &journal,
        );
        // Everything once, in order; the group where it was; a fenced, b open.
        assert_exact_copy(&a, &topic, &b, &remote, 2, &format!("killed at `{step}`"));
        assert_eq!(
            common::mirror::committed(&b, &group, &remote, 2),
            vec![Some(20), Some(30)],
            "killed at `{step}`"
        );
        assert_eq!(
            produce_one(&a, &topic),
            Some(PolicyViolation),
            "killed at `{step}`"
        );
        assert_eq!(produce_one(&b, &remote), None, "killed at `{step}`");
        eprintln!("killed at `{step}`: resumed, succeeded, exact");
    }
}

/// A flow of its own on two shared sites, for one step of a kill test: topic `orders{k}` (two
/// partitions) on `a`, flow `f{k}` syncing group `billing{k}`, its mirror running, and a
/// temporary directory with the mirror config and the runs' journal.
struct StepFlow {
    topic: String,
    remote: String,
    flow: String,
    group: String,
    mirror: MirrorDaemon,
    dir: tempfile::TempDir,
    mirror_config: std::path::PathBuf,
    journal: std::path::PathBuf,
    http: String,
}

fn step_flow(a: &Broker, b: &Broker, k: usize) -> StepFlow {
    let (topic, flow, group) = (format!("orders{k}"), format!("f{k}"), format!("billing{k}"));
    a.create_topic(&topic, 2, &[]);
    let config = flow_config(a, b, &format!("    name: {flow}\n    topics: {{include: ['{topic}']}}\n    groups: {{include: ['{group}']}}\n    heartbeat_interval_ms: 0\n"));
    let mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();
    StepFlow {
        remote: format!("a.{topic}"),
        journal: dir.path().join("journal"),
        http: mirror.http_addr().to_string(),
        topic,
        flow,
        group,
        mirror,
        dir,
        mirror_config,
    }
}

/// Runs `strait ARGS` (a runbook front end), SIGKILLs it as `step` starts, resumes the run
/// with `strait runbook resume` and asserts that the resumed run succeeded; returns its report.
fn kill_at_step_and_resume(
    args: &[&str],
    step: &str,
    mirror_config: &Path,
    http: &str,
    journal: &Path,
) -> serde_json::Value {
    // The killed run's output, for the message of a run that ends before the step.
    let output = journal.with_file_name("killed-run.log");
    let log = std::fs::File::create(&output).unwrap();
    let mut child = dr_command(args, http, journal)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let run_id = kill_when_step_starts(&mut child, journal, step, &output);
    let report = journal.with_file_name("report.json");
    let out = resume_run(&run_id, mirror_config, &report, http, journal);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "killed at `{step}`, the resume failed:\n{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&report);
    assert_eq!(r["outcome"], "succeeded", "killed at `{step}`: {r:#}");
    r
}

/// SIGKILLs `child` (a runbook run) as soon as its audit log shows `step` starting; returns
/// the run's id.
fn kill_when_step_starts(
    child: &mut std::process::Child,
    journal: &Path,
    step: &str,
    output: &Path,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let run_id = loop {
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(journal.join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(l) = lines
            .iter()
            .find(|l| l["event"] == "step_start" && l["step"] == step)
        {
            child.kill().unwrap();
            break l["run_id"].as_str().unwrap().to_string();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "`{step}`: the run ended ({status}) before the step started; its output:\n{}",
                std::fs::read_to_string(output).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "step `{step}` never started");
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.wait();
    run_id
}

/// `strait runbook resume RUN_ID --report REPORT`, run to its end.
fn resume_run(
    run_id: &str,
    mirror_config: &Path,
    report: &Path,
    http: &str,
    journal: &Path,
) -> Output {
    dr_command(
        &[
            "runbook",
            "--mirror",
            mirror_config.to_str().unwrap(),
            "resume",
            run_id,
            "--report",
            report.to_str().unwrap(),
        ],
        http,
        journal,
    )
    .output()
    .unwrap()
}

/// Produces `count` records with values `PREFIX-I` to one partition of `topic` on `site`,
/// every one acknowledged.
fn produce_values(site: &Broker, topic: &str, partition: i32, prefix: &str, count: usize) {
    let producer = common::TestProducer::new(&site.bootstrap(), &[("acks", "all")]);
    let records: Vec<common::TestRecord> = (0..count)
        .map(|i| common::TestRecord::kv(format!("k{i}"), format!("{prefix}-{i}")))
        .collect();
    producer.produce_all(topic, Some(partition), &records, Duration::from_secs(30));
}

/// `POST /flows/FLOW/ACTION` to the mirror at `http`; panics unless it answers 200.
fn post_flow(http: &str, flow: &str, action: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).expect("connect to the mirror");
    write!(
        stream,
        "POST /flows/{flow}/{action} HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

fn text_values(site: &Broker, topic: &str, partition: i32) -> Vec<String> {
    values_of(site, topic, partition)
        .into_iter()
        .map(|v| String::from_utf8(v.unwrap_or_default()).unwrap())
        .collect()
}

fn strait_failback(extra: &[&str], mirror_config: &Path, http: &str, journal: &Path) -> Output {
    let mut args = vec!["failback", "--mirror", mirror_config.to_str().unwrap()];
    args.extend_from_slice(extra);
    dr_command(&args, http, journal)
        .output()
        .expect("run strait failback")
}

/// After a forced failover with a divergent tail on the source (records it acknowledged
/// while the mirror was frozen) and writes on the target during the outage, `strait
/// failback` archives the tail with a sha256, cuts it, restores the target's records on the
/// source at exactly the target's offsets, brings the group back at its translation and
/// resumes the flow, which copies nothing twice. Its dry run predicts the numbers and
/// changes nothing.
#[test]
fn a_failback_archives_the_divergent_tail_restores_the_outage_and_resumes_the_flow() {
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let mut a = Broker::start();
    let b = Broker::start();
    a.create_topic("orders", 2, &[]);
    // The mirror topic holds 7 records of someone else's before the flow's first copy, so
    // a's offset s is b's s + 7 and a group's offsets must really be translated back.
    const EARLY: i64 = 7;
    b.create_topic("a.orders", 2, &[]);
    for p in 0..2 {
        produce_values(&b, "a.orders", p, &format!("early{p}"), EARLY as usize);
    }
    let config = flow_config(&a, &b, "");
    let mirror = MirrorDaemon::start(&config);
    let dir = tempfile::tempdir().unwrap();
    let mirror_config = dir.path().join("mirror.yaml");
    std::fs::write(&mirror_config, &config).unwrap();
    let http = mirror.http_addr().to_string();
    let journal = dir.path().join("journal");

    for p in 0..2 {
        produce_values(&a, "orders", p, &format!("before{p}"), 200);
        wait_for_records(&b, "a.orders", p, 200 + EARLY, Duration::from_secs(60));
    }
    // The mirror stops copying (a frozen process would not do: a fetch it had sent before
    // the freeze is answered into its socket and read after); the source acknowledges 30
    // more records per partition and dies.
    post_flow(&http, "a-to-b", "stop");
    for p in 0..2 {
        produce_values(&a, "orders", p, &format!("tail{p}"), 30);
    }
    a.sigkill();
    let out = failover(
        "--forced",
        &mirror_config,
        &dir.path().join("failover.json"),
        &["--source-timeout-ms", "1000"],
        &http,
        &journal,
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The outage: applications write to the target (records with a header of their own), a
    // group reads into the outage's records on one partition, and another has read only the
    // records that were there before the flow.
    for p in 0..2 {
        let producer = common::TestProducer::new(&b.bootstrap(), &[("acks", "all")]);
        let records: Vec<common::TestRecord> = (0..40)
            .map(|i| {
                let mut r = common::TestRecord::kv(format!("k{i}"), format!("outage{p}-{i}"));
                r.headers = vec![("trace".to_string(), Some(format!("t{i}").into_bytes()))];
                r
            })
            .collect();
        producer.produce_all("a.orders", Some(p), &records, Duration::from_secs(30));
    }
    common::mirror::commit(
        &b,
        "billing",
        "a.orders",
        &[(0, 225 + EARLY), (1, 180 + EARLY)],
    );
    common::mirror::commit(&b, "audit", "a.orders", &[(0, 3), (1, EARLY)]);
    a.restart_on_same_port();

    // The dry run predicts each partition's tail and the records to restore, and changes
    // nothing.
    let archive = dir.path().join("archive");
    let dry = dir.path().join("dry.json");
    let out = strait_failback(
        &[
            "--dry-run",
            "--archive-dir",
            archive.to_str().unwrap(),
            "--report",
            dry.to_str().unwrap(),
        ],
        &mirror_config,
        &http,
        &journal,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report_of(&dry);
    assert_eq!(r["outcome"], "dry_run", "{r:#}");
    let tails: Vec<serde_json::Value> = r["tails"]
        .as_array()
        .expect("tails")
        .iter()
        .filter(|t| t["topic"] == "orders")
        .cloned()
        .collect();
    assert_eq!(tails.len(), 2, "{r:#}");
    for t in &tails {
        assert_eq!(
            (
                &t["divergent_from"],
                &t["divergent_to"],
                &t["divergent_records"],
                &t["target_records"]
            ),
            (&200.into(), &230.into(), &30.into(), &40.into()),
            "{r:#}"
        );
    }
    assert!(!archive.exists(), "a dry run writes no archive");
    for p in 0..2 {
        assert_eq!(a.watermarks("orders", p).1, 230, "a dry run cuts nothing");
    }
    assert_eq!(
        protection_of(&a, "orders"),
        None,
        "a dry run fences nothing"
    );
    assert_eq!(mirror.status()["flows"][0]["stopped"], true);

    let report = dir.path().join("failback.json");
    let out = strait_failback(
        &[
            "--archive-dir",
            archive.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &mirror_config,
        &http,
        &journal,
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    let r = report_of(&report);
    assert_eq!(r["outcome"], "succeeded", "{r:#}");
    assert!(r["rto_ms"].as_u64().is_some(), "{r:#}");

    // The truncation ledger: one file per partition holding exactly the tail, whose sha256
    // the report and the .sha256 file both name.
    for t in r["tails"]
        .as_array()
        .expect("tails")
        .iter()
        .filter(|t| t["topic"] == "orders")
    {
        let p = t["partition"].as_i64().unwrap();
        let file = std::path::PathBuf::from(t["file"].as_str().expect("archived"));
        assert_eq!(
            file.file_name().unwrap().to_str().unwrap(),
            format!("orders-{p}-200-230.jsonl")
        );
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let values: Vec<String> = lines
            .iter()
            .map(|l| {
                let hex = l["value"].as_str().unwrap();
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                String::from_utf8(bytes).unwrap()
            })
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("tail{p}-{i}")).collect();
        assert_eq!(values, want, "partition {p}'s archive");
        assert_eq!(
            lines
                .iter()
                .map(|l| l["offset"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            (200..230).collect::<Vec<i64>>()
        );
        let check = Command::new("sha256sum")
            .arg("-c")
            .arg(format!(
                "{}.sha256",
                file.file_name().unwrap().to_str().unwrap()
            ))
            .current_dir(file.parent().unwrap())
            .output()
            .expect("sha256sum");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let sum = std::fs::read_to_string(format!("{}.sha256", file.display())).unwrap();
        assert!(sum.starts_with(t["sha256"].as_str().unwrap()), "{sum}");
    }

    // The source holds what the target holds, offset for offset: its records up to the
    // failover, then the outage's; the tail is gone from it.
    for p in 0..2 {
        let mut want: Vec<String> = (0..200).map(|i| format!("before{p}-{i}")).collect();
        want.extend((0..40).map(|i| format!("outage{p}-{i}")));
        assert_eq!(text_values(&a, "orders", p), want, "partition {p} on a");
        // The outage's records come back whole: key, value and headers, in order.
        let restored = common::mirror::read_partition(&a, "orders", p);
        let outage = common::mirror::read_partition(&b, "a.orders", p);
        let fields = |c: &common::Consumed| (c.key.clone(), c.value.clone(), c.headers.clone());
        assert_eq!(
            restored[200..].iter().map(fields).collect::<Vec<_>>(),
            outage[(200 + EARLY) as usize..]
                .iter()
                .map(fields)
                .collect::<Vec<_>>(),
            "partition {p}: the restored records"
        );
        assert_eq!(
            restored[200].headers,
            vec![("trace".to_string(), Some(b"t0".to_vec()))]
        );
    }
    assert_mirrored_after_early(&a, &b, EARLY, "after the failback");
    // Each group resumes on the source where it stopped on the target: billing inside the
    // outage's records, audit (which had read only the records that were on b before the
    // flow) at the source's first record.
    assert_eq!(
        common::mirror::committed(&a, "billing", "orders", 2),
        vec![Some(225), Some(180)]
    );
    assert_eq!(
        common::mirror::committed(&a, "audit", "orders", 2),
        vec![Some(0), Some(0)]
    );
    // The source takes writes again, the target's mirror topic only the flow's, and the
    // flow copies what comes next once, after the outage's records.
    assert_eq!(protection_of(&a, "orders"), None);
    assert_eq!(produce_one(&b, "a.orders"), Some(PolicyViolation));
    assert_eq!(mirror.status()["flows"][0]["stopped"], false);
    produce_values(&a, "orders", 1, "after1", 10);
    wait_for_records(&b, "a.orders", 1, 250 + EARLY, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert_mirrored_after_early(&a, &b, EARLY, "after the flow resumed");
    assert_eq!(
        b.watermarks("a.orders", 1).1,
        250 + EARLY,
        "nothing copied twice"
    );
}

/// Asserts that `a.orders` on `b`, past its first `early` records, holds exactly the values
/// of `orders` on `a`, partition by partition.
fn assert_mirrored_after_early(a: &Broker, b: &Broker, early: i64, what: &str) {
    for p in 0..2 {
        let src = values_of(a, "orders", p);
        let dst = values_of(b, "a.orders", p);
        assert!(
            dst.len() >= early as usize && src[..] == dst[early as usize..],
            "{what}: partition {p}: a has {} records, b {} past its first {early}",
            src.len(),
            dst.len().saturating_sub(early as usize)
        );
    }
}

/// The steps of the shipped failback, in order.
const FAILBACK_STEPS: [&str; 10] = [
    "fence the source",
    "archive the source's divergent tail",
    "cut the source's divergent tail",
    "fence the target's mirror topics",
    "consumers on the target have stopped",
    "restore the target's records on the source",
    "translate the groups back",
    "protect the target's mirror topics again",
    "resume the flow",
    "open the source for writes",
];

/// A failback SIGKILLed as each of its steps starts, then resumed, ends `succeeded` with the
/// same result as one never interrupted: the tail archived once and cut, the outage's
/// records on the source once and in place, the group at its translation, the flow running.
#[test]
fn a_failback_killed_at_any_step_and_resumed_ends_exactly_as_an_uninterrupted_one() {
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let a = Broker::start();
    let b = Broker::start();
    for (k, step) in FAILBACK_STEPS.iter().enumerate() {
        let StepFlow {
            topic,
            remote,
            flow,
            group,
            mirror: _mirror,
            dir,
            mirror_config,
            journal,
            http,
        } = step_flow(&a, &b, k);
        for p in 0..2 {
            produce_values(&a, &topic, p, &format!("before{p}"), 50);
            wait_for_records(&b, &remote, p, 50, Duration::from_secs(60));
        }
        // The flow stops; a takes a tail; b takes records past it (written as the flow's
        // producer, which its protection lets through: the outage of a forced failover
        // without killing a for every step).
        post_flow(&http, &flow, "stop");
        let outage_writer = common::TestProducer::new(
            &b.bootstrap(),
            &[
                ("acks", "all"),
                ("client.id", &format!("strait-mirror-{flow}")),
            ],
        );
        for p in 0..2 {
            produce_values(&a, &topic, p, &format!("tail{p}"), 10);
            let records: Vec<common::TestRecord> = (0..20)
                .map(|i| common::TestRecord::kv(format!("k{i}"), format!("outage{p}-{i}")))
                .collect();
            outage_writer.produce_all(&remote, Some(p), &records, Duration::from_secs(30));
        }
        common::mirror::commit(&b, &group, &remote, &[(0, 55), (1, 45)]);

        let archive = dir.path().join("archive");
        kill_at_step_and_resume(
            &[
                "failback",
                "--flow",
                &flow,
                "--mirror",
                mirror_config.to_str().unwrap(),
                "--archive-dir",
                archive.to_str().unwrap(),
            ],
            step,
            &mirror_config,
            &http,
            &journal,
        );
        for p in 0..2 {
            let mut want: Vec<String> = (0..50).map(|i| format!("before{p}-{i}")).collect();
            want.extend((0..20).map(|i| format!("outage{p}-{i}")));
            assert_eq!(
                text_values(&a, &topic, p),
                want,
                "killed at `{step}`: partition {p} on a"
            );
            let ledger = archive.join(&flow).join(format!("{topic}-{p}-50-60.jsonl"));
            let archived = std::fs::read_to_string(&ledger)
                .unwrap_or_else(|e| panic!("killed at `{step}`: {}: {e}", ledger.display()));
            assert_eq!(
                archived.lines().count(),
                10,
                "killed at `{step}`: {}",
                ledger.display()
            );
        }
        assert_exact_copy(&a, &topic, &b, &remote, 2, &format!("killed at `{step}`"));
        assert_eq!(
            common::mirror::committed(&a, &group, &topic, 2),
            vec![Some(55), Some(45)],
            "killed at `{step}`"
        );
        assert_eq!(
            produce_one(&b, &remote),
            Some(PolicyViolation),
            "killed at `{step}`"
        );
        assert_eq!(produce_one(&a, &topic), None, "killed at `{step}`");
        wait_for_records(&b, &remote, 0, 71, Duration::from_secs(60));
        eprintln!("failback killed at `{step}`: resumed, succeeded, exact");
    }
}

/// The steps of the shipped forced failover, in order.
const FORCED_STEPS: [&str; 4] = [
    "stop the flow",
    "commit the last translated offsets",
    "open the target for writes",
    "report what may be lost",
];

/// A forced failover SIGKILLed as each of its steps starts, then resumed (the guards checked
/// again: the source is still gone), ends `succeeded`: the group on the target where it was
/// on the source, the target open, the flow stopped.
#[test]
fn a_forced_failover_killed_at_any_step_and_resumed_ends_exactly_as_an_uninterrupted_one() {
    use rdkafka::types::RDKafkaErrorCode::PolicyViolation;
    let b = Broker::start();
    for (k, step) in FORCED_STEPS.iter().enumerate() {
        // A source of its own for each step, killed before the failover.
        let mut a = Broker::start();
        let StepFlow {
            topic,
            remote,
            flow,
            group,
            mirror,
            dir: _dir,
            mirror_config,
            journal,
            http,
        } = step_flow(&a, &b, k);
        for p in 0..2 {
            produce_values(&a, &topic, p, &format!("v{p}"), 50);
            wait_for_records(&b, &remote, p, 50, Duration::from_secs(60));
        }
        common::mirror::commit(&a, &group, &topic, &[(0, 20), (1, 30)]);
        wait_for(
            "the group's offsets to reach the target",
            Duration::from_secs(30),
            || {
                (common::mirror::committed(&b, &group, &remote, 2) == vec![Some(20), Some(30)])
                    .then_some(())
            },
        );
        assert_eq!(produce_one(&b, &remote), Some(PolicyViolation));
        a.sigkill();

        kill_at_step_and_resume(
            &[
                "failover",
                "--forced",
                "--source-timeout-ms",
                "1000",
                "--flow",
                &flow,
                "--mirror",
                mirror_config.to_str().unwrap(),
            ],
            step,
            &mirror_config,
            &http,
            &journal,
        );
        for p in 0..2 {
            let want: Vec<String> = (0..50).map(|i| format!("v{p}-{i}")).collect();
            assert_eq!(
                text_values(&b, &remote, p),
                want,
                "killed at `{step}`: partition {p}"
            );
        }
        assert_eq!(
            common::mirror::committed(&b, &group, &remote, 2),
            vec![Some(20), Some(30)],
            "killed at `{step}`"
        );
        assert_eq!(
            produce_one(&b, &remote),
            None,
            "killed at `{step}`: b takes writes"
        );
        assert_eq!(
            mirror.status()["flows"][0]["stopped"],
            true,
            "killed at `{step}`"
        );
        eprintln!("forced failover killed at `{step}`: resumed, succeeded");
    }
}
