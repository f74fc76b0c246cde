//! `mlwatch train` against a real `mlflow server` on loopback (one per test
//! binary): every iteration's metrics in the run's history equal to what
//! /metrics showed, every param, the artifact byte for byte, a registry
//! version, KILLED on SIGINT, and the service's model_info pointing at the
//! run.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mlflow::{params, start_tracked_trainer, tags, MlflowServer};
use common::{free_port, scrape, value, wait_for_status, Process, Scrape};
use mlwatch::model::Artifact;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_ms())
}

/// The MLflow key of each per-iteration series /metrics shows
/// (docs/mlflow.md, "What a run holds").
fn as_mlflow_metrics(scrape: &Scrape) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::new();
    for sample in &scrape.samples {
        let v = common::scalar(&sample.value);
        let split = sample.labels.get("split");
        let per_split = |suffix: &str| split.map(|s| format!("{s}_{suffix}"));
        let key = match sample.metric.as_str() {
            "training_loss" => per_split("loss"),
            "regression_mean_squared_error" => per_split("mse"),
            "regression_root_mean_squared_error" => per_split("rmse"),
            "regression_mean_absolute_error" => per_split("mae"),
            "regression_r_squared" => per_split("r_squared"),
            "classification_accuracy" => per_split("accuracy"),
            "classification_f1_score" => per_split("f1"),
            "training_overfitting_gap" => Some("overfitting_gap".to_owned()),
            "iteration_improvement" => Some("iteration_improvement".to_owned()),
            "training_hyperparameter" => sample
                .labels
                .get("name")
                .map(|n| format!("hyperparameter_{n}")),
            "tree_max_depth" | "tree_leaf_count" | "ensemble_tree_count" => {
                Some(sample.metric.clone())
            }
            _ => None,
        };
        if let Some(key) = key {
            values.insert(key, v);
        }
    }
    values
}

/// Scrapes the trainer until it finishes; returns, per completed iteration
/// (training_epochs_total), the MLflow view of /metrics, taken only when
/// two scrapes in a row agree (so no scrape straddles an update).
fn watch_training(url: &str, timeout: Duration) -> BTreeMap<i64, BTreeMap<String, f64>> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeMap::new();
    let mut previous: Option<(i64, BTreeMap<String, f64>)> = None;
    loop {
        let s = scrape(url);
        let epochs = value(&s, "training_epochs_total", &[]).unwrap_or(0.0) as i64;
        let values = as_mlflow_metrics(&s);
        if epochs > 0 && previous.as_ref() == Some(&(epochs, values.clone())) {
            seen.insert(epochs, values.clone());
        }
        if value(&s, "training_in_progress", &[]) == Some(0.0) {
            // Final values stay put from here on.
            seen.insert(epochs, values);
            return seen;
        }
        previous = Some((epochs, values));
        assert!(
            Instant::now() < deadline,
            "training did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(40));
    }
}

struct Trained {
    trainer: Process,
    artifact: Artifact,
    artifact_bytes: Vec<u8>,
    seen: BTreeMap<i64, BTreeMap<String, f64>>,
    run: serde_json::Value,
    started_ms: i64,
    ended_ms: i64,
}

fn train(server: &MlflowServer, dir: &Path, experiment: &str, extra: &[&str]) -> Trained {
    let started_ms = now_ms();
    let mut args = vec!["--mlflow-experiment", experiment];
    args.extend_from_slice(extra);
    let (trainer, metrics) = start_tracked_trainer(dir, &server.url, &args);
    let seen = watch_training(&metrics, Duration::from_secs(120));
    let ended_ms = now_ms();
    let path = dir.join("model.json");
    let artifact = Artifact::load(&path).expect("the trainer wrote a valid artifact");
    let lineage = artifact
        .mlflow
        .clone()
        .expect("the artifact records its MLflow run");
    assert_eq!(lineage.tracking_uri, server.url);
    assert_eq!(lineage.experiment_name, experiment);
    let run = server.run_when_ended(&lineage.run_id, Duration::from_secs(60));
    assert_eq!(run["info"]["experiment_id"], lineage.experiment_id.as_str());
    Trained {
        trainer,
        artifact_bytes: std::fs::read(&path).unwrap(),
        artifact,
        seen,
        run,
        started_ms,
        ended_ms,
    }
}

