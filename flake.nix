{
  description = "mlwatch: observability for ML training and serving (Prometheus, Alertmanager, Grafana)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  # This file only wires things together; everything else lives in ./nix:
  #   nix/package.nix  the Rust build (runs the cargo tests)
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
        mlwatch = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs:
        let
          mlwatch = pkgs.callPackage ./nix/package.nix { };
          images = pkgs.callPackage ./nix/images.nix { inherit mlwatch; };
        in
        {
          default = mlwatch;
          inherit mlwatch;
          image-service = images.service;
          image-trainer = images.trainer;
        });

      apps = forAllSystems (pkgs:
        let
          stack = pkgs.callPackage ./nix/stack.nix { inherit (packagesFor pkgs) mlwatch; };
        in
        {
          default = {
            type = "app";
            program = lib.getExe stack;
            meta.description = "Run trainer, prediction API, Prometheus, Alertmanager and Grafana locally (mlwatch up)";
          };
        });

      # The module takes its package from this flake unless the user sets
      # services.mlwatch.package (or applies overlays.default).
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./nix/module.nix ];
        services.mlwatch.package = lib.mkDefault (packagesFor pkgs).mlwatch;
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
        });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

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
            # .ci/nix-checks.sh
            deadnix
            nixpkgs-fmt
          ];
        };
      });
    };
}
