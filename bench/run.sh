#!/usr/bin/env bash
# The kfaas benchmarks, one entry point: builds kfaas and the bench backend (release), installs
# wrk, HAProxy and nginx if they are missing, runs every benchmark and writes
# bench/results/<UTC time>.json and .txt (git-ignored), then prints the summary.
# Nothing here asserts a time: each figure is a ratio against an anchor measured in the same run.
#
#   bench/run.sh                      # everything, 3 runs of each measurement
#   bench/run.sh --runs 5 --duration 20
#   bench/run.sh --only proxy         # proxy | lambda | cold | memory, comma-separated
#
# Other options: bench/bench.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in wrk haproxy nginx; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "bench: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # Installing nginx may start the distribution's service on port 80: stop it, it is not ours.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq haproxy nginx wrk >&2
    $sudo service nginx stop >/dev/null 2>&1 || true
    $sudo service haproxy stop >/dev/null 2>&1 || true
fi
export PATH="$PATH:/usr/sbin"
command -v node >/dev/null || { echo "bench: node (Node.js 20) is needed" >&2; exit 1; }

echo "bench: cargo build --release" >&2
cargo build --release --locked --bin kfaas >&2
cargo build --release --manifest-path bench/backend/Cargo.toml >&2

# Where cargo put them: CARGO_TARGET_DIR applies to both builds when set.
kfaas_target="${CARGO_TARGET_DIR:-target}"
backend_target="${CARGO_TARGET_DIR:-bench/backend/target}"
exec python3 bench/bench.py \
    --kfaas "$kfaas_target/release/kfaas" \
    --backend "$backend_target/release/kfaas-bench-backend" \
    "$@"
