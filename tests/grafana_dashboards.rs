//! The provisioned dashboards: structure checks on the JSON, health panels
//! after the service and trainer die, and every runbook link on a live
//! `mlwatch up`. (That every panel query returns data after training and
//! mixed traffic is checked in tests/report_live.rs, on the same live stack
//! the report is drawn from.)

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::queries::{dashboard_queries, dashboards, panels, parse, repo, substitute_variables};
use common::stack::{eventually, LiveStack, StackOptions};
use serde_json::Value;

const CORE_PANELS: &[&str] = &[
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "heatmap",
    "text",
    "alertlist",
    "row",
];

/// The uid every panel and target names: the `datasource` variable, whose
/// default is the provisioned datasource.
const DATASOURCE_VARIABLE: &str = "${datasource}";

fn provisioned_datasource_uid() -> String {
    let text =
        std::fs::read_to_string(repo().join("grafana/provisioning/datasources/prometheus.yml"))
            .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["datasources"][0]["uid"]
        .as_str()
        .expect("datasource uid")
        .to_owned()
}

#[test]
fn dashboards_are_well_formed() {
    let uid = provisioned_datasource_uid();
    let all = dashboards();
    assert_eq!(all.len(), 2, "training and predict-API dashboards");
    let uids: Vec<&str> = all
        .iter()
        .map(|(_, d)| d["uid"].as_str().expect("dashboard uid"))
        .collect();
    assert_eq!(
        uids.iter().collect::<HashSet<_>>().len(),
        uids.len(),
        "unique dashboard uids: {uids:?}"
    );
    for (path, dashboard) in &all {
        let name = path.file_name().unwrap().to_string_lossy();
        let datasource = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(datasource["current"]["value"], uid.as_str(), "{name}");
        // A collapsed row's panels are laid out when it opens (pushing the
        // rows below down), so they share a grid with each other only.
        let collapsed: HashSet<i64> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["id"].as_i64())
            .collect();
        let mut grids: std::collections::HashMap<bool, HashSet<(i64, i64)>> = Default::default();
        let mut ids = HashSet::new();
        for panel in panels(dashboard) {
            let cells = grids
                .entry(collapsed.contains(&panel["id"].as_i64().unwrap_or(-1)))
                .or_default();
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            let kind = panel["type"].as_str().unwrap_or("");
            assert!(
                CORE_PANELS.contains(&kind),
                "{name} {title}: panel type {kind:?} is not a core panel"
            );
            assert!(
                ids.insert(panel["id"].as_i64().expect("panel id")),
                "{name} {title}: duplicate panel id"
            );
            let grid = &panel["gridPos"];
            let (x, y, w, h) = (
                grid["x"].as_i64().unwrap(),
                grid["y"].as_i64().unwrap(),
                grid["w"].as_i64().unwrap(),
                grid["h"].as_i64().unwrap(),
            );
            assert!(
                x >= 0 && w > 0 && h > 0 && x + w <= 24,
                "{name} {title}: gridPos {grid} outside 24 columns"
            );
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{name} {title}: overlaps another panel at ({cx},{cy})"
                    );
                }
            }
            if kind == "row" {
                continue;
            }
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{name} {title}: no description"
            );
            if kind != "text" && kind != "alertlist" {
                assert!(
                    panel["fieldConfig"]["defaults"]["unit"]
                        .as_str()
                        .is_some_and(|u| !u.is_empty()),
                    "{name} {title}: no unit"
                );
                assert_eq!(
                    panel["datasource"]["uid"], DATASOURCE_VARIABLE,
                    "{name} {title}: panel datasource"
                );
                let targets = panel["targets"].as_array().cloned().unwrap_or_default();
                assert!(!targets.is_empty(), "{name} {title}: no targets");
                for target in targets {
                    assert!(
                        target["refId"].as_str().is_some_and(|r| !r.is_empty()),
                        "{name} {title}: target without refId"
                    );
                    assert!(
                        target["expr"]
                            .as_str()
                            .is_some_and(|e| !e.trim().is_empty()),
                        "{name} {title}: target without expr"
                    );
                    assert_eq!(
                        target["datasource"]["uid"], DATASOURCE_VARIABLE,
                        "{name} {title}: target datasource"
                    );
                }
            }
        }
    }
    for query in dashboard_queries() {
        parse(&query);
    }
}

/// A panel of the repository's dashboards by title.
fn panel_by_title(file: &str, title: &str) -> Value {
    dashboards()
        .into_iter()
        .filter(|(p, _)| p.ends_with(file))
        .flat_map(|(_, d)| panels(&d))
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("{file} has no panel {title:?}"))
}

