//! Fleet drift against real processes: three `mlwatch serve` replicas of one
//! model behind one Prometheus job, drifted traffic to one replica only.
//!
//! The fleet PSI that prometheus/rules/ml_fleet.yml records must equal the
//! PSI the test computes offline from every row it sent (pooled over the
//! replicas), the bin counts must add up to what was sent within the 10m
//! time window, and each replica's own PSI gauge must still show its own
//! traffic only (its last `--drift-window` samples).
//!
//! Tolerance: `increase()` extrapolates each instance's counter growth to
//! the end of the window, by at most ~1.1 scrape intervals over the span
//! Prometheus has sampled, so each instance's counts are scaled by a factor
//! in [1, 1 + delta]. Within one instance every bin shares that factor
//! (one scrape), so only the instances' weights in the pool move. The test
//! bounds the fleet PSI by recomputing it with every instance's weight at
//! either end of that range (2^3 corners); shares are never off otherwise.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::stack::{batch_for, eventually, prometheus_query, LiveStack, StackOptions};
use mlwatch::model::{Artifact, BinReference};
use mlwatch::train::Algorithm;
use ndarray::Array2;
use serde_json::Value;

const REPLICAS: usize = 3;
const DRIFT_WINDOW: usize = 100;
/// Rows sent to each replica; the last one gets drifted rows.
const ROWS: [usize; REPLICAS] = [200, 120, 160];
const WAIT: Duration = Duration::from_secs(90);
/// The stack's scrape interval (StackOptions::default), with jitter.
const SCRAPE_INTERVAL_S: f64 = 1.2;
/// How long the counters are sampled before the rules are read: the
/// tolerance is 1.1 scrape intervals over this (about 3 %).
const SPAN: Duration = Duration::from_secs(45);

/// Rows of one JSON body.
fn rows_of(body: &str) -> Vec<Vec<f64>> {
    let json: Value = serde_json::from_str(body).expect("batch json");
    json["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().expect("number"))
                .collect()
        })
        .collect()
}

/// Bin counts of `values` against `bins`.
fn counts(bins: &BinReference, values: impl Iterator<Item = f64>) -> Vec<u64> {
    values.fold(vec![0; bins.bins()], |mut c, v| {
        c[bins.bin(v)] += 1;
        c
    })
}

/// Per replica: the values of one track (a feature index, or None for the
/// prediction) of every row sent.
fn track(artifact: &Artifact, sent: &[Vec<Vec<f64>>], feature: Option<usize>) -> Vec<Vec<f64>> {
    sent.iter()
        .map(|rows| match feature {
            Some(j) => rows.iter().map(|r| r[j]).collect(),
            None => {
                let width = artifact.feature_names.len();
                let flat: Vec<f64> = rows.iter().flatten().copied().collect();
                let array = Array2::from_shape_vec((rows.len(), width), flat).expect("shape");
                artifact
                    .model
                    .predict(array.view())
                    .iter()
                    .map(|p| p.as_number())
                    .collect()
            }
        })
        .collect()
}

/// PSI of the pool where replica i's counts weigh `weights[i]`.
fn pooled_psi(bins: &BinReference, per_replica: &[Vec<u64>], weights: &[f64]) -> f64 {
    let mut pooled = vec![0.0; bins.bins()];
    for (counts, w) in per_replica.iter().zip(weights) {
        for (p, c) in pooled.iter_mut().zip(counts) {
            *p += *c as f64 * w;
        }
    }
    // BinReference::psi takes integer counts; scale so rounding is far
    // below the tolerance.
    let scaled: Vec<u64> = pooled.iter().map(|p| (p * 1e6).round() as u64).collect();
    bins.psi(&scaled).expect("samples in the pool")
}

/// The fleet PSI bounds for the extrapolation range [1, 1 + delta].
fn psi_bounds(bins: &BinReference, per_replica: &[Vec<u64>], delta: f64) -> (f64, f64, f64) {
    let exact = pooled_psi(bins, per_replica, &vec![1.0; per_replica.len()]);
    let (mut low, mut high) = (exact, exact);
    for corner in 0..1u32 << per_replica.len() {
        let weights: Vec<f64> = (0..per_replica.len())
            .map(|i| {
                if corner >> i & 1 == 1 {
                    1.0 + delta
                } else {
                    1.0
                }
            })
            .collect();
        let psi = pooled_psi(bins, per_replica, &weights);
        low = low.min(psi);
        high = high.max(psi);
    }
    (exact, low - 1e-9, high + 1e-9)
}

