//! `runs/log-batch` payloads within MLflow's documented limits: at most 1000
//! metrics, 100 params and 100 tags per request, 1000 entities in all; keys
//! up to 250 characters, param values up to 6000 and tag values up to 8000.
//! [`split`] turns any amount of data into requests that respect them, so
//! the server never refuses a batch for its size.

use serde_json::{json, Value};

pub const MAX_METRICS: usize = 1000;
const MAX_PARAMS: usize = 100;
pub const MAX_TAGS: usize = 100;
const MAX_ENTITIES: usize = 1000;
const MAX_KEY_LENGTH: usize = 250;
const MAX_PARAM_VALUE_LENGTH: usize = 6000;
const MAX_TAG_VALUE_LENGTH: usize = 8000;

/// One metric point. `step` is the training iteration (1-based, the value
/// `training_epochs_total` has once the iteration completed).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp_ms: i64,
    pub step: i64,
}

/// One request's worth of metrics, params and tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub metrics: Vec<Metric>,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.params.is_empty() && self.tags.is_empty()
    }

    pub fn to_json(&self, run_id: &str) -> Value {
        let pairs = |items: &[(String, String)]| -> Vec<Value> {
            items
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect()
        };
        json!({
            "run_id": run_id,
            "metrics": self.metrics.iter().map(|m| json!({
                "key": m.key, "value": m.value, "timestamp": m.timestamp_ms, "step": m.step,
            })).collect::<Vec<_>>(),
            "params": pairs(&self.params),
            "tags": pairs(&self.tags),
        })
    }
}

/// Splits metrics, params and tags into batches within the limits, in
/// order. Non-finite metric values are dropped (JSON has no NaN and MLflow
/// refuses null); over-long keys and values are truncated on a character
/// boundary rather than refused.
pub fn split(
    metrics: Vec<Metric>,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
) -> Vec<Batch> {
    let mut metrics = metrics
        .into_iter()
        .filter(|m| m.value.is_finite())
        .map(|mut m| {
            m.key = truncate(&m.key, MAX_KEY_LENGTH);
            m
        })
        .peekable();
    let clip = |items: Vec<(String, String)>, value_length: usize| {
        items
            .into_iter()
            .map(|(k, v)| (truncate(&k, MAX_KEY_LENGTH), truncate(&v, value_length)))
            .collect::<Vec<_>>()
    };
    let mut params = clip(params, MAX_PARAM_VALUE_LENGTH).into_iter().peekable();
    let mut tags = clip(tags, MAX_TAG_VALUE_LENGTH).into_iter().peekable();
    let mut batches = Vec::new();
    while params.peek().is_some() || tags.peek().is_some() || metrics.peek().is_some() {
        let mut batch = Batch::default();
        batch.params.extend(params.by_ref().take(MAX_PARAMS));
        batch.tags.extend(tags.by_ref().take(MAX_TAGS));
        let room = (MAX_ENTITIES - batch.params.len() - batch.tags.len()).min(MAX_METRICS);
        batch.metrics.extend(metrics.by_ref().take(room));
        batches.push(batch);
    }
    batches
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(i: usize) -> Metric {
        Metric {
            key: format!("m{}", i % 7),
            value: i as f64,
            timestamp_ms: 1_700_000_000_000 + i as i64,
            step: i as i64,
        }
    }

    fn pairs(prefix: &str, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), i.to_string()))
            .collect()
    }

    #[test]
    fn every_batch_respects_the_documented_limits_and_nothing_is_lost() {
        for (m, p, t) in [
            (0, 0, 0),
            (1, 0, 0),
            (2500, 0, 0),
            (999, 250, 7),
            (10, 101, 301),
        ] {
            let batches = split((0..m).map(metric).collect(), pairs("p", p), pairs("t", t));
            for b in &batches {
                assert!(!b.is_empty());
                assert!(b.metrics.len() <= MAX_METRICS);
                assert!(b.params.len() <= MAX_PARAMS);
                assert!(b.tags.len() <= MAX_TAGS);
                assert!(b.metrics.len() + b.params.len() + b.tags.len() <= MAX_ENTITIES);
            }
            let metrics: Vec<Metric> = batches.iter().flat_map(|b| b.metrics.clone()).collect();
            assert_eq!(
                metrics,
                (0..m).map(metric).collect::<Vec<_>>(),
                "order kept"
            );
            assert_eq!(batches.iter().map(|b| b.params.len()).sum::<usize>(), p);
            assert_eq!(batches.iter().map(|b| b.tags.len()).sum::<usize>(), t);
        }
    }

    #[test]
    fn a_full_batch_of_params_leaves_room_for_metrics_within_the_entity_limit() {
        let batches = split(
            (0..1000).map(metric).collect(),
            pairs("p", 100),
            pairs("t", 100),
        );
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].metrics.len(), 800);
        assert_eq!(batches[1].metrics.len(), 200);
    }

    #[test]
    fn non_finite_values_are_dropped_and_long_strings_truncated() {
        let mut nan = metric(1);
        nan.value = f64::NAN;
        let long = "é".repeat(9000);
        let batches = split(
            vec![nan, metric(2)],
            vec![("k".repeat(300), long.clone())],
            vec![("tag".into(), long)],
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].metrics, vec![metric(2)]);
        assert_eq!(batches[0].params[0].0.chars().count(), MAX_KEY_LENGTH);
        assert_eq!(
            batches[0].params[0].1.chars().count(),
            MAX_PARAM_VALUE_LENGTH
        );
        assert_eq!(batches[0].tags[0].1.chars().count(), MAX_TAG_VALUE_LENGTH);
    }

    #[test]
    fn json_has_the_rest_api_field_names() {
        let batch = Batch {
            metrics: vec![metric(3)],
            params: pairs("p", 1),
            tags: pairs("t", 1),
        };
        let body = batch.to_json("run");
        assert_eq!(body["run_id"], "run");
        assert_eq!(body["metrics"][0]["key"], "m3");
        assert_eq!(body["metrics"][0]["step"], 3);
        assert_eq!(body["metrics"][0]["timestamp"], 1_700_000_000_003_i64);
        assert_eq!(body["params"][0]["key"], "p0");
        assert_eq!(body["tags"][0]["value"], "0");
    }
}
