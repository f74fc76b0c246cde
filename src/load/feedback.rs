//! The labelled phase of `mlwatch load` (`--feedback-fraction`): ground
//! truth for predictions, as a label pipeline would send it
//! (docs/load.md, "Feedback"; docs/quality.md).
//!
//! After the main traffic, the tool predicts `--feedback-rows` rows of the
//! model's own data set (its held-out validation split, so that serving
//! quality without a shift matches the validation score), keeps the
//! prediction id of each row, waits `--feedback-delay`, and sends the
//! truth of a `--feedback-fraction` of them to the *next* replica (not the
//! one that served: the join must not depend on it). `--concept-shift`
//! changes the truth while the inputs stay the data set's own: a
//! regression target moves by that many standard deviations, a class is
//! replaced by the next class with that probability. Every answer is
//! tallied by outcome and, unless `--no-reconcile`, compared with the
//! service's `model_feedback_total` and `model_prediction_requests_total`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{json, Value};

use super::reconcile::parse_exposition;
use crate::train::{DatasetName, Targets};

/// Rows per /predict and per /feedback request.
const BATCH: usize = 32;

/// What the labelled phase does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedbackOptions {
    /// Data set rows predicted.
    pub rows: usize,
    /// Share of them whose truth is sent, in (0, 1].
    pub fraction: f64,
    pub delay: Duration,
    /// 0: the true truth.
    pub concept_shift: f64,
}

/// What the labelled phase sent, and what the service counted.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackSummary {
    pub dataset: String,
    pub predicted: u64,
    pub feedback_sent: u64,
    pub concept_shift: f64,
    /// Answers by outcome, as the service named them.
    pub by_outcome: BTreeMap<String, u64>,
    /// Empty when everything matched (or with `--no-reconcile`).
    pub mismatches: Vec<String>,
    pub reconciled: bool,
}

/// Counters read from every target's /metrics, summed.
#[derive(Debug, Default)]
struct Counts {
    outcomes: BTreeMap<String, f64>,
    successes: f64,
}

async fn scrape(client: &reqwest::Client, bases: &[String]) -> anyhow::Result<Counts> {
    use prometheus_parse::Value as V;
    let mut counts = Counts::default();
    for base in bases {
        let url = format!("{base}/metrics");
        let text = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot scrape {url}"))?
            .text()
            .await
            .with_context(|| format!("cannot read {url}"))?;
        for sample in parse_exposition(&text)?.samples {
            let (V::Counter(value) | V::Untyped(value)) = sample.value else {
                continue;
            };
            match sample.metric.as_str() {
                "model_feedback_total" => {
                    let outcome = sample.labels.get("outcome").unwrap_or("").to_owned();
                    *counts.outcomes.entry(outcome).or_default() += value;
                }
                "model_prediction_requests_total"
                    if sample.labels.get("status") == Some("success") =>
                {
                    counts.successes += value;
                }
                _ => {}
            }
        }
    }
    Ok(counts)
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success(),
        "POST {url} answered {status}: {answer}"
    );
    Ok(answer)
}

/// One labelled row: what to send as truth.
struct Row {
    features: Vec<f64>,
    truth: Value,
}

/// The rows of the data set's validation split, cycled to `count`, with
/// the truth the concept shift makes of each.
fn rows(dataset: DatasetName, count: usize, shift: f64, seed: u64) -> Vec<Row> {
    let prepared = crate::train::prepare(dataset, seed, 0.2);
    let split = prepared.validation;
    let n = split.records.nrows();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_f00d);
    let truth_of = |i: usize, rng: &mut rand::rngs::StdRng| match &split.targets {
        Targets::Regression(values) => {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                / values.len() as f64)
                .sqrt();
            json!(values[i] + shift * std)
        }
        Targets::Classification(classes) => {
            let classes_n = prepared.class_names.len().max(1);
            let mut class = classes[i];
            if shift > 0.0 && rng.gen_bool(shift.min(1.0)) {
                class = (class + 1) % classes_n;
            }
            prepared
                .class_names
                .get(class)
                .map_or_else(|| json!(class), |name| json!(name))
        }
    };
    (0..count)
        .map(|k| {
            let i = k % n.max(1);
            Row {
                features: split.records.row(i).to_vec(),
                truth: truth_of(i, &mut rng),
            }
        })
        .collect()
}

/// Whether row `k` of `count` gets feedback: evenly spread, exactly
/// `floor(count × fraction)` rows.
fn chosen(k: usize, fraction: f64) -> bool {
    ((k + 1) as f64 * fraction).floor() > (k as f64 * fraction).floor()
}

