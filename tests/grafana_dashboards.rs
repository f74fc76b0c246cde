//! The provisioned dashboards: structure checks on the JSON, and a live
//! check that every panel query returns data from a real Prometheus after
//! training and mixed traffic (valid, invalid, drifted).

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::queries::{dashboard_queries, dashboards, panels, parse, repo, substitute_variables};
use common::stack::{batch_for, eventually, LiveStack, StackOptions};
use mlwatch::train::Algorithm;
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
        let mut cells: HashSet<(i64, i64)> = HashSet::new();
        let mut ids = HashSet::new();
        for panel in panels(dashboard) {
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
                    panel["datasource"]["uid"],
                    uid.as_str(),
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
                        target["datasource"]["uid"],
                        uid.as_str(),
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

#[test]
fn every_panel_shows_live_data() {
    let options = StackOptions {
        services: vec![Algorithm::Linear, Algorithm::Boost],
        trainers: vec![
            // Finished and lingering: the final regression values.
            vec![
                "--model".into(),
                "linear".into(),
                "--iterations".into(),
                "6".into(),
                "--linger".into(),
                "600s".into(),
            ],
            // Still training: live classification and tree values.
            vec![
                "--model".into(),
                "boost".into(),
                "--pace".into(),
                "300ms".into(),
                "--iterations".into(),
                "2000".into(),
            ],
        ],
        drift_window: 100,
        ..StackOptions::default()
    };
    let stack = LiveStack::start(options);
    eventually(
        "both trainers and both services scraped",
        Duration::from_secs(60),
        || {
            let up = stack.query("up == 1");
            (up.len() == 6).then_some(())
        },
    );

    // Mixed traffic on both services until the recording rules, histograms
    // and an alert all have samples.
    let mut round = 0;
    eventually(
        "traffic recorded and an alert firing",
        Duration::from_secs(90),
        || {
            for (url, artifact) in stack.app_urls.iter().zip(&stack.artifacts) {
                let feature = artifact.feature_names[2].clone();
                assert_eq!(
                    stack.post_predict_to(url, &batch_for(artifact, round * 20, 20, None)),
                    200
                );
                assert_eq!(
                    stack.post_predict_to(
                        url,
                        &batch_for(artifact, round * 20, 20, Some((&feature, 3.0)))
                    ),
                    200
                );
                for _ in 0..10 {
                    assert_eq!(stack.post_predict_to(url, "[1, 2"), 400);
                }
            }
            round += 1;
            let recorded = !stack
                .query("job_model_version:model_prediction_duration_seconds:p95_5m")
                .is_empty()
                && !stack
                    .query("job:model_prediction_invalid_input:ratio_rate5m")
                    .is_empty()
                && !stack.query("ALERTS{alertstate=\"firing\"}").is_empty();
            recorded.then_some(())
        },
    );

    let gpu_present = !stack.query("training_gpu_utilization_percent").is_empty();
    let mut empty = BTreeSet::new();
    let mut checked = 0;
    for query in dashboard_queries() {
        if query.optional_without_gpu && !gpu_present {
            continue;
        }
        let promql = substitute_variables(&query.expr);
        checked += 1;
        if stack.query(&promql).is_empty() {
            empty.insert(format!("{}: {promql}", query.origin));
        }
    }
    assert!(checked >= 40, "queries checked: {checked}");
    assert!(
        empty.is_empty(),
        "panels that would show \"No data\":\n{}",
        empty.into_iter().collect::<Vec<_>>().join("\n")
    );
    // The exemption is for GPU panels only, and only without a GPU.
    let exempt: Vec<Value> = panels_with_gpu();
    assert!(
        exempt.iter().all(|p| p["title"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("gpu")),
        "only GPU panels are exempt"
    );
}

fn panels_with_gpu() -> Vec<Value> {
    dashboards()
        .iter()
        .flat_map(|(_, d)| panels(d))
        .filter(common::queries::is_gpu_panel)
        .collect()
}
