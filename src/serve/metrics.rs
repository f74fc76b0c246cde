//! The service's model metrics (docs/metrics.md, "Service"): prediction
//! counts and latency, the prediction distribution, reloads, unauthorized
//! admin calls, out-of-range inputs, and the gauges read from the current
//! model at scrape time (model_info, model_loaded, drift PSI and window,
//! drift bin counts and reference shares).
//!
//! Label sets are built once per loaded model ([`ModelLabels`]) from the
//! artifact, never from a request. Counters are touched with 0 when a model
//! loads so that every series exists before its first event, and the
//! scrape-time gauges read the current model, so an old model's series
//! disappear when it is replaced.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ndarray::ArrayView2;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use super::loaded::{LoadedModel, Store};
use super::sharded::ShardedCounts;
use crate::model::{Artifact, Prediction, Task};
use crate::telemetry::LATENCY_BUCKETS_SECONDS;

use super::labels::{BoundInstruments, MODEL_VERSIONS_KEPT};
pub use super::labels::{ModelLabels, Outcome, NO_MODEL_VERSION};

/// The service's deliberate per-instrument cardinality limits
/// (docs/metrics.md): label sets per instrument.
pub const CARDINALITY_LIMITS: &[(&str, usize)] = &[
    // (success, invalid_input, error) × versions, plus model_version="none".
    ("model_prediction_requests", 3 * MODEL_VERSIONS_KEPT + 3),
    ("model_prediction_duration_seconds", MODEL_VERSIONS_KEPT),
    ("model_prediction_value", MODEL_VERSIONS_KEPT),
    // classes × versions; a classifier with more than 16 classes reaches it sooner.
    ("model_predictions", 16 * MODEL_VERSIONS_KEPT),
    // classes² × versions (winequality: 36 × 64 = 2304).
    ("model_feedback_confusion", 4096),
    // Features of every model loaded (the label has no version).
    ("model_input_out_of_range", 512),
    // 8 methods × 7 routes × the status codes the service answers.
    ("http_server_request_duration_seconds", 1000),
    ("http_server_refused_requests", 3),
];

/// Instruments that exist only with instrumentation on.
struct PredictionInstruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
    predictions: Counter<u64>,
    out_of_range: Counter<u64>,
    /// Created by the first regression model, with its buckets (see
    /// [`ServiceMetrics::prepare`]), and those buckets' model version.
    value: OnceLock<(Histogram<f64>, Vec<f64>, String)>,
    /// Picks the row of a batch whose prediction `value` records.
    sampled: AtomicU64,
}

/// Every model metric the service records.
pub struct ServiceMetrics {
    meter: Meter,
    prediction: Option<PredictionInstruments>,
    reloads: Counter<u64>,
    unauthorized: Counter<u64>,
    no_model: ModelLabels,
    /// Every model's pending request counts with their label sets, added
    /// to `model_prediction_requests` at each collection.
    pending: Arc<Mutex<Vec<PendingRequests>>>,
}

/// One model's request counts not yet in the counter.
struct PendingRequests {
    counts: Arc<ShardedCounts>,
    labels: [[KeyValue; 2]; 3],
}

impl PendingRequests {
    fn of(labels: &ModelLabels) -> Self {
        Self {
            counts: Arc::clone(&labels.pending),
            labels: labels.by_outcome.clone(),
        }
    }
}

/// Adds the pending request counts to the counter, and forgets the models
/// that are gone (after their last count). Runs in an observable callback,
/// which the SDK calls before it reads the sync instruments, so a scrape
/// (or an OTLP export) sees every request answered before it.
fn flush_requests(requests: &Counter<u64>, pending: &Mutex<Vec<PendingRequests>>) {
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.retain(|model| {
        for (index, labels) in model.labels.iter().enumerate() {
            let n = model.counts.take(index);
            if n > 0 {
                requests.add(n, labels);
            }
        }
        // Only the list holds it: the model's labels are dropped, nothing
        // can count for it any more.
        Arc::strong_count(&model.counts) > 1
    });
}