/// Instant query as JSON samples (`metric`, `value`).
fn query(stack: &LiveStack, promql: &str) -> Vec<Value> {
    prometheus_query(&stack.prometheus_url, promql, None)
}

fn number(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// `label` value → sample value of an instant query.
fn by_label(stack: &LiveStack, promql: &str, label: &str) -> BTreeMap<String, f64> {
    query(stack, promql)
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or("").to_owned(),
                number(s),
            )
        })
        .collect()
}

#[test]
fn fleet_psi_pools_every_replica_and_instance_psi_stays_local() {
    let stack = LiveStack::start(StackOptions {
        services: vec![Algorithm::Linear; REPLICAS],
        trainers: vec![],
        drift_window: DRIFT_WINDOW,
        ..StackOptions::default()
    });
    let artifact = stack.artifact.clone();
    let version = artifact.model_version.clone();
    assert!(
        stack.artifacts.iter().all(|a| a.model_version == version),
        "the replicas serve one model_version"
    );
    let features = artifact.feature_names.len();
    let drifted = 2.min(features - 1);
    let feature = artifact.feature_names[drifted].clone();
    let bins_per_feature: usize = artifact
        .reference
        .features
        .iter()
        .map(|f| f.bins.bins())
        .sum();

    // Every bin series of every replica scraped (at 0) before any traffic,
    // so each counter's first sample in the window is 0 and increase()
    // does not extrapolate backwards.
    eventually("bin counters of all replicas in Prometheus", WAIT, || {
        let n = query(&stack, "count(model_input_drift_bin_samples_total)");
        (n.first().map(number) == Some((REPLICAS * bins_per_feature) as f64)).then_some(())
    });
    let first_scrape = Instant::now() - Duration::from_secs_f64(SCRAPE_INTERVAL_S);

    let mut sent: Vec<Vec<Vec<f64>>> = vec![Vec::new(); REPLICAS];
    for (replica, rows) in ROWS.iter().enumerate() {
        let shift = (replica == REPLICAS - 1).then_some((feature.as_str(), 3.0));
        for start in (0..*rows).step_by(20) {
            let body = batch_for(&artifact, replica * 1000 + start, 20, shift);
            assert_eq!(stack.post_predict_to(&stack.app_urls[replica], &body), 200);
            sent[replica].extend(rows_of(&body));
        }
    }
    let total: usize = ROWS.iter().sum();

    // Raw counters add up to exactly what was sent, per instance.
    let per_instance = eventually("every row counted on every instance", WAIT, || {
        let sums = by_label(
            &stack,
            &format!(
                "sum by (instance) (model_input_drift_bin_samples_total{{feature=\"{feature}\"}})"
            ),
            "instance",
        );
        (sums.values().sum::<f64>() == total as f64).then_some(sums)
    });
    for (url, rows) in stack.app_urls.iter().zip(ROWS) {
        let instance = url.trim_start_matches("http://");
        assert_eq!(
            per_instance.get(instance),
            Some(&(rows as f64)),
            "{per_instance:?}"
        );
    }

    // The fleet window has seen all of it once its count reaches the total.
    eventually("fleet window holds every row", WAIT, || {
        let n = query(&stack, &format!(
            "job_model_version_feature:model_input_drift_samples:increase10m{{feature=\"{feature}\",model_version=\"{version}\"}}"
        ));
        (n.first().map(number).unwrap_or(0.0) >= total as f64).then_some(())
    });
    // The extrapolation shrinks as the sampled span grows: read the rules
    // once Prometheus has sampled the counters for SPAN.
    if let Some(rest) = SPAN.checked_sub(first_scrape.elapsed()) {
        std::thread::sleep(rest);
    }
    let span = first_scrape.elapsed().as_secs_f64() - SCRAPE_INTERVAL_S;
    let delta = 1.1 * SCRAPE_INTERVAL_S / span;

    // Bins: each fleet bin is the pooled count, scaled by at most 1 + delta.
    let values = track(&artifact, &sent, Some(drifted));
    let bins = &artifact.reference.features[drifted].bins;
    let per_replica: Vec<Vec<u64>> = values
        .iter()
        .map(|v| counts(bins, v.iter().copied()))
        .collect();
    let fleet_bins = by_label(
        &stack,
        &format!("job_model_version_feature_bin:model_input_drift_bin_samples:increase10m{{feature=\"{feature}\"}}"),
        "bin",
    );
    assert_eq!(
        fleet_bins.len(),
        bins.bins(),
        "one series per bin: {fleet_bins:?}"
    );
    for bin in 0..bins.bins() {
        let expected: u64 = per_replica.iter().map(|c| c[bin]).sum();
        let got = fleet_bins[&bin.to_string()];
        assert!(
            got >= expected as f64 - 1e-6 && got <= expected as f64 * (1.0 + delta) + 1e-6,
            "bin {bin}: Prometheus {got}, sent {expected} (delta {delta:.4})"
        );
    }
    assert!(
        fleet_bins.values().sum::<f64>() > (REPLICAS * DRIFT_WINDOW) as f64,
        "the fleet window is a time window: it holds more than the replicas' rings"
    );

    // Fleet PSI of every feature and of the predictions.
    let fleet_psi = by_label(
        &stack,
        &format!(
            "job_model_version_feature:model_input_drift_psi:10m{{model_version=\"{version}\"}}"
        ),
        "feature",
    );
    let mut report = Vec::new();
    for (j, name) in artifact.feature_names.iter().enumerate() {
        let bins = &artifact.reference.features[j].bins;
        let per_replica: Vec<Vec<u64>> = track(&artifact, &sent, Some(j))
            .iter()
            .map(|v| counts(bins, v.iter().copied()))
            .collect();
        let (exact, low, high) = psi_bounds(bins, &per_replica, delta);
        let got = fleet_psi[name];
        report.push(format!(
            "{name}: prometheus {got:.5} offline {exact:.5} [{low:.5}, {high:.5}]"
        ));
        assert!(
            got >= low && got <= high,
            "fleet PSI of {name}: {}",
            report.join("; ")
        );
    }
    let bins = &artifact.reference.prediction;
    let per_replica: Vec<Vec<u64>> = track(&artifact, &sent, None)
        .iter()
        .map(|v| counts(bins, v.iter().copied()))
        .collect();
    let (exact, low, high) = psi_bounds(bins, &per_replica, delta);
    let got = number(
        query(
            &stack,
            &format!(
                "job_model_version:model_prediction_drift_psi:10m{{model_version=\"{version}\"}}"
            ),
        )
        .first()
        .expect("fleet prediction PSI"),
    );
    assert!(
        got >= low && got <= high,
        "fleet prediction PSI {got}, offline {exact} [{low}, {high}]"
    );
    eprintln!(
        "delta {delta:.4}; {}; predictions: prometheus {got:.5} offline {exact:.5}",
        report.join("; ")
    );

    // Per instance: each replica's gauge is the PSI of its own last
    // DRIFT_WINDOW rows, not the fleet's.
    let instance_psi = by_label(
        &stack,
        &format!("model_input_drift_psi{{feature=\"{feature}\"}}"),
        "instance",
    );
    let bins = &artifact.reference.features[drifted].bins;
    let mut gauges = Vec::new();
    for (url, values) in stack.app_urls.iter().zip(&values) {
        let recent = &values[values.len() - DRIFT_WINDOW..];
        let expected = bins
            .psi(&counts(bins, recent.iter().copied()))
            .expect("psi");
        let got = instance_psi[url.trim_start_matches("http://")];
        assert!(
            (got - expected).abs() < 1e-9,
            "{url}: gauge {got}, offline {expected}"
        );
        gauges.push(got);
    }
    let fleet = fleet_psi[&feature];
    assert!(
        gauges[REPLICAS - 1] > 1.0,
        "the drifted replica drifts: {gauges:?}"
    );
    assert!(
        gauges[..REPLICAS - 1].iter().all(|g| *g < 0.5),
        "the others do not: {gauges:?}"
    );
    assert!(
        fleet > gauges[0].max(gauges[1]) && fleet < gauges[REPLICAS - 1],
        "fleet PSI {fleet} lies between the replicas' {gauges:?}"
    );
}
