#!/usr/bin/env bash
# POST /predict throughput and latency with metrics + drift on vs. off, and
# on with signed prediction ids (--feedback-key-file) vs. on without, in one
# run, interleaved; GET /metrics render time; idle RSS. On demand only:
#
#     benches/serve.sh [ROUNDS] [DURATION]
#
# Needs wrk (Debian package wrk) and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-3}
duration=${2:-10s}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
bin=target/release/mlwatch
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

$bin train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" 2>/dev/null
RUST_LOG=warn $bin serve --listen 127.0.0.1:19401 --model-path "$work/model.json" & pids+=($!)
RUST_LOG=warn $bin serve --listen 127.0.0.1:19402 --model-path "$work/model.json" --no-instrumentation & pids+=($!)
head -c 32 /dev/urandom | base64 > "$work/feedback.key"; chmod 600 "$work/feedback.key"
RUST_LOG=warn $bin serve --listen 127.0.0.1:19403 --model-path "$work/model.json" --feedback-key-file "$work/feedback.key" & pids+=($!)
for port in 19401 19402 19403; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
done

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.1f %d\n", summary.requests / (summary.duration / 1e6), latency:percentile(99), summary.errors.status))
end
LUA

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "idle RSS: instrumented $(rss_kb "${pids[0]}") kB, uninstrumented $(rss_kb "${pids[1]}") kB"

declare -a on_rps off_rps on_p99 off_p99 ids_rps ids_p99
for round in $(seq "$rounds"); do
  for side in on off ids; do
    case $side in on) port=19401 ;; off) port=19402 ;; ids) port=19403 ;; esac
    read -r rps p99 errors < <(wrk -t2 -c16 -d"$duration" -s "$work/post.lua" "http://127.0.0.1:$port/predict" | awk '/^RESULT/ {print $2, $3, $4}')
    [[ $errors == 0 ]] || { echo "non-2xx responses: $errors" >&2; exit 1; }
    echo "round $round $side: $rps req/s, p99 $p99 us"
    case $side in
      on) on_rps+=("$rps"); on_p99+=("$p99") ;;
      off) off_rps+=("$rps"); off_p99+=("$p99") ;;
      ids) ids_rps+=("$rps"); ids_p99+=("$p99") ;;
    esac
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mon=$(median "${on_rps[@]}"); moff=$(median "${off_rps[@]}")
pon=$(median "${on_p99[@]}"); poff=$(median "${off_p99[@]}")
mids=$(median "${ids_rps[@]}"); pids_=$(median "${ids_p99[@]}")
echo
echo "| side | req/s (median) | p99 µs (median) |"
echo "| --- | --- | --- |"
echo "| metrics + drift on | $mon | $pon |"
echo "| off (--no-instrumentation) | $moff | $poff |"
echo "| on + prediction ids (--feedback-key-file) | $mids | $pids_ |"
awk -v a="$mon" -v b="$moff" -v c="$pon" -v d="$poff" 'BEGIN { printf "| on / off | %.3f | %.3f |\n", a / b, c / d }'
awk -v a="$mids" -v b="$mon" -v c="$pids_" -v d="$pon" 'BEGIN { printf "| ids / on | %.3f | %.3f |\n", a / b, c / d }'

# /metrics render time after the load above (all series populated).
start=$(date +%s%N); for _ in $(seq 200); do curl -s -o /dev/null 127.0.0.1:19401/metrics; done; end=$(date +%s%N)
echo
echo "GET /metrics: $(( (end - start) / 200000 )) µs per request including curl start-up (200 sequential requests)"
curl -s -o /dev/null -w "GET /metrics single request: %{time_total}s, %{size_download} bytes\n" 127.0.0.1:19401/metrics
