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
import shutil
import subprocess
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
    "runbooks": 5001,
}
COMPOSE_IMAGES = {"app": "mlwatch-service", "training-metrics": "mlwatch-trainer", "runbooks": "mlwatch-service"}
DATASOURCE_UID = "mlwatch-prometheus"
DASHBOARD_UIDS = {"mlwatch-training", "mlwatch-predict-api"}

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
# nix/lib/yaml.nix against PyYAML
# --------------------------------------------------------------------------


def check_compose_push(base_services: dict[str, dict]) -> None:
    """The push override: Prometheus with the receiver (and native histograms
    below 3.8, by the base file's image tag) on prometheus-otlp.yml, and every
    host of a pushed job (prometheus/otlp.yml) pushing to it."""
    try:
        import yaml
    except ImportError:
        check(False, "PyYAML is importable (apt-get install python3-yaml)")
        return
    override = yaml.safe_load(read("docker-compose.otlp.yml") or "{}") or {}
    overlay = yaml.safe_load(read("prometheus/otlp.yml") or "{}") or {}
    services = override.get("services", {})
    command = services.get("prometheus", {}).get("command", [])
    check("--web.enable-otlp-receiver" in command, "the push variant's Prometheus enables the OTLP receiver")
    check("--config.file=/etc/prometheus/prometheus-otlp.yml" in command
          and (REPO / "prometheus/prometheus-otlp.yml").is_file(),
          "the push variant's Prometheus reads prometheus/prometheus-otlp.yml (mounted with ./prometheus)")
    image = base_services.get("prometheus", {}).get("image", "")
    m = re.search(r":v?(\d+)\.(\d+)", image)
    if check(m is not None, f"compose's Prometheus image has a version tag ({image})"):
        older = (int(m.group(1)), int(m.group(2))) < (3, 8)
        check(("--enable-feature=native-histograms" in command) == older,
              f"native histograms flag {'set' if older else 'absent'} for {image} (needed before 3.8 only)")
    endpoint = "http://prometheus:9090/api/v1/otlp/v1/metrics"
    pushers = [s for s in base_services if s in ("app", "training-metrics") or s.startswith("app-")]
    check(set(overlay.get("pushed_jobs", [])) == {"ml-api", "model-training"},
          "prometheus/otlp.yml pushes the jobs of app* and training-metrics")
    for service in pushers:
        env = services.get(service, {}).get("environment", {})
        check(env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") == endpoint,
              f"compose service {service} pushes to {endpoint} in the push variant")
        check(str(env.get("MLWATCH_NO_SCRAPE")).lower() == "true",
              f"compose service {service} only pushes (MLWATCH_NO_SCRAPE) in the push variant")
    # The variables are ones the binaries read (clap's env names).
    flags = read("src/telemetry/otlp_args.rs") or ""
    for variable in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "MLWATCH_NO_SCRAPE"):
        check(f'env = "{variable}"' in flags, f"the binaries read {variable} (src/telemetry/otlp_args.rs)")


def check_yaml_reader(files: list[str]) -> None:
    """Evaluate the module's YAML reader on each file and compare with PyYAML."""
    try:
        import yaml  # PyYAML: Debian python3-yaml, or pip install pyyaml
    except ImportError:
        check(False, "PyYAML is importable (apt-get install python3-yaml)")
        return
    if shutil.which("nix-instantiate") is None:
        check(False, "nix-instantiate found (Debian package nix-bin)")
        return
    for rel in files:
        nix_value, error = nix_eval(f"(import {REPO}/nix/lib/yaml.nix).readFile {REPO}/{rel}")
        if error is not None:
            check(False, f"nix/lib/yaml.nix reads {rel} ({error[:300]})")
            continue
        py_value = yaml.safe_load((REPO / rel).read_text(encoding="utf-8"))
        check(nix_value == py_value, f"nix/lib/yaml.nix reads {rel} exactly as PyYAML does")


def nix_eval(expr: str):
    run = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
                         capture_output=True, text=True)
    if run.returncode != 0:
        errors = "\n".join(l for l in run.stderr.splitlines() if "nixbld" not in l)
        return None, errors.strip()[:600]
    return json.loads(run.stdout), None


