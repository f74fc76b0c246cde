#!/usr/bin/env python3
"""Cross-file consistency of the deployment files (Python standard library only).

The same facts -- ports, scrape job names, rule files, datasource and dashboard
uids, image names -- are written down in prometheus/, grafana/,
docker-compose.yml, Dockerfile and nix/. Nothing can evaluate the Nix files
here, so this script reads them as text and checks that:

  * every repository path a .nix file refers to exists (path literals, and
    `share/mlwatch/...` paths that nix/package.nix installs from the repo);
  * ports and job names agree between prometheus/prometheus.yml,
    docker-compose.yml, nix/module.nix, nix/images.nix, the Dockerfile and
    the VM test (9000 ml-api, 8002 model-training, 9090 prometheus,
    9093 alertmanager, 3000 grafana, 5000 mlflow);
  * the module loads exactly the rule files in prometheus/rules/, can
    substitute the webhook URL of prometheus/alertmanager.yml, and
    provisions the datasource uid the dashboards use;
  * the uids and alert names the VM test asserts exist.

Exit status 1 when any check fails; every failure is printed.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# job name -> (Compose host, container port)
JOBS = {
    "ml-api": ("app", 9000),
    "prometheus": ("localhost", 9090),
    "model-training": ("training-metrics", 8002),
    "alertmanager": ("alertmanager", 9093),
    "mlflow": ("mlflow", 5000),
}
# Compose service -> container port
COMPOSE_PORTS = {
    "app": 9000,
    "training-metrics": 8002,
    "prometheus": 9090,
    "alertmanager": 9093,
    "grafana": 3000,
    "mlflow": 5000,
}
COMPOSE_IMAGES = {"app": "mlwatch-service", "training-metrics": "mlwatch-trainer"}
DATASOURCE_UID = "mlwatch-prometheus"
DASHBOARD_UIDS = {"mlwatch-training", "mlwatch-predict-api"}
VM_TEST_ALERTS = {"InvalidInputSurge", "MlApiDown", "ModelNotLoaded"}

failures: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(("ok:   " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)
    return ok


def read(rel: str) -> str:
    path = REPO / rel
    if not path.is_file():
        check(False, f"{rel} exists")
        return ""
    return path.read_text(encoding="utf-8")


def strip_yaml_comment(line: str) -> str:
    # Good enough for these files: no '#' inside quoted values.
    return re.sub(r"(^|\s)#.*$", "", line).rstrip()


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


# --------------------------------------------------------------------------
# Paths referenced from Nix files
# --------------------------------------------------------------------------

PATH_LITERAL = re.compile(r"(?<![\w/.\-])(\.\.?/[A-Za-z0-9._+\-/]*[A-Za-z0-9._+\-])")
SHARE_PATH = re.compile(r"(?:\$\{assets\}|/share/mlwatch)/([A-Za-z0-9._\-/]+[A-Za-z0-9_\-])")


def check_nix_paths() -> None:
    nix_files = sorted(p for p in REPO.rglob("*.nix") if ".git" not in p.parts and "target" not in p.parts)
    for nix_file in nix_files:
        rel_file = nix_file.relative_to(REPO)
        for lineno, line in enumerate(nix_file.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            code = line
            for match in PATH_LITERAL.finditer(code):
                literal = match.group(1)
                target = (nix_file.parent / literal).resolve()
                optional = "maybeMissing" in code
                if optional and not target.exists():
                    print(f"ok:   {rel_file}:{lineno}: {literal} is optional (fileset.maybeMissing) and absent")
                    continue
                check(target.exists(), f"{rel_file}:{lineno}: path {literal} exists")
            for match in SHARE_PATH.finditer(code):
                rel = match.group(1)
                check((REPO / rel).exists(), f"{rel_file}:{lineno}: share/mlwatch/{rel} comes from repo path {rel}")


# --------------------------------------------------------------------------
# prometheus/prometheus.yml
# --------------------------------------------------------------------------


def parse_prometheus_yml(text: str) -> tuple[dict[str, dict], list[str]]:
    """Return ({job: {"targets": [...], "scrape_interval": str|None}}, alertmanager targets)."""
    jobs: dict[str, dict] = {}
    alerting_targets: list[str] = []
    section = None
    job = None
    for raw in text.splitlines():
        line = strip_yaml_comment(raw)
        if not line.strip():
            continue
        top = re.match(r"^([A-Za-z_]+):", line)
        if top:
            section = top.group(1)
            job = None
            continue
        if section == "scrape_configs":
            m = re.match(r"^\s*-?\s*job_name:\s*(.+)$", line)
            if m:
                job = unquote(m.group(1))
                jobs[job] = {"targets": [], "scrape_interval": None, "scrape_timeout": None}
                continue
            if job is None:
                continue
            m = re.match(r"^\s*(scrape_interval|scrape_timeout):\s*(\S+)", line)
            if m:
                jobs[job][m.group(1)] = unquote(m.group(2))
            if "targets:" in line or line.strip().startswith("- "):
                jobs[job]["targets"] += re.findall(r"[A-Za-z0-9.\-]+:\d+", line)
        elif section == "alerting":
            alerting_targets += re.findall(r"[A-Za-z0-9.\-]+:\d+", line)
    return jobs, alerting_targets


def global_interval(text: str) -> str | None:
    m = re.search(r"^global:\s*\n((?:[ \t]+.*\n?)*)", text, re.M)
    if not m:
        return None
    g = re.search(r"scrape_interval:\s*(\S+)", m.group(1))
    return unquote(g.group(1)) if g else None


# --------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------


def parse_compose(text: str) -> dict[str, dict]:
    services: dict[str, dict] = {}
    in_services = False
    service = None
    key = None
    for raw in text.splitlines():
        line = strip_yaml_comment(raw)
        if not line.strip():
            continue
        if re.match(r"^\S", line):
            in_services = line.startswith("services:")
            service = None
            continue
        if not in_services:
            continue
        m = re.match(r"^  ([A-Za-z0-9_.\-]+):\s*$", line)
        if m:
            service = m.group(1)
            services[service] = {"ports": [], "image": None, "volumes": []}
            key = None
            continue
        if service is None:
            continue
        m = re.match(r"^    ([A-Za-z_]+):\s*(.*)$", line)
        if m:
            key = m.group(1)
            if key == "image":
                services[service]["image"] = unquote(m.group(2))
            continue
        m = re.match(r"^\s+-\s+(.+)$", line)
        if m and key in ("ports", "volumes"):
            services[service][key].append(unquote(m.group(1)))
    return services


def container_port(mapping: str) -> int:
    return int(mapping.split("/")[0].split(":")[-1])


# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------


def main() -> int:
    print("== paths referenced from nix files")
    check_nix_paths()

    print("== prometheus/prometheus.yml")
    prom_text = read("prometheus/prometheus.yml")
    jobs, alerting_targets = parse_prometheus_yml(prom_text)
    default_interval = global_interval(prom_text) or "1m"
    check(set(jobs) == set(JOBS), f"scrape jobs are {sorted(JOBS)} (found {sorted(jobs)})")
    for job, (host, port) in JOBS.items():
        targets = jobs.get(job, {}).get("targets", [])
        check(targets == [f"{host}:{port}"], f"job {job} scrapes {host}:{port} (found {targets})")
    check(alerting_targets == ["alertmanager:9093"], f"alerting goes to alertmanager:9093 (found {alerting_targets})")

    print("== docker-compose.yml")
    compose_text = read("docker-compose.yml")
    services = parse_compose(compose_text)
    for service, port in COMPOSE_PORTS.items():
        ports = [container_port(p) for p in services.get(service, {}).get("ports", [])]
        check(ports == [port], f"compose service {service} publishes container port {port} (found {ports})")
    for job, (host, _port) in JOBS.items():
        if host != "localhost":
            check(host in services, f"prometheus.yml target host {host} (job {job}) is a compose service")
    for service, image in COMPOSE_IMAGES.items():
        found = services.get(service, {}).get("image")
        check(found == f"{image}:latest", f"compose service {service} uses image {image}:latest (found {found})")
    for service, spec in services.items():
        for volume in spec["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                check((REPO / source).exists(), f"compose service {service} mounts existing {source}")
    check(
        re.search(r"^\.env$", read(".gitignore"), re.M) is not None and (REPO / ".env.example").is_file(),
        ".env is git-ignored and .env.example exists",
    )

    print("== grafana/")
    ds_text = read("grafana/provisioning/datasources/prometheus.yml")
    ds_uids = re.findall(r"^\s*uid:\s*(\S+)", ds_text, re.M)
    check([unquote(u) for u in ds_uids] == [DATASOURCE_UID], f"datasource uid is {DATASOURCE_UID}")
    check("http://prometheus:9090" in ds_text, "datasource url is the compose service prometheus:9090")
    dashboard_uids = set()
    for path in sorted((REPO / "grafana/provisioning/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        dashboard_uids.add(dashboard.get("uid"))
        used = set(re.findall(r'"uid":\s*"([^"]+)"', json.dumps(dashboard.get("panels", []))))
        check(used <= {DATASOURCE_UID, "-- Grafana --", "grafana"} | {"${datasource}", "$datasource"},
              f"{path.name} panels use only datasource uid {DATASOURCE_UID} (found {sorted(used)})")
    check(DASHBOARD_UIDS <= dashboard_uids, f"dashboards {sorted(DASHBOARD_UIDS)} exist (found {sorted(dashboard_uids)})")

    print("== nix/module.nix")
    module = read("nix/module.nix")
    m = re.search(r"serve = \{.*?port = mkOption \{.*?default = (\d+);", module, re.S)
    check(bool(m) and int(m.group(1)) == 9000, "serve.port defaults to 9000")
    m = re.search(r"train = \{.*?port = mkOption \{.*?default = (\d+);", module, re.S)
    check(bool(m) and int(m.group(1)) == 8002, "train.port defaults to 8002")
    check(re.search(r"http_port = mkDefault 3000;", module) is not None, "Grafana http_port defaults to 3000")
    # 9090 and 9093 are nixpkgs' defaults of services.prometheus.port and
    # services.prometheus.alertmanager.port; the module must use those options.
    check("config.services.prometheus.port" in module, "module targets config.services.prometheus.port (9090)")
    check("config.services.prometheus.alertmanager.port" in module,
          "module targets config.services.prometheus.alertmanager.port (9093)")
    check(not re.search(r"\b(9090|9093)\b", module), "module does not hard-code 9090/9093")
    scrapes = dict(re.findall(r'\(scrape "([\w-]+)" "(\w+)"', module))
    check(set(scrapes) == set(jobs), f"module scrape jobs equal prometheus.yml's (module {sorted(scrapes)})")
    for job, interval in scrapes.items():
        expected = (jobs.get(job) or {}).get("scrape_interval") or default_interval
        check(interval == expected, f"module job {job} scrape_interval {interval} equals prometheus.yml's {expected}")
    timeout = (jobs.get("model-training") or {}).get("scrape_timeout")
    check(timeout is None or f'scrape_timeout = "{timeout}"' in module, f"model-training scrape_timeout {timeout} matches")
    rule_files = set(re.findall(r"/prometheus/rules/([\w.\-]+\.yml)", module))
    repo_rules = {p.name for p in (REPO / "prometheus/rules").glob("*.yml")}
    check(rule_files == repo_rules, f"module ruleFiles equal prometheus/rules/*.yml ({sorted(repo_rules)})")
    check(f'uid = "{DATASOURCE_UID}"' in module, f"module provisions datasource uid {DATASOURCE_UID}")
    m = re.search(r"timeInterval:\s*\"?([\w.]+)", ds_text)
    check(bool(m) and f'jsonData.timeInterval = "{m.group(1)}";' in module,
          f"module datasource timeInterval equals grafana's ({m.group(1) if m else None})")
    check('"${assets}/grafana/provisioning/dashboards"' in module, "module's dashboard provider reads grafana/provisioning/dashboards")
    am_text = read("prometheus/alertmanager.yml")
    url_lines = [line for line in am_text.splitlines() if re.fullmatch(r"\s*(- )?url:\s*.*", line)]
    check(len(url_lines) >= 1, "prometheus/alertmanager.yml has a webhook `url:` line for alertmanager.webhookUrl")

    print("== nix/images.nix and Dockerfile")
    images = read("nix/images.nix")
    for name, port, verb in (("mlwatch-service", 9000, "serve"), ("mlwatch-trainer", 8002, "train")):
        block = re.search(rf'name = "{name}";\s*port = (\d+);\s*args = \[([^\]]*)\]', images)
        check(bool(block) and int(block.group(1)) == port and f'"0.0.0.0:{port}"' in block.group(2)
              and f'"{verb}"' in block.group(2), f"image {name}: {verb}, port {port}, listens on 0.0.0.0:{port}")
    dockerfile = read("Dockerfile")
    for stage, port, verb in (("trainer", 8002, "train"), ("service", 9000, "serve")):
        block = re.search(rf"^FROM runtime AS {stage}\n(.*?)(?=^FROM |\Z)", dockerfile, re.S | re.M)
        body = block.group(1) if block else ""
        check(f"EXPOSE {port}" in body and f'"0.0.0.0:{port}"' in body and f'"{verb}"' in body,
              f"Dockerfile stage {stage}: {verb}, EXPOSE {port}, listens on 0.0.0.0:{port}")
    for service, target in (("app", "service"), ("training-metrics", "trainer")):
        check(re.search(rf"^  {re.escape(service)}:\n(?:    .*\n|      .*\n)*?      target: {target}\n", compose_text, re.M)
              is not None, f"compose service {service} builds Dockerfile target {target}")

    print("== nix/tests/stack.nix")
    test = read("nix/tests/stack.nix")
    for unit, port in (("mlwatch-serve", 9000), ("prometheus", 9090), ("alertmanager", 9093), ("grafana", 3000)):
        check(f'("{unit}.service", {port})' in test, f"VM test waits for {unit} on {port}")
    check("wait_for_open_port(8002)" in test, "VM test waits for the trainer on 8002")
    alerts_text = read("prometheus/rules/ml_alerts.yml")
    alert_names = set(re.findall(r"^\s*-\s*alert:\s*(\S+)", alerts_text, re.M))
    check(VM_TEST_ALERTS <= alert_names, f"alerts {sorted(VM_TEST_ALERTS)} exist in ml_alerts.yml")
    for uid in DASHBOARD_UIDS | {DATASOURCE_UID}:
        check(uid in test, f"VM test checks uid {uid}")
    expected_jobs = json.dumps(sorted(JOBS)).replace('"', '\\"')
    check(expected_jobs.strip("[]") in test, f"VM test expects exactly the scrape jobs {sorted(JOBS)}")

    print()
    if failures:
        print(f"consistency: {len(failures)} check(s) failed")
        return 1
    print("consistency: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
