# NixOS module `services.mlwatch`: the prediction API as a hardened systemd
# service, an optional (scheduled) retraining job that also trains the first
# model at boot, and optionally the monitoring stack around it -- Prometheus
# with the repository's scrape jobs, alert and recording rules, Alertmanager
# with the repository's routing, and Grafana with the repository's
# datasource and dashboards.
#
# Nothing here is a copy: scrape jobs, the datasource and the dashboard
# provider are read from prometheus/ and grafana/ at evaluation time (by
# nix/lib/yaml.nix), rule files and dashboards are loaded from the assets
# derivation (nix/assets.nix). The differences this module needs -- targets
# on this host instead of Compose names, the datasource URL, the dashboards'
# store path -- are the `*Overrides`/`localTargets` below, and
# .ci/check_consistency.py names each of them.
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

  yaml = import ./lib/yaml.nix;

  # The repository's monitoring files as one derivation (nix/assets.nix),
  # independent of the binary: a custom services.mlwatch.package cannot lose
  # them, and a code change does not restart Prometheus or Grafana.
  assetsPackage = pkgs.mlwatch-assets or (pkgs.callPackage ./assets.nix { });
  assets = "${assetsPackage}/share/mlwatch";
  stateDir = "/var/lib/mlwatch";

  # Alertmanager configuration: prometheus/alertmanager.yml with the URL of
  # every webhook receiver replaced by `alertmanager.webhookUrl`.
  #
  # The repository files are read from the flake's source tree, the same
  # tree nix/assets.nix installs. Reading them from a built derivation
  # instead would be import-from-derivation.
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

  # prometheus/prometheus.yml, read at evaluation time. Its scrape jobs and
  # intervals are used as they are; only the targets (Compose host names)
  # are replaced by this host's addresses, job by job.
  prometheusYml = yaml.readFile ../prometheus/prometheus.yml;
  localTargets = {
    "ml-api" = cfg.prometheus.apiTargets;
    "mlflow" = optional (cfg.mlflow.enable && cfg.mlflow.exposePrometheus) (listen cfg.mlflow.address cfg.mlflow.port);
    "model-training" = cfg.prometheus.trainTargets;
    "prometheus" = [ "127.0.0.1:${toString config.services.prometheus.port}" ];
    "alertmanager" = optional cfg.alertmanager.enable "127.0.0.1:${toString config.services.prometheus.alertmanager.port}";
  };
  targetsOf = job:
    localTargets.${job.job_name} or (throw ''
      services.mlwatch: prometheus/prometheus.yml has a scrape job `${job.job_name}` that
      nix/module.nix does not know how to point at this host; add it to localTargets.
    '');
  scrapeConfigs = builtins.filter (job: job.static_configs != [ ]) (map
    # Compose's file_sd targets file does not exist here: the targets of
    # every job are this host's (apiTargets, trainTargets, ...).
    (job: (removeAttrs job [ "static_configs" "file_sd_configs" ]) // {
      static_configs = optional (targetsOf job != [ ]) { targets = targetsOf job; };
    })
    prometheusYml.scrape_configs);
  # Every rule file of prometheus/rules, as prometheus.yml's glob loads them.
  ruleFiles = map (name: "${assets}/prometheus/rules/${name}")
    (builtins.filter (lib.hasSuffix ".yml") (builtins.attrNames (builtins.readDir ../prometheus/rules)));

  # grafana/provisioning, read at evaluation time; the only differences are
  # the datasource URL (Compose's `prometheus` host -> the local Prometheus)
  # and the dashboards' path (the container's /etc/grafana/... -> the store).
  grafanaDatasources = (yaml.readFile ../grafana/provisioning/datasources/prometheus.yml).datasources;
  grafanaProviders = (yaml.readFile ../grafana/provisioning/dashboards/dashboard.yml).providers;
  datasourceOverrides = {
    url = "http://127.0.0.1:${toString config.services.prometheus.port}";
  };
  providerOverrides = provider: {
    options = provider.options // { path = "${dashboards}"; };
  };

  # The dashboards with this deployment's runbook base and MLflow URL: the
  # same rewrite as `grafana/generate.py --out` (CI checks the two agree).
  dashboards = pkgs.runCommand "mlwatch-dashboards" { nativeBuildInputs = [ pkgs.jq ]; } ''
    mkdir -p $out
    for dashboard in ${assets}/grafana/provisioning/dashboards/*.json; do
      jq --arg runbook_base ${lib.escapeShellArg cfg.runbookUrl} \
         --arg mlflow_url ${lib.escapeShellArg cfg.mlflow.url} \
         -f ${./lib/dashboard-constants.jq} "$dashboard" > "$out/$(basename "$dashboard")"
    done
  '';

  # prometheus.yml's external labels, with the runbook base every alert's
  # runbook_url is built from, and the HA replica label when set.
  externalLabels = (prometheusYml.global.external_labels or { })
    // { runbook_base = cfg.runbookUrl; }
    // lib.optionalAttrs (cfg.prometheus.replica != null) { inherit (cfg.prometheus) replica; };

  alertRelabelling = (prometheusYml.alerting.alert_relabel_configs or [ ])
    ++ optional (cfg.prometheus.replica != null) { action = "labeldrop"; regex = "replica"; };

  # The push path (docs/otlp.md): prometheus/otlp.yml, the overlay every
  # consumer merges into prometheus.yml the same way (src/stack/config.rs's
  # `push`): its otlp and storage blocks added, the scrape jobs of the
  # pushing binaries removed. nixpkgs' Prometheus module has no option for
  # either block, so the merged config is handed over whole (configText),
  # built from the same pieces as the scrape path's options below.
  otlpYml = yaml.readFile ../prometheus/otlp.yml;
  alertmanagerConfigs = optional (cfg.prometheus.alertmanagerTargets != [ ]) {
    static_configs = [{ targets = cfg.prometheus.alertmanagerTargets; }];
    # prometheus.yml's alert relabelling (runbook_base is for annotation
    # templates only), plus dropping an HA pair's `replica` label:
    # Alertmanager deduplicates identical label sets only. Set per
    # Alertmanager (Prometheus >= 2.51): nixpkgs has no option for the
    # global alerting.alert_relabel_configs.
    alert_relabel_configs = alertRelabelling;
  };
  # The final values of nixpkgs' options (this module's and the host's own
  # definitions), as nixpkgs renders them: without unset (null) fields and
  # submodule metadata.
  prom = config.services.prometheus;
  filterValid = value:
    if builtins.isAttrs value then
      lib.mapAttrs (_: filterValid) (lib.filterAttrs (name: v: name != "_module" && v != null) value)
    else if builtins.isList value then map filterValid (builtins.filter (v: v != null) value)
    else value;
  pushPrometheusConfig = {
    global = filterValid prom.globalConfig;
    scrape_configs = builtins.filter (job: !(builtins.elem job.job_name otlpYml.pushed_jobs)) (filterValid prom.scrapeConfigs);
    rule_files = prom.ruleFiles;
    alerting.alertmanagers = filterValid prom.alertmanagers;
    inherit (otlpYml) otlp storage;
  };
  # The receiver, and native histograms where the version needs the flag
  # to store OTLP exponential histograms (before 3.8; stable since).
  receiverFlags = [ "--web.enable-otlp-receiver" ]
    ++ optional (lib.versionOlder config.services.prometheus.package.version "3.8") "--enable-feature=native-histograms";
  # What `mlwatch serve` and `mlwatch train` add to push (and not be
  # scraped: one path per job, or every sum counts them twice).
  pushFlags = lib.optionals cfg.otlp.enable
    (builtins.concatMap (endpoint: [ "--otlp-endpoint" endpoint ]) cfg.otlp.endpoints
      ++ [ "--otlp-export-interval" cfg.otlp.exportInterval "--no-scrape" ]);

  mlflowDir = "/var/lib/mlwatch-mlflow";
  mlflowUri = "http://${listen cfg.mlflow.address cfg.mlflow.port}";

  exe = lib.getExe cfg.package;

  # Both mlwatch units run as the same *dynamic* user, named `mlwatch`.
  # systemd allocates one UID per DynamicUser name and shares it between all
  # running units that name it (the allocation is reference-counted by name),
  # and it re-chowns StateDirectory= when a later start gets a different UID.
  # So the trainer and the service can both own /var/lib/mlwatch (really
  # /var/lib/private/mlwatch) without a static account in /etc/passwd, which
  # is what nixpkgs prefers for services that own nothing outside their state
  # directory.
  hardening = sandboxing // {
    DynamicUser = true;
    User = "mlwatch";
    Group = "mlwatch";
    StateDirectory = "mlwatch";
    StateDirectoryMode = "0750";
    WorkingDirectory = stateDir;
    UMask = "0027";
  } // (if cfg.gpu.enable then {
    # NVML needs the NVIDIA control and GPU device nodes; everything else
    # stays hidden. PrivateDevices= would hide these too.
    PrivateDevices = false;
    DevicePolicy = "closed";
    DeviceAllow = [ "char-nvidiactl" "char-nvidia-frontend" "char-nvidia-uvm" "char-nvidia-caps" ];
  } else {
    PrivateDevices = true;
  });

  # The sandbox of every unit this module runs (mlwatch's and MLflow's).
  sandboxing = {
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
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

  listen = address: port: "${address}:${toString port}";

  # Whether another host can reach this host's Alertmanager (the HA checks).
  alertmanager = config.services.prometheus.alertmanager;
  loopbackOnly = address: address == "localhost" || address == "::1" || lib.hasPrefix "127." address;
  firewall = config.networking.firewall;
  alertmanagerPortOpen = !firewall.enable || alertmanager.openFirewall
    || builtins.elem alertmanager.port firewall.allowedTCPPorts
    || builtins.any (interface: builtins.elem alertmanager.port (interface.allowedTCPPorts or [ ]))
    (builtins.attrValues firewall.interfaces);

  # An absolute path outside the Nix store, given as a string: a Nix path
  # literal would copy the file (a secret, or a model the reload watcher
  # watches at its original place) into the world-readable store.
  externalPath = types.externalPath;
in
{
  options.services.mlwatch = {
    enable = mkEnableOption "mlwatch, a prediction API instrumented for Prometheus";

    package = mkPackageOption pkgs "mlwatch-service" { }; # the service build: train, serve, runbooks

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Open {option}`services.mlwatch.serve.port` (the prediction API and its
        `/metrics`) in the firewall. The trainer's metrics port, Prometheus,
        Alertmanager and Grafana stay closed; they listen on 127.0.0.1 by default.
      '';
    };

    gpu.enable = mkEnableOption ''
      GPU metrics: the units may open the NVIDIA device nodes (for NVML).
      Needs the NVIDIA driver (`hardware.nvidia`); the binary finds
      `libnvidia-ml.so` in /run/opengl-driver/lib'';

    runbookUrl = mkOption {
      type = types.str;
      default = "http://${listen cfg.runbooks.address cfg.runbooks.port}/runbooks";
      defaultText = lib.literalExpression ''"http://''${config.services.mlwatch.runbooks.address}:''${toString config.services.mlwatch.runbooks.port}/runbooks"'';
      example = "https://monitoring.example.org/runbooks";
      description = ''
        Base URL of the runbooks: every alert's `runbook_url` and every
        dashboard runbook link is this URL plus `#<alert name>`. The default
        is the page {option}`services.mlwatch.runbooks` serves on this host,
        reachable from this host only; set a URL the people on call can open
        (e.g. that page behind the reverse proxy in front of Grafana).
      '';
    };

    runbooks = {
      enable = mkOption {
        type = types.bool;
        default = cfg.prometheus.enable || cfg.grafana.enable;
        defaultText = lib.literalExpression "config.services.mlwatch.prometheus.enable || config.services.mlwatch.grafana.enable";
        description = "Serve docs/runbooks.md rendered as HTML at `/runbooks` (`mlwatch-runbooks.service`).";
      };

      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Address the runbook page listens on.";
      };

      port = mkOption {
        type = types.port;
        default = 5002;
        description = "Port of the runbook page.";
      };
    };

    mlflow = {
      enable = mkEnableOption ''
        an MLflow tracking server (nixpkgs' `python3Packages.mlflow`, on 127.0.0.1, sqlite
        store and proxied artifacts in /var/lib/mlwatch-mlflow) that the trainer
        logs every run to; the dashboards link the served model to its run'';

      package = mkOption {
        type = types.package;
        # A Python environment, not nixpkgs' `mlflow-server`: `mlflow server`
        # starts uvicorn as `sys.executable -m uvicorn`. Before nixpkgs PR
        # #519345, mlflow-server rewrote that command to a gunicorn wrapper
        # ("argument -m/--umask: invalid auto_int value: 'uvicorn'"). After
        # it, the server only finds its packages when PYTHONPATH is unset,
        # and a PYTHONPATH that adds prometheus-flask-exporter would unset
        # them. In an environment, the child interpreter is the
        # environment's own and sees every package, the exporter included.
        default = pkgs.python3.withPackages (ps: [ ps.mlflow ps.prometheus-flask-exporter ]);
        defaultText = lib.literalExpression "pkgs.python3.withPackages (ps: [ ps.mlflow ps.prometheus-flask-exporter ])";
        description = ''
          Package providing `bin/mlflow`. With `exposePrometheus` it must
          also bring `prometheus_flask_exporter` into the same Python
          environment.
        '';
      };

      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        description = "Address the MLflow server listens on.";
      };

      port = mkOption {
        type = types.port;
        default = 5000;
        description = "Port of the MLflow server (REST API, artifact proxy and UI).";
      };

      experiment = mkOption {
        type = types.str;
        default = "mlwatch";
        description = "MLflow experiment the trainer logs its runs to (created if missing).";
      };

      url = mkOption {
        type = types.str;
        default = mlflowUri;
        defaultText = lib.literalExpression ''"http://''${config.services.mlwatch.mlflow.address}:''${toString config.services.mlwatch.mlflow.port}"'';
        example = "https://mlflow.example.org";
        description = "MLflow's UI as browsers reach it: the dashboards' `mlflow_url`, the target of their links from a served model to its run.";
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--allowed-hosts" "mlflow.example.org" ];
        description = "Extra arguments for `mlflow server` (MLflow 3 refuses `Host` headers it does not know: list the names browsers use).";
      };

      exposePrometheus = mkOption {
        type = types.bool;
        default = cfg.prometheus.enable;
        defaultText = lib.literalExpression "config.services.mlwatch.prometheus.enable";
        description = "Export MLflow's own metrics (`--expose-prometheus`) and scrape them as job `mlflow`.";
      };
    };

    serve = {
      enable = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = ''
          Run the prediction API on this host. Set to `false` on a host that
          only trains or only monitors (see docs/fleet.md for the roles).
        '';
      };

      address = mkOption {
        type = types.str;
        default = "0.0.0.0";
        example = "127.0.0.1";
        description = "Address the prediction API listens on.";
      };

      port = mkOption {
        type = types.port;
        default = 9000;
        description = "Port of the prediction API (`/predict`, `/metrics`, `/health`, `/ready`, `/model`).";
      };

      modelPath = mkOption {
        type = externalPath;
        default = "${stateDir}/model.json";
        description = ''
          Model artifact the service loads, and the trainer writes: an absolute
          path outside the Nix store. The service stays up but not ready
          (`/ready` answers 503) until the file exists, and reloads it whenever
          it changes (see `mlwatch-reload.path`). With the trainer enabled it
          must lie inside ${stateDir}, the only directory the units may write.
        '';
      };

      modelUri = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "models:/diabetes@champion";
        description = ''
          Load the model from the MLflow model registry instead of
          {option}`services.mlwatch.serve.modelPath`: `models:/NAME@ALIAS` or
          `models:/NAME/VERSION` (`serve --model-uri`, docs/mlflow.md). The
          service polls it every {option}`services.mlwatch.serve.modelPollInterval`
          and swaps the model when the alias moves, keeping the old one if the
          new version is broken; the path watcher `mlwatch-reload.path` is not
          installed. A trainer that registers its model moves the alias, e.g.
          `train.args = [ "--mlflow-register" "diabetes" "--mlflow-alias" "champion" ]`.
        '';
      };

      mlflowTrackingUri = mkOption {
        type = types.str;
        default = mlflowUri;
        defaultText = lib.literalExpression ''"http://''${config.services.mlwatch.mlflow.address}:''${toString config.services.mlwatch.mlflow.port}"'';
        example = "https://mlflow.example.org";
        description = "The MLflow server the service resolves {option}`services.mlwatch.serve.modelUri` with (its REST API and artifact proxy).";
      };

      modelPollInterval = mkOption {
        type = types.str;
        default = "30s";
        example = "5m";
        description = "How often the service polls {option}`services.mlwatch.serve.modelUri` (`--model-poll-interval`; `0s`: only on reload).";
      };

      adminTokenFile = mkOption {
        type = types.nullOr externalPath;
        default = null;
        example = "/run/secrets/mlwatch-admin-token";
        description = ''
          File holding the bearer token for `POST /admin/reload` and
          `GET /model` (which then answers only to it: its training reference
          describes the training data), outside the Nix store. It is handed
          to the service with systemd's `LoadCredential=`, so it may be
          readable by root only. `null` disables the admin endpoint and
          leaves `/model` open.
        '';
      };

      feedbackKeyFile = mkOption {
        type = types.nullOr externalPath;
        default = null;
        example = "/run/secrets/mlwatch-feedback-key";
        description = ''
          The HMAC key (at least 32 bytes) that signs prediction ids and
          verifies `POST /feedback` (docs/quality.md), outside the Nix store;
          every replica of a fleet must be given the same key. Handed to the
          service with systemd's `LoadCredential=`, so it may be readable by
          root only. `null`: no prediction ids, `/feedback` answers 503.
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
      enable = mkEnableOption ''
        the training job `mlwatch-train.service`, which writes the model the
        service loads. It runs once at boot when no model exists yet'';

      schedule = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "weekly";
        description = ''
          When to retrain, as a systemd calendar event (see
          {manpage}`systemd.time(7)`); runs missed while the machine was off
          are caught up at boot. `null`: no timer, start
          `mlwatch-train.service` by hand. Either way the first model is
          trained at boot when {option}`services.mlwatch.serve.modelPath`
          does not exist.
        '';
      };

      args = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--model" "forest" "--dataset" "winequality" "--linger" "2m" ];
        description = ''
          Extra arguments for `mlwatch train`. `--listen` and `--output` are
          set from {option}`services.mlwatch.train.address`,
          {option}`services.mlwatch.train.port` and
          {option}`services.mlwatch.serve.modelPath`.
        '';
      };

      address = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = "Address the trainer's `/metrics` endpoint listens on (while a run is active).";
      };

      port = mkOption {
        type = types.port;
        default = 8002;
        description = "Port of the trainer's `/metrics` endpoint while a training run is active.";
      };

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Open {option}`services.mlwatch.train.port` in the firewall, for a
          Prometheus on another host (set {option}`services.mlwatch.train.address`
          to an address it can reach, too).
        '';
      };
    };

    otlp = {
      enable = mkEnableOption ''
        the push path (docs/otlp.md): the service and the trainer push OTLP to
        {option}`services.mlwatch.otlp.endpoints` instead of being scraped
        (`--no-scrape`), and the local Prometheus (with
        {option}`services.mlwatch.prometheus.enable`) runs its OTLP receiver
        with prometheus/otlp.yml's settings and native histograms. Needs a
        Prometheus 3 package built with the receiver (nixpkgs' is)'';

      endpoints = mkOption {
        type = types.listOf types.str;
        default = optional cfg.prometheus.enable "http://127.0.0.1:${toString config.services.prometheus.port}/api/v1/otlp/v1/metrics";
        defaultText = lib.literalExpression ''lib.optional config.services.mlwatch.prometheus.enable "http://127.0.0.1:''${toString config.services.prometheus.port}/api/v1/otlp/v1/metrics"'';
        example = [ "http://monitor-1.example.org:9090/api/v1/otlp/v1/metrics" "http://monitor-2.example.org:9090/api/v1/otlp/v1/metrics" ];
        description = ''
          Full OTLP metrics URLs the service and the trainer push to; both
          Prometheus servers of an HA pair (each then needs
          {option}`services.prometheus.listenAddress` reachable).
        '';
      };

      exportInterval = mkOption {
        type = types.str;
        default = "15s";
        description = ''
          How often the binaries push. The down alerts fire when a heartbeat is
          older than 60 s, 4 of the default intervals: keep it at 15 s or less.
        '';
      };
    };

    prometheus = {
      enable = mkEnableOption ''
        a local Prometheus (`services.prometheus`, on 127.0.0.1) with the scrape
        jobs of prometheus/prometheus.yml and the repository's alert and
        recording rules'';

      apiTargets = mkOption {
        type = types.listOf types.str;
        default = optional cfg.serve.enable "127.0.0.1:${toString cfg.serve.port}";
        defaultText = lib.literalExpression ''lib.optional config.services.mlwatch.serve.enable "127.0.0.1:''${toString config.services.mlwatch.serve.port}"'';
        example = [ "api-1.example.org:9000" "api-2.example.org:9000" ];
        description = "`host:port` of every prediction API the `ml-api` job scrapes.";
      };

      trainTargets = mkOption {
        type = types.listOf types.str;
        default = optional cfg.train.enable "127.0.0.1:${toString cfg.train.port}";
        defaultText = lib.literalExpression ''lib.optional config.services.mlwatch.train.enable "127.0.0.1:''${toString config.services.mlwatch.train.port}"'';
        example = [ "trainer.example.org:8002" ];
        description = "`host:port` of every trainer the `model-training` job scrapes.";
      };

      alertmanagerTargets = mkOption {
        type = types.listOf types.str;
        default = optional cfg.alertmanager.enable "127.0.0.1:${toString config.services.prometheus.alertmanager.port}";
        defaultText = lib.literalExpression ''lib.optional config.services.mlwatch.alertmanager.enable "127.0.0.1:''${toString config.services.prometheus.alertmanager.port}"'';
        example = [ "monitor-1.example.org:9093" "monitor-2.example.org:9093" ];
        description = ''
          `host:port` of every Alertmanager this Prometheus sends alerts to. In
          an HA pair, list both Alertmanagers on both Prometheus servers: the
          Alertmanager cluster deduplicates.
        '';
      };

      replica = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "monitor-1";
        description = ''
          Value of the `replica` external label, for one Prometheus of an HA
          pair (each server its own value, identical rules and targets).
          Alertmanager deduplicates alerts that differ only in it.
        '';
      };
    };

    alertmanager = {
      enable = mkEnableOption ''
        a local Alertmanager (`services.prometheus.alertmanager`, on 127.0.0.1,
        gossip off) configured from the repository's prometheus/alertmanager.yml'';

      webhookUrl = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:5001/alerts";
        description = ''
          URL that replaces the `url:` of every webhook receiver in
          prometheus/alertmanager.yml. `null` keeps the file's URLs.
        '';
      };

      peers = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "monitor-2.example.org:9094" ];
        description = ''
          `host:port` of the other Alertmanagers of an HA cluster. Empty: a
          single Alertmanager with gossip off. Non-empty: gossip on
          {option}`services.mlwatch.alertmanager.clusterAddress`, whose port
          is opened in the firewall (TCP and UDP). The other Prometheus of
          the pair sends alerts to this Alertmanager as well, so evaluation
          then requires {option}`services.prometheus.alertmanager.listenAddress`
          to be reachable from other hosts and its port to be open
          ({option}`services.prometheus.alertmanager.openFirewall`, or the
          firewall of the interface the pair talks over).
        '';
      };

      advertiseAddress = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.0.0.11:9094";
        description = ''
          `address:port` the peers reach this Alertmanager at. `null`: Alertmanager
          picks a private address of the host and refuses to start without one.
        '';
      };

      clusterAddress = mkOption {
        type = types.str;
        default = "0.0.0.0:9094";
        description = "`address:port` Alertmanager's cluster gossip listens on when {option}`services.mlwatch.alertmanager.peers` is non-empty.";
      };
    };

    grafana = {
      enable = mkEnableOption ''
        a local Grafana (`services.grafana`) with the repository's datasource
        (uid `mlwatch-prometheus`) and dashboards provisioned'';

      adminPasswordFile = mkOption {
        type = externalPath;
        example = "/run/secrets/grafana-admin-password";
        description = ''
          File with the password of Grafana's `admin` user, read by Grafana at
          startup (`$__file{}`): an absolute path outside the Nix store that
          the `grafana` user can read.
        '';
      };

      secretKeyFile = mkOption {
        type = externalPath;
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
          assertion = !cfg.train.enable || lib.hasPrefix "${stateDir}/" cfg.serve.modelPath;
          message = "services.mlwatch.serve.modelPath must lie inside ${stateDir} when services.mlwatch.train.enable is set: the trainer runs as a dynamic user that can write only its StateDirectory.";
        }
        {
          assertion = cfg.serve.modelUri == null || lib.hasPrefix "models:/" cfg.serve.modelUri;
          message = "services.mlwatch.serve.modelUri must be a registry URI, models:/NAME@ALIAS or models:/NAME/VERSION (found ${toString cfg.serve.modelUri}).";
        }
        {
          assertion = cfg.train.schedule == null || cfg.train.enable;
          message = "services.mlwatch.train.schedule is set but services.mlwatch.train.enable is not.";
        }
        {
          assertion = !cfg.otlp.enable || cfg.otlp.endpoints != [ ];
          message = "services.mlwatch.otlp.enable is set but there is nowhere to push: enable services.mlwatch.prometheus or set services.mlwatch.otlp.endpoints.";
        }
      ];

      # Only the API: the trainer's metrics are for the local Prometheus
      # unless train.openFirewall says otherwise (docs/fleet.md).
      networking.firewall.allowedTCPPorts =
        optional (cfg.openFirewall && cfg.serve.enable) cfg.serve.port
        ++ optional (cfg.train.enable && cfg.train.openFirewall) cfg.train.port;
    }

    (mkIf cfg.serve.enable {
      systemd.services.mlwatch-serve = {
        description = "mlwatch prediction API";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = hardening // {
          Type = "exec";
          # `%d` is $CREDENTIALS_DIRECTORY, where LoadCredential= puts the token.
          ExecStart = utils.escapeSystemdExecArgs
            ([ exe "serve" "--listen" (listen cfg.serve.address cfg.serve.port) ]
              ++ (if cfg.serve.modelUri == null then [ "--model-path" cfg.serve.modelPath ] else [
              "--model-uri"
              cfg.serve.modelUri
              "--mlflow-tracking-uri"
              cfg.serve.mlflowTrackingUri
              "--model-poll-interval"
              cfg.serve.modelPollInterval
            ])
              ++ pushFlags ++ cfg.serve.extraArgs)
          + lib.optionalString (cfg.serve.adminTokenFile != null) " --admin-token-file %d/admin-token"
          + lib.optionalString (cfg.serve.feedbackKeyFile != null) " --feedback-key-file %d/feedback-key";
          # SIGHUP makes the service reload its model.
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          LoadCredential = mkIf (cfg.serve.adminTokenFile != null || cfg.serve.feedbackKeyFile != null)
            (optional (cfg.serve.adminTokenFile != null) "admin-token:${toString cfg.serve.adminTokenFile}"
              ++ optional (cfg.serve.feedbackKeyFile != null) "feedback-key:${toString cfg.serve.feedbackKeyFile}");
          Restart = "on-failure";
          RestartSec = "5s";
        };
      };

      # Reload the service whenever the model file is (re)written -- by the
      # trainer's atomic rename or by an admin copying a model in. This keeps
      # the trainer unprivileged (it need not call `systemctl`) and reloads as
      # soon as the artifact exists, not after the trainer's --linger period.
      # Not with serve.modelUri: the service follows the registry itself.
      systemd.paths.mlwatch-reload = mkIf (cfg.serve.modelUri == null) {
        description = "Reload mlwatch when its model changes";
        wantedBy = [ "paths.target" ];
        pathConfig.PathChanged = cfg.serve.modelPath;
      };
      systemd.services.mlwatch-reload = {
        description = "Reload the mlwatch model";
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${config.systemd.package}/bin/systemctl try-reload-or-restart mlwatch-serve.service";
        };
      };
    })

    (mkIf cfg.train.enable {
      systemd.services.mlwatch-train = {
        description = "mlwatch model training";
        after = [ "network.target" ];
        # Training finishes, writes the model atomically, then keeps serving
        # /metrics for --linger so Prometheus scrapes the final values.
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = utils.escapeSystemdExecArgs
            ([ exe "train" "--listen" (listen cfg.train.address cfg.train.port) "--output" cfg.serve.modelPath ]
              # At boot the MLflow server (Python) may take a while to listen.
              ++ lib.optionals cfg.mlflow.enable [ "--mlflow-startup-wait" "120s" ]
              ++ pushFlags ++ cfg.train.args);
        };
      };

      # A fresh deployment has no model: a calendar timer that never ran does
      # not fire at activation (not even with Persistent=), so /ready would
      # answer 503 until the first scheduled run. Start one training run at
      # boot when the model is missing. --no-block: boot and
      # `nixos-rebuild switch` must not wait for the run and its --linger.
      systemd.services.mlwatch-train-initial = {
        description = "Train the first mlwatch model when none exists";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        unitConfig.ConditionPathExists = "!${cfg.serve.modelPath}";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${config.systemd.package}/bin/systemctl start --no-block mlwatch-train.service";
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

    (mkIf cfg.runbooks.enable {
      systemd.services.mlwatch-runbooks = {
        description = "mlwatch runbooks (docs/runbooks.md as HTML)";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = hardening // {
          Type = "exec";
          ExecStart = utils.escapeSystemdExecArgs
            [ exe "runbooks" "--assets" assets "--listen" (listen cfg.runbooks.address cfg.runbooks.port) ];
          Restart = "on-failure";
          RestartSec = "5s";
        };
      };
    })

    (mkIf cfg.mlflow.enable {
      systemd.services.mlwatch-mlflow = {
        description = "MLflow tracking server for mlwatch";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        environment = {
          # MLflow and gunicorn keep caches under $HOME.
          HOME = mlflowDir;
          MLFLOW_DISABLE_TELEMETRY = "true";
          DO_NOT_TRACK = "true";
        };
        # Python needs writable-executable memory for ctypes/cffi callbacks.
        serviceConfig = sandboxing // {
          MemoryDenyWriteExecute = false;
          PrivateDevices = true;
          Type = "exec";
          DynamicUser = true;
          StateDirectory = "mlwatch-mlflow";
          StateDirectoryMode = "0750";
          WorkingDirectory = mlflowDir;
          ExecStart = utils.escapeSystemdExecArgs ([
            (lib.getExe' cfg.mlflow.package "mlflow")
            "server"
            "--host"
            cfg.mlflow.address
            "--port"
            (toString cfg.mlflow.port)
            "--backend-store-uri"
            "sqlite:///${mlflowDir}/mlflow.db"
            "--artifacts-destination"
            "${mlflowDir}/artifacts"
            "--serve-artifacts"
            "--workers"
            "1"
          ] ++ lib.optionals cfg.mlflow.exposePrometheus [ "--expose-prometheus" "${mlflowDir}/prometheus-metrics" ]
          ++ cfg.mlflow.extraArgs);
          Restart = "on-failure";
          RestartSec = "5s";
        };
      };

      # The trainer logs every run to it (MLflow's own variables).
      systemd.services.mlwatch-train = mkIf cfg.train.enable {
        wants = [ "mlwatch-mlflow.service" ];
        after = [ "mlwatch-mlflow.service" ];
        environment = {
          MLFLOW_TRACKING_URI = mlflowUri;
          MLFLOW_EXPERIMENT_NAME = cfg.mlflow.experiment;
        };
      };
    })

    (mkIf cfg.prometheus.enable {
      services.prometheus = {
        enable = true;
        listenAddress = mkDefault "127.0.0.1";
        globalConfig = lib.mapAttrs (_: mkDefault) (removeAttrs prometheusYml.global [ "external_labels" ])
          // { external_labels = externalLabels; };
        inherit scrapeConfigs ruleFiles;
        alertmanagers = mkIf (alertmanagerConfigs != [ ]) alertmanagerConfigs;
        # The push path: the whole merged config (JSON is YAML), and the
        # receiver's flags for the package's version.
        configText = mkIf cfg.otlp.enable (builtins.toJSON pushPrometheusConfig);
        extraFlags = mkIf cfg.otlp.enable receiverFlags;
      };
    })

    (mkIf cfg.alertmanager.enable {
      assertions = [
        {
          assertion = cfg.alertmanager.webhookUrl == null || webhookUrlLines != [ ];
          message = "services.mlwatch.alertmanager.webhookUrl is set, but prometheus/alertmanager.yml has no webhook `url:` line to replace.";
        }
        # In a cluster, the other Prometheus sends its alerts to this
        # Alertmanager too (prometheus.alertmanagerTargets lists both):
        # gossip alone does not make a pair, and nixpkgs keeps the port
        # closed by default.
        {
          assertion = cfg.alertmanager.peers == [ ] || !(loopbackOnly alertmanager.listenAddress);
          message = ''
            services.mlwatch.alertmanager.peers makes this Alertmanager one of a cluster, but it listens on ${alertmanager.listenAddress} only:
            the other Prometheus of the pair cannot send it alerts. Set services.prometheus.alertmanager.listenAddress to an address it reaches (e.g. "0.0.0.0").'';
        }
        {
          assertion = cfg.alertmanager.peers == [ ] || alertmanagerPortOpen;
          message = ''
            services.mlwatch.alertmanager.peers makes this Alertmanager one of a cluster, but its port ${toString alertmanager.port} is closed in the firewall:
            the other Prometheus of the pair cannot send it alerts. Set services.prometheus.alertmanager.openFirewall = true, or open the port
            on the interface the pair talks over (networking.firewall.interfaces.<name>.allowedTCPPorts).'';
        }
      ];

      services.prometheus.alertmanager = {
        enable = true;
        listenAddress = mkDefault "127.0.0.1";
        configText = alertmanagerConfigText;
        # One Alertmanager: no gossip. Without this flag it listens on :9094
        # on every interface and refuses to start on a host without a private
        # address. An HA cluster gossips with its peers (docs/fleet.md).
        extraFlags =
          if cfg.alertmanager.peers == [ ]
          then [ "--cluster.listen-address=" ]
          else [ "--cluster.listen-address=${cfg.alertmanager.clusterAddress}" ]
            ++ lib.optional (cfg.alertmanager.advertiseAddress != null) "--cluster.advertise-address=${cfg.alertmanager.advertiseAddress}"
            ++ map (peer: "--cluster.peer=${peer}") cfg.alertmanager.peers;
      };

      networking.firewall.allowedTCPPorts = mkIf (cfg.alertmanager.peers != [ ])
        [ (lib.toInt (lib.last (lib.splitString ":" cfg.alertmanager.clusterAddress))) ];
      # Gossip is TCP and UDP.
      networking.firewall.allowedUDPPorts = mkIf (cfg.alertmanager.peers != [ ])
        [ (lib.toInt (lib.last (lib.splitString ":" cfg.alertmanager.clusterAddress))) ];
    })

    (mkIf cfg.grafana.enable {
      services.grafana = {
        enable = true;
        settings = {
          server.http_port = mkDefault 3000;
          security = {
            admin_user = mkDefault "admin";
            admin_password = "$__file{${cfg.grafana.adminPasswordFile}}";
            secret_key = "$__file{${cfg.grafana.secretKeyFile}}";
          };
        };
        provision = {
          enable = true;
          datasources.settings = {
            apiVersion = 1;
            datasources = map (datasource: datasource // datasourceOverrides) grafanaDatasources;
          };
          dashboards.settings = {
            apiVersion = 1;
            providers = map (provider: provider // providerOverrides provider) grafanaProviders;
          };
        };
      };
    })
  ]);
}
