//! The quality metrics (docs/metrics.md, "Quality"): what ground-truth
//! feedback adds up to, per model version, in counters that add up across
//! replicas, plus the training baseline each version is judged against.
//!
//! [`Versions`] is the bounded memory of the model versions this process
//! has loaded since it started (at most [`MODEL_VERSIONS_KEPT`]): feedback
//! for a replaced version still counts for it, and no id can create a
//! `model_version` label value the process did not load itself. Label sets
//! are built when a version is registered, so recording is a lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use super::labels::MODEL_VERSIONS_KEPT;
use super::prediction_id::version_bytes;
use crate::model::{Artifact, Task};

/// Label-delay buckets, seconds: a second to a week.
pub const DELAY_BUCKETS_SECONDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
    259200.0, 604800.0,
];

/// How one feedback item ended, the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackOutcome {
    Accepted,
    Forged,
    Expired,
    Duplicate,
    InvalidTruth,
    UnknownVersion,
    Malformed,
}

impl FeedbackOutcome {
    pub const ALL: [FeedbackOutcome; 7] = [
        FeedbackOutcome::Accepted,
        FeedbackOutcome::Forged,
        FeedbackOutcome::Expired,
        FeedbackOutcome::Duplicate,
        FeedbackOutcome::InvalidTruth,
        FeedbackOutcome::UnknownVersion,
        FeedbackOutcome::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackOutcome::Accepted => "accepted",
            FeedbackOutcome::Forged => "forged",
            FeedbackOutcome::Expired => "expired",
            FeedbackOutcome::Duplicate => "duplicate",
            FeedbackOutcome::InvalidTruth => "invalid_truth",
            FeedbackOutcome::UnknownVersion => "unknown_version",
            FeedbackOutcome::Malformed => "malformed",
        }
    }

    /// The status of a single-item answer (a batch answers 200 and lists
    /// each item's outcome).
    pub fn status(self) -> poem::http::StatusCode {
        use poem::http::StatusCode;
        match self {
            FeedbackOutcome::Accepted => StatusCode::OK,
            FeedbackOutcome::Forged | FeedbackOutcome::Malformed => StatusCode::BAD_REQUEST,
            FeedbackOutcome::Expired => StatusCode::GONE,
            FeedbackOutcome::Duplicate => StatusCode::CONFLICT,
            FeedbackOutcome::InvalidTruth => StatusCode::UNPROCESSABLE_ENTITY,
            FeedbackOutcome::UnknownVersion => StatusCode::MISDIRECTED_REQUEST,
        }
    }
}

/// A model version as feedback needs it: its task, classes and label sets.
#[derive(Debug)]
pub struct VersionQuality {
    pub version: String,
    pub bytes: [u8; 6],
    pub task: Task,
    pub classes: Vec<String>,
    /// `validation_<metric>` of the artifact, as (metric, value).
    pub baseline: Vec<(String, f64)>,
    version_label: [KeyValue; 1],
    /// `sign="positive"`, `sign="negative"`.
    signs: [[KeyValue; 2]; 2],
    /// `[predicted][actual]`.
    confusion: Vec<Vec<[KeyValue; 3]>>,
    /// Ids issued for this version: an atomic read at scrape time, so that
    /// /predict makes no OpenTelemetry call for it (like the drift bins).
    issued: AtomicU64,
    /// `{model_version, class}` per class: the confusion matrix's diagonal,
    /// which PromQL cannot select (it cannot compare two labels).
    correct: Vec<[KeyValue; 2]>,
}

