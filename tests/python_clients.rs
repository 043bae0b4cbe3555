//! Two more independent client implementations against a real `strait broker` process:
//! Python confluent-kafka (admin, configs, producer, group consumer, group listing and lag) and
//! the pure-Python kafka-python (admin, producer, group consumer with commits). The scripts in
//! `tests/python/` hold the checks; `scripts/test.sh` installs the pinned clients.

mod common;

use std::process::Command;

use common::{repo_root, unique, Broker};

fn run_script(script: &str) {
    let broker = Broker::start();
    let path = repo_root().join("tests/python").join(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(["--bootstrap", &broker.bootstrap(), "--suffix", &unique("s")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- broker log\n{}",
        output.status,
        broker.log_tail(40)
    );
    assert!(
        stdout.contains("all checks passed"),
        "{script} exited 0 without finishing its checks:\n{stdout}"
    );
}

#[test]
fn confluent_kafka_python_admin_configs_producer_group_consumer_and_lag() {
    run_script("confluent_client.py");
}

#[test]
fn kafka_python_admin_producer_and_group_consumer_with_commits() {
    run_script("kafka_python_client.py");
}
