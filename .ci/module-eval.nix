# Evaluates nix/module.nix without nixpkgs, against a stub of the few lib
# functions it calls, to rehearse the parts of the module that compute
# values from the repository's files: the scrape jobs, rule files,
# alerting targets, datasource and dashboard provider. The stub knows
# nothing of option types or the module system (those need nixpkgs and run
# in `nix flake check`); it only lets CI see what the module would hand to
# nixpkgs' services, so .ci/check_consistency.py can compare it with
# prometheus/ and grafana/.
#
#   nix-instantiate --eval --strict --json .ci/module-eval.nix --arg trainEnable true
{ trainEnable ? true
, serveEnable ? true
, alertmanagerEnable ? true
, apiTargets ? if serveEnable then [ "127.0.0.1:9000" ] else [ ]
, peers ? [ ]
, replica ? null
, mlflowEnable ? true
}:

let
  # The module system's merge, for plain values: attribute sets merge
  # recursively, lists concatenate, anything else: the later wins.
  # What mkIf false leaves: nothing, whatever else defines the option.
  skip = { __mkIfFalse = true; };
  orElse = fallback: value: if value == skip then fallback else value;
  merge = a: b:
    if b == skip then a
    else if a == skip then b
    else if builtins.isAttrs a && builtins.isAttrs b
    then a // builtins.mapAttrs (name: value: if a ? ${name} then merge a.${name} value else value) b
    else if builtins.isList a && builtins.isList b then a ++ b
    else b;

  # Just enough lib: values pass through, conditions keep or drop them.
  lib = {
    mkDefault = x: x;
    mkIf = cond: value: if cond then value else skip;
    mkMerge = builtins.foldl' merge { };
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: set: if cond then set else { };
    optionals = cond: xs: if cond then xs else [ ];
    filterAttrs = pred: set: builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
      (builtins.filter (name: pred name set.${name}) (builtins.attrNames set)));
    escapeShellArg = s: "'${s}'";
    getExe' = p: name: "${p}/bin/${name}";
    toInt = builtins.fromJSON;
    last = list: builtins.elemAt list (builtins.length list - 1);
    mkOption = option: option;
    mkEnableOption = description: { inherit description; };
    mkPackageOption = _: name: _: { default = name; };
    literalExpression = text: text;
    optional = cond: x: if cond then [ x ] else [ ];
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    hasSuffix = suffix: s:
      let n = builtins.stringLength s; m = builtins.stringLength suffix; in
      n >= m && builtins.substring (n - m) m s == suffix;
    splitString = sep: s: builtins.filter builtins.isString (builtins.split sep s);
    concatMapStringsSep = sep: f: xs: builtins.concatStringsSep sep (map f xs);
    inherit (builtins) replaceStrings mapAttrs;
    getExe = p: "${p}/bin/mlwatch";
    types = {
      bool = "bool";
      str = "str";
      port = "port";
      externalPath = "externalPath";
      listOf = t: "listOf ${t}";
      nullOr = t: "nullOr ${t}";
    };
  };

  config = {
    services.mlwatch = {
      enable = true;
      package = "/nix/store/mlwatch";
      gpu.enable = false;
      openFirewall = true;
      runbookUrl = "http://127.0.0.1:5002/runbooks";
      runbooks = { enable = true; address = "127.0.0.1"; port = 5002; };
      mlflow = {
        enable = mlflowEnable;
        package = "/nix/store/mlflow-env";
        address = "127.0.0.1";
        port = 5000;
        experiment = "mlwatch";
        url = "http://127.0.0.1:5000";
        exposePrometheus = true;
        extraArgs = [ ];
      };
      serve = {
        enable = serveEnable;
        address = "0.0.0.0";
        port = 9000;
        modelPath = "/var/lib/mlwatch/model.json";
        adminTokenFile = null;
        feedbackKeyFile = null;
        extraArgs = [ ];
      };
      train = {
        enable = trainEnable;
        schedule = null;
        args = [ ];
        address = "127.0.0.1";
        port = 8002;
        openFirewall = false;
      };
      prometheus = {
        enable = true;
        inherit apiTargets;
        trainTargets = lib.optional trainEnable "127.0.0.1:8002";
        alertmanagerTargets = lib.optional alertmanagerEnable "127.0.0.1:9093";
        inherit replica;
      };
      alertmanager = {
        enable = alertmanagerEnable;
        webhookUrl = null;
        inherit peers;
        advertiseAddress = null;
        clusterAddress = "0.0.0.0:9094";
      };
      grafana = {
        enable = true;
        adminPasswordFile = "/run/secrets/pw";
        secretKeyFile = "/run/secrets/key";
      };
    };
    services.prometheus = { port = 9090; alertmanager.port = 9093; };
    systemd.package = "/nix/store/systemd";
  };

  pkgs = {
    coreutils = "/nix/store/coreutils";
    jq = "/nix/store/jq";
    mlwatch-assets = "/nix/store/mlwatch-assets";
    runCommand = name: _: _: "/nix/store/${name}";
    python3.withPackages = _: "/nix/store/python3-env";
  };

  module = import ../nix/module.nix {
    inherit config lib pkgs;
    utils.escapeSystemdExecArgs = builtins.concatStringsSep " ";
  };
in
{
  inherit (module.config.services.prometheus) scrapeConfigs ruleFiles globalConfig listenAddress;
  alertmanagers = orElse [ ] (module.config.services.prometheus.alertmanagers or [ ]);
  alertmanagerFlags = module.config.services.prometheus.alertmanager.extraFlags or [ ];
  grafanaDatasources = module.config.services.grafana.provision.datasources.settings.datasources;
  grafanaProviders = module.config.services.grafana.provision.dashboards.settings.providers;
  units = builtins.attrNames (lib.filterAttrs (_: unit: unit != skip) (module.config.systemd.services or { }));
  firewall = orElse [ ] (module.config.networking.firewall.allowedTCPPorts or [ ]);
  trainExec = module.config.systemd.services.mlwatch-train.serviceConfig.ExecStart or null;
  serveExec = module.config.systemd.services.mlwatch-serve.serviceConfig.ExecStart or null;
  runbooksExec = module.config.systemd.services.mlwatch-runbooks.serviceConfig.ExecStart or null;
  mlflowExec = module.config.systemd.services.mlwatch-mlflow.serviceConfig.ExecStart or null;
  trainEnvironment = module.config.systemd.services.mlwatch-train.environment or { };
}
