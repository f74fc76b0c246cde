#!/usr/bin/env bash
# Installs the pinned MLflow tracking server into target/mlflow-venv for the
# MLflow integration tests (tests/mlflow_*.rs) and `mlwatch up`.
#
# Idempotent: a venv that already has the pinned version is left alone, so
# CI and developers pay for the download once (pip's own cache under
# ~/.cache/pip keeps the wheels across `cargo clean`).
#
# Why the full `mlflow` package and not `mlflow-skinny`: skinny ships the
# client only; `mlflow server` needs Flask, SQLAlchemy, alembic, uvicorn and
# the UI bundle that only the full package brings. prometheus-flask-exporter
# is what `mlflow server --expose-prometheus` imports (an MLflow "extra").
#
# The version is pinned in one place, here; docker-compose.yml's image tag
# and docs/mlflow.md name the same version (tests/mlflow_*.rs check that).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MLFLOW_VERSION=3.14.0
PROMETHEUS_FLASK_EXPORTER_VERSION=0.23.2
venv=target/mlflow-venv

if [[ -x $venv/bin/mlflow ]] &&
  [[ $("$venv/bin/python" -c 'import mlflow, prometheus_flask_exporter; print(mlflow.__version__)' 2>/dev/null) == "$MLFLOW_VERSION" ]]; then
  echo "mlflow $MLFLOW_VERSION already in $venv"
  exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "error: $python not found; install Python 3 (Debian: apt-get install python3 python3-venv)" >&2
  exit 1
fi
echo "== installing mlflow $MLFLOW_VERSION into $venv"
rm -rf "$venv"
mkdir -p target
if ! "$python" -m venv "$venv"; then
  echo "error: cannot create a virtual environment; install python3-venv (Debian: apt-get install python3-venv)" >&2
  exit 1
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "mlflow==$MLFLOW_VERSION" \
  "prometheus-flask-exporter==$PROMETHEUS_FLASK_EXPORTER_VERSION"
"$venv/bin/mlflow" --version