/// The value of an instant-query sample.
fn value_of(sample: &common::stack::Sample) -> f64 {
    sample.value
}

/// The default of the dashboard's single-select `job` variable.
fn default_job(file: &str) -> String {
    let (_, dashboard) = dashboards()
        .into_iter()
        .find(|(p, _)| p.ends_with(file))
        .unwrap();
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "job")
        .and_then(|v| v["current"]["value"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{file}: no job variable"))
}

/// The panel's targets as (legendFormat, instant, PromQL with the default
/// job and "All" of everything else chosen).
fn panel_targets(file: &str, title: &str) -> Vec<(String, bool, String)> {
    let job = default_job(file);
    panel_by_title(file, title)["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let expr = t["expr"].as_str().unwrap().replace("$job", &job);
            (
                t["legendFormat"].as_str().unwrap_or("").to_owned(),
                t["instant"] == true,
                substitute_variables(&expr),
            )
        })
        .collect()
}

/// Item 2 of issue 11: after the service and the trainer die mid-run, the
/// health stats show what is true now, not the last sample of the window.
#[test]
fn health_panels_tell_the_truth_after_service_and_trainer_die() {
    let mut stack = LiveStack::start(StackOptions::default());
    let api = "predict_api_dashboard.json";
    let training = "training_dashboard.json";
    eventually(
        "service loaded and trainer training, both scraped",
        Duration::from_secs(60),
        || {
            let loaded = stack.query("model_loaded == 1").len() == 1;
            let training = stack.query("training_in_progress == 1").len() == 1;
            (loaded && training).then_some(())
        },
    );
    for (file, title) in [
        (api, "Targets up"),
        (api, "Model loaded"),
        (training, "Targets up"),
        (training, "Training in progress"),
        (training, "Heartbeat age"),
    ] {
        for (legend, instant, expr) in panel_targets(file, title) {
            assert!(
                instant,
                "{file} {title} ({legend}): a stat of the current state is an instant query"
            );
            assert!(!expr.contains("lastNotNull"), "{file} {title}: {expr}");
        }
        let reduce = &panel_by_title(file, title)["options"]["reduceOptions"]["calcs"];
        assert_eq!(reduce, &serde_json::json!(["last"]), "{file} {title}");
    }
    let heartbeat = panel_targets(training, "Heartbeat age");
    let (training_age, finished_age) = (&heartbeat[0].2, &heartbeat[1].2);
    assert_eq!(
        stack.query(training_age).len(),
        1,
        "coloured while training"
    );
    assert!(stack.query(finished_age).is_empty(), "not a finished run");

    stack.service.kill();
    for trainer in &mut stack.trainers {
        trainer.kill();
    }
    // Prometheus writes staleness markers at the first failed scrape (1 s).
    let up = |file: &str| panel_targets(file, "Targets up")[0].2.clone();
    eventually(
        "both targets scraped as down",
        Duration::from_secs(30),
        || {
            let down = |file: &str| {
                let samples = stack.query(&up(file));
                samples.len() == 1 && value_of(&samples[0]) == 0.0
            };
            (down(api) && down(training)).then_some(())
        },
    );
    let (_, _, model_loaded) = &panel_targets(api, "Model loaded")[0];
    let (_, _, in_progress) = &panel_targets(training, "Training in progress")[0];
    eventually(
        "stale series are gone from the instant queries",
        Duration::from_secs(30),
        || {
            (stack.query(model_loaded).is_empty() && stack.query(in_progress).is_empty())
                .then_some(())
        },
    );
    // The crash keeps the heartbeat coloured, and its age keeps growing.
    let age = |expr: &str| {
        let samples = stack.query(expr);
        assert_eq!(samples.len(), 1, "{expr}: {samples:?}");
        value_of(&samples[0])
    };
    let first = age(training_age);
    std::thread::sleep(Duration::from_secs(3));
    let second = age(training_age);
    assert!(
        second >= first + 2.0,
        "heartbeat age grows after a crash: {first} then {second}"
    );
    assert!(
        stack.query(finished_age).is_empty(),
        "a crash is not a finish"
    );
}

