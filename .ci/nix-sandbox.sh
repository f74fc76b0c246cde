#!/usr/bin/env bash
# Rehearses the check phase of the Nix build (nix/package.nix runs
# `cargo test`) as closely as a machine without nixpkgs can:
#
#   * the source is exactly nix/source-set.json's "package" list, taken from
#     git's tracked files (what a flake's fileset hands the builder) and
#     copied into a fresh directory: a test that reads a file outside the set
#     fails here, not in `nix build`;
#   * crates are vendored (`cargo vendor`, as cargoLock.lockFile does) and
#     cargo runs --offline with a CARGO_HOME of its own;
#   * a cleared environment with HOME=/homeless-shelter and a fresh TMPDIR;
#   * no network but loopback: `unshare -rn`, with `lo` brought up.
#
# Each argument LABEL=BINDIR names one generation of the monitoring stack:
# the whole test suite runs once per generation, with BINDIR first on PATH
# (an empty BINDIR means the system's own binaries). Arguments after `--`
# go to `cargo test`. `--path DIR` (repeatable) puts DIR on PATH for every
# generation, as a nativeCheckInputs entry would (e.g. the MLflow venv).
#
#   .ci/nix-sandbox.sh --path target/mlflow-venv/bin debian-12= prometheus-3=target/tools/prometheus-3/root/usr/bin
#
# Exits non-zero when any generation fails, naming it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$(pwd)"
# Sub-phases in .ci/test's timing summary (when run by it).
CI_PHASE_DEPTH=1
# shellcheck source=.ci/phases.sh
source .ci/phases.sh
trap phases_summary EXIT

generations=()
extra_path=""
while (($#)); do
  case "$1" in
  --) shift; break ;;
  --path) extra_path="$extra_path:$(realpath "$2")"; shift 2 ;;
  *=*) generations+=("$1"); shift ;;
  *) echo "usage: $0 LABEL=BINDIR... [-- cargo test args]" >&2; exit 2 ;;
  esac