/// The run holds one point per iteration for every per-iteration series,
/// equal to what /metrics showed at that iteration; every param; the tags;
/// and the artifact byte for byte.
fn assert_tracked(
    server: &MlflowServer,
    t: &Trained,
    iterations: i64,
    expected_params: &[(&str, &str)],
) {
    let run_id = t.artifact.mlflow.as_ref().unwrap().run_id.clone();
    assert_eq!(
        t.run["info"]["status"],
        "FINISHED",
        "run status:\n{}",
        t.trainer.log_text()
    );
    let final_values = t.seen.get(&iterations).expect("final scrape").clone();
    assert!(
        final_values.len() >= 6,
        "per-iteration series on /metrics: {final_values:?}"
    );
    // How many iterations a scrape catches depends on the machine's speed;
    // that /metrics shows them live does not: the final one and one before.
    assert!(
        t.seen.keys().any(|i| *i < iterations),
        "observed only iterations {:?} of {iterations}",
        t.seen.keys().collect::<Vec<_>>()
    );
    for key in final_values.keys() {
        let history = server.history(&run_id, key);
        let steps: Vec<i64> = history.iter().map(|p| p.0).collect();
        assert_eq!(
            steps,
            (1..=iterations).collect::<Vec<_>>(),
            "{key}: one point per iteration, step = iteration"
        );
        for (step, value, timestamp) in &history {
            assert!(
                (t.started_ms..=t.ended_ms).contains(timestamp),
                "{key} step {step}: timestamp {timestamp} outside the run"
            );
            if let Some(shown) = t.seen.get(step).and_then(|v| v.get(key)) {
                assert_eq!(
                    value, shown,
                    "{key} step {step}: MLflow has {value}, /metrics showed {shown}"
                );
            }
        }
    }
    let logged = params(&t.run);
    for (key, expected) in expected_params {
        assert_eq!(
            logged.get(*key).map(String::as_str),
            Some(*expected),
            "param {key}"
        );
    }
    for (name, value) in &t.artifact.hyperparameters {
        assert_eq!(
            logged.get(name),
            Some(&value.to_string()),
            "the chosen model's {name} is a param"
        );
    }
    let tags = tags(&t.run);
    for (key, expected) in [
        ("mlwatch.algorithm", t.artifact.algorithm.as_str()),
        ("mlwatch.dataset", t.artifact.dataset.as_str()),
        ("mlwatch.task", t.artifact.task.as_str()),
        ("mlwatch.model_version", t.artifact.model_version.as_str()),
        ("mlwatch.version", env!("CARGO_PKG_VERSION")),
    ] {
        assert_eq!(
            tags.get(key).map(String::as_str),
            Some(expected),
            "tag {key}"
        );
    }
    assert_eq!(
        tags.get("mlwatch.feature_names"),
        Some(&t.artifact.feature_names.join(","))
    );
    let artifact_uri = t.run["info"]["artifact_uri"].as_str().unwrap();
    assert_eq!(
        server.artifact(artifact_uri, "model/model.json"),
        t.artifact_bytes,
        "the uploaded artifact is the local file, byte for byte"
    );
}

