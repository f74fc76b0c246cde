//! The model the service answers with, and how it is replaced.
//!
//! [`ModelStore`] holds either a loaded model or the reason there is none,
//! behind an `ArcSwap`: a request takes one snapshot and uses it from start
//! to finish, so a reload never mixes two models in one answer, and readers
//! never wait for a reload. Reloads (SIGHUP, POST /admin/reload, the
//! registry poll) are serialised among themselves; a failed reload keeps
//! the current model.
//!
//! The model comes from a [`Source`]: the artifact file, or the MLflow
//! registry version a `models:/` URI points at. A registry load resolves
//! the URI first and downloads nothing when it still points at the version
//! served; a version refused for its content is not downloaded again by a
//! poll until the URI moves (an explicit reload tries it again).
//!
//! The store knows artifacts, not metrics: what a model needs besides its
//! artifact (label sets, a drift window) is built by the `prepare` function
//! it is given, and callers count reloads from the result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::mlflow::registry::{Registry, RegistryError};
use crate::model::{Artifact, ArtifactError};

/// A model built from an artifact, as the store holds it.
pub trait Loaded: Send + Sync + 'static {
    fn artifact(&self) -> &Artifact;
}

/// Builds a model from a freshly loaded artifact.
type Prepare<M> = Box<dyn Fn(Artifact) -> M + Send + Sync>;

/// Where the store's models come from.
pub enum Source {
    /// `--model-path`: read (again) on every load.
    File(PathBuf),
    /// `--model-uri`: the registry version the URI points at when loading.
    Registry(Registry),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Registry(registry) => write!(f, "{}", registry.uri()),
        }
    }
}

/// The registry version a model was loaded from, as `GET /model` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryVersion {
    /// The configured `models:/...` URI.
    pub model_uri: String,
    pub name: String,
    pub version: String,
    pub alias: Option<String>,
    /// The run the version was registered from (empty without one).
    pub run_id: String,
}

/// Why a load failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The artifact itself: unreadable, corrupt, altered, invalid.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// Which version the URI points at could not be found out.
    #[error("cannot resolve {0}")]
    Resolve(RegistryError),
    /// The version is known but its artifact could not be downloaded.
    #[error("cannot download {0}")]
    Download(RegistryError),
    /// An automatic (polled) load found the URI still pointing at a version
    /// that was refused before; it is not downloaded again until the URI
    /// moves or a reload is asked for.
    #[error("version {version} was refused before ({kind}); waiting for the URI to point elsewhere (or a reload)")]
    KnownBad { version: String, kind: &'static str },
}

impl LoadError {
    /// A short machine-readable cause: the artifact's kinds (`missing`,
    /// `corrupt`, `checksum_mismatch`, ...) or the registry's
    /// (`registry_unreachable`, `registry_not_found`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::Artifact(e) => e.kind(),
            LoadError::Resolve(e) | LoadError::Download(e) => e.kind(),
            LoadError::KnownBad { .. } => "known_bad_version",
        }
    }
}

/// Why no model is loaded, as /ready and /predict report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// [`LoadError::kind`]: `missing`, `corrupt`, `checksum_mismatch`, ...
    pub kind: &'static str,
    pub message: String,
}

impl LoadFailure {
    /// The failure as clients see it: the message names a file artifact by
    /// its file name, not by its path on the server (the log has the path);
    /// a registry model by its URI and version.
    fn new(e: &LoadError, source: &Source) -> Self {
        let mut message = e.to_string();
        if let Source::File(path) = source {
            let full = path.display().to_string();
            let name = path.file_name().map_or_else(
                || "the model artifact".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            );
            message = message.replace(&full, &name);
        }
        Self {
            kind: e.kind(),
            message,
        }
    }
}

enum Slot<M> {
    Loaded {
        model: Arc<M>,
        /// `None` for a file artifact.
        origin: Option<Arc<RegistryVersion>>,
    },
    Unavailable(LoadFailure),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub model_version: String,
    pub previous_version: Option<String>,
    /// False when the source holds the version already loaded: the model
    /// and its drift window are kept as they are.
    pub changed: bool,
    /// The registry version now served (`None` for a file artifact).
    pub registry_version: Option<String>,
}

