//! Interoperability with the `kcat` command line client (Debian package
//! `kcat`), including records crossing between kcat and rdkafka.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::Offset;

const KCAT_TIMEOUT: Duration = Duration::from_secs(60);
const N: usize = 500;

/// The kcat binary. Missing kcat is a test failure, never a silent skip.
fn kcat_bin() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("kcat");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the `kcat` binary is not on PATH; these tests need it. The README's test command \
         installs it (Debian/Ubuntu package `kcat`: apt-get install -y kcat)"
    );
}

/// Runs kcat with `args`, feeding `stdin`, bounded by KCAT_TIMEOUT; asserts
/// exit status 0 and returns stdout.
fn run_kcat(args: &[&str], stdin: Option<&str>) -> String {
    let bin = kcat_bin();
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_string();
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
            // Dropping the pipe closes kcat's stdin: it then flushes and exits.
        })
    });
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + KCAT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait kcat") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_reader.join().unwrap_or_default();
            panic!("kcat {args:?} did not finish within {KCAT_TIMEOUT:?}; stderr:\n{err}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "kcat {args:?} exited with {status}; stderr:\n{err}"
    );
    assert!(
        !err.contains("ERROR"),
        "kcat {args:?} reported errors on stderr:\n{err}"
    );
    out
}

fn kv_lines(tag: &str) -> Vec<(String, String)> {
    (0..N)
        .map(|i| {
            let noise: String = pseudo_random_bytes(i as u64 + 7, 12)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (
                format!("{tag}-key-{i:05}"),
                format!("{tag} value {i} {noise}"),
            )
        })
        .collect()
}

fn kcat_produce(bootstrap: &str, topic: &str, lines: &[(String, String)], extra: &[&str]) {
    let mut input = String::new();
    for (k, v) in lines {
        input.push_str(&format!("{k}:{v}\n"));
    }
    let mut args = vec!["-P", "-b", bootstrap, "-t", topic, "-K:"];
    args.extend_from_slice(extra);
    run_kcat(&args, Some(&input));
}

/// Consumes the whole (single-partition) topic with kcat: (key, value, offset).
fn kcat_consume(bootstrap: &str, topic: &str) -> Vec<(String, String, i64)> {
    let out = run_kcat(
        &[
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            r"%k:%s:%o\n",
        ],
        None,
    );
    out.lines()
        .map(|line| {
            let (rest, offset) = line
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("unexpected kcat output line {line:?}"));
            let (key, value) = rest
                .split_once(':')
                .unwrap_or_else(|| panic!("unexpected kcat output line {line:?}"));
            let offset = offset
                .parse()
                .unwrap_or_else(|_| panic!("bad offset in kcat output line {line:?}"));
            (key.to_string(), value.to_string(), offset)
        })
        .collect()
}

fn assert_kcat_output(expected: &[(String, String)], got: &[(String, String, i64)], what: &str) {
    assert_eq!(
        got.len(),
        expected.len(),
        "{what}: kcat read {} records, expected {}",
        got.len(),
        expected.len()
    );
    for (i, ((k, v), (gk, gv, go))) in expected.iter().zip(got).enumerate() {
        assert_eq!(*go, i as i64, "{what}: offsets not dense from 0 at #{i}");
        assert_eq!(gk, k, "{what}: key of #{i}");
        assert_eq!(gv, v, "{what}: value of #{i}");
    }
}

#[test]
fn kcat_round_trip() {
    let kcat = kcat_bin(); // fail early, with the install hint, if missing
    let broker = Broker::start();
    let b = broker.bootstrap();
    eprintln!("using {}", kcat.display());

    // kcat -> kcat, uncompressed and snappy.
    for (codec, extra) in [("none", &[][..]), ("snappy", &["-z", "snappy"][..])] {
        let topic = unique(&format!("kcat-{codec}"));
        let lines = kv_lines(&format!("kc-{codec}"));
        kcat_produce(&b, &topic, &lines, extra);
        let got = kcat_consume(&b, &topic);
        assert_kcat_output(&lines, &got, &format!("kcat -> kcat ({codec})"));
    }

    // rdkafka -> kcat.
    {
        let topic = unique("rdkafka-to-kcat");
        let lines = kv_lines("rk");
        let records: Vec<TestRecord> = lines
            .iter()
            .map(|(k, v)| TestRecord::kv(k.as_bytes(), v.as_bytes()))
            .collect();
        broker.create_topic(&topic, 1, &[]);
        let p = broker.producer(&[("compression.type", "zstd"), ("linger.ms", "20")]);
        let acked = p.produce_all(&topic, None, &records, Duration::from_secs(60));
        drop(p);
        for (i, &(_, off)) in acked.iter().enumerate() {
            assert_eq!(off, i as i64, "rdkafka acknowledged record #{i} at {off}");
        }
        let got = kcat_consume(&b, &topic);
        assert_kcat_output(&lines, &got, "rdkafka -> kcat (zstd)");
    }

    // kcat -> rdkafka.
    {
        let topic = unique("kcat-to-rdkafka");
        let lines = kv_lines("kr");
        kcat_produce(&b, &topic, &lines, &["-z", "gzip"]);
        let got = broker.consume_all(
            &topic,
            0,
            Offset::Beginning,
            lines.len(),
            Duration::from_secs(60),
        );
        let expected: Vec<TestRecord> = lines
            .iter()
            .map(|(k, v)| TestRecord::kv(k.as_bytes(), v.as_bytes()))
            .collect();
        assert_records_match(&expected, &got, 0);
        assert_eq!(
            broker.watermarks(&topic, 0),
            (0, lines.len() as i64),
            "kcat -> rdkafka: no extra records"
        );
    }
}
