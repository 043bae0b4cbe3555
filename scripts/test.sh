#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks formatting
# and lints, then runs every unit and end-to-end test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- what the tests need -----------------------------------------------------------------
# kcat: the second client implementation the end-to-end tests drive (Debian package).
if ! command -v kcat >/dev/null 2>&1; then
    echo "test.sh: installing kcat (Debian package)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi

# --- checks --------------------------------------------------------------------------------
echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- tests ---------------------------------------------------------------------------------
# Two test threads: the machine has two cores and each end-to-end test runs a broker process.
echo "test.sh: cargo test"
cargo test --workspace --locked -- --test-threads 2
