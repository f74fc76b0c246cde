//! The label sets of the service's model metrics, built once per loaded
//! model from the artifact (never from a request), so that recording is a
//! lookup, not an allocation. [`Outcome`] is the `status` label of
//! `model_prediction_requests_total`.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use opentelemetry::KeyValue;

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
    pub(crate) pending: Arc<[AtomicU64; 3]>,
    pub(crate) classes: Vec<[KeyValue; 2]>,
    pub(crate) features: Vec<[KeyValue; 1]>,
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
            features: feature_names
                .iter()
                .map(|f| [KeyValue::new("feature", f.clone())])
                .collect(),
            version: [version_label()],
            pending: Arc::new([const { AtomicU64::new(0) }; 3]),
        }
    }
}
