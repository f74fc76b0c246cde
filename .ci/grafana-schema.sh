#!/usr/bin/env bash
# Schema gate: type-checks the generated dashboards against Grafana's own
# published types (@grafana/schema, @grafana/data, pinned exactly in
# grafana/schema-check/package-lock.json) for every Grafana mlwatch deploys,
# then proves the gate rejects deliberately broken copies.
# Needs node and npm (Debian: apt-get install nodejs npm).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../grafana/schema-check"
for binary in node npm; do
  if ! command -v "$binary" >/dev/null 2>&1; then
    echo "error: $binary not found; install the Debian packages nodejs and npm (apt-get install nodejs npm)" >&2
    exit 127
  fi
done
echo "== npm ci (grafana/schema-check)"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "== dashboards against @grafana/schema and @grafana/data"
node check.cjs
echo "== the gate rejects broken copies"
node test.cjs