impl ServiceMetrics {
    /// `instrumented = false` (`--no-instrumentation`) leaves out the
    /// per-request prediction metrics and drift.
    pub fn new(meter: &Meter, instrumented: bool) -> Self {
        let prediction = instrumented.then(|| PredictionInstruments {
            requests: meter
                .u64_counter("model_prediction_requests")
                .with_unit("{request}")
                .with_description("Requests to /predict by outcome")
                .build(),
            duration: meter
                .f64_histogram("model_prediction_duration_seconds")
                .with_unit("s")
                .with_description(
                    "Time to decode, validate and predict a successful /predict request",
                )
                .with_boundaries(LATENCY_BUCKETS_SECONDS.to_vec())
                .build(),
            predictions: meter
                .u64_counter("model_predictions")
                .with_unit("{prediction}")
                .with_description("Predicted classes")
                .build(),
            out_of_range: meter
                .u64_counter("model_input_out_of_range")
                .with_unit("{value}")
                .with_description("Feature values outside the training range")
                .build(),
            value: OnceLock::new(),
            sampled: AtomicU64::new(0),
        });
        let reloads = meter
            .u64_counter("model_reloads")
            .with_unit("{reload}")
            .with_description("Model reload attempts by result")
            .build();
        for result in ["success", "failure"] {
            reloads.add(0, &[KeyValue::new("result", result)]);
        }
        let unauthorized = meter
            .u64_counter("admin_unauthorized_requests")
            .with_unit("{request}")
            .with_description("Admin requests with a missing or wrong bearer token")
            .build();
        unauthorized.add(0, &[]);
        let no_model = ModelLabels::new(NO_MODEL_VERSION, &[], &[]);
        let pending = Arc::new(Mutex::new(vec![PendingRequests::of(&no_model)]));
        Self {
            meter: meter.clone(),
            prediction,
            reloads,
            unauthorized,
            no_model,
            pending,
        }
    }

    /// Creates the `model_version="none"` request series at zero; called
    /// whenever there is no model to answer.
    pub fn prepare_without_model(&self) {
        self.touch_outcomes(&self.no_model);
    }

    pub fn instrumented(&self) -> bool {
        self.prediction.is_some()
    }

