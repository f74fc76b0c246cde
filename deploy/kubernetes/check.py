#!/usr/bin/env python3
"""Check the Kubernetes base offline: what a cluster would refuse, and what
would silently not work.

No cluster runs here, so this checks what one would check, and what it would
accept but get wrong:

  core      every core object (Deployment, Service, ...) against the
            OpenAPI schemas of Kubernetes K8S_VERSION, strictly (an unknown
            field is an error), with kubernetes-validate;
  crd       every prometheus-operator object against the openAPIV3Schema of
            its CRD (v0.93.0, from ../shared/k8s-crds, beside the checkout or the one it
            was cloned from, or $MLWATCH_K8S_CRDS). Those schemas never set
            additionalProperties: false (the API server prunes or, with
            strict field validation, rejects unknown fields of a structural
            schema), so besides jsonschema validation an own walk rejects
            every key that the schema's `properties` do not list, unless
            the schema allows more (additionalProperties or
            x-kubernetes-preserve-unknown-fields);
  rules     the groups of each PrometheusRule equal those of its source file
            in prometheus/rules; `promtool check rules` and the promtool unit
            tests of tests/prometheus run on the groups extracted from the
            objects (not on the sources);
  dashboards the ConfigMaps labelled grafana_dashboard hold exactly the files
            of grafana/provisioning/dashboards, byte for byte;
  wiring    selectors and names agree: Service selector -> the Deployment's
            pods, ServiceMonitor selector -> the Service's labels and port,
            PodMonitor -> the trainer's pods and port, PDB and NetworkPolicy
            -> their pods, probe and policy ports -> container ports,
            ConfigMap keys that env refers to exist, the scrape job names
            are prometheus/prometheus.yml's, every pod meets Pod Security
            "restricted", the images are the repository's and the containers
            listen on the port each image exposes (nix/images.nix).

Input: `--rendered FILE` (the output of `kubectl kustomize`), or, without a
renderer, the base itself: base/kustomization.yaml's `resources` list is read
directly, and the base may use no other kustomize feature (any other key is
an error), so both readings give the same objects.

`--skip-promtool` leaves out the promtool part (for the unit tests,
test_check.py, which mutate objects and expect a failure).

Needs PyYAML, jsonschema and kubernetes-validate (.ci/k8s-checks.sh installs
them, pinned, into target/k8s-venv) and promtool on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BASE = HERE / "base"
# prometheus-operator v0.93.0's CRDs (example/prometheus-operator-crd/ of
# its repository): data the checks read, not part of the project, so they
# are not copied into it. This workplace lays them beside every checkout
# (../shared/k8s-crds); elsewhere point MLWATCH_K8S_CRDS at a directory
# holding the three files.


def default_crds() -> Path:
    """../shared/k8s-crds beside this checkout, or, for a clone of a local
    checkout (CI runs on a fresh clone, wherever it is made), beside the
    checkout it was cloned from."""
    beside = ROOT.parent / "shared" / "k8s-crds"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "remote", "get-url", "origin"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return beside
    origin = Path(origin.removeprefix("file://"))
    if origin.is_absolute():
        cloned_from = origin.resolve().parent / "shared" / "k8s-crds"
        if cloned_from.is_dir():
            return cloned_from
    return beside


CRDS = Path(os.environ["MLWATCH_K8S_CRDS"]) if os.environ.get("MLWATCH_K8S_CRDS") else default_crds()
CRD_FILES = ("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_podmonitors.yaml",
             "monitoring.coreos.com_prometheusrules.yaml")
RULES_DIR = ROOT / "prometheus" / "rules"
RULE_TESTS = ROOT / "tests" / "prometheus"
DASHBOARDS_DIR = ROOT / "grafana" / "provisioning" / "dashboards"

# The Kubernetes version whose schemas the core objects must satisfy
# (bundled by the pinned kubernetes-validate, .ci/k8s-checks.sh).
K8S_VERSION = "1.35.0"
CR_GROUP = "monitoring.coreos.com"
SIDECAR_LABEL = ("grafana_dashboard", "1")
# The images' user (Dockerfile USER, nix/images.nix User).
IMAGE_UID = 65534
# Secrets the base mounts but does not define: the user creates them
# (docs/kubernetes.md) or an overlay generates them.
EXTERNAL_SECRETS = {"mlwatch-admin-token", "mlwatch-feedback-key"}
# component label -> (image, scrape job in prometheus/prometheus.yml)
COMPONENTS = {
    "predict-api": ("mlwatch-service", "ml-api"),
    "trainer": ("mlwatch-trainer", "model-training"),
}
OBJECT_META = {"name", "namespace", "labels", "annotations", "generateName"}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources"}


# --------------------------------------------------------------------------
# Loading


def load_documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def load_base(base: Path = BASE) -> list[dict]:
    """The base's objects as a renderer would give them: the files of its
    resources list, in order. Any other kustomize feature is refused, since
    it would need a renderer to apply."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    extra = set(kustomization) - KUSTOMIZATION_KEYS
    if extra:
        raise SystemExit(f"error: {base}/kustomization.yaml uses {sorted(extra)}; the base "
                         f"may only list resources (check.py reads it without a renderer)")
    objects = []
    for entry in kustomization["resources"]:
        path = base / entry
        if not path.is_file():
            raise SystemExit(f"error: {base}/kustomization.yaml lists {entry}, not a file")
        objects.extend(load_documents(path))
    return objects


