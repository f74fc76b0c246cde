//! Scoring a candidate model on one split.

use ndarray::{ArrayView2, Axis};

use super::data::{Split, Targets};
use crate::model::evaluation::{
    accuracy, macro_f1, mean_absolute_error, mean_squared_error, r_squared,
};
use crate::model::{Model, Prediction, Task};

/// Scores of one model on one split. `score` is the task's headline number:
/// R² for regression, accuracy for classification; `loss` is MSE or
/// 1 - accuracy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub loss: f64,
    pub score: f64,
    pub mse: f64,
    pub mae: f64,
    pub f1: f64,
}

/// Predicts `records` in chunks of `batch_size` rows, calling `after_batch`
/// after each so that a long evaluation still shows progress.
pub fn predict_in_batches(
    model: &Model,
    records: ArrayView2<'_, f64>,
    batch_size: usize,
    mut after_batch: impl FnMut(),
) -> Vec<Prediction> {
    let mut predictions = Vec::with_capacity(records.nrows());
    for chunk in records.axis_chunks_iter(Axis(0), batch_size.max(1)) {
        predictions.extend(model.predict(chunk));
        after_batch();
    }
    predictions
}

pub fn score(targets: &Targets, predictions: &[Prediction], classes: usize) -> Scores {
    match targets {
        Targets::Regression(truth) => {
            let predicted: Vec<f64> = predictions.iter().map(Prediction::as_number).collect();
            let mse = mean_squared_error(truth, &predicted).unwrap_or(f64::NAN);
            Scores {
                loss: mse,
                score: r_squared(truth, &predicted).unwrap_or(f64::NAN),
                mse,
                mae: mean_absolute_error(truth, &predicted).unwrap_or(f64::NAN),
                f1: f64::NAN,
            }
        }
        Targets::Classification(truth) => {
            let predicted: Vec<usize> =
                predictions.iter().map(|p| p.as_number() as usize).collect();
            let accuracy = accuracy(truth, &predicted).unwrap_or(f64::NAN);
            Scores {
                loss: 1.0 - accuracy,
                score: accuracy,
                mse: f64::NAN,
                mae: f64::NAN,
                f1: macro_f1(truth, &predicted, classes).unwrap_or(f64::NAN),
            }
        }
    }
}

pub fn evaluate(model: &Model, split: &Split, classes: usize) -> Scores {
    score(
        &split.targets,
        &model.predict(split.records.view()),
        classes,
    )
}

/// The scores of one split by name, as the artifact's `metrics` and the
/// MLflow run key them (`<split>_<name>`): the loss, then the task's own.
pub fn named(task: Task, scores: &Scores) -> Vec<(&'static str, f64)> {
    let mut named = vec![("loss", scores.loss)];
    match task {
        Task::Regression => named.extend([
            ("mse", scores.mse),
            ("rmse", scores.mse.sqrt()),
            ("mae", scores.mae),
            ("r_squared", scores.score),
        ]),
        Task::Classification => named.extend([("accuracy", scores.score), ("f1", scores.f1)]),
    }
    named
}
