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
# Python confluent-kafka and kafka-python: two more client implementations, pinned in
# tests/python/requirements.txt (pip skips what is already installed at that version).
if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "test.sh: installing pip (Debian package python3-pip)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
fi
echo "test.sh: pip install -r tests/python/requirements.txt"
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/python/requirements.txt

# --- checks --------------------------------------------------------------------------------
echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# --- tests ---------------------------------------------------------------------------------
# Two test threads: the machine has two cores and each end-to-end test runs a broker process.
echo "test.sh: cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked -- --test-threads 2 2>&1 | tee "$log"
# One closing line for the whole suite: cargo prints a result per test binary, the last of
# which may be an empty doc-test run.
awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
