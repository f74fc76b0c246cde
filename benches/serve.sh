#!/usr/bin/env bash
# POST /predict throughput and p99 latency of mlwatch instrumented, mlwatch
# --no-instrumentation, the minimal poem server and its `metrics`-crate
# variant (benches/peer_server.rs), and mlwatch with signed prediction ids
# (--feedback-key-file), in one run: each round runs every side once, in an
# order that rotates from round to round (ABCDE, BCDEA, ...), so
# a drift of the machine's speed during the run spreads over all sides.
# Reports each round's ratios to the minimal server and their medians, CPU
# per request (the server's user + system time over the requests it
# answered), GET /metrics latency and size (one model, the same after a
# scan of every method on every path, then three versions loaded in turn
# through POST /admin/reload), and idle RSS. On
# demand only, on an otherwise idle machine:
#
#     benches/serve.sh [ROUNDS] [DURATION]          (default 6 rounds of 10s)
#     BIN_DIR=dir benches/serve.sh                  (dir/mlwatch, dir/peer_server)
#     BUILDS="lto=dir1 mimalloc=dir2" benches/serve.sh
#
# BUILDS adds a side per other build of mlwatch (dir/mlwatch, instrumented,
# the same arguments as "on"), reported as its ratio to "on" in the same
# round: how the release profile choices compare, in one run. ONLY="on
# minimal ..." runs those of the five sides only (on and minimal always),
# so that more rounds fit in the same time.
#
# wrk: 2 threads, 16 connections, one 10-feature row per request. Needs wrk
# (Debian package wrk), curl, and release builds:
#     cargo build --release
#     cargo build --release --features bench-peers --example peer_server
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds=${1:-6}
duration=${2:-10s}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
mlwatch=${BIN_DIR:+$BIN_DIR/mlwatch}
mlwatch=${mlwatch:-target/release/mlwatch}
peer=${BIN_DIR:+$BIN_DIR/peer_server}
peer=${peer:-target/release/examples/peer_server}
[[ -x $mlwatch ]] || { echo "build first: cargo build --release ($mlwatch)" >&2; exit 1; }
[[ -x $peer ]] || { echo "build first: cargo build --release --features bench-peers --example peer_server ($peer)" >&2; exit 1; }

source benches/lib.sh

"$mlwatch" train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" >/dev/null 2>&1
sides=(on off minimal metrics ids)
if [[ -n ${ONLY-} ]]; then
  read -r -a sides <<< "$ONLY"
  [[ " ${sides[*]} " == *" on "* && " ${sides[*]} " == *" minimal "* ]] ||
    { echo "ONLY must name on and minimal ($ONLY)" >&2; exit 1; }
fi
declare -A port=([on]=19401 [off]=19402 [minimal]=19403 [metrics]=19404 [ids]=19406) pid build
next_port=19410
for entry in ${BUILDS-}; do
  name=${entry%%=*} dir=${entry#*=}
  [[ $name != "$entry" && -x $dir/mlwatch && -z ${port[$name]-} ]] ||
    { echo "BUILDS: want name=dir with dir/mlwatch, a new name each ($entry)" >&2; exit 1; }
  sides+=("$name"); build[$name]=$dir/mlwatch; port[$name]=$next_port; next_port=$((next_port + 1))
done
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19401 --model-path "$work/model.json"; pid[on]=$!
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19402 --model-path "$work/model.json" --no-instrumentation; pid[off]=$!
start "$peer" minimal 127.0.0.1:19403 "$work/model.json"; pid[minimal]=$!
start "$peer" metrics 127.0.0.1:19404 "$work/model.json"; pid[metrics]=$!
head -c 32 /dev/urandom | base64 > "$work/feedback.key"; chmod 600 "$work/feedback.key"
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19406 --model-path "$work/model.json" --feedback-key-file "$work/feedback.key"; pid[ids]=$!
for side in "${!build[@]}"; do
  RUST_LOG=warn start "${build[$side]}" serve --listen "127.0.0.1:${port[$side]}" --model-path "$work/model.json"; pid[$side]=$!
done
for side in "${sides[@]}"; do ready "${port[$side]}"; done
sleep 1
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_s=$(getconf CLK_TCK)
echo "machine: $(nproc) cores; wrk -t2 -c16 -d$duration, $rounds rounds"
idle="idle RSS (kB):"
for side in "${sides[@]}"; do idle+=" $side $(rss_kb "${pid[$side]}"),"; done
echo "${idle%,}"

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.1f %.1f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(99), summary.errors.status, summary.requests))
end
LUA

