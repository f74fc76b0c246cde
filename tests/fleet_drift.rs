//! Fleet drift against real processes: three `mlwatch serve` replicas of one
//! model behind one Prometheus job, drifted traffic to one replica only.
//!
//! The fleet PSI that prometheus/rules/ml_fleet.yml records must equal the
//! PSI the test computes offline from every row it sent (pooled over the
//! replicas), the bin counts must add up to what was sent within the 10m
//! time window, and each replica's own PSI gauge must still show its own
//! traffic only (its last `--drift-window` samples).
//!
//! Exact by construction, with no clock of the test's: every recorded
//! series is read at one instant, the fleet rule group's own evaluation
//! time, so all of them come from one evaluation. `increase()` scales each
//! instance's growth by an extrapolation factor to the end of the window
//! (every counter starts at 0 inside the window, so there is none at its
//! start); the factor is the same for every bin of one instance that one
//! rule reads, because one scrape samples all of them and one query sees
//! a scrape whole (TSDB isolation). Two rules of one evaluation are two
//! queries, run one after the other: a scrape that commits between them
//! is in the second and not in the first, so the feature bins (one rule)
//! and the prediction bins (another) each have factors of their own.
//! Every fleet bin of one rule must be `Σ f_i · sent_i` with one factor
//! per replica: the test fits the three factors of each rule by least
//! squares, requires a residual of float rounding, and factors between 1
//! and the bound the samples in the window allow (which excludes a
//! replica missing, 0, or counted twice, 2). Each fleet PSI must then
//! equal the PSI of its rule's pool, computed offline. The pooling
//! arithmetic itself is tested deterministically by promtool
//! (tests/prometheus/ml_fleet_test.yml).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

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
/// Samples of every bin counter in the window before the rules are read:
/// with n samples, increase() extrapolates by at most 1.1 intervals over
/// (n - 1), so the factor is at most 1 + 1.1 / (n - 2) even if a query
/// sees one sample more than the rule did: 1.275 for 6, well below the 2
/// of a replica counted twice.
const SAMPLES: f64 = 6.0;

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

/// One quantity whose bins the service counts: a feature or the prediction.
struct Track<'a> {
    name: String,
    bins: &'a BinReference,
    /// The feature's index; `None` for the prediction.
    feature: Option<usize>,
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

