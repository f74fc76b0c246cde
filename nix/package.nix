# The mlwatch binary, built with nixpkgs' Rust toolchain.
#
# The repository's prometheus/ and grafana/ trees are installed to
# $out/share/mlwatch so that `mlwatch up`, the NixOS module and the VM tests
# all use the very files that docker-compose.yml mounts: there is exactly one
# copy of every rule, scrape config and dashboard, and it lives at the repo root.
{ lib
, rustPlatform
, prometheus
, prometheus-alertmanager
, prometheus-pushgateway
, procps
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  fs = lib.fileset;
in
rustPlatform.buildRustPackage {
  pname = "mlwatch";
  inherit (cargoToml.package) version;

  # Only what the build and its tests read: editing docs, nix files or CI
  # scripts does not rebuild the package.
  src = fs.toSource {
    root = ../.;
    fileset = fs.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../tests
      (fs.maybeMissing ../benches)
      ../prometheus
      ../grafana
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # `cargo test` runs in the build (doCheck defaults to true). The integration
  # tests drive real processes found on PATH: Prometheus and promtool
  # (prometheus.cli), Alertmanager and amtool, the Pushgateway (binary
  # `pushgateway`), and `kill` to signal the processes they spawn (procps).
  # Loopback networking is available inside the Linux build sandbox.
  nativeCheckInputs = [
    prometheus
    prometheus.cli
    prometheus-alertmanager
    prometheus-pushgateway
    procps
  ];

  # Tests are run single-threaded: several of them start servers and external
  # processes, and the sandbox's builder may have few cores.
  dontUseCargoParallelTests = true;

  postInstall = ''
    mkdir -p $out/share/mlwatch
    cp -r prometheus grafana $out/share/mlwatch/
  '';

  meta = {
    inherit (cargoToml.package) description;
    license = lib.licenses.mit;
    mainProgram = "mlwatch";
    platforms = lib.platforms.linux;
  };
}