declare -A rps p99 cpu
for round in $(seq "$rounds"); do
  # Rotate the order: round r starts at side (r - 1) mod the number of sides.
  order=()
  for i in "${!sides[@]}"; do order+=("${sides[$(((round - 1 + i) % ${#sides[@]}))]}"); done
  line="round $round:"
  for side in "${order[@]}"; do
    before=$(cpu_ticks "${pid[$side]}")
    read -r r p errors count < <(wrk -t2 -c16 -d"$duration" -s "$work/post.lua" \
      "http://127.0.0.1:${port[$side]}/predict" | awk '/^RESULT/ {print $2, $3, $4, $5}')
    after=$(cpu_ticks "${pid[$side]}")
    [[ $errors == 0 ]] || { echo "$side: non-2xx responses: $errors" >&2; exit 1; }
    rps[$side,$round]=$r; p99[$side,$round]=$p
    cpu[$side,$round]=$(awk -v t=$((after - before)) -v hz="$ticks_per_s" -v n="$count" 'BEGIN { printf "%.1f", t / hz / n * 1e6 }')
    line+=" $side ${r} req/s p99 ${p} us;"
  done
  echo "$line"
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# One table row: SIDE's per-round req/s ratio to BASE (same round, so both
# sides share the machine's state), its median, the median p99 ratio and
# SIDE's median CPU per request.
row() {
  local name=$1 side=$2 base=$3 rs=() prs=() cpus=()
  for round in $(seq "$rounds"); do
    rs+=("$(ratio "${rps[$side,$round]}" "${rps[$base,$round]}")")
    prs+=("$(ratio "${p99[$side,$round]}" "${p99[$base,$round]}")")
    cpus+=("${cpu[$side,$round]}")
  done
  echo "| $name | ${rs[*]} | $(median "${rs[@]}") | $(median "${prs[@]}") | $(median "${cpus[@]}") |"
}
echo
echo "| side / base | req/s ratio, per round | median | p99 ratio, median | CPU µs per request (side), median |"
echo "| --- | --- | --- | --- | --- |"
for side in on off metrics ids minimal; do
  [[ -n ${rps[$side,1]-} ]] || continue
  case $side in on) name="mlwatch" ;; off) name="mlwatch --no-instrumentation" ;;
    metrics) name="minimal + metrics crate" ;; minimal) name="minimal" ;;
    ids) name="mlwatch with prediction ids" ;; esac
  row "$name / minimal" "$side" minimal
done
[[ -z ${rps[metrics,1]-} || -z ${rps[on,1]-} ]] || row "mlwatch / metrics crate" on metrics
# Ratios to "on" in the same round: prediction ids, then every other build.
for side in ids "${!build[@]}"; do
  [[ -n ${rps[$side,1]-} && -n ${rps[on,1]-} ]] || continue
  case $side in ids) name="mlwatch with ids" ;; *) name="mlwatch build $side" ;; esac
  row "$name / mlwatch" "$side" on
done

# GET /metrics: latency on one kept-alive connection (wrk, one thread, one
# connection, 3 s of back-to-back scrapes: the median and p99, which is
# render time plus the HTTP round trip), and size, as Prometheus scrapes
# it (Accept-Encoding: gzip) and uncompressed.
cat > "$work/scrape.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.3f %.3f %d\n", latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests))
end
LUA
scrape() {
  local p50 p99 n gz_p50 gz_p99 gz_n
  read -r p50 p99 n < <(wrk -t1 -c1 -d3s -s "$work/scrape.lua" "http://127.0.0.1:$1/metrics" | awk '/^RESULT/ {print $2, $3, $4}')
  read -r gz_p50 gz_p99 gz_n < <(wrk -t1 -c1 -d3s -s "$work/scrape.lua" -H 'Accept-Encoding: gzip' \
    "http://127.0.0.1:$1/metrics" | awk '/^RESULT/ {print $2, $3, $4}')
  local gz_bytes
  gz_bytes=$(curl -s -H 'Accept-Encoding: gzip' "127.0.0.1:$1/metrics" | wc -c)
  curl -s -o "$work/exposition" "127.0.0.1:$1/metrics"
  echo "plain: p50 $p50 ms, p99 $p99 ms ($n scrapes), $(wc -c < "$work/exposition") bytes, $(grep -vc '^#' "$work/exposition") series;" \
    "gzip asked: p50 $gz_p50 ms, p99 $gz_p99 ms ($gz_n scrapes), $gz_bytes bytes"
}
echo
echo "GET /metrics, one model: $(scrape 19401)"
# A scanner: every method on every path, no body. Refusals (405, unknown
# path) are labelled method="other", one series per route.
for method in GET POST PUT DELETE PATCH HEAD OPTIONS BREW; do
  for path in /predict /feedback /health /ready /model /admin/reload /wp-login.php; do
    if [[ $method == HEAD ]]; then curl -s -o /dev/null -I "127.0.0.1:19401$path"
    else curl -s -o /dev/null -X "$method" "127.0.0.1:19401$path"; fi
  done
done
echo "GET /metrics, one model after a scan (8 methods x 7 paths): $(scrape 19401)"
# Three versions over time: retrain with other seeds, reload each in turn
# (POST /admin/reload with the admin token) with traffic in between.
head -c 24 /dev/urandom | base64 > "$work/token"; chmod 600 "$work/token"
cp "$work/model.json" "$work/current.json"
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19405 --model-path "$work/current.json" --admin-token-file "$work/token"
ready 19405
for seed in 2 3; do
  wrk -t2 -c16 -d2s -s "$work/post.lua" http://127.0.0.1:19405/predict >/dev/null
  "$mlwatch" train --model linear --seed "$seed" --listen 127.0.0.1:0 --linger 0s --output "$work/next.json" >/dev/null 2>&1
  mv "$work/next.json" "$work/current.json"
  curl -sf -X POST -H "Authorization: Bearer $(cat "$work/token")" 127.0.0.1:19405/admin/reload >/dev/null
done
wrk -t2 -c16 -d2s -s "$work/post.lua" http://127.0.0.1:19405/predict >/dev/null
echo "GET /metrics, three versions loaded in turn: $(scrape 19405) ($(grep -o 'model_version="[^"]*"' "$work/exposition" | sort -u | wc -l) versions in the exposition)"
echo "GET /metrics, minimal + metrics crate: $(scrape 19404)"
for side in "${!build[@]}"; do echo "GET /metrics, build $side: $(scrape "${port[$side]}")"; done
