//! The four learners, each an iterator of candidate models so that the
//! training loop can evaluate and report after every iteration.
//!
//! * `linear`: ElasticNet over a descending alpha grid; each trial is an
//!   iteration and the best validation R² wins.
//! * `tree`: one linfa-trees decision tree per max_depth 1..=n; best wins.
//! * `forest`: bagged decision trees, one tree per iteration; the ensemble
//!   keeps growing.
//! * `boost`: AdaBoost (SAMME) over shallow trees, one round per iteration.
//!   linfa-ensemble's AdaBoost fits all rounds in one call and cannot report
//!   per-round progress, so the rounds are written out here on linfa-trees.

use anyhow::Context;
use linfa::prelude::{Fit, Predict};
use linfa::Dataset;
use linfa_elasticnet::ElasticNet;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::data::{Prepared, Targets};
use super::Algorithm;
use crate::model::Model;

/// One model produced by an iteration.
pub struct Candidate {
    pub model: Model,
    pub hyperparameters: Vec<(&'static str, f64)>,
    /// Normalised per-feature importance (sums to 1 unless all are zero).
    pub importance: Vec<f64>,
    pub is_boosting_round: bool,
}

pub trait Learner {
    fn next_candidate(&mut self, data: &Prepared) -> anyhow::Result<Option<Candidate>>;
    /// Whether the final model is the best candidate (a search) rather than
    /// the last one (a growing ensemble).
    fn keeps_best(&self) -> bool;
}

pub const DEFAULT_ITERATIONS: fn(Algorithm) -> usize = |a| match a {
    Algorithm::Linear => 12,
    Algorithm::Tree => 10,
    Algorithm::Forest => 30,
    Algorithm::Boost => 40,
};

pub fn learner(algorithm: Algorithm, iterations: usize, seed: u64) -> Box<dyn Learner + Send> {
    match algorithm {
        Algorithm::Linear => Box::new(AlphaSweep {
            trial: 0,
            trials: iterations.max(1),
            l1_ratio: 0.5,
        }),
        Algorithm::Tree => Box::new(DepthSearch {
            depth: 0,
            max_depth: iterations.max(1),
        }),
        Algorithm::Forest => Box::new(Forest {
            trees: Vec::new(),
            size: iterations.max(1),
            max_depth: 8,
            rng: StdRng::seed_from_u64(seed),
        }),
        Algorithm::Boost => Box::new(AdaBoost {
            trees: Vec::new(),
            alphas: Vec::new(),
            importance: Vec::new(),
            weights: None,
            rounds: iterations.max(1),
            max_depth: 2,
            learning_rate: 0.5,
        }),
    }
}

fn normalise(values: Vec<f64>) -> Vec<f64> {
    let total: f64 = values.iter().map(|v| v.abs()).sum();
    if total > 0.0 && total.is_finite() {
        values.iter().map(|v| v.abs() / total).collect()
    } else {
        vec![0.0; values.len()]
    }
}

fn class_targets(data: &Prepared) -> anyhow::Result<(&Vec<usize>, usize)> {
    match &data.train.targets {
        Targets::Classification(t) => Ok((t, data.class_names.len())),
        Targets::Regression(_) => {
            anyhow::bail!("tree models need a classification data set (winequality or iris)")
        }
    }
}

fn fit_tree(
    records: Array2<f64>,
    targets: Vec<usize>,
    weights: Option<&[f64]>,
    max_depth: usize,
) -> anyhow::Result<DecisionTree<f64, usize>> {
    let mut dataset = Dataset::new(records, Array1::from(targets));
    if let Some(w) = weights {
        dataset = dataset.with_weights(w.iter().map(|v| *v as f32).collect());
    }
    DecisionTree::params()
        .max_depth(Some(max_depth))
        .fit(&dataset)
        .context("fitting a decision tree")
}

struct AlphaSweep {
    trial: usize,
    trials: usize,
    l1_ratio: f64,
}

impl AlphaSweep {
    /// Log-spaced from 1 down to 1e-4: strong to weak regularisation.
    fn alpha(&self) -> f64 {
        let step = if self.trials > 1 {
            self.trial as f64 / (self.trials - 1) as f64
        } else {
            1.0
        };
        10f64.powf(-4.0 * step)
    }
}

impl Learner for AlphaSweep {
    fn next_candidate(&mut self, data: &Prepared) -> anyhow::Result<Option<Candidate>> {
        if self.trial >= self.trials {
            return Ok(None);
        }
        let Targets::Regression(targets) = &data.train.targets else {
            anyhow::bail!("the linear model needs a regression data set (diabetes)");
        };
        let alpha = self.alpha();
        self.trial += 1;
        let dataset = Dataset::new(data.train.records.clone(), Array1::from(targets.clone()));
        let fitted = ElasticNet::params()
            .penalty(alpha)
            .l1_ratio(self.l1_ratio)
            .max_iterations(5000)
            .tolerance(1e-6)
            .fit(&dataset)
            .with_context(|| format!("fitting ElasticNet with alpha {alpha}"))?;
        let coefficients = fitted.hyperplane().to_vec();
        // A coefficient matters in proportion to the spread of its feature.
        let spread = data.train.records.std_axis(Axis(0), 0.0);
        let importance = normalise(
            coefficients
                .iter()
                .zip(spread.iter())
                .map(|(c, s)| c * s)
                .collect(),
        );
        Ok(Some(Candidate {
            model: Model::Linear {
                coefficients,
                intercept: fitted.intercept(),
            },
            hyperparameters: vec![("alpha", alpha), ("l1_ratio", self.l1_ratio)],
            importance,
            is_boosting_round: false,
        }))
    }

