//! The versioned model artifact: one JSON file the trainer writes and the
//! service loads.
//!
//! `model_version` is a content hash over everything except the version and
//! the timestamp, so the same seed and data give the same version and a file
//! edited after training is refused. Writes go to a temporary file that is
//! renamed into place, so a reader never sees half an artifact.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{DriftReference, Model, Task};

/// Bumped whenever a field is added or changes meaning; the trainer writes
/// this version. 2 added the optional `mlflow` lineage.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build still reads; a loader refuses others.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub format_version: u32,
    pub model_version: String,
    pub algorithm: String,
    pub task: Task,
    pub dataset: String,
    pub feature_names: Vec<String>,
    /// Class labels by class index; empty for regression.
    pub class_names: Vec<String>,
    /// RFC 3339, UTC.
    pub trained_at: String,
    pub seed: u64,
    pub hyperparameters: BTreeMap<String, f64>,
    /// Final metrics, keyed `<split>_<metric>` (e.g. `validation_r_squared`).
    pub metrics: BTreeMap<String, f64>,
    pub reference: DriftReference,
    pub model: Model,
    /// The MLflow run that produced the model (format 2; absent without
    /// MLflow and in format 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<crate::mlflow::MlflowRun>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("model artifact {path}: file not found")]
    Missing { path: PathBuf },
    #[error("model artifact {path}: cannot read or write: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model artifact {path}: truncated (JSON ends early at line {line}, column {column})")]
    Truncated {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("model artifact {path}: corrupt ({detail})")]
    Corrupt { path: PathBuf, detail: String },
    #[error("model artifact {path}: format version {found} is not supported (this build reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION})")]
    UnsupportedFormat { path: PathBuf, found: u64 },
    #[error("model artifact {path}: content does not match its model_version (expected {expected}, computed {computed}); the file was modified after training")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        computed: String,
    },
    #[error("model artifact {path}: invalid ({detail})")]
    Invalid { path: PathBuf, detail: String },
}

impl ArtifactError {
    /// A short machine-readable cause, used in /ready and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ArtifactError::Missing { .. } => "missing",
            ArtifactError::Io { .. } => "io",
            ArtifactError::Truncated { .. } => "truncated",
            ArtifactError::Corrupt { .. } => "corrupt",
            ArtifactError::UnsupportedFormat { .. } => "unsupported_format",
            ArtifactError::ChecksumMismatch { .. } => "checksum_mismatch",
            ArtifactError::Invalid { .. } => "invalid",
        }
    }
}

impl Artifact {
    /// Recomputes and stores `model_version` from the content.
    pub fn seal(mut self) -> Result<Self, serde_json::Error> {
        self.model_version = self.content_hash()?;
        Ok(self)
    }

    fn content_hash(&self) -> Result<String, serde_json::Error> {
        let mut unversioned = self.clone();
        unversioned.model_version.clear();
        unversioned.trained_at.clear();
        // Where the run was tracked is provenance, like the time: the same
        // seed and data give the same version with or without MLflow.
        unversioned.mlflow = None;
        // serde_json::Value keeps object keys sorted, so the bytes are canonical.
        let canonical = serde_json::to_vec(&serde_json::to_value(&unversioned)?)?;
        let digest = Sha256::digest(&canonical);
        Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
    }

    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        let bytes = std::fs::read(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ArtifactError::Missing {
                path: path.to_owned(),
            },
            _ => ArtifactError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::from_slice(path, &bytes)
    }

    /// Parses and checks an artifact; `path` only names it in errors.
    pub fn from_slice(path: &Path, bytes: &[u8]) -> Result<Self, ArtifactError> {
        let json_error = |e: serde_json::Error| {
            if e.is_eof() {
                ArtifactError::Truncated {
                    path: path.to_owned(),
                    line: e.line(),
                    column: e.column(),
                }
            } else {
                ArtifactError::Corrupt {
                    path: path.to_owned(),
                    detail: e.to_string(),
                }
            }
        };
        // Read the version before the full schema so that a future format
        // gets "unsupported version", not a confusing missing-field error.
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(json_error)?;
        match value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v)
                if (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
            Some(found) => {
                return Err(ArtifactError::UnsupportedFormat {
                    path: path.to_owned(),
                    found,
                })
            }
            None => {
                return Err(ArtifactError::Corrupt {
                    path: path.to_owned(),
                    detail: "no numeric format_version field; not an mlwatch artifact".into(),
                })
            }
        }
        let artifact: Artifact = serde_json::from_value(value).map_err(json_error)?;
        artifact.validate(path)?;
        let computed = artifact
            .content_hash()
            .map_err(|e| ArtifactError::Corrupt {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        if computed != artifact.model_version {
            return Err(ArtifactError::ChecksumMismatch {
                path: path.to_owned(),
                expected: artifact.model_version.clone(),
                computed,
            });
        }
        Ok(artifact)
    }

    fn validate(&self, path: &Path) -> Result<(), ArtifactError> {
        let invalid = |detail: String| ArtifactError::Invalid {
            path: path.to_owned(),
            detail,
        };
        let features = self.feature_names.len();
        if features == 0 {
            return Err(invalid("no feature names".into()));
        }
        if self.reference.features.len() != features {
            return Err(invalid(format!(
                "drift reference has {} features, model has {features}",
                self.reference.features.len()
            )));
        }
        if !self.reference.prediction.is_consistent()
            || self
                .reference
                .features
                .iter()
                .any(|f| !f.bins.is_consistent())
        {
            return Err(invalid("drift reference bins are inconsistent".into()));
        }
        if self.task == Task::Classification && self.class_names.is_empty() {
            return Err(invalid("classification model without class names".into()));
        }
        if let Model::Trees { classes, .. } = &self.model {
            if *classes != self.class_names.len() {
                return Err(invalid(format!(
                    "{classes} classes but {} class names",
                    self.class_names.len()
                )));
            }
        }
        self.model.validate(features).map_err(invalid)
    }

    /// Writes the artifact atomically: a temporary file in the same directory
    /// is written, synced and renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: path.to_owned(),
            source,
        };
        let json = serde_json::to_vec_pretty(self).map_err(|e| ArtifactError::Corrupt {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let directory = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&directory).map_err(io)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model.json".into());
        let temporary = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&json)?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result.map_err(io)
    }

    pub fn feature_count(&self) -> usize {
        self.feature_names.len()
    }

    /// The validation score used for model quality: R² or accuracy.
    pub fn validation_score(&self) -> Option<f64> {
        let key = match self.task {
            Task::Regression => "validation_r_squared",
            Task::Classification => "validation_accuracy",
        };
        self.metrics.get(key).copied()
    }
}
