#!/usr/bin/env bash
# Static checks for the Prometheus / Alertmanager side of mlwatch:
#   1. prometheus/prometheus.yml is a valid config and the rules it loads
#      parse (on a temporary copy whose rule_files glob points at this
#      repository instead of /etc/prometheus/rules, where compose mounts them);
#   2. every rule file parses;
#   3. the promtool unit tests in tests/prometheus/ pass (tests/prometheus/native/
#      too, with promtool 3.x);
#   4. prometheus/alertmanager.yml is a valid Alertmanager config.
# Exits non-zero on the first failure. Run from anywhere.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "error: '$1' not found; install the Debian package '$2' (apt-get install $2) or put $1 on PATH" >&2
    exit 127
  fi
}
need promtool prometheus
need amtool prometheus-alertmanager

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check config (rule_files -> $repo/prometheus/rules)"
# Derived, not a second copy: only the rule path differs from the real file.
sed "s|/etc/prometheus/rules/|$repo/prometheus/rules/|" prometheus/prometheus.yml > "$tmp/prometheus.yml"
if ! grep -q "$repo/prometheus/rules/" "$tmp/prometheus.yml"; then
  echo "error: rule_files in prometheus/prometheus.yml no longer points at /etc/prometheus/rules/; update this script" >&2
  exit 1
fi
promtool check config "$tmp/prometheus.yml"

echo "== promtool check rules"
promtool check rules prometheus/rules/*.yml

echo "== promtool test rules"
promtool test rules tests/prometheus/*.yml

# The push path's native histograms (docs/otlp.md): promtool 2.x has no
# input notation for them, so they run on the 3.x generation only, and say
# so on 2.x instead of passing silently.
promtool_version="$(promtool --version 2>&1 | awk 'NR==1{print $3}')"
if [[ $promtool_version == 2.* ]]; then
  echo "== promtool test rules (native histograms): not applicable to promtool $promtool_version (3.x only)"
else
  echo "== promtool test rules (native histograms, promtool $promtool_version)"
  promtool test rules tests/prometheus/native/*.yml
fi

# The push path's config (prometheus.yml + otlp.yml; compose's push
# variant mounts it): its otlp and storage blocks exist in 3.x only.
if [[ $promtool_version == 2.* ]]; then
  echo "== promtool check config prometheus-otlp.yml: not applicable to promtool $promtool_version (3.x only)"
else
  echo "== promtool check config prometheus-otlp.yml (rule_files -> $repo/prometheus/rules)"
  sed "s|/etc/prometheus/rules/|$repo/prometheus/rules/|" prometheus/prometheus-otlp.yml > "$tmp/prometheus-otlp.yml"
  promtool check config "$tmp/prometheus-otlp.yml"
fi

echo "== amtool check-config"
amtool check-config prometheus/alertmanager.yml

echo "prometheus checks: OK"
