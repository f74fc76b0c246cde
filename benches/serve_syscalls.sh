#!/usr/bin/env bash
# Kernel work per POST /predict: system calls (by name), context switches
# and CPU migrations per request, for mlwatch instrumented, mlwatch
# --no-instrumentation and the minimal poem server, under the same wrk
# load as benches/serve.sh (2 threads, 16 connections). callgrind
# (serve_profile.sh) counts user-space instructions only; a server that
# runs fewer instructions and still answers fewer requests spends the
# difference here: more system calls, more wake-ups of its worker threads.
#
#     benches/serve_syscalls.sh [DURATION]        (default 5s per side)
#
# Needs perf (Debian package linux-perf) with tracepoints readable (root,
# or kernel.perf_event_paranoid <= 1), wrk, curl, and the release builds
# benches/serve.sh names. On demand only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration=${1:-5s}
for tool in perf wrk curl; do
  command -v "$tool" >/dev/null || { echo "$tool not found (Debian: linux-perf, wrk, curl)" >&2; exit 1; }
done
mlwatch=${BIN_DIR:+$BIN_DIR/mlwatch}
mlwatch=${mlwatch:-target/release/mlwatch}
peer=${BIN_DIR:+$BIN_DIR/peer_server}
peer=${peer:-target/release/examples/peer_server}
[[ -x $mlwatch && -x $peer ]] || { echo "build first: see benches/serve.sh ($mlwatch, $peer)" >&2; exit 1; }

source benches/lib.sh

"$mlwatch" train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" >/dev/null 2>&1
declare -A port=([on]=19501 [off]=19502 [minimal]=19503) pid
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19501 --model-path "$work/model.json"; pid[on]=$!
RUST_LOG=warn start "$mlwatch" serve --listen 127.0.0.1:19502 --model-path "$work/model.json" --no-instrumentation; pid[off]=$!
start "$peer" minimal 127.0.0.1:19503 "$work/model.json"; pid[minimal]=$!
for side in on off minimal; do ready "${port[$side]}"; done

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d\n", summary.requests))
end
LUA

echo "machine: $(nproc) cores; wrk -t2 -c16 -d$duration per side"
echo
ticks_per_s=$(getconf CLK_TCK)
# utime and stime of the whole process (all threads), in clock ticks.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
echo "| side | requests | user µs / request | system µs / request | syscalls / request | context switches / request | migrations / request | system calls per request |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for side in on off minimal; do
  # perf counts the server's threads only (-p follows all of them).
  perf stat -x, -o "$work/$side.perf" -p "${pid[$side]}" \
    -e raw_syscalls:sys_enter,context-switches,cpu-migrations \
    -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read' \
    -e 'syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto' \
    -e 'syscalls:sys_enter_futex,syscalls:sys_enter_sched_yield' &
  stat=$!
  sleep 0.2
  read -r user0 sys0 < <(cpu_ticks "${pid[$side]}")
  n=$(wrk -t2 -c16 -d"$duration" -s "$work/post.lua" "http://127.0.0.1:${port[$side]}/predict" | awk '/^RESULT/ {print $2}')
  read -r user1 sys1 < <(cpu_ticks "${pid[$side]}")
  kill -INT "$stat"; wait "$stat" || true
  user=$(awk -v t=$((user1 - user0)) -v hz="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')
  system=$(awk -v t=$((sys1 - sys0)) -v hz="$ticks_per_s" -v n="$n" 'BEGIN { printf "%.2f", t / hz / n * 1e6 }')
  awk -F, -v n="$n" -v side="$side" -v user="$user" -v kernel="$system" '
    $3 ~ /^raw_syscalls/ { sys = $1 / n }
    $3 == "context-switches" { cs = $1 / n }
    $3 == "cpu-migrations" { mig = $1 / n }
    $3 ~ /^syscalls:sys_enter_/ { name = $3; sub(/^syscalls:sys_enter_/, "", name); if ($1 / n >= 0.01) top = top sprintf("%s %.2f, ", name, $1 / n) }
    END { sub(/, $/, "", top); printf "| %s | %d | %s | %s | %.2f | %.2f | %.3f | %s |\n", side, n, user, kernel, sys, cs, mig, top }
  ' "$work/$side.perf"
done
