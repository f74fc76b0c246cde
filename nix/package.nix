# The mlwatch binary, built with nixpkgs' Rust toolchain.
#
# The source set is nix/source-set.json's "package" list: exactly what the
# build and its tests read. CI (.ci/nix-sandbox.sh) copies the same list into
# a fresh directory and runs the tests there offline, as the Nix builder
# would, so a test that reads a file outside the set fails CI, not `nix build`.
#
# share/mlwatch is the assets derivation (nix/assets.nix): the very files
# that docker-compose.yml mounts and the NixOS module loads.
#
# `withTools = false` is the service build (the flake's `mlwatch-service`):
# cargo's default `tools` feature off, so the binary has `train`, `serve` and
# `runbooks` only, no `demo` (and its apt-get installer), `up`, `load` or
# `report`. The OCI images and the NixOS module's units run it; `nix run`
# (`mlwatch up`) runs the full build.
{ lib
, rustPlatform
, autoAddDriverRunpath
, mlwatch-assets
, prometheus
, prometheus-alertmanager
, prometheus-pushgateway
, procps
, python3
, withTools ? true
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
  sourceSet = lib.importJSON ./source-set.json;
  fs = lib.fileset;
in
rustPlatform.buildRustPackage {
  pname = if withTools then "mlwatch" else "mlwatch-service";
  inherit (cargoToml.package) version;

  # buildRustPackage passes these to cargo build, and (as checkNoDefaultFeatures
  # and checkFeatures, which default to them) to the check phase's cargo test:
  # the service build runs the tests that need no tools (Cargo.toml's
  # required-features), against the binary it installs.
  buildNoDefaultFeatures = !withTools;

  src = fs.toSource {
    root = ../.;
    fileset = fs.unions (map (path: ../. + "/${path}") sourceSet.package);
  };

  cargoLock.lockFile = ../Cargo.lock;

  # nvml-wrapper dlopens libnvidia-ml.so at runtime. On NixOS the driver's
  # libraries live in /run/opengl-driver/lib, which this hook adds to the
  # binary's RUNPATH (nixpkgs' convention for programs that load the driver).
  nativeBuildInputs = [ autoAddDriverRunpath ];

  # `cargo test` runs in the build (doCheck defaults to true). The integration
  # tests drive real processes found on PATH: Prometheus and promtool
  # (prometheus.cli), Alertmanager and amtool, the Pushgateway (binary
  # `pushgateway`), `kill` to signal the processes they spawn (procps), and
  # an MLflow tracking server (tests/mlflow_*.rs). Loopback networking is
  # available inside the Linux build sandbox.
  nativeCheckInputs = [
    prometheus
    prometheus.cli
    prometheus-alertmanager
    prometheus-pushgateway
    procps
    # The same environment as the module's default mlflow.package (see the
    # comment there): `mlflow server --expose-prometheus`
    # (tests/mlflow_up.rs) needs prometheus_flask_exporter beside mlflow,
    # and no PYTHONPATH may be set for its uvicorn child to find them.
    (python3.withPackages (ps: [ ps.mlflow ps.prometheus-flask-exporter ]))
  ];

  preCheck = ''
    export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
  '';

  # Tests are run single-threaded: several of them start servers and external
  # processes, and the sandbox's builder may have few cores.
  dontUseCargoParallelTests = true;

  postInstall = ''
    mkdir -p $out/share
    ln -s ${mlwatch-assets}/share/mlwatch $out/share/mlwatch
  '';

  # The service binary must not answer to the tools' subcommands (the
  # strings and symbols are checked by .ci/service-build.sh, on a binary that
  # still has its symbol table).
  doInstallCheck = !withTools;
  installCheckPhase = ''
    runHook preInstallCheck
    for tool in demo up load report; do
      if $out/bin/mlwatch "$tool" --help >/dev/null 2>&1; then
        echo "the service build has the tool subcommand '$tool'" >&2
        exit 1
      fi
    done
    if grep -qaF apt-get $out/bin/mlwatch; then
      echo "the service build contains the demo's apt-get installer" >&2
      exit 1
    fi
    $out/bin/mlwatch serve --help >/dev/null
    runHook postInstallCheck
  '';

  passthru = {
    assets = mlwatch-assets;
    inherit withTools;
  };

  meta = {
    inherit (cargoToml.package) description;
    license = lib.licenses.mit;
    mainProgram = "mlwatch";
    platforms = lib.platforms.linux;
  };
}
