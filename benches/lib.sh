# Shared by the bench scripts (sourced): a scratch directory and the
# servers' process groups, removed and stopped when the script exits.
# Every server or busy loop runs in its own process group (setsid) and is
# stopped as a group.
work=$(mktemp -d)
groups=()
cleanup() {
  for g in "${groups[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# start COMMAND...: in its own process group, stderr to $work/servers.log.
start() { setsid "$@" >/dev/null 2>>"$work/servers.log" & groups+=($!); }
# ready PORT: waits up to 10 s for GET /ready to answer 2xx.
ready() { for _ in $(seq 100); do curl -sf "127.0.0.1:$1/ready" >/dev/null && return 0; sleep 0.1; done; echo "port $1 not ready" >&2; exit 1; }