def check_dashboard_constants() -> None:
    """nix/lib/dashboard-constants.jq rewrites the dashboards exactly as generate.py --out does."""
    if shutil.which("jq") is None:
        check(False, "jq found (Debian package jq)")
        return
    import tempfile
    runbook, mlflow = "https://runbooks.example.org/runbooks", "https://mlflow.example.org"
    with tempfile.TemporaryDirectory() as out:
        gen = subprocess.run([sys.executable, str(REPO / "grafana/generate.py"), "--out", out,
                              "--runbook-url", runbook, "--mlflow-url", mlflow], capture_output=True, text=True)
        if not check(gen.returncode == 0, f"grafana/generate.py --out writes dashboards ({gen.stderr.strip()[:200]})"):
            return
        for path in sorted((REPO / "grafana/provisioning/dashboards").glob("*.json")):
            run = subprocess.run(["jq", "--arg", "runbook_base", runbook, "--arg", "mlflow_url", mlflow,
                                  "-f", str(REPO / "nix/lib/dashboard-constants.jq"), str(path)],
                                 capture_output=True, text=True)
            ok = run.returncode == 0 and json.loads(run.stdout) == json.loads((Path(out) / path.name).read_text())
            check(ok, f"nix/lib/dashboard-constants.jq rewrites {path.name} as generate.py --out does")


