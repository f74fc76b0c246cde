//! Fleet quality from ground truth against real processes: three
//! `mlwatch serve` replicas sharing one `--feedback-key-file`, one
//! Prometheus loading the shipped rules. Every prediction's feedback goes
//! to a *different* replica than the one that served it, so the join only
//! works because the id carries what it needs (docs/quality.md).
//!
//! The fleet MAE, RMSE and R² that prometheus/rules/ml_quality.yml records
//! must equal what the test computes offline from every truth it sent, read
//! in one query at one instant together with the raw sums (which must be
//! exact). Everything compared is read at one instant, the rule group's
//! own evaluation time, chosen after every feedback was stored: no clock
//! of the test's. `increase()` scales each replica's counters by one
//! extrapolation factor (one scrape; every series starts at 0 inside the
//! window) as long as one query reads them: the rules take every sum of a
//! replica in one query (`…_quantity:model_feedback_sums:increase30m`),
//! since two rules are two queries that may see different scrapes. The
//! test reads each factor from the replica's own recorded count, bounds
//! it by the samples in the window, and requires the fleet values to
//! equal the pool with those weights. Forged, expired,
//! duplicate, invalid and
//! malformed feedback must be counted exactly, and nothing may answer 5xx.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{listening_address, wait_for_status, Process};
use mlwatch::serve::feedback::FeedbackState;
use mlwatch::serve::prediction_id::{version_bytes, Issuer, Key, Predicted};
use mlwatch::stack::commands;
use mlwatch::stack::config::{self, Assets, Timing};
use mlwatch::stack::endpoints::Endpoints;
use serde_json::{json, Value};

const REPLICAS: usize = 3;
const ROWS_PER_REPLICA: usize = 100;
/// `--feedback-window`: far longer than the test, so that no truth sent
/// in it expires however slow the machine; the expired ids are issued
/// before it.
const WINDOW: Duration = Duration::from_secs(600);
/// Ids whose truth never arrives (kept back); as many ids of the same
/// predictions, signed with the fleet's key but issued two windows ago,
/// are expired.
const EXPIRED: usize = 10;
/// Scrapes of every counter in the window before the rules are read: the
/// extrapolation factor is then at most 1 + 1.1 / (SAMPLES - 2).
const SAMPLES: f64 = 6.0;
const WAIT: Duration = Duration::from_secs(120);

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], common::free_port()))
}

fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("feedback.key");
    std::fs::write(&path, "a-fleet-wide-key-of-more-than-32-bytes\n").expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// POST returning the status and the JSON body; never a 5xx.
