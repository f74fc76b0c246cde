//! The trained model as the service sees it: the versioned artifact on disk,
//! the predictor inside it, the drift reference computed from the training
//! data, and the evaluation math both the trainer and the tests use.

pub mod artifact;
pub mod evaluation;
pub mod predictor;
pub mod reference;

pub use artifact::{Artifact, ArtifactError, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
pub use predictor::{Model, Prediction};
pub use reference::{BinReference, DriftReference, FeatureReference};

use serde::{Deserialize, Serialize};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Regression,
    Classification,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Regression => "regression",
            Task::Classification => "classification",
        }
    }
}