def check_module_eval() -> None:
    """What the module hands nixpkgs' services equals the repo files, with only the named differences."""
    try:
        import yaml
    except ImportError:
        check(False, "PyYAML is importable (apt-get install python3-yaml)")
        return
    if shutil.which("nix-instantiate") is None:
        check(False, "nix-instantiate found (Debian package nix-bin)")
        return
    prom = yaml.safe_load((REPO / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    datasources = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8"))
    providers = yaml.safe_load((REPO / "grafana/provisioning/dashboards/dashboard.yml").read_text(encoding="utf-8"))
    rules = sorted(p.name for p in (REPO / "prometheus/rules").glob("*.yml"))
    for train in (True, False):
        got, error = nix_eval(f"import {REPO}/.ci/module-eval.nix {{ trainEnable = {str(train).lower()}; }}")
        if got is None:
            check(False, f"nix/module.nix evaluates (train.enable = {train}): {error}")
            continue
        check(True, f"nix/module.nix evaluates (train.enable = {train})")
        local = {"ml-api": ["127.0.0.1:9000"], "prometheus": ["127.0.0.1:9090"],
                 "model-training": ["127.0.0.1:8002"] if train else [], "alertmanager": ["127.0.0.1:9093"],
                 "mlflow": ["127.0.0.1:5000"]}
        expected_jobs = []
        for job in prom["scrape_configs"]:
            if not local.get(job["job_name"]):
                continue
            expected_jobs.append({**{k: v for k, v in job.items() if k not in ("static_configs", "file_sd_configs")},
                                  "static_configs": [{"targets": local[job["job_name"]]}]})
        check(got["scrapeConfigs"] == expected_jobs,
              f"module scrape jobs = prometheus.yml's with local targets (train.enable = {train})")
        expected_global = {**prom["global"], "external_labels": {
            **prom["global"].get("external_labels", {}), "runbook_base": "http://127.0.0.1:5002/runbooks"}}
        check(got["globalConfig"] == expected_global,
              "module global config = prometheus.yml's, external label runbook_base = services.mlwatch.runbookUrl")
        check(got["ruleFiles"] == [f"/nix/store/mlwatch-assets/share/mlwatch/prometheus/rules/{r}" for r in rules],
              f"module loads every rule file of prometheus/rules ({rules})")
        check(got["listenAddress"] == "127.0.0.1", "Prometheus listens on 127.0.0.1")
        check(got["alertmanagerFlags"] == ["--cluster.listen-address="], "Alertmanager gossip is off")
        check(got["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}],
                                         "alert_relabel_configs": prom["alerting"].get("alert_relabel_configs", [])}],
              "alerts go to the local Alertmanager with prometheus.yml's alert relabelling")
        expected_ds = [{**d, "url": "http://127.0.0.1:9090"} for d in datasources["datasources"]]
        check(got["grafanaDatasources"] == expected_ds, "module datasource = grafana's, url -> local Prometheus")
        expected_pv = [{**p, "options": {**p["options"],
                        "path": "/nix/store/mlwatch-dashboards"}}
                       for p in providers["providers"]]
        check(got["grafanaProviders"] == expected_pv,
              "module dashboard provider = grafana's, path -> the dashboards with this host's constants")
        check("runbooks --assets /nix/store/mlwatch-assets/share/mlwatch --listen 127.0.0.1:5002" in (got["runbooksExec"] or ""),
              "mlwatch-runbooks serves the assets' runbooks on runbooks.address:port")
        check(got["trainEnvironment"].get("MLFLOW_TRACKING_URI") == "http://127.0.0.1:5000" if train else True,
              "with mlflow.enable the trainer logs to the local MLflow server")
        train_units = {"mlwatch-train", "mlwatch-train-initial"}
        check(train_units <= set(got["units"]) if train else not (train_units & set(got["units"])),
              f"training units present iff train.enable ({sorted(got['units'])})")
        if train:
            check("--listen 127.0.0.1:8002" in (got["trainExec"] or ""), "the trainer's /metrics listens on 127.0.0.1")
        check(got["firewall"] == [9000], f"openFirewall opens only the API port (found {got['firewall']})")
    # The push path (docs/otlp.md): services.mlwatch.otlp.enable, with
    # nixpkgs' 3.14 and with a 3.x older than 3.8 (native histograms flag).
    overlay = yaml.safe_load((REPO / "prometheus/otlp.yml").read_text(encoding="utf-8"))
    scrape, _ = nix_eval(f"import {REPO}/.ci/module-eval.nix {{ }}")
    for version, native in (("3.14.0", False), ("3.5.0", True)):
        got, error = nix_eval(f'import {REPO}/.ci/module-eval.nix {{ otlpEnable = true; prometheusVersion = "{version}"; }}')
        if got is None or scrape is None:
            check(False, f"nix/module.nix evaluates with otlp.enable (Prometheus {version}): {error}")
            continue
        expected_flags = ["--web.enable-otlp-receiver"] + (["--enable-feature=native-histograms"] if native else [])
        check(got["prometheusFlags"] == expected_flags,
              f"otlp.enable: Prometheus {version} runs with {expected_flags} (found {got['prometheusFlags']})")
        config = json.loads(got["prometheusConfigText"] or "{}")
        check(config.get("otlp") == overlay["otlp"] and config.get("storage") == overlay["storage"],
              "otlp.enable: the Prometheus config carries prometheus/otlp.yml's otlp and storage blocks")
        expected = [j for j in scrape["scrapeConfigs"] if j["job_name"] not in overlay["pushed_jobs"]]
        check(config.get("scrape_configs") == expected,
              f"otlp.enable: the scrape path's jobs minus the pushed ones {overlay['pushed_jobs']}")
        check(config.get("global") == scrape["globalConfig"] and config.get("rule_files") == scrape["ruleFiles"]
              and config.get("alerting") == {"alertmanagers": scrape["alertmanagers"]},
              "otlp.enable: global config, rule files and alerting as on the scrape path")
        endpoint = "--otlp-endpoint http://127.0.0.1:9090/api/v1/otlp/v1/metrics --otlp-export-interval 15s --no-scrape"
        check(endpoint in (got["serveExec"] or "") and endpoint in (got["trainExec"] or ""),
              "otlp.enable: the service and the trainer push to the local receiver, unscraped")
    check(scrape is not None and scrape["prometheusFlags"] == [] and scrape["prometheusConfigText"] is None
          and "--otlp-endpoint" not in (scrape["serveExec"] or ""),
          "without otlp.enable nothing of the push path is set")

    # serve.modelUri: the registry instead of the file (docs/mlflow.md).
    got, error = nix_eval(f'import {REPO}/.ci/module-eval.nix {{ modelUri = "models:/diabetes@champion"; }}')
    if got is None:
        check(False, f"nix/module.nix evaluates with serve.modelUri: {error}")
    else:
        serve_exec = got["serveExec"] or ""
        check("--model-uri models:/diabetes@champion --mlflow-tracking-uri http://127.0.0.1:5000 --model-poll-interval 30s"
              in serve_exec and "--model-path" not in serve_exec,
              f"serve.modelUri: the service loads from the local MLflow's registry, not the file ({serve_exec})")
        check("mlwatch-reload" not in got["pathUnits"], "serve.modelUri: no path watcher on the model file")
    check(scrape is not None and "mlwatch-reload" in scrape["pathUnits"] and "--model-path" in (scrape["serveExec"] or ""),
          "without serve.modelUri the service loads the file and reloads when it changes")

    # Roles (docs/fleet.md): a monitoring-only host, and one of an HA pair.
    got, error = nix_eval(f'import {REPO}/.ci/module-eval.nix {{ serveEnable = false; trainEnable = false; '
                          f'apiTargets = [ "api1:9000" "api2:9000" ]; peers = [ "monitor2:9094" ]; replica = "monitor1"; }}')
    if got is None:
        check(False, f"nix/module.nix evaluates for a monitoring host: {error}")
        return
    check(not {"mlwatch-serve", "mlwatch-train"} & set(got["units"]), "a monitoring host runs no API and no trainer")
    api_job = next((j for j in got["scrapeConfigs"] if j["job_name"] == "ml-api"), None)
    check(bool(api_job) and api_job["static_configs"] == [{"targets": ["api1:9000", "api2:9000"]}],
          "a monitoring host scrapes prometheus.apiTargets")
    check("model-training" not in {j["job_name"] for j in got["scrapeConfigs"]}, "no trainer targets: no model-training job")
    check(got["globalConfig"].get("external_labels") == {"runbook_base": "http://127.0.0.1:5002/runbooks", "replica": "monitor1"},
          "prometheus.replica adds the replica external label beside runbook_base")
    check(got["alertmanagers"][0]["alert_relabel_configs"][-1:] == [{"action": "labeldrop", "regex": "replica"}],
          "an HA member drops its replica label from the alerts it sends (Alertmanager dedups identical label sets)")
    check(got["alertmanagerFlags"] == ["--cluster.listen-address=0.0.0.0:9094", "--cluster.peer=monitor2:9094"],
          f"alertmanager.peers turns gossip on with those peers (found {got['alertmanagerFlags']})")
    check(got["firewall"] == [9094], f"an HA Alertmanager opens only its gossip port (found {got['firewall']})")


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

    # The default runbook base (dashboards' constant, MLWATCH_RUNBOOK_URL) is
    # the page the compose service `runbooks` publishes.
    dashboard_base = None
    for path in sorted((REPO / "grafana/provisioning/dashboards").glob("*.json")):
        for var in json.loads(path.read_text(encoding="utf-8")).get("templating", {}).get("list", []):
            if var.get("name") == "runbook_base":
                dashboard_base = var.get("query")
    check(dashboard_base == "http://127.0.0.1:5001/runbooks"
          and "${MLWATCH_RUNBOOK_URL:-http://127.0.0.1:5001/runbooks}" in compose_text
          and '"127.0.0.1:5001:5001"' in compose_text,
          f"compose serves the runbooks where the default runbook base points ({dashboard_base})")

    print("== docker-compose.otlp.yml (the push variant, docs/otlp.md)")
    check_compose_push(services)

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

    print("== nix/source-set.json")
    source_set = json.loads(read("nix/source-set.json") or "{}")
    for kind in ("package", "assets"):
        for rel in source_set.get(kind, []):
            check((REPO / rel).exists(), f"source set {kind}: {rel} exists")
    assets_set = source_set.get("assets", [])

    def in_assets(rel: str) -> bool:
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") or a.startswith(rel.rstrip("/") + "/")
                   for a in assets_set)

    for nix_file in sorted(REPO.glob("nix/**/*.nix")) + [REPO / "flake.nix"]:
        for rel in re.findall(r"\$\{assets\}/([A-Za-z0-9._\-/]*[A-Za-z0-9_\-])", nix_file.read_text(encoding="utf-8")):
            check(in_assets(rel), f"{nix_file.relative_to(REPO)}: ${{assets}}/{rel} is in the assets derivation (nix/source-set.json)")

    print("== nix/lib/yaml.nix reads the module's inputs as PyYAML does")
    check_yaml_reader([
        "prometheus/prometheus.yml",
        "prometheus/otlp.yml",
        "prometheus/alertmanager.yml",
        "grafana/provisioning/datasources/prometheus.yml",
        "grafana/provisioning/dashboards/dashboard.yml",
    ])

    print("== nix/lib/dashboard-constants.jq against grafana/generate.py --out")
    check_dashboard_constants()

    print("== nix/module.nix, evaluated without nixpkgs (.ci/module-eval.nix)")
    check_module_eval()

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
    check(not re.search(r"\b(9090|9093)\b", "\n".join(l for l in module.splitlines() if "example =" not in l)),
          "module does not hard-code 9090/9093 (examples aside)")
    # No copies: the module reads the repository files and names its differences.
    for needle in ("yaml.readFile ../prometheus/prometheus.yml",
                   "yaml.readFile ../grafana/provisioning/datasources/prometheus.yml",
                   "yaml.readFile ../grafana/provisioning/dashboards/dashboard.yml",
                   "builtins.readFile ../prometheus/alertmanager.yml",
                   "builtins.readDir ../prometheus/rules"):
        check(needle in module, f"module derives from the repo: {needle}")
    for copied in ("job_name =", "scrape_interval =", "scrape_timeout =", "folder =", "disableDeletion",
                   "updateIntervalSeconds", "foldersFromFilesStructure", "timeInterval", "uid =",
                   "ml_alerts.yml", "ml_recording.yml"):
        check(copied not in module, f"module has no copy of `{copied}` (it comes from prometheus/ or grafana/)")
    block = re.search(r"localTargets = \{(.*?)\n  \};", module, re.S)
    local_jobs = set(re.findall(r'"([\w-]+)" =', block.group(1))) if block else set()
    check(local_jobs == set(jobs), f"module points every prometheus.yml job at this host (localTargets {sorted(local_jobs)})")
    block = re.search(r"datasourceOverrides = \{(.*?)\n  \};", module, re.S)
    overridden = set(re.findall(r"^\s*(\w+) =", block.group(1), re.M)) if block else None
    check(overridden == {"url"}, f"the module's only datasource difference is its url (found {overridden})")
    block = re.search(r"providerOverrides = provider: \{(.*?)\n  \};", module, re.S)
    check(bool(block) and re.findall(r"(\w+) = ", block.group(1)) == ["options", "path"],
          "the module's only dashboard-provider difference is options.path (the store path of the dashboards)")
    check('"--cluster.listen-address="' in module, "module turns Alertmanager gossip off")
    check(not re.search(r"types\.path\b", module), "module has no types.path option (a path literal would copy secrets into the store)")
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
    check("builtins.readDir ../../prometheus/rules" in test, "VM test reads the rule groups and alerts it expects from prometheus/rules")
    check("InvalidInputSurge" in test and "InvalidInputSurge" in read("prometheus/rules/ml_alerts.yml"),
          "the alert the VM test fires exists")
    for uid in DASHBOARD_UIDS | {DATASOURCE_UID}:
        check(uid in test, f"VM test checks uid {uid}")
    expected_jobs = json.dumps(sorted(JOBS)).replace('"', '\\"')
    check(expected_jobs.strip("[]") in test, f"VM test expects exactly the scrape jobs {sorted(JOBS)}")

    print("== nix/tests/fleet.nix")
    fleet = read("nix/tests/fleet.nix")
    check("ml-api" in jobs and '"api1:9000" "api2:9000"' in fleet and "[\\\"api1:9000\\\", \\\"api2:9000\\\"]" in fleet,
          "fleet VM test: the monitor's apiTargets are the API hosts on serve.port 9000, and the test expects exactly them")
    check("builtins.readDir ../../prometheus/rules" in fleet, "fleet VM test reads the rule groups it expects from prometheus/rules")
    check("MlApiDown" in fleet and "MlApiDown" in read("prometheus/rules/ml_alerts.yml"), "the alert the fleet VM test fires exists")
    check("fleet = pkgs.testers.runNixOSTest" in read("nix/tests/default.nix"), "the fleet VM test is one of the flake's checks")

    print("== nix/tests/push.nix")
    push = read("nix/tests/push.nix")
    overlay_jobs = set(re.findall(r"^  - (\S+)$", read("prometheus/otlp.yml"), re.M))
    unscraped = sorted(set(JOBS) - overlay_jobs - {"mlflow"})
    check("push = pkgs.testers.runNixOSTest" in read("nix/tests/default.nix"), "the push VM test is one of the flake's checks")
    check(re.search(r"otlp = \{\s*enable = true;", push) is not None, "push VM test enables services.mlwatch.otlp")
    check(f"jobs == {json.dumps(unscraped)}" in push,
          f"push VM test expects only the jobs nobody pushes to be scraped ({unscraped})")
    check("builtins.readDir ../../grafana/provisioning/dashboards" in push, "push VM test reads every dashboard query from grafana/")
    check("MlApiDown" in push, "push VM test fires MlApiDown for a stopped pusher")

    print()
    if failures:
        print(f"consistency: {len(failures)} check(s) failed")
        return 1
    print("consistency: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
