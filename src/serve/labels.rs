//! The label sets of the service's model metrics, built once per loaded
//! model from the artifact (never from a request), and the instruments
//! bound to them, so that recording is neither an allocation nor a label
//! lookup. [`Outcome`] is the `status` label of
//! `model_prediction_requests_total`.

use std::sync::Arc;

use opentelemetry::metrics::{BoundCounter, BoundHistogram};
use opentelemetry::KeyValue;

use super::sharded::ShardedCounts;

/// How a /predict request ended, the `status` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    InvalidInput,
    Error,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::InvalidInput, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Error => "error",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// How many model versions one process keeps series for. A replaced
/// model's counters and histograms stay exported until the service restarts
/// (OpenTelemetry has no way to retire a label set), so reloads accumulate
/// series; past these limits new label sets fold into one
/// `otel_metric_overflow="true"` series instead of growing without bound.
pub(crate) const MODEL_VERSIONS_KEPT: usize = 64;

/// The `model_version` label value while no model is loaded.
pub const NO_MODEL_VERSION: &str = "none";

/// Label sets of one model, built when it loads.
#[derive(Debug)]
pub struct ModelLabels {
    pub(crate) version: [KeyValue; 1],
    pub(crate) by_outcome: [[KeyValue; 2]; 3],
    /// Requests by outcome not yet added to `model_prediction_requests`:
    /// a request adds to these (a relaxed atomic, no label lookup) and the
    /// scrape adds them to the counter (`ServiceMetrics::observe`).
    pub(crate) pending: Arc<ShardedCounts>,
    pub(crate) classes: Vec<[KeyValue; 2]>,
    pub(crate) features: Vec<[KeyValue; 1]>,
    /// The per-request instruments bound to these label sets; `None` for
    /// the no-model labels and without instrumentation.
    pub(crate) bound: Option<BoundInstruments>,
}

/// A model's per-request instruments, bound when it loads
/// (`ServiceMetrics::prepare`). A bound record goes straight to its
/// series: the SDK's unbound record hashes the label set and takes the
/// instrument's shared read lock to find it, on every request. Binding
/// creates the series (a histogram's at count zero).
#[derive(Debug)]
pub(crate) struct BoundInstruments {
    /// `model_prediction_duration_seconds{model_version}`.
    pub(crate) duration: BoundHistogram<f64>,
    /// `model_prediction_value{model_version}`, regression models only.
    pub(crate) value: Option<BoundHistogram<f64>>,
    /// `model_predictions_total`, one per class (in `classes`' order).
    pub(crate) classes: Vec<BoundCounter<u64>>,
    /// `model_input_out_of_range_total`, one per feature.
    pub(crate) features: Vec<BoundCounter<u64>>,
}

impl ModelLabels {
    pub fn new(version: &str, class_names: &[String], feature_names: &[String]) -> Self {
        let version: Arc<str> = Arc::from(version);
        let version_label = || KeyValue::new("model_version", Arc::clone(&version));
        Self {
            by_outcome: Outcome::ALL
                .map(|o| [version_label(), KeyValue::new("status", o.as_str())]),
            classes: class_names
                .iter()
                .map(|c| [version_label(), KeyValue::new("class", c.clone())])
                .collect(),
            // Reference-counted values: the SDK copies a label set per
            // series on every collection of an observable.
            features: feature_names
                .iter()
                .map(|f| [KeyValue::new("feature", Arc::<str>::from(f.as_str()))])
                .collect(),
            version: [version_label()],
            pending: Arc::new(ShardedCounts::resettable(Outcome::ALL.len())),
            bound: None,
        }
    }
}

/// The label sets of one model's drift bin series
/// (`model_input_drift_*{model_version, feature, bin}` and
/// `model_prediction_drift_*{model_version, bin}`), built on the model's
/// first scrape and kept with it, so a scrape allocates no labels. Each
/// set is sorted by key: the SDK stores an observed set under its given and
/// its sorted order, twice when they differ.
#[derive(Debug)]
pub(crate) struct BinLabels {
    /// Per feature (in `ModelLabels::features`' order), per bin.
    pub(crate) features: Vec<Vec<[KeyValue; 3]>>,
    pub(crate) prediction: Vec<[KeyValue; 2]>,
}

impl BinLabels {
    /// `feature_bins[i]` is feature i's bin count, `prediction_bins` the
    /// predictions'.
    pub(crate) fn new(
        labels: &ModelLabels,
        feature_bins: &[usize],
        prediction_bins: usize,
    ) -> Self {
        let most = feature_bins
            .iter()
            .copied()
            .chain([prediction_bins])
            .max()
            .unwrap_or(0);
        let bins: Vec<KeyValue> = (0..most)
            .map(|bin| KeyValue::new("bin", Arc::<str>::from(bin.to_string())))
            .collect();
        let version = &labels.version[0];
        Self {
            features: labels
                .features
                .iter()
                .zip(feature_bins)
                .map(|([feature], n)| {
                    bins[..*n]
                        .iter()
                        .map(|bin| [bin.clone(), feature.clone(), version.clone()])
                        .collect()
                })
                .collect(),
            prediction: bins[..prediction_bins]
                .iter()
                .map(|bin| [bin.clone(), version.clone()])
                .collect(),
        }
    }
}
