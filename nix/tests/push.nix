# The push path on one VM (docs/otlp.md): nixpkgs' Prometheus (3.14, built
# with the OTLP receiver) receives what `mlwatch serve` and `mlwatch train`
# push, neither of them scraped (`services.mlwatch.otlp.enable`: receiver,
# prometheus/otlp.yml's settings, `--no-scrape`). Checked: the receiver is
# on and nothing pushes through a scrape; pushed series carry the scrape
# path's job names and a per-process instance; latency arrives as a native
# histogram; every dashboard query returns data (bar the panels of features
# this node does not run); the pushed request count equals the requests
# sent and the native histogram's count, in one query; and MlApiDown fires
# for a service that stopped pushing, with no `up` to tell.
{ nixosModule }:

let
  # Every query of the provisioned dashboards, read from the repository's
  # JSON, with the panel it belongs to.
  dashboardFiles = builtins.filter (name: builtins.match ".*\\.json" name != null)
    (builtins.attrNames (builtins.readDir ../../grafana/provisioning/dashboards));
  queriesOf = panel:
    map (target: { title = panel.title or ""; inherit (target) expr; })
      (builtins.filter (target: target ? expr) (panel.targets or [ ]))
    ++ builtins.concatMap queriesOf (panel.panels or [ ]);
  dashboardQueries = builtins.concatMap
    (name: builtins.concatMap queriesOf
      (builtins.fromJSON (builtins.readFile (../../grafana/provisioning/dashboards + "/${name}"))).panels)
    dashboardFiles;
in
{
  name = "mlwatch-push";

  nodes.pusher = { pkgs, ... }: {
    imports = [ nixosModule ./webhook-logger.nix ];

    virtualisation = {
      memorySize = 2048;
      cores = 2;
    };

    environment.systemPackages = [ pkgs.curl pkgs.jq ];
    environment.etc."mlwatch/valid-request.json".text = ''
      {"features": [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]}
    '';

    services.mlwatch = {
      enable = true;
      train = {
        enable = true;
        # The finished run keeps pushing for the whole test.
        args = [ "--linger" "30m" ];
      };
      prometheus.enable = true;
      otlp = {
        enable = true;
        exportInterval = "5s";
      };
      alertmanager = {
        enable = true;
        webhookUrl = "http://127.0.0.1:5099/mlwatch-vm-test";
      };
    };

    # Rules evaluated every 5s; `for:` durations stay real.
    services.prometheus.globalConfig.evaluation_interval = "5s";
  };

  testScript = ''
    import json
    import urllib.parse

    dashboard_queries = json.loads(${builtins.toJSON (builtins.toJSON dashboardQueries)})

    # Panels of features this node does not run: no GPU, no feedback key
    # (quality), no MLflow, a regression model (no classes); the alert list
    # shows alerts, of which there are none yet.
    not_here = ("gpu", "feedback", "classification_", "model_predictions_total", "mlflow", "ALERTS")

    def query(expr):
        url = "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(expr)
        return json.loads(pusher.succeed(f"curl -sf '{url}'"))["data"]["result"]

    def dashboard_expr(expr):
        for variable, value in [
            ("$__rate_interval", "1m"), ("$__range", "10m"), ("$__interval", "15s"),
            ("$job", ".*"), ("$instance", ".*"), ("$model_version", ".*"),
        ]:
            expr = expr.replace(variable, value)
        return expr

    start_all()

    with subtest("the services come up and push, and nothing is scraped but Prometheus' own jobs"):
        for unit, port in [
            ("prometheus.service", 9090),
            ("alertmanager.service", 9093),
            ("mlwatch-serve.service", 9000),
            ("webhook-logger.service", 5099),
        ]:
            pusher.wait_for_unit(unit)
            pusher.wait_for_open_port(port)
        pusher.wait_for_file("/var/lib/mlwatch/model.json", timeout=600)
        pusher.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=120)
        # The receiver answers (a bad body is a 4xx, not the 404 of a build
        # without it).
        status = pusher.succeed(
            "curl -s -o /dev/null -w '%{http_code}' -X POST"
            " -H 'Content-Type: application/x-protobuf' --data-binary 'x'"
            " http://127.0.0.1:9090/api/v1/otlp/v1/metrics"
        ).strip()
        assert status != "404", "Prometheus answers 404 on its OTLP endpoint: no receiver"
        # --no-scrape: no exposition.
        status = pusher.succeed("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9000/metrics").strip()
        assert status == "404", f"/metrics answered {status} although the service only pushes"
        jobs = sorted({t["labels"]["job"] for t in json.loads(
            pusher.succeed("curl -sf http://127.0.0.1:9090/api/v1/targets"))["data"]["activeTargets"]})
        assert jobs == ["alertmanager", "prometheus"], f"scraped jobs {jobs}"
        pusher.wait_until_succeeds(
            "curl -sf 'http://127.0.0.1:9090/api/v1/query?query=count+by+(job)+(mlwatch_heartbeat_timestamp_seconds)'"
            " | jq -e '[.data.result[].metric.job] | sort == [\"ml-api\", \"model-training\"]'",
            timeout=300,
        )
        assert query("up{job=~\"ml-api|model-training\"}") == [], "pushed jobs have no up"

    with subtest("pushed requests are counted exactly, and latency is a native histogram"):
        sent = 40
        pusher.succeed(
            f"for i in $(seq {sent}); do"
            " curl -sf -o /dev/null -X POST -H 'Content-Type: application/json'"
            " --data @/etc/mlwatch/valid-request.json http://127.0.0.1:9000/predict; done"
        )
        pusher.wait_until_succeeds(
            "curl -sf 'http://127.0.0.1:9090/api/v1/query?query="
            + urllib.parse.quote('sum(model_prediction_requests_total{job="ml-api",status="success"})')
            + f"' | jq -e '.data.result[0].value[1] == \"{sent}\"'",
            timeout=120,
        )
        # One instant: the counter and the native histogram's count agree.
        [both] = query(
            'sum(model_prediction_requests_total{job="ml-api",status="success"})'
            ' - sum(histogram_count(model_prediction_duration_seconds{job="ml-api"}))'
        )
        assert float(both["value"][1]) == 0, f"counter - histogram count = {both['value'][1]}"
        native = query('model_prediction_duration_seconds{job="ml-api"}')
        assert native and all("histogram" in series for series in native), f"not native: {native}"

    with subtest("every dashboard query returns data"):
        empty = []
        for panel in dashboard_queries:
            expr = panel["expr"]
            if any(word in expr for word in not_here):
                continue
            try:
                pusher.wait_until_succeeds(
                    "curl -sf 'http://127.0.0.1:9090/api/v1/query?query="
                    + urllib.parse.quote(dashboard_expr(expr))
                    + "' | jq -e '.data.result | length > 0'",
                    timeout=120,
                )
            except Exception:
                empty.append(f"{panel['title']}: {expr}")
        assert not empty, "dashboard queries without data on the push path:\n" + "\n".join(empty)

    with subtest("a service that stops pushing fires MlApiDown (there is no up)"):
        pusher.succeed("systemctl stop mlwatch-serve.service")
        pusher.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/alerts | jq -e '"
            "any(.data.alerts[]; .labels.alertname == \"MlApiDown\" and .state == \"firing\""
            " and .labels.job == \"ml-api\")'",
            timeout=600,
        )
        pusher.wait_until_succeeds(
            "grep -q MlApiDown /var/lib/webhook-logger/alerts.jsonl",
            timeout=300,
        )
  '';
}
