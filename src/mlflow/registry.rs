//! Serving from the MLflow model registry: a `models:/NAME@ALIAS` or
//! `models:/NAME/VERSION` URI ([`ModelUri`]) resolved to a registered
//! version, whose mlwatch artifact (the JSON file `mlwatch train` uploaded
//! and registered) is downloaded through the tracking server's artifact
//! proxy ([`Registry`]). The service's model store decides what to do with
//! the bytes (src/serve/state.rs); nothing here knows about serving.

use std::fmt;

use super::client::{self, Client, MlflowError, ModelVersion};

/// Longest registered model name or alias accepted (MLflow's own limit for
/// names is 256 characters in its SQL store).
const MAX_NAME_CHARS: usize = 256;

/// What a [`ModelUri`] points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `@champion`: followed as it moves.
    Alias(String),
    /// `/3`: one version, for good.
    Version(String),
}

/// `models:/NAME@ALIAS` or `models:/NAME/VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUri {
    pub name: String,
    pub reference: Reference,
}

impl std::str::FromStr for ModelUri {
    type Err = String;

    fn from_str(uri: &str) -> Result<Self, String> {
        let usage = "expected models:/NAME@ALIAS or models:/NAME/VERSION";
        let rest = uri
            .strip_prefix("models:/")
            .ok_or_else(|| format!("model URI {uri:?} does not start with models:/ ({usage})"))?;
        let (name, reference) = if let Some((name, alias)) = rest.rsplit_once('@') {
            if alias.is_empty()
                || alias.chars().count() > MAX_NAME_CHARS
                || !alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "model URI {uri:?}: the alias must be 1 to {MAX_NAME_CHARS} letters, digits, \
                     '_' or '-' ({usage})"
                ));
            }
            (name, Reference::Alias(alias.to_owned()))
        } else if let Some((name, version)) = rest.rsplit_once('/') {
            if version.is_empty()
                || !version.chars().all(|c| c.is_ascii_digit())
                || version.trim_start_matches('0').is_empty()
            {
                return Err(format!(
                    "model URI {uri:?}: {version:?} is not a version number; stages and \
                     `latest` are not supported, point an alias at the version instead ({usage})"
                ));
            }
            (name, Reference::Version(version.to_owned()))
        } else {
            return Err(format!(
                "model URI {uri:?} names no alias or version ({usage})"
            ));
        };
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.contains('/')
            || name.chars().any(char::is_control)
        {
            return Err(format!(
                "model URI {uri:?}: the registered model name must be 1 to {MAX_NAME_CHARS} \
                 characters without '/' or control characters ({usage})"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            reference,
        })
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reference {
            Reference::Alias(alias) => write!(f, "models:/{}@{alias}", self.name),
            Reference::Version(version) => write!(f, "models:/{}/{version}", self.name),
        }
    }
}

impl ModelUri {
    pub fn alias(&self) -> Option<&str> {
        match &self.reference {
            Reference::Alias(alias) => Some(alias),
            Reference::Version(_) => None,
        }
    }
}

/// Why a registry read failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{uri}: {source}")]
    Mlflow {
        uri: String,
        #[source]
        source: MlflowError,
    },
    #[error("{uri}: version {version} is {status}, not READY")]
    NotReady {
        uri: String,
        version: String,
        status: String,
    },
    #[error("{uri}: version {version}: {detail}")]
    Layout {
        uri: String,
        version: String,
        detail: String,
    },
}

impl RegistryError {
    /// A short machine-readable cause, as /ready and the reload answer
    /// report it.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Mlflow { source, .. } => match source {
                MlflowError::Transport { .. } => "registry_unreachable",
                MlflowError::TooLarge { .. } => "too_large",
                MlflowError::Api { status: 404, .. } => "registry_not_found",
                // A missing alias is MLflow's INVALID_PARAMETER_VALUE (400).
                MlflowError::Api { code, .. } if code == "INVALID_PARAMETER_VALUE" => {
                    "registry_not_found"
                }
                MlflowError::Api { .. } | MlflowError::Protocol { .. } => "registry_error",
            },
            RegistryError::NotReady { .. } => "version_not_ready",
            RegistryError::Layout { .. } => "registry_layout",
        }
    }

    /// True when the version's content itself is at fault (too large, not
    /// an mlwatch artifact's layout): trying it again cannot help until the
    /// URI points elsewhere. Everything else may pass (a server down, a
    /// version still registering) and is tried again on the next poll.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            RegistryError::Layout { .. }
                | RegistryError::Mlflow {
                    source: MlflowError::TooLarge { .. },
                    ..
                }
        )
    }
}

/// A version's artifact, downloaded.
#[derive(Debug)]
pub struct Download {
    /// The artifact's file name inside the version (`model.json`).
    pub file: String,
    pub bytes: Vec<u8>,
}

/// The registry as the service reads it: one model URI on one server.
pub struct Registry {
    client: Client,
    uri: ModelUri,
    /// The largest artifact downloaded.
    max_bytes: u64,
}

impl Registry {
    pub fn new(client: Client, uri: ModelUri, max_bytes: u64) -> Self {
        Self {
            client,
            uri,
            max_bytes,
        }
    }

    pub fn uri(&self) -> &ModelUri {
        &self.uri
    }

    fn error(&self, source: MlflowError) -> RegistryError {
        RegistryError::Mlflow {
            uri: self.uri.to_string(),
            source,
        }
    }

