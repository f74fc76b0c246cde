# NixOS VM tests, collected for the flake's `checks`. Each test is a plain
# runNixOSTest module; `nixosModule` is the flake's nixosModules.default.
{ pkgs, nixosModule }:

{
  stack = pkgs.testers.runNixOSTest (import ./stack.nix { inherit nixosModule; });
}
