#!/usr/bin/env bash
# The whole benchmark in one command: builds proxy-herd (repo root) and the bench tools, then
# runs every scenario against every implementation, interleaved, and prints one markdown table.
#
#   bench/run.sh                                   # defaults: 5 s runs, 3 repetitions
#   bench/run.sh --duration 10 --reps 5 --out bench/results.md
#   bench/run.sh --scenarios iamat-pipe-64,flood-idle --impls proxy-herd,tokio
#   bench/run.sh --impl 'mine=python3 my_herd.py {name} --topology {topology}'
#
# Every process it starts is stopped at the end, on error and on Ctrl-C.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
(cd "$here/.." && cargo build --release --quiet)
(cd "$here" && cargo build --release --quiet)
exec "$here/target/release/bench-runner" all "$@"
