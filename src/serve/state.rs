//! The model the service answers with, and how it is replaced.
//!
//! [`ModelStore`] holds either a loaded model or the reason there is none,
//! behind an `ArcSwap`: a request takes one snapshot and uses it from start
//! to finish, so a reload never mixes two models in one answer, and readers
//! never wait for a reload. Reloads (SIGHUP, POST /admin/reload) are
//! serialised among themselves; a failed reload keeps the current model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::decode::Schema;
use super::drift::DriftWindow;
use super::metrics::{ModelLabels, ServiceMetrics};
use crate::model::{Artifact, ArtifactError};

/// A model ready to answer requests, with everything derived from it.
#[derive(Debug)]
pub struct LoadedModel {
    pub artifact: Artifact,
    pub schema: Schema,
    pub labels: ModelLabels,
    /// `None` without instrumentation.
    pub drift: Option<DriftWindow>,
}

/// Why no model is loaded, as /ready and /predict report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// [`ArtifactError::kind`]: `missing`, `corrupt`, `checksum_mismatch`, ...
    pub kind: &'static str,
    pub message: String,
}

impl From<&ArtifactError> for LoadFailure {
    fn from(e: &ArtifactError) -> Self {
        Self {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

#[derive(Debug)]
enum Slot {
    Loaded(Arc<LoadedModel>),
    Unavailable(LoadFailure),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub model_version: String,
    pub previous_version: Option<String>,
    /// False when the file holds the version already loaded: the model and
    /// its drift window are kept as they are.
    pub changed: bool,
}

/// Where reloads come from, for the logs.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Startup,
    Hangup,
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Hangup => "SIGHUP",
            Trigger::Admin => "POST /admin/reload",
        }
    }
}

pub struct ModelStore {
    path: PathBuf,
    drift_capacity: usize,
    metrics: Arc<ServiceMetrics>,
    slot: ArcSwap<Slot>,
    reloading: tokio::sync::Mutex<()>,
}

impl ModelStore {
    /// Loads the artifact at `path`. A missing or broken artifact is not an
    /// error here: the store starts without a model and says why.
    pub async fn open(path: &Path, drift_capacity: usize, metrics: Arc<ServiceMetrics>) -> Self {
        let store = Self {
            path: path.to_owned(),
            drift_capacity,
            metrics,
            slot: ArcSwap::from_pointee(Slot::Unavailable(LoadFailure {
                kind: "not_loaded",
                message: "the model has not been loaded yet".into(),
            })),
            reloading: tokio::sync::Mutex::new(()),
        };
        // The first load is not a reload: it is logged, not counted.
        let _ = store.load(Trigger::Startup).await;
        store
    }

    /// The current model, if any.
    pub fn model(&self) -> Option<Arc<LoadedModel>> {
        match &**self.slot.load() {
            Slot::Loaded(model) => Some(Arc::clone(model)),
            Slot::Unavailable(_) => None,
        }
    }

    /// Why there is no model; `None` while one is loaded.
    pub fn failure(&self) -> Option<LoadFailure> {
        match &**self.slot.load() {
            Slot::Loaded(_) => None,
            Slot::Unavailable(failure) => Some(failure.clone()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads the artifact from disk and counts the attempt.
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ArtifactError> {
        let result = self.load(trigger).await;
        self.metrics.reload(result.is_ok());
        result
    }

    async fn load(&self, trigger: Trigger) -> Result<Reloaded, ArtifactError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || Artifact::load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ArtifactError::Io {
                    path: self.path.clone(),
                    source: std::io::Error::other(e),
                })
            });
        let previous = self.model();
        let previous_version = previous.as_ref().map(|m| m.artifact.model_version.clone());
        match loaded {
            Ok(artifact)
                if previous_version.as_deref() == Some(artifact.model_version.as_str()) =>
            {
                tracing::info!(trigger = trigger.as_str(), model_version = %artifact.model_version, "model unchanged");
                Ok(Reloaded {
                    model_version: artifact.model_version,
                    previous_version,
                    changed: false,
                })
            }
            Ok(artifact) => {
                tracing::info!(
                    trigger = trigger.as_str(),
                    model_version = %artifact.model_version,
                    previous = previous_version.as_deref().unwrap_or("none"),
                    algorithm = %artifact.algorithm,
                    path = %self.path.display(),
                    "model loaded"
                );
                let model_version = artifact.model_version.clone();
                self.slot
                    .store(Arc::new(Slot::Loaded(Arc::new(self.prepare(artifact)))));
                Ok(Reloaded {
                    model_version,
                    previous_version,
                    changed: true,
                })
            }
            Err(e) => {
                match &previous {
                    Some(current) => tracing::error!(
                        trigger = trigger.as_str(),
                        kind = e.kind(),
                        "model reload failed, still serving {}: {e}",
                        current.artifact.model_version
                    ),
                    None => {
                        tracing::error!(
                            trigger = trigger.as_str(),
                            kind = e.kind(),
                            "no model loaded: {e}"
                        );
                        self.slot
                            .store(Arc::new(Slot::Unavailable(LoadFailure::from(&e))));
                        self.metrics.prepare_without_model();
                    }
                }
                Err(e)
            }
        }
    }

    fn prepare(&self, artifact: Artifact) -> LoadedModel {
        let labels = self.metrics.prepare(&artifact);
        let drift = self
            .metrics
            .instrumented()
            .then(|| DriftWindow::new(&artifact.reference, self.drift_capacity));
        LoadedModel {
            schema: Schema::new(&artifact.feature_names),
            labels,
            drift,
            artifact,
        }
    }
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
