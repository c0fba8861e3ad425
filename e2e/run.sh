#!/usr/bin/env bash
# e2e/run.sh: runs the kfaas e2e suite against a real Kubernetes control plane built from the
# Kubernetes Go modules (e2e/cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, and a node agent whose pods run as local processes).
#
# Everything runs inside a private network namespace made for the run (`unshare -n`, so root
# is needed), where lo is up and 10.244.0.0/16 (pod IPs, API server at 10.244.0.1) and
# 10.96.0.0/16 (service IPs) are local routes. Nothing is added to the host's network.
#
# usage: e2e/run.sh [--keep] [--shell] [-- extra args for the test binary]
#   --keep    keep the run directory (certificates, logs, pod dirs) even when green
#   --shell   start the cluster and open a shell with KUBECONFIG set instead of the suite
# env:  KFAAS_E2E_TIMEOUT  seconds to wait for the cluster (default 300)
#
# On failure it prints the folder that holds every component's log and every pod's output.
set -euo pipefail
trap 'echo "run.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$REPO/e2e/.work
BIN=$WORK/bin/kfaas-cluster
KUBE_VERSION=v1.37.2 # keep in step with e2e/cluster/go.mod
HELM_VERSION=v3.22.0

ORIG_ARGS=("$@")
KEEP=0 SHELL_MODE=0
TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --shell) SHELL_MODE=1 ;;
    --) shift; TEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

if [ "${KFAAS_E2E_INSIDE:-}" != 1 ]; then
  # ---- on the host: check, build, then re-enter this script in a new network namespace ----
  [ "$(id -u)" = 0 ] || die "needs root (unshare -n makes the private network namespace)"
  for tool in go cargo unshare ip python3; do
    command -v "$tool" >/dev/null || die "'$tool' is required"
  done
  unshare -n true 2>/dev/null || die "unshare -n does not work here (no CAP_SYS_ADMIN?)"
  mkdir -p "$WORK/bin"

  say "building kfaas-cluster (Kubernetes $KUBE_VERSION; first build takes long, then cached by Go)"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  start=$(date +%s)
  (cd "$REPO/e2e/cluster" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$BIN" .)
  say "kfaas-cluster ready ($(( $(date +%s) - start ))s)"

  # helm renders charts/kfaas for the chart test; built from the Go module proxy once, then
  # cached by Go (KFAAS_HELM or a helm on PATH is used instead when set/present).
  if [ -z "${KFAAS_HELM:-}" ] && ! command -v helm >/dev/null && [ ! -x "$WORK/bin/helm" ]; then
    say "building helm $HELM_VERSION (first time only)"
    (cd "$WORK" && GOBIN="$WORK/bin" GOFLAGS= go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  fi

  say "building kfaas and the e2e suite"
  (cd "$REPO" && cargo build --locked --bin kfaas && cargo test --locked -p kfaas-e2e --no-run)

  export KFAAS_E2E_INSIDE=1
  exec unshare -n -- "$0" "${ORIG_ARGS[@]}"
fi

# ---- inside the private network namespace ----
ip link set lo up
ip route add local 10.244.0.0/16 dev lo
ip route add local 10.96.0.0/16 dev lo

export KFAAS_REPO=$REPO
export KFAAS_BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/kfaas
export KFAAS_E2E_PROCESS_NODE=1 # the suite may assert what only this node guarantees (10.244.x.y pod IPs)
RUN_DIR=$WORK/runs/$(date +%Y%m%d-%H%M%S)-$$
# Keep the folders of the last few failed runs, not all of them.
mkdir -p "$WORK/runs"
{ ls -1dt "$WORK"/runs/*/ 2>/dev/null || true; } | tail -n +6 | xargs -r rm -rf
mkdir -p "$RUN_DIR/logs"
UP_PID=
STATUS=1

teardown() {
  local rc=$?
  [ "$STATUS" = 0 ] && rc=0 || { [ "$rc" = 0 ] && rc=1; }
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    say "stopping the cluster"
    kill -TERM "$UP_PID" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$UP_PID" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    echo >&2
    echo "run.sh: FAILED (exit $rc). Logs of every component: $RUN_DIR/logs" >&2
    echo "run.sh: pod processes (stdout/stderr, exec specs): $RUN_DIR/pods/<namespace>_<pod>_<uid>/" >&2
  elif [ "$KEEP" = 1 ]; then
    say "kept $RUN_DIR"
  else
    rm -rf "$RUN_DIR"
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "starting the cluster in $RUN_DIR"
"$BIN" up --dir "$RUN_DIR" --node-config "$REPO/e2e/nodeconfig.yaml" \
  --timeout "${KFAAS_E2E_TIMEOUT:-300}s" >"$RUN_DIR/logs/up.log" 2>&1 &
UP_PID=$!
start=$(date +%s)
until [ -f "$RUN_DIR/ready" ]; do
  if ! kill -0 "$UP_PID" 2>/dev/null; then
    cat "$RUN_DIR/logs/up.log" >&2
    die "the cluster did not come up"
  fi
  sleep 0.5
done
say "$(cat "$RUN_DIR/ready") [$(( $(date +%s) - start ))s]"
export KUBECONFIG=$RUN_DIR/admin.kubeconfig

if command -v kubectl >/dev/null; then kubectl get nodes,pods -A -o wide >&2 || true; fi

if [ "$SHELL_MODE" = 1 ]; then
  say "shell with KUBECONFIG=$KUBECONFIG (inside the cluster's network namespace); exit to tear down"
  "${SHELL:-bash}" -i || true
  STATUS=0
  exit 0
fi

say "running the e2e suite"
cd "$REPO"
set +e
cargo test --locked --offline --no-fail-fast -p kfaas-e2e -- --include-ignored "${TEST_ARGS[@]}"
STATUS=$?
set -e
if command -v kubectl >/dev/null; then kubectl get nodes,pods -A -o wide >&2 || true; fi
exit "$STATUS"
