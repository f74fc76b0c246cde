#!/usr/bin/env bash
# The service build links none of the tools.
#
# The images and the NixOS units run `cargo build --no-default-features`
# (nix/package.nix's mlwatch-service, the Dockerfile): train, serve and
# runbooks only. This builds that binary (debug: the symbols are the proof)
# and fails unless
#   1. `demo`, `up`, `load` and `report` are unknown subcommands, while
#      `train`, `serve` and `runbooks` are there;
#   2. its symbol table has code of mlwatch::serve and mlwatch::train (so
#      the next check can see anything at all) and none of mlwatch::demo,
#      mlwatch::load, mlwatch::report, mlwatch::prometheus_api, the launcher
#      (mlwatch::stack::{up,launcher,spec,plan,config,endpoints,
#      dashboard_constants,children,commands,webhook,
#      grafana,mlflow,state}) or the crates only they use (plotters,
#      prometheus_parse, serde_yaml);
#   3. it holds no "apt-get" (the demo's installer).
#
#   .ci/service-build.sh                  build and check the service binary
#   .ci/service-build.sh --binary PATH    check PATH instead (it must have
#                                         symbols: a stripped binary fails)
#
# Cost: the dependencies are reused from a target directory that already has
# them. When the Nix-sandbox rehearsal (.ci/nix-sandbox.sh, run just before
# by .ci/test) has built the tests, its target directory and vendored crates
# are used; otherwise $CARGO_TARGET_DIR or target/. What is rebuilt is
# mlwatch (about 25 s) and the crates whose features differ without the
# tools and the dev-dependencies: 1 min 20 s in all, measured after a
# default-feature build in the same target directory on 2 shared cores. In an
# empty target directory it is a full debug build of the service's
# dependencies. The checks themselves take about a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

binary=""
case "${1-}" in
--binary) binary="${2:?--binary needs a path}" ;;
"") ;;
*) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
esac

if [[ -z $binary ]]; then
  sandbox=target/nix-sandbox
  cargo_env=()
  if [[ -z ${CARGO_TARGET_DIR-} && -d $sandbox/target/debug && -f $sandbox/cargo-home/config.toml &&
    "$(cat "$sandbox/vendor.lock-hash" 2>/dev/null)" == "$(sha256sum Cargo.lock | cut -d' ' -f1)" ]]; then
    # The rehearsal's crates (vendored, offline) and build, so its
    # dependency builds are fresh here too.
    cargo_env=(CARGO_HOME="$sandbox/cargo-home" CARGO_TARGET_DIR="$sandbox/target")
    target_dir="$sandbox/target"
  else
    target_dir="${CARGO_TARGET_DIR:-target}"
  fi
  echo "== cargo build --no-default-features --bin mlwatch (target directory $target_dir)"
  uplifted="$target_dir/debug/mlwatch"
  # cargo puts the service binary where the full one was (target/debug/
  # mlwatch, which the tests and the sandbox's `nix run` rehearsal run):
  # keep the full one and put it back afterwards.
  kept="$target_dir/debug/.mlwatch.before-service-build"
  rm -f "$kept"
  [[ -e $uplifted ]] && ln -f "$uplifted" "$kept"
  # When cargo had nothing to build, both names are still one file.
  restore() {
    if [[ $kept -ef $uplifted ]]; then
      rm -f "$kept"
    elif [[ -e $kept ]]; then
      mv -f "$kept" "$uplifted"
    fi
  }
  trap restore EXIT
  started=$SECONDS
  env "${cargo_env[@]}" cargo build --locked --no-default-features --bin mlwatch
  echo "built in $((SECONDS - started)) s"
  binary="$target_dir/service-build/mlwatch"
  mkdir -p "$(dirname "$binary")"
  cp -f "$uplifted" "$binary"
  restore
  trap - EXIT
fi
[[ -x $binary ]] || { echo "error: $binary is not an executable" >&2; exit 2; }
echo "== checking $binary ($(du -h "$binary" | cut -f1))"

failed=()
fail() {
  echo "FAIL: $*" >&2
  failed+=("$*")
}

for sub in train serve runbooks; do
  if "$binary" "$sub" --help >/dev/null 2>&1; then
    echo "ok:   mlwatch $sub is there"
  else
    fail "mlwatch $sub --help fails: the service build lost a subcommand it needs"
  fi
done
for sub in demo up load report; do
  if out="$("$binary" "$sub" --help 2>&1)"; then
    fail "mlwatch $sub is a subcommand of the service build"
  elif grep -q "unrecognized subcommand '$sub'" <<<"$out"; then
    echo "ok:   mlwatch $sub is an unknown subcommand"
  else
    fail "mlwatch $sub --help fails, but not as an unknown subcommand: $(head -n1 <<<"$out")"
  fi
done

symbols="$(nm -C "$binary" 2>/dev/null || true)"
for present in 'mlwatch::serve::' 'mlwatch::train::'; do
  if grep -qF "$present" <<<"$symbols"; then
    echo "ok:   symbols of ${present%::} are there (the symbol table can be read)"
  else
    fail "no ${present%::} symbol: stripped, or nm cannot demangle, so the next check would prove nothing"
  fi
done
tools='mlwatch::(demo|load|report|prometheus_api|stack::(up|launcher|spec|plan|config|endpoints|dashboard_constants|children|commands|webhook|grafana|mlflow|state))::|(^|[^[:alnum:]_])(plotters|prometheus_parse|serde_yaml)::'
linked="$(grep -oE "$tools" <<<"$symbols" | sed -E 's/^[^[:alnum:]]//; s/::$//' | sort | uniq -c || true)"
if [[ -n $linked ]]; then
  fail "the service binary links tool code (symbols per module):"$'\n'"$linked"
else
  echo "ok:   no symbol of demo, load, report, prometheus_api, the launcher, plotters, prometheus_parse or serde_yaml"
fi

if grep -qaF 'apt-get' "$binary"; then
  fail "the service binary contains \"apt-get\" (the demo's installer)"
else
  echo "ok:   no \"apt-get\" in the binary"
fi

if ((${#failed[@]})); then
  echo "service build check: ${#failed[@]} failed" >&2
  exit 1
fi
echo "service build check: passed"
