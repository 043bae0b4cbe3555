//! Shared harness for the end-to-end tests: spawns `strait broker` processes,
//! builds rdkafka clients against them and hand-encodes the few raw Kafka
//! frames the tests need.
//!
//! Every wait in here is bounded; nothing sleeps to synchronize where a
//! condition can be polled instead.

#![allow(dead_code)]

pub mod cluster;
pub mod mirror;

mod broker;
mod consumer;
mod producer;
mod records;
mod wire;

pub use broker::*;
pub use consumer::*;
pub use producer::*;
pub use records::*;
pub use wire::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a broker gets to print its `listening on` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker gets to exit after SIGTERM / SIGKILL.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout for single client operations (metadata, admin, watermarks).
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Locating the binary and the repository
// ---------------------------------------------------------------------------

/// Path of the `strait` binary under test.
///
/// Inside the `strait` package Cargo sets `CARGO_BIN_EXE_strait` at compile
/// time; anywhere else the `STRAIT_BIN` environment variable must point at it.
pub fn strait_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_strait") {
        return PathBuf::from(p);
    }
    match std::env::var_os("STRAIT_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "cannot locate the strait binary: CARGO_BIN_EXE_strait was not set at compile time \
             (the tests are not being built as part of the `strait` package) and the STRAIT_BIN \
             environment variable is not set; set STRAIT_BIN=/path/to/strait"
        ),
    }
}

/// Root of the strait repository (where `configs/` lives).
///
/// `STRAIT_REPO` wins if set; otherwise the manifest directory of the package
/// the tests are compiled in (the repository root when run as `strait` tests).
pub fn repo_root() -> PathBuf {
    if let Some(p) = std::env::var_os("STRAIT_REPO").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if manifest.join("configs/single-node.yaml").exists() {
        return manifest;
    }
    panic!(
        "cannot locate the strait repository: {} has no configs/single-node.yaml and STRAIT_REPO \
         is not set; set STRAIT_REPO=/path/to/strait/repo",
        manifest.display()
    )
}

pub fn single_node_config() -> PathBuf {
    let p = repo_root().join("configs/single-node.yaml");
    assert!(p.exists(), "broker config {} does not exist", p.display());
    p
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique within this test process (topic names, group ids).
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `cond` every 50 ms until it returns `Some`, panicking with `what`
/// after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so record contents are a
/// pure function of their index and not trivially compressible.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        for b in v.to_le_bytes() {
            if out.len() < len {
                out.push(b);
            }
        }
    }
    out
}

/// Recursively lists every path below `root` (files and directories).
pub fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
