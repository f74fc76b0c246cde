"""Unit tests of check.py: the base passes, and each check fails on the
mistake it exists for (a label typo, an unknown field, a changed dashboard,
a changed rule...). Each test mutates one object of the loaded base and
expects the named check to report it.

Run: target/k8s-venv/bin/python -m unittest deploy/kubernetes/test_check.py
(.ci/k8s-checks.sh does).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check  # noqa: E402

BASE_OBJECTS = check.load_base()


def objects():
    return copy.deepcopy(BASE_OBJECTS)


def find(objs, kind, component=None):
    for o in objs:
        labels = o["metadata"].get("labels", {})
        if o["kind"] == kind and (component is None or labels.get("app.kubernetes.io/component") == component):
            return o
    raise AssertionError(f"no {kind} {component}")


def api_container(objs):
    return find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


class BaseIsClean(unittest.TestCase):
    def test_every_check_passes_on_the_base(self):
        objs = objects()
        for fn in (check.check_core, check.check_custom, check.check_rule_groups,
                   check.check_dashboards, check.check_wiring):
            self.assertEqual(fn(objs), [], fn.__name__)


class Selectors(unittest.TestCase):
    def assert_wiring_fails(self, objs, *needles):
        problems = check.check_wiring(objs)
        self.assertTrue(problems, "a broken selector passed")
        text = "\n".join(problems)
        for needle in needles:
            self.assertIn(needle, text)

    def test_service_selector_typo(self):
        objs = objects()
        find(objs, "Service")["spec"]["selector"]["app.kubernetes.io/component"] = "predict-apl"
        self.assert_wiring_fails(objs, "Service/mlwatch-predict-api: selector")

    def test_pod_label_typo(self):
        objs = objects()
        labels = find(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
        labels["app.kubernetes.io/name"] = "mlwatc"
        self.assert_wiring_fails(objs, "spec.selector does not match", "Service/mlwatch-predict-api: selector")

    def test_servicemonitor_selector_typo(self):
        objs = objects()
        find(objs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "ml-watch"
        self.assert_wiring_fails(objs, "matches no Service's labels")

    def test_service_label_typo_breaks_the_servicemonitor(self):
        objs = objects()
        find(objs, "Service")["metadata"]["labels"]["app.kubernetes.io/component"] = "api"
        self.assert_wiring_fails(objs, "ServiceMonitor/mlwatch-predict-api: selector")

    def test_servicemonitor_port_name_typo(self):
        objs = objects()
        find(objs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] = "metrics"
        self.assert_wiring_fails(objs, "is no port name of Service/mlwatch-predict-api")

    def test_podmonitor_selector_and_port(self):
        objs = objects()
        find(objs, "PodMonitor")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "training"
        self.assert_wiring_fails(objs, "PodMonitor/mlwatch-trainer: selector")
        objs = objects()
        find(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] = "http"
        self.assert_wiring_fails(objs, "is no container port of CronJob/mlwatch-trainer")

    def test_failed_trainer_pods_stay_targets(self):
        objs = objects()
        del find(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["filterRunning"]
        self.assert_wiring_fails(objs, "filterRunning is not false")

    def test_pdb_selector_typo(self):
        objs = objects()
        find(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "trainer"
        self.assert_wiring_fails(objs, "PodDisruptionBudget/mlwatch-predict-api: selector")

    def test_networkpolicy_pod_selector_typo(self):
        objs = objects()
        find(objs, "NetworkPolicy", "trainer")["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "trainr"
        self.assert_wiring_fails(objs, "NetworkPolicy/mlwatch-trainer: podSelector", "no NetworkPolicy selects the trainer pods")

    def test_job_label_must_be_the_rules_job(self):
        objs = objects()
        find(objs, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"][0]["replacement"] = "mlwatch-predict-api"
        self.assert_wiring_fails(objs, "the rules use 'ml-api'")

    def test_probe_paths(self):
        objs = objects()
        api_container(objs)["readinessProbe"]["httpGet"]["path"] = "/health"
        self.assert_wiring_fails(objs, "readinessProbe path '/health', expected /ready")

    def test_settings_key_typo(self):
        objs = objects()
        api_container(objs)["env"][0]["valueFrom"]["configMapKeyRef"]["key"] = "MLFLOW_TRACKING_URL"
        self.assert_wiring_fails(objs, "MLFLOW_TRACKING_URL")

    def test_restricted_profile(self):
        objs = objects()
        api_container(objs)["securityContext"]["allowPrivilegeEscalation"] = True
        self.assert_wiring_fails(objs, "allowPrivilegeEscalation is not false")
        objs = objects()
        find(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 1000
        self.assert_wiring_fails(objs, "runAsUser 1000")

    def test_port_must_be_the_images(self):
        objs = objects()
        api_container(objs)["ports"][0]["containerPort"] = 9001
        self.assert_wiring_fails(objs, "container ports [9001], the image mlwatch-service exposes 9000")
        objs = objects()
        trainer = find(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        trainer["args"] = [a.replace("8002", "8003") for a in trainer["args"]]
        self.assert_wiring_fails(objs, "--listen=0.0.0.0:8003")

    def test_unknown_secret(self):
        objs = objects()
        find(objs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] = "admin"
        self.assert_wiring_fails(objs, "mounts Secret admin")


class Schemas(unittest.TestCase):
    def test_core_unknown_field(self):
        objs = objects()
        api_container(objs)["imagePullPolicyy"] = "Always"
        problems = check.check_core(objs)
        self.assertTrue(any("imagePullPolicyy" in p for p in problems), problems)

    def test_core_wrong_type(self):
        objs = objects()
        find(objs, "Deployment")["spec"]["replicas"] = "3"
        self.assertTrue(check.check_core(objs))

    def test_custom_unknown_field_is_caught_by_the_walk(self):
        objs = objects()
        find(objs, "ServiceMonitor")["spec"]["endpoints"][0]["intervall"] = "5s"
        problems = check.check_custom(objs)
        self.assertIn("ServiceMonitor/mlwatch-predict-api: .spec.endpoints[0].intervall: unknown field", problems)
        # jsonschema alone accepts it: the CRD does not forbid unknown keys.
        monitor = find(objs, "ServiceMonitor")
        schema = check.crd_schemas()[(monitor["apiVersion"], "ServiceMonitor")]
        self.assertEqual(list(check.jsonschema.Draft7Validator(schema).iter_errors(monitor)), [])

    def test_custom_unknown_field_in_a_rule(self):
        objs = objects()
        find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["severity"] = "warning"
        problems = check.check_custom(objs)
        self.assertTrue(any(".spec.groups[0].rules[0].severity: unknown field" in p for p in problems), problems)

    def test_custom_wrong_type_and_enum(self):
        objs = objects()
        find(objs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] = "tcp"
        self.assertTrue(check.check_custom(objs))
        objs = objects()
        find(objs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
        self.assertTrue(check.check_custom(objs))

    def test_custom_metadata(self):
        objs = objects()
        find(objs, "PodMonitor")["metadata"]["label"] = {"a": "b"}
        self.assertTrue(any("metadata.label" in p for p in check.check_custom(objs)))


class Sources(unittest.TestCase):
    def test_changed_dashboard_byte(self):
        objs = objects()
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"])
        key = next(iter(cm["data"]))
        cm["data"][key] = cm["data"][key].rstrip("\n")
        problems = check.check_dashboards(objs)
        self.assertTrue(any(f"{key} differs" in p for p in problems), problems)

    def test_missing_dashboard(self):
        objs = [o for o in objects() if not (o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"])]
        self.assertEqual(len(check.check_dashboards(objs)), 2)

    def test_sidecar_label_value(self):
        objs = objects()
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and "grafana_dashboard" in o["metadata"]["labels"])
        cm["metadata"]["labels"]["grafana_dashboard"] = "true"
        self.assertTrue(check.check_dashboards(objs))

    def test_changed_rule(self):
        objs = objects()
        find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"].pop()
        problems = check.check_rule_groups(objs)
        self.assertTrue(any("spec.groups differ" in p for p in problems), problems)

    def test_promtool_runs_on_the_extracted_groups(self):
        if check.shutil.which("promtool") is None:
            self.skipTest("promtool not on PATH")
        objs = objects()
        rule = find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
        rule["expr"] = rule["expr"].replace("> 0.1", "> 0.5")
        problems = check.run_promtool(objs)
        self.assertTrue(any("promtool test rules failed" in p for p in problems), problems)
        objs = objects()
        find(objs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]["expr"] = "sum(("
        self.assertTrue(any("promtool check rules failed" in p for p in check.run_promtool(objs)))


class Loading(unittest.TestCase):
    def test_base_uses_nothing_a_renderer_would_be_needed_for(self):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            (base / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
            (base / "kustomization.yaml").write_text("resources: [a.yaml]\nnamespace: x\n")
            with self.assertRaises(SystemExit) as raised:
                check.load_base(base)
            self.assertIn("namespace", str(raised.exception))
            (base / "kustomization.yaml").write_text("resources: [a.yaml]\n")
            self.assertEqual(check.load_base(base)[0]["metadata"]["name"], "a")


if __name__ == "__main__":
    unittest.main()