impl VersionQuality {
    /// Counts `rows` ids issued for this version.
    pub fn issued(&self, rows: usize) {
        self.issued.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(crate) fn new(artifact: &Artifact, bytes: [u8; 6]) -> Self {
        let version: Arc<str> = Arc::from(artifact.model_version.as_str());
        let label = || KeyValue::new("model_version", Arc::clone(&version));
        let classes = artifact.class_names.clone();
        let confusion = classes
            .iter()
            .map(|predicted| {
                classes
                    .iter()
                    .map(|actual| {
                        [
                            label(),
                            KeyValue::new("predicted", predicted.clone()),
                            KeyValue::new("actual", actual.clone()),
                        ]
                    })
                    .collect()
            })
            .collect();
        let baseline = artifact
            .metrics
            .iter()
            .filter_map(|(key, value)| {
                let metric = key.strip_prefix("validation_")?;
                value.is_finite().then(|| (metric.to_owned(), *value))
            })
            .collect();
        let correct = classes
            .iter()
            .map(|class| [label(), KeyValue::new("class", class.clone())])
            .collect();
        Self {
            version: artifact.model_version.clone(),
            bytes,
            issued: AtomicU64::new(0),
            correct,
            task: artifact.task,
            classes,
            baseline,
            signs: [
                [label(), KeyValue::new("sign", "positive")],
                [label(), KeyValue::new("sign", "negative")],
            ],
            confusion,
            version_label: [label()],
        }
    }
}

/// The versions loaded since start, at most [`MODEL_VERSIONS_KEPT`].
#[derive(Debug, Default)]
pub struct Versions {
    known: RwLock<Vec<Arc<VersionQuality>>>,
}

impl Versions {
    /// Remembers a freshly loaded version (once). Past the bound, a new
    /// version is not remembered: its feedback is `unknown_version`.
    pub fn register(&self, artifact: &Artifact) -> Option<Arc<VersionQuality>> {
        let bytes = version_bytes(&artifact.model_version)?;
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = known.iter().find(|v| v.bytes == bytes) {
            return Some(Arc::clone(existing));
        }
        if known.len() >= MODEL_VERSIONS_KEPT {
            tracing::warn!(model_version = %artifact.model_version, "{MODEL_VERSIONS_KEPT} model versions loaded since start: feedback for this one is not counted until the service restarts");
            return None;
        }
        let version = Arc::new(VersionQuality::new(artifact, bytes));
        known.push(Arc::clone(&version));
        Some(version)
    }

    pub fn find(&self, bytes: &[u8; 6]) -> Option<Arc<VersionQuality>> {
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        known.iter().find(|v| v.bytes == *bytes).cloned()
    }

