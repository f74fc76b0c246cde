#!/usr/bin/env bash
# Where a POST /predict spends its instructions, and how many heap
# allocations it makes: `mlwatch serve` under valgrind's callgrind, N
# requests (one 10-feature row each, on one kept-alive connection) after a
# warm-up, counted from the first to the last. On demand only:
#
#     benches/serve_profile.sh [N] [-- SERVE_ARGS...]
#     BIN=path/to/mlwatch benches/serve_profile.sh 2000 -- --no-instrumentation
#     PEER=minimal benches/serve_profile.sh 2000     (benches/peer_server.rs)
#     SCRAPE=1 benches/serve_profile.sh 200           (GET /metrics instead)
#     SCRAPE=gzip benches/serve_profile.sh 200        (... with Accept-Encoding: gzip)
#
# SCRAPE=1 counts N scrapes of GET /metrics after the warm-up's
# predictions populated the exposition, split into the service's
# callbacks, the SDK's collection of the other instruments and the text
# encoding.
#
# Instruction counts do not depend on what else the machine does (the same
# binary and inputs count the same on a busy machine), so this is the
# measure to decide by on a shared machine; benches/serve.sh gives the
# time. They leave out the kernel (the socket system calls) and count the
# instructions, not their cost in cycles (cache misses, contention).
#
# Needs valgrind and python3, and a release build (cargo build --release;
# its symbol table is enough: each part below is a function's inclusive
# count, so a part the compiler inlined into its caller reads as 0 and its
# instructions land in "the rest").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
requests=${1:-2000}
shift || true
[[ ${1-} == -- ]] && shift
bin=${BIN:-target/release/mlwatch}
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
[[ -x $bin ]] || { echo "build first: cargo build --release (or set BIN)" >&2; exit 1; }

