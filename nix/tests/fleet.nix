# Three hosts in the roles of docs/fleet.md: two API hosts (each trains its
# first model at boot and serves it, API port open to the monitor) and one
# monitoring host (Prometheus scraping both APIs by name, the repository's
# rules, Alertmanager delivering to a webhook). Checks that every target is
# up, every rule group of prometheus/rules is loaded, and that losing one API
# host fires MlApiDown for that instance only, delivered exactly once.
{ nixosModule }:

let
  ruleLines = builtins.concatMap
    (name: builtins.filter builtins.isString
      (builtins.split "\n" (builtins.readFile (../../prometheus/rules + "/${name}"))))
    (builtins.attrNames (builtins.readDir ../../prometheus/rules));
  ruleGroups = map builtins.head
    (builtins.filter (m: m != null) (map (builtins.match "  - name: ([A-Za-z0-9_-]+).*") ruleLines));

  apiHost = { ... }: {
    imports = [ nixosModule ];
    virtualisation.memorySize = 1024;
    services.mlwatch = {
      enable = true;
      openFirewall = true; # the API port, for the monitor
      train.enable = true; # its first model, trained at boot
    };
  };
in
{
  name = "mlwatch-fleet";

  nodes = {
    api1 = apiHost;
    api2 = apiHost;

    monitor = { pkgs, ... }:
      {
        imports = [ nixosModule ./webhook-logger.nix ];
        virtualisation.memorySize = 1536;
        environment.systemPackages = [ pkgs.curl pkgs.jq ];
        services.mlwatch = {
          enable = true;
          serve.enable = false;
          prometheus = {
            enable = true;
            apiTargets = [ "api1:9000" "api2:9000" ];
          };
          alertmanager = {
            enable = true;
            webhookUrl = "http://127.0.0.1:5099/fleet";
          };
        };
      };
  };

  testScript = ''
    import json
    import time

    rule_groups = set(json.loads('${builtins.toJSON ruleGroups}'))

    start_all()

    with subtest("both API hosts train at boot and become ready"):
        for api in (api1, api2):
            api.wait_for_unit("mlwatch-serve.service")
            api.wait_for_file("/var/lib/mlwatch/model.json", timeout=600)
            api.wait_until_succeeds("curl -sf http://127.0.0.1:9000/ready", timeout=120)

    with subtest("the monitor scrapes both APIs by host name, and itself"):
        monitor.wait_for_unit("prometheus.service")
        monitor.wait_for_unit("alertmanager.service")
        monitor.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '"
            "[.data.activeTargets[] | select(.labels.job == \"ml-api\") | .labels.instance] | sort"
            " == [\"api1:9000\", \"api2:9000\"]'",
            timeout=120,
        )
        monitor.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/targets | jq -e '"
            "[.data.activeTargets[].health] | all(. == \"up\")'",
            timeout=180,
        )

    with subtest("every rule group of prometheus/rules is loaded and healthy"):
        monitor.wait_until_succeeds(
            "curl -sf http://127.0.0.1:9090/api/v1/rules | jq -e '"
            "[.data.groups[].rules[].health] | length > 0 and all(. == \"ok\")'",
            timeout=120,
        )
        rules = json.loads(monitor.succeed("curl -sf http://127.0.0.1:9090/api/v1/rules"))
        groups = {group["name"] for group in rules["data"]["groups"]}
        assert groups == rule_groups, f"rule groups {sorted(groups)}, expected {sorted(rule_groups)}"

    with subtest("losing one API host fires MlApiDown for it alone, delivered once"):
        api2.succeed("systemctl stop mlwatch-serve.service")
        monitor.wait_until_succeeds(
            "grep -q MlApiDown /var/lib/webhook-logger/alerts.jsonl", timeout=300
        )
        # Critical alerts: group_interval 1m, repeat_interval 1h. Two more
        # group intervals without a change must bring no second notification.
        time.sleep(150)
        notifications = [
            json.loads(line)
            for line in monitor.succeed("cat /var/lib/webhook-logger/alerts.jsonl").splitlines()
            if "MlApiDown" in line
        ]
        assert len(notifications) == 1, f"{len(notifications)} MlApiDown notifications, expected exactly one"
        instances = {a["labels"]["instance"] for a in notifications[0]["alerts"]}
        assert instances == {"api2:9000"}, f"MlApiDown for {sorted(instances)}, expected only api2:9000"
        # The other API host keeps serving.
        api1.succeed("curl -sf http://127.0.0.1:9000/ready")
  '';
}