/// Where reloads come from, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Hangup,
    Admin,
    /// The registry poll (`--model-poll-interval`).
    Poll,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Hangup => "SIGHUP",
            Trigger::Admin => "POST /admin/reload",
            Trigger::Poll => "registry poll",
        }
    }

    /// Startup and polls: nobody asked, so a version refused before is not
    /// tried again, and failures are left to the poller to log.
    fn automatic(self) -> bool {
        matches!(self, Trigger::Startup | Trigger::Poll)
    }
}

/// The last registry version refused for its content, and why.
type Refused = Option<(String, &'static str)>;

pub struct ModelStore<M> {
    source: Source,
    prepare: Prepare<M>,
    slot: ArcSwap<Slot<M>>,
    /// Held for the whole of a load, so loads never overlap.
    reloading: tokio::sync::Mutex<Refused>,
}

impl<M: Loaded> ModelStore<M> {
    /// Loads the artifact at `path`. A missing or broken artifact is not an
    /// error here: the store starts without a model and says why.
    pub async fn open(path: &Path, prepare: Prepare<M>) -> Self {
        let store = Self::empty(Source::File(path.to_owned()), prepare);
        // The first load is not a reload: it is logged, not counted.
        let _ = store.load(Trigger::Startup).await;
        store
    }

    /// A store without a model yet, for a source whose first load the
    /// caller starts (the registry poller, so that a slow registry never
    /// delays the port's answers).
    pub fn empty(source: Source, prepare: Prepare<M>) -> Self {
        Self {
            source,
            prepare,
            slot: ArcSwap::from_pointee(Slot::Unavailable(LoadFailure {
                kind: "not_loaded",
                message: "the model has not been loaded yet".into(),
            })),
            reloading: tokio::sync::Mutex::new(None),
        }
    }

    /// The current model, if any.
    pub fn model(&self) -> Option<Arc<M>> {
        self.current().map(|(model, _)| model)
    }

    /// The current model and the registry version it came from, read at
    /// one instant.
    pub fn current(&self) -> Option<(Arc<M>, Option<Arc<RegistryVersion>>)> {
        match &**self.slot.load() {
            Slot::Loaded { model, origin } => Some((Arc::clone(model), origin.clone())),
            Slot::Unavailable(_) => None,
        }
    }

    /// Why there is no model; `None` while one is loaded.
    pub fn failure(&self) -> Option<LoadFailure> {
        match &**self.slot.load() {
            Slot::Loaded { .. } => None,
            Slot::Unavailable(failure) => Some(failure.clone()),
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Loads from the source again (the caller counts the attempt).
    pub async fn reload(&self, trigger: Trigger) -> Result<Reloaded, LoadError> {
        self.load(trigger).await
    }

    async fn load(&self, trigger: Trigger) -> Result<Reloaded, LoadError> {
        let mut refused = self.reloading.lock().await;
        let current = self.current();
        let previous_version = current
            .as_ref()
            .map(|(m, _)| m.artifact().model_version.clone());
        let fetched = match &self.source {
            Source::File(path) => {
                let owned = path.clone();
                tokio::task::spawn_blocking(move || Artifact::load(&owned))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ArtifactError::Io {
                            path: path.clone(),
                            source: std::io::Error::other(e),
                        })
                    })
                    .map(|artifact| (artifact, None))
                    .map_err(LoadError::from)
            }
            Source::Registry(registry) => {
                let served = current.as_ref().and_then(|(_, origin)| origin.clone());
                match self
                    .fetch(registry, trigger, served.as_deref(), &mut refused)
                    .await
                {
                    Ok(Fetched::Same(origin)) => {
                        return Ok(Reloaded {
                            model_version: previous_version.clone().unwrap_or_default(),
                            previous_version,
                            changed: false,
                            registry_version: Some(origin.version.clone()),
                        })
                    }
                    Ok(Fetched::New(artifact, origin)) => Ok((*artifact, Some(Arc::new(origin)))),
                    Err(e) => Err(e),
                }
            }
        };
        match fetched {
            Ok((artifact, origin)) => {
                let registry_version = origin.as_ref().map(|o| o.version.clone());
                if previous_version.as_deref() == Some(artifact.model_version.as_str()) {
                    // The same artifact (a registry version may hold the
                    // same bytes as another): keep the model and its
                    // window, record where it now comes from.
                    if let (Some((model, _)), Some(origin)) = (&current, &origin) {
                        self.slot.store(Arc::new(Slot::Loaded {
                            model: Arc::clone(model),
                            origin: Some(Arc::clone(origin)),
                        }));
                    }
                    if !trigger.automatic() {
                        tracing::info!(trigger = trigger.as_str(), model_version = %artifact.model_version, "model unchanged");
                    }
                    return Ok(Reloaded {
                        model_version: artifact.model_version,
                        previous_version,
                        changed: false,
                        registry_version,
                    });
                }
                tracing::info!(
                    trigger = trigger.as_str(),
                    model_version = %artifact.model_version,
                    previous = previous_version.as_deref().unwrap_or("none"),
                    algorithm = %artifact.algorithm,
                    source = %self.source,
                    registry_version = registry_version.as_deref().unwrap_or("none"),
                    "model loaded"
                );
                let model_version = artifact.model_version.clone();
                self.slot.store(Arc::new(Slot::Loaded {
                    model: Arc::new((self.prepare)(artifact)),
                    origin,
                }));
                Ok(Reloaded {
                    model_version,
                    previous_version,
                    changed: true,
                    registry_version,
                })
            }
            Err(e) => {
                // Polls are logged by the poller, once per episode.
                if !trigger.automatic() || matches!(self.source, Source::File(_)) {
                    match &current {
                        Some((model, _)) => tracing::error!(
                            trigger = trigger.as_str(),
                            kind = e.kind(),
                            "model reload failed, still serving {}: {e}",
                            model.artifact().model_version
                        ),
                        None => tracing::error!(
                            trigger = trigger.as_str(),
                            kind = e.kind(),
                            "no model loaded: {e}"
                        ),
                    }
                }
                // Without a model, /ready says why; a version known to be
                // bad keeps the reason it was refused for.
                if current.is_none() && !matches!(e, LoadError::KnownBad { .. }) {
                    self.slot.store(Arc::new(Slot::Unavailable(LoadFailure::new(
                        &e,
                        &self.source,
                    ))));
                }
                Err(e)
            }
        }
    }

    /// Resolves the registry URI and, unless it points at the version
    /// served (or, automatically, at one refused before), downloads and
    /// checks that version's artifact. A version refused for its content is
    /// remembered in `refused`.
    async fn fetch(
        &self,
        registry: &Registry,
        trigger: Trigger,
        served: Option<&RegistryVersion>,
        refused: &mut Refused,
    ) -> Result<Fetched, LoadError> {
        let version = registry.resolve().await.map_err(LoadError::Resolve)?;
        if let Some(served) = served {
            if served.version == version.version {
                return Ok(Fetched::Same(served.clone()));
            }
        }
        match refused.as_ref() {
            Some((bad, kind)) if *bad == version.version && trigger.automatic() => {
                return Err(LoadError::KnownBad {
                    version: bad.clone(),
                    kind,
                })
            }
            _ => *refused = None,
        }
        let download = registry.download(&version).await.map_err(|e| {
            if e.is_permanent() {
                *refused = Some((version.version.clone(), e.kind()));
            }
            LoadError::Download(e)
        })?;
        // Named by URI and version in errors: the hash check and every other
        // check of a file artifact apply unchanged.
        let label = format!(
            "models:/{}/{} ({})",
            version.name, version.version, download.file
        );
        let parsed = tokio::task::spawn_blocking(move || {
            Artifact::from_slice(Path::new(&label), &download.bytes)
        })
        .await
        .unwrap_or_else(|e| {
            Err(ArtifactError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })
        });
        let artifact = parsed.map_err(|e| {
            *refused = Some((version.version.clone(), e.kind()));
            LoadError::Artifact(e)
        })?;
        Ok(Fetched::New(
            Box::new(artifact),
            RegistryVersion {
                model_uri: registry.uri().to_string(),
                name: version.name,
                version: version.version,
                alias: registry.uri().alias().map(str::to_owned),
                run_id: version.run_id,
            },
        ))
    }
}

/// What a registry fetch found.
enum Fetched {
    /// The URI points at the version served.
    Same(RegistryVersion),
    New(Box<Artifact>, RegistryVersion),
}

impl<M> std::fmt::Debug for ModelStore<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore")
            .field("source", &self.source.to_string())
            .finish_non_exhaustive()
    }
}
