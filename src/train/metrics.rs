//! The trainer's instruments (docs/metrics.md, "Training"). Values that must
//! disappear when they stop being true (the current top-k features, the
//! model info) are observable gauges read from a shared snapshot: the SDK
//! exports only what the callback reports at each scrape.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use opentelemetry::metrics::{Counter, Gauge, Meter, ObservableGauge};
use opentelemetry::KeyValue;

use super::evaluate::Scores;
use crate::mlflow::{MlflowRun, Operation};
use crate::model::Task;
use crate::telemetry::now_unix_seconds;

#[derive(Default)]
struct Snapshot {
    top_features: Vec<(String, f64)>,
    /// model_version, algorithm, mlflow_run_id, mlflow_experiment_id.
    model_info: Option<[String; 4]>,
    started: Option<Instant>,
    finished_after: Option<f64>,
}

pub struct TrainingMetrics {
    epochs: Counter<u64>,
    batches: Counter<u64>,
    boosting_rounds: Counter<u64>,
    loss: Gauge<f64>,
    mse: Gauge<f64>,
    rmse: Gauge<f64>,
    mae: Gauge<f64>,
    r_squared: Gauge<f64>,
    accuracy: Gauge<f64>,
    f1: Gauge<f64>,
    tree_max_depth: Gauge<f64>,
    tree_leaf_count: Gauge<f64>,
    ensemble_tree_count: Gauge<f64>,
    iteration_improvement: Gauge<f64>,
    overfitting_gap: Gauge<f64>,
    hyperparameter: Gauge<f64>,
    in_progress: Gauge<f64>,
    heartbeat: Gauge<f64>,
    mlflow_errors: Counter<u64>,
    snapshot: Arc<Mutex<Snapshot>>,
    _observables: Vec<ObservableGauge<f64>>,
}

impl TrainingMetrics {
    pub fn new(meter: &Meter) -> Self {
        // Units as docs/otlp.md lists them: Prometheus' OTLP receiver
        // appends the unit word of `s`, and nothing for an annotation like
        // `{iteration}`, so both paths carry the same names.
        let gauge = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .f64_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        let top = Arc::clone(&snapshot);
        let info = Arc::clone(&snapshot);
        let clock = Arc::clone(&snapshot);
        let observables = vec![
            meter
                .f64_observable_gauge("feature_importance")
                .with_unit("{share}")
                .with_description("Normalised importance of the top-k features")
                .with_callback(move |observer| {
                    let snapshot = top.lock().unwrap_or_else(PoisonError::into_inner);
                    for (name, value) in &snapshot.top_features {
                        observer.observe(*value, &[KeyValue::new("feature_name", name.clone())]);
                    }
                })
                .build(),
            meter
                .f64_observable_gauge("training_model_info")
                .with_unit("{info}")
                .with_description("1 for the artifact this run wrote")
                .with_callback(move |observer| {
                    let snapshot = info.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some([version, algorithm, run, experiment]) = &snapshot.model_info {
                        observer.observe(
                            1.0,
                            &[
                                KeyValue::new("model_version", version.clone()),
                                KeyValue::new("algorithm", algorithm.clone()),
                                KeyValue::new("mlflow_run_id", run.clone()),
                                KeyValue::new("mlflow_experiment_id", experiment.clone()),
                            ],
                        );
                    }
                })
                .build(),
            meter
                .f64_observable_gauge("training_duration_seconds")
                .with_unit("s")
                .with_description("Wall time since training started; frozen when it ends")
                .with_callback(move |observer| {
                    let snapshot = clock.lock().unwrap_or_else(PoisonError::into_inner);
                    let elapsed = snapshot
                        .finished_after
                        .or_else(|| snapshot.started.map(|s| s.elapsed().as_secs_f64()));
                    if let Some(seconds) = elapsed {
                        observer.observe(seconds, &[]);
                    }
                })
                .build(),
        ];
        Self {
            epochs: counter(
                "training_epochs",
                "{iteration}",
                "Training iterations completed",
            ),
            batches: counter(
                "training_batches",
                "{batch}",
                "Mini-batches of training rows scored",
            ),
            boosting_rounds: counter("boosting_rounds", "{round}", "Boosting rounds completed"),
            loss: gauge(
                "training_loss",
                "{loss}",
                "MSE (regression) or 1 - accuracy (classification)",
            ),
            mse: gauge(
                "regression_mean_squared_error",
                "{target_unit_squared}",
                "Mean squared error",
            ),
            rmse: gauge(
                "regression_root_mean_squared_error",
                "{target_unit}",
                "Root mean squared error",
            ),
            mae: gauge(
                "regression_mean_absolute_error",
                "{target_unit}",
                "Mean absolute error",
            ),
            r_squared: gauge(
                "regression_r_squared",
                "{score}",
                "Coefficient of determination",
            ),
            accuracy: gauge("classification_accuracy", "{score}", "Accuracy"),
            f1: gauge("classification_f1_score", "{score}", "Macro-averaged F1"),
            tree_max_depth: gauge("tree_max_depth", "{level}", "Depth of the deepest tree"),
            tree_leaf_count: gauge("tree_leaf_count", "{leaf}", "Leaves over all trees"),
            ensemble_tree_count: gauge("ensemble_tree_count", "{tree}", "Trees in the ensemble"),
            iteration_improvement: gauge(
                "iteration_improvement",
                "{score}",
                "Validation score change over the previous iteration",
            ),
            overfitting_gap: gauge(
                "training_overfitting_gap",
                "{score}",
                "Train score minus validation score",
            ),
            hyperparameter: gauge(
                "training_hyperparameter",
                "{value}",
                "Current hyperparameter values",
            ),
            in_progress: gauge(
                "training_in_progress",
                "{bool}",
                "1 while training, 0 once finished",
            ),
            heartbeat: gauge(
                "training_last_update_timestamp_seconds",
                "s",
                "Unix time of the last training progress",
            ),
            mlflow_errors: counter(
                "training_mlflow_errors",
                "{call}",
                "MLflow calls that failed after their retries",
            ),
            snapshot,
            _observables: observables,
        }
    }

