#!/usr/bin/env bash
# RSS of `mlwatch serve` under a flood of POST /feedback: for every batch of
# 10 predictions, 100 feedback items (the 10 genuine ids, 10 duplicates of
# them, 80 forged: random strings and altered ids), from several clients at
# once, for DURATION seconds. Prints RSS every few seconds with the
# accepted ids the duplicate window holds; the window is capped by
# --feedback-dedup-capacity (set low here, 20000, so the cap is reached
# within the run): RSS must level off once it is. On demand only:
#
#     benches/feedback_flood.sh [DURATION] [CLIENTS]
#
# Needs python3 and a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration=${1:-60}
clients=${2:-4}
command -v python3 >/dev/null || { echo "python3 not found: apt-get install python3" >&2; exit 1; }
bin=target/release/mlwatch
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

$bin train --model linear --listen 127.0.0.1:0 --linger 0s --output "$work/model.json" >/dev/null 2>&1
head -c 32 /dev/urandom | base64 > "$work/feedback.key"; chmod 600 "$work/feedback.key"
port=19421
RUST_LOG=warn $bin serve --listen "127.0.0.1:$port" --model-path "$work/model.json" \
  --feedback-key-file "$work/feedback.key" --feedback-dedup-capacity 20000 & pid=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done

cat > "$work/flood.py" <<'PY'
import http.client, json, os, random, string, sys, threading, time
port, duration, clients, pid = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
row = [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]
alphabet = string.ascii_letters + string.digits + "-_"
counts = {"predictions": 0, "items": 0, "5xx": 0}
lock = threading.Lock()
stop = time.time() + duration

def post(conn, path, body):
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, data

def client(seed):
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < stop:
        status, data = post(conn, "/predict", {"instances": [row] * 10})
        ids = json.loads(data)["prediction_ids"]
        items = [{"prediction_id": i, "truth": 150.0} for i in ids]
        items += [{"prediction_id": i, "truth": 150.0} for i in ids]  # duplicates
        for _ in range(40):
            items.append({"prediction_id": "".join(rng.choice(alphabet) for _ in range(62)), "truth": 1.0})
        for _ in range(40):
            i = rng.choice(ids)
            k = rng.randrange(61)
            items.append({"prediction_id": i[:k] + ("A" if i[k] != "A" else "B") + i[k + 1:], "truth": 1.0})
        status, _ = post(conn, "/feedback", {"feedback": items[:100]})
        with lock:
            counts["predictions"] += 10
            counts["items"] += 100
            counts["5xx"] += status >= 500

def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
start = time.time()
print("| seconds | predictions | feedback items | RSS (MiB) |")
print("| --- | --- | --- | --- |")
print(f"| 0 | 0 | 0 | {rss_mib():.1f} |")
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    time.sleep(5)
    with lock:
        print(f"| {time.time() - start:.0f} | {counts['predictions']} | {counts['items']} | {rss_mib():.1f} |", flush=True)
for t in threads:
    t.join()
print(f"5xx answers: {counts['5xx']}")
PY

python3 "$work/flood.py" "$port" "$duration" "$clients" "$pid"
echo
curl -s "127.0.0.1:$port/metrics" | grep '^model_feedback_total'
