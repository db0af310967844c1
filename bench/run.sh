#!/usr/bin/env bash
# The whole benchmark in one command: builds proxy-herd (repo root) and the bench tools, then
# runs every scenario against every implementation, interleaved, and prints one markdown table.
#
#   bench/run.sh                                   # defaults: 5 s runs, 3 repetitions
#   bench/run.sh --duration 10 --reps 5 --out bench/results.md
#   bench/run.sh --scenarios iamat-pipe-64,flood-idle --impls proxy-herd,tokio
#   bench/run.sh --impl 'mine=python3 my_herd.py {name} --topology {topology}'
#   bench/run.sh --baseline b412aac                # also an older commit, as column "b412aac"
#   BENCH_BASELINE=b412aac bench/run.sh            # the same
#
# --baseline REV builds commit REV of this repository (from `git archive`, so the checkout and
# its worktrees are left alone) into bench/target/baseline/REV and adds it as an implementation
# named REV through --impl, so a change is measured against the code before it in the same run.
#
# Every process it starts is stopped at the end, on error and on Ctrl-C. Twisted (for the
# twisted-* herds) is installed into bench/.venv from requirements.txt on the first run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/venv.sh"
bench_venv "$here"
baseline="${BENCH_BASELINE:-}"
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline="${2:?--baseline needs a commit}"; shift 2 ;;
        --baseline=*) baseline="${1#*=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
(cd "$here/.." && cargo build --release --quiet)
(cd "$here" && cargo build --release --quiet)
if [ -n "$baseline" ]; then
    commit="$(git -C "$here/.." rev-parse --verify --quiet "$baseline^{commit}")" || {
        echo "run.sh: --baseline $baseline: no such commit in $(cd "$here/.." && pwd)" >&2
        exit 2
    }
    dir="$here/target/baseline/$baseline"
    if [ ! -f "$dir/commit" ] || [ "$(cat "$dir/commit")" != "$commit" ]; then
        echo "building $baseline ($commit) into $dir" >&2
        rm -rf "$dir"
        mkdir -p "$dir/src"
        git -C "$here/.." archive "$commit" | tar -x -C "$dir/src"
        # Only the server: the old bench/ is not needed.
        CARGO_TARGET_DIR="$dir/target" cargo build --release --quiet \
            --manifest-path "$dir/src/Cargo.toml"
        echo "$commit" > "$dir/commit"
    fi
    args+=(--impl "$baseline=$dir/target/release/proxy-herd {name} --topology {topology} --log-dir {log_dir} --places google --places-url {places_url}")
fi
exec "$here/target/release/bench-runner" all ${args[@]+"${args[@]}"}