/// Every runbook URL of `dashboard` (dashboard links and panel links),
/// with the `runbook_base` constant expanded.
fn runbook_links(dashboard: &Value) -> Vec<String> {
    let base = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "runbook_base" && v["type"] == "constant")
        .and_then(|v| v["query"].as_str())
        .expect("runbook_base constant")
        .to_owned();
    let mut links: Vec<String> = dashboard["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["type"] == "link")
        .map(|l| l["url"].as_str().unwrap().to_owned())
        .collect();
    for panel in panels(dashboard) {
        for link in panel["links"].as_array().cloned().unwrap_or_default() {
            links.push(link["url"].as_str().unwrap().to_owned());
        }
    }
    links
        .into_iter()
        .map(|url| url.replace("${runbook_base}", &base))
        .collect()
}

/// GETs `url` and checks that the page holds the anchor of its #fragment.
fn follow(url: &str, origin: &str) {
    let (page, anchor) = url.split_once('#').unwrap_or((url, ""));
    let (status, body) =
        common::get(page).unwrap_or_else(|| panic!("{origin}: {url} does not answer"));
    assert_eq!(status, 200, "{origin}: {url}");
    if !anchor.is_empty() {
        assert!(
            body.contains(&format!("id=\"{anchor}\"")),
            "{origin}: {url}: no element with id {anchor:?} on the page"
        );
    }
}

/// Item 1 of issue 11: on a live `mlwatch up`, every runbook link of every
/// dashboard and every alert's runbook_url opens the runbook at its anchor.
#[test]
fn every_runbook_link_and_runbook_url_opens_on_a_live_mlwatch_up() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    common::stack::require_binary(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let prometheus = common::free_port();
    let webhook = common::free_port();
    let mut args = vec![
        "up".to_owned(),
        "--no-grafana".into(),
        // Not about MLflow (its panels are fed by tests/report_live.rs).
        "--no-mlflow".into(),
        "--state-dir".into(),
        state.display().to_string(),
        "--prometheus-port".into(),
        prometheus.to_string(),
        "--webhook-port".into(),
        webhook.to_string(),
    ];
    for flag in [
        "--app-port",
        "--trainer-port",
        "--alertmanager-port",
        "--grafana-port",
        // Off (--no-mlflow), and never on the default 5000 should that change.
        "--mlflow-port",
    ] {
        args.push(flag.into());
        args.push(common::free_port().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = common::Process::mlwatch("up", &args, dir.path());
    let prometheus_url = format!("http://127.0.0.1:{prometheus}");
    common::wait_for_status(
        &format!("{prometheus_url}/-/ready"),
        200,
        Duration::from_secs(60),
        &mut up,
    );

    // The dashboards Grafana would provision: the launcher's copies, with
    // the runbook base filled in.
    let derived = state.join("config/grafana/dashboards");
    let mut dashboard_links = 0;
    for (path, _) in dashboards() {
        let name = path.file_name().unwrap();
        let copy: Value =
            serde_json::from_str(&std::fs::read_to_string(derived.join(name)).unwrap()).unwrap();
        let links = runbook_links(&copy);
        for url in &links {
            assert!(
                url.starts_with(&format!("http://127.0.0.1:{webhook}/runbooks")),
                "{name:?}: {url}"
            );
            follow(url, &format!("{name:?}"));
        }
        dashboard_links += links.len();
    }
    assert!(
        dashboard_links >= 18,
        "dashboard runbook links: {dashboard_links}"
    );

    // The alerts: Prometheus' loaded rules and the external label their
    // runbook_url template reads.
    let get_json = |path: &str| -> Value {
        let (status, body) = common::get(&format!("{prometheus_url}{path}")).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let config = get_json("/api/v1/status/config");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(config["data"]["yaml"].as_str().unwrap()).unwrap();
    let base = yaml["global"]["external_labels"]["runbook_base"]
        .as_str()
        .expect("external label runbook_base")
        .to_owned();
    let rules = eventually("rules loaded", Duration::from_secs(30), || {
        let rules: Vec<Value> = get_json("/api/v1/rules")["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["type"] == "alerting")
            .collect();
        (!rules.is_empty()).then_some(rules)
    });
    assert!(rules.len() >= 13, "alert rules: {}", rules.len());
    for rule in &rules {
        let name = rule["name"].as_str().unwrap();
        let template = rule["annotations"]["runbook_url"].as_str().unwrap_or("");
        assert_eq!(
            template,
            format!(
                "{{{{ $externalLabels.runbook_base }}}}#{}",
                name.to_lowercase()
            ),
            "{name}"
        );
        let url = template.replace("{{ $externalLabels.runbook_base }}", &base);
        follow(&url, name);
    }
    up.signal("INT");
    assert!(
        up.wait_exit(Duration::from_secs(30)).is_some(),
        "mlwatch up stops"
    );
}
