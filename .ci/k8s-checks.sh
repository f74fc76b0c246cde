#!/usr/bin/env bash
# Checks of the Kubernetes base (deploy/kubernetes, docs/kubernetes.md); no
# cluster runs here:
#   1. base/generated is what deploy/kubernetes/generate.py writes from
#      prometheus/rules and grafana/provisioning/dashboards;
#   2. check.py's own unit tests (each check fails on the mistake it is for);
#   3. check.py on the base read from its resources list: core objects
#      against Kubernetes' schemas (strict), custom resources against the
#      prometheus-operator CRDs (unknown fields are errors), promtool and the
#      rule unit tests on the extracted groups, dashboards byte for byte,
#      selectors and ports;
#   4. the same on what `kubectl kustomize` renders from the base (which must
#      equal the base as read in 3) and from the example overlay (kustomize
#      v4 or later: kubectl 1.21+).
# kubernetes-validate (which bundles the Kubernetes schemas), jsonschema and
# PyYAML are installed, pinned, into target/k8s-venv; kubectl is the
# machine's, else Debian's kubernetes-client. Exits non-zero on the first
# failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=.ci/phases.sh
source .ci/phases.sh
export CI_PHASE_DEPTH=1
trap phases_summary EXIT

KUBERNETES_VALIDATE_VERSION=1.37.0
JSONSCHEMA_VERSION=4.26.0
PYYAML_VERSION=6.0.4
venv=target/k8s-venv

phase "kubernetes-validate $KUBERNETES_VALIDATE_VERSION (PyPI, pinned, into $venv)"
installed() { "$venv/bin/pip" show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if [[ $(installed kubernetes-validate) != "$KUBERNETES_VALIDATE_VERSION" ||
  $(installed jsonschema) != "$JSONSCHEMA_VERSION" || $(installed PyYAML) != "$PYYAML_VERSION" ]]; then
  echo "== installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
  rm -rf "$venv"
  mkdir -p target
  if ! python3 -m venv "$venv"; then
    echo "error: cannot create a virtual environment; install python3-venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "jsonschema==$JSONSCHEMA_VERSION" \
    "PyYAML==$PYYAML_VERSION"
else
  echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION already in $venv"
fi
python="$venv/bin/python"

phase "deploy/kubernetes/base/generated is what generate.py writes"
"$python" deploy/kubernetes/generate.py --check

phase "check.py's unit tests (mutated objects fail)"
"$python" -m unittest deploy/kubernetes/test_check.py

phase "check.py on the base (its resources list, no renderer)"
"$python" deploy/kubernetes/check.py

phase "kubectl kustomize: the base and the example overlay, rendered and checked"
if ! command -v kubectl >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "== installing kubernetes-client (kubectl) from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
  else
    echo "error: kubectl not found; install it (Debian: apt-get install kubernetes-client)" >&2
    exit 1
  fi
fi
kubectl version --client 2>/dev/null | head -n 2 || true
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"; phases_summary' EXIT
kubectl kustomize deploy/kubernetes/base >"$tmp/base.yaml"
"$python" deploy/kubernetes/check.py --rendered "$tmp/base.yaml" --same-as-base --skip-promtool
# The overlay needs kustomize v4+ (`patches` with a target); Debian 12's
# kubectl 1.20 embeds v2.0.3.
if kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v([4-9]|[1-9][0-9])\.'; then
  # A copy, with throwaway secret files where the user puts real ones.
  cp -r deploy/kubernetes "$tmp/kubernetes"
  overlay="$tmp/kubernetes/overlays/kube-prometheus-stack"
  head -c 32 /dev/urandom | base64 >"$overlay/admin-token"
  head -c 32 /dev/urandom | base64 >"$overlay/feedback-key"
  kubectl kustomize "$overlay" >"$tmp/overlay.yaml"
  "$python" deploy/kubernetes/check.py --rendered "$tmp/overlay.yaml" \
    --expect-label release=kube-prometheus-stack
else
  echo "note: this kubectl's kustomize is older than v4; the example overlay was not rendered"
fi
echo "kubernetes checks: OK"
