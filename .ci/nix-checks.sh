#!/usr/bin/env bash
# Static checks for the Nix and container deployment files. Nothing here can
# build or evaluate against nixpkgs (there is no nixpkgs on these machines);
# `nix flake check` on a machine with Nix and KVM does that. This script:
#   1. parses every .nix file (nix-instantiate --parse);
#   2. has Nix read flake.lock as JSON and asserts the pinned nixpkgs node;
#   3. runs deadnix --fail (unused bindings) and nixpkgs-fmt --check;
#   4. runs .ci/check_consistency.py (paths, ports, job names, uids);
#   5. validates docker-compose.yml (and the push override docker-compose.otlp.yml)
#      against the Compose specification schema
#      (vendored in the check-jsonschema package from PyPI);
#   6. evaluates every ```nix block of docs/nix.md against nix/module.nix
#      with .ci/module-eval.nix (.ci/nix-doc-snippets.py), after a self-test
#      that the evaluation refuses what it must.
# Every step runs; the script exits non-zero if any of them failed.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 1

# The nixpkgs pin (nixos-26.05) that flake.lock must carry.
NIXPKGS_REV="b18a4b905f8d028dc4476412e6d6891728695379"
NIXPKGS_NARHASH="sha256-gwrPcFf/rDjHPaVflbDZ040ZDmBTRj/7+s8ZmE2SaIM="
NIXPKGS_LASTMODIFIED="1787101114"

DEADNIX_VERSION="1.3.1"
NIXPKGS_FMT_VERSION="1.3.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"

failed=()
step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "FAIL: $*" >&2
  failed+=("$*")
}

# Tracked and new (not ignored) .nix files.
mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard -- '*.nix' 2>/dev/null | sort -u)
if [ "${#nix_files[@]}" -eq 0 ]; then
  mapfile -t nix_files < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' | sort)
fi
echo "nix files: ${nix_files[*]}"

step "1. nix-instantiate --parse"
if ! command -v nix-instantiate >/dev/null 2>&1; then
  fail "nix-instantiate not found: install the Debian package nix-bin (apt-get install nix-bin)"
else
  for f in "${nix_files[@]}"; do
    # stderr carries a harmless warning about the missing nixbld group.
    if out="$(nix-instantiate --parse "$f" 2>&1 >/dev/null)"; then
      echo "ok:   $f"
    else
      echo "$out" | grep -v "nixbld" >&2
      fail "syntax error in $f"
    fi
  done
fi

step "2. flake.lock"
if command -v nix-instantiate >/dev/null 2>&1; then
  if lock_json="$(nix-instantiate --eval --strict --json \
    -E 'builtins.fromJSON (builtins.readFile ./flake.lock)' 2>/dev/null)"; then
    echo "ok:   Nix reads flake.lock as JSON"
    if ! LOCK_JSON="$lock_json" REV="$NIXPKGS_REV" NARHASH="$NIXPKGS_NARHASH" \
      LASTMODIFIED="$NIXPKGS_LASTMODIFIED" python3 - <<'PY'; then
import json, os, re, sys

lock = json.loads(os.environ["LOCK_JSON"])
errors = []

def expect(cond, what):
    print(("ok:   " if cond else "FAIL: ") + what)
    if not cond:
        errors.append(what)

expect(lock.get("version") == 7, "lock version is 7")
expect(lock.get("root") == "root", "root node is 'root'")
nodes = lock.get("nodes", {})
expect(set(nodes) == {"root", "nixpkgs"}, f"nodes are exactly root and nixpkgs (found {sorted(nodes)})")
expect(nodes.get("root") == {"inputs": {"nixpkgs": "nixpkgs"}}, "root.inputs = { nixpkgs = \"nixpkgs\"; }")
locked = nodes.get("nixpkgs", {}).get("locked", {})
expect(locked == {
    "type": "github",
    "owner": "NixOS",
    "repo": "nixpkgs",
    "rev": os.environ["REV"],
    "narHash": os.environ["NARHASH"],
    "lastModified": int(os.environ["LASTMODIFIED"]),
}, f"nixpkgs.locked pins rev {os.environ['REV']}, narHash {os.environ['NARHASH']}, lastModified {os.environ['LASTMODIFIED']}")
expect(nodes.get("nixpkgs", {}).get("original") == {
    "type": "github", "owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-26.05",
}, "nixpkgs.original is github:NixOS/nixpkgs/nixos-26.05")