    /// The version the URI points at now.
    pub async fn resolve(&self) -> Result<ModelVersion, RegistryError> {
        let name = &self.uri.name;
        match &self.uri.reference {
            Reference::Alias(alias) => self.client.model_version_by_alias(name, alias).await,
            Reference::Version(version) => self.client.model_version(name, version).await,
        }
        .map_err(|e| self.error(e))
    }

    /// The mlwatch artifact of `version`: the one JSON file of the
    /// version's directory (`mlwatch train` registers `<run>/model`, which
    /// holds it), or the file a version's source names directly.
    pub async fn download(&self, version: &ModelVersion) -> Result<Download, RegistryError> {
        let layout = |detail: String| RegistryError::Layout {
            uri: self.uri.to_string(),
            version: version.version.clone(),
            detail,
        };
        if version.status != "READY" {
            return Err(RegistryError::NotReady {
                uri: self.uri.to_string(),
                version: version.version.clone(),
                status: if version.status.is_empty() {
                    "of unknown status".into()
                } else {
                    version.status.clone()
                },
            });
        }
        let location = self
            .client
            .model_version_download_uri(&version.name, &version.version)
            .await
            .map_err(|e| self.error(e))?;
        let root = client::proxied_artifact_path(&location).ok_or_else(|| {
            layout(format!(
                "its files are at {location}, which the tracking server does not serve through \
                 its artifact proxy (mlwatch downloads through `mlflow server --serve-artifacts` \
                 only)"
            ))
        })?;
        let entries = self
            .client
            .list_proxied_artifacts(&root)
            .await
            .map_err(|e| self.error(e))?;
        let (path, file, size) = if entries.is_empty() {
            // A file (or nothing: the download then says so).
            let file = root.rsplit('/').next().unwrap_or(&root).to_owned();
            (root.clone(), file, None)
        } else {
            let mut json: Vec<_> = entries
                .iter()
                .filter(|e| !e.is_dir && e.name.ends_with(".json"))
                .collect();
            match json.len() {
                1 => {
                    let entry = json.remove(0);
                    (
                        format!("{root}/{}", entry.name),
                        entry.name.clone(),
                        entry.size,
                    )
                }
                0 => {
                    return Err(layout(format!(
                        "{location} holds no .json file; register the directory `mlwatch train` \
                         uploaded the artifact to"
                    )))
                }
                n => {
                    return Err(layout(format!(
                        "{location} holds {n} .json files; the version must hold one mlwatch \
                         artifact"
                    )))
                }
            }
        };
        if size.is_some_and(|s| s > self.max_bytes) {
            return Err(self.error(MlflowError::TooLarge {
                operation: client::Operation::DownloadModel,
                limit: self.max_bytes,
            }));
        }
        let bytes = self
            .client
            .download_proxied_artifact(&path, self.max_bytes)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Download { file, bytes })
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("uri", &self.uri.to_string())
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_name_an_alias_or_a_version() {
        let uri: ModelUri = "models:/wine-quality@champion".parse().unwrap();
        assert_eq!(uri.name, "wine-quality");
        assert_eq!(uri.reference, Reference::Alias("champion".into()));
        assert_eq!(uri.to_string(), "models:/wine-quality@champion");
        let uri: ModelUri = "models:/wine/12".parse().unwrap();
        assert_eq!(uri.reference, Reference::Version("12".into()));
        assert_eq!(uri.alias(), None);
        assert_eq!(uri.to_string(), "models:/wine/12");
    }

    #[test]
    fn malformed_model_uris_are_refused_with_the_expected_form() {
        for bad in [
            "wine@champion",
            "models:/wine",
            "models:/@champion",
            "models:/wine@",
            "models:/wine@cham pion",
            "models:/wine/Production",
            "models:/wine/latest",
            "models:/wine/0",
            "models:/wine/",
            "models://3",
            "models:/a/b/3",
            "runs:/abc/model",
        ] {
            let error = bad.parse::<ModelUri>().unwrap_err();
            assert!(error.contains("models:/NAME@ALIAS"), "{bad}: {error}");
        }
        let long = format!("models:/{}@a", "n".repeat(MAX_NAME_CHARS + 1));
        assert!(long.parse::<ModelUri>().is_err());
    }

    #[test]
    fn only_content_faults_are_permanent() {
        let uri = "models:/m@a".to_owned();
        let transport = RegistryError::Mlflow {
            uri: uri.clone(),
            source: MlflowError::Transport {
                operation: client::Operation::ResolveModel,
                detail: "refused".into(),
            },
        };
        assert_eq!(transport.kind(), "registry_unreachable");
        assert!(!transport.is_permanent());
        let missing_alias = RegistryError::Mlflow {
            uri: uri.clone(),
            source: MlflowError::Api {
                operation: client::Operation::ResolveModel,
                status: 400,
                code: "INVALID_PARAMETER_VALUE".into(),
                message: "Registered model alias a not found.".into(),
            },
        };
        assert_eq!(missing_alias.kind(), "registry_not_found");
        assert!(!missing_alias.is_permanent());
        let too_large = RegistryError::Mlflow {
            uri: uri.clone(),
            source: MlflowError::TooLarge {
                operation: client::Operation::DownloadModel,
                limit: 10,
            },
        };
        assert_eq!(too_large.kind(), "too_large");
        assert!(too_large.is_permanent());
        let layout = RegistryError::Layout {
            uri,
            version: "3".into(),
            detail: "no json".into(),
        };
        assert!(layout.is_permanent());
    }
}
