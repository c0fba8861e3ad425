#!/usr/bin/env bash
# Policy overhead: the same `http` route with and without API key + usage-plan throttle + JWT,
# in the same run, through one `kfaas local`. Prints requests/s of each and their ratio (the
# issue's target: guarded >= 0.9 x open). Not a test: nothing here asserts a time.
#
#   bench/policies.sh [--runs 3] [--duration 10]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=3
duration=10
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    *) echo "usage: bench/policies.sh [--runs N] [--duration SECONDS]" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
cargo build --release --locked --bin kfaas -q
cargo build --release -q --manifest-path bench/backend/Cargo.toml
backend=$(find bench/backend/target/release -maxdepth 1 -type f -executable -name 'kfaas-bench-backend*' | head -1)
[ -n "$backend" ] || { echo "policies.sh: the backend binary was not built" >&2; exit 1; }

work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/src"
jwks=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))' src/gateway/policy/testdata/jwks.json)
cat > "$work/app.yaml" <<YAML
apiVersion: kfaas.dev/v1alpha1
kind: Function
metadata: {name: backend}
spec: {protocol: http, runtime: provided, command: ["$PWD/$backend"], code: {path: ./src}, replicas: 1}
---
apiVersion: kfaas.dev/v1alpha1
kind: Stage
metadata: {name: s}
spec: {api: a}
---
apiVersion: kfaas.dev/v1alpha1
kind: Route
metadata: {name: open}
spec: {api: a, path: "/open/{proxy+}", function: backend}
---
apiVersion: kfaas.dev/v1alpha1
kind: Route
metadata: {name: guarded}
spec:
  api: a
  path: "/guarded/{proxy+}"
  function: backend
  auth:
    apiKeyRequired: true
    type: jwt
    jwt: {issuer: "https://issuer.example", audiences: ["api://bench"], jwksSecret: jwks}
---
apiVersion: kfaas.dev/v1alpha1
kind: UsagePlan
metadata: {name: bench}
spec:
  stages: [{api: a, stage: s}]
  throttle: {rateLimit: 1000000, burstLimit: 1000000}
  apiKeys: [{id: bench-key, secretRef: {name: bench-key}}]
---
apiVersion: v1
kind: Secret
metadata: {name: bench-key}
stringData: {apiKey: bench-key-value}
---
apiVersion: v1
kind: Secret
metadata: {name: jwks}
stringData:
  jwks.json: '$jwks'
YAML

# An RS256 token signed with the test key (openssl, so no JWT library is needed here).
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"rsa-1"}' | b64url)
payload=$(printf '{"iss":"https://issuer.example","aud":"api://bench","sub":"bench","exp":%d}' "$(( $(date +%s) + 3600 ))" | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign src/gateway/policy/testdata/rsa_private.pem -binary | b64url)
token="$header.$payload.$signature"

target/release/kfaas local "$work" --port 0 --no-access-log > "$work/kfaas.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
  grep -q ' on http://' "$work/kfaas.log" && break
  sleep 0.05
done
addr=$(sed -n 's/.* on http:\/\/\([0-9.:]*\) .*/\1/p' "$work/kfaas.log" | head -1)
[ -n "$addr" ] || { cat "$work/kfaas.log"; exit 1; }
auth=(-H "x-api-key: bench-key-value" -H "authorization: Bearer $token")
for path in open/x guarded/x; do
  status=$(curl -s -o /dev/null -w '%{http_code}' "${auth[@]}" "http://$addr/$path")
  [ "$status" = 200 ] || { echo "warm-up of /$path answered $status"; cat "$work/kfaas.log"; exit 1; }
done
status=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/guarded/x")
[ "$status" = 401 ] || { echo "/guarded without credentials answered $status, expected 401"; exit 1; }

rps() { wrk -t1 -c32 -d"${duration}s" "$@" | awk '/Requests\/sec/ { print $2 }'; }
open_runs=(); guarded_runs=()
for _ in $(seq 1 "$runs"); do
  open_runs+=("$(rps "http://$addr/open/x")")
  guarded_runs+=("$(rps "${auth[@]}" "http://$addr/guarded/x")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
open=$(median "${open_runs[@]}")
guarded=$(median "${guarded_runs[@]}")
echo "policy overhead (wrk -t1 -c32 -d${duration}s, median of $runs, load $(cut -d' ' -f1 /proc/loadavg))"
echo "  open route:                             ${open} req/s   runs: ${open_runs[*]}"
echo "  API key + usage-plan throttle + JWT:    ${guarded} req/s   runs: ${guarded_runs[*]}"
awk -v g="$guarded" -v o="$open" 'BEGIN { printf "  ratio guarded/open: %.2f (target >= 0.90)\n", g / o }'
