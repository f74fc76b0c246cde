#!/usr/bin/env bash
# Rehearses `nix run` (nix/stack.nix: `mlwatch up --assets <mlwatch-assets>`)
# inside the Nix-sandbox rehearsal (.ci/nix-sandbox.sh runs it in its own
# network namespace, so the default ports are free): the launcher gets only
# the files of the assets derivation (nix/source-set.json "assets"), and must
# bring up the API with a trained model and a Prometheus that loaded every
# rule group of those assets, then stop everything on SIGINT.
#
# Usage (inside the sandbox): rehearse-nix-run.sh MLWATCH_BINARY ASSETS_DIR STATE_DIR
set -euo pipefail
mlwatch="$1"
assets="$2"
state="$3"

expected_groups="$(grep -h '^  - name:' "$assets"/prometheus/rules/*.yml | awk '{print $3}' | sort | tr '\n' ' ')"
"$mlwatch" up --assets "$assets" --state-dir "$state" --no-grafana --pace 0s >"$state.log" 2>&1 &
pid=$!

fail() {
  echo "FAIL: nix run rehearsal: $*" >&2
  sed 's/^/  up | /' "$state.log" >&2 || true
  kill -INT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  exit 1
}

deadline=$((SECONDS + 180))
until curl -sf http://127.0.0.1:9000/ready >/dev/null; do
  kill -0 "$pid" 2>/dev/null || fail "mlwatch up exited before the API was ready"
  ((SECONDS < deadline)) || fail "the API was not ready within 180 s"
  sleep 1
done
echo "ok:   the API serves a model trained by the launcher"

groups=""
until [[ $groups == "$expected_groups" ]]; do
  groups="$(curl -sf http://127.0.0.1:9090/api/v1/rules |
    python3 -c 'import json,sys; print(" ".join(sorted(g["name"] for g in json.load(sys.stdin)["data"]["groups"])) + " ")' || true)"
  ((SECONDS < deadline)) || fail "Prometheus loaded rule groups '$groups', expected '$expected_groups'"
  [[ $groups == "$expected_groups" ]] || sleep 1
done
echo "ok:   Prometheus loaded every rule group of the assets: $expected_groups"

kill -INT "$pid"
if ! wait "$pid"; then
  fail "mlwatch up did not exit cleanly on SIGINT"
fi
echo "ok:   mlwatch up stopped cleanly on SIGINT"