    /// Builds a model's label sets and creates its series at zero.
    ///
    /// `model_prediction_value` gets its buckets from the first regression
    /// model loaded: the decile edges of its training predictions, so each
    /// bucket holds about a tenth of the traffic while nothing drifts. The
    /// OpenTelemetry SDK fixes an instrument's buckets when it is created, so
    /// a later model keeps these buckets (restart to re-bucket); a warning
    /// says so when its edges differ. `model_prediction_drift_psi` compares
    /// every model with its own reference and has no such limit.
    pub fn prepare(&self, artifact: &Artifact) -> ModelLabels {
        let mut labels = ModelLabels::new(
            &artifact.model_version,
            &artifact.class_names,
            &artifact.feature_names,
        );
        if let Some(p) = &self.prediction {
            self.touch_outcomes(&labels);
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PendingRequests::of(&labels));
            // Bound counters start their series at zero, as add(0) did.
            let classes = labels
                .classes
                .iter()
                .map(|c| p.predictions.bind(c))
                .collect();
            let features = labels
                .features
                .iter()
                .map(|f| p.out_of_range.bind(f))
                .collect();
            let value = (artifact.task == Task::Regression)
                .then(|| self.value_histogram(p, artifact).bind(&labels.version));
            labels.bound = Some(BoundInstruments {
                duration: p.duration.bind(&labels.version),
                value,
                classes,
                features,
            });
        }
        labels
    }

    /// `model_prediction_value`, created with the buckets of the first
    /// regression model (see [`ServiceMetrics::prepare`]).
    fn value_histogram<'a>(
        &self,
        p: &'a PredictionInstruments,
        artifact: &Artifact,
    ) -> &'a Histogram<f64> {
        let mut edges = artifact.reference.prediction.edges.clone();
        edges.retain(|e| e.is_finite());
        edges.dedup();
        let (histogram, kept, first) = p.value.get_or_init(|| {
            let histogram = self
                .meter
                .f64_histogram("model_prediction_value")
                .with_unit("1")
                .with_description("Predicted values (regression), one row per request")
                .with_boundaries(edges.clone())
                .build();
            (histogram, edges.clone(), artifact.model_version.clone())
        });
        if *kept != edges {
            tracing::warn!(
                model_version = %artifact.model_version,
                "model_prediction_value keeps the buckets of model {first} until the service restarts; model_prediction_drift_psi is this model's own"
            );
        }
        histogram
    }

    fn touch_outcomes(&self, labels: &ModelLabels) {
        if let Some(p) = &self.prediction {
            for outcome in &labels.by_outcome {
                p.requests.add(0, outcome);
            }
        }
    }

    /// Counts one /predict request; `model` is the model that answered it.
    pub fn request(&self, model: Option<&LoadedModel>, outcome: Outcome) {
        if self.prediction.is_some() {
            let labels = model.map_or(&self.no_model, |m| &m.labels);
            labels.pending.add(outcome.index(), 1);
        }
    }

    /// Records a successful prediction: latency, the prediction
    /// distribution, out-of-range inputs and the drift window.
    pub fn success(
        &self,
        model: &LoadedModel,
        rows: ArrayView2<'_, f64>,
        predictions: &[Prediction],
        elapsed: Duration,
    ) {
        let Some(p) = &self.prediction else { return };
        let Some(bound) = &model.labels.bound else {
            return;
        };
        bound.duration.record(elapsed.as_secs_f64());
        // One value per request, not per row: a histogram record takes its
        // series' lock. The recorded row rotates through the batch.
        if let (Some(histogram), false) = (&bound.value, predictions.is_empty()) {
            // A single row needs no pick (and no shared add).
            let pick = match predictions.len() {
                1 => 0,
                n => (p.sampled.fetch_add(1, Ordering::Relaxed) % n as u64) as usize,
            };
            if let Some(Prediction::Value(v)) = predictions.get(pick) {
                histogram.record(*v);
            }
        }
        if let [Prediction::Class { class, .. }] = predictions {
            // A single row, the common request: no counting buffer.
            if let Some(counter) = bound.classes.get(*class) {
                counter.add(1);
            }
        } else if !bound.classes.is_empty() {
            let mut class_counts = vec![0u64; bound.classes.len()];
            for prediction in predictions {
                if let Prediction::Class { class, .. } = prediction {
                    if let Some(count) = class_counts.get_mut(*class) {
                        *count += 1;
                    }
                }
            }
            for (count, class) in class_counts.iter().zip(&bound.classes) {
                if *count > 0 {
                    class.add(*count);
                }
            }
        }
        for ((reference, column), feature) in model
            .artifact
            .reference
            .features
            .iter()
            .zip(rows.columns())
            .zip(&bound.features)
        {
            let outside = column
                .iter()
                .filter(|v| reference.is_out_of_range(**v))
                .count() as u64;
            if outside > 0 {
                feature.add(outside);
            }
        }
        if let Some(window) = &model.drift {
            window.record(rows, predictions);
        }
    }

    pub fn reload(&self, success: bool) {
        self.reloads.add(
            1,
            &[KeyValue::new(
                "result",
                if success { "success" } else { "failure" },
            )],
        );
    }

    pub fn unauthorized(&self) {
        self.unauthorized.add(1, &[]);
    }

    /// Registers the gauges read from the current model at scrape time
    /// (only the current model's, so these series do not accumulate).
    /// `drift_capacity` is `None` without instrumentation.
    pub fn observe(&self, store: &Arc<Store>, drift_capacity: Option<usize>) {
        let s = Arc::clone(store);
        self.meter
            .u64_observable_gauge("model_info")
            .with_unit("{info}")
            .with_description("1 for the loaded model")
            .with_callback(move |o| {
                if let Some(m) = s.model() {
                    let a = &m.artifact;
                    o.observe(
                        1,
                        &[
                            KeyValue::new("model_version", a.model_version.clone()),
                            KeyValue::new("algorithm", a.algorithm.clone()),
                            KeyValue::new("trained_at", a.trained_at.clone()),
                            // Empty without MLflow: the dashboards' run link
                            // is built from these two.
                            KeyValue::new(
                                "mlflow_run_id",
                                a.mlflow
                                    .as_ref()
                                    .map(|r| r.run_id.clone())
                                    .unwrap_or_default(),
                            ),
                            KeyValue::new(
                                "mlflow_experiment_id",
                                a.mlflow
                                    .as_ref()
                                    .map(|r| r.experiment_id.clone())
                                    .unwrap_or_default(),
                            ),
                        ],
                    );
                }
            })
            .build();
        let s = Arc::clone(store);
        let requests = self
            .prediction
            .as_ref()
            .map(|p| (p.requests.clone(), Arc::clone(&self.pending)));
        self.meter
            .u64_observable_gauge("model_loaded")
            .with_unit("{bool}")
            .with_description("1 when a model is loaded and /ready answers 200")
            .with_callback(move |o| {
                // The request counts, on every collection (this gauge is
                // always registered).
                if let Some((counter, pending)) = &requests {
                    flush_requests(counter, pending);
                }
                o.observe(u64::from(s.model().is_some()), &[]);
            })
            .build();
        let Some(capacity) = drift_capacity else {
            return;
        };
        self.meter
            .u64_observable_gauge("model_drift_window_capacity")
            .with_unit("{sample}")
            .with_description("Samples the drift window holds when full")
            .with_callback(move |o| o.observe(capacity as u64, &[]))
            .build();
        let s = Arc::clone(store);
        self.meter
            .u64_observable_gauge("model_drift_window_fill")
            .with_unit("{sample}")
            .with_description("Samples in the drift window")
            .with_callback(move |o| {
                let fill = s
                    .model()
                    .and_then(|m| m.drift.as_ref().map(|w| w.fill()))
                    .unwrap_or(0);
                o.observe(fill as u64, &[]);
            })
            .build();
        let s = Arc::clone(store);
        self.meter
            .f64_observable_gauge("model_input_drift_psi")
            .with_unit("{psi}")
            .with_description("PSI of the recent-request window against the training reference")
            .with_callback(move |o| {
                let Some(m) = s.model() else { return };
                let Some(window) = &m.drift else { return };
                for (psi, feature) in window.feature_psi().into_iter().zip(&m.labels.features) {
                    if let Some(psi) = psi {
                        o.observe(psi, feature);
                    }
                }
            })
            .build();
        let s = Arc::clone(store);
        self.meter
            .f64_observable_gauge("model_prediction_drift_psi")
            .with_unit("{psi}")
            .with_description("PSI of recent predictions against the reference predictions")
            .with_callback(move |o| {
                if let Some(psi) = s
                    .model()
                    .and_then(|m| m.drift.as_ref().and_then(|w| w.prediction_psi()))
                {
                    o.observe(psi, &[]);
                }
            })
            .build();
        observe_bins(&self.meter, store);
    }
}