def ident(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def is_custom(obj: dict) -> bool:
    return str(obj.get("apiVersion", "")).startswith(CR_GROUP + "/")


# --------------------------------------------------------------------------
# Core objects: kubernetes-validate, strict


def check_core(objects: list[dict]) -> list[str]:
    import kubernetes_validate

    problems = []
    for obj in objects:
        if is_custom(obj):
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            problems.append(f"{ident(obj)}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{ident(obj)}: no Kubernetes {K8S_VERSION} schema: {e}")
    return problems


# --------------------------------------------------------------------------
# Custom resources: the CRDs' schemas, plus unknown fields


def crd_schemas(directory: Path = CRDS) -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema, from every CRD in directory."""
    missing = [name for name in CRD_FILES if not (directory / name).is_file()]
    if missing:
        raise SystemExit(f"error: prometheus-operator v0.93.0 CRDs missing in {directory}: {', '.join(missing)}; "
                         "set MLWATCH_K8S_CRDS to a directory with them (example/prometheus-operator-crd/ "
                         "of github.com/prometheus-operator/prometheus-operator at v0.93.0)")
    schemas = {}
    for path in sorted(directory.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(value, schema: dict, path: str) -> list[str]:
    """Keys of value that schema does not declare, recursively. A schema
    without `properties` (a free map, metadata) or one that allows more keys
    is not walked by key."""
    found = []
    if isinstance(value, dict):
        props = schema.get("properties")
        more = schema.get("additionalProperties")
        if props is not None and not more and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key, item in value.items():
                if key not in props:
                    found.append(f"{path}.{key}: unknown field")
                else:
                    found.extend(unknown_fields(item, props[key], f"{path}.{key}"))
        elif isinstance(more, dict):
            for key, item in value.items():
                found.extend(unknown_fields(item, more, f"{path}.{key}"))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found.extend(unknown_fields(item, schema["items"], f"{path}[{i}]"))
    return found


def check_metadata(obj: dict) -> list[str]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        return [f"{ident(obj)}: metadata.name missing"]
    problems = [f"{ident(obj)}: metadata.{k}: unknown or unexpected field"
                for k in meta if k not in OBJECT_META]
    for field in ("labels", "annotations"):
        for k, v in (meta.get(field) or {}).items():
            if not isinstance(v, str):
                problems.append(f"{ident(obj)}: metadata.{field}.{k}: {v!r} is not a string")
    return problems


def check_custom(objects: list[dict], schemas: dict | None = None) -> list[str]:
    schemas = crd_schemas() if schemas is None else schemas
    problems = []
    for obj in objects:
        if not is_custom(obj):
            continue
        schema = schemas.get((obj.get("apiVersion"), obj.get("kind")))
        if schema is None:
            problems.append(f"{ident(obj)}: no CRD for {obj.get('apiVersion')} in {CRDS}")
            continue
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
            where = "/".join(str(p) for p in error.path)
            problems.append(f"{ident(obj)}: {where}: {error.message}")
        problems.extend(f"{ident(obj)}: {p}" for p in unknown_fields(obj, schema, ""))
        problems.extend(check_metadata(obj))
    return problems


# --------------------------------------------------------------------------
# Rules


def source_of(obj: dict) -> str | None:
    return obj.get("metadata", {}).get("annotations", {}).get("mlwatch.dev/source")


def check_rule_groups(objects: list[dict]) -> list[str]:
    """Each rule file's groups are one PrometheusRule's, exactly."""
    problems = []
    by_source = {}
    for obj in of_kind(objects, "PrometheusRule"):
        source = source_of(obj)
        if not source or not source.startswith("prometheus/rules/"):
            problems.append(f"{ident(obj)}: no mlwatch.dev/source annotation naming its rule file")
            continue
        by_source[Path(source).name] = obj
    files = {p.name: p for p in sorted(RULES_DIR.glob("*.yml"))}
    for name in sorted(set(files) - set(by_source)):
        problems.append(f"prometheus/rules/{name}: no PrometheusRule holds its groups")
    for name in sorted(set(by_source) - set(files)):
        problems.append(f"{ident(by_source[name])}: its source prometheus/rules/{name} does not exist")
    for name in sorted(set(files) & set(by_source)):
        groups = yaml.safe_load(files[name].read_text())["groups"]
        if by_source[name].get("spec", {}).get("groups") != groups:
            problems.append(f"{ident(by_source[name])}: spec.groups differ from prometheus/rules/{name}")
    return problems


def extract_rule_files(objects: list[dict], directory: Path) -> list[Path]:
    """Writes each PrometheusRule's spec.groups as <source file name>."""
    written = []
    for obj in of_kind(objects, "PrometheusRule"):
        name = Path(source_of(obj) or f"{obj['metadata']['name']}.yml").name
        path = directory / name
        path.write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}, sort_keys=False))
        written.append(path)
    return written


