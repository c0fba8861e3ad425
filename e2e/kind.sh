#!/usr/bin/env bash
# e2e/kind.sh: runs the kfaas e2e suite on a kind cluster, where Docker is available.
# Builds the kfaas image (Dockerfile), a tiny HTTP test image, creates the kind cluster (or reuses
# it), loads both images with `kind load`, installs the chart with Helm, then runs the same suite
# as e2e/run.sh with KUBECONFIG pointing at kind.
#
# usage: e2e/kind.sh [--keep] [-- extra args for the test binary]
#   --keep  leave the kind cluster running afterwards (default: delete it if this script made it)
# needs: docker, kind, helm, kubectl, cargo
# env:   KFAAS_KIND_CLUSTER (default kfaas-e2e), KFAAS_KIND_IMAGE (kind node image, optional)
set -euo pipefail
trap 'echo "kind.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${KFAAS_KIND_CLUSTER:-kfaas-e2e}
TAG=e2e
IMAGE_REPO=ghcr.io/kfaas/kfaas
HTTP_IMAGE=kfaas.dev/test-http:$TAG
KEEP=0
TEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --) shift; TEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "kind.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'kind.sh: %s\n' "$*" >&2; exit 1; }
for tool in docker kind helm kubectl cargo; do
  command -v "$tool" >/dev/null || die "'$tool' is required"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"

WORK=$REPO/e2e/.work/kind
mkdir -p "$WORK"
export KUBECONFIG=$WORK/kubeconfig
CREATED=0
STATUS=1

teardown() {
  local rc=$?
  [ "$STATUS" = 0 ] && rc=0 || { [ "$rc" = 0 ] && rc=1; }
  if [ "$rc" != 0 ]; then
    local logs=$WORK/logs-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$logs"
    kind export logs "$logs" --name "$CLUSTER" >/dev/null 2>&1 || true
    kubectl get all,fn,rt,stg,up -A -o wide >"$logs/objects.txt" 2>&1 || true
    kubectl get events -A --sort-by=.lastTimestamp >"$logs/events.txt" 2>&1 || true
    for p in $(kubectl get pods -n kfaas-system -o name 2>/dev/null); do
      kubectl logs -n kfaas-system "$p" --all-containers >"$logs/$(basename "$p").log" 2>&1 || true
    done
    echo "kind.sh: FAILED (exit $rc). Cluster and component logs: $logs" >&2
  fi
  if [ "$CREATED" = 1 ] && [ "$KEEP" = 0 ]; then
    say "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

say "building $IMAGE_REPO:$TAG"
docker build -t "$IMAGE_REPO:$TAG" "$REPO"
say "building $HTTP_IMAGE"
docker build -t "$HTTP_IMAGE" - <<'DOCKERFILE'
FROM python:3.12-alpine
EXPOSE 8080
ENTRYPOINT ["python3", "-u", "-m", "http.server", "8080"]
DOCKERFILE

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "reusing kind cluster $CLUSTER"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s ${KFAAS_KIND_IMAGE:+--image "$KFAAS_KIND_IMAGE"}
  CREATED=1
fi
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"
kind load docker-image "$IMAGE_REPO:$TAG" "$HTTP_IMAGE" --name "$CLUSTER"

say "installing the chart"
helm upgrade --install kfaas "$REPO/charts/kfaas" --namespace kfaas-system --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$TAG" --set image.pullPolicy=IfNotPresent \
  --wait --timeout 5m

kubectl wait --for=condition=Ready nodes --all --timeout=120s
kubectl get nodes,pods -A -o wide >&2

say "running the e2e suite"
cd "$REPO"
export KFAAS_E2E_HTTP_IMAGE=$HTTP_IMAGE
set +e
cargo test --locked -p kfaas-e2e -- --include-ignored "${TEST_ARGS[@]}"
STATUS=$?
set -e
exit "$STATUS"