fn post(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    let (status, text) = match common::agent()
        .post(url)
        .set("Content-Type", content_type)
        .send_string(body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {url}: {e}"),
    };
    assert!(status < 500, "POST {url} answered {status}: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One instant query: the result vector.
fn query(prometheus: &str, promql: &str) -> Vec<Value> {
    query_at(prometheus, promql, None)
}

/// Instant query at `time` (Unix seconds, to the millisecond), or now.
fn query_at(prometheus: &str, promql: &str, time: Option<f64>) -> Vec<Value> {
    let mut request = common::agent()
        .get(&format!("{prometheus}/api/v1/query"))
        .query("query", promql);
    if let Some(t) = time {
        request = request.query("time", &format!("{t:.3}"));
    }
    let body: Value = request
        .call()
        .unwrap_or_else(|e| panic!("query {promql}: {e}"))
        .into_json()
        .expect("json");
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What one replica joined (it counts what it received, whoever served).
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    n: f64,
    absolute: f64,
    squared: f64,
    truth: f64,
    truth_squared: f64,
}

impl Sums {
    fn add(&mut self, predicted: f64, truth: f64) {
        let e = predicted - truth;
        self.n += 1.0;
        self.absolute += e.abs();
        self.squared += e * e;
        self.truth += truth;
        self.truth_squared += truth * truth;
    }

    fn pooled(parts: &[Sums], weights: &[f64]) -> Sums {
        let mut total = Sums::default();
        for (s, w) in parts.iter().zip(weights) {
            total.n += w * s.n;
            total.absolute += w * s.absolute;
            total.squared += w * s.squared;
            total.truth += w * s.truth;
            total.truth_squared += w * s.truth_squared;
        }
        total
    }

    fn mae(&self) -> f64 {
        self.absolute / self.n
    }

    fn rmse(&self) -> f64 {
        (self.squared / self.n).sqrt()
    }

    fn r_squared(&self) -> f64 {
        1.0 - self.squared / (self.truth_squared - self.truth * self.truth / self.n)
    }
}

#[test]
fn fleet_quality_from_feedback_sent_to_other_replicas_matches_offline() {
    let Some(prometheus_bin) = on_path(&["prometheus"]) else {
        panic!("prometheus not found on PATH: apt-get install prometheus");
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let mut fit = mlwatch::train::FitOptions::new(mlwatch::train::Algorithm::Linear);
    fit.iterations = Some(5);
    let artifact = mlwatch::train::train_quietly(&fit).expect("train");
    let model_path = root.join("model.json");
    artifact.save(&model_path).expect("save");
    let key = key_file(root);

    let mlwatch = Path::new(env!("CARGO_BIN_EXE_mlwatch"));
    let mut services = Vec::new();
    let mut apps = Vec::new();
    for i in 0..REPLICAS {
        let mut args = commands::service(SocketAddr::from(([127, 0, 0, 1], 0)), &model_path, 100);
        args.extend(
            [
                "--feedback-key-file",
                key.to_str().expect("utf-8"),
                "--feedback-window",
                &format!("{}s", WINDOW.as_secs()),
                "--sample-interval",
                "1s",
            ]
            .map(String::from),
        );
        let mut service = Process::spawn(&format!("service-{i}"), mlwatch, &args, root);
        apps.push(listening_address(
            &mut service,
            "prediction service listening listen=",
        ));
        services.push(service);
    }
    let endpoints = Endpoints {
        apps: apps.clone(),
        trainers: Vec::new(),
        prometheus: loopback(),
        alertmanager: loopback(),
        mlflow: None,
        mlflow_url: "http://mlflow.invalid".into(),
        runbooks: "http://runbooks.invalid/runbooks".into(),
    };
    let assets = Assets::new(env!("CARGO_MANIFEST_DIR")).expect("assets");
    let written = config::write(
        &assets,
        &root.join("config"),
        &endpoints,
        "http://127.0.0.1:9/unused",
        &Timing::quick(),
    )
    .expect("configs");
    let mut prometheus = Process::spawn(
        "prometheus",
        &prometheus_bin,
        &commands::prometheus(
            &written.prometheus_yml,
            &root.join("prometheus-data"),
            endpoints.prometheus,
        ),
        root,
    );
    let prometheus_url = format!("http://{}", endpoints.prometheus);
    let urls: Vec<String> = apps.iter().map(|a| format!("http://{a}")).collect();
    for (service, url) in services.iter_mut().zip(&urls) {
        wait_for_status(
            &format!("{url}/ready"),
            200,
            Duration::from_secs(60),
            service,
        );
    }
    wait_for_status(
        &format!("{prometheus_url}/-/ready"),
        200,
        Duration::from_secs(60),
        &mut prometheus,
    );
    // Every replica's counters scraped at 0 before any feedback: nothing
    // is extrapolated at the window's start.
    common::poll("every replica's counters scraped", WAIT, || {
        std::thread::sleep(Duration::from_millis(500));
        let r = query(&prometheus_url, "count(model_feedback_labelled_total)");
        (r.first()?["value"][1].as_str()? == "3").then_some(())
    });

    // Predictions: 100 diabetes rows per replica, one id per row.
    let data = linfa_datasets::diabetes();
    let records = data.records();
    let targets = data.targets();
    let mut ids = Vec::new(); // (id, prediction, truth, served by)
    for (r, url) in urls.iter().enumerate() {
        let start = r * ROWS_PER_REPLICA;
        let rows: Vec<Vec<f64>> = (start..start + ROWS_PER_REPLICA)
            .map(|i| records.row(i).to_vec())
            .collect();
        let (status, body) = post(
            &format!("{url}/predict"),
            "application/json",
            &json!({"instances": rows}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        let predictions = body["predictions"].as_array().expect("predictions");
        let row_ids = body["prediction_ids"].as_array().expect("prediction_ids");
        for (k, (p, id)) in predictions.iter().zip(row_ids).enumerate() {
            ids.push((
                id.as_str().expect("id").to_owned(),
                p.as_f64().expect("number"),
                targets[start + k],
                r,
            ));
        }
    }
    let other = |served: usize, step: usize| (served + step) % REPLICAS;
    let feedback_url = |r: usize| format!("{}/feedback", urls[r]);
    let mut joined = [Sums::default(); REPLICAS];
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    let mut count = |outcome: &'static str, n: usize| {
        *expected.entry(outcome).or_default() += n as f64;
    };

    // Invalid truths first: they do not use the id up.
    for (i, truth) in [(20, json!("high")), (21, json!(1e300))] {
        let (id, _, _, served) = &ids[i];
        let (status, answer) = post(
            &feedback_url(other(*served, 1)),
            "application/json",
            &json!({"prediction_id": id, "truth": truth}).to_string(),
        );
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (422, Some("invalid_truth"))
        );
        count("invalid_truth", 1);
    }
    // Every id but the first EXPIRED, each to the next replica, 50 a batch.
    let mut by_target: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for (id, predicted, truth, served) in &ids[EXPIRED..] {
        let target = other(*served, 1);
        by_target
            .entry(target)
            .or_default()
            .push(json!({"prediction_id": id, "truth": truth}));
        joined[target].add(*predicted, *truth);
    }
    for (target, items) in &by_target {
        for chunk in items.chunks(50) {
            let (status, answer) = post(
                &feedback_url(*target),
                "application/json",
                &json!({"feedback": chunk}).to_string(),
            );
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["accepted"], json!(chunk.len()), "{answer}");
        }
    }
    count("accepted", ids.len() - EXPIRED);
    // Duplicates to the replica that accepted them: refused.
    for (id, _, truth, served) in &ids[EXPIRED..EXPIRED + 5] {
        let (status, _) = post(
            &feedback_url(other(*served, 1)),
            "application/json",
            &json!({"prediction_id": id, "truth": truth}).to_string(),
        );
        assert_eq!(status, 409);
    }
    count("duplicate", 5);
    // The same id at a third replica is accepted again: duplicates are
    // detected per replica only (docs/quality.md states it).
    let (id, predicted, truth, served) = &ids[EXPIRED + 5];
    let (status, _) = post(
        &feedback_url(other(*served, 2)),
        "application/json",
        &json!({"prediction_id": id, "truth": truth}).to_string(),
    );
    assert_eq!(status, 200);
    joined[other(*served, 2)].add(*predicted, *truth);
    count("accepted", 1);
    // Forged: altered ids, garbage, an id signed with another key.
    let mut forged_items = Vec::new();
    for (id, _, _, _) in &ids[30..33] {
        let mut bytes = id.clone().into_bytes();
        bytes[10] = if bytes[10] == b'x' { b'y' } else { b'x' };
        forged_items
            .push(json!({"prediction_id": String::from_utf8(bytes).expect("ascii"), "truth": 1.0}));
    }
    forged_items.push(json!({"prediction_id": "not-an-id", "truth": 1.0}));
    let (status, answer) = post(
        &feedback_url(0),
        "application/json",
        &json!({"feedback": forged_items}).to_string(),
    );
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (200, Some(0)),
        "{answer}"
    );
    count("forged", 4);
    // Malformed: an item without truth, a body that is not JSON, a wrong
    // Content-Type.
    let (status, _) = post(
        &feedback_url(1),
        "application/json",
        &json!({"feedback": [{"prediction_id": ids[40].0}]}).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(post(&feedback_url(1), "application/json", "{").0, 400);
    assert_eq!(post(&feedback_url(2), "text/plain", "{}").0, 415);
    count("malformed", 3);
    // Expired: ids of the kept-back predictions as a replica would have
    // issued them two windows ago (an id carries its issue time; the
    // service's stamp is pinned by tests/serve_feedback.rs).
    let issuer = Issuer::new(Key::load(&key).expect("the fleet's key"));
    let version_id = version_bytes(&artifact.model_version).expect("12 hex digits");
    let issued_ms = FeedbackState::now_ms() - 2 * WINDOW.as_millis() as u64;
    for (_, predicted, truth, served) in &ids[..EXPIRED] {
        let id = issuer.issue(version_id, issued_ms, Predicted::Value(*predicted));
        let (status, answer) = post(
            &feedback_url(other(*served, 1)),
            "application/json",
            &json!({"prediction_id": id, "truth": truth}).to_string(),
        );
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (410, Some("expired")),
            "{answer}"
        );
    }
    count("expired", EXPIRED);
    count("unknown_version", 0);

    let accepted = expected["accepted"];
    // First every scrape in: the raw sums complete. The query's own
    // evaluation time (Prometheus' clock) is when that was stored.
    // Both counts from one query, so that both come from the same scrapes.
    let stored_at = common::poll("every feedback scraped", WAIT, || {
        let samples = query(
            &prometheus_url,
            r#"label_replace(sum(model_feedback_labelled_total), "q", "labelled", "", "")
            or label_replace(sum(model_feedback_total{outcome="expired"}), "q", "expired", "", "")"#,
        );
        let at = samples.first()?["value"][0].as_f64()?;
        let count = |q: &str| {
            samples
                .iter()
                .find(|s| s["metric"]["q"] == q)
                .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        };
        (count("labelled")? == accepted && count("expired")? == EXPIRED as f64).then_some(at)
    });
    // Then one instant for everything compared: the rule group's own
    // evaluation, run after all of that was stored, with SAMPLES scrapes of
    // every counter in the window. The anchor is the group's last rule: the
    // group stores its rules' results one after another, so once the last
    // is in, every recorded series read at that instant comes from that one
    // evaluation (an earlier anchor would let a later rule's previous
    // result answer).
    let version = &artifact.model_version;
    let last_rule = common::queries::last_record("ml_quality.yml", "ml_quality");
    let at = common::poll("a rule evaluation after the last scrape", WAIT, || {
        let at = query(&prometheus_url, &format!("timestamp({last_rule})")).first()?["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        let fewest: f64 = query_at(
            &prometheus_url,
            "min(count_over_time(model_feedback_labelled_total[30m]))",
            Some(at),
        )
        .first()?["value"][1]
            .as_str()?
            .parse()
            .ok()?;
        (at > stored_at && fewest >= SAMPLES).then_some(at)
    });
    let mae_rule =
        format!(r#"job_model_version:model_feedback_mae:30m{{model_version="{version}"}}"#);
    let promql = format!(
        r#"label_replace({mae_rule}, "q", "mae", "", "")
        or label_replace(job_model_version:model_feedback_rmse:30m{{model_version="{version}"}}, "q", "rmse", "", "")
        or label_replace(job_model_version:model_feedback_r_squared:30m{{model_version="{version}"}}, "q", "r_squared", "", "")
        or label_replace(job_instance_model_version:model_feedback_labelled:increase30m{{model_version="{version}"}}, "q", "window_n", "", "")
        or label_replace(sum(model_feedback_labelled_total), "q", "n", "", "")
        or label_replace(sum(model_feedback_absolute_error_total), "q", "absolute", "", "")
        or label_replace(sum(model_feedback_squared_error_total), "q", "squared", "", "")
        or label_replace(sum(model_feedback_truth_squared_total), "q", "truth_squared", "", "")
        or label_replace(sum by (outcome) (model_feedback_total), "q", "outcome", "", "")"#
    );
    let mut values = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut window_n = BTreeMap::new();
    for sample in query_at(&prometheus_url, &promql, Some(at)) {
        let v: f64 = sample["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        let q = sample["metric"]["q"].as_str().expect("q").to_owned();
        match q.as_str() {
            "outcome" => {
                let outcome = sample["metric"]["outcome"].as_str().expect("outcome");
                outcomes.insert(outcome.to_owned(), v);
            }
            "window_n" => {
                let instance = sample["metric"]["instance"].as_str().expect("instance");
                window_n.insert(instance.to_owned(), v);
            }
            _ => {
                values.insert(q, v);
            }
        }
    }
    assert_eq!(values.get("n"), Some(&accepted), "{values:?}");

    let expected_outcomes: BTreeMap<String, f64> =
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(
        outcomes, expected_outcomes,
        "every item counted under its outcome"
    );
    let exact = Sums::pooled(&joined, &[1.0; REPLICAS]);
    for (name, want) in [
        ("absolute", exact.absolute),
        ("squared", exact.squared),
        ("truth_squared", exact.truth_squared),
    ] {
        let got = values[name];
        assert!(
            (got - want).abs() <= 1e-9 * want.abs(),
            "raw {name}: {got} vs offline {want}"
        );
    }
    // increase() scales each replica's counters by one extrapolation factor
    // (one scrape; every counter started at 0 in the window, so only its
    // end is extrapolated): the replica's windowed count over what it was
    // sent. With n samples in the window the factor is at most
    // 1 + 1.1 / (n - 2) (a query may see one more sample than the rule):
    // a missing replica (0) or a double count (2) is out.
    let factors: Vec<f64> = apps
        .iter()
        .zip(&joined)
        .map(|(address, sums)| window_n[&address.to_string()] / sums.n)
        .collect();
    let bound = 1.0 + 1.1 / (SAMPLES - 2.0);
    assert!(
        factors.iter().all(|f| *f >= 1.0 - 1e-9 && *f <= bound),
        "each replica's feedback counted once, extrapolated by at most {bound}: {factors:?}"
    );
    // The fleet values are those of the pool with those weights, from the
    // same evaluation: float rounding apart, equal.
    let pooled = Sums::pooled(&joined, &factors);
    for (name, of) in [
        ("mae", Sums::mae as fn(&Sums) -> f64),
        ("rmse", Sums::rmse),
        ("r_squared", Sums::r_squared),
    ] {
        let got = values[name];
        eprintln!(
            "fleet {name}: Prometheus {got}, offline {} (pooled with factors {factors:?}), unweighted {}",
            of(&pooled),
            of(&exact)
        );
        assert!(
            (got - of(&pooled)).abs() <= 1e-9 * got.abs().max(1.0),
            "fleet {name} {got}: offline {}",
            of(&pooled)
        );
    }
}
