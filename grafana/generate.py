#!/usr/bin/env python3
"""Generate mlwatch's two Grafana dashboards from one description.

The dashboards in grafana/provisioning/dashboards/ are build outputs: edit this
file, run `python3 grafana/generate.py`, commit both. The generator computes
what is easy to get wrong by hand (panel ids, gridPos, refIds, the datasource
of every panel and target) and checks the result before writing it: no two
panels overlap, every panel has a description, a unit and thresholds, every
target has an expression. `--check` writes nothing and fails when the
committed JSON differs from what this script produces (CI runs it).

Thresholds mirror the alerts in prometheus/rules/ml_alerts.yml; change both
together (docs/dashboards.md lists which panel mirrors which alert).

Python 3 standard library only.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "grafana" / "provisioning" / "dashboards"

# The provisioned datasource (grafana/provisioning/datasources/prometheus.yml).
DS = {"type": "prometheus", "uid": "mlwatch-prometheus"}
GRID_WIDTH = 24
SCHEMA_VERSION = 39
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap",
               "text", "alertlist", "row"}

# Same form as the alerts' runbook_url annotations.
RUNBOOKS = "docs/runbooks.md"

# Alert thresholds (prometheus/rules/ml_alerts.yml).
ERROR_RATIO = 0.1             # HighErrorRate
INVALID_RATIO = 0.2           # InvalidInputSurge
P95_SECONDS = 1               # SlowPredictionResponse
APP_MEMORY_BYTES = 1610612736  # HighMemoryUsage (1.5 GiB)
APP_CPU_PERCENT = 90          # HighCpuUsage
PSI_WATCH = 0.1               # conventional "moderate shift"
PSI_ALERT = 0.2               # DataDrift, PredictionDrift
HEARTBEAT_SECONDS = 900       # StalledTraining
R2_FLOOR = 0.3                # ModelQualityLow (regression)
ACCURACY_FLOOR = 0.5          # ModelQualityLow (classification)
OVERFIT_GAP = 0.2             # TrainingOverfitting

NO_GPU = "No GPU detected"

# --------------------------------------------------------------------------
# Building blocks


def steps(*pairs):
    """Absolute thresholds: steps(("green", None), ("red", 0.1))."""
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in pairs]}


BASE = steps(("green", None))


def above(limit, watch=None):
    """Green below the limit, red from it (orange from `watch` if given)."""
    pairs = [("green", None)]
    if watch is not None:
        pairs.append(("orange", watch))
    pairs.append(("red", limit))
    return steps(*pairs)


def below(floor):
    """Red below a quality floor, green from it."""
    return steps(("red", None), ("green", floor))


def runbook(alert):
    return {"title": f"Runbook: {alert}", "url": f"{RUNBOOKS}#{alert.lower()}",
            "targetBlank": True}


def q(expr, legend=None, instant=False, fmt=None):
    """A Prometheus target; refId is assigned when the dashboard is built."""
    t = {"datasource": DS, "editorMode": "code", "expr": expr,
         "instant": instant, "range": not instant}
    if legend is not None:
        t["legendFormat"] = legend
    if fmt is not None:
        t["format"] = fmt
    return t


def panel(kind, title, description, targets, *, unit, w, h, thresholds=BASE,
          alerts=(), no_value=None, min_=None, max_=None, decimals=None,
          mappings=None, custom=None, overrides=None, options=None,
          transformations=None):
    defaults = {"unit": unit, "thresholds": thresholds,
                "color": {"mode": "thresholds" if kind in ("stat", "gauge", "bargauge")
                          else "palette-classic"},
                "mappings": mappings or []}
    for key, value in (("noValue", no_value), ("min", min_), ("max", max_),
                       ("decimals", decimals)):
        if value is not None:
            defaults[key] = value
    if custom:
        defaults["custom"] = custom
    p = {"type": kind, "title": title, "description": description,
         "datasource": DS, "w": w, "h": h,
         "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
         "options": options or {}, "targets": list(targets)}
    if alerts:
        p["links"] = [runbook(a) for a in alerts]
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title, description, targets, *, unit, w=12, h=8,
               thresholds=BASE, stack=False, **kw):
    custom = {"drawStyle": "line", "lineWidth": 1,
              "fillOpacity": 25 if stack else 10, "gradientMode": "none",
              "showPoints": "never", "spanNulls": False,
              "axisPlacement": "auto",
              "stacking": {"mode": "normal" if stack else "none", "group": "A"},
              # Dashed lines at the alert thresholds, none on plain panels.
              "thresholdsStyle": {"mode": "dashed" if len(thresholds["steps"]) > 1 else "off"}}
    opts = {"legend": {"displayMode": "list", "placement": "bottom",
                       "showLegend": True, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, targets, unit=unit, w=w,
                 h=h, thresholds=thresholds, custom=custom, options=opts, **kw)


def stat(title, description, targets, *, unit, w=6, h=4, thresholds=BASE, **kw):
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                              "values": False},
            "colorMode": "background" if len(thresholds["steps"]) > 1 else "value",
            "graphMode": "area", "justifyMode": "auto",
            "orientation": "auto", "textMode": "auto",
            "wideLayout": True, "showPercentChange": False}
    return panel("stat", title, description, targets, unit=unit, w=w, h=h,
                 thresholds=thresholds, options=opts, **kw)


def bargauge(title, description, targets, *, unit, w=12, h=8,
             thresholds=BASE, **kw):
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                              "values": False},
            "displayMode": "gradient", "orientation": "horizontal",
            "showUnfilled": True, "valueMode": "color",
            "namePlacement": "auto", "sizing": "auto",
            "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300}
    return panel("bargauge", title, description, targets, unit=unit, w=w, h=h,
                 thresholds=thresholds, options=opts, **kw)


def table(title, description, targets, *, unit, hide=(), rename=None,
          order=(), sort_by=None, w=12, h=8, thresholds=BASE, **kw):
    opts = {"showHeader": True, "cellHeight": "sm",
            "footer": {"show": False, "reducer": ["sum"], "countRows": False,
                       "fields": ""}}
    transformations = [{"id": "organize", "options": {
        "excludeByName": {name: True for name in hide},
        "indexByName": {name: i for i, name in enumerate(order)},
        "renameByName": rename or {}}}]
    if sort_by:
        transformations.append({"id": "sortBy", "options": {
            "fields": {}, "sort": [{"field": sort_by, "desc": False}]}})
    return panel("table", title, description, targets, unit=unit, w=w, h=h,
                 thresholds=thresholds, options=opts,
                 transformations=transformations, **kw)


def heatmap(title, description, targets, *, unit, y_unit, w=12, h=8, **kw):
    """A heatmap of pre-bucketed data (target format "heatmap", one series per le)."""
    opts = {"calculate": False, "cellGap": 1, "showValue": "never",
            "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                      "scale": "exponential", "exponent": 0.5, "steps": 64,
                      "reverse": False},
            "filterValues": {"le": 1e-9},
            "rowsFrame": {"layout": "auto"},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": y_unit},
            "cellValues": {"unit": unit},
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
            "exemplars": {"color": "rgba(255,0,255,0.7)"}}
    return panel("heatmap", title, description, targets, unit=unit, w=w, h=h,
                 options=opts, **kw)


def by_name(name, **props):
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": k, "value": v} for k, v in props.items()]}


def by_regexp(pattern, **props):
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": k, "value": v} for k, v in props.items()]}


def color(name):
    return {"mode": "fixed", "fixedColor": name}


def bool_mapping(zero, zero_color, one, one_color):
    return [{"type": "value", "options": {
        "0": {"text": zero, "color": zero_color, "index": 0},
        "1": {"text": one, "color": one_color, "index": 1}}}]


def row(title, description, *panels):
    return {"title": title, "description": description, "panels": list(panels)}


def variable(name, label, query, description):
    return {"type": "query", "name": name, "label": label,
            "description": description, "datasource": DS,
            "definition": query,
            "query": {"qryType": 1, "query": query,
                      "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "sort": 1, "includeAll": True, "allValue": ".*",
            "multi": True, "regex": "", "hide": 0, "skipUrlSync": False,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": []}


def dashboard(uid, title, description, tags, variables, rows):
    """Lay out rows left to right, top to bottom, and number everything."""
    panels, y, next_id = [], 0, 1
    for r in rows:
        panels.append({"type": "row", "title": r["title"],
                       "description": r["description"], "datasource": DS,
                       "collapsed": False, "panels": [], "id": next_id,
                       "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
        next_id += 1
        y += 1
        x = line_h = 0
        for spec in r["panels"]:
            p = dict(spec)
            w, h = p.pop("w"), p.pop("h")
            if x + w > GRID_WIDTH:
                y, x, line_h = y + line_h, 0, 0
            p["id"] = next_id
            p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
            next_id += 1
            for i, t in enumerate(p["targets"]):
                t["refId"] = chr(ord("A") + i)
            panels.append(p)
            x, line_h = x + w, max(line_h, h)
        y += line_h
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"title": "Runbooks", "type": "link", "url": RUNBOOKS,
                   "icon": "doc", "tooltip": "What to do when an alert fires",
                   "targetBlank": True, "asDropdown": False,
                   "includeVars": False, "keepTime": False, "tags": []},
                  {"title": "mlwatch dashboards", "type": "dashboards",
                   "tags": ["mlwatch"], "asDropdown": True, "icon": "external link",
                   "includeVars": False, "keepTime": True, "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "panels": panels,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["mlwatch"] + tags,
        "templating": {"list": variables},
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --------------------------------------------------------------------------
# Training dashboard (job model-training)

I = 'instance=~"$instance"'
RATE = "[$__rate_interval]"
BY_SPLIT = "{{split}} · {{instance}}"


def training():
    status = row(
        "Status", "Is a run going, is it alive, and what did it produce?",
        stat("Training in progress",
             "training_in_progress: 1 while a run trains, 0 once it has "
             "finished (the trainer lingers so the final values can be scraped).",
             [q(f"training_in_progress{{{I}}}", "{{instance}}")],
             unit="none", w=4,
             mappings=bool_mapping("finished", "green", "training", "blue")),
        stat("Heartbeat age",
             "Seconds since the trainer last reported an iteration or a batch "
             "(time() - training_last_update_timestamp_seconds). Red from 900 s: "
             "StalledTraining fires when this is above 900 s for 1 m while the "
             "run is still in progress. After a run finishes the age keeps "
             "growing and is harmless.",
             [q(f"time() - training_last_update_timestamp_seconds{{{I}}}",
                "{{instance}}")],
             unit="s", w=5, thresholds=above(HEARTBEAT_SECONDS),
             alerts=["StalledTraining"]),
        stat("Training duration",
             "training_duration_seconds: wall time since the run started, "
             "frozen when it finishes.",
             [q(f"training_duration_seconds{{{I}}}", "{{instance}}")],
             unit="s", w=5),
        table("Model version & algorithm",
              "training_model_info: the artifact each run wrote (set when the "
              "run finishes; empty while it is still training).",
              [q(f"training_model_info{{{I}}}", instant=True, fmt="table")],
              unit="none", w=10, h=4,
              hide=("Time", "Value", "__name__", "job"),
              order=("instance", "model_version", "algorithm"),
              no_value="No finished run yet"),
    )

    progress = row(
        "Progress", "Is the model learning, and how well does it generalise?",
        timeseries("Iterations completed",
                   "training_epochs_total: alpha trials (linear), trees "
                   "(forest), boosting rounds (boost) or depth steps (tree).",
                   [q(f"training_epochs_total{{{I}}}", "{{instance}}")],
                   unit="short", w=6),
        timeseries("Batches scored per second",
                   "rate(training_batches_total): mini-batches of --batch-size "
                   "training rows scored per second; 0 once the run has finished.",
                   [q(f"rate(training_batches_total{{{I}}}{RATE})", "{{instance}}")],
                   unit="short", w=6),
        timeseries("Loss by split",
                   "training_loss: MSE for a regression task, 1 - accuracy for "
                   "a classification task; train and validation split.",
                   [q(f"training_loss{{{I}}}", BY_SPLIT)],
                   unit="none", w=12),
        timeseries("Regression error (MSE right axis, RMSE / MAE left)",
                   "regression_mean_squared_error (target units², right axis), "
                   "regression_root_mean_squared_error and "
                   "regression_mean_absolute_error (target units, left axis) "
                   "by split. Regression trainers only (diabetes).",
                   [q(f"regression_mean_squared_error{{{I}}}", "MSE " + BY_SPLIT),
                    q(f"regression_root_mean_squared_error{{{I}}}", "RMSE " + BY_SPLIT),
                    q(f"regression_mean_absolute_error{{{I}}}", "MAE " + BY_SPLIT)],
                   unit="none", w=12,
                   overrides=[by_regexp("/^MSE /", **{"custom.axisPlacement": "right"})],
                   no_value="No regression trainer selected"),
        timeseries("R² by split",
                   "regression_r_squared by split. Red below 0.3: ModelQualityLow "
                   "fires when the validation R² of a finished run is below 0.3.",
                   [q(f"regression_r_squared{{{I}}}", BY_SPLIT)],
                   unit="none", w=6, thresholds=below(R2_FLOOR),
                   alerts=["ModelQualityLow"],
                   no_value="No regression trainer selected"),
        timeseries("Accuracy & F1 by split",
                   "classification_accuracy and classification_f1_score (macro) "
                   "by split. Red below 50 %: ModelQualityLow fires when the "
                   "validation accuracy of a finished run is below 0.5.",
                   [q(f"classification_accuracy{{{I}}}", "accuracy " + BY_SPLIT),
                    q(f"classification_f1_score{{{I}}}", "F1 " + BY_SPLIT)],
                   unit="percentunit", w=6, min_=0, max_=1,
                   thresholds=below(ACCURACY_FLOOR), alerts=["ModelQualityLow"],
                   no_value="No classification trainer selected"),
        timeseries("Overfitting gap",
                   "training_overfitting_gap: train score minus validation score "
                   "(R² or accuracy). Red from 0.2: TrainingOverfitting fires "
                   "when a finished run's gap is above 0.2.",
                   [q(f"training_overfitting_gap{{{I}}}", "{{instance}}")],
                   unit="none", w=8, thresholds=above(OVERFIT_GAP),
                   alerts=["TrainingOverfitting"]),
        timeseries("Iteration improvement",
                   "iteration_improvement: validation score (R² or accuracy) of "
                   "this iteration minus the previous one. Values near 0 mean "
                   "further iterations no longer help.",
                   [q(f"iteration_improvement{{{I}}}", "{{instance}}")],
                   unit="none", w=8),
        timeseries("Hyperparameters",
                   "training_hyperparameter by name: the current value of each "
                   "hyperparameter (alpha, l1_ratio, max_depth, learning_rate, ...).",
                   [q(f"training_hyperparameter{{{I}}}", "{{name}} · {{instance}}")],
                   unit="none", w=8),
    )

    structure = row(
        "Model structure (tree models)",
        "How big and how deep did the trees grow? Tree models only.",
        *[stat(title, f"{metric}: {meaning}",
               [q(f"{metric}{{{I}}}", "{{instance}}")],
               unit="short", w=6, no_value="Not a tree model")
          for title, metric, meaning in (
              ("Max tree depth", "tree_max_depth", "depth of the deepest tree."),
              ("Leaves", "tree_leaf_count", "leaves summed over all trees."),
              ("Trees in the ensemble", "ensemble_tree_count",
               "trees in the ensemble."),
              ("Boosting rounds", "boosting_rounds_total",
               "boosting rounds completed (boost only)."))],
    )

    importance = row(
        "Feature importance (top 5)", "Which inputs drive the model?",
        bargauge("Top 5 features",
                 "topk(5, feature_importance) per trainer: normalised importance "
                 "of the most important features at the last scrape.",
                 [q(f"sort_desc(topk by (instance) (5, feature_importance{{{I}}}))",
                    "{{feature_name}}", instant=True)],
                 unit="percentunit", min_=0, max_=1),
        timeseries("Feature importance over time",
                   "feature_importance by feature_name: how the ranking changes "
                   "as iterations are added.",
                   [q(f"feature_importance{{{I}}}", "{{feature_name}} · {{instance}}")],
                   unit="percentunit", min_=0),
    )

    resources = row(
        "Resources", "Is the trainer starved of CPU or memory?",
        timeseries("Trainer CPU",
                   "training_cpu_usage_percent: process CPU in percent of one "
                   "core (a multi-threaded trainer may exceed 100 %).",
                   [q(f"training_cpu_usage_percent{{{I}}}", "{{instance}}")],
                   unit="percent", w=8, min_=0),
        timeseries("Trainer memory (RSS)",
                   "training_memory_usage_bytes: resident memory of the trainer.",
                   [q(f"training_memory_usage_bytes{{{I}}}", "{{instance}}")],
                   unit="bytes", w=8, min_=0),
        timeseries("Host memory",
                   "system_memory_used_bytes against system_memory_total_bytes "
                   "on the trainer's host.",
                   [q(f'system_memory_used_bytes{{job="model-training", {I}}}',
                      "used · {{instance}}"),
                    q(f'system_memory_total_bytes{{job="model-training", {I}}}',
                      "total · {{instance}}")],
                   unit="bytes", w=8, min_=0),
    )

    def gpu(title, description, targets, unit, **kw):
        return timeseries(title, description + " Only exported with an NVIDIA "
                          "GPU; shows \"" + NO_GPU + "\" otherwise.",
                          targets, unit=unit, w=6, no_value=NO_GPU, min_=0, **kw)

    gpus = row(
        "GPU (only with an NVIDIA GPU)",
        "GPU load of the trainer, read through NVML. Empty on CPU-only hosts.",
        gpu("GPU utilization", "training_gpu_utilization_percent by gpu.",
            [q(f"training_gpu_utilization_percent{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "percent", max_=100),
        gpu("GPU memory", "training_gpu_memory_used_bytes against "
            "training_gpu_memory_total_bytes by gpu.",
            [q(f"training_gpu_memory_used_bytes{{{I}}}", "used GPU {{gpu}} · {{instance}}"),
             q(f"training_gpu_memory_total_bytes{{{I}}}", "total GPU {{gpu}} · {{instance}}")],
            "bytes"),
        gpu("GPU temperature", "training_gpu_temperature_celsius by gpu.",
            [q(f"training_gpu_temperature_celsius{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "celsius"),
        gpu("GPU power", "training_gpu_power_watts by gpu.",
            [q(f"training_gpu_power_watts{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "watt"),
    )

    return dashboard(
        "mlwatch-training", "mlwatch · Training",
        "Progress, quality, model structure and resources of `mlwatch train` "
        "runs (job model-training). Generated by grafana/generate.py.",
        ["training"],
        [variable("instance", "Trainer", "label_values(training_in_progress, instance)",
                  "Trainer instance(s) to show")],
        [status, progress, structure, importance, resources, gpus])


# --------------------------------------------------------------------------
# Prediction API dashboard (job ml-api)

V = 'model_version=~"$model_version"'
IV = f"{I}, {V}"
P_RULE = "job_model_version:model_prediction_duration_seconds:{}_5m"
RULES_NOTE = (" From a recording rule in prometheus/rules/ml_recording.yml "
              "(aggregated per job, so the instance filter does not apply).")


def predict_api():
    overview = row(
        "Overview", "Is the service up, serving, fast and correct right now?",
        stat("Model loaded",
             "model_loaded: 1 when a model is loaded and /ready answers 200. "
             "ModelNotLoaded fires after 2 m at 0.",
             [q(f"model_loaded{{{I}}}", "{{instance}}")],
             unit="none", w=3, thresholds=steps(("red", None), ("green", 1)),
             mappings=bool_mapping("no model", "red", "loaded", "green"),
             alerts=["ModelNotLoaded"]),
        stat("Request rate",
             "job:model_prediction_requests:rate5m: /predict requests per "
             "second over 5 m, all outcomes." + RULES_NOTE,
             [q("sum(job:model_prediction_requests:rate5m)", "requests")],
             unit="reqps", w=4),
        stat("Error ratio",
             "job:model_prediction_errors:ratio_rate5m: share of /predict "
             "requests that failed with status=\"error\" over 5 m. Red from "
             "10 %: HighErrorRate fires after 5 m above it. No data without "
             "traffic." + RULES_NOTE,
             [q("job:model_prediction_errors:ratio_rate5m", "{{job}}")],
             unit="percentunit", w=4, decimals=1,
             thresholds=above(ERROR_RATIO), alerts=["HighErrorRate"]),
        stat("Invalid-input ratio",
             "job:model_prediction_invalid_input:ratio_rate5m: share of "
             "/predict requests rejected as invalid input over 5 m. Red from "
             "20 %: InvalidInputSurge fires after 2 m above it (when traffic "
             "exceeds 0.1 req/s)." + RULES_NOTE,
             [q("job:model_prediction_invalid_input:ratio_rate5m", "{{job}}")],
             unit="percentunit", w=4, decimals=1,
             thresholds=above(INVALID_RATIO), alerts=["InvalidInputSurge"]),
        stat("p95 latency (slowest version)",
             "Highest p95 /predict latency over the selected model versions "
             "(job_model_version:model_prediction_duration_seconds:p95_5m). "
             "Red from 1 s: SlowPredictionResponse fires after 5 m above it."
             + RULES_NOTE,
             [q(f"max({P_RULE.format('p95')}{{{V}}})", "p95")],
             unit="s", w=4, thresholds=above(P95_SECONDS),
             alerts=["SlowPredictionResponse"]),
        stat("In-flight requests",
             "http_server_active_requests: HTTP requests being served right now.",
             [q(f"sum(http_server_active_requests{{{I}}})", "in flight")],
             unit="short", w=5),
    )

    traffic = row(
        "Traffic & errors", "How much traffic, and how much of it fails?",
        timeseries("Requests by status",
                   "job_status:model_prediction_requests:rate5m: /predict "
                   "requests per second by outcome (success, invalid_input, "
                   "error)." + RULES_NOTE,
                   [q("sum by (status) (job_status:model_prediction_requests:rate5m)",
                      "{{status}}")],
                   unit="reqps", stack=True, min_=0,
                   overrides=[by_name("success", color=color("green")),
                              by_name("invalid_input", color=color("orange")),
                              by_name("error", color=color("red"))]),
        timeseries("Error & invalid-input ratio",
                   "Error ratio (dashed line at 10 %, HighErrorRate) and "
                   "invalid-input ratio (dashed line at 20 %, InvalidInputSurge) "
                   "over 5 m." + RULES_NOTE,
                   [q("job:model_prediction_errors:ratio_rate5m", "errors"),
                    q("job:model_prediction_invalid_input:ratio_rate5m", "invalid input")],
                   unit="percentunit", min_=0, thresholds=above(ERROR_RATIO),
                   overrides=[by_name("invalid input", thresholds=above(INVALID_RATIO))],
                   alerts=["HighErrorRate", "InvalidInputSurge"]),
    )

    latency = row(
        "Latency", "How fast are predictions, per model version and per route?",
        timeseries("Prediction latency p50 / p95 / p99",
                   "Quantiles of model_prediction_duration_seconds (successful "
                   "/predict requests) per model_version over 5 m. Dashed line "
                   "at 1 s: SlowPredictionResponse fires when p95 stays above "
                   "it for 5 m." + RULES_NOTE,
                   [q(f"{P_RULE.format(p)}{{{V}}}", f"{p} · {{{{model_version}}}}")
                    for p in ("p50", "p95", "p99")],
                   unit="s", min_=0, thresholds=above(P95_SECONDS),
                   alerts=["SlowPredictionResponse"]),
        heatmap("Prediction latency distribution",
                "Rate of model_prediction_duration_seconds observations per "
                "bucket (successful /predict requests): where the bulk of the "
                "latency sits, and how wide the tail is.",
                [q("sum by (le) (rate(model_prediction_duration_seconds_bucket"
                   f"{{{IV}}}{RATE}))", "{{le}}", fmt="heatmap")],
                unit="reqps", y_unit="s"),
        timeseries("HTTP p95 latency by route",
                   "job_route:http_server_request_duration_seconds:p95_5m: p95 "
                   "of every HTTP route (predict, health, ready, metrics, "
                   "admin)." + RULES_NOTE,
                   [q("job_route:http_server_request_duration_seconds:p95_5m",
                      "{{route}}")],
                   unit="s", min_=0),
        table("HTTP requests by route and status code",
              "job_route_status_code:http_server_requests:rate5m: requests per "
              "second per route template and status code over 5 m." + RULES_NOTE,
              [q("sum by (route, status_code) "
                 "(job_route_status_code:http_server_requests:rate5m)",
                 instant=True, fmt="table")],
              unit="reqps", hide=("Time",), rename={"Value": "requests/s"},
              order=("route", "status_code", "Value"), sort_by="route"),
    )

    predictions = row(
        "Predictions", "What does the model predict?",
        heatmap("Predicted value distribution (regression)",
                "Rate of model_prediction_value observations per bucket: the "
                "distribution of predicted values. Regression models only; "
                "empty while a classifier is loaded.",
                [q("sum by (le) (rate(model_prediction_value_bucket"
                   f"{{{IV}}}{RATE}))", "{{le}}", fmt="heatmap")],
                unit="short", y_unit="none",
                no_value="The loaded model is not a regression model"),
        timeseries("Predicted classes per second (classification)",
                   "rate(model_predictions_total) by class: how often each class "
                   "is predicted. Classification models only; empty while a "
                   "regressor is loaded.",
                   [q("sum by (class) (rate(model_predictions_total"
                      f"{{{IV}}}{RATE}))", "{{class}}")],
                   unit="short", stack=True, min_=0,
                   no_value="The loaded model is not a classifier"),
    )

    model = row(
        "Model", "Which model is serving, and did reloads work?",
        table("Loaded model",
              "model_info: version, algorithm and training time of the model "
              "each instance serves.",
              [q(f"model_info{{{IV}}}", instant=True, fmt="table")],
              unit="none", h=6, hide=("Time", "Value", "__name__", "job"),
              order=("instance", "model_version", "algorithm", "trained_at"),
              no_value="No model loaded"),
        stat("Reloads since start",
             "model_reloads_total by result (SIGHUP or POST /admin/reload) since "
             "the service started; 0 until the first reload. A failed reload "
             "keeps the previous model and turns red.",
             [q(f'sum(model_reloads_total{{result="success", {I}}}) or on() vector(0)',
                "success"),
              q(f'sum(model_reloads_total{{result="failure", {I}}}) or on() vector(0)',
                "failure")],
             unit="short", w=12, h=6, decimals=0,
             overrides=[by_name("failure", thresholds=above(1))]),
    )

    resources = row(
        "Resources", "Is the service running out of memory or CPU?",
        timeseries("Service memory (RSS)",
                   "app_memory_usage_bytes: resident memory of the service. "
                   "Dashed line at 1.5 GiB: HighMemoryUsage fires after 5 m "
                   "above it.",
                   [q(f"app_memory_usage_bytes{{{I}}}", "{{instance}}")],
                   unit="bytes", w=8, min_=0, thresholds=above(APP_MEMORY_BYTES),
                   alerts=["HighMemoryUsage"]),
        timeseries("Service CPU",
                   "app_cpu_usage_percent: process CPU in percent of one core. "
                   "Dashed line at 90 %: HighCpuUsage fires after 10 m above it.",
                   [q(f"app_cpu_usage_percent{{{I}}}", "{{instance}}")],
                   unit="percent", w=8, min_=0, thresholds=above(APP_CPU_PERCENT),
                   alerts=["HighCpuUsage"]),
        timeseries("Host memory",
                   "system_memory_used_bytes against system_memory_total_bytes "
                   "on the service's host.",
                   [q(f'system_memory_used_bytes{{job="ml-api", {I}}}', "used · {{instance}}"),
                    q(f'system_memory_total_bytes{{job="ml-api", {I}}}', "total · {{instance}}")],
                   unit="bytes", w=8, min_=0),
    )

    psi = above(PSI_ALERT, watch=PSI_WATCH)
    drift = row(
        "Drift", "Do recent inputs and predictions still look like the training data?",
        timeseries("Fleet drift (PSI, all replicas, 10 m)",
                   "PSI of the last 10 minutes of traffic to every instance of the "
                   "job together, per feature and for the predictions "
                   "(prometheus/rules/ml_fleet.yml, from the bins every replica "
                   "counts). This is what DataDrift and PredictionDrift fire on "
                   "after 10 m above 0.2; the per-instance panels below drill "
                   "down with $instance.",
                   [q('job_model_version_feature:model_input_drift_psi:10m'
                      '{model_version=~"$model_version"}', "{{feature}} · {{model_version}}"),
                    q('job_model_version:model_prediction_drift_psi:10m'
                      '{model_version=~"$model_version"}', "predictions · {{model_version}}")],
                   unit="none", w=24, min_=0, thresholds=psi,
                   alerts=["DataDrift", "PredictionDrift"]),
        timeseries("Input drift (PSI) by feature, per instance",
                   "model_input_drift_psi: population stability index of each "
                   "replica's recent-request window (--drift-window samples) "
                   "against the training reference, per feature. Orange from 0.1 "
                   "(watch), red from 0.2. The alerts use the fleet PSI above.",
                   [q(f"model_input_drift_psi{{{I}}}", "{{feature}}")],
                   unit="none", min_=0, thresholds=psi, alerts=["DataDrift"]),
        bargauge("Current input PSI by feature",
                 "model_input_drift_psi at the last scrape, most drifted first. "
                 "Orange from 0.1 (watch), red from 0.2 (DataDrift).",
                 [q(f"sort_desc(model_input_drift_psi{{{I}}})", "{{feature}}",
                    instant=True)],
                 unit="none", min_=0, max_=0.5, thresholds=psi,
                 alerts=["DataDrift"]),
        timeseries("Out-of-range input values per second",
                   "rate(model_input_out_of_range_total) by feature: values "
                   "outside the training [min, max]. A flat 0 until the first "
                   "out-of-range value.",
                   [q("sum by (feature) (rate(model_input_out_of_range_total"
                      f"{{{I}}}{RATE})) or on() vector(0)", "{{feature}}")],
                   unit="short", w=8, min_=0),
        timeseries("Prediction drift (PSI)",
                   "model_prediction_drift_psi: PSI of recent predictions against "
                   "the reference predictions, per instance. Orange from 0.1 "
                   "(watch), red from 0.2. PredictionDrift uses the fleet PSI.",
                   [q(f"model_prediction_drift_psi{{{I}}}", "{{instance}}")],
                   unit="none", w=8, min_=0, thresholds=psi,
                   alerts=["PredictionDrift"]),
        timeseries("Drift window fill",
                   "model_drift_window_fill against model_drift_window_capacity "
                   "(--drift-window). A thin window gives noisy per-instance PSI; "
                   "the fleet alerts need 200 samples in 10 m instead.",
                   [q(f"model_drift_window_fill{{{I}}}", "fill · {{instance}}"),
                    q(f"model_drift_window_capacity{{{I}}}", "capacity · {{instance}}")],
                   unit="short", w=8, min_=0,
                   overrides=[by_regexp("/^capacity/", **{
                       "custom.lineStyle": {"fill": "dash", "dash": [10, 10]}})]),
    )

    alerts = row(
        "Alerts", "Which alerts are firing or about to fire?",
        table("Firing and pending alerts (Prometheus)",
              "ALERTS from Prometheus, one line per alert and state. Empty "
              "(\"No alerts\") while nothing fires. Runbooks: docs/runbooks.md.",
              [q('sum by (alertname, alertstate, severity) (ALERTS{alertstate=~"firing|pending"})',
                 instant=True, fmt="table")],
              unit="none", hide=("Time",), rename={"Value": "series"},
              order=("alertname", "alertstate", "severity", "Value"),
              sort_by="alertname", no_value="No alerts"),
        panel("alertlist", "Alert list",
              "Grafana's view of the Prometheus alert rules that are firing or "
              "pending (from the provisioned datasource).", [],
              unit="none", w=12, h=8,
              options={"viewMode": "list", "groupMode": "default",
                       "groupBy": [], "maxItems": 20, "sortOrder": 1,
                       "dashboardAlerts": False, "alertName": "",
                       "alertInstanceLabelFilter": "",
                       "stateFilter": {"firing": True, "pending": True,
                                       "noData": False, "normal": False,
                                       "error": True}}),
    )

    return dashboard(
        "mlwatch-predict-api", "mlwatch · Predict API",
        "Traffic, errors, latency, predictions, drift and resources of "
        "`mlwatch serve` (job ml-api). Generated by grafana/generate.py.",
        ["serving"],
        [variable("instance", "Instance", "label_values(model_loaded, instance)",
                  "Service instance(s) to show (raw metrics only)"),
         variable("model_version", "Model version",
                  "label_values(model_prediction_requests_total, model_version)",
                  "Model version(s) to show")],
        [overview, traffic, latency, predictions, model, resources, drift, alerts])


DASHBOARDS = {"training_dashboard.json": training,
              "predict_api_dashboard.json": predict_api}

# --------------------------------------------------------------------------
# Checks


def check(name, d):
    """Every problem with dashboard `d` as a list of strings (empty = fine)."""
    errors = []

    def err(where, msg):
        errors.append(f"{name}: {where}: {msg}")

    for key, want in (("schemaVersion", SCHEMA_VERSION), ("refresh", "10s"),
                      ("time", {"from": "now-30m", "to": "now"})):
        if d.get(key) != want:
            err("dashboard", f"{key} is {d.get(key)!r}, want {want!r}")
    if not d.get("uid"):
        err("dashboard", "no uid")
    for v in d["templating"]["list"]:
        if v.get("datasource") != DS:
            err(f"variable {v['name']}", "datasource is not the provisioned one")
        if not (v.get("includeAll") and v.get("allValue") == ".*"):
            err(f"variable {v['name']}", "needs includeAll and allValue .*")

    ids, cells = set(), {}
    for p in d["panels"]:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p["type"] not in PANEL_TYPES:
            err(where, f"type {p['type']} is not a core panel")
        if p["id"] in ids:
            err(where, "duplicate id")
        ids.add(p["id"])
        if p.get("datasource") != DS:
            err(where, "datasource is not the provisioned one")
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] <= 0 or g["h"] <= 0 or g["x"] + g["w"] > GRID_WIDTH:
            err(where, f"gridPos {g} outside the {GRID_WIDTH}-column grid")
        if p["type"] == "row" and (g["w"] != GRID_WIDTH or g["h"] != 1 or g["x"] != 0):
            err(where, "a row must be full width and 1 high")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    err(where, f"overlaps panel {cells[x, y]} at ({x}, {y})")
                    break
                cells[x, y] = p["id"]
            else:
                continue
            break
        if p["type"] == "row":
            continue
        if not p.get("description"):
            err(where, "no description")
        defaults = p["fieldConfig"]["defaults"]
        if not defaults.get("unit"):
            err(where, "no unit")
        th = defaults.get("thresholds", {}).get("steps", [])
        if not th or th[0]["value"] is not None:
            err(where, "thresholds must start with a base step")
        targets = p.get("targets", [])
        if p["type"] not in ("alertlist", "text") and not targets:
            err(where, "no targets")
        refids = [t.get("refId") for t in targets]
        if len(set(refids)) != len(refids) or not all(refids):
            err(where, "refIds missing or repeated")
        for t in targets:
            if t.get("datasource") != DS:
                err(where, f"target {t.get('refId')}: datasource is not the provisioned one")
            if not t.get("expr", "").strip():
                err(where, f"target {t.get('refId')}: no expr")
            if "_gpu_" in t.get("expr", "") and defaults.get("noValue") != NO_GPU:
                err(where, f"GPU panel must say {NO_GPU!r} when empty")
    return errors


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
                "and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(d):
    """Metric and recording-rule names that the dashboard's queries read."""
    names = set()
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in d["templating"]["list"]]
    for expr in exprs:
        e = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
        e = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", e)
        e = re.sub(r"label_values\(([^,]+),[^)]*\)", r"\1", e)
        for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
            word = m.group(0)
            rest = e[m.end():].lstrip()
            if rest.startswith("(") or word.lower() in PROMQL_WORDS:
                continue
            # Histogram series: docs/metrics.md lists the base name.
            names.add(re.sub(r"_bucket$", "", word))
    return names


def render(d):
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; fail if the committed JSON is stale")
    ap.add_argument("--metrics", action="store_true",
                    help="print the metric and recording-rule names queried")
    args = ap.parse_args()

    failed = False
    used = set()
    for filename, build in DASHBOARDS.items():
        d = build()
        problems = check(filename, d)
        for problem in problems:
            print(problem, file=sys.stderr)
        failed |= bool(problems)
        used |= metric_names(d)
        path = OUT_DIR / filename
        text = render(d)
        if args.check:
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current != text:
                failed = True
                diff = difflib.unified_diff(current.splitlines(), text.splitlines(),
                                            str(path), "generated", lineterm="", n=1)
                print("\n".join(list(diff)[:40]), file=sys.stderr)
                print(f"{path.relative_to(ROOT)} is stale: run python3 "
                      "grafana/generate.py and commit the result", file=sys.stderr)
        elif not problems and not args.metrics:
            path.write_text(text, encoding="utf-8")
            n = sum(1 for p in d["panels"] if p["type"] != "row")
            print(f"wrote {path.relative_to(ROOT)} ({n} panels)")
    if args.metrics:
        print("\n".join(sorted(used)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
