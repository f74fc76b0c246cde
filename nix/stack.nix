# `nix run`: the same local-stack launcher as `mlwatch up`, with nixpkgs'
# Prometheus, Alertmanager and Grafana on PATH and the packaged configs
# (nix/assets.nix) as its assets. Extra arguments go to `mlwatch up`,
# e.g. `nix run . -- --grafana-port 3001`.
{ writeShellApplication
, mlwatch
, mlwatch-assets
, prometheus
, prometheus-alertmanager
, grafana
}:

writeShellApplication {
  name = "mlwatch-up";
  runtimeInputs = [
    mlwatch
    prometheus
    prometheus-alertmanager
    grafana
  ];
  text = ''
    exec mlwatch up --assets ${mlwatch-assets}/share/mlwatch "$@"
  '';
  meta = {
    description = "Start the mlwatch trainer, prediction API, Prometheus, Alertmanager and Grafana locally";
    inherit (mlwatch.meta) license platforms;
    mainProgram = "mlwatch-up";
  };
}
