//! The model the service answers with, and how it is replaced.
//!
//! [`ModelStore`] holds either a loaded model or the reason there is none,
//! behind an `ArcSwap`: a request takes one snapshot and uses it from start
//! to finish, so a reload never mixes two models in one answer, and readers
//! never wait for a reload. Reloads (SIGHUP, POST /admin/reload) are
//! serialised among themselves; a failed reload keeps the current model.
//!
//! The store knows artifacts, not metrics: what a model needs besides its
//! artifact (label sets, a drift window) is built by the `prepare` function
//! it is given, and callers count reloads from the result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::model::{Artifact, ArtifactError};

/// A model built from an artifact, as the store holds it.
pub trait Loaded: Send + Sync + 'static {
    fn artifact(&self) -> &Artifact;
}

/// Builds a model from a freshly loaded artifact.
type Prepare<M> = Box<dyn Fn(Artifact) -> M + Send + Sync>;

/// Why no model is loaded, as /ready and /predict report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// [`ArtifactError::kind`]: `missing`, `corrupt`, `checksum_mismatch`, ...
    pub kind: &'static str,
    pub message: String,
}

impl LoadFailure {
    /// The failure as clients see it: the message names the artifact by its
    /// file name, not by its path on the server (the log has the path).
    fn new(e: &ArtifactError, path: &Path) -> Self {
        let full = path.display().to_string();
        let name = path.file_name().map_or_else(
            || "the model artifact".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        Self {
            kind: e.kind(),
            message: e.to_string().replace(&full, &name),
        }
    }
}

enum Slot<M> {
    Loaded(Arc<M>),
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

pub struct ModelStore<M> {
    path: PathBuf,
    prepare: Prepare<M>,
    slot: ArcSwap<Slot<M>>,
    reloading: tokio::sync::Mutex<()>,
}

impl<M: Loaded> ModelStore<M> {
    /// Loads the artifact at `path`. A missing or broken artifact is not an
    /// error here: the store starts without a model and says why.
    pub async fn open(path: &Path, prepare: Prepare<M>) -> Self {
        let store = Self {
            path: path.to_owned(),
            prepare,
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
    pub fn model(&self) -> Option<Arc<M>> {
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

    /// Reloads the artifact from disk (the caller counts the attempt).
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, ArtifactError> {
        self.load(trigger).await
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
        let previous_version = previous
            .as_ref()
            .map(|m| m.artifact().model_version.clone());
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
                    .store(Arc::new(Slot::Loaded(Arc::new((self.prepare)(artifact)))));
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
                        current.artifact().model_version
                    ),
                    None => {
                        tracing::error!(
                            trigger = trigger.as_str(),
                            kind = e.kind(),
                            "no model loaded: {e}"
                        );
                        self.slot.store(Arc::new(Slot::Unavailable(LoadFailure::new(
                            &e, &self.path,
                        ))));
                    }
                }
                Err(e)
            }
        }
    }
}

impl<M> std::fmt::Debug for ModelStore<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
