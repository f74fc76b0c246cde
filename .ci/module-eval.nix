# Evaluates nix/module.nix without nixpkgs: a small module system (option
# declarations, definitions with mkIf / mkMerge / mkDefault / mkForce,
# priorities, merging, type checks, assertions) over the module's own
# declarations and a table of the nixpkgs options it and our documents
# touch, copied from nixpkgs' sources (type and default).
#
# What it checks, like the NixOS module system does:
#   - every defined option exists (`services.mlwatch.*` as nix/module.nix
#     declares them; nixpkgs' options as far as the table below knows them:
#     an option missing from the table is an error too, so add it from
#     nixpkgs' declaration rather than guess);
#   - a value has the option's type (bool, str, port, externalPath, listOf,
#     nullOr, enum, ...), so a Nix path literal for a secret is refused;
#   - an option that is read has a value ("accessed but has no value
#     defined": e.g. grafana.secretKeyFile with grafana.enable and no file);
#   - definitions of equal priority do not conflict, mkDefault yields to a
#     plain definition, mkIf false drops one;
#   - every assertion (the module's, and the alertmanager one of nixpkgs)
#     holds.
# What it cannot check: anything nixpkgs' own modules compute (it has their
# option declarations, and of their config only the alertmanager module's
# assertion and openFirewall: no prometheus.yml is rendered, no unit of
# nixpkgs' is produced), the inner structure of nixpkgs' submodules
# (scrapeConfigs, systemd units, Grafana settings are merged as plain
# attribute sets), builds (promtool, amtool), and anything at run time.
# `nix flake check` against nixpkgs does those.
#
# Two uses:
#   nix-instantiate --eval --strict --json .ci/module-eval.nix --arg trainEnable false
#     the parametrised host .ci/check_consistency.py compares with
#     prometheus/ and grafana/ (the values the module hands nixpkgs);
#   nix-instantiate --eval --strict --json .ci/module-eval.nix --arg snippet ./x.nix
#     one configuration from a document (.ci/nix-doc-snippets.py): a NixOS
#     module (nix/module.nix is imported for it), or a flake whose
#     nixosConfigurations import `mlwatch.nixosModules.default`. Evaluation
#     fails on any of the errors above; otherwise it prints, per host, the
#     nixpkgs-side options it would build (every one of them forced).
{ snippet ? null
, trainEnable ? true
, serveEnable ? true
, alertmanagerEnable ? true
, apiTargets ? null
, peers ? [ ]
, replica ? null
, mlflowEnable ? true
  # services.mlwatch.otlp.enable, and the version of the Prometheus package
  # (the receiver flags depend on it: native histograms before 3.8).
, otlpEnable ? false
  # services.mlwatch.serve.modelUri (the MLflow registry instead of a file).
, modelUri ? null
, prometheusVersion ? "3.14.0"
}:

let
  inherit (builtins)
    all any attrNames concatMap concatStringsSep elem filter foldl' head
    isAttrs isBool isFunction isInt isList isPath isString length mapAttrs;

  # toJSON would copy a path literal into the store: show its name instead.
  show = value:
    let shown = builtins.tryEval (builtins.toJSON value); in
    if isPath value then "the path literal ${toString value}"
    else if shown.success then shown.value else "<${builtins.typeOf value}>";
  showLoc = concatStringsSep ".";
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);

  # -- Properties, represented as nixpkgs' lib represents them.
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  propertyOf = value: if isAttrs value then value._type or null else null;

  # -- Types: a name, a check, and how the values of equal priority merge.
  mkType = name: check: merge: { _type = "option-type"; inherit name check merge; };
  mergeEqual = loc: values:
    if all (v: v == head values) values then head values
    else throw "The option `${showLoc loc}' has conflicting definition values: ${concatStringsSep ", " (map show values)}.";
  types = rec {
    bool = mkType "boolean" isBool mergeEqual;
    str = mkType "string" isString mergeEqual;
    lines = mkType "strings concatenated with \"\\n\"" isString (_: concatStringsSep "\n");
    int = mkType "signed integer" isInt mergeEqual;
    port = mkType "16 bit unsigned integer; between 0 and 65535 (both inclusive)"
      (v: isInt v && v >= 0 && v <= 65535)
      mergeEqual;
    # Store paths are strings here: pkgs below is a set of names.
    package = mkType "package" (v: isString v || isAttrs v) mergeEqual;
    path = mkType "path" (v: isPath v || (isString v && lib.hasPrefix "/" v)) mergeEqual;
    # nixpkgs' lib.types.externalPath: an absolute path, given as a string,
    # outside the Nix store (a path literal would be copied into it).
    externalPath = mkType "absolute path outside the Nix store, as a string"
      (v: isString v && lib.hasPrefix "/" v && !(lib.hasPrefix "${builtins.storeDir}/" v))
      mergeEqual;
    attrs = mkType "attribute set" isAttrs (_: foldl' (a: b: a // b) { });
    enum = values: mkType "one of ${concatStringsSep ", " (map show values)}" (v: elem v values) mergeEqual;
    listOf = t: mkType "list of ${t.name}" (v: isList v && all t.check v) (_: builtins.concatLists);
    nullOr = t: mkType "null or ${t.name}" (v: v == null || t.check v) (loc: values:
      if all (v: v == null) values then null
      else if any (v: v == null) values then throw "The option `${showLoc loc}' is defined both null and not null."
      else t.merge loc values);
    # nixpkgs' submodules and freeform settings (systemd units, Grafana's
    # settings, Prometheus' global config): merged attribute by attribute,
    # each leaf with its own priority, nothing known about its fields.
    nested = { _type = "option-type"; name = "nested attribute set"; nested = true; check = isAttrs; };
  };

  mkOption = attrs: attrs // { _type = "option"; };
  isOption = decl: isAttrs decl && (decl._type or null) == "option";

  # Just enough lib for nix/module.nix and the documents' snippets.
  lib = {
    inherit mkIf mkMerge mkOverride mkOption types;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkOptionDefault = mkOverride 1500;
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      description = "Whether to enable ${name}.";
    };
    mkPackageOption = pkgs: name: _: mkOption { type = types.package; default = pkgs.${name}; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: set: if cond then set else { };
    optionals = cond: xs: if cond then xs else [ ];
    optional = cond: x: if cond then [ x ] else [ ];
    filterAttrs = pred: set: builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
      (filter (name: pred name set.${name}) (attrNames set)));
    escapeShellArg = s: "'${s}'";
    getExe = p: "${p}/bin/mlwatch";
    getExe' = p: name: "${p}/bin/${name}";
    toInt = builtins.fromJSON;
    versionOlder = a: b: builtins.compareVersions a b < 0;
    last = list: builtins.elemAt list (length list - 1);
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    hasSuffix = suffix: s:
      let n = builtins.stringLength s; m = builtins.stringLength suffix; in
      n >= m && builtins.substring (n - m) m s == suffix;
    splitString = sep: s: filter isString (builtins.split sep s);
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    inherit (builtins) replaceStrings mapAttrs;
  };

  pkgs = {
    mlwatch = "/nix/store/mlwatch";
    # The service build (no tools) that the module runs by default.
    mlwatch-service = "/nix/store/mlwatch-service";
    mlwatch-assets = "/nix/store/mlwatch-assets";
    coreutils = "/nix/store/coreutils";
    jq = "/nix/store/jq";
    prometheus-alertmanager = "/nix/store/alertmanager";
    prometheus = { outPath = "/nix/store/prometheus"; version = prometheusVersion; };
    runCommand = name: _: _: "/nix/store/${name}";
    python3.withPackages = _: "/nix/store/python3-env";
  };
  utils.escapeSystemdExecArgs = concatStringsSep " ";

  # -- The nixpkgs options nix/module.nix and the documents define or read,
  # with nixpkgs' types and defaults (nixos/modules/services/monitoring/
  # prometheus/{default,alertmanager}.nix, services/monitoring/grafana.nix,
  # services/networking/firewall.nix, system/boot/systemd.nix,
  # misc/assertions.nix).
  nixpkgsOptions = {
    assertions = mkOption { type = types.listOf types.attrs; default = [ ]; };
    networking.firewall = {
      enable = mkOption { type = types.bool; default = true; };
      allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      interfaces = mkOption { type = types.nested; default = { }; };
    };
    systemd = {
      package = mkOption { type = types.package; default = "/nix/store/systemd"; };
      services = mkOption { type = types.nested; default = { }; };
      paths = mkOption { type = types.nested; default = { }; };
      timers = mkOption { type = types.nested; default = { }; };
    };
    services.prometheus = {
      enable = mkOption { type = types.bool; default = false; };
      port = mkOption { type = types.port; default = 9090; };
      listenAddress = mkOption { type = types.str; default = "0.0.0.0"; };
      globalConfig = mkOption { type = types.nested; default = { }; };
      scrapeConfigs = mkOption { type = types.listOf types.attrs; default = [ ]; };
      ruleFiles = mkOption { type = types.listOf types.path; default = [ ]; };
      alertmanagers = mkOption { type = types.listOf types.attrs; default = [ ]; };
      package = mkOption { type = types.package; default = pkgs.prometheus; };
      configText = mkOption { type = types.nullOr types.lines; default = null; };
      extraFlags = mkOption { type = types.listOf types.str; default = [ ]; };
      alertmanager = {
        enable = mkOption { type = types.bool; default = false; };
        listenAddress = mkOption { type = types.str; default = ""; };
        port = mkOption { type = types.port; default = 9093; };
        openFirewall = mkOption { type = types.bool; default = false; };
        configuration = mkOption { type = types.nullOr types.attrs; default = null; };
        configText = mkOption { type = types.nullOr types.lines; default = null; };
        clusterPeers = mkOption { type = types.listOf types.str; default = [ ]; };
        extraFlags = mkOption { type = types.listOf types.str; default = [ ]; };
      };
    };
    services.grafana = {
      enable = mkOption { type = types.bool; default = false; };
      settings = mkOption { type = types.nested; default = { }; };
      provision = mkOption { type = types.nested; default = { }; };
    };
  };

  # The two things nixpkgs' alertmanager module does when enabled that a
  # host's evaluation here depends on: its assertion, and openFirewall.
  nixpkgsModule = { config, ... }: {
    config = mkIf config.services.prometheus.alertmanager.enable {
      networking.firewall.allowedTCPPorts = lib.optional config.services.prometheus.alertmanager.openFirewall
        config.services.prometheus.alertmanager.port;
      assertions = [{
        assertion = config.services.prometheus.alertmanager.configuration != null
          || config.services.prometheus.alertmanager.configText != null;
        message = "Can not enable alertmanager without a configuration. Set either the `configuration` or `configText` attribute.";
      }];
    };
  };

  # -- Evaluating one host: the fixpoint of its modules' definitions.
  evalHost = modules:
    let
      args = { inherit config lib pkgs utils; options = declarations; modulesPath = "/nix/store/nixpkgs/nixos/modules"; };
      load = file: module:
        let
          imported = if isPath module then import module else module;
          value = if isFunction imported then imported args else imported;
          full = value ? options || value ? config;
        in
        [{
          inherit file;
          options = value.options or { };
          config = if full then value.config or { } else removeAttrs value [ "imports" "_file" "key" ];
        }]
        ++ concatMap (m: load (if isPath m then toString m else "${file} (imported)") m) (value.imports or [ ]);
      loaded = [{ file = "nixpkgs (the declarations of .ci/module-eval.nix)"; options = nixpkgsOptions; config = { }; }]
        ++ concatMap ({ file, module }: load file module) modules;

      mergeDeclarations = loc: a: b:
        if isOption a || isOption b
        then throw "The option `${showLoc loc}' is declared twice."
        else a // mapAttrs (name: decl: if a ? ${name} then mergeDeclarations (loc ++ [ name ]) a.${name} decl else decl) b;
      declarations = foldl' (mergeDeclarations [ ]) { } (map (m: m.options) loaded);

      # Every definition, pushed down to the option it defines; conditions
      # and priorities travel with it, unevaluated.
      collect = loc: decl: def:
        let value = def.value; property = propertyOf value; in
        if isOption decl then [ (def // { inherit loc; }) ]
        else if property == "if" then collect loc decl (def // { conds = def.conds ++ [ value.condition ]; value = value.content; })
        else if property == "merge" then concatMap (content: collect loc decl (def // { value = content; })) value.contents
        else if property == "override" then collect loc decl (def // { prio = value.priority; value = value.content; })
        else if !(isAttrs value) then throw "${def.file}: `${showLoc loc}' is a set of options, not a value (found ${show value})."
        else
          concatMap
            (name:
              if decl ? ${name} then collect (loc ++ [ name ]) decl.${name} (def // { value = value.${name}; })
              else
                throw ("The option `${showLoc (loc ++ [ name ])}' does not exist (defined in ${def.file}). "
                  + (if lib.hasPrefix "services.mlwatch" (showLoc loc) then "nix/module.nix declares no such option."
                else "It is not in .ci/module-eval.nix's table of nixpkgs options: if nixpkgs declares it, add its type and default from nixpkgs' source.")))
            (attrNames value);
      definitions = builtins.groupBy (def: showLoc def.loc)
        (concatMap (m: collect [ ] declarations { inherit (m) file; conds = [ ]; prio = 100; value = m.config; }) loaded);

      # Properties at the option itself: mkIf, mkMerge, mkDefault on its value.
      discharge = def:
        let value = def.value; property = propertyOf value; in
        if property == "if" then discharge (def // { conds = def.conds ++ [ value.condition ]; value = value.content; })
        else if property == "merge" then concatMap (content: discharge (def // { value = content; })) value.contents
        else if property == "override" then discharge (def // { prio = value.priority; value = value.content; })
        else [ def ];
      live = defs: filter (def: all (cond: cond) def.conds) (concatMap discharge defs);
      highest = defs:
        let best = foldl' (p: def: if def.prio < p then def.prio else p) 1500 defs; in
        filter (def: def.prio == best) defs;
      notDefined = { _notDefined = true; };

      mergeNested = loc: defs:
        let
          active = live defs;
          top = highest active;
          values = map (def: def.value) top;
        in
        if active == [ ] then notDefined
        else if all (def: isAttrs def.value) active then
          lib.filterAttrs (_: value: !(isAttrs value && value ? _notDefined))
            (genAttrs (unique (concatMap (def: attrNames def.value) active)) (name:
              mergeNested (loc ++ [ name ]) (concatMap
                (def: lib.optional (def.value ? ${name}) (def // { conds = [ ]; value = def.value.${name}; }))
                active)))
        else if all isList values then builtins.concatLists values
        else mergeEqual loc values;

      resolve = loc: option:
        let
          defs = definitions.${showLoc loc} or [ ];
          top = highest (live defs);
          wrong = filter (def: !(option.type.check def.value)) top;
          fallback =
            if option ? default then option.default
            else throw "The option `${showLoc loc}' was accessed but has no value defined. Try setting the option.";
        in
        if option.type.nested or false then
          let merged = mergeNested loc defs; in if isAttrs merged && merged ? _notDefined then fallback else merged
        else if top == [ ] then fallback
        else if wrong != [ ] then
          throw "A definition for option `${showLoc loc}' is not of type `${option.type.name}' (in ${(head wrong).file}). Definition value: ${show (head wrong).value}"
        else option.type.merge loc (map (def: def.value) top);

      valuesOf = loc: decl:
        if isOption decl then resolve loc decl
        else mapAttrs (name: valuesOf (loc ++ [ name ])) decl;
      config = valuesOf [ ] declarations;

      failed = filter (a: !a.assertion) config.assertions;
    in
    if failed != [ ]
    then throw "Failed assertions:\n${concatStringsSep "\n" (map (a: "- ${a.message}") failed)}"
    else config;

  mlwatchModule = { file = "nix/module.nix"; module = ../nix/module.nix; };
  nixpkgsExcerpt = { file = "nixpkgs' alertmanager module (.ci/module-eval.nix's excerpt)"; module = nixpkgsModule; };

  # What a host's build would consume: every nixpkgs-side option.
  built = config: {
    inherit (config) assertions networking systemd;
    services = { inherit (config.services) prometheus grafana; };
  };

  # A document's snippet: a flake, or one NixOS module.
  snippetHosts =
    let
      value = import snippet;
      # nix/module.nix, as the flake exports it.
      mlwatchMarker = { _mlwatchModule = true; };
      inputs = {
        self = { };
        nixpkgs.lib = lib // { nixosSystem = system: { _nixosSystem = system; }; };
        mlwatch = { nixosModules.default = mlwatchMarker; overlays.default = _: _: { }; };
      };
      hostOf = name: system:
        let modules = system._nixosSystem.modules or (throw "nixosConfigurations.${name} is not a nixpkgs.lib.nixosSystem"); in
        if !(elem mlwatchMarker modules)
        then throw "nixosConfigurations.${name} does not import mlwatch.nixosModules.default."
        else
          evalHost (map
            (module:
              if module == mlwatchMarker then mlwatchModule
              else { file = "${toString snippet} (nixosConfigurations.${name})"; inherit module; })
            modules ++ [ nixpkgsExcerpt ]);
    in
    if isAttrs value && value ? outputs
    then mapAttrs (name: system: built (hostOf name system)) (value.outputs inputs).nixosConfigurations
    else { snippet = built (evalHost [ mlwatchModule { file = toString snippet; module = value; } nixpkgsExcerpt ]); };

  # The parametrised host of .ci/check_consistency.py.
  host = evalHost [
    mlwatchModule
    nixpkgsExcerpt
    {
      file = ".ci/module-eval.nix (the parametrised host)";
      module = {
        services.mlwatch = {
          enable = true;
          openFirewall = true;
          mlflow.enable = mlflowEnable;
          otlp.enable = otlpEnable;
          serve = { enable = serveEnable; inherit modelUri; };
          train.enable = trainEnable;
          prometheus = { enable = true; inherit replica; }
            // lib.optionalAttrs (apiTargets != null) { inherit apiTargets; };
          alertmanager = { enable = alertmanagerEnable; inherit peers; };
          grafana = {
            enable = true;
            adminPasswordFile = "/run/secrets/pw";
            secretKeyFile = "/run/secrets/key";
          };
        };
        # An HA member's Alertmanager must be reachable by the other
        # Prometheus (the module asserts it): here on the pair's interface.
        services.prometheus.alertmanager.listenAddress = mkIf (peers != [ ]) "0.0.0.0";
        networking.firewall.interfaces = mkIf (peers != [ ]) { eth1.allowedTCPPorts = [ 9093 ]; };
      };
    }
  ];
in
if snippet != null then snippetHosts
else {
  inherit (host.services.prometheus) scrapeConfigs ruleFiles globalConfig listenAddress alertmanagers;
  alertmanagerFlags = host.services.prometheus.alertmanager.extraFlags;
  prometheusFlags = host.services.prometheus.extraFlags;
  prometheusConfigText = host.services.prometheus.configText;
  grafanaDatasources = host.services.grafana.provision.datasources.settings.datasources;
  grafanaProviders = host.services.grafana.provision.dashboards.settings.providers;
  units = attrNames host.systemd.services;
  pathUnits = attrNames host.systemd.paths;
  firewall = host.networking.firewall.allowedTCPPorts;
  trainExec = host.systemd.services.mlwatch-train.serviceConfig.ExecStart or null;
  serveExec = host.systemd.services.mlwatch-serve.serviceConfig.ExecStart or null;
  runbooksExec = host.systemd.services.mlwatch-runbooks.serviceConfig.ExecStart or null;
  mlflowExec = host.systemd.services.mlwatch-mlflow.serviceConfig.ExecStart or null;
  trainEnvironment = host.systemd.services.mlwatch-train.environment or { };
}