work=$(mktemp -d)
group=
cleanup() {
  [[ -n $group ]] && kill -TERM -- "-$group" 2>/dev/null || true
  wait 2>/dev/null || true
  [[ -n ${KEEP-} ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

"$bin" train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" >/dev/null 2>&1
port=19431
# Its own process group (setsid), stopped as a group by the trap.
if [[ -n ${PEER-} ]]; then
  # A peer of benches/peer_server.rs instead (PEER=minimal or metrics).
  peer=${PEER_BIN:-target/release/examples/peer_server}
  [[ -x $peer ]] || { echo "build first: cargo build --release --features bench-peers --example peer_server" >&2; exit 1; }
  served=("$peer" "$PEER" "127.0.0.1:$port" "$work/model.json")
else
  served=("$bin" serve --listen "127.0.0.1:$port" --model-path "$work/model.json" --sample-interval 1h "$@")
fi
RUST_LOG=warn setsid valgrind --tool=callgrind --instr-atstart=no \
  --callgrind-out-file="$work/callgrind.out" "${served[@]}" 2>"$work/valgrind.log" &
group=$!
for _ in $(seq 600); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
curl -sf "127.0.0.1:$port/ready" >/dev/null || { cat "$work/valgrind.log" >&2; exit 1; }

cat > "$work/client.py" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = b'{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}'
c = http.client.HTTPConnection("127.0.0.1", port)
scrape = len(sys.argv) > 3
gzip = {"Accept-Encoding": "gzip"} if len(sys.argv) > 4 else {}
for _ in range(n):
    if scrape:
        c.request("GET", "/metrics", headers=gzip)
    else:
        c.request("POST", "/predict", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY
python3 "$work/client.py" "$port" 200 # warm-up: pools, lazily created series
scrape=()
if [[ -n ${SCRAPE-} ]]; then
  # SCRAPE=gzip: as Prometheus scrapes, Accept-Encoding: gzip.
  scrape=(scrape)
  [[ $SCRAPE == gzip ]] && scrape+=(gzip)
  python3 "$work/client.py" "$port" 5 scrape
fi
# The counted window: from switching collection on to the dump.
callgrind_control -i on "$group" >/dev/null
python3 "$work/client.py" "$port" "$requests" "${scrape[@]}"
callgrind_control -i off "$group" >/dev/null
callgrind_control -d "$group" >/dev/null
sleep 1
out=$(ls "$work"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[[ -n $out ]] || out="$work/callgrind.out"

python3 - "$out" "$requests" "${scrape[@]:0:1}" <<'PY'
import re, sys
path, n = sys.argv[1], int(sys.argv[2])
scrape = len(sys.argv) > 3
# Inclusive cost per function name (summed over the callgrind file's
# compressed names), call counts of the allocator entry points.
names, inclusive, self_cost = {}, {}, {}
allocs = {"malloc": 0, "calloc": 0, "realloc": 0, "free": 0}
total = 0
fn = None
cfn = None
pending_call = False
def name(ref):
    m = re.match(r"\((\d+)\)(?: (.*))?", ref)
    if not m:
        return ref
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), ref)
with open(path) as f:
    for line in f:
        line = line.rstrip("\n")
        if line.startswith("fn="):
            fn = name(line[3:]); pending_call = False; continue
        if line.startswith("cfn="):
            cfn = name(line[4:]); continue
        if line.startswith(("fl=", "fi=", "fe=", "cfi=", "cfl=", "ob=", "cob=")):
            if line[2] == "=" or line[3] == "=":
                pass
            continue
        if line.startswith("calls="):
            calls = int(line[6:].split()[0])
            if cfn in allocs:
                allocs[cfn] += calls
            pending_call = True; continue
        if line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1]); continue
        if line and (line[0].isdigit() or line[0] in "+-*"):
            parts = line.split()
            if len(parts) < 2:
                continue
            cost = int(parts[1])
            if pending_call:
                # The cost of a call, inclusive of the callee.
                inclusive[cfn] = inclusive.get(cfn, 0) + cost
                pending_call = False
            else:
                self_cost[fn] = self_cost.get(fn, 0) + cost
def incl(pattern):
    r = re.compile(pattern)
    return sum(c for f, c in inclusive.items() if r.search(f))
# Each part: functions whose names match, taken inclusive. Patterns match
# names that do not call each other, so the parts do not overlap.
parts = [
    ("socket read (hyper's read buffer)", r"Watched as tokio::io::async_read::AsyncRead>::poll_read|TcpStream as tokio::io::async_read::AsyncRead>::poll_read"),
    ("body read (serve::body)", r"serve::body::BodyLimits::read"),
    ("decode (serve::decode)", r"serve::decode::decode$|serve::decode::decode\b"),
    ("predict (model::Model::predict)", r"model::predictor::Model::predict"),
    ("drift bins and window (DriftWindow::record)", r"serve::drift::DriftWindow::record"),
    # The SDK's sync `measure`, unbound and bound; the linker folds the
    # unbound one with the identical `Observable::observe`, whose name it
    # then carries.
    ("OpenTelemetry recording (SDK measure)", r"ResolvedMeasures<T> as opentelemetry::metrics::(instruments::)?SyncInstrument<T>>::measure|Observable<T> as opentelemetry::metrics::instruments::AsyncInstrument<T>>::observe|ResolvedBoundMeasures<T> as opentelemetry::metrics::(instruments::)?BoundSyncInstrument<T>>::measure"),
    ("response encoding (serve::predict::render)", r"serve::predict::render"),
]
if scrape:
    # The SDK runs each callback inside a closure of its own that records
    # what it observes; its collection (`produce`) includes them.
    callbacks = r"opentelemetry_sdk::metrics::meter::SdkMeter::create_observable_\w+::\{\{closure\}\}$"
    parts = [
        ("observable callbacks (drift bins and PSI, model gauges) with the SDK's recording", callbacks),
        ("the SDK's collection of the other instruments", r"SdkProducer>::produce$", callbacks),
        ("text encoding (telemetry::exposition::encode)", r"mlwatch::telemetry::exposition::encode$"),
        ("gzip (telemetry::gzip_bytes), when asked", r"mlwatch::telemetry::gzip_bytes$"),
    ]
print(f"{n} requests, {total / n:,.0f} instructions per request (user space)")
print()
print("| part | instructions per request | share |")
print("| --- | --- | --- |")
rest = total
for label, pattern, *minus in parts:
    c = incl(pattern) - sum(incl(m) for m in minus)
    rest -= c
    print(f"| {label} | {c / n:,.0f} | {100 * c / total:.1f} % |")
print(f"| the rest: HTTP (hyper, poem routing, the service's middleware), tokio | {rest / n:,.0f} | {100 * rest / total:.1f} % |")
print()
print(f"heap allocations per request: malloc {allocs['malloc'] / n:.1f}, calloc {allocs['calloc'] / n:.1f}, realloc {allocs['realloc'] / n:.1f}, free {allocs['free'] / n:.1f}")
print()
if scrape:
    print("top functions by inclusive instructions per request:")
    for f, c in sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]:
        print(f"  {c / n:10,.0f}  {f[:150]}")
    print()
print("top functions by own instructions per request:")
for f, c in sorted(self_cost.items(), key=lambda kv: -kv[1])[:25]:
    print(f"  {c / n:10,.0f}  {f[:150]}")
PY
