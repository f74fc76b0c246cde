#!/usr/bin/env python3
"""Evaluates every ```nix block of the given documents (default: docs/nix.md)
with .ci/module-eval.nix, so that a document's configuration cannot drift
from nix/module.nix: an option that does not exist, a value of the wrong
type, a required option left without a value, or a failed assertion fails
the check, naming the document's line.

Each block is one configuration: a NixOS module (the module is imported for
it) or a flake whose nixosConfigurations import mlwatch.nixosModules.default.
A flake's `./configuration.nix` (the machine's own configuration, not part
of the document) is an empty module here.

    .ci/nix-doc-snippets.py [DOC.md ...]
    .ci/nix-doc-snippets.py --self-test   # the check refuses what it must
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def nix_blocks(text: str) -> list[tuple[int, str]]:
    """(first line of the code, code) of every ```nix block."""
    blocks, current, start, indent = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if current is None:
            if fence and fence.group(2) == "nix":
                current, start, indent = [], number + 1, fence.group(1)
        elif fence and not fence.group(2):
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        else:
            current.append(line[len(indent):] if line.startswith(indent) else line)
    if current is not None:
        raise SystemExit(f"unterminated ```nix block starting at line {start - 1}")
    return blocks


def evaluate(code: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        snippet = Path(tmp) / "snippet.nix"
        snippet.write_text(code, encoding="utf-8")
        (Path(tmp) / "configuration.nix").write_text("{ }\n", encoding="utf-8")
        run = subprocess.run(
            ["nix-instantiate", "--eval", "--strict", "--json", str(REPO / ".ci/module-eval.nix"),
             "--arg", "snippet", str(snippet)],
            capture_output=True, text=True)
    # Debian's nix-bin warns about the missing nixbld group on every call.
    stderr = "\n".join(line for line in run.stderr.splitlines() if "nixbld" not in line).strip()
    if run.returncode != 0:
        return False, stderr
    hosts = json.loads(run.stdout)
    return True, ", ".join(
        f"{name}: units {sorted(host['systemd']['services'])}, "
        f"TCP {host['networking']['firewall']['allowedTCPPorts']}"
        + (f", Prometheus listen {host['services']['prometheus']['listenAddress']}"
           if host['services']['prometheus']['enable'] else "")
        for name, host in hosts.items())


# Configurations the check must refuse, each with what the refusal says.
# The first two are the roles table of docs/nix.md as it once was.
MUST_FAIL = [
    ("the monitoring host without Grafana's secret files",
     '{ services.mlwatch = { enable = true; serve.enable = false; prometheus = { enable = true; '
     'apiTargets = [ "api-1:9000" ]; trainTargets = [ "trainer:8002" ]; }; alertmanager.enable = true; '
     'grafana.enable = true; }; }',
     "grafana.adminPasswordFile' was accessed but has no value defined"),
    ("an HA member whose Alertmanager port stays closed",
     '{ services.mlwatch = { enable = true; serve.enable = false; prometheus = { enable = true; '
     'replica = "mon-1"; alertmanagerTargets = [ "mon-1:9093" "mon-2:9093" ]; }; '
     'alertmanager = { enable = true; peers = [ "mon-2:9094" ]; }; }; '
     'services.prometheus.alertmanager.listenAddress = "0.0.0.0"; }',
     "its port 9093 is closed in the firewall"),
    ("an HA member whose Alertmanager listens on loopback",
     '{ services.mlwatch = { enable = true; alertmanager = { enable = true; peers = [ "mon-2:9094" ]; }; }; '
     'services.prometheus.alertmanager.openFirewall = true; }',
     "but it listens on 127.0.0.1 only"),
    ("a misspelt option of the module",
     '{ services.mlwatch = { enable = true; serve.prot = 9001; }; }',
     "`services.mlwatch.serve.prot' does not exist"),
    ("a misspelt nixpkgs option",
     '{ services.prometheus.alertmanager.openFirewal = true; }',
     "`services.prometheus.alertmanager.openFirewal' does not exist"),
    ("a secret given as a Nix path literal",
     '{ services.mlwatch = { enable = true; serve.adminTokenFile = ./token; }; }',
     "is not of type `null or absolute path outside the Nix store"),
    ("a value of the wrong type",
     '{ services.mlwatch = { enable = true; serve.port = "9000"; }; }',
     "`services.mlwatch.serve.port' is not of type `16 bit unsigned integer"),
    ("two conflicting plain definitions",
     '{ imports = [ { services.mlwatch.serve.address = "10.0.0.1"; } ]; '
     'services.mlwatch = { enable = true; serve.address = "10.0.0.2"; }; }',
     "has conflicting definition values"),
    ("a flake whose host does not import the module",
     '{ outputs = { nixpkgs, ... }: { nixosConfigurations.h = nixpkgs.lib.nixosSystem '
     '{ system = "x86_64-linux"; modules = [ { services.mlwatch.enable = true; } ]; }; }; }',
     "does not import mlwatch.nixosModules.default"),
]


def self_test() -> int:
    """Every configuration of MUST_FAIL is refused, for its reason; a plain
    definition beats the module's mkDefault."""
    failed = 0
    for what, code, expected in MUST_FAIL:
        ok, detail = evaluate(code)
        good = not ok and expected in detail
        print(f"{'ok:  ' if good else 'FAIL:'} refused: {what}"
              + ("" if good else f" (expected an error containing {expected!r}, got: {detail})"))
        failed += not good
    ok, detail = evaluate('{ services.mlwatch.enable = true; services.mlwatch.prometheus.enable = true; '
                          'services.prometheus.listenAddress = "10.0.0.1"; }')
    good = ok and "listen 10.0.0.1" in detail
    print(f"{'ok:  ' if good else 'FAIL:'} a plain definition overrides the module's mkDefault ({detail})")
    failed += not good
    return failed


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        failed = self_test()
        print(f"nix snippet check, self-test: {failed} failed" if failed else "nix snippet check, self-test: passed")
        return 1 if failed else 0
    docs = [Path(a) for a in argv] or [REPO / "docs/nix.md"]
    failed = 0
    for doc in docs:
        name = doc.resolve().relative_to(REPO) if doc.resolve().is_relative_to(REPO) else doc
        blocks = nix_blocks(doc.read_text(encoding="utf-8"))
        if not blocks:
            print(f"FAIL: {name} has no ```nix block to evaluate")
            failed += 1
        for line, code in blocks:
            ok, detail = evaluate(code)
            print(f"{'ok:  ' if ok else 'FAIL:'} {name}:{line}: {detail}")
            failed += not ok
    print(f"nix snippets: {failed} failed" if failed else "nix snippets: all evaluate")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
