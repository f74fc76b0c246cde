//! `POST /feedback` against one real `mlwatch serve`: every prediction row
//! gets a signed id (JSON and header), truth sent for those ids adds up in
//! the quality counters to exactly what was sent, and every other outcome
//! (forged, expired, duplicate, invalid truth, malformed) is answered with
//! its status, counted once, and never a 5xx. The three-replica fleet
//! proof is tests/quality_feedback.rs.

mod common;
mod serve_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlwatch::serve::feedback::FeedbackState;
use mlwatch::serve::prediction_id::{verify, version_bytes, Issuer, Key, Predicted};
use serde_json::{json, Value};
use serve_support::{diabetes, linear_artifact, parse_json, tree_artifact, Service};

/// A private key file in `dir`.
fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("feedback.key");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef-test-key\n").expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn start_with_key(
    artifact: &mlwatch::model::Artifact,
    extra: &[&str],
) -> (Service, tempfile::TempDir) {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = key_file(keys.path());
    let mut args = vec!["--feedback-key-file", key.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    (Service::start(Some(artifact), &args), keys)
}

fn feedback(service: &Service, body: &Value) -> (u16, Value) {
    let (status, text) = service.request(
        "POST",
        "/feedback",
        Some("application/json"),
        body.to_string().as_bytes(),
        &[],
    );
    (status, parse_json(&text))
}

fn outcomes(scrape: &common::Scrape) -> Vec<(String, f64)> {
    [
        "accepted",
        "forged",
        "expired",
        "duplicate",
        "invalid_truth",
        "unknown_version",
        "malformed",
    ]
    .iter()
    .map(|o| {
        let v = common::value(scrape, "model_feedback_total", &[("outcome", o)])
            .unwrap_or_else(|| panic!("no model_feedback_total{{outcome=\"{o}\"}}"));
        (o.to_string(), v)
    })
    .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn regression_truth_adds_up_exactly_and_every_outcome_is_counted_once() {
    let artifact = linear_artifact(1);
    let version = artifact.model_version.clone();
    // A window far longer than the test: nothing expires while it runs;
    // the expired id below is one issued before the window.
    let (service, keys) = start_with_key(&artifact, &["--feedback-window", "1h"]);
    let data = diabetes();
    let rows: Vec<Vec<f64>> = (0..20).map(|i| data.records.row(i).to_vec()).collect();
    let sent_ms = FeedbackState::now_ms();
    let (status, headers_ids, body) = predict_with_header(&service, &json!({"instances": rows}));
    let answered_ms = FeedbackState::now_ms();
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = body["prediction_ids"]
        .as_array()
        .expect("prediction_ids")
        .iter()
        .map(|v| v.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 20, "one id per row");
    assert_eq!(
        headers_ids,
        ids.join(","),
        "the header carries the same ids"
    );
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        20,
        "all distinct"
    );
    let predictions: Vec<f64> = body["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();

    // Rows 0..10 one by one, 10..16 as a batch with four bad items mixed in.
    let mut expected = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64); // |e|, e², y+, y-, y²
    let mut add = |i: usize| {
        let (p, y) = (predictions[i], data.targets[i]);
        expected.0 += (p - y).abs();
        expected.1 += (p - y) * (p - y);
        if y >= 0.0 {
            expected.2 += y;
        } else {
            expected.3 -= y;
        }
        expected.4 += y * y;
    };
    for (i, id) in ids.iter().enumerate().take(10) {
        let (status, answer) = feedback(
            &service,
            &json!({"prediction_id": id, "truth": data.targets[i]}),
        );
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (200, Some("accepted")),
            "{answer}"
        );
        assert_eq!(answer["model_version"], json!(version));
        add(i);
    }
    let mut forged = ids[16].clone().into_bytes();
    forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    let mut items: Vec<Value> = (10..16)
        .map(|i| json!({"prediction_id": ids[i], "truth": data.targets[i]}))
        .collect();
    items.push(json!({"prediction_id": ids[3], "truth": data.targets[3]})); // duplicate
    items.push(json!({"prediction_id": forged, "truth": 1.0}));
    items.push(json!({"prediction_id": ids[17], "truth": "high"})); // invalid truth
    items.push(json!({"prediction_id": ids[18]})); // malformed
    let (status, answer) = feedback(&service, &json!({"feedback": items}));
    assert_eq!(status, 200, "{answer}");
    let results: Vec<&str> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(
        results,
        [
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "duplicate",
            "forged",
            "invalid_truth",
            "malformed"
        ]
    );
    assert_eq!(answer["accepted"], json!(6));
    (10..16).for_each(&mut add);

    // Single-item statuses, and envelopes that are not feedback at all.
    assert_eq!(
        feedback(&service, &json!({"prediction_id": ids[0], "truth": 1.0})).0,
        409
    );
    assert_eq!(
        feedback(&service, &json!({"prediction_id": "nope", "truth": 1.0})).0,
        400
    );
    assert_eq!(
        feedback(&service, &json!({"prediction_id": ids[19], "truth": 1e300})).0,
        422
    );
    let (status, text) = service.request("POST", "/feedback", Some("application/json"), b"{", &[]);
    assert_eq!(status, 400, "{text}");
    let (status, _) = service.request("POST", "/feedback", Some("text/plain"), b"{}", &[]);
    assert_eq!(status, 415);
    let (status, _) = service.request("GET", "/feedback", None, b"", &[]);
    assert_eq!(status, 405, "not counted: a probe is not feedback");

    // Expiry. An id carries its issue time, which the service stamped while
    // it answered; one issued more than the window ago (signed with the
    // fleet's key, as a replica that issued it 2 h ago would have) is
    // expired. No sleep, and no bound on how long the steps above took.
    let key = Key::load(&keys.path().join("feedback.key")).expect("the test's key");
    let issued_ms = verify(&key, &ids[19])
        .expect("the service's own id")
        .issued_ms;
    assert!(
        (sent_ms..=answered_ms).contains(&issued_ms),
        "issued at {issued_ms} ms, while the request ran from {sent_ms} to {answered_ms} ms"
    );
    let version_id = version_bytes(&version).expect("12 hex digits");
    let two_hours_ago = answered_ms - 2 * 3600 * 1000;
    let old = Issuer::new(key).issue(version_id, two_hours_ago, Predicted::Value(predictions[19]));
    let (status, answer) = feedback(&service, &json!({"prediction_id": old, "truth": 1.0}));
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (410, Some("expired")),
        "{answer}"
    );

    let scrape = service.scrape();
    assert_eq!(
        outcomes(&scrape),
        [
            ("accepted".to_owned(), 16.0),
            ("forged".to_owned(), 2.0),
            ("expired".to_owned(), 1.0),
            ("duplicate".to_owned(), 2.0),
            ("invalid_truth".to_owned(), 2.0),
            ("unknown_version".to_owned(), 0.0),
            ("malformed".to_owned(), 3.0),
        ]
    );
    let v = [("model_version", version.as_str())];
    let get = |name: &str, labels: &[(&str, &str)]| {
        common::value(&scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    assert_eq!(get("model_prediction_ids_issued_total", &v), 20.0);
    assert_eq!(get("model_feedback_labelled_total", &v), 16.0);
    for (name, labels, want) in [
        (
            "model_feedback_absolute_error_total",
            v.to_vec(),
            expected.0,
        ),
        ("model_feedback_squared_error_total", v.to_vec(), expected.1),
        (
            "model_feedback_truth_total",
            vec![v[0], ("sign", "positive")],
            expected.2,
        ),
        (
            "model_feedback_truth_total",
            vec![v[0], ("sign", "negative")],
            expected.3,
        ),
        ("model_feedback_truth_squared_total", v.to_vec(), expected.4),
    ] {
        let got = get(name, &labels);
        assert!(
            close(got, want),
            "{name}{labels:?}: {got} vs offline {want}"
        );
    }
    assert_eq!(
        get("model_feedback_delay_seconds", &v),
        16.0,
        "one delay per accepted item"
    );
    assert_eq!(
        get("model_training_score", &[v[0], ("metric", "score")]),
        0.5,
        "the artifact's validation_score"
    );
}

/// POST /predict returning the status, the x-prediction-id header and the body.
fn predict_with_header(service: &Service, body: &Value) -> (u16, String, Value) {
    let response = common::agent()
        .post(&service.url("/predict"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    match response {
        Ok(r) => {
            let header = r.header("x-prediction-id").unwrap_or_default().to_owned();
            let status = r.status();
            (
                status,
                header,
                parse_json(&r.into_string().unwrap_or_default()),
            )
        }
        Err(ureq::Error::Status(code, r)) => (
            code,
            String::new(),
            parse_json(&r.into_string().unwrap_or_default()),
        ),
        Err(e) => panic!("POST /predict: {e}"),
    }
}

#[test]
fn classifier_feedback_fills_the_confusion_matrix_of_its_classes() {
    let artifact = tree_artifact();
    let version = artifact.model_version.clone();
    let (service, _keys) = start_with_key(&artifact, &[]);
    let (records, targets, _) = serve_support::iris();
    let mut expected = std::collections::BTreeMap::<(String, String), f64>::new();
    for i in (0..150).step_by(10) {
        let (status, header, body) =
            predict_with_header(&service, &json!({"features": records.row(i).to_vec()}));
        assert_eq!(status, 200, "{body}");
        let id = body["prediction_id"].as_str().expect("prediction_id");
        assert_eq!(header, id);
        let predicted = body["prediction"]["class"]
            .as_str()
            .expect("class")
            .to_owned();
        let actual = serve_support::IRIS_CLASSES[targets[i]].to_owned();
        // Class names and class indices are both accepted as truth.
        let truth = if i % 20 == 0 {
            json!(actual)
        } else {
            json!(targets[i])
        };
        let (status, answer) = feedback(&service, &json!({"prediction_id": id, "truth": truth}));
        assert_eq!(status, 200, "{answer}");
        *expected.entry((predicted, actual)).or_default() += 1.0;
    }
    let (status, body) = service.predict(&json!({"features": records.row(0).to_vec()}).to_string());
    assert_eq!(status, 200);
    let id = body["prediction_id"].as_str().expect("id");
    for bad in [json!("daisy"), json!(3), json!(1.5), json!(null)] {
        let (status, answer) = feedback(&service, &json!({"prediction_id": id, "truth": bad}));
        assert_eq!(
            (status, answer["outcome"].as_str()),
            (422, Some("invalid_truth")),
            "{bad}"
        );
    }
    let scrape = service.scrape();
    let cells = common::samples(
        &scrape,
        "model_feedback_confusion_total",
        &[("model_version", &version)],
    );
    assert_eq!(cells.len(), 9, "3 × 3 classes, created at 0");
    for cell in cells {
        let key = (
            cell.labels["predicted"].to_string(),
            cell.labels["actual"].to_string(),
        );
        let want = expected.get(&key).copied().unwrap_or(0.0);
        assert_eq!(common::scalar(&cell.value), want, "{key:?}");
    }
    assert_eq!(
        common::value(
            &scrape,
            "model_feedback_total",
            &[("outcome", "invalid_truth")]
        ),
        Some(4.0)
    );
}

#[test]
fn every_documented_quality_metric_is_exported_with_its_type_and_labels() {
    let regression = linear_artifact(1);
    let (service, _keys) = start_with_key(&regression, &[]);
    let (classifier, _keys2) = start_with_key(&tree_artifact(), &[]);
    let data = diabetes();
    let (_, _, body) =
        predict_with_header(&service, &json!({"features": data.records.row(0).to_vec()}));
    let id = body["prediction_id"].as_str().expect("id");
    assert_eq!(
        feedback(&service, &json!({"prediction_id": id, "truth": 100.0})).0,
        200
    );
    let scrape = service.scrape();
    let classifier_scrape = classifier.scrape();
    for (name, kind, labels) in common::documented_metrics("Quality") {
        let classifier_only = [
            "model_feedback_confusion_total",
            "model_feedback_correct_total",
        ];
        let from = if classifier_only.contains(&name.as_str()) {
            &classifier_scrape
        } else {
            &scrape
        };
        assert_eq!(
            common::family_names(from).get(&name).copied(),
            Some(kind.as_str()),
            "{name}: exported with type {kind}"
        );
        let documented: BTreeSet<String> = labels.into_iter().collect();
        for sample in common::samples(from, &name, &[]) {
            let exported: BTreeSet<String> = sample.labels.keys().cloned().collect();
            assert_eq!(exported, documented, "{name}: label names");
        }
    }
}

#[test]
fn without_a_key_no_ids_are_issued_and_feedback_names_the_missing_key() {
    let service = Service::start(Some(&linear_artifact(1)), &[]);
    let data = diabetes();
    let (status, header, body) =
        predict_with_header(&service, &json!({"features": data.records.row(0).to_vec()}));
    assert_eq!(status, 200);
    assert!(
        header.is_empty() && body.get("prediction_id").is_none(),
        "{body}"
    );
    let (status, answer) = feedback(&service, &json!({"prediction_id": "x", "truth": 1.0}));
    assert_eq!(status, 503);
    assert_eq!(answer["error"], json!("feedback disabled"));
    assert!(answer["detail"]
        .as_str()
        .unwrap_or("")
        .contains("--feedback-key-file"));
}

#[test]
fn a_key_readable_by_others_or_too_short_stops_the_service_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = key_file(dir.path());
    let model = dir.path().join("model.json");
    linear_artifact(1).save(&model).expect("save");
    for (mode, content, message) in [
        (
            0o644,
            "0123456789abcdef0123456789abcdef",
            "readable by group or others",
        ),
        (0o600, "short", "at least 32"),
    ] {
        std::fs::write(&key, content).expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut process = common::Process::mlwatch(
            "serve",
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--model-path",
                model.to_str().expect("utf-8"),
                "--feedback-key-file",
                key.to_str().expect("utf-8"),
            ],
            dir.path(),
        );
        let status = process.wait_exit(Duration::from_secs(30)).expect("exits");
        assert!(!status.success());
        assert!(
            process.log_text().contains(message),
            "{}",
            process.log_text()
        );
    }
}

/// `mlwatch load --feedback-fraction` against `service`: its JSON summary.
fn load_with_feedback(service: &Service, shift: &str) -> Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args([
            "load",
            "--target",
            &service.base,
            "--requests",
            "20",
            "--concurrency",
            "2",
            "--feedback-fraction",
            "0.5",
            "--feedback-rows",
            "88",
            "--feedback-delay",
            "200ms",
            "--concept-shift",
            shift,
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mlwatch load");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mlwatch load failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_json(&stdout)
}

#[test]
fn load_sends_feedback_for_a_fraction_reconciled_and_a_concept_shift_raises_the_error() {
    let artifact = linear_artifact(1);
    let version = artifact.model_version.clone();
    let (service, _keys) = start_with_key(&artifact, &[]);
    let squared_and_n = || {
        let scrape = service.scrape();
        let v = [("model_version", version.as_str())];
        (
            common::value(&scrape, "model_feedback_squared_error_total", &v).unwrap_or(0.0),
            common::value(&scrape, "model_feedback_labelled_total", &v).unwrap_or(0.0),
        )
    };
    let summary = load_with_feedback(&service, "0");
    let feedback = &summary["feedback"];
    assert_eq!(feedback["predicted"], json!(88), "{feedback}");
    assert_eq!(feedback["feedback_sent"], json!(44), "half of the rows");
    assert_eq!(feedback["by_outcome"], json!({"accepted": 44}));
    assert_eq!(feedback["mismatches"], json!([]));
    let (squared, n) = squared_and_n();
    assert_eq!(n, 44.0);
    let plain_rmse = (squared / n).sqrt();

    let shifted = load_with_feedback(&service, "1.0");
    assert_eq!(shifted["feedback"]["by_outcome"], json!({"accepted": 44}));
    let (squared_after, n_after) = squared_and_n();
    let shifted_rmse = ((squared_after - squared) / (n_after - n)).sqrt();
    assert!(
        shifted_rmse > 1.3 * plain_rmse,
        "a one-sigma concept shift of the truth: RMSE {shifted_rmse} vs {plain_rmse}"
    );
}
