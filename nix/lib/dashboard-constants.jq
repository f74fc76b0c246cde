# Sets the dashboards' provisioning-time settings, as `grafana/generate.py
# --out DIR --runbook-url URL --mlflow-url URL` would write them: the hidden
# constant `runbook_base` and the default of the textbox `mlflow_url`.
# Grafana never expands anything inside dashboard JSON, so a deployment with
# other URLs provisions rewritten copies. Used by nix/module.nix;
# .ci/check_consistency.py checks it against generate.py's output, and
# src/stack/dashboard_constants.rs (PROVISIONED, the one list of these
# variables) checks that it sets exactly those.
#   jq --arg runbook_base URL --arg mlflow_url URL -f dashboard-constants.jq
def set_value($value):
  .query = $value
  | .current = { selected: false, text: $value, value: $value }
  | .options = [ { selected: true, text: $value, value: $value } ];

.templating.list |= map(
  if .name == "runbook_base" then set_value($runbook_base)
  elif .name == "mlflow_url" then set_value($mlflow_url)
  else . end
)
