# The whole stack on one VM, driven the way an operator would: boot a fresh
# deployment, watch it train its first model and the service pick it up,
# check that Prometheus scrapes every
# target and evaluates every rule, that Grafana provisioned its datasource
# and dashboards, and that a surge of invalid requests travels
# Prometheus -> Alertmanager -> webhook as InvalidInputSurge.
#
# InvalidInputSurge has `for: 2m` and Prometheus evaluates it in real time,
# so the alert subtest takes a few minutes; its timeouts are generous.
{ nixosModule }:

let
  # Rule group and alert names, read from the repository's rule files: the
  # test asserts on these, not on file paths (nixpkgs hands Prometheus a
  # promtool-checked copy of each file, named `…-checked`).
  ruleLines = builtins.concatMap
    (name: builtins.filter builtins.isString
      (builtins.split "\n" (builtins.readFile (../../prometheus/rules + "/${name}"))))
    (builtins.attrNames (builtins.readDir ../../prometheus/rules));
  namesAfter = pattern: map builtins.head
    (builtins.filter (m: m != null) (map (builtins.match pattern) ruleLines));
  ruleGroups = namesAfter "  - name: ([A-Za-z0-9_-]+).*";
  alertNames = namesAfter "[[:space:]]*- alert: ([A-Za-z0-9_]+).*";
