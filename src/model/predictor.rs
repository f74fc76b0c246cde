//! The fitted model inside an artifact and how it predicts.
//!
//! Linear models are stored as their coefficients. Every tree model (one
//! decision tree, a random forest, an AdaBoost ensemble) is stored as a list
//! of linfa-trees classifiers with one vote weight each, so one weighted-vote
//! rule predicts for all three.

use linfa::prelude::Predict;
use linfa_trees::DecisionTree;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    Linear {
        coefficients: Vec<f64>,
        intercept: f64,
    },
    Trees {
        trees: Vec<DecisionTree<f64, usize>>,
        weights: Vec<f64>,
        classes: usize,
    },
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Prediction {
    Value(f64),
    Class {
        class: usize,
        probabilities: Vec<f64>,
    },
}

impl Prediction {
    /// The number the drift reference bins: the value, or the class index.
    pub fn as_number(&self) -> f64 {
        match self {
            Prediction::Value(v) => *v,
            Prediction::Class { class, .. } => *class as f64,
        }
    }

    pub fn is_finite(&self) -> bool {
        match self {
            Prediction::Value(v) => v.is_finite(),
            Prediction::Class { probabilities, .. } => probabilities.iter().all(|p| p.is_finite()),
        }
    }
}

impl Model {
    /// Predicts every row. Rows must have the width the model was fit on;
    /// the caller validates that against the artifact's feature names.
    pub fn predict(&self, rows: ArrayView2<'_, f64>) -> Vec<Prediction> {
        match self {
            Model::Linear {
                coefficients,
                intercept,
            } => rows
                .rows()
                .into_iter()
                .map(|row| {
                    Prediction::Value(
                        row.iter()
                            .zip(coefficients)
                            .map(|(x, c)| x * c)
                            .sum::<f64>()
                            + intercept,
                    )
                })
                .collect(),
            Model::Trees {
                trees,
                weights,
                classes,
            } => {
                let mut votes = Array2::<f64>::zeros((rows.nrows(), *classes));
                for (tree, weight) in trees.iter().zip(weights) {
                    let labels = tree.predict(&rows);
                    for (row, label) in labels.iter().enumerate() {
                        if *label < *classes {
                            votes[[row, *label]] += weight;
                        }
                    }
                }
                votes
                    .rows()
                    .into_iter()
                    .map(|row| {
                        let total: f64 = row.sum();
                        let probabilities: Vec<f64> = row
                            .iter()
                            .map(|v| if total > 0.0 { v / total } else { 0.0 })
                            .collect();
                        let class = probabilities
                            .iter()
                            .enumerate()
                            .max_by(|a, b| a.1.total_cmp(b.1))
                            .map(|(i, _)| i)
                            .unwrap_or(0);
                        Prediction::Class {
                            class,
                            probabilities,
                        }
                    })
                    .collect()
            }
        }
    }

    /// Structural problems a corrupt or hand-edited artifact could carry.
    pub(crate) fn validate(&self, features: usize) -> Result<(), String> {
        match self {
            Model::Linear {
                coefficients,
                intercept,
            } => {
                if coefficients.len() != features {
                    return Err(format!(
                        "{} coefficients for {features} features",
                        coefficients.len()
                    ));
                }
                if !intercept.is_finite() || coefficients.iter().any(|c| !c.is_finite()) {
                    return Err("non-finite coefficient".into());
                }
            }
            Model::Trees {
                trees,
                weights,
                classes,
            } => {
                if trees.is_empty() || trees.len() != weights.len() {
                    return Err(format!(
                        "{} trees with {} weights",
                        trees.len(),
                        weights.len()
                    ));
                }
                if *classes == 0 || weights.iter().any(|w| !w.is_finite()) {
                    return Err("no classes or non-finite tree weight".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn linear_prediction_is_dot_product_plus_intercept() {
        let model = Model::Linear {
            coefficients: vec![2.0, -1.0],
            intercept: 0.5,
        };
        let out = model.predict(array![[1.0, 3.0], [0.0, 0.0]].view());
        assert_eq!(out, vec![Prediction::Value(-0.5), Prediction::Value(0.5)]);
    }
}
