{
  description = "mlwatch: observability for ML training and serving (Prometheus, Alertmanager, Grafana)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  # This file only wires things together; everything else lives in ./nix:
  #   nix/package.nix  the Rust build (runs the cargo tests); withTools = false
  #                    is mlwatch-service, the service build (train, serve,
  #                    runbooks) that the images and the NixOS units run
  #   nix/assets.nix   prometheus/ + grafana/ + runbooks, shared by all of them
  #   nix/stack.nix    `nix run`: `mlwatch up` with the monitoring binaries on PATH
  #   nix/images.nix   OCI images for docker-compose.yml
  #   nix/module.nix   the NixOS module `services.mlwatch`
  #   nix/tests/       NixOS VM tests
  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packagesFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system};
    in
    {
      overlays.default = final: _prev: {
        mlwatch-assets = final.callPackage ./nix/assets.nix { };
        mlwatch = final.callPackage ./nix/package.nix { };
        mlwatch-service = final.mlwatch.override { withTools = false; };
      };

      packages = forAllSystems (pkgs:
        let
          mlwatch-assets = pkgs.callPackage ./nix/assets.nix { };
          mlwatch = pkgs.callPackage ./nix/package.nix { inherit mlwatch-assets; };
          mlwatch-service = mlwatch.override { withTools = false; };
          images = pkgs.callPackage ./nix/images.nix { mlwatch = mlwatch-service; };
        in
        {
          default = mlwatch;
          inherit mlwatch mlwatch-service mlwatch-assets;
          image-service = images.service;
          image-trainer = images.trainer;
        });

      apps = forAllSystems (pkgs:
        let
          stack = pkgs.callPackage ./nix/stack.nix { inherit (packagesFor pkgs) mlwatch mlwatch-assets; };
        in
        {
          default = {
            type = "app";
            program = lib.getExe stack;
            meta.description = "Run trainer, prediction API, Prometheus, Alertmanager and Grafana locally (mlwatch up)";
          };
        });

      # The module's package, the service build: services.mlwatch.package
      # when set; otherwise pkgs.mlwatch-service when the system's nixpkgs has
      # one (overlays.default, or your own overlay); otherwise this flake's
      # service build. A plain mkDefault of the flake's package would beat the
      # option's pkgs.mlwatch-service default and silently ignore an overlay,
      # hence the `or`.
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./nix/module.nix ];
        services.mlwatch.package = lib.mkDefault (pkgs.mlwatch-service or (packagesFor pkgs).mlwatch-service);
      };

      checks = forAllSystems (pkgs:
        let
          vmTests = import ./nix/tests {
            inherit pkgs;
            nixosModule = self.nixosModules.default;
          };
        in
        vmTests // {
          # The package build runs `cargo test` (doCheck), integration tests included.
          package = (packagesFor pkgs).mlwatch;
          # The service build runs the tests that need no tools, and checks
          # that its binary has none of the tools' subcommands (installCheck).
          package-service = (packagesFor pkgs).mlwatch-service;
        });

      # `nix fmt`: since Nix 2.25 it passes no path, and a bare nixpkgs-fmt
      # then reads stdin and hangs. Format every .nix file of the tree instead.
      formatter = forAllSystems (pkgs: pkgs.writeShellApplication {
        name = "mlwatch-nix-fmt";
        runtimeInputs = [ pkgs.nixpkgs-fmt pkgs.findutils ];
        text = ''
          if [ "$#" -eq 0 ]; then
            find . \( -name .git -o -name target -o -name 'result*' \) -prune -o -name '*.nix' -print0 |
              xargs -0 --no-run-if-empty nixpkgs-fmt
          else
            exec nixpkgs-fmt "$@"
          fi
        '';
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            prometheus
            prometheus.cli # promtool, for .ci/prometheus-checks.sh
            prometheus-alertmanager
            prometheus-pushgateway
            grafana
            wrk
            # .ci/test: the consistency checks (PyYAML), nix-instantiate for
            # .ci/nix-checks.sh, the Grafana schema gate, the sandbox rehearsal
            (python3.withPackages (ps: [ ps.pyyaml ps.check-jsonschema ]))
            nix
            nodejs
            util-linux # unshare
            iproute2 # ip link set lo up
            deadnix
            nixpkgs-fmt
          ];
        };
      });
    };
}