    fn snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn started(&self) {
        self.snapshot().started = Some(Instant::now());
        self.in_progress.record(1.0, &[]);
        self.beat();
    }

    pub fn beat(&self) {
        self.heartbeat.record(now_unix_seconds(), &[]);
    }

    pub fn batch(&self) {
        self.batches.add(1, &[]);
        self.beat();
    }

    pub fn hyperparameters(&self, values: &[(&'static str, f64)]) {
        for (name, value) in values {
            self.hyperparameter
                .record(*value, &[KeyValue::new("name", *name)]);
        }
    }

    pub fn scores(&self, task: Task, train: &Scores, validation: &Scores) {
        for (split, scores) in [("train", train), ("validation", validation)] {
            let labels = [KeyValue::new("split", split)];
            self.loss.record(scores.loss, &labels);
            match task {
                Task::Regression => {
                    self.mse.record(scores.mse, &labels);
                    self.rmse.record(scores.mse.sqrt(), &labels);
                    self.mae.record(scores.mae, &labels);
                    self.r_squared.record(scores.score, &labels);
                }
                Task::Classification => {
                    self.accuracy.record(scores.score, &labels);
                    self.f1.record(scores.f1, &labels);
                }
            }
        }
        self.overfitting_gap.record(
            crate::model::evaluation::overfitting_gap(train.score, validation.score),
            &[],
        );
    }

    pub fn trees(&self, max_depth: usize, leaves: usize, trees: usize) {
        self.tree_max_depth.record(max_depth as f64, &[]);
        self.tree_leaf_count.record(leaves as f64, &[]);
        self.ensemble_tree_count.record(trees as f64, &[]);
    }

    pub fn top_features(&self, features: Vec<(String, f64)>) {
        self.snapshot().top_features = features;
    }

    pub fn iteration(&self, improvement: f64, boosting_round: bool) {
        self.iteration_improvement.record(improvement, &[]);
        if boosting_round {
            self.boosting_rounds.add(1, &[]);
        }
        self.epochs.add(1, &[]);
        self.beat();
    }

    /// Empty MLflow labels when the run was not tracked (the dashboards'
    /// data link then has nothing to open).
    pub fn finished(&self, model_version: &str, algorithm: &str, mlflow: Option<&MlflowRun>) {
        {
            let mut snapshot = self.snapshot();
            snapshot.finished_after = snapshot.started.map(|s| s.elapsed().as_secs_f64());
            snapshot.model_info = Some([
                model_version.to_owned(),
                algorithm.to_owned(),
                mlflow.map(|r| r.run_id.clone()).unwrap_or_default(),
                mlflow.map(|r| r.experiment_id.clone()).unwrap_or_default(),
            ]);
        }
        self.in_progress.record(0.0, &[]);
        self.beat();
    }

    pub fn mlflow_error(&self, operation: Operation) {
        self.mlflow_errors
            .add(1, &[KeyValue::new("operation", operation.label())]);
    }

    /// Zero-valued counters so that every series exists from the first
    /// scrape, before the first iteration completes.
    pub fn initialise(&self, boosting: bool) {
        for operation in Operation::ALL {
            self.mlflow_errors
                .add(0, &[KeyValue::new("operation", operation.label())]);
        }
        self.epochs.add(0, &[]);
        self.batches.add(0, &[]);
        if boosting {
            self.boosting_rounds.add(0, &[]);
        }
    }
}
