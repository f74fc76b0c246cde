//! The data sets that ship inside linfa-datasets, and the seeded
//! train/validation split. Nothing is downloaded: the CSVs are compiled in.

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::DatasetName;
use crate::model::Task;

/// Targets of one split.
#[derive(Debug, Clone)]
pub enum Targets {
    Regression(Vec<f64>),
    /// Class indices into [`Prepared::class_names`].
    Classification(Vec<usize>),
}

impl Targets {
    fn select(&self, rows: &[usize]) -> Self {
        match self {
            Targets::Regression(v) => Targets::Regression(rows.iter().map(|i| v[*i]).collect()),
            Targets::Classification(v) => {
                Targets::Classification(rows.iter().map(|i| v[*i]).collect())
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Targets::Regression(v) => v.len(),
            Targets::Classification(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct Split {
    pub records: Array2<f64>,
    pub targets: Targets,
}

/// A data set split and ready to fit.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub name: &'static str,
    pub task: Task,
    pub feature_names: Vec<String>,
    pub class_names: Vec<String>,
    pub train: Split,
    pub validation: Split,
}

impl DatasetName {
    pub fn task(self) -> Task {
        match self {
            DatasetName::Diabetes => Task::Regression,
            DatasetName::Winequality | DatasetName::Iris => Task::Classification,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetName::Diabetes => "diabetes",
            DatasetName::Winequality => "winequality",
            DatasetName::Iris => "iris",
        }
    }
}

/// Loads `name` and splits it with a seeded shuffle; `validation_fraction`
/// of the rows (at least one) go to validation.
pub fn prepare(name: DatasetName, seed: u64, validation_fraction: f64) -> Prepared {
    let (records, targets, feature_names, class_names) = match name {
        DatasetName::Diabetes => {
            let d = linfa_datasets::diabetes();
            let names = d.feature_names().to_vec();
            (
                d.records().to_owned(),
                Targets::Regression(d.targets().to_vec()),
                names,
                Vec::new(),
            )
        }
        DatasetName::Winequality => classification(linfa_datasets::winequality()),
        DatasetName::Iris => classification(linfa_datasets::iris()),
    };
    let mut rows: Vec<usize> = (0..records.nrows()).collect();
    rows.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let validation_rows =
        ((rows.len() as f64 * validation_fraction).round() as usize).clamp(1, rows.len() - 1);
    let (validation, train) = rows.split_at(validation_rows);
    let split = |rows: &[usize]| Split {
        records: records.select(Axis(0), rows),
        targets: targets.select(rows),
    };
    Prepared {
        name: name.as_str(),
        task: name.task(),
        feature_names,
        class_names,
        train: split(train),
        validation: split(validation),
    }
}

/// Re-labels raw class labels (e.g. wine quality 3..8) as dense indices.
fn classification(
    d: linfa::Dataset<f64, usize, ndarray::Ix1>,
) -> (Array2<f64>, Targets, Vec<String>, Vec<String>) {
    let names = d.feature_names().to_vec();
    let mut labels: Vec<usize> = d.targets().to_vec();
    labels.sort_unstable();
    labels.dedup();
    let index = |label: &usize| labels.binary_search(label).unwrap_or(0);
    let targets = d.targets().iter().map(index).collect();
    let class_names = labels.iter().map(|l| l.to_string()).collect();
    (
        d.records().to_owned(),
        Targets::Classification(targets),
        names,
        class_names,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_and_disjoint() {
        let a = prepare(DatasetName::Diabetes, 7, 0.2);
        let b = prepare(DatasetName::Diabetes, 7, 0.2);
        let c = prepare(DatasetName::Diabetes, 8, 0.2);
        assert_eq!(a.train.records, b.train.records);
        assert_ne!(a.train.records, c.train.records);
        assert_eq!(a.train.records.nrows() + a.validation.records.nrows(), 441);
        assert_eq!(a.validation.records.nrows(), 88);
        assert_eq!(a.feature_names.len(), 10);
    }

    #[test]
    fn wine_classes_are_dense_indices() {
        let w = prepare(DatasetName::Winequality, 1, 0.2);
        assert_eq!(w.class_names, vec!["3", "4", "5", "6", "7", "8"]);
        match &w.train.targets {
            Targets::Classification(t) => assert!(t.iter().all(|c| *c < 6)),
            Targets::Regression(_) => panic!("wine is a classification set"),
        }
    }
}