in
{
  name = "mlwatch-stack";

  nodes.machine = { pkgs, ... }:
    let
      api = "http://127.0.0.1:9000";

      # Keeps the invalid share of /predict far above 20 % at ~2 req/s for
      # longer than the alert's `for: 2m`, then stops by itself.
      invalidTraffic = pkgs.writeShellApplication {
        name = "invalid-traffic";
        # systemd-run's transient units get only systemd's own bin on PATH:
        # `sleep` and `seq` come from coreutils.
        runtimeInputs = [ pkgs.curl pkgs.coreutils ];
        text = ''
          end=$((SECONDS + 480))
          n=0
          while (( SECONDS < end )); do
            curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
              --data '{"features": [1, 2,' ${api}/predict || true
            n=$((n + 1))
            if (( n % 10 == 0 )); then
              curl -s -o /dev/null -X POST -H 'Content-Type: application/json' \
                --data @/etc/mlwatch/valid-request.json ${api}/predict || true
            fi
            sleep 0.5
          done
        '';
      };
    in
    {
      imports = [ nixosModule ./webhook-logger.nix ];

      virtualisation = {
        # MLflow's server (Python) needs about 400 MB of its own.
        memorySize = 3072;
        cores = 2;
      };

      environment.systemPackages = [ pkgs.curl pkgs.jq invalidTraffic ];

      # Test secrets, outside the store paths the module sees (mode makes
      # these copies, not store symlinks).
      environment.etc = {
        "mlwatch/admin-token" = { text = "test-admin-token"; mode = "0400"; };
        "mlwatch/grafana-admin-password" = { text = "snakeoil-admin-pw"; mode = "0400"; user = "grafana"; };
        "mlwatch/grafana-secret-key" = { text = "snakeoil-secret-key-0123456789abcdef"; mode = "0400"; user = "grafana"; };
        # One row of the default (diabetes, 10 features) dataset. The alert
        # must fire whatever the service answers to it.
        "mlwatch/valid-request.json".text = ''
          {"features": [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]}
        '';
      };

      services.mlwatch = {
        enable = true;
        serve.adminTokenFile = "/etc/mlwatch/admin-token";
        train = {
          enable = true;
          # Keep /metrics of the finished run up for the whole test, so the
          # model-training target is up when the targets are checked.
          args = [ "--linger" "30m" ];
        };
        prometheus.enable = true;
        mlflow.enable = true;
        alertmanager = {
          enable = true;
          # Differs from prometheus/alertmanager.yml's placeholder URL, so the
          # alert arriving here proves the module substituted it.
          webhookUrl = "http://127.0.0.1:5099/mlwatch-vm-test";
        };
        grafana = {
          enable = true;
          adminPasswordFile = "/etc/mlwatch/grafana-admin-password";
          secretKeyFile = "/etc/mlwatch/grafana-secret-key";
        };
      };

      # Faster than the module's 15s defaults; `for:` durations stay real.
      services.prometheus.globalConfig = {
        scrape_interval = "5s";
        evaluation_interval = "5s";
      };

      services.grafana.settings.analytics = {
        reporting_enabled = false;
        check_for_updates = false;
      };

    };

  testScript = ''
    import json

    rule_groups = set(json.loads('${builtins.toJSON ruleGroups}'))
    alert_names = set(json.loads('${builtins.toJSON alertNames}'))

    grafana_auth = "admin:$(cat /etc/mlwatch/grafana-admin-password)"


    def http_status(method, url, *curl_args):
        args = " ".join(curl_args)
        return machine.succeed(
            f"curl -s -o /dev/null -w '%{{http_code}}' -X {method} {args} {url}"
        ).strip()


    start_all()

    with subtest("all services come up"):
        for unit, port in [
            ("mlwatch-serve.service", 9000),
            ("prometheus.service", 9090),
            ("alertmanager.service", 9093),
            ("grafana.service", 3000),
            ("webhook-logger.service", 5099),
        ]:
            machine.wait_for_unit(unit)
            machine.wait_for_open_port(port)

    with subtest("a fresh deployment trains its first model at boot"):
        # No `systemctl start`: mlwatch-train-initial starts the trainer
        # because no model exists, and the service picks the model up.
        machine.succeed("curl -sf http://127.0.0.1:9000/health")
        machine.wait_for_unit("mlwatch-train-initial.service")
        machine.wait_for_open_port(8002)
        machine.wait_for_file("/var/lib/mlwatch/model.json", timeout=600)
        # mlwatch-reload.path reloads the service as soon as the file appears.
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=120)
        # An explicit reload (ExecReload: SIGHUP) keeps it ready.
        machine.succeed("systemctl reload mlwatch-serve.service")
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=60)
        # With an admin token configured, /model answers only to it.
        machine.succeed(
            "curl -sf -H 'Authorization: Bearer test-admin-token' http://127.0.0.1:9000/model"
            " | jq -e '.reference.features | length > 0'"
        )

    with subtest("with a model present, boot does not retrain"):
        # The condition is on the model file: a second start is skipped.
        machine.succeed("systemctl restart mlwatch-train-initial.service")
        result = machine.succeed("systemctl show -p ConditionResult --value mlwatch-train-initial.service").strip()
        assert result == "no", f"mlwatch-train-initial ran although a model exists (ConditionResult={result})"

    with subtest("the boot-time training run is in MLflow, and the service serves its model"):
        machine.wait_for_unit("mlwatch-mlflow.service")
        machine.wait_for_open_port(5000)
        experiment = machine.wait_until_succeeds(
            "curl -sf 'http://127.0.0.1:5000/api/2.0/mlflow/experiments/get-by-name?experiment_name=mlwatch'"
            " | jq -er .experiment.experiment_id",
            timeout=300,
        ).strip()
        runs = json.loads(machine.wait_until_succeeds(
            "curl -sf -X POST -H 'Content-Type: application/json'"
            f" -d '{{\"experiment_ids\": [\"{experiment}\"]}}'"
            " http://127.0.0.1:5000/api/2.0/mlflow/runs/search"
            " | jq -e '.runs | length >= 1'  >/dev/null && curl -sf -X POST -H 'Content-Type: application/json'"
            f" -d '{{\"experiment_ids\": [\"{experiment}\"]}}'"
            " http://127.0.0.1:5000/api/2.0/mlflow/runs/search",
            timeout=300,
        ))["runs"]
        run_ids = {run["info"]["run_id"] for run in runs}
        served = json.loads(machine.succeed(
            "curl -sf -H 'Authorization: Bearer test-admin-token' http://127.0.0.1:9000/model"
        ))
        served_run = (served.get("mlflow") or {}).get("run_id")
        assert served_run in run_ids, f"/model names run {served_run}, MLflow has {sorted(run_ids)}"

    with subtest("the admin token reaches the service through LoadCredential"):
        status = http_status("POST", "http://127.0.0.1:9000/admin/reload")
        assert not status.startswith("2"), f"/admin/reload without a token answered {status}"
        status = http_status(
            "POST",
            "http://127.0.0.1:9000/admin/reload",
            "-H 'Authorization: Bearer test-admin-token'",
        )
        assert status.startswith("2"), f"/admin/reload with the token answered {status}"
        status = http_status("GET", "http://127.0.0.1:9000/model")
        assert status == "401", f"/model without the token answered {status}"

    with subtest("Prometheus scrapes every target"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '"
            "[.data.activeTargets[].labels.job] | sort"
            " == [\"alertmanager\", \"ml-api\", \"mlflow\", \"model-training\", \"prometheus\"]'",
            timeout=120,
        )
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '"
            "[.data.activeTargets[].health] | all(. == \"up\")'",
            timeout=120,
        )

    with subtest("alert and recording rules are loaded and healthy"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/rules | jq -e '"
            "[.data.groups[].rules[].health] | length > 0 and all(. == \"ok\")'",
            timeout=120,
        )
        rules = json.loads(machine.succeed("curl -sf http://127.0.0.1:9090/api/v1/rules"))
        groups = {group["name"] for group in rules["data"]["groups"]}
        assert groups == rule_groups, f"rule groups {sorted(groups)}, expected {sorted(rule_groups)}"
        alerts = {
            rule["name"]
            for group in rules["data"]["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        }
        assert alerts == alert_names, f"alerts {sorted(alerts)}, expected {sorted(alert_names)}"

    with subtest("every alert's runbook_url opens the runbook page at the alert's anchor"):
        machine.wait_for_unit("mlwatch-runbooks.service")
        page = machine.wait_until_succeeds("curl -sf http://127.0.0.1:5002/runbooks", timeout=60)
        for name in sorted(alert_names):
            assert f'id="{name.lower()}"' in page, f"no anchor for {name} in the runbook page"
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/rules | jq -e '"
            "[.data.groups[].rules[] | select(.type == \"alerting\") | .annotations.runbook_url]"
            " | all(startswith(\"http://127.0.0.1:5002/runbooks#\"))'",
            timeout=60,
        )

    with subtest("Grafana provisions the datasource and both dashboards"):
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:3000/api/health", timeout=120)
        machine.succeed(
            f"curl -sf -u \"{grafana_auth}\" http://127.0.0.1:3000/api/datasources/uid/mlwatch-prometheus"
            " | jq -e '.type == \"prometheus\"'"
        )
        machine.wait_until_succeeds(
            f"curl -sf -u \"{grafana_auth}\" http://127.0.0.1:3000/api/datasources/uid/mlwatch-prometheus/health"
            " | jq -e '.status == \"OK\"'",
            timeout=60,
        )
        for uid in ["mlwatch-training", "mlwatch-predict-api"]:
            machine.wait_until_succeeds(
                f"curl -sf -u \"{grafana_auth}\" http://127.0.0.1:3000/api/dashboards/uid/{uid}"
                f" | jq -e '.dashboard.uid == \"{uid}\"'",
                timeout=60,
            )

    with subtest("a surge of invalid input fires InvalidInputSurge through Alertmanager"):
        machine.succeed(
            "for i in $(seq 100); do"
            " curl -s -o /dev/null -X POST -H 'Content-Type: application/json'"
            " --data 'this is not json' http://127.0.0.1:9000/predict; done"
        )
        machine.succeed(
            "for i in $(seq 5); do"
            " curl -s -o /dev/null -X POST -H 'Content-Type: application/json'"
            " --data @/etc/mlwatch/valid-request.json http://127.0.0.1:9000/predict; done"
        )
        # A burst alone is not enough: rate() ignores the jump from "no series"
        # to the burst's count, and the burst ages out of the 5m window. A
        # steady trickle holds both conditions true past the alert's `for: 2m`.
        def invalid_count():
            text = machine.succeed("curl -sf http://127.0.0.1:9000/metrics")
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("model_prediction_requests_total{")
                and 'status="invalid_input"' in line
            )

        before = invalid_count()
        machine.succeed("systemd-run --unit=invalid-traffic \"$(command -v invalid-traffic)\"")
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9093/api/v2/alerts | jq -e '"
            "any(.[]; .labels.alertname == \"InvalidInputSurge\")'",
            timeout=600,
        )
        # The alert needs > 2 min of traffic at ~2 invalid req/s: the trickle
        # must still be running and must have sent far more than one request.
        machine.succeed("systemctl is-active invalid-traffic.service")
        sent = invalid_count() - before
        assert sent >= 100, f"the trickle sent only {sent} invalid requests before the alert fired"
        machine.wait_until_succeeds(
            "grep -q InvalidInputSurge /var/lib/webhook-logger/alerts.jsonl",
            timeout=300,
        )
        machine.succeed("systemctl stop invalid-traffic.service")
  '';
}