/// Runs the labelled phase against `bases` (round robin).
pub async fn run(
    client: &reqwest::Client,
    bases: &[String],
    dataset: &str,
    options: FeedbackOptions,
    seed: u64,
    reconcile: bool,
) -> anyhow::Result<FeedbackSummary> {
    use clap::ValueEnum;
    let name = DatasetName::from_str(dataset, true).map_err(|_| {
        anyhow::anyhow!("the model was trained on {dataset:?}, a data set this build cannot load for --feedback-fraction")
    })?;
    let rows = rows(name, options.rows, options.concept_shift, seed);
    let before = if reconcile {
        Some(scrape(client, bases).await?)
    } else {
        None
    };
    // Predict, keeping each row's id and the replica that served it.
    let mut labelled = Vec::new();
    let mut predict_requests = 0u64;
    for (b, chunk) in rows.chunks(BATCH).enumerate() {
        let served = b % bases.len();
        let instances: Vec<&Vec<f64>> = chunk.iter().map(|r| &r.features).collect();
        let answer = post(
            client,
            &format!("{}/predict", bases[served]),
            &json!({ "instances": instances }),
        )
        .await?;
        predict_requests += 1;
        let ids = answer["prediction_ids"].as_array().with_context(|| {
            format!(
                "{} issued no prediction ids: start it with --feedback-key-file",
                bases[served]
            )
        })?;
        for (row, id) in chunk.iter().zip(ids) {
            labelled.push((id.clone(), row.truth.clone(), served));
        }
    }
    tokio::time::sleep(options.delay).await;
    // The truth of the chosen rows, each to the replica after the one that served it.
    let mut by_target: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    for (k, (id, truth, served)) in labelled.iter().enumerate() {
        if chosen(k, options.fraction) {
            by_target
                .entry((served + 1) % bases.len())
                .or_default()
                .push(json!({"prediction_id": id, "truth": truth}));
        }
    }
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = 0u64;
    for (target, items) in &by_target {
        for chunk in items.chunks(BATCH) {
            let answer = post(
                client,
                &format!("{}/feedback", bases[*target]),
                &json!({ "feedback": chunk }),
            )
            .await?;
            sent += chunk.len() as u64;
            for result in answer["results"].as_array().into_iter().flatten() {
                let outcome = result["outcome"].as_str().unwrap_or("(none)").to_owned();
                *by_outcome.entry(outcome).or_default() += 1;
            }
        }
    }
    let mut mismatches = Vec::new();
    if let Some(before) = before {
        let after = scrape(client, bases).await?;
        let counted = after.successes - before.successes;
        if counted != predict_requests as f64 {
            mismatches.push(format!(
                "labelled phase: sent {predict_requests} successful /predict requests, the service counted {counted}"
            ));
        }
        let outcomes: std::collections::BTreeSet<&String> =
            after.outcomes.keys().chain(by_outcome.keys()).collect();
        for outcome in outcomes {
            let counted = after.outcomes.get(outcome).copied().unwrap_or(0.0)
                - before.outcomes.get(outcome).copied().unwrap_or(0.0);
            let answered = by_outcome.get(outcome).copied().unwrap_or(0) as f64;
            if counted != answered {
                mismatches.push(format!(
                    "feedback outcome {outcome}: {answered} answered, the service counted {counted}"
                ));
            }
        }
    }
    Ok(FeedbackSummary {
        dataset: dataset.to_owned(),
        predicted: labelled.len() as u64,
        feedback_sent: sent,
        concept_shift: options.concept_shift,
        by_outcome,
        mismatches,
        reconciled: reconcile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_rows_are_the_fraction_evenly_spread() {
        for (count, fraction, want) in
            [(200, 0.5, 100), (200, 1.0, 200), (10, 0.25, 2), (7, 0.1, 0)]
        {
            let picked: Vec<usize> = (0..count).filter(|k| chosen(*k, fraction)).collect();
            assert_eq!(picked.len(), want, "{count} × {fraction}");
        }
        let half: Vec<usize> = (0..6).filter(|k| chosen(*k, 0.5)).collect();
        assert_eq!(half, [1, 3, 5]);
    }

    #[test]
    fn a_concept_shift_moves_the_truth_but_not_the_inputs() {
        let plain = rows(DatasetName::Diabetes, 50, 0.0, 1);
        let shifted = rows(DatasetName::Diabetes, 50, 1.0, 1);
        for (a, b) in plain.iter().zip(&shifted) {
            assert_eq!(a.features, b.features);
            let moved = b.truth.as_f64().unwrap() - a.truth.as_f64().unwrap();
            assert!(
                moved > 10.0,
                "one standard deviation of the target: {moved}"
            );
        }
        let classes = rows(DatasetName::Iris, 30, 1.0, 1);
        let unshifted = rows(DatasetName::Iris, 30, 0.0, 1);
        assert!(classes
            .iter()
            .zip(&unshifted)
            .all(|(a, b)| a.truth != b.truth));
        assert!(unshifted.iter().all(|r| r.truth.is_string()), "class names");
    }
}
