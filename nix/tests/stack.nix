# The whole stack on one VM, driven the way an operator would: train a
# model, watch the service pick it up, check that Prometheus scrapes every
# target and evaluates every rule, that Grafana provisioned its datasource
# and dashboards, and that a surge of invalid requests travels
# Prometheus -> Alertmanager -> webhook as InvalidInputSurge.
#
# InvalidInputSurge has `for: 2m` and Prometheus evaluates it in real time,
# so the alert subtest takes a few minutes; its timeouts are generous.
{ nixosModule }:

{
  name = "mlwatch-stack";

  nodes.machine = { pkgs, ... }:
    let
      api = "http://127.0.0.1:9000";

      # Records every Alertmanager notification as one JSON line.
      webhookLogger = pkgs.writeText "webhook-logger.py" ''
        import http.server


        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with open("/var/lib/webhook-logger/alerts.jsonl", "ab") as log:
                    log.write(body + b"\n")
                self.send_response(200)
                self.end_headers()


        http.server.HTTPServer(("127.0.0.1", 5099), Handler).serve_forever()
      '';

      # Keeps the invalid share of /predict far above 20 % at ~2 req/s for
      # longer than the alert's `for: 2m`, then stops by itself.
      invalidTraffic = pkgs.writeShellApplication {
        name = "invalid-traffic";
        runtimeInputs = [ pkgs.curl ];
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
      imports = [ nixosModule ];

      virtualisation = {
        memorySize = 2048;
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

      systemd.services.webhook-logger = {
        description = "Alertmanager webhook receiver that logs to a file";
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          DynamicUser = true;
          StateDirectory = "webhook-logger";
          ExecStart = "${pkgs.python3.interpreter} ${webhookLogger}";
        };
      };
    };

  testScript = ''
    import json

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

    with subtest("without a model the service is alive but not ready"):
        machine.succeed("curl -sf http://127.0.0.1:9000/health")
        status = http_status("GET", "http://127.0.0.1:9000/ready")
        assert status == "503", f"/ready answered {status} before any model existed"

    with subtest("training writes the model and the service loads it"):
        machine.succeed("systemctl start --no-block mlwatch-train.service")
        machine.wait_for_open_port(8002)
        machine.wait_for_file("/var/lib/mlwatch/model.json", timeout=600)
        # mlwatch-reload.path reloads the service as soon as the file appears.
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=120)
        # An explicit reload (ExecReload: SIGHUP) keeps it ready.
        machine.succeed("systemctl reload mlwatch-serve.service")
        machine.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=60)
        machine.succeed("curl -sf http://127.0.0.1:9000/model | jq -e .")

    with subtest("the admin token reaches the service through LoadCredential"):
        status = http_status("POST", "http://127.0.0.1:9000/admin/reload")
        assert not status.startswith("2"), f"/admin/reload without a token answered {status}"
        status = http_status(
            "POST",
            "http://127.0.0.1:9000/admin/reload",
            "-H 'Authorization: Bearer test-admin-token'",
        )
        assert status.startswith("2"), f"/admin/reload with the token answered {status}"

    with subtest("Prometheus scrapes every target"):
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '"
            "[.data.activeTargets[].labels.job] | sort"
            " == [\"alertmanager\", \"ml-api\", \"model-training\", \"prometheus\"]'",
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
            "([.data.groups[].file] | any(endswith(\"ml_alerts.yml\")) and any(endswith(\"ml_recording.yml\")))"
            " and ([.data.groups[].rules[].health] | length > 0 and all(. == \"ok\"))'",
            timeout=120,
        )
        rules = json.loads(machine.succeed("curl -sf http://127.0.0.1:9090/api/v1/rules"))
        alerts = {
            rule["name"]
            for group in rules["data"]["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        }
        for name in ["InvalidInputSurge", "MlApiDown", "ModelNotLoaded"]:
            assert name in alerts, f"alert {name} not loaded; got {sorted(alerts)}"

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
        machine.succeed("systemd-run --unit=invalid-traffic \"$(command -v invalid-traffic)\"")
        machine.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9093/api/v2/alerts | jq -e '"
            "any(.[]; .labels.alertname == \"InvalidInputSurge\")'",
            timeout=600,
        )
        machine.wait_until_succeeds(
            "grep -q InvalidInputSurge /var/lib/webhook-logger/alerts.jsonl",
            timeout=300,
        )
        # The transient unit may already have finished (and been unloaded).
        machine.execute("systemctl stop invalid-traffic.service")
  '';
}
