#!/usr/bin/env bash
# Peak RSS of `mlwatch serve` while N request bodies of 1 MiB are in flight
# at once, for N = 64 and 256 (or the counts given). On demand only:
#
#     benches/serve_memory.sh [N ...]
#
# Each body is `{"features":[0,0,…]}`, exactly 1 MiB (the default
# --max-body-bytes), so each is read whole and answered 422 (wrong number of
# features). All N connections send all but the last byte of their body,
# wait until every one has, then send the last byte: the N bodies are in the
# server at the same time. Growth is VmHWM (peak RSS) minus the RSS after
# warm-up, against N MiB in flight; the target is below 1.5x.
# A fresh service per N, with --max-inflight-bodies above N so that none is
# refused. Needs python3 and a release build (cargo build --release);
# BIN=path/to/mlwatch for another build. To measure under load, run it
# while something else keeps the cores busy (a build, or BUSY=N: N busy
# loops of this script's own, stopped with it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
counts=("$@")
[[ ${#counts[@]} -gt 0 ]] || counts=(64 256)
command -v python3 >/dev/null || { echo "python3 not found: apt-get install python3" >&2; exit 1; }
bin=${BIN:-target/release/mlwatch}
[[ -x $bin ]] || { echo "build first: cargo build --release (or set BIN)" >&2; exit 1; }

source benches/lib.sh
for _ in $(seq "${BUSY:-0}"); do setsid sh -c 'while :; do :; done' & groups+=($!); done

$bin train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" >/dev/null 2>&1

cat > "$work/flood.py" <<'PY'
import asyncio, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = 1024 * 1024
head, tail = b'{"features":[', b'0]}'
body = head + b'0,' * ((size - len(head) - len(tail)) // 2) + tail
body += b' ' * (size - len(body))
assert len(body) == size
request = (b"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size)

async def one(ready, go):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request + body[:-1])
    await writer.drain()
    ready.release()
    await go.wait()
    writer.write(body[-1:])
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer.split(b" ", 2)[1].decode() if answer else "closed"

async def main():
    ready, go = asyncio.Semaphore(0), asyncio.Event()
    tasks = [asyncio.create_task(one(ready, go)) for _ in range(n)]
    for _ in range(n):
        await ready.acquire()
    await asyncio.sleep(0.5)  # the server reads what the kernel holds
    go.set()
    statuses = await asyncio.gather(*tasks)
    print(" ".join(sorted(set(f"{s}x{statuses.count(s)}" for s in statuses))))

asyncio.run(main())
PY

kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
echo "| bodies in flight | MiB in flight | RSS before (MiB) | peak RSS (MiB) | growth (MiB) | growth / in flight | answers |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
port=19411
for n in "${counts[@]}"; do
  RUST_LOG=warn setsid "$bin" serve --listen "127.0.0.1:$port" --model-path "$work/model.json" \
    --max-inflight-bodies $((n * 2)) --body-read-timeout 120s & pid=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
  # Warm-up: a few requests of each kind, so allocator pools exist.
  for _ in $(seq 20); do
    curl -s -o /dev/null -X POST "127.0.0.1:$port/predict" -H 'Content-Type: application/json' \
      -d '{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
  done
  python3 "$work/flood.py" 127.0.0.1 "$port" 4 >/dev/null
  before=$(kb "$pid" VmRSS)
  # Reset the high-water mark to now (Linux: write 5 to clear_refs).
  echo 5 > "/proc/$pid/clear_refs" 2>/dev/null || true
  answers=""
  for round in 1 2 3; do answers=$(python3 "$work/flood.py" 127.0.0.1 "$port" "$n"); done
  peak=$(kb "$pid" VmHWM)
  awk -v n="$n" -v b="$before" -v p="$peak" -v a="$answers" 'BEGIN {
    g = (p - b) / 1024; printf "| %d | %d | %.1f | %.1f | %.1f | %.2fx | %s |\n", n, n, b / 1024, p / 1024, g, g / n, a }'
  kill -TERM -- "-$pid"; wait "$pid" 2>/dev/null || true
  port=$((port + 1))
done
