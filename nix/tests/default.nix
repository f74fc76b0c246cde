# NixOS VM tests, collected for the flake's `checks`. Each test is a plain
# runNixOSTest module; `nixosModule` is the flake's nixosModules.default.
{ pkgs, nixosModule }:

{
  # One host: the whole stack.
  stack = pkgs.testers.runNixOSTest (import ./stack.nix { inherit nixosModule; });
  # Three hosts: two API hosts, one monitoring host (docs/fleet.md).
  fleet = pkgs.testers.runNixOSTest (import ./fleet.nix { inherit nixosModule; });
  # One host on the push path: nixpkgs' Prometheus 3 receiving OTLP from a
  # service and a trainer that are not scraped (docs/otlp.md).
  push = pkgs.testers.runNixOSTest (import ./push.nix { inherit nixosModule; });
}