flake = open("flake.nix", encoding="utf-8").read()
urls = re.findall(r'inputs\.(\w[\w-]*)\.url\s*=\s*"([^"]+)"', flake)
expect(urls == [("nixpkgs", "github:NixOS/nixpkgs/nixos-26.05")],
       f"flake.nix has the single input nixpkgs = github:NixOS/nixpkgs/nixos-26.05 (found {urls})")
expect("flake-utils" not in flake, "flake.nix does not use flake-utils")
sys.exit(1 if errors else 0)
PY
      fail "flake.lock does not pin the expected nixpkgs"
    fi
  else
    fail "Nix cannot read flake.lock as JSON"
  fi
else
  fail "flake.lock not checked: nix-instantiate missing (Debian package nix-bin)"
fi

step "3. deadnix and nixpkgs-fmt"
export PATH="$HOME/.cargo/bin:$PATH"
need_install=()
command -v deadnix >/dev/null 2>&1 || need_install+=("deadnix@$DEADNIX_VERSION")
command -v nixpkgs-fmt >/dev/null 2>&1 || need_install+=("nixpkgs-fmt@$NIXPKGS_FMT_VERSION")
if [ "${#need_install[@]}" -gt 0 ]; then
  echo "installing ${need_install[*]} into ~/.cargo/bin (cargo install --locked; a few minutes)"
  if ! command -v cargo >/dev/null 2>&1; then
    fail "cargo not found: cannot install ${need_install[*]}"
  elif ! cargo install --locked "${need_install[@]}"; then
    fail "cargo install --locked ${need_install[*]} failed"
  fi
fi
if command -v deadnix >/dev/null 2>&1; then
  if deadnix --fail "${nix_files[@]}"; then
    echo "ok:   deadnix: no unused bindings"
  else
    fail "deadnix found unused bindings"
  fi
fi
if command -v nixpkgs-fmt >/dev/null 2>&1; then
  if nixpkgs-fmt --check "${nix_files[@]}"; then
    echo
    echo "ok:   nixpkgs-fmt: formatted"
  else
    fail "nixpkgs-fmt: files need formatting (run: nixpkgs-fmt ${nix_files[*]}, or nix fmt)"
  fi
fi

step "4. consistency of ports, job names, paths and uids"
if ! python3 .ci/check_consistency.py; then
  fail "consistency checks (.ci/check_consistency.py)"
fi

step "5. docker-compose.yml against the Compose specification schema"
# check-jsonschema (PyPI) ships the compose-spec JSON schema as its builtin
# `vendor.compose-spec`, so the validation itself needs no network.
if ! python3 -c 'import check_jsonschema' >/dev/null 2>&1; then
  echo "installing check-jsonschema==$CHECK_JSONSCHEMA_VERSION from PyPI"
  python3 -m pip install --quiet --disable-pip-version-check "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" ||
    echo "pip install check-jsonschema failed" >&2
fi
if python3 -c 'import check_jsonschema' >/dev/null 2>&1; then
  # docker-compose.otlp.yml, the push variant (docs/otlp.md), is an override
  # file: a fragment the specification validates on its own too.
  for compose_file in docker-compose.yml docker-compose.otlp.yml; do
    if python3 -m check_jsonschema --builtin-schema vendor.compose-spec "$compose_file"; then
      echo "ok:   $compose_file matches the Compose specification"
    else
      fail "$compose_file does not match the Compose specification"
    fi
  done
else
  fail "cannot validate docker-compose.yml: check-jsonschema is not installed and could not be installed from PyPI"
fi

step "6. docs/nix.md's configurations evaluate against the module"
if ! command -v nix-instantiate >/dev/null 2>&1; then
  fail "docs/nix.md's snippets not evaluated: nix-instantiate missing (Debian package nix-bin)"
else
  if ! python3 .ci/nix-doc-snippets.py --self-test; then
    fail "the snippet evaluation (.ci/module-eval.nix) accepts a configuration it must refuse"
  fi
  if ! python3 .ci/nix-doc-snippets.py docs/nix.md; then
    fail "a configuration in docs/nix.md does not evaluate against nix/module.nix"
  fi
fi

echo
if [ "${#failed[@]}" -gt 0 ]; then
  echo "nix checks: ${#failed[@]} failed:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "nix checks: all passed"