/// The drift series that add up across replicas: per bin, the samples ever
/// seen (a counter) and the reference share (a gauge), both read from the
/// current model's window at scrape time. `bin` is the bin index ("0" is
/// the lowest), bounded by the reference's bin count (10 for deciles).
fn observe_bins(meter: &Meter, store: &Arc<Store>) {
    let s = Arc::clone(store);
    meter
        .u64_observable_counter("model_input_drift_bin_samples")
        .with_unit("{sample}")
        .with_description("Feature values seen per reference bin since the model loaded")
        .with_callback(move |o| {
            let Some(m) = s.model() else { return };
            let Some((window, bins)) = m.drift_bins() else {
                return;
            };
            for (totals, labels) in window.feature_totals().iter().zip(&bins.features) {
                for (count, labels) in totals.iter().flat_map(|t| t.counts.iter().zip(labels)) {
                    o.observe(*count, labels);
                }
            }
        })
        .build();
    let s = Arc::clone(store);
    meter
        .u64_observable_counter("model_prediction_drift_bin_samples")
        .with_unit("{sample}")
        .with_description("Predictions seen per reference bin since the model loaded")
        .with_callback(move |o| {
            let Some(m) = s.model() else { return };
            let Some((window, bins)) = m.drift_bins() else {
                return;
            };
            let Some(totals) = window.prediction_totals() else {
                return;
            };
            for (count, labels) in totals.counts.iter().zip(&bins.prediction) {
                o.observe(*count, labels);
            }
        })
        .build();
    let s = Arc::clone(store);
    meter
        .f64_observable_gauge("model_input_drift_reference_ratio")
        .with_unit("1")
        .with_description("Share of the training reference in each feature bin")
        .with_callback(move |o| {
            let Some(m) = s.model() else { return };
            let Some((window, bins)) = m.drift_bins() else {
                return;
            };
            for (totals, labels) in window.feature_totals().iter().zip(&bins.features) {
                for (share, labels) in totals.iter().flat_map(|t| t.proportions.iter().zip(labels))
                {
                    o.observe(*share, labels);
                }
            }
        })
        .build();
    let s = Arc::clone(store);
    meter
        .f64_observable_gauge("model_prediction_drift_reference_ratio")
        .with_unit("1")
        .with_description("Share of the reference predictions in each bin")
        .with_callback(move |o| {
            let Some(m) = s.model() else { return };
            let Some((window, bins)) = m.drift_bins() else {
                return;
            };
            let Some(totals) = window.prediction_totals() else {
                return;
            };
            for (share, labels) in totals.proportions.iter().zip(&bins.prediction) {
                o.observe(*share, labels);
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn request_series_stop_growing_at_the_cardinality_limit() {
        let telemetry = Telemetry::with_cardinality_limits(CARDINALITY_LIMITS).unwrap();
        let metrics = ServiceMetrics::new(&telemetry.meter(), true);
        let limit = 3 * MODEL_VERSIONS_KEPT + 3;
        // Far more model versions than kept, as endless reloads would make.
        for version in 0..(2 * MODEL_VERSIONS_KEPT) {
            let labels = ModelLabels::new(&format!("v{version}"), &[], &[]);
            metrics.touch_outcomes(&labels);
        }
        let text = telemetry.render().unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("model_prediction_requests_total{"))
            .count();
        assert!(series <= limit + 1, "{series} series, limit {limit}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("model_prediction_requests_total{")
                    && l.contains("otel_metric_overflow=\"true\"")),
            "the excess is folded into the overflow series:\n{text}"
        );
    }

    #[test]
    fn pending_request_counts_reach_the_counter_and_gone_models_are_forgotten() {
        let telemetry = Telemetry::with_cardinality_limits(CARDINALITY_LIMITS).unwrap();
        let metrics = ServiceMetrics::new(&telemetry.meter(), true);
        let requests = &metrics.prediction.as_ref().unwrap().requests;
        let labels = ModelLabels::new("v1", &[], &[]);
        metrics
            .pending
            .lock()
            .unwrap()
            .push(PendingRequests::of(&labels));
        labels.pending.add(Outcome::InvalidInput.index(), 3);
        flush_requests(requests, &metrics.pending);
        flush_requests(requests, &metrics.pending);
        let text = telemetry.render().unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with("model_prediction_requests_total{")
                    && l.contains("model_version=\"v1\"")
                    && l.contains("status=\"invalid_input\"")
                    && l.ends_with(" 3")),
            "three requests, added once:\n{text}"
        );
        assert_eq!(metrics.pending.lock().unwrap().len(), 2, "none, v1");
        labels.pending.add(Outcome::Success.index(), 1);
        drop(labels);
        flush_requests(requests, &metrics.pending);
        assert_eq!(metrics.pending.lock().unwrap().len(), 1, "v1 is gone");
        let text = telemetry.render().unwrap();
        assert!(
            text.lines().any(|l| l.contains("model_version=\"v1\"")
                && l.contains("status=\"success\"")
                && l.ends_with(" 1")),
            "the last count of a replaced model is kept:\n{text}"
        );
    }

    #[test]
    fn every_limited_instrument_is_a_documented_service_metric() {
        // A misspelt name would silently leave the SDK default in place.
        let docs = include_str!("../../docs/metrics.md");
        let service = docs.split("## Service").nth(1).unwrap_or_default();
        for (name, _) in CARDINALITY_LIMITS {
            assert!(
                service.contains(&format!("| {name}")),
                "{name} is not in docs/metrics.md's service table"
            );
        }
    }
}
