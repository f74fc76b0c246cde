# The repository's monitoring configuration as one small derivation:
# prometheus/ (scrape config, rules, Alertmanager routing), grafana/provisioning
# (datasource, dashboard provider, dashboards) and the runbooks, installed to
# $out/share/mlwatch with the repository's layout.
#
# The package links it as its share/mlwatch, and the NixOS module and
# `nix run` read it directly, so a custom `services.mlwatch.package` cannot
# lose the rules, and a change to the Rust code does not restart Prometheus
# or Grafana. The file list is nix/source-set.json's "assets", which CI reads too.
{ lib
, stdenvNoCC
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  sourceSet = lib.importJSON ./source-set.json;
  fs = lib.fileset;
in
stdenvNoCC.mkDerivation {
  pname = "mlwatch-assets";
  inherit (cargoToml.package) version;

  src = fs.toSource {
    root = ../.;
    fileset = fs.unions (map (path: ../. + "/${path}") sourceSet.assets);
  };

  dontConfigure = true;
  dontBuild = true;
  installPhase = ''
    runHook preInstall
    mkdir -p $out/share/mlwatch
    cp -r . $out/share/mlwatch/
    runHook postInstall
  '';

  meta = {
    description = "mlwatch's Prometheus rules, Alertmanager routing, Grafana dashboards and runbooks";
    license = lib.licenses.mit;
    platforms = lib.platforms.all;
  };
}