    fn keeps_best(&self) -> bool {
        true
    }
}

struct DepthSearch {
    depth: usize,
    max_depth: usize,
}

impl Learner for DepthSearch {
    fn next_candidate(&mut self, data: &Prepared) -> anyhow::Result<Option<Candidate>> {
        if self.depth >= self.max_depth {
            return Ok(None);
        }
        self.depth += 1;
        let (targets, classes) = class_targets(data)?;
        let tree = fit_tree(
            data.train.records.clone(),
            targets.clone(),
            None,
            self.depth,
        )?;
        let importance = normalise(tree.feature_importance());
        Ok(Some(Candidate {
            model: Model::Trees {
                trees: vec![tree],
                weights: vec![1.0],
                classes,
            },
            hyperparameters: vec![("max_depth", self.depth as f64)],
            importance,
            is_boosting_round: false,
        }))
    }

    fn keeps_best(&self) -> bool {
        true
    }
}

struct Forest {
    trees: Vec<DecisionTree<f64, usize>>,
    size: usize,
    max_depth: usize,
    rng: StdRng,
}

impl Learner for Forest {
    fn next_candidate(&mut self, data: &Prepared) -> anyhow::Result<Option<Candidate>> {
        if self.trees.len() >= self.size {
            return Ok(None);
        }
        let (targets, classes) = class_targets(data)?;
        let n = targets.len();
        let rows: Vec<usize> = (0..n).map(|_| self.rng.gen_range(0..n)).collect();
        let sample_targets = rows.iter().map(|i| targets[*i]).collect();
        let tree = fit_tree(
            data.train.records.select(Axis(0), &rows),
            sample_targets,
            None,
            self.max_depth,
        )?;
        self.trees.push(tree);
        let mut importance = vec![0.0; data.feature_names.len()];
        for tree in &self.trees {
            for (total, value) in importance.iter_mut().zip(tree.feature_importance()) {
                *total += value;
            }
        }
        Ok(Some(Candidate {
            model: Model::Trees {
                trees: self.trees.clone(),
                weights: vec![1.0; self.trees.len()],
                classes,
            },
            hyperparameters: vec![
                ("max_depth", self.max_depth as f64),
                ("n_estimators", self.trees.len() as f64),
            ],
            importance: normalise(importance),
            is_boosting_round: false,
        }))
    }

    fn keeps_best(&self) -> bool {
        false
    }
}

struct AdaBoost {
    trees: Vec<DecisionTree<f64, usize>>,
    alphas: Vec<f64>,
    importance: Vec<f64>,
    weights: Option<Vec<f64>>,
    rounds: usize,
    max_depth: usize,
    learning_rate: f64,
}

impl Learner for AdaBoost {
    fn next_candidate(&mut self, data: &Prepared) -> anyhow::Result<Option<Candidate>> {
        if self.trees.len() >= self.rounds {
            return Ok(None);
        }
        let (targets, classes) = class_targets(data)?;
        let n = targets.len();
        // Weights are kept with mean 1 so that linfa-trees' absolute
        // min-weight split rules behave as they do unweighted.
        let weights = self.weights.get_or_insert_with(|| vec![1.0; n]);
        let tree = fit_tree(
            data.train.records.clone(),
            targets.clone(),
            Some(weights),
            self.max_depth,
        )?;
        let predicted = tree.predict(&data.train.records);
        let total: f64 = weights.iter().sum();
        let missed: f64 = weights
            .iter()
            .zip(predicted.iter().zip(targets))
            .filter(|(_, (p, t))| p != t)
            .map(|(w, _)| w)
            .sum();
        // SAMME: a learner must beat random guessing among K classes.
        let error = (missed / total).clamp(1e-10, 1.0);
        let chance = 1.0 - 1.0 / classes.max(2) as f64;
        let alpha = if error < chance {
            self.learning_rate * (((1.0 - error) / error).ln() + ((classes.max(2) - 1) as f64).ln())
        } else {
            0.0
        };
        for (w, (p, t)) in weights.iter_mut().zip(predicted.iter().zip(targets)) {
            if p != t {
                *w *= alpha.exp();
            }
        }
        let sum: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w *= n as f64 / sum);
        if self.importance.is_empty() {
            self.importance = vec![0.0; data.feature_names.len()];
        }
        for (total, value) in self.importance.iter_mut().zip(tree.feature_importance()) {
            *total += alpha * value;
        }
        self.trees.push(tree);
        // An all-zero ensemble would vote for nothing; keep a tiny weight.
        self.alphas.push(alpha.max(1e-9));
        Ok(Some(Candidate {
            model: Model::Trees {
                trees: self.trees.clone(),
                weights: self.alphas.clone(),
                classes,
            },
            hyperparameters: vec![
                ("max_depth", self.max_depth as f64),
                ("learning_rate", self.learning_rate),
                ("n_estimators", self.trees.len() as f64),
            ],
            importance: normalise(self.importance.clone()),
            is_boosting_round: true,
        }))
    }

    fn keeps_best(&self) -> bool {
        false
    }
}
