# NixOS module `services.mlwatch`: the prediction API as a hardened systemd
# service, an optional (scheduled) retraining job, and optionally the
# monitoring stack around it -- Prometheus with the repository's alert and
# recording rules, Alertmanager with the repository's routing, and Grafana
# with the repository's dashboards.
#
# Every rule, route and dashboard comes from the repository's prometheus/ and
# grafana/ trees (installed by nix/package.nix to $out/share/mlwatch); this
# module only re-points hosts and ports from the Compose network names
# (app, training-metrics, prometheus, alertmanager) to localhost.
{ config
, lib
, pkgs
, utils
, ...
}:

let
  cfg = config.services.mlwatch;

  inherit (lib)
    mkDefault
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    types
    ;

  assets = "${cfg.package}/share/mlwatch";
  stateDir = "/var/lib/mlwatch";

  # Alertmanager configuration: prometheus/alertmanager.yml with the URL of
  # every webhook receiver replaced by `alertmanager.webhookUrl`.
  #
  # The YAML is read from the flake's source tree, i.e. the same file that
  # nix/package.nix installs to share/mlwatch/prometheus/alertmanager.yml.
  # Reading it from the built package instead would be import-from-derivation
  # (evaluation would have to build the Rust package first).
  alertmanagerLines = lib.splitString "\n" (builtins.readFile ../prometheus/alertmanager.yml);
  webhookUrlLine = line: builtins.match "([[:space:]]*(- )?url:[[:space:]]*).*" line;
  webhookUrlLines = builtins.filter (line: webhookUrlLine line != null) alertmanagerLines;
  substituteWebhookUrl = line:
    let
      m = webhookUrlLine line;
    in
    if cfg.alertmanager.webhookUrl == null || m == null
    then line
    else builtins.head m + builtins.toJSON cfg.alertmanager.webhookUrl;
  # The NixOS alertmanager unit runs its configuration through envsubst:
  # a literal `$` (in templates, or in the URL) must be written `$$`.
  alertmanagerConfigText = lib.replaceStrings [ "$" ] [ "$$" ]
    (lib.concatMapStringsSep "\n" substituteWebhookUrl alertmanagerLines);

  exe = lib.getExe cfg.package;

  # Both mlwatch units run as the same *dynamic* user, named `mlwatch`.
  # systemd allocates one UID per DynamicUser name and shares it between all
  # running units that name it (the allocation is reference-counted by name),
  # and it re-chowns StateDirectory= when a later start gets a different UID.
  # So the trainer and the service can both own /var/lib/mlwatch (really
  # /var/lib/private/mlwatch) without a static account in /etc/passwd, which
  # is what nixpkgs prefers for services that own nothing outside their state
  # directory.
  hardening = {
    DynamicUser = true;
    User = "mlwatch";
    Group = "mlwatch";
    StateDirectory = "mlwatch";
    StateDirectoryMode = "0750";
    WorkingDirectory = stateDir;
    UMask = "0027";

    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    # No /dev/nvidia*: GPU metrics report as unavailable under this unit.
    PrivateDevices = true;
    PrivateUsers = true;
    ProtectProc = "invisible";
    ProtectHostname = true;
    ProtectClock = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
  };

  listen = port: "${cfg.serve.address}:${toString port}";

  scrape = job_name: interval: port: {
    inherit job_name;
    scrape_interval = interval;
    static_configs = [{ targets = [ "localhost:${toString port}" ]; }];
  };