    fn all(&self) -> Vec<Arc<VersionQuality>> {
        self.known.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The labelled truth of one accepted item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Labelled {
    /// Predicted value and true value (both finite, errors squared finite).
    Value { predicted: f64, truth: f64 },
    /// Predicted and true class index (both < the version's classes).
    Class { predicted: usize, truth: usize },
}

/// `model_training_score{model_version, metric}`: the validation scores of
/// every version `versions` remembers, read at scrape time. Exported with or
/// without a feedback key (it is the artifact's, and the dashboards draw
/// serving quality against it).
pub fn observe_baseline(meter: &Meter, versions: Arc<Versions>) {
    meter
        .f64_observable_gauge("model_training_score")
        .with_unit("{score}")
        .with_description("Validation scores the artifact recorded at training time")
        .with_callback(move |o| {
            for version in versions.all() {
                for (metric, value) in &version.baseline {
                    o.observe(
                        *value,
                        &[
                            version.version_label[0].clone(),
                            KeyValue::new("metric", metric.clone()),
                        ],
                    );
                }
            }
        })
        .build();
}

/// The quality instruments and the versions they count for.
pub struct QualityMetrics {
    pub versions: Arc<Versions>,
    outcomes: Counter<u64>,
    outcome_labels: [[KeyValue; 1]; 7],
    labelled: Counter<u64>,
    absolute_error: Counter<f64>,
    squared_error: Counter<f64>,
    truth: Counter<f64>,
    truth_squared: Counter<f64>,
    confusion: Counter<u64>,
    correct: Counter<u64>,
    delay: Histogram<f64>,
}

impl QualityMetrics {
    /// The counters, for the versions `versions` remembers.
    pub fn new(meter: &Meter, versions: Arc<Versions>) -> Self {
        let outcomes = meter
            .u64_counter("model_feedback")
            .with_unit("{item}")
            .with_description("Ground-truth feedback items by outcome")
            .build();
        let outcome_labels = FeedbackOutcome::ALL.map(|o| [KeyValue::new("outcome", o.as_str())]);
        for labels in &outcome_labels {
            outcomes.add(0, labels);
        }
        let observed = Arc::clone(&versions);
        meter
            .u64_observable_counter("model_prediction_ids_issued")
            .with_unit("{prediction}")
            .with_description("Prediction ids issued (one per predicted row)")
            .with_callback(move |o| {
                for version in observed.all() {
                    o.observe(
                        version.issued.load(Ordering::Relaxed),
                        &version.version_label,
                    );
                }
            })
            .build();
        Self {
            versions,
            outcomes,
            outcome_labels,
            labelled: meter
                .u64_counter("model_feedback_labelled")
                .with_unit("{prediction}")
                .with_description("Predictions joined with their truth")
                .build(),
            absolute_error: meter
                .f64_counter("model_feedback_absolute_error")
                .with_unit("1")
                .with_description("Sum of |prediction - truth| (regression)")
                .build(),
            squared_error: meter
                .f64_counter("model_feedback_squared_error")
                .with_unit("1")
                .with_description("Sum of (prediction - truth)^2 (regression)")
                .build(),
            truth: meter
                .f64_counter("model_feedback_truth")
                .with_unit("1")
                .with_description("Sum of |truth| by the sign of truth (regression)")
                .build(),
            truth_squared: meter
                .f64_counter("model_feedback_truth_squared")
                .with_unit("1")
                .with_description("Sum of truth^2 (regression)")
                .build(),
            confusion: meter
                .u64_counter("model_feedback_confusion")
                .with_unit("{prediction}")
                .with_description("Labelled predictions by predicted and actual class")
                .build(),
            correct: meter
                .u64_counter("model_feedback_correct")
                .with_unit("{prediction}")
                .with_description("Labelled predictions whose class was right, by class")
                .build(),
            delay: meter
                .f64_histogram("model_feedback_delay_seconds")
                .with_unit("s")
                .with_description("Time from a prediction to its accepted feedback")
                .with_boundaries(DELAY_BUCKETS_SECONDS.to_vec())
                .build(),
        }
    }

    /// Registers a freshly loaded model and creates its series at zero;
    /// its entry, unless the version bound is reached.
    pub fn prepare(&self, artifact: &Artifact) -> Option<Arc<VersionQuality>> {
        let version = self.versions.register(artifact)?;
        let label = &version.version_label;
        self.labelled.add(0, label);
        match version.task {
            Task::Regression => {
                self.absolute_error.add(0.0, label);
                self.squared_error.add(0.0, label);
                self.truth_squared.add(0.0, label);
                for sign in &version.signs {
                    self.truth.add(0.0, sign);
                }
            }
            Task::Classification => {
                for row in &version.confusion {
                    for cell in row {
                        self.confusion.add(0, cell);
                    }
                }
                for class in &version.correct {
                    self.correct.add(0, class);
                }
            }
        }
        Some(version)
    }

    pub fn outcome(&self, outcome: FeedbackOutcome) {
        let index = FeedbackOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.outcomes.add(1, &self.outcome_labels[index]);
    }

    /// Counts one accepted item for `version`, `delay` after its prediction.
    pub fn accepted(&self, version: &VersionQuality, labelled: Labelled, delay: Duration) {
        let label = &version.version_label;
        self.outcome(FeedbackOutcome::Accepted);
        self.labelled.add(1, label);
        self.delay.record(delay.as_secs_f64(), label);
        match labelled {
            Labelled::Value { predicted, truth } => {
                let error = predicted - truth;
                self.absolute_error.add(error.abs(), label);
                self.squared_error.add(error * error, label);
                let sign = usize::from(truth < 0.0);
                self.truth.add(truth.abs(), &version.signs[sign]);
                self.truth_squared.add(truth * truth, label);
            }
            Labelled::Class { predicted, truth } => {
                if let Some(cell) = version.confusion.get(predicted).and_then(|r| r.get(truth)) {
                    self.confusion.add(1, cell);
                }
                if predicted == truth {
                    if let Some(class) = version.correct.get(truth) {
                        self.correct.add(1, class);
                    }
                }
            }
        }
    }
}