def run_promtool(objects: list[dict], echo: bool = False) -> list[str]:
    """promtool check rules and the rule unit tests, on the extracted groups
    (their output printed when echo)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return ["promtool not found (Debian: apt-get install prometheus)"]
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        rules_dir = Path(tmp) / "rules"
        tests_dir = Path(tmp) / "tests"
        rules_dir.mkdir()
        tests_dir.mkdir()
        files = extract_rule_files(objects, rules_dir)
        if not files:
            return ["no PrometheusRule objects to check"]
        result = subprocess.run([promtool, "check", "rules", *map(str, files)],
                                capture_output=True, text=True)
        if echo:
            print(result.stdout, end="")
        if result.returncode != 0:
            problems.append(f"promtool check rules failed on the extracted groups:\n{result.stderr}")
        # The unit tests, pointed at the extracted files instead of the sources.
        tests = sorted(RULE_TESTS.glob("*.yml"))
        for test in tests:
            text = test.read_text()
            rewritten = text.replace("../../prometheus/rules/", f"{rules_dir}/")
            if rewritten == text:
                problems.append(f"{test}: its rule_files no longer name ../../prometheus/rules/; update check.py")
            (tests_dir / test.name).write_text(rewritten)
        result = subprocess.run([promtool, "test", "rules",
                                 *(str(tests_dir / t.name) for t in tests)],
                                capture_output=True, text=True)
        if echo:
            print(result.stdout, end="")
        if result.returncode != 0:
            problems.append("promtool test rules failed on the extracted groups:\n"
                            + result.stdout[-4000:] + result.stderr[-2000:])
    return problems


# --------------------------------------------------------------------------
# Dashboards


def check_dashboards(objects: list[dict]) -> list[str]:
    problems = []
    held = {}
    label, value = SIDECAR_LABEL
    for obj in of_kind(objects, "ConfigMap"):
        labels = obj.get("metadata", {}).get("labels") or {}
        if label not in labels:
            continue
        if labels[label] != value:
            problems.append(f"{ident(obj)}: label {label}={labels[label]!r}, the sidecar wants {value!r}")
        for key, text in (obj.get("data") or {}).items():
            if key in held:
                problems.append(f"{ident(obj)}: {key} is also in {held[key][0]}")
            held[key] = (ident(obj), text)
    files = {p.name: p for p in sorted(DASHBOARDS_DIR.glob("*.json"))}
    for name in sorted(set(files) - set(held)):
        problems.append(f"grafana/provisioning/dashboards/{name}: in no ConfigMap labelled {label}")
    for name in sorted(set(held) - set(files)):
        problems.append(f"{held[name][0]}: {name} is not a file of grafana/provisioning/dashboards")
    for name in sorted(set(files) & set(held)):
        if held[name][1].encode() != files[name].read_bytes():
            problems.append(f"{held[name][0]}: {name} differs from grafana/provisioning/dashboards/{name}")
    return problems


# --------------------------------------------------------------------------
# Wiring: selectors, ports, names


def selects(selector: dict | None, labels: dict | None) -> bool:
    """A LabelSelector's matchLabels against labels (matchExpressions are
    not used by the base, and refused by check_wiring)."""
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all((labels or {}).get(k) == v for k, v in match.items())


def pod_templates(objects: list[dict]) -> list[tuple[str, dict]]:
    """(owner, pod template) of every workload."""
    found = []
    for obj in objects:
        if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((ident(obj), obj["spec"]["template"]))
        elif obj.get("kind") == "CronJob":
            found.append((ident(obj), obj["spec"]["jobTemplate"]["spec"]["template"]))
    return found


def containers(template: dict, init: bool = True) -> list[dict]:
    spec = template.get("spec", {})
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def container_ports(template: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(template, init=False)
            for p in c.get("ports", []) if "name" in p}


def scrape_jobs() -> set[str]:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    return {job["job_name"] for job in config["scrape_configs"]}


def relabeled_job(endpoint: dict) -> str | None:
    for r in endpoint.get("relabelings", []):
        if r.get("targetLabel") == "job" and r.get("action", "replace") == "replace" \
                and not r.get("sourceLabels"):
            return r.get("replacement")
    return None


def image_name(image: str) -> str:
    """registry/path/name:tag -> name."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def check_restricted(owner: str, template: dict) -> list[str]:
    """Pod Security "restricted" (the fields it requires), and the images'
    uid."""
    problems = []
    pod = template.get("spec", {}).get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        problems.append(f"{owner}: pod securityContext.runAsNonRoot is not true")
    if pod.get("runAsUser") != IMAGE_UID:
        problems.append(f"{owner}: pod runAsUser {pod.get('runAsUser')}, the images run as {IMAGE_UID}")
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{owner}: pod seccompProfile is not RuntimeDefault")
    for c in containers(template):
        sc = c.get("securityContext") or {}
        name = f"{owner} container {c.get('name')}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities.drop is not [ALL]")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        if "resources" not in c or not c["resources"].get("limits") or not c["resources"].get("requests"):
            problems.append(f"{name}: no resource requests and limits")
    if template.get("spec", {}).get("hostNetwork") or template.get("spec", {}).get("hostPID"):
        problems.append(f"{owner}: uses the host's namespaces")
    return problems