in
{
  options.services.mlwatch = {
    enable = mkEnableOption "mlwatch, a prediction API instrumented for Prometheus";

    package = mkPackageOption pkgs "mlwatch" { };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open {option}`services.mlwatch.serve.port` (and
        {option}`services.mlwatch.train.port` when the trainer is enabled) in
        the firewall. Prometheus, Alertmanager and Grafana keep their own
        `openFirewall` settings and stay closed by default.
      '';
    };

    serve = {
      address = mkOption {
        type = types.str;
        default = "0.0.0.0";
        example = "127.0.0.1";
        description = "Address the prediction API (and the trainer's metrics endpoint) listens on.";
      };

      port = mkOption {
        type = types.port;
        default = 9000;
        description = "Port of the prediction API (`/predict`, `/metrics`, `/health`, `/ready`, `/model`).";
      };

      modelPath = mkOption {
        type = types.path;
        default = "${stateDir}/model.json";
        description = ''
          Model artifact the service loads, and the trainer writes. The service
          stays up but not ready (`/ready` answers 503) until the file exists,
          and reloads it whenever it changes (see `mlwatch-reload.path`).
          With the trainer enabled it must lie inside ${stateDir}, the only
          directory the units may write.
        '';
      };

      adminTokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/mlwatch-admin-token";
        description = ''
          File holding the bearer token for `POST /admin/reload`. It is handed
          to the service with systemd's `LoadCredential=`, so it may be
          readable by root only. Give it as a string: a Nix path literal would
          be copied into the world-readable Nix store. `null` disables the
          admin endpoint.
        '';
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--drift-window" "5000" "--max-batch" "64" ];
        description = "Extra arguments for `mlwatch serve`.";
      };
    };

    train = {
      enable = mkEnableOption "the training job `mlwatch-train.service`, which writes the model the service loads";

      schedule = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "weekly";
        description = ''
          When to retrain, as a systemd calendar event (see
          {manpage}`systemd.time(7)`); runs missed while the machine was off
          are caught up at boot. `null`: no timer, start
          `mlwatch-train.service` by hand.
        '';
      };

      args = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--model" "forest" "--dataset" "winequality" "--linger" "2m" ];
        description = ''
          Extra arguments for `mlwatch train`. `--listen` and `--output` are
          set from {option}`services.mlwatch.serve.address`,
          {option}`services.mlwatch.train.port` and
          {option}`services.mlwatch.serve.modelPath`.
        '';
      };

      port = mkOption {
        type = types.port;
        default = 8002;
        description = "Port of the trainer's `/metrics` endpoint while a training run is active.";
      };
    };

    prometheus.enable = mkEnableOption ''
      a local Prometheus (`services.prometheus`) that scrapes the service, the
      trainer, itself and Alertmanager, and loads the repository's alert and
      recording rules
    '';

    alertmanager = {
      enable = mkEnableOption ''
        a local Alertmanager (`services.prometheus.alertmanager`) configured
        from the repository's prometheus/alertmanager.yml
      '';

      webhookUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:5001/alerts";
        description = ''
          URL that replaces the `url:` of every webhook receiver in
          prometheus/alertmanager.yml. `null` keeps the file's URLs.
        '';
      };
    };

    grafana = {
      enable = mkEnableOption ''
        a local Grafana (`services.grafana`) with the Prometheus datasource
        (uid `mlwatch-prometheus`) and the repository's dashboards provisioned
      '';

      adminPasswordFile = mkOption {
        type = types.path;
        example = "/run/secrets/grafana-admin-password";
        description = ''
          File with the password of Grafana's `admin` user, read by Grafana at
          startup (`$__file{}`): it must be readable by the `grafana` user and
          must not be in the Nix store (give it as a string, not a path literal).
        '';
      };

      secretKeyFile = mkOption {
        type = types.path;
        example = "/run/secrets/grafana-secret-key";
        description = ''
          File with Grafana's `secret_key`, used to sign cookies and encrypt
          datasource secrets. Same requirements as
          {option}`services.mlwatch.grafana.adminPasswordFile`.
        '';
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = !cfg.train.enable || lib.hasPrefix "${stateDir}/" (toString cfg.serve.modelPath);
          message = "services.mlwatch.serve.modelPath must lie inside ${stateDir} when services.mlwatch.train.enable is set: the trainer runs as a dynamic user that can write only its StateDirectory.";
        }
        {
          assertion = cfg.train.schedule == null || cfg.train.enable;
          message = "services.mlwatch.train.schedule is set but services.mlwatch.train.enable is not.";
        }
      ];

      systemd.services.mlwatch-serve = {
        description = "mlwatch prediction API";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = hardening // {
          Type = "exec";
          # `%d` is $CREDENTIALS_DIRECTORY, where LoadCredential= puts the token.
          ExecStart = utils.escapeSystemdExecArgs
            ([ exe "serve" "--listen" (listen cfg.serve.port) "--model-path" cfg.serve.modelPath ]
              ++ cfg.serve.extraArgs)
          + lib.optionalString (cfg.serve.adminTokenFile != null) " --admin-token-file %d/admin-token";
          # SIGHUP makes the service reload its model.
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          LoadCredential = mkIf (cfg.serve.adminTokenFile != null) [ "admin-token:${cfg.serve.adminTokenFile}" ];
          Restart = "on-failure";
          RestartSec = "5s";
        };
      };

      # Reload the service whenever the model file is (re)written -- by the
      # trainer's atomic rename or by an admin copying a model in. This keeps
      # the trainer unprivileged (it need not call `systemctl`) and reloads as
      # soon as the artifact exists, not after the trainer's --linger period.
      systemd.paths.mlwatch-reload = {
        description = "Reload mlwatch when its model changes";
        wantedBy = [ "paths.target" ];
        pathConfig.PathChanged = toString cfg.serve.modelPath;
      };
      systemd.services.mlwatch-reload = {
        description = "Reload the mlwatch model";
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${config.systemd.package}/bin/systemctl try-reload-or-restart mlwatch-serve.service";
        };
      };

      networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall
        ([ cfg.serve.port ] ++ optional cfg.train.enable cfg.train.port);
    }

    (mkIf cfg.train.enable {
      systemd.services.mlwatch-train = {
        description = "mlwatch model training";
        after = [ "network.target" ];
        # Training finishes, writes the model atomically, then keeps serving
        # /metrics for --linger so Prometheus scrapes the final values.
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = utils.escapeSystemdExecArgs
            ([ exe "train" "--listen" (listen cfg.train.port) "--output" cfg.serve.modelPath ]
              ++ cfg.train.args);
        };
      };

      systemd.timers.mlwatch-train = mkIf (cfg.train.schedule != null) {
        description = "Retrain the mlwatch model";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.train.schedule;
          Persistent = true;
        };
      };
    })

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = true;
        globalConfig = {
          scrape_interval = mkDefault "15s";
          evaluation_interval = mkDefault "15s";
        };
        # The jobs of prometheus/prometheus.yml, with Compose host names
        # replaced by localhost.
        scrapeConfigs = [
          (scrape "ml-api" "5s" cfg.serve.port)
          (scrape "prometheus" "10s" config.services.prometheus.port)
        ]
        ++ optional cfg.train.enable ((scrape "model-training" "5s" cfg.train.port) // {
          metrics_path = "/metrics";
          scheme = "http";
          scrape_timeout = "3s";
        })
        ++ optional cfg.alertmanager.enable
          (scrape "alertmanager" "15s" config.services.prometheus.alertmanager.port);
        ruleFiles = [
          "${assets}/prometheus/rules/ml_alerts.yml"
          "${assets}/prometheus/rules/ml_recording.yml"
        ];
        alertmanagers = mkIf cfg.alertmanager.enable [{
          static_configs = [{ targets = [ "localhost:${toString config.services.prometheus.alertmanager.port}" ]; }];
        }];
      };
    })

    (mkIf cfg.alertmanager.enable {
      assertions = [{
        assertion = cfg.alertmanager.webhookUrl == null || webhookUrlLines != [ ];
        message = "services.mlwatch.alertmanager.webhookUrl is set, but prometheus/alertmanager.yml has no webhook `url:` line to replace.";
      }];

      services.prometheus.alertmanager = {
        enable = true;
        configText = alertmanagerConfigText;
      };
    })

    (mkIf cfg.grafana.enable {
      assertions = map
        (name: {
          assertion = !lib.hasPrefix builtins.storeDir (toString cfg.grafana.${name});
          message = "services.mlwatch.grafana.${name} points into the world-readable Nix store; give the path of a file outside it as a string.";
        }) [ "adminPasswordFile" "secretKeyFile" ];

      services.grafana = {
        enable = true;
        settings = {
          server.http_port = mkDefault 3000;
          security = {
            admin_user = mkDefault "admin";
            admin_password = "$__file{${toString cfg.grafana.adminPasswordFile}}";
            secret_key = "$__file{${toString cfg.grafana.secretKeyFile}}";
          };
        };
        provision = {
          enable = true;
          # grafana/provisioning/datasources/prometheus.yml, pointed at the
          # local Prometheus; the dashboards refer to the datasource by uid.
          datasources.settings = {
            apiVersion = 1;
            datasources = [{
              name = "Prometheus";
              type = "prometheus";
              uid = "mlwatch-prometheus";
              access = "proxy";
              url = "http://localhost:${toString config.services.prometheus.port}";
              isDefault = true;
              jsonData.timeInterval = "5s";
            }];
          };
          dashboards.settings = {
            apiVersion = 1;
            providers = [{
              name = "mlwatch";
              type = "file";
              folder = "ML Monitoring";
              disableDeletion = true;
              options.path = "${assets}/grafana/provisioning/dashboards";
            }];
          };
        };
      };
    })
  ]);
}
