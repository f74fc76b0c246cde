//! Evaluation metrics, written out so that each can be checked against a
//! hand-computed value.

/// Mean squared error. `None` for empty input.
pub fn mean_squared_error(truth: &[f64], predicted: &[f64]) -> Option<f64> {
    mean(
        truth.iter().zip(predicted).map(|(t, p)| (t - p).powi(2)),
        truth.len(),
    )
}

pub fn root_mean_squared_error(truth: &[f64], predicted: &[f64]) -> Option<f64> {
    mean_squared_error(truth, predicted).map(f64::sqrt)
}

pub fn mean_absolute_error(truth: &[f64], predicted: &[f64]) -> Option<f64> {
    mean(
        truth.iter().zip(predicted).map(|(t, p)| (t - p).abs()),
        truth.len(),
    )
}

/// Coefficient of determination, 1 - SS_res / SS_tot. A constant target has
/// no variance to explain, so R² is undefined there (`None`).
pub fn r_squared(truth: &[f64], predicted: &[f64]) -> Option<f64> {
    let average = mean(truth.iter().copied(), truth.len())?;
    let total: f64 = truth.iter().map(|t| (t - average).powi(2)).sum();
    if total == 0.0 {
        return None;
    }
    let residual: f64 = truth
        .iter()
        .zip(predicted)
        .map(|(t, p)| (t - p).powi(2))
        .sum();
    Some(1.0 - residual / total)
}

pub fn accuracy(truth: &[usize], predicted: &[usize]) -> Option<f64> {
    let correct = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    mean(std::iter::once(correct as f64), truth.len())
}

/// Macro-averaged F1 over the classes that occur in either the truth or the
/// predictions; a class never seen in either would contribute 0/0.
pub fn macro_f1(truth: &[usize], predicted: &[usize], classes: usize) -> Option<f64> {
    if truth.is_empty() {
        return None;
    }
    let mut scores = Vec::with_capacity(classes);
    for class in 0..classes {
        let tp = truth
            .iter()
            .zip(predicted)
            .filter(|(t, p)| **t == class && **p == class)
            .count() as f64;
        let fp = truth
            .iter()
            .zip(predicted)
            .filter(|(t, p)| **t != class && **p == class)
            .count() as f64;
        let fn_ = truth
            .iter()
            .zip(predicted)
            .filter(|(t, p)| **t == class && **p != class)
            .count() as f64;
        if tp + fp + fn_ == 0.0 {
            continue;
        }
        scores.push(2.0 * tp / (2.0 * tp + fp + fn_));
    }
    mean(scores.iter().copied(), scores.len())
}

/// Train score minus validation score: positive means the model does better
/// on data it has seen, the usual sign of overfitting.
pub fn overfitting_gap(train_score: f64, validation_score: f64) -> f64 {
    train_score - validation_score
}

fn mean(values: impl Iterator<Item = f64>, len: usize) -> Option<f64> {
    if len == 0 {
        return None;
    }
    Some(values.sum::<f64>() / len as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUTH: [f64; 4] = [3.0, -0.5, 2.0, 7.0];
    const PREDICTED: [f64; 4] = [2.5, 0.0, 2.0, 8.0];

    #[test]
    fn regression_metrics_match_hand_computed_values() {
        // Errors: 0.5, -0.5, 0, -1 → squares 0.25 0.25 0 1 → MSE 0.375.
        assert_eq!(mean_squared_error(&TRUTH, &PREDICTED), Some(0.375));
        assert!(
            (root_mean_squared_error(&TRUTH, &PREDICTED).unwrap() - 0.375f64.sqrt()).abs() < 1e-12
        );
        // |errors| sum 2.0 → MAE 0.5.
        assert_eq!(mean_absolute_error(&TRUTH, &PREDICTED), Some(0.5));
        // mean 2.875; SS_tot = 0.015625+11.390625+0.765625+17.015625 = 29.1875;
        // SS_res = 1.5 → R² = 1 - 1.5/29.1875.
        let r2 = r_squared(&TRUTH, &PREDICTED).unwrap();
        assert!((r2 - (1.0 - 1.5 / 29.1875)).abs() < 1e-12, "{r2}");
    }

    #[test]
    fn r_squared_of_constant_target_is_undefined() {
        assert_eq!(r_squared(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(mean_squared_error(&[], &[]), None);
    }

    #[test]
    fn classification_metrics_match_hand_computed_values() {
        let truth = [0, 0, 1, 1, 2];
        let predicted = [0, 1, 1, 1, 0];
        assert_eq!(accuracy(&truth, &predicted), Some(0.6));
        // class 0: tp1 fp1 fn1 → 2/4=0.5; class 1: tp2 fp1 fn0 → 4/5=0.8;
        // class 2: tp0 fp0 fn1 → 0. Macro = 1.3/3.
        let f1 = macro_f1(&truth, &predicted, 3).unwrap();
        assert!((f1 - 1.3 / 3.0).abs() < 1e-12, "{f1}");
    }

    #[test]
    fn overfitting_gap_is_train_minus_validation() {
        assert!((overfitting_gap(0.92, 0.71) - 0.21).abs() < 1e-12);
        assert!(overfitting_gap(0.5, 0.6) < 0.0);
    }
}