def check_wiring(objects: list[dict]) -> list[str]:
    problems = []
    templates = pod_templates(objects)
    by_component = {}
    for owner, template in templates:
        component = template.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component")
        by_component.setdefault(component, []).append((owner, template))
        problems.extend(check_restricted(owner, template))
    for component in COMPONENTS:
        if len(by_component.get(component, [])) != 1:
            problems.append(f"expected one workload with pod label app.kubernetes.io/component="
                            f"{component}, found {len(by_component.get(component, []))}")
    if problems and any(len(by_component.get(c, [])) != 1 for c in COMPONENTS):
        return problems
    api_owner, api_pods = by_component["predict-api"][0]
    trainer_owner, trainer_pods = by_component["trainer"][0]
    api_labels = api_pods["metadata"]["labels"]
    trainer_labels = trainer_pods["metadata"]["labels"]

    for obj in objects:
        text = yaml.safe_dump(obj)
        if "matchExpressions" in text:
            problems.append(f"{ident(obj)}: uses matchExpressions, which check.py does not evaluate")

    # Deployment: its selector, replicas, probes.
    for deployment in of_kind(objects, "Deployment"):
        if not selects(deployment["spec"].get("selector"), deployment["spec"]["template"]["metadata"].get("labels")):
            problems.append(f"{ident(deployment)}: spec.selector does not match its pod template's labels")
        if deployment["spec"].get("replicas") != 3:
            problems.append(f"{ident(deployment)}: replicas {deployment['spec'].get('replicas')}, expected 3")
    ports = container_ports(api_pods)
    for c in containers(api_pods, init=False):
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path:
                problems.append(f"{api_owner}: {c['name']} {probe} path {get.get('path')!r}, expected {path}")
            if get.get("port") not in ports and get.get("port") not in ports.values():
                problems.append(f"{api_owner}: {c['name']} {probe} port {get.get('port')!r} is no container port")

    # Service -> the API's pods, target port -> a container port.
    services = of_kind(objects, "Service")
    if len(services) != 1:
        problems.append(f"expected one Service, found {len(services)}")
    for service in services:
        selector = {"matchLabels": service["spec"].get("selector")}
        if not selects(selector, api_labels):
            problems.append(f"{ident(service)}: selector {service['spec'].get('selector')} does not select "
                            f"the pods of {api_owner} ({api_labels})")
        if selects(selector, trainer_labels):
            problems.append(f"{ident(service)}: selector also selects the trainer's pods")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            if target not in ports and target not in ports.values():
                problems.append(f"{ident(service)}: targetPort {target!r} is no container port of {api_owner}")

    # ServiceMonitor -> the Service (labels and port name), job name.
    jobs = scrape_jobs()
    for monitor in of_kind(objects, "ServiceMonitor"):
        matched = [s for s in services if selects(monitor["spec"].get("selector"), s["metadata"].get("labels"))]
        if not matched:
            problems.append(f"{ident(monitor)}: selector {monitor['spec'].get('selector')} matches no Service's labels")
        for endpoint in monitor["spec"].get("endpoints", []):
            for s in matched:
                if endpoint.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    problems.append(f"{ident(monitor)}: endpoint port {endpoint.get('port')!r} is no port name of {ident(s)}")
            if relabeled_job(endpoint) != COMPONENTS["predict-api"][1]:
                problems.append(f"{ident(monitor)}: job label {relabeled_job(endpoint)!r}, the rules use "
                                f"{COMPONENTS['predict-api'][1]!r}")
    # PodMonitor -> the trainer's pods and port, job name.
    for monitor in of_kind(objects, "PodMonitor"):
        if not selects(monitor["spec"].get("selector"), trainer_labels):
            problems.append(f"{ident(monitor)}: selector {monitor['spec'].get('selector')} does not select "
                            f"the pods of {trainer_owner} ({trainer_labels})")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") not in container_ports(trainer_pods):
                problems.append(f"{ident(monitor)}: port {endpoint.get('port')!r} is no container port of {trainer_owner}")
            if endpoint.get("filterRunning") is not False:
                problems.append(f"{ident(monitor)}: filterRunning is not false: a trainer pod killed "
                                f"mid-run would drop out instead of reporting up == 0 (TrainingTargetDown)")
            if relabeled_job(endpoint) != COMPONENTS["trainer"][1]:
                problems.append(f"{ident(monitor)}: job label {relabeled_job(endpoint)!r}, the rules use "
                                f"{COMPONENTS['trainer'][1]!r}")
    if not of_kind(objects, "ServiceMonitor") or not of_kind(objects, "PodMonitor"):
        problems.append("expected a ServiceMonitor (API) and a PodMonitor (trainer)")
    for _, (_, job) in COMPONENTS.items():
        if job not in jobs:
            problems.append(f"job {job!r} is not a scrape job of prometheus/prometheus.yml")

    # PDB -> the API's pods only.
    pdbs = of_kind(objects, "PodDisruptionBudget")
    if not pdbs:
        problems.append("no PodDisruptionBudget")
    for pdb in pdbs:
        if not selects(pdb["spec"].get("selector"), api_labels) or selects(pdb["spec"].get("selector"), trainer_labels):
            problems.append(f"{ident(pdb)}: selector {pdb['spec'].get('selector')} does not select exactly {api_owner}'s pods")

    # NetworkPolicies: each selects one component's pods; its ports are theirs.
    covered = set()
    for policy in of_kind(objects, "NetworkPolicy"):
        chosen = [(c, o, t) for c, [(o, t)] in ((c, by_component[c]) for c in COMPONENTS)
                  if selects(policy["spec"].get("podSelector"), t["metadata"]["labels"])]
        if len(chosen) != 1:
            problems.append(f"{ident(policy)}: podSelector {policy['spec'].get('podSelector')} selects "
                            f"{len(chosen)} of mlwatch's workloads, expected one")
            continue
        component, owner, template = chosen[0]
        covered.add(component)
        names = container_ports(template)
        for rule in policy["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if port.get("port") not in names and port.get("port") not in names.values():
                    problems.append(f"{ident(policy)}: port {port.get('port')!r} is no container port of {owner}")
            if not any("namespaceSelector" in peer for peer in rule.get("from", [])):
                problems.append(f"{ident(policy)}: an ingress rule admits no namespace (the monitoring one)")
    for component in sorted(set(COMPONENTS) - covered):
        problems.append(f"no NetworkPolicy selects the {component} pods")

    # Images, settings keys, secrets.
    settings = {o["metadata"]["name"]: set((o.get("data") or {})) for o in of_kind(objects, "ConfigMap")}
    secrets = {o["metadata"]["name"] for o in of_kind(objects, "Secret")}
    images_nix = (ROOT / "nix" / "images.nix").read_text()
    for component, [(owner, template)] in ((c, by_component[c]) for c in COMPONENTS):
        image, _ = COMPONENTS[component]
        if f'name = "{image}";' not in images_nix:
            problems.append(f"nix/images.nix builds no image {image}")
        main = containers(template, init=False)
        if not main or image_name(main[0].get("image", "")) != image:
            problems.append(f"{owner}: image {main[0].get('image') if main else None!r}, expected {image}")
        exposed = re.search(r'name = "' + re.escape(image) + r'";\s*port = (\d+);', images_nix)
        listening = {p["containerPort"] for c in main for p in c.get("ports", [])}
        if not exposed or listening != {int(exposed.group(1))}:
            problems.append(f"{owner}: container ports {sorted(listening)}, the image {image} exposes "
                            f"{exposed.group(1) if exposed else 'nothing'} (nix/images.nix)")
        for c in main:
            listen = [a for a in c.get("args", []) if a.startswith("--listen=")]
            if exposed and listen != [f"--listen=0.0.0.0:{exposed.group(1)}"]:
                problems.append(f"{owner}: {c['name']} {listen or 'no --listen='}, the image's port is {exposed.group(1)}")
        for c in containers(template):
            for env in c.get("env", []):
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref and ref.get("key") not in settings.get(ref.get("name"), set()):
                    problems.append(f"{owner}: env {env['name']} reads {ref.get('name')}/{ref.get('key')}, "
                                    f"which no ConfigMap here holds")
        for volume in template["spec"].get("volumes", []):
            name = (volume.get("secret") or {}).get("secretName")
            if name and name not in secrets and name not in EXTERNAL_SECRETS:
                problems.append(f"{owner}: mounts Secret {name}, neither defined here nor one the docs "
                                f"tell the user to create ({sorted(EXTERNAL_SECRETS)})")
    for secret in of_kind(objects, "Secret"):
        if not any(re.fullmatch(re.escape(e) + r"(-[a-z0-9]{10})?", secret["metadata"]["name"]) for e in EXTERNAL_SECRETS):
            problems.append(f"{ident(secret)}: unexpected Secret")

    # One namespace for all objects (an overlay's `namespace:`), or none.
    namespaces = {o.get("metadata", {}).get("namespace") for o in objects}
    if len(namespaces) > 1:
        problems.append(f"objects in several namespaces: {sorted(map(str, namespaces))}")
    return problems


# --------------------------------------------------------------------------


def all_problems(objects: list[dict], promtool: bool = True) -> list[str]:
    problems = []
    for name, check in (("core", check_core), ("crd", check_custom), ("rules", check_rule_groups),
                        ("dashboards", check_dashboards), ("wiring", check_wiring)):
        found = check(objects)
        print(f"  {name}: {'ok' if not found else f'{len(found)} problem(s)'}")
        problems.extend(found)
    if promtool:
        found = run_promtool(objects, echo=True)
        print(f"  promtool on the extracted rules: {'ok' if not found else 'FAILED'}")
        problems.extend(found)
    return problems


def canonical(objects: list[dict]) -> list[str]:
    """Objects compared regardless of key and document order."""
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rendered", type=Path, help="output of `kubectl kustomize` to check")
    ap.add_argument("--skip-promtool", action="store_true")
    ap.add_argument("--same-as-base", action="store_true",
                    help="with --rendered: fail unless the rendered objects are the base's "
                         "as read from its resources list (renderer and reader agree)")
    ap.add_argument("--expect-label", action="append", default=[], metavar="KEY=VALUE",
                    help="every prometheus-operator object must carry this label "
                         "(an overlay's release label)")
    args = ap.parse_args()
    extra = []
    if args.rendered:
        objects = load_documents(args.rendered)
        what = str(args.rendered)
        if args.same_as_base and canonical(objects) != canonical(load_base()):
            extra.append(f"{what} is not the base as read from its resources list")
    else:
        objects = load_base()
        what = "deploy/kubernetes/base (its resources list, read without a renderer)"
    print(f"== {what}: {len(objects)} objects")
    for wanted in args.expect_label:
        key, _, value = wanted.partition("=")
        for obj in filter(is_custom, objects):
            if (obj["metadata"].get("labels") or {}).get(key) != value:
                extra.append(f"{ident(obj)}: no label {key}={value}")
    problems = extra + all_problems(objects, promtool=not args.skip_promtool)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{what}: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
