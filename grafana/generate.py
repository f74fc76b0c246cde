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

# The provisioned datasource (grafana/provisioning/datasources/prometheus.yml)
# is the default of the `datasource` variable; every panel, target,
# annotation and query variable names the variable, so the dashboards can be
# imported into a Grafana whose Prometheus has another uid.
DS_UID = "mlwatch-prometheus"
DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
# What Grafana 12.1 (docker-compose.yml) writes; 12.2+ and 13.x migrate it
# on load (grafana/schema-check checks both).
SCHEMA_VERSION = 41
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap",
               "text", "alertlist", "row"}

# The runbook base: a constant variable filled at provisioning (`mlwatch up
# --runbook-url` rewrites it; see docs/dashboards.md). The default is the
# page `mlwatch up` serves; the alerts read the same base from Prometheus'
# external label runbook_base. Grafana prefixes its own base URL to links
# that start with "/", so the base must be an absolute URL.
RUNBOOK_DEFAULT = "http://127.0.0.1:5001/runbooks"
RUNBOOKS = "${runbook_base}"
MLFLOW_DEFAULT = "http://127.0.0.1:5000"

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
RMSE_FACTOR = 1.5             # ModelQualityDegraded (regression)
ACCURACY_FACTOR = 0.85        # ModelQualityDegraded (classification)

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


def link(title, url, tooltip):
    """A link in the schema's DashboardLink shape (what @grafana/schema
    types panel links as, too)."""
    return {"title": title, "type": "link", "url": url, "icon": "doc",
            "tooltip": tooltip, "targetBlank": True, "asDropdown": False,
            "includeVars": False, "keepTime": False, "tags": []}


def runbook(alert):
    return link(f"Runbook: {alert}", f"{RUNBOOKS}#{alert.lower()}",
                f"What to do when {alert} fires")


def mlflow_link():
    """A data link from a model_info row to its MLflow run (labels
    mlflow_experiment_id and mlflow_run_id, empty without MLflow)."""
    return {"title": "MLflow run",
            "url": "${mlflow_url}/#/experiments/${__data.fields.mlflow_experiment_id}"
                   "/runs/${__data.fields.mlflow_run_id}",
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
          transformations=None, field_links=None):
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
    if field_links:
        defaults["links"] = field_links
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
    """A current-state stat: every target is an instant query, so a series
    that went stale (a dead target) shows noValue, never the last sample of
    the window. `last` on a one-point frame is that point."""
    for t in targets:
        t["instant"], t["range"] = True, False
    opts = {"reduceOptions": {"calcs": ["last"], "fields": "",
                              "values": False},
            "colorMode": "background" if len(thresholds["steps"]) > 1 else "value",
            "graphMode": "none", "justifyMode": "auto",
            "orientation": "auto", "textMode": "auto",
            "wideLayout": True, "showPercentChange": False,
            "percentChangeColorMode": "standard"}
    return panel("stat", title, description, targets, unit=unit, w=w, h=h,
                 thresholds=thresholds, options=opts, **kw)


def bargauge(title, description, targets, *, unit, w=12, h=8,
             thresholds=BASE, **kw):
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                              "values": False},
            "displayMode": "gradient", "orientation": "horizontal",
            "showUnfilled": True, "valueMode": "color",
            "legend": {"displayMode": "list", "placement": "bottom",
                       "showLegend": False, "calcs": []},
            "namePlacement": "auto", "sizing": "auto",
            "minVizHeight": 16, "minVizWidth": 8, "maxVizHeight": 300}
    return panel("bargauge", title, description, targets, unit=unit, w=w, h=h,
                 thresholds=thresholds, options=opts, **kw)


def table(title, description, targets, *, unit, hide=(), rename=None,
          order=(), sort_by=None, w=12, h=8, thresholds=BASE, **kw):
    # No `footer`: Grafana 13 dropped it from the table options.
    opts = {"showHeader": True, "cellHeight": "sm", "frameIndex": 0}
    transformations = [{"id": "organize", "options": {
        "excludeByName": {name: True for name in hide},
        "indexByName": {name: i for i, name in enumerate(order)},
        "renameByName": rename or {}}}]
    if sort_by:
        transformations.append({"id": "sortBy", "options": {
            "sort": [{"field": sort_by, "desc": False}]}})
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


def row(title, description, *panels, collapsed=False):
    """A dashboard row. Grafana's row panel has no description field, so
    the description stays in this script and in docs/dashboards.md."""
    return {"title": title, "description": description, "panels": list(panels),
            "collapsed": collapsed}