done
((${#generations[@]})) || generations=("system=")
cargo_test_args=("$@")

for tool in git tar unshare ip python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found (needed for the Nix-sandbox rehearsal)" >&2; exit 1; }
done
if ! unshare -rn true 2>/dev/null; then
  echo "error: 'unshare -rn' is not permitted here (user namespaces disabled?); the Nix-sandbox rehearsal needs it" >&2
  exit 1
fi
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
  echo "error: not a git checkout: the rehearsal copies git's tracked files, as a flake does" >&2
  exit 1
}

root="$repo/target/nix-sandbox"
src="$root/src"
vendor="$root/vendor"
cargo_home="$root/cargo-home"
target="$root/target"
mkdir -p "$root"

phase "source set (nix/source-set.json \"package\") -> $src"
mapfile -t paths < <(python3 -c 'import json; print("\n".join(json.load(open("nix/source-set.json"))["package"]))')
for path in "${paths[@]}"; do
  [[ -e $path ]] || { echo "error: nix/source-set.json lists $path, which does not exist" >&2; exit 1; }
done
rm -rf "$src"
mkdir -p "$src"
git ls-files -z --cached -- "${paths[@]}" |
  tar --null --no-recursion --ignore-failed-read -T - -cf - |
  tar -xf - -C "$src"
echo "$(find "$src" -type f | wc -l) files"

phase "vendored crates (cargo vendor --locked)"
lock_hash="$(sha256sum Cargo.lock | cut -d' ' -f1)"
if [[ ! -d $vendor || "$(cat "$root/vendor.lock-hash" 2>/dev/null)" != "$lock_hash" ]]; then
  rm -rf "$vendor"
  cargo vendor --locked --versioned-dirs --manifest-path "$src/Cargo.toml" "$vendor" >/dev/null
  echo "$lock_hash" >"$root/vendor.lock-hash"
fi
rm -rf "$cargo_home"
mkdir -p "$cargo_home"
cat >"$cargo_home/config.toml" <<EOF
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "$vendor"

[net]
offline = true
EOF

# The toolchain's real binaries, not rustup's proxies (which need a HOME).
toolchain_bin="$(dirname "$(rustup which cargo 2>/dev/null || command -v cargo)")"

# Runs "$@" in the sandbox: own network namespace (loopback only), cleared
# environment, PATH = generation binaries, toolchain, system.
in_sandbox() {
  local bindir="$1"
  shift
  local tmp
  tmp="$(mktemp -d "$root/tmp.XXXXXX")"
  local path="$toolchain_bin${extra_path}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
  [[ -n $bindir ]] && path="$(realpath "$bindir"):$path"
  local status=0
  unshare -rn sh -c 'ip link set lo up && cd "$0" && exec "$@"' "$src" \
    env -i \
    PATH="$path" \
    HOME=/homeless-shelter \
    TMPDIR="$tmp" TMP="$tmp" TEMP="$tmp" TEMPDIR="$tmp" \
    CARGO_HOME="$cargo_home" \
    CARGO_TARGET_DIR="$target" \
    CARGO_TERM_COLOR=never \
    CI="${CI:-}" \
    "$@" || status=$?
  rm -rf "$tmp"
  return "$status"
}

phase "build the tests in the sandbox (cargo test --offline --no-run)"
in_sandbox "" cargo test --offline --locked --no-run

# The slowest test binaries of a `cargo test` log, for planning CI's budget.
slowest_test_binaries() {
  echo "slowest test binaries (seconds):"
  awk '/^ *Running / { name = ($2 == "unittests") ? $3 : $2 } /^test result:/ && name { sub(/s$/, "", $NF); printf "%8.1f  %s\n", $NF, name; name = "" }' "$1" |
    sort -rn | head -n 8
}

# The generations run at the same time, each in a network namespace of its
# own (so their servers' ports cannot collide) with its own TMPDIR; cargo
# holds the target directory's lock only while it builds, which the --no-run
# above did. Their logs are printed one after the other once all have ended.
# The live tests wait for conditions, never for fixed times, so the doubled
# load makes them slower, not flaky: a test that fails only then is a defect.
run_generation() {
  local label="$1" bindir="$2"
  local started=$SECONDS status=0
  in_sandbox "$bindir" cargo test --offline --locked --no-fail-fast "${cargo_test_args[@]}" \
    >"$root/cargo-test-$label.log" 2>&1 || status=$?
  echo "$((SECONDS - started))" >"$root/cargo-test-$label.seconds"
  return "$status"
}

failed=()
labels=()
declare -A runs=() versions_of=()
echo
phase "cargo test in the Nix-sandbox rehearsal, ${#generations[@]} generation(s) at once"
for generation in "${generations[@]}"; do
  label="${generation%%=*}"
  bindir="${generation#*=}"
  versions_of[$label]="$(in_sandbox "$bindir" sh -c 'prometheus --version 2>&1 | head -n1; (alertmanager --version 2>/dev/null || prometheus-alertmanager --version) 2>&1 | head -n1' | tr '\n' ';')"
  echo "generation $label: ${versions_of[$label]}"
  run_generation "$label" "$bindir" &
  runs[$label]=$!
  labels+=("$label")
done
# --no-fail-fast: every test binary runs, so one run names every test that
# reads outside the source set or reaches for the network.
for label in "${labels[@]}"; do
  status=0
  wait "${runs[$label]}" || status=$?
  echo
  echo "== cargo test log, generation $label (${versions_of[$label]}), $(cat "$root/cargo-test-$label.seconds") s"
  cat "$root/cargo-test-$label.log"
  if ((status == 0)); then
    echo "ok:   generation $label"
    slowest_test_binaries "$root/cargo-test-$label.log"
  else
    echo "FAIL: cargo test against generation $label (${versions_of[$label]})" >&2
    failed+=("$label")
  fi
done
for label in "${labels[@]}"; do
  [[ -n $CI_PHASES_FILE ]] && printf '%6ds    generation %s\n' "$(cat "$root/cargo-test-$label.seconds")" "$label" >>"$CI_PHASES_FILE"
done

# `nix run`: the launcher with nothing but the assets derivation's files,
# against the last generation (the one nixpkgs ships).
echo
phase "nix run rehearsal: mlwatch up --assets <nix/source-set.json \"assets\" only>"
assets="$root/assets/share/mlwatch"
rm -rf "$root/assets"
mkdir -p "$assets"
mapfile -t asset_paths < <(python3 -c 'import json; print("\n".join(json.load(open("nix/source-set.json"))["assets"]))')
git ls-files -z --cached -- "${asset_paths[@]}" |
  tar --null --no-recursion --ignore-failed-read -T - -cf - |
  tar -xf - -C "$assets"
last="${generations[-1]}"
rm -rf "$root/up-state"
if in_sandbox "${last#*=}" "$repo/.ci/rehearse-nix-run.sh" "$target/debug/mlwatch" "$assets" "$root/up-state"; then
  echo "ok:   nix run rehearsal (generation ${last%%=*})"
else
  failed+=("nix-run:${last%%=*}")
fi

if ((${#failed[@]})); then
  echo "nix-sandbox rehearsal: failed for generation(s): ${failed[*]}" >&2
  exit 1
fi
echo "nix-sandbox rehearsal: passed for ${#generations[@]} generation(s)"