#[test]
fn linear_run_is_tracked_and_the_service_links_to_it() {
    let server = MlflowServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let experiment = unique("linear");
    let t = train(
        server,
        dir.path(),
        &experiment,
        &["--model", "linear", "--iterations", "8", "--pace", "400ms"],
    );
    assert_tracked(
        server,
        &t,
        8,
        &[
            ("model", "linear"),
            ("dataset", "diabetes"),
            ("seed", "42"),
            ("iterations", "8"),
            ("validation_fraction", "0.2"),
            ("batch_size", "32"),
            ("top_features", "5"),
            ("pace", "400ms"),
        ],
    );
    let lineage = t.artifact.mlflow.clone().unwrap();

    let log = t.trainer.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("MLflow")),
        "no MLflow warning with a healthy server:\n{log}"
    );

    // The service loads the artifact and points at the run.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut service = Process::mlwatch(
        "service",
        &["serve", "--listen", &listen, "--model-path", "model.json"],
        dir.path(),
    );
    wait_for_status(
        &format!("http://{listen}/ready"),
        200,
        Duration::from_secs(30),
        &mut service,
    );
    let s = scrape(&format!("http://{listen}/metrics"));
    let info = common::samples(&s, "model_info", &[]);
    assert_eq!(info.len(), 1);
    assert_eq!(
        info[0].labels.get("mlflow_run_id"),
        Some(lineage.run_id.as_str())
    );
    assert_eq!(
        info[0].labels.get("mlflow_experiment_id"),
        Some(lineage.experiment_id.as_str())
    );
    let (code, body) = common::get(&format!("http://{listen}/model")).unwrap();
    assert_eq!(code, 200);
    let model: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(model["mlflow"]["run_id"], lineage.run_id.as_str());
    assert_eq!(model["mlflow"]["experiment_name"], experiment.as_str());
    assert_eq!(
        model["mlflow"]["run_url"],
        format!(
            "{}/#/experiments/{}/runs/{}",
            server.url, lineage.experiment_id, lineage.run_id
        )
    );
}

#[test]
fn tree_run_is_tracked_and_registered() {
    let server = MlflowServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let experiment = unique("tree");
    let registered = unique("wine-quality");
    let t = train(
        server,
        dir.path(),
        &experiment,
        &[
            "--model",
            "tree",
            "--iterations",
            "6",
            "--pace",
            "400ms",
            "--mlflow-register",
            &registered,
        ],
    );
    assert_tracked(
        server,
        &t,
        6,
        &[
            ("model", "tree"),
            ("dataset", "winequality"),
            ("iterations", "6"),
        ],
    );
    let run_id = t.artifact.mlflow.as_ref().unwrap().run_id.clone();
    let versions = server.model_versions(&registered);
    assert_eq!(versions.len(), 1, "one registry version: {versions:?}");
    assert_eq!(versions[0]["run_id"], run_id.as_str());
    assert_eq!(versions[0]["version"], "1");
    let source = versions[0]["source"].as_str().unwrap();
    let artifact_uri = t.run["info"]["artifact_uri"].as_str().unwrap();
    assert_eq!(source, format!("{artifact_uri}/model"));
    assert!(
        t.trainer.log_text().contains("registered as version 1"),
        "{}",
        t.trainer.log_text()
    );
}

#[test]
fn sigint_marks_the_run_killed() {
    let server = MlflowServer::shared();
    let dir = tempfile::tempdir().unwrap();
    let experiment = unique("interrupted");
    let (mut trainer, _) = start_tracked_trainer(
        dir.path(),
        &server.url,
        &[
            "--model",
            "linear",
            "--iterations",
            "200",
            "--pace",
            "300ms",
            "--mlflow-experiment",
            &experiment,
        ],
    );
    let run_id = server.wait_for_logged_iterations(&experiment, 2);
    trainer.signal("INT");
    let status = trainer
        .wait_exit(Duration::from_secs(30))
        .expect("the trainer exits on SIGINT");
    assert!(!status.success(), "an interrupted run exits non-zero");
    assert!(
        !dir.path().join("model.json").exists(),
        "no artifact from an interrupted run"
    );
    let run = server.run_when_ended(&run_id, Duration::from_secs(30));
    assert_eq!(run["info"]["status"], "KILLED", "{}", trainer.log_text());
    let points = server.history(&run_id, "validation_loss").len();
    assert!(
        (2..200).contains(&points),
        "{points} iterations logged before the interrupt"
    );
    let mut steps_seen: HashMap<i64, usize> = HashMap::new();
    for (step, _, _) in server.history(&run_id, "validation_loss") {
        *steps_seen.entry(step).or_default() += 1;
    }
    assert!(steps_seen.values().all(|n| *n == 1), "no step logged twice");
}
