#!/usr/bin/env bash
# OTLP push cost, on demand (docs/benchmarks.md, docs/otlp.md):
#
#   1. POST /predict throughput with push on (to a live receiver, every
#      PUSH_INTERVAL) vs off, rounds interleaved in one run (on, off, off,
#      on, ...), per-round ratios and their median;
#   2. RSS of a service whose receiver is down vs one whose receiver is up,
#      both under the same light load for OUTAGE (default 10m), sampled in
#      the same instant at the start and the end.
#
#     benches/otlp_push.sh [ROUNDS] [DURATION] [OUTAGE]
#
# Needs wrk (Debian package wrk), python3 (the receiver: it answers every
# POST with 200 and does not decode; tests/otlp_push.rs checks the content)
# and a release build (cargo build --release, or BIN_DIR=...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-6}
duration=${2:-10s}
outage=${3:-10m}
interval=${PUSH_INTERVAL:-1s}
bin=${BIN_DIR:-target/release}/mlwatch
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
[[ -x $bin ]] || { echo "build first: cargo build --release (or set BIN_DIR)" >&2; exit 1; }

work=$(mktemp -d)
groups=()
# Every child in a process group of its own (setsid), stopped as a group.
start() { setsid "$@" & groups+=($!); }
cleanup() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/receiver.py" <<'PY'
import http.server, sys
class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
PY
start python3 "$work/receiver.py" 19480
down_port=19481 # nothing listens here

$bin train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" 2>/dev/null
endpoint() { echo "http://127.0.0.1:$1/api/v1/otlp/v1/metrics"; }
RUST_LOG=warn start $bin serve --listen 127.0.0.1:19482 --model-path "$work/model.json"
RUST_LOG=warn start $bin serve --listen 127.0.0.1:19483 --model-path "$work/model.json" \
  --otlp-endpoint "$(endpoint 19480)" --otlp-export-interval "$interval" --no-scrape
RUST_LOG=error start $bin serve --listen 127.0.0.1:19484 --model-path "$work/model.json" \
  --otlp-endpoint "$(endpoint "$down_port")" --otlp-export-interval "$interval" --no-scrape
for port in 19482 19483 19484; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
done
off_pid=${groups[1]}; on_pid=${groups[2]}; down_pid=${groups[3]}

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %d\n", summary.requests / (summary.duration / 1e6), summary.errors.status))
end
LUA
run_wrk() {
  local rps errors
  read -r rps errors < <(wrk -t2 -c16 -d"$duration" -s "$work/post.lua" "http://127.0.0.1:$1/predict" | awk '/^RESULT/ {print $2, $3}')
  [[ $errors == 0 ]] || { echo "non-2xx responses: $errors" >&2; exit 1; }
  echo "$rps"
}

ratios=()
for round in $(seq "$rounds"); do
  # ABBA: the side that goes first alternates, so drift in the machine's
  # speed does not favour one side.
  if (( round % 2 )); then order="on off"; else order="off on"; fi
  for side in $order; do
    case $side in on) on=$(run_wrk 19483) ;; off) off=$(run_wrk 19482) ;; esac
  done
  ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')
  ratios+=("$ratio")
  echo "round $round: push on $on req/s, off $off req/s, on/off $ratio"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "push on / off, median of $rounds rounds: $(median "${ratios[@]}") ($(nproc) cores)"

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo
echo "RSS with the receiver down vs up, $outage of light load on both (pushing every $interval):"
read -r up0 down0 <<<"$(rss_kb "$on_pid") $(rss_kb "$down_pid")"
echo "start: receiver up $up0 kB, receiver down $down0 kB"
to_seconds() { case $1 in *m) echo $(( ${1%m} * 60 )) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
seconds=$(to_seconds "$outage")
end=$(( $(date +%s) + seconds ))
while (( $(date +%s) < end )); do
  for port in 19483 19484; do
    curl -s -o /dev/null -H 'Content-Type: application/json' \
      -d '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}' \
      "127.0.0.1:$port/predict"
  done
  sleep 0.05
done
read -r up1 down1 <<<"$(rss_kb "$on_pid") $(rss_kb "$down_pid")"
echo "end:   receiver up $up1 kB, receiver down $down1 kB"
awk -v u="$up1" -v d="$down1" 'BEGIN { printf "down - up at the end: %+d kB (target: within 2048 kB)\n", d - u }'
