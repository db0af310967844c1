#!/usr/bin/env bash
# Smoke run for CI: builds everything, runs every bench tool once with tiny durations against
# every implementation (proxy-herd, tokio, asyncio, the echo floor), runs the bench crates'
# unit tests, and checks a mixed herd floods through all three implementations.
# Offline (after the first build), 127.0.0.1 only, kills everything it starts. Asserts that
# the tools work, never how fast: exit status 0 means every run succeeded.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
(cd "$here/.." && cargo build --release --quiet)
cd "$here"
cargo build --release --quiet
cargo test --release --quiet
python3 -m py_compile asyncio-herd/herd.py
exec "$here/target/release/bench-runner" smoke "$@"
