//! `strait runbook` end to end: the shipped playbooks load and plan; a broken one is refused
//! with its file, line and column; nothing is run.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::strait_bin;

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
