//! What the load generator learns about the service before sending: the
//! model's features from `GET /model`, and the training reference (moments,
//! range and decile bins per feature) that valid and drifted values are
//! drawn from.
//!
//! The reference comes from the artifact named by `--artifact`, or else
//! from `/model` itself (the loaded artifact's reference); older services
//! that reported the artifact's `path` instead are still read from it when
//! that file is readable here and is the version the service has loaded.
//!
//! A service started with an admin token answers `/model` only to that
//! token ([`AdminToken`], from `--admin-token-file` like the service's).

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::traffic::{FeatureStats, Profile};
use crate::model::{Artifact, DriftReference};

/// The parts of the `GET /model` answer the generator uses.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelInfo {
    pub model_version: String,
    #[serde(default)]
    pub task: Option<String>,
    pub features: Vec<String>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// The data set the model was trained on (the feedback phase's rows).
    #[serde(default)]
    pub dataset: Option<String>,
    /// The artifact's seed, which also split its validation rows.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The loaded artifact's training reference.
    #[serde(default)]
    pub reference: Option<DriftReference>,
    /// The artifact path, from services that still reported it.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// Where the reference came from, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceSource {
    Artifact(PathBuf),
    Service,
    ServicePath(PathBuf),
}

impl std::fmt::Display for ReferenceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferenceSource::Artifact(p) => write!(f, "--artifact {}", p.display()),
            ReferenceSource::Service => f.write_str("GET /model (the service's artifact)"),
            ReferenceSource::ServicePath(p) => {
                write!(f, "{} (the service's artifact)", p.display())
            }
        }
    }
}

/// The service's admin token, sent as a bearer token with `GET /model`.
/// Its `Debug` does not show it, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Fetches `GET {target}/model`, with the admin token when there is one.
pub async fn model_info(
    client: &reqwest::Client,
    target: &str,
    token: Option<&AdminToken>,
) -> anyhow::Result<ModelInfo> {
    let url = format!("{target}/model");
    let mut request = client.get(&url);
    if let Some(AdminToken(token)) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the service at {url}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "GET {url} answered 401: the service was started with an admin token and serves /model only with it; {}",
            if token.is_some() {
                "the token given (--admin-token-file) is not the service's"
            } else {
                "pass --admin-token-file FILE (or MLWATCH_ADMIN_TOKEN_FILE) with the service's token"
            }
        );
    }
    anyhow::ensure!(
        status.is_success(),
        "GET {url} answered {status}: {}; the service needs a loaded model before load can be sent",
        body.chars().take(300).collect::<String>()
    );
    let info: ModelInfo = serde_json::from_str(&body)
        .with_context(|| format!("GET {url} did not answer a model description"))?;
    anyhow::ensure!(!info.features.is_empty(), "GET {url} lists no features");
    Ok(info)
}

/// The profile to generate traffic for: `/model`'s features with a
/// reference from the first source that has one (see the module doc).
pub fn profile(
    info: &ModelInfo,
    artifact: Option<&Path>,
) -> anyhow::Result<(Profile, ReferenceSource)> {
    let build = |(stats, bins): (Vec<FeatureStats>, Vec<Option<crate::model::BinReference>>),
                 source: ReferenceSource| {
        let stats = stats
            .into_iter()
            .zip(&info.features)
            .map(|(s, name)| s.checked(name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            Profile {
                model_version: info.model_version.clone(),
                feature_names: info.features.clone(),
                stats,
                bins,
            },
            source,
        ))
    };
    if let Some(path) = artifact {
        let loaded = Artifact::load(path)?;
        anyhow::ensure!(
            loaded.feature_names == info.features,
            "--artifact {} has features {:?}, the service's model {:?}",
            path.display(),
            loaded.feature_names,
            info.features
        );
        if loaded.model_version != info.model_version {
            tracing::warn!(
                artifact = %path.display(),
                artifact_version = %loaded.model_version,
                service_version = %info.model_version,
                "--artifact is not the model the service has loaded; using its reference anyway (same features)"
            );
        }
        return build(
            reference_stats(&loaded.reference),
            ReferenceSource::Artifact(path.to_owned()),
        );
    }
    if let Some(reference) = info
        .reference
        .as_ref()
        .filter(|r| r.features.len() == info.features.len())
    {
        return build(reference_stats(reference), ReferenceSource::Service);
    }
    if let Some(path) = &info.path {
        match Artifact::load(path) {
            Ok(loaded) if loaded.model_version == info.model_version => {
                return build(
                    reference_stats(&loaded.reference),
                    ReferenceSource::ServicePath(path.clone()),
                );
            }
            Ok(loaded) => tracing::debug!(
                path = %path.display(),
                found = %loaded.model_version,
                "the artifact at the service's path is another version"
            ),
            Err(e) => tracing::debug!("the service's artifact is not readable here: {e}"),
        }
    }
    anyhow::bail!(
        "the training reference is in the model artifact, and the service's artifact{} is not readable here as version {}; pass --artifact PATH with the artifact the service loaded",
        info.path
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default(),
        info.model_version
    )
}

/// Moments and decile bins of every feature in the artifact's reference.
fn reference_stats(
    reference: &DriftReference,
) -> (Vec<FeatureStats>, Vec<Option<crate::model::BinReference>>) {
    let features = &reference.features;
    let stats = features
        .iter()
        .map(|f| FeatureStats {
            mean: f.mean,
            std: f.std,
            min: f.min,
            max: f.max,
        })
        .collect();
    (
        stats,
        features.iter().map(|f| Some(f.bins.clone())).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> ModelInfo {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn without_any_reference_the_error_asks_for_artifact() {
        let info =
            info(r#"{"model_version":"v","features":["a"],"path":"/nonexistent/model.json"}"#);
        let error = profile(&info, None).unwrap_err().to_string();
        assert!(
            error.contains("--artifact PATH") && error.contains("/nonexistent/model.json"),
            "{error}"
        );
    }

    #[test]
    fn a_debug_printed_config_never_shows_the_admin_token() {
        let mut config = crate::load::LoadConfig::new("http://127.0.0.1:9000");
        config.admin_token = Some(AdminToken::new("s3cret-token"));
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("s3cret-token") && printed.contains("AdminToken(<redacted>)"),
            "{printed}"
        );
    }

    #[test]
    fn a_missing_artifact_file_is_an_error_naming_it() {
        let info = info(r#"{"model_version":"v","features":["a"]}"#);
        let error = profile(&info, Some(Path::new("/nonexistent/a.json")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("/nonexistent/a.json"), "{error}");
    }
}
