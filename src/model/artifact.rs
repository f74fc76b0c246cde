//! The versioned model artifact: one JSON file the trainer writes and the
//! service loads.
//!
//! `model_version` is a content hash over everything except the version and
//! the timestamp, so the same seed and data give the same version and a file
//! edited after training is refused. The hashed bytes are an explicit
//! canonical JSON form (object keys sorted, no whitespace; see
//! [`canonical_json`]), so the hash does not depend on how serde_json orders
//! maps (its `preserve_order` feature would change it). Writes go to a temporary file that is
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
        let mut canonical = Vec::new();
        canonical_json(&serde_json::to_value(&unversioned)?, &mut canonical)?;
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

/// Writes `value` as canonical JSON: objects with their keys sorted by
/// byte order (whatever order the map keeps them in), no whitespace,
/// strings and numbers as serde_json writes them. These are the bytes
/// serde_json wrote for a sorted map, so hashes from before this function
/// existed are unchanged (`golden_hash`).
fn canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                canonical_json(item, out)?;
            }
            out.push(b'}');
        }
        scalar => serde_json::to_writer(&mut *out, scalar)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BinReference, FeatureReference};

    #[test]
    fn canonical_json_sorts_keys_at_every_level_whatever_the_input_order() {
        let value: serde_json::Value = serde_json::from_str(
            r#"{"b": 1, "a": {"d": [2, {"z": null, "y": "é\n"}], "c": 3.5}, "A": true}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        canonical_json(&value, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"A":true,"a":{"c":3.5,"d":[2,{"y":"é\n","z":null}]},"b":1}"#
        );
    }

    /// A small artifact built by hand, so that its hash depends on nothing
    /// but this code and the canonical form.
    fn fixed() -> Artifact {
        let values = [0.5, -1.25, 3.0, 7.5, 0.0, 2.0, 1e-3, 42.0, -8.0, 6.25];
        Artifact {
            // Format 1: the hash pinned below is that of artifacts written
            // before format 2 (which still load and must still verify).
            format_version: 1,
            model_version: String::new(),
            algorithm: "linear".into(),
            task: Task::Regression,
            dataset: "diabetes".into(),
            feature_names: vec!["age".into(), "body mass index".into()],
            class_names: vec![],
            trained_at: "2026-01-01T00:00:00Z".into(),
            seed: 42,
            hyperparameters: BTreeMap::from([("alpha".into(), 0.1), ("l1_ratio".into(), 0.5)]),
            metrics: BTreeMap::from([
                ("validation_r_squared".into(), 0.45),
                ("train_r_squared".into(), 0.5),
            ]),
            reference: DriftReference {
                features: vec![
                    FeatureReference::from_values("age", &values).unwrap(),
                    FeatureReference::from_values("body mass index", &values[2..]).unwrap(),
                ],
                prediction: BinReference::deciles(&values).unwrap(),
            },
            model: Model::Linear {
                coefficients: vec![1.5, -0.25],
                intercept: 152.0,
            },
            mlflow: None,
        }
    }

    #[test]
    fn golden_hash() {
        // Pinned: a change here changes the version of every artifact ever
        // written (and makes the service refuse them as tampered).
        assert_eq!(fixed().seal().unwrap().model_version, "490e9c76ff2c");
    }
}
