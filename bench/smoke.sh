#!/usr/bin/env bash
# Smoke run for CI: builds everything, runs every bench tool once with tiny durations against
# every implementation (proxy-herd, tokio, asyncio, twisted-per-update, twisted-persistent,
# node if the machine has it, threads, the echo floor), runs the bench crates' unit tests, and
# checks that mixed herds flood through every implementation. Twisted is installed into
# bench/.venv from requirements.txt (PyPI) the first time; after that, and after the first
# build, it is offline. 127.0.0.1 only, kills everything it starts. Asserts that the tools
# work, never how fast: exit status 0 means every run succeeded.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/venv.sh"
bench_venv "$here"
(cd "$here/.." && cargo build --release --quiet)
cd "$here"
cargo build --release --quiet
cargo test --release --quiet
python3 -m py_compile asyncio-herd/herd.py
.venv/bin/python -m py_compile twisted-herd/twisted_herd.py
if command -v node >/dev/null; then node --check node-herd/herd.js; fi
exec "$here/target/release/bench-runner" smoke "$@"