/// Least-squares factors `f` with `y[k] ≈ Σ_i f[i] · a[k][i]` (normal
/// equations of three unknowns, by Cramer's rule), and the largest residual.
fn fit(a: &[[f64; REPLICAS]], y: &[f64]) -> ([f64; REPLICAS], f64) {
    let mut m = [[0.0; REPLICAS]; REPLICAS];
    let mut v = [0.0; REPLICAS];
    for (row, target) in a.iter().zip(y) {
        for i in 0..REPLICAS {
            v[i] += row[i] * target;
            for j in 0..REPLICAS {
                m[i][j] += row[i] * row[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let whole = det(&m);
    assert!(
        whole.abs() > 1e-9,
        "the replicas' counts are not independent"
    );
    let mut f = [0.0; REPLICAS];
    for (k, factor) in f.iter_mut().enumerate() {
        let mut column = m;
        for (row, value) in column.iter_mut().zip(v) {
            row[k] = value;
        }
        *factor = det(&column) / whole;
    }
    let residual = a
        .iter()
        .zip(y)
        .map(|(row, target)| (row.iter().zip(&f).map(|(c, w)| c * w).sum::<f64>() - target).abs())
        .fold(0.0, f64::max);
    (f, residual)
}

/// Instant query as JSON samples (`metric`, `value`).
fn query(stack: &LiveStack, promql: &str) -> Vec<Value> {
    prometheus_query(&stack.prometheus_url, promql, None)
}

/// Instant query at `at` (Unix seconds).
fn query_at(stack: &LiveStack, promql: &str, at: f64) -> Vec<Value> {
    prometheus_query(&stack.prometheus_url, promql, Some(at))
}

fn number(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// `label` value → sample value of an instant query (at `at`, or now).
fn by_label(stack: &LiveStack, promql: &str, label: &str) -> BTreeMap<String, f64> {
    labelled(query(stack, promql), label)
}

fn labelled(samples: Vec<Value>, label: &str) -> BTreeMap<String, f64> {
    samples
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

    // Raw counters add up to exactly what was sent, per instance. The
    // query's own evaluation time (Prometheus' clock) is when that was
    // stored: a rule evaluation later than it reads all of it.
    let (per_instance, counted_at) =
        eventually("every row counted on every instance", WAIT, || {
            let samples = query(
                &stack,
                &format!(
                "sum by (instance) (model_input_drift_bin_samples_total{{feature=\"{feature}\"}})"
            ),
            );
            let evaluated_at = samples.first()?["value"][0].as_f64()?;
            let sums = labelled(samples, "instance");
            (sums.values().sum::<f64>() == total as f64).then_some((sums, evaluated_at))
        });
    for (url, rows) in stack.app_urls.iter().zip(ROWS) {
        let instance = url.trim_start_matches("http://");
        assert_eq!(
            per_instance.get(instance),
            Some(&(rows as f64)),
            "{per_instance:?}"
        );
    }

    // One instant for every recorded series: the fleet group's evaluation
    // time, once that evaluation ran after every row was stored and every
    // counter has SAMPLES samples in the window. The anchor is the group's
    // last rule: the group stores its rules' results one after another, so
    // when the last one is in, every rule of that evaluation is (an earlier
    // anchor would let a later rule's previous result answer at `at`).
    let last_rule = common::queries::last_record("ml_fleet.yml", "ml_fleet_drift");
    let held_rules = [
        format!("job_model_version_feature:model_input_drift_samples:increase10m{{feature=\"{feature}\",model_version=\"{version}\"}}"),
        format!("job_model_version:model_prediction_drift_samples:increase10m{{model_version=\"{version}\"}}"),
    ];
    let at = eventually("fleet window holds every row", WAIT, || {
        let at = number(query(&stack, &format!("timestamp({last_rule})")).first()?);
        let held = held_rules
            .iter()
            .map(|rule| query_at(&stack, rule, at).first().map(number))
            .collect::<Option<Vec<f64>>>()?;
        let fewest = number(
            query_at(
                &stack,
                "min(count_over_time(model_input_drift_bin_samples_total[10m]))",
                at,
            )
            .first()?,
        );
        (at > counted_at && held.iter().all(|h| *h >= total as f64) && fewest >= SAMPLES)
            .then_some(at)
    });

    // Every fleet bin of one rule is Σ f_i · sent_i: the feature bins
    // (one rule for every feature), then the prediction bins.
    let instance_of = |url: &String| url.trim_start_matches("http://").to_owned();
    let feature_tracks: Vec<Track> = artifact
        .feature_names
        .iter()
        .enumerate()
        .map(|(j, name)| Track {
            name: name.clone(),
            bins: &artifact.reference.features[j].bins,
            feature: Some(j),
        })
        .collect();
    let prediction_tracks = vec![Track {
        name: "(predictions)".into(),
        bins: &artifact.reference.prediction,
        feature: None,
    }];
    let bound = 1.0 + 1.1 / (SAMPLES - 2.0);
    let mut sent_counts: BTreeMap<String, Vec<Vec<u64>>> = BTreeMap::new();
    let mut factors_of: BTreeMap<String, [f64; REPLICAS]> = BTreeMap::new();
    let mut fleet_samples = 0.0;
    for (rule, tracks) in [
        ("features", &feature_tracks),
        ("predictions", &prediction_tracks),
    ] {
        let (mut a, mut y) = (Vec::new(), Vec::new());
        for track_of in tracks.iter() {
            let (name, bins) = (&track_of.name, track_of.bins);
            let per_replica: Vec<Vec<u64>> = track(&artifact, &sent, track_of.feature)
                .iter()
                .map(|v| counts(bins, v.iter().copied()))
                .collect();
            let fleet_bins = labelled(
                query_at(
                    &stack,
                    &match track_of.feature {
                        Some(_) => format!("job_model_version_feature_bin:model_input_drift_bin_samples:increase10m{{model_version=\"{version}\",feature=\"{name}\"}}"),
                        None => format!("job_model_version_bin:model_prediction_drift_bin_samples:increase10m{{model_version=\"{version}\"}}"),
                    },
                    at,
                ),
                "bin",
            );
            assert_eq!(
                fleet_bins.len(),
                bins.bins(),
                "{name}: one series per bin: {fleet_bins:?}"
            );
            for bin in 0..bins.bins() {
                a.push(std::array::from_fn(|i| per_replica[i][bin] as f64));
                y.push(fleet_bins[&bin.to_string()]);
            }
            sent_counts.insert(name.clone(), per_replica);
        }
        let (factors, residual) = fit(&a, &y);
        let largest = y.iter().copied().fold(1.0, f64::max);
        assert!(
            residual <= 1e-6 * largest,
            "{rule}: fleet bins are not Σ f_i · sent_i: residual {residual}, factors {factors:?}"
        );
        assert!(
            factors.iter().all(|f| *f >= 1.0 - 1e-9 && *f <= bound),
            "{rule}: every replica's rows counted once, extrapolated by at most {bound}: {factors:?} ({:?})",
            stack.app_urls.iter().map(instance_of).collect::<Vec<_>>()
        );
        for track_of in tracks.iter() {
            factors_of.insert(track_of.name.clone(), factors);
        }
        fleet_samples += y.iter().sum::<f64>();
    }
    let tracks: Vec<&Track> = feature_tracks.iter().chain(&prediction_tracks).collect();
    assert!(
        fleet_samples > (tracks.len() * REPLICAS * DRIFT_WINDOW) as f64,
        "the fleet window is a time window: it holds more than the replicas' rings"
    );

    // Fleet PSI of every feature and of the predictions: the PSI of its
    // rule's pool, from the same evaluation.
    let mut fleet_psi = labelled(
        query_at(
            &stack,
            &format!("job_model_version_feature:model_input_drift_psi:10m{{model_version=\"{version}\"}}"),
            at,
        ),
        "feature",
    );
    fleet_psi.insert(
        "(predictions)".into(),
        number(
            query_at(
                &stack,
                &format!("job_model_version:model_prediction_drift_psi:10m{{model_version=\"{version}\"}}"),
                at,
            )
            .first()
            .expect("fleet prediction PSI"),
        ),
    );
    let mut report = Vec::new();
    for Track { name, bins, .. } in tracks {
        let exact = pooled_psi(bins, &sent_counts[name], &factors_of[name]);
        let got = fleet_psi[name];
        report.push(format!("{name}: prometheus {got:.6} offline {exact:.6}"));
        assert!(
            (got - exact).abs() <= 1e-6 * exact.max(1.0),
            "fleet PSI of {name}: {}",
            report.join("; ")
        );
    }
    eprintln!(
        "factors: features {:?}, predictions {:?}; {}",
        factors_of[&feature],
        factors_of["(predictions)"],
        report.join("; ")
    );
    let values = track(&artifact, &sent, Some(drifted));

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
