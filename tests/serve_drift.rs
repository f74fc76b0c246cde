//! Drift detection end to end: traffic drawn from the training rows keeps
//! every PSI low; the same rows with one feature shifted by two reference
//! standard deviations raise that feature's PSI above 0.2 while the others
//! stay below 0.1.

mod common;
mod serve_support;

use serde_json::json;
use serve_support::{diabetes, linear_artifact, Service};

const WINDOW: usize = 400;

/// Sends the first `WINDOW` diabetes rows (feature `shift.0` moved by
/// `shift.1`) in batches of 50.
fn send_window(service: &Service, shift: Option<(usize, f64)>) {
    let data = diabetes();
    let rows: Vec<Vec<f64>> = (0..WINDOW)
        .map(|i| {
            let mut row = data.records.row(i).to_vec();
            if let Some((feature, by)) = shift {
                row[feature] += by;
            }
            row
        })
        .collect();
    for batch in rows.chunks(50) {
        let (status, body) = service.predict(&json!({"instances": batch}).to_string());
        assert_eq!(status, 200, "{body}");
    }
}

fn psi(scrape: &common::Scrape, feature: &str) -> f64 {
    common::value(scrape, "model_input_drift_psi", &[("feature", feature)])
        .unwrap_or_else(|| panic!("no PSI for {feature}"))
}

#[test]
fn shifting_one_feature_by_two_std_raises_only_its_psi() {
    let artifact = linear_artifact(1);
    let window = WINDOW.to_string();
    let service = Service::start(Some(&artifact), &["--drift-window", &window]);
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "model_drift_window_fill", &[]),
        Some(0.0)
    );
    assert_eq!(
        common::value(&scrape, "model_drift_window_capacity", &[]),
        Some(WINDOW as f64)
    );
    assert!(
        common::samples(&scrape, "model_input_drift_psi", &[]).is_empty(),
        "no PSI from an empty window"
    );

    // Training-like traffic: no drift anywhere.
    send_window(&service, None);
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "model_drift_window_fill", &[]),
        Some(WINDOW as f64)
    );
    for feature in &artifact.feature_names {
        let value = psi(&scrape, feature);
        assert!(value < 0.1, "{feature}: PSI {value} on training rows");
    }
    let before = common::value(&scrape, "model_prediction_drift_psi", &[]).expect("prediction PSI");
    assert!(before < 0.1, "prediction PSI {before} on training rows");

    // The same rows with "body mass index" shifted by +2 std fill the window anew.
    let shifted = 2;
    let name = artifact.feature_names[shifted].clone();
    let std = artifact.reference.features[shifted].std;
    send_window(&service, Some((shifted, 2.0 * std)));
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "model_drift_window_fill", &[]),
        Some(WINDOW as f64),
        "the window stays full"
    );
    for feature in &artifact.feature_names {
        let value = psi(&scrape, feature);
        if *feature == name {
            assert!(value > 0.2, "{feature}: PSI {value} after a 2-std shift");
        } else {
            assert!(value < 0.1, "{feature}: PSI {value}, not shifted");
        }
    }
    let after = common::value(&scrape, "model_prediction_drift_psi", &[]).expect("prediction PSI");
    assert!(
        after > before,
        "predictions move with a shifted input ({before} → {after})"
    );
    let out_of_range = common::value(
        &scrape,
        "model_input_out_of_range_total",
        &[("feature", &name)],
    )
    .unwrap();
    assert!(
        out_of_range > 0.0,
        "a 2-std shift pushes some values past the training max"
    );
    let unshifted = common::value(
        &scrape,
        "model_input_out_of_range_total",
        &[("feature", "age")],
    )
    .unwrap();
    assert_eq!(
        unshifted, 0.0,
        "training rows are inside the training range"
    );
}

#[test]
fn no_instrumentation_skips_prediction_metrics_and_drift_but_serves_metrics() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--no-instrumentation"]);
    send_window(&service, None);
    let scrape = service.scrape();
    for absent in [
        "model_prediction_requests_total",
        "model_prediction_duration_seconds",
        "model_prediction_value",
        "model_input_drift_psi",
        "model_drift_window_fill",
        "http_server_request_duration_seconds",
    ] {
        assert!(
            common::samples(&scrape, absent, &[]).is_empty(),
            "{absent} is not recorded without instrumentation"
        );
    }
    assert_eq!(common::value(&scrape, "model_loaded", &[]), Some(1.0));
    assert_eq!(common::samples(&scrape, "model_info", &[]).len(), 1);
}