def variable(name, label, query, description, *, multi=True, default=None):
    """A query variable. Multi-select ones offer All (`.*`); a single-select
    one (job) starts on `default`."""
    v = {"type": "query", "name": name, "label": label,
         "description": description, "datasource": DS,
         "query": {"qryType": 1, "query": query,
                   "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "sort": 1, "includeAll": multi,
         "multi": multi, "regex": "", "hide": 0, "skipUrlSync": False,
         "options": []}
    if multi:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {"selected": True, "text": default, "value": default}
    return v


def datasource_variable():
    return {"type": "datasource", "name": "datasource", "label": "Datasource",
            "description": "Prometheus that holds the mlwatch metrics",
            "query": "prometheus", "regex": "", "refresh": 1, "hide": 0,
            "includeAll": False, "multi": False, "skipUrlSync": False,
            "current": {"selected": True, "text": "Prometheus", "value": DS_UID},
            "options": []}


def constant(name, value, description):
    """A hidden constant, rewritten at provisioning (mlwatch up, NixOS)."""
    return {"type": "constant", "name": name, "label": name,
            "description": description, "query": value, "hide": 2,
            "skipUrlSync": True,
            "current": {"selected": False, "text": value, "value": value},
            "options": [{"selected": True, "text": value, "value": value}]}


def textbox(name, label, value, description):
    return {"type": "textbox", "name": name, "label": label,
            "description": description, "query": value, "hide": 0,
            "skipUrlSync": False,
            "current": {"selected": False, "text": value, "value": value},
            "options": [{"selected": True, "text": value, "value": value}]}


def common_variables():
    """The variables every dashboard carries, after its own."""
    return [constant("runbook_base", RUNBOOK_DEFAULT,
                     "Base URL of the rendered docs/runbooks.md; each alert is an anchor"),
            textbox("mlflow_url", "MLflow", MLFLOW_DEFAULT,
                    "MLflow tracking server: model_info rows link to their run")]


def annotation(name, color, expr, title, text="", tags="", step="10s"):
    """A Prometheus annotation: Grafana draws one marker (or region, while
    consecutive steps return a sample) per series of `expr`."""
    return {"name": name, "enable": True, "hide": False, "iconColor": color,
            "datasource": DS,
            "target": {"expr": expr, "interval": step, "refId": "Anno"},
            "titleFormat": title, "textFormat": text, "tagKeys": tags,
            "useValueForTime": False}


def alert_annotation(job):
    return annotation(
        "Firing alerts", "red",
        f'ALERTS{{alertstate="firing", job=~"{job}"}}',
        "{{alertname}}", "{{severity}} · {{job}} {{instance}}", "alertname,severity")


def dashboard(uid, title, description, tags, variables, rows, annotations):
    """Lay out rows left to right, top to bottom, and number everything.
    A collapsed row holds its panels (Grafana lays them out below the row
    when it is opened); the rows after it follow the row header."""
    panels, y, next_id = [], 0, 1
    for r in rows:
        header = {"type": "row", "title": r["title"], "datasource": DS,
                  "collapsed": r["collapsed"], "panels": [], "id": next_id,
                  "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}}
        panels.append(header)
        next_id += 1
        top = y = y + 1
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
            (header["panels"] if r["collapsed"] else panels).append(p)
            x, line_h = x + w, max(line_h, h)
        y = top if r["collapsed"] else y + line_h
    return {
        "annotations": {"list": annotations},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [link("Runbooks", RUNBOOKS, "What to do when an alert fires"),
                  {"title": "mlwatch dashboards", "type": "dashboards",
                   "tags": ["mlwatch"], "asDropdown": True, "icon": "external link",
                   "includeVars": False, "keepTime": True, "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "panels": panels,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["mlwatch"] + tags,
        "templating": {"list": [datasource_variable()] + variables
                       + common_variables()},
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

# Every raw query is filtered by the job and instance variables.
I = 'job=~"$job", instance=~"$instance"'
RATE = "[$__rate_interval]"
# Final values of a run: the trainer is ephemeral, so its series end when it
# exits; the last sample in the selected range is what it finished with.
RANGE = "[$__range]"
BY_SPLIT = "{{split}} · {{instance}}"


def last(expr):
    return f"last_over_time({expr}{RANGE})"


def targets_up(what, mappings_down):
    # Pushed instances have no `up`: theirs is whether the heartbeat is
    # under 60 s old, the threshold of the down alerts (docs/otlp.md).
    heartbeat = ("time() - last_over_time(mlwatch_heartbeat_timestamp_seconds"
                 f"{{{I}}}[10m]) < bool 60")
    return stat("Targets up",
                f"up: 1 while Prometheus scrapes the {what}, 0 when the scrape "
                "fails. An instant query: a dead target shows down within one "
                "scrape interval. Pushed instances (docs/otlp.md) have no up: "
                "1 while their heartbeat is under 60 s old, 0 for 10 m after "
                "it stopped." + (
                    " A trainer that finished and exited is down by design; "
                    "TrainingTargetDown fires only if its last report said it "
                    "was still training." if what == "trainer" else
                    " MlApiDown fires after 1 m down."),
                [q(f"up{{{I}}} or on (job, instance) ({heartbeat})", "{{instance}}")],
                unit="none", w=4, thresholds=steps(("red", None), ("green", 1)),
                mappings=bool_mapping(mappings_down, "red", "up", "green"),
                alerts=["MlApiDown" if what == "service" else "TrainingTargetDown"])


def training():
    age = f"time() - {last(f'training_last_update_timestamp_seconds{{{I}}}')}"
    status = row(
        "Status", "Is a run going, is it alive, and what did it produce?",
        targets_up("trainer", "down"),
        stat("Training in progress",
             "training_in_progress now: 1 while a run trains, 0 once it has "
             "finished (the trainer lingers so the final values can be "
             "scraped). Empty once the trainer has exited or died: see "
             "Targets up and Heartbeat age.",
             [q(f"training_in_progress{{{I}}}", "{{instance}}")],
             unit="none", w=4, no_value="No trainer running",
             mappings=bool_mapping("finished", "green", "training", "blue")),
        stat("Heartbeat age",
             "Seconds since the trainer last reported an iteration or a batch "
             "(time() - the last training_last_update_timestamp_seconds in "
             "the range), so it keeps growing after a crash. Coloured only "
             "while the last report said training (red from 900 s: "
             "StalledTraining fires after 1 m above it; a trainer that died "
             "mid-run turns red too). After a normal finish it is plain text.",
             [q(f"({age}) and on (job, instance) "
                f"({last(f'training_in_progress{{{I}}}')} == 1)",
                "training · {{instance}}"),
              q(f"({age}) and on (job, instance) "
                f"({last(f'training_in_progress{{{I}}}')} == 0)",
                "finished · {{instance}}")],
             unit="s", w=4, thresholds=above(HEARTBEAT_SECONDS),
             no_value="No run in range",
             overrides=[by_regexp("/^finished/", thresholds=BASE,
                                  color=color("text"))],
             alerts=["StalledTraining"]),
        stat("Training duration",
             "training_duration_seconds: wall time of the run, frozen when it "
             "finishes; the last value in the selected range, so it survives "
             "the trainer's exit.",
             [q(last(f"training_duration_seconds{{{I}}}"), "{{instance}}")],
             unit="s", w=4, no_value="No run in range"),
        table("Model version & algorithm",
              "training_model_info: the artifact each run wrote, as last seen "
              "in the selected range (set when the run finishes; it survives "
              "the trainer's exit). MLflow run: a click opens it.",
              [q(last(f"training_model_info{{{I}}}"), instant=True, fmt="table")],
              unit="none", w=8, h=4,
              hide=("Time", "Value", "__name__", "job"),
              order=("instance", "model_version", "algorithm",
                     "mlflow_experiment_id", "mlflow_run_id"),
              no_value="No finished run in range",
              field_links=[mlflow_link()]),
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
        table("Hyperparameters",
              "training_hyperparameter by name: the value of each "
              "hyperparameter (alpha, l1_ratio, max_depth, learning_rate, ...) "
              "as last seen in the selected range. A table, because their "
              "scales differ by orders of magnitude.",
              [q(last(f"training_hyperparameter{{{I}}}"), instant=True, fmt="table")],
              unit="none", w=8, hide=("Time", "__name__", "job"),
              rename={"Value": "value"}, order=("instance", "name", "Value"),
              sort_by="name", no_value="No run in range"),
    )

    structure = row(
        "Model structure (tree models)",
        "How big and how deep did the trees grow? Tree models only.",
        *[stat(title, f"{metric}: {meaning} The last value in the selected "
               "range, so it survives the trainer's exit.",
               [q(last(f"{metric}{{{I}}}"), "{{instance}}")],
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
                 [q("sort_desc(topk by (instance) (5, "
                    f"{last(f'feature_importance{{{I}}}')}))",
                    "{{feature_name}} · {{instance}}", instant=True)],
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
                   [q(f'system_memory_used_bytes{{{I}}}', "used · {{instance}}"),
                    q(f'system_memory_total_bytes{{{I}}}', "total · {{instance}}")],
                   unit="bytes", w=8, min_=0),
    )

    # Tracking failures never stop training (the trainer only counts them),
    # so without a panel a run silently goes missing from MLflow.
    tracking = row(
        "Experiment tracking (MLflow)",
        "Did every run reach the MLflow tracking server?",
        stat("MLflow calls failed in range",
             "increase(training_mlflow_errors_total) over the selected range: "
             "MLflow calls that failed after their retries. Training goes on "
             "without MLflow, so a failure means a run that is missing or "
             "incomplete in MLflow while the local artifact is complete. "
             "Orange from 1. 0 also when the trainer runs without MLflow.",
             [q("round(sum(increase(training_mlflow_errors_total"
                f"{{{I}}}{RANGE}))) or on() vector(0)", "failed calls")],
             unit="short", w=8, decimals=0,
             thresholds=steps(("green", None), ("orange", 1))),
        timeseries("MLflow failures by operation",
                   "increase(training_mlflow_errors_total) over 5 m by "
                   "operation (experiment, create_run, log_batch, update_run, "
                   "upload_artifact, register_model): which part of the run "
                   "MLflow did not take.",
                   [q("sum by (operation) (increase(training_mlflow_errors_total"
                      f"{{{I}}}[5m]))", "{{operation}}")],
                   unit="short", w=16, min_=0),
    )

    gpus = row(
        "GPU (only with an NVIDIA GPU)",
        "GPU load of the trainer, read through NVML. Empty on CPU-only hosts.",
        collapsed=True,
        *gpu_panels("training", "trainer"))
    return dashboard(
        "mlwatch-training", "mlwatch · Training",
        "Progress, quality, model structure and resources of `mlwatch train` "
        "runs (job model-training). Generated by grafana/generate.py.",
        ["training"],
        [variable("job", "Job", "label_values(training_in_progress, job)",
                  "Prometheus job of the trainers (one deployment)",
                  multi=False, default="model-training"),
         variable("instance", "Trainer",
                  'label_values(training_in_progress{job=~"$job"}, instance)',
                  "Trainer instance(s) to show")],
        [status, progress, structure, importance, tracking, resources, gpus],
        [alert_annotation("$job"),
         annotation("Training started", "blue",
                    f"(training_in_progress{{{I}}} == 1) unless on (job, instance) "
                    f"(training_in_progress{{{I}}} offset 30s)",
                    "Training started on {{instance}}", tags="instance"),
         annotation("Training finished", "green",
                    f"(training_in_progress{{{I}}} == 0) unless on (job, instance) "
                    f"(training_in_progress{{{I}}} offset 30s == 0)",
                    "Training finished on {{instance}}", tags="instance"),
         annotation("Trainer vanished mid-run", "red",
                    f"(training_in_progress{{{I}}} offset 30s == 1) unless on "
                    f"(job, instance) training_in_progress{{{I}}}",
                    "Trainer {{instance}} stopped reporting while training",
                    tags="instance")])


def gpu_panels(prefix, who):
    def gpu(title, description, targets, unit, **kw):
        return timeseries(title, description + " Only exported with an NVIDIA "
                          "GPU; shows \"" + NO_GPU + "\" otherwise.",
                          targets, unit=unit, w=6, no_value=NO_GPU, min_=0, **kw)
    m = f"{prefix}_gpu_"
    return (
        gpu("GPU utilization", f"{m}utilization_percent by gpu ({who}).",
            [q(f"{m}utilization_percent{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "percent", max_=100),
        gpu("GPU memory", f"{m}memory_used_bytes against "
            f"{m}memory_total_bytes by gpu ({who}).",
            [q(f"{m}memory_used_bytes{{{I}}}", "used GPU {{gpu}} · {{instance}}"),
             q(f"{m}memory_total_bytes{{{I}}}", "total GPU {{gpu}} · {{instance}}")],
            "bytes"),
        gpu("GPU temperature", f"{m}temperature_celsius by gpu ({who}).",
            [q(f"{m}temperature_celsius{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "celsius"),
        gpu("GPU power", f"{m}power_watts by gpu ({who}).",
            [q(f"{m}power_watts{{{I}}}", "GPU {{gpu}} · {{instance}}")],
            "watt"),
    )


# --------------------------------------------------------------------------
# Prediction API dashboard (job ml-api)

V = 'model_version=~"$model_version"'
IV = f"{I}, {V}"
# Instance-level recording rules (prometheus/rules/ml_recording.yml): the
# job-level rules behind the alerts are sums of these, so a panel filtered
# to one instance and the alert agree when All is selected.
REQ = "job_instance_model_version_status:model_prediction_requests:rate5m"
DUR = "job_instance_model_version_le:model_prediction_duration_seconds_bucket:rate5m"
HTTP_DUR = "job_instance_route_le:http_server_request_duration_seconds_bucket:rate5m"
# The same latency as native histograms, recorded from the push path's
# OTLP exponential histograms (docs/otlp.md); empty on the scrape path, as
# the bucket rules are on the push path. Quantiles read whichever exists.
DUR_NATIVE = "job_instance_model_version:model_prediction_duration_seconds:rate5m"
HTTP_DUR_NATIVE = "job_instance_route:http_server_request_duration_seconds:rate5m"
HTTP_REQ = "job_instance_route_status_code:http_server_requests:rate5m"
RULES_NOTE = (" From an instance-level recording rule in "
              "prometheus/rules/ml_recording.yml (the alert's job-level rule "
              "is its sum), filtered by job, instance and model version.")
NO_TRAFFIC = "No traffic"


def ratio(status, by=""):
    """Share of /predict requests with `status`; no sample without traffic
    (the `> 0` guard), exactly like the job-level rule behind the alert."""
    agg = f"sum by ({by})" if by else "sum"
    return (f'{agg} ({REQ}{{status="{status}", {IV}}}) / '
            f"({agg} ({REQ}{{{IV}}}) > 0)")


def both_paths(qq, buckets, native, selector, by):
    """A quantile from the scrape path's buckets, or else from the push
    path's native histogram (docs/otlp.md, "Histograms and quantiles")."""
    return (f"histogram_quantile({qq}, sum by ({by}, le) ({buckets}{{{selector}}})) or "
            f"histogram_quantile({qq}, sum by ({by}) ({native}{{{selector}}}))")


def quantile(qq, by="model_version"):
    return both_paths(qq, DUR, DUR_NATIVE, IV, by)


# Quality from ground truth (prometheus/rules/ml_quality.yml): sums of the
# instance-level 30m increases over the selected instances, then the ratio,
# so "All" instances is the fleet value the alert reads and one instance is
# that replica's own.
QI = "job_instance_model_version"


def fsum(metric):
    return f"sum by (model_version) ({QI}:model_feedback_{metric}:increase30m{{{IV}}})"


N30 = f"({fsum('labelled')} > 0)"


def serving(expr, name):
    return f'label_replace({expr}, "series", "{name} serving", "", "")'


def at_training(metrics):
    return (f'label_replace(max by (model_version, metric) (model_training_score'
            f'{{{IV}, metric=~"{metrics}"}}), "series", "$1 at training", "metric", "(.*)")')


def quality_row():
    mae = f"{fsum('absolute_error')} / {N30}"
    rmse = f"sqrt({fsum('squared_error')} / {N30})"
    r2 = (f"1 - {fsum('squared_error')} / (({fsum('truth_squared')} - "
          f"{fsum('truth')} ^ 2 / {N30}) > 0)")
    accuracy = (f"sum by (model_version) ({QI}_class:model_feedback_correct:increase30m"
                f"{{{IV}}}) / {N30}")
    legend = "{{series}} · {{model_version}}"
    return row(
        "Quality from ground truth",
        "Is the model still right? Truth sent to POST /feedback, joined to "
        "the prediction it belongs to by its signed id, over 30 minutes "
        "(docs/quality.md). All instances: the fleet; one instance: what "
        "that replica joined.",
        timeseries("Error vs training (MAE, RMSE, 30 m)",
                   "Serving MAE and RMSE of the labelled predictions of the last "
                   "30 minutes, against the validation MAE and RMSE the same "
                   "model version scored at training time (model_training_score). "
                   "ModelQualityDegraded fires when the fleet RMSE stays above "
                   f"{RMSE_FACTOR} × the training RMSE for 10 m over ≥ 200 labels. "
                   "Only the training lines while no feedback arrives.",
                   [q(f"{serving(mae, 'MAE')} or {serving(rmse, 'RMSE')} or "
                      f"{at_training('mae|rmse')}", legend)],
                   unit="none", w=12, min_=0, alerts=["ModelQualityDegraded"]),
        timeseries("R² or accuracy vs training (30 m)",
                   "Regression: R² = 1 − SSE / (Σy² − (Σy)²/n) of the last 30 "
                   "minutes of feedback; classification: accuracy. Against the "
                   "version's validation R² or accuracy. ModelQualityDegraded "
                   f"fires below {ACCURACY_FACTOR} × the training accuracy. Only "
                   "the training lines while no feedback arrives.",
                   [q(f"{serving(r2, 'R²')} or {serving(accuracy, 'accuracy')} or "
                      f"{at_training('r_squared|accuracy')}", legend)],
                   unit="none", w=12, alerts=["ModelQualityDegraded"]),
        timeseries("Feedback outcomes per second",
                   "POST /feedback items by outcome (model_feedback_total): "
                   "accepted, forged (bad or altered id), expired "
                   "(--feedback-window), duplicate, invalid_truth, "
                   "unknown_version, malformed. A flat 0 (outcome \"none\") "
                   "without a feedback key. GroundTruthStalled fires when ids "
                   "are issued but nothing is accepted for 30 m.",
                   [q("sum by (outcome) (job_instance_outcome:model_feedback:rate5m"
                      f"{{{I}}}) or on() "
                      'label_replace(vector(0), "outcome", "none", "", "")',
                      "{{outcome}}")],
                   unit="short", w=8, min_=0, stack=True,
                   alerts=["GroundTruthStalled"]),
        timeseries("Coverage (labelled share of ids issued, 30 m)",
                   "Labelled predictions / prediction ids issued over 30 "
                   "minutes. Labels that take longer than the window make it "
                   "read low. 0 while no ids are issued (no feedback key).",
                   [q(f"sum({QI}:model_feedback_labelled:increase30m{{{IV}}}) / "
                      f"(sum({QI}:model_prediction_ids_issued:increase30m{{{IV}}}) > 0)"
                      " or on() vector(0)", "coverage")],
                   unit="percentunit", w=8, min_=0, max_=1),
        timeseries("Label delay p50 / p95 (30 m)",
                   "Time from a prediction to its accepted feedback "
                   "(model_feedback_delay_seconds), quantiles of the last 30 "
                   "minutes. 0 while no feedback arrives.",
                   [q("histogram_quantile(0.5, sum by (le) "
                      f"({QI}_le:model_feedback_delay_seconds_bucket:increase30m{{{IV}}}))"
                      " or on() vector(0)", "p50"),
                    q("histogram_quantile(0.95, sum by (le) "
                      f"({QI}_le:model_feedback_delay_seconds_bucket:increase30m{{{IV}}}))"
                      " or on() vector(0)", "p95")],
                   unit="s", w=8, min_=0),
    )


def predict_api():
    overview = row(
        "Overview", "Is the service up, serving, fast and correct right now?",
        targets_up("service", "down"),
        stat("Model loaded",
             "model_loaded now: 1 when a model is loaded and /ready answers "
             "200. ModelNotLoaded fires after 2 m at 0. Empty (\"Not "
             "scraped\") once the service is down: see Targets up.",
             [q(f"model_loaded{{{I}}}", "{{instance}}")],
             unit="none", w=3, thresholds=steps(("red", None), ("green", 1)),
             mappings=bool_mapping("no model", "red", "loaded", "green"),
             no_value="Not scraped", alerts=["ModelNotLoaded"]),
        stat("Request rate",
             "/predict requests per second over 5 m, all outcomes." + RULES_NOTE,
             [q(f"sum({REQ}{{{IV}}})", "requests")],
             unit="reqps", w=3, no_value=NO_TRAFFIC),
        stat("Error ratio",
             "Share of /predict requests that failed with status=\"error\" "
             "over 5 m. Red from 10 %: HighErrorRate fires after 5 m above "
             "it. \"No traffic\" without requests." + RULES_NOTE,
             [q(ratio("error"), "errors")],
             unit="percentunit", w=3, decimals=1, no_value=NO_TRAFFIC,
             thresholds=above(ERROR_RATIO), alerts=["HighErrorRate"]),
        stat("Invalid-input ratio",
             "Share of /predict requests rejected as invalid input over 5 m. "
             "Red from 20 %: InvalidInputSurge fires after 2 m above it (when "
             "traffic exceeds 0.1 req/s). \"No traffic\" without requests."
             + RULES_NOTE,
             [q(ratio("invalid_input"), "invalid input")],
             unit="percentunit", w=3, decimals=1, no_value=NO_TRAFFIC,
             thresholds=above(INVALID_RATIO), alerts=["InvalidInputSurge"]),
        stat("p95 latency (slowest version)",
             "Highest p95 /predict latency over the selected model versions, "
             "over 5 m. Red from 1 s: SlowPredictionResponse fires after 5 m "
             "above it." + RULES_NOTE,
             [q(f"max({quantile(0.95)})", "p95")],
             unit="s", w=4, thresholds=above(P95_SECONDS), no_value=NO_TRAFFIC,
             alerts=["SlowPredictionResponse"]),
        stat("In-flight requests",
             "http_server_active_requests: HTTP requests being served right now.",
             [q(f"sum(http_server_active_requests{{{I}}})", "in flight")],
             unit="short", w=4, no_value="Not scraped"),
    )

    traffic = row(
        "Traffic & errors", "How much traffic, and how much of it fails?",
        timeseries("Requests by status",
                   "/predict requests per second by outcome (success, "
                   "invalid_input, error)." + RULES_NOTE,
                   [q(f"sum by (status) ({REQ}{{{IV}}})", "{{status}}")],
                   unit="reqps", stack=True, min_=0, w=8,
                   overrides=[by_name("success", color=color("green")),
                              by_name("invalid_input", color=color("orange")),
                              by_name("error", color=color("red"))]),
        # Two panels: Grafana's time series draws one threshold set per
        # y-scale, so two ratios sharing an axis could show only one line.
        timeseries("Error ratio",
                   "Share of /predict requests with status=\"error\" over 5 m. "
                   "Dashed line at 10 %: HighErrorRate fires after 5 m above "
                   "it." + RULES_NOTE,
                   [q(ratio("error"), "errors")],
                   unit="percentunit", min_=0, w=8, no_value=NO_TRAFFIC,
                   thresholds=above(ERROR_RATIO), alerts=["HighErrorRate"]),
        timeseries("Invalid-input ratio",
                   "Share of /predict requests rejected as invalid input over "
                   "5 m. Dashed line at 20 %: InvalidInputSurge fires after 2 m "
                   "above it (when traffic exceeds 0.1 req/s)." + RULES_NOTE,
                   [q(ratio("invalid_input"), "invalid input")],
                   unit="percentunit", min_=0, w=8, no_value=NO_TRAFFIC,
                   thresholds=above(INVALID_RATIO), alerts=["InvalidInputSurge"]),
        timeseries("Requests by model version",
                   "/predict requests per second per model_version: traffic "
                   "moving from one artifact to the next during a rollout."
                   + RULES_NOTE,
                   [q(f"sum by (model_version) ({REQ}{{{IV}}})", "{{model_version}}")],
                   unit="reqps", min_=0, no_value=NO_TRAFFIC),
        timeseries("Error ratio by model version",
                   "Share of /predict requests with status=\"error\" per "
                   "model_version over 5 m: is the new artifact failing where "
                   "the old one did not? Dashed line at 10 % (HighErrorRate "
                   "judges the whole job)." + RULES_NOTE,
                   [q(ratio("error", "model_version"), "{{model_version}}")],
                   unit="percentunit", min_=0, no_value=NO_TRAFFIC,
                   thresholds=above(ERROR_RATIO), alerts=["HighErrorRate"]),
        # The service's self-protection: without this panel a slowloris or
        # a saturated in-flight cap shows only as vague errors.
        timeseries("Refused requests by reason",
                   "http_server_refused_requests_total per second over 5 m, by "
                   "reason: header_timeout (a request header slower than "
                   "--header-read-timeout, 408), body_timeout (a body slower "
                   "than --body-read-timeout, 408), busy (--max-inflight-bodies "
                   "bodies already being read, 503; also counted as "
                   "status=\"error\"). Flat at 0 is healthy.",
                   [q("sum by (reason) (rate(http_server_refused_requests_total"
                      f"{{{I}}}[5m]))", "{{reason}}")],
                   unit="reqps", min_=0, w=24,
                   overrides=[by_name("busy", color=color("red")),
                              by_name("header_timeout", color=color("orange")),
                              by_name("body_timeout", color=color("yellow"))]),
    )

    latency = row(
        "Latency", "How fast are predictions, per model version and per route?",
        timeseries("Prediction latency p50 / p95 / p99",
                   "Quantiles of model_prediction_duration_seconds (successful "
                   "/predict requests) per model_version over 5 m. Dashed line "
                   "at 1 s: SlowPredictionResponse fires when p95 stays above "
                   "it for 5 m." + RULES_NOTE,
                   [q(quantile(qq), f"{p} · {{{{model_version}}}}")
                    for p, qq in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))],
                   unit="s", min_=0, thresholds=above(P95_SECONDS),
                   no_value=NO_TRAFFIC, alerts=["SlowPredictionResponse"]),
        heatmap("Prediction latency distribution",
                "Rate of model_prediction_duration_seconds observations per "
                "bucket (successful /predict requests): where the bulk of the "
                "latency sits, and how wide the tail is.",
                [q("sum by (le) (rate(model_prediction_duration_seconds_bucket"
                   f"{{{IV}}}{RATE})) or sum(rate(model_prediction_duration_seconds"
                   f"{{{IV}}}{RATE}))", "{{le}}", fmt="heatmap")],
                unit="reqps", y_unit="s", no_value=NO_TRAFFIC),
        timeseries("HTTP p95 latency by route",
                   "p95 of every HTTP route (predict, health, ready, metrics, "
                   "admin) over 5 m." + RULES_NOTE,
                   [q(both_paths(0.95, HTTP_DUR, HTTP_DUR_NATIVE, I, "route"),
                      "{{route}}")],
                   unit="s", min_=0),
        table("HTTP requests by route and status code",
              "Requests per second per route template and status code over "
              "5 m." + RULES_NOTE,
              [q(f"sum by (route, status_code) ({HTTP_REQ}{{{I}}})",
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
              "model_info: version, algorithm, training time and MLflow run "
              "of the model each instance serves now. A click on a row opens "
              "its MLflow run (${mlflow_url}).",
              [q(f"model_info{{{I}}}", instant=True, fmt="table")],
              unit="none", h=6, hide=("Time", "Value", "__name__", "job"),
              order=("instance", "model_version", "algorithm", "trained_at",
                     "mlflow_experiment_id", "mlflow_run_id"),
              no_value="No model loaded (or service not scraped)",
              field_links=[mlflow_link()]),
        stat("Reloads in the selected range",
             "increase(model_reloads_total) by result over the selected range "
             "(SIGHUP or POST /admin/reload). A failed reload keeps the "
             "previous model and turns red. Markers on the time series show "
             "when each reload happened.",
             [q(f'round(sum(increase(model_reloads_total{{result="success", {I}}}{RANGE}))) '
                "or on() vector(0)", "success"),
              q(f'round(sum(increase(model_reloads_total{{result="failure", {I}}}{RANGE}))) '
                "or on() vector(0)", "failure")],
             unit="short", w=6, h=6, decimals=0,
             overrides=[by_name("failure", thresholds=above(1))]),
        stat("Unauthorized admin requests",
             "increase(admin_unauthorized_requests_total) over the selected "
             "range: POST /admin/reload with a missing or wrong bearer "
             "token. Orange from 1: someone without the token is trying.",
             [q("round(sum(increase(admin_unauthorized_requests_total"
                f"{{{I}}}{RANGE}))) or on() vector(0)", "unauthorized")],
             unit="short", w=6, h=6, decimals=0,
             thresholds=steps(("green", None), ("orange", 1))),
        timeseries("Registry polls by result",
                   "model_registry_polls_total per second by result, for "
                   "replicas that load their model from the MLflow registry "
                   "(serve --model-uri): unchanged and updated are good "
                   "polls; resolve_error (registry down, alias missing), "
                   "load_error (version not downloadable or invalid) and "
                   "known_bad (the alias still at a refused version) are "
                   "not. ModelRolloutStuck fires when a replica had no good "
                   "poll for 10 m. All 0 for replicas serving a file.",
                   [q("sum by (result) (rate(model_registry_polls_total"
                      f"{{{I}}}{RATE}))", "{{result}}")],
                   unit="short", w=24, h=6, min_=0,
                   alerts=["ModelRolloutStuck"]),
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
                   [q(f"system_memory_used_bytes{{{I}}}", "used · {{instance}}"),
                    q(f"system_memory_total_bytes{{{I}}}", "total · {{instance}}")],
                   unit="bytes", w=8, min_=0),
    )

    gpus = row(
        "GPU (only with an NVIDIA GPU)",
        "GPU load of the service, read through NVML. Empty on CPU-only hosts.",
        collapsed=True,
        *gpu_panels("app", "service"))

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
                      '{job=~"$job", model_version=~"$model_version"}',
                      "{{feature}} · {{model_version}}"),
                    q('job_model_version:model_prediction_drift_psi:10m'
                      '{job=~"$job", model_version=~"$model_version"}',
                      "predictions · {{model_version}}")],
                   unit="none", w=24, min_=0, thresholds=psi,
                   alerts=["DataDrift", "PredictionDrift"]),
        timeseries("Input drift (PSI) by feature, per instance",
                   "model_input_drift_psi: population stability index of each "
                   "replica's recent-request window (--drift-window samples) "
                   "against the training reference, per feature. Orange from 0.1 "
                   "(watch), red from 0.2. The alerts use the fleet PSI above.",
                   [q(f"model_input_drift_psi{{{I}}}", "{{feature}} · {{instance}}")],
                   unit="none", min_=0, thresholds=psi, alerts=["DataDrift"]),
        bargauge("Current input PSI by feature",
                 "model_input_drift_psi now, most drifted first. "
                 "Orange from 0.1 (watch), red from 0.2 (DataDrift).",
                 [q(f"sort_desc(model_input_drift_psi{{{I}}})",
                    "{{feature}} · {{instance}}", instant=True)],
                 unit="none", min_=0, max_=0.5, thresholds=psi,
                 no_value="Not scraped", alerts=["DataDrift"]),
        timeseries("Out-of-range input values per second",
                   "rate(model_input_out_of_range_total) by feature: values "
                   "outside the training [min, max]. A flat 0 (feature "
                   "\"none\") until the first out-of-range value.",
                   [q("sum by (feature) (rate(model_input_out_of_range_total"
                      f"{{{I}}}{RATE})) or on() "
                      'label_replace(vector(0), "feature", "none", "", "")',
                      "{{feature}}")],
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

    quality = quality_row()

    alerts = row(
        "Alerts", "Which alerts are firing or about to fire?",
        table("Firing and pending alerts (Prometheus)",
              "ALERTS from Prometheus, one line per alert and state. Empty "
              "(\"No alerts\") while nothing fires. Runbooks: ${runbook_base}.",
              [q('sum by (alertname, alertstate, severity) '
                 '(ALERTS{alertstate=~"firing|pending"})',
                 instant=True, fmt="table")],
              unit="none", hide=("Time",), rename={"Value": "series"},
              order=("alertname", "alertstate", "severity", "Value"),
              sort_by="alertname", no_value="No alerts"),
        panel("alertlist", "Alert list",
              "Grafana's view of the alert rules of the provisioned "
              "Prometheus datasource (by its name, Prometheus) that are "
              "firing, pending or recovering, most important first.", [],
              unit="none", w=12, h=8,
              options={"viewMode": "list", "groupMode": "default",
                       "groupBy": [], "maxItems": 20, "sortOrder": 3,
                       "dashboardAlerts": False, "alertName": "",
                       "alertInstanceLabelFilter": "",
                       "datasource": "Prometheus",
                       "stateFilter": {"firing": True, "pending": True,
                                       "recovering": True,
                                       "noData": False, "normal": False,
                                       "error": True}}),
    )

    return dashboard(
        "mlwatch-predict-api", "mlwatch · Predict API",
        "Traffic, errors, latency, predictions, drift and resources of "
        "`mlwatch serve` (job ml-api). Generated by grafana/generate.py.",
        ["serving"],
        [variable("job", "Job", "label_values(model_loaded, job)",
                  "Prometheus job of the service (one deployment)",
                  multi=False, default="ml-api"),
         variable("instance", "Instance",
                  'label_values(model_loaded{job=~"$job"}, instance)',
                  "Service instance(s) to show"),
         variable("model_version", "Model version",
                  'label_values(model_info{job=~"$job", instance=~"$instance"}, '
                  "model_version)",
                  "Model version(s) to show (those the selected instances serve)")],
        [overview, traffic, latency, predictions, model, resources, gpus, drift, quality,
         alerts],
        [alert_annotation("$job"),
         annotation("Model reloaded", "green",
                    f'increase(model_reloads_total{{result="success", {I}}}[1m]) > 0',
                    "Model reloaded on {{instance}}", tags="instance"),
         annotation("Reload failed", "orange",
                    f'increase(model_reloads_total{{result="failure", {I}}}[1m]) > 0',
                    "Reload failed on {{instance}} (previous model kept)",
                    tags="instance"),
         annotation("Served model changed", "purple",
                    f"model_info{{{I}}} unless on (job, instance, model_version) "
                    f"(model_info{{{I}}} offset 30s)",
                    "Now serving {{model_version}} on {{instance}}",
                    "{{algorithm}}, trained {{trained_at}}", tags="model_version")])


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
    names = [v["name"] for v in d["templating"]["list"]]
    for needed in ("datasource", "job", "instance", "runbook_base", "mlflow_url"):
        if needed not in names:
            err("dashboard", f"no {needed} variable")
    for v in d["templating"]["list"]:
        if v["type"] != "query":
            continue
        if v.get("datasource") != DS:
            err(f"variable {v['name']}", "datasource is not the datasource variable")
        if v.get("multi") and not (v.get("includeAll") and v.get("allValue") == ".*"):
            err(f"variable {v['name']}", "a multi-select needs includeAll and allValue .*")
    alerts = alert_names()
    links = [(link["title"], link["url"]) for link in d["links"] if link["type"] == "link"]
    for p in all_panels(d):
        links += [(f"panel {p['title']!r}", link["url"]) for link in p.get("links", [])]
    for where, url in links:
        base, _, anchor = url.partition("#")
        if base != RUNBOOKS:
            err(where, f"link {url} does not start with {RUNBOOKS}")
        if anchor and anchor not in {a.lower() for a in alerts}:
            err(where, f"link {url}: no alert {anchor!r} in prometheus/rules")
    for a in d["annotations"]["list"]:
        if a.get("datasource") != DS or not a.get("target", {}).get("expr", "").strip():
            err(f"annotation {a.get('name')!r}", "needs the datasource variable and an expr")

    ids = set()
    top = [p for p in d["panels"]]
    nested = [p["panels"] for p in d["panels"] if p["type"] == "row" and p["collapsed"]]
    for group in [top] + nested:
        cells = {}
        for p in group:
            g = p["gridPos"]
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        err(f"panel {p['id']}", f"overlaps panel {cells[x, y]} at ({x}, {y})")
                        break
                    cells[x, y] = p["id"]
                else:
                    continue
                break
    for p in all_panels(d):
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


def all_panels(d):
    """Every panel, those inside collapsed rows included."""
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def alert_names():
    """Alert names of prometheus/rules/*.yml (a line scan: no YAML parser in
    the standard library, and the rule files keep `- alert: Name` lines)."""
    names = set()
    for path in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        names |= set(re.findall(r"^\s*- alert:\s*(\w+)", path.read_text(), re.M))
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
                "and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(d):
    """Metric and recording-rule names that the dashboard's queries read."""
    names = set()
    exprs = [t["expr"] for p in all_panels(d) for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in d["templating"]["list"] if v["type"] == "query"]
    exprs += [a["target"]["expr"] for a in d["annotations"]["list"]]
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


def folder_layout():
    """One folder layout everywhere: the provider files dashboards by
    directory (foldersFromFilesStructure) and sets no `folder` that Grafana
    would ignore; every dashboard sits at the top, i.e. in General."""
    problems = []
    provider = (OUT_DIR / "dashboard.yml").read_text(encoding="utf-8")
    if not re.search(r"^\s*foldersFromFilesStructure:\s*true\s*$", provider, re.M):
        problems.append("dashboard.yml: foldersFromFilesStructure must be true")
    if re.search(r"^\s*folder:", provider, re.M):
        problems.append("dashboard.yml: a `folder` key is ignored with "
                        "foldersFromFilesStructure; remove it")
    for path in OUT_DIR.rglob("*.json"):
        if path.parent != OUT_DIR:
            problems.append(f"{path.relative_to(ROOT)}: dashboards stay at the top "
                            "of the provider path (the General folder)")
    return problems


def set_variable(d, name, value):
    for v in d["templating"]["list"]:
        if v["name"] == name:
            v["query"] = value
            v["current"] = {"selected": False, "text": value, "value": value}
            v["options"] = [{"selected": True, "text": value, "value": value}]


def write_provisioned(out, runbook_url, mlflow_url):
    """The dashboards with other provisioning-time values (NixOS module,
    a compose deployment whose runbooks live elsewhere)."""
    if not re.match(r"^https?://[^#]+$", runbook_url):
        print(f"--runbook-url {runbook_url!r} must be an absolute http(s) URL "
              "without a #fragment", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for filename, build in DASHBOARDS.items():
        d = build()
        set_variable(d, "runbook_base", runbook_url.rstrip("/"))
        set_variable(d, "mlflow_url", mlflow_url.rstrip("/"))
        (out / filename).write_text(render(d), encoding="utf-8")
        print(f"wrote {out / filename}")
    return 0


def render(d):
    return json.dumps(d, indent=2, ensure_ascii=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; fail if the committed JSON is stale")
    ap.add_argument("--metrics", action="store_true",
                    help="print the metric and recording-rule names queried")
    ap.add_argument("--out", type=Path,
                    help="write the dashboards into this directory instead "
                         "(for provisioning with other constants)")
    ap.add_argument("--runbook-url", default=RUNBOOK_DEFAULT,
                    help="runbook_base constant (with --out; default %(default)s)")
    ap.add_argument("--mlflow-url", default=MLFLOW_DEFAULT,
                    help="mlflow_url default (with --out; default %(default)s)")
    args = ap.parse_args()
    if args.out:
        return write_provisioned(args.out, args.runbook_url, args.mlflow_url)

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
            n = sum(1 for p in all_panels(d) if p["type"] != "row")
            print(f"wrote {path.relative_to(ROOT)} ({n} panels)")
    for problem in folder_layout():
        print(problem, file=sys.stderr)
        failed = True
    if args.metrics:
        print("\n".join(sorted(used)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
