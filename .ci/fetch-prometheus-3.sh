#!/usr/bin/env bash
# Fetches the Prometheus generation nixpkgs ships (3.x; nixpkgs 26.05 has
# Prometheus 3.14 and Alertmanager 0.31) in the closest form that runs on
# Debian 12: the static Go binaries of Debian's sid suite (Prometheus 3.5 LTS,
# promtool 3.5, Alertmanager 0.33).
#
# The .debs are fetched with `apt-get download` under a separate apt state
# (its own sources list, lists and cache below the cache directory) that
# reuses the archive URI and keyring of the machine's own Debian entry, and
# unpacked with `dpkg-deb -x`. The system's apt sources are never touched.
#
# Usage: .ci/fetch-prometheus-3.sh [CACHE_DIR]   (default: target/tools/prometheus-3)
# Prints the directory holding prometheus, promtool, amtool and
# prometheus-alertmanager on its last line. Idempotent: a complete cache is reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cache="$(realpath -m "${1:-target/tools/prometheus-3}")"
bin="$cache/root/usr/bin"
packages=(prometheus promtool prometheus-alertmanager)

if [[ -x $bin/prometheus && -x $bin/promtool && -x $bin/prometheus-alertmanager && -x $bin/amtool ]]; then
  echo "$bin"
  exit 0
fi

# The machine's Debian archive: deb822 (`URIs:` + `Signed-By:`) or one-line
# (`deb [signed-by=…] URI suite …`) sources.
uri="" keyring=""
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] || continue
  if grep -Eq '^Suites:.*\b(bookworm|trixie|stable)\b' "$f" && grep -Eq '^URIs:.*/debian/?$' "$f"; then
    uri="$(grep -Em1 '^URIs:' "$f" | awk '{print $2}')"
    keyring="$(grep -Em1 '^Signed-By:' "$f" | awk '{print $2}' || true)"
    break
  fi
done
if [[ -z $uri ]]; then
  uri="$(grep -Eh '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -Eo 'https?://[^ ]*/debian/?( |$)' | head -n1 | tr -d ' ' || true)"
fi
if [[ -z $uri ]]; then
  echo "error: no Debian archive URI in /etc/apt/sources.list{,.d}; cannot fetch Prometheus 3 from sid" >&2
  exit 1
fi
keyring="${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}"

apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$cache/debs"
echo "deb [signed-by=$keyring] $uri sid main" >"$apt_dir/sid.list"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sid.list"
  -o "Dir::Etc::sourceparts=/nonexistent"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "fetching ${packages[*]} from $uri sid (separate apt state in $apt_dir)" >&2
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$cache/debs" && apt-get "${apt_opts[@]}" download "${packages[@]}" >&2)

rm -rf "$cache/root"
for deb in "$cache"/debs/*.deb; do
  dpkg-deb -x "$deb" "$cache/root"
done

prom_version="$("$bin/prometheus" --version 2>&1 | awk 'NR==1{print $3}')"
am_version="$("$bin/prometheus-alertmanager" --version 2>&1 | awk 'NR==1{print $3}')"
echo "Prometheus $prom_version, Alertmanager $am_version in $bin" >&2
if [[ $prom_version != 3.* ]]; then
  echo "error: sid's prometheus is $prom_version, not a 3.x release" >&2
  exit 1
fi
echo "$bin"
