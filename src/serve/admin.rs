//! What the admin token guards: the two ways to reload the model without a
//! restart (`POST /admin/reload` with a bearer token, and SIGHUP), and
//! `GET /model`, whose training reference describes the training data.
//!
//! The token comes from `--admin-token-file` (preferred: it stays out of the
//! process list and the environment) or `--admin-token`. With neither, the
//! reload endpoint answers 404 "admin endpoint disabled" and `/model` is
//! open. A missing or wrong token is a 401, counted in
//! `admin_unauthorized_requests_total`; the comparison takes the same time
//! wherever the tokens differ.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use poem::http::{header, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde_json::json;

use super::bad_input::{BadInput, InputError};
use super::loaded::Store;
use super::metrics::ServiceMetrics;
use super::state::{LoadError, Reloaded, Trigger};
use super::status;
use super::{json_response, post_only};

/// The configured admin token, if any.
pub fn load_token(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match (token, file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("--admin-token and --admin-token-file are mutually exclusive; set one")
        }
        (Some(token), None) => token.to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the admin token file {}", file.display()))?,
        (None, None) => return Ok(None),
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!(
            "the admin token is empty; set a non-empty token or leave both token options unset"
        );
    }
    Ok(Some(token.to_owned()))
}

pub struct ReloadEndpoint {
    pub token: Option<String>,
    pub store: Arc<Store>,
    pub metrics: Arc<ServiceMetrics>,
}

/// Reloads the model and counts the attempt in `model_reloads_total`.
pub async fn reload(
    store: &Store,
    metrics: &ServiceMetrics,
    trigger: Trigger,
) -> Result<Reloaded, LoadError> {
    let result = store.reload(trigger).await;
    metrics.reload(result.is_ok());
    result
}

impl Endpoint for ReloadEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // The method first, enabled or not: a GET is a 405 like on every
        // other route (one HTTP series per route for refused methods).
        if req.method() != Method::POST {
            return Ok(post_only(
                InputError::new(BadInput::MethodNotAllowed)
                    .field("method")
                    .expected("POST"),
            ));
        }
        let Some(token) = &self.token else {
            return Ok(json_response(
                StatusCode::NOT_FOUND,
                json!({
                    "error": "admin endpoint disabled",
                    "detail": "start the service with --admin-token-file (or --admin-token) to enable POST /admin/reload",
                })
                .to_string(),
            ));
        };
        if let Some(refusal) = refusal(&req, token, &self.metrics, "POST /admin/reload") {
            return Ok(refusal);
        }
        Ok(match reload(&self.store, &self.metrics, Trigger::Admin).await {
            Ok(reloaded) => {
                let mut body = json!({
                    "result": "success",
                    "model_version": reloaded.model_version,
                    "previous_model_version": reloaded.previous_version,
                    "changed": reloaded.changed,
                });
                // Only with --model-uri: a file reload answers as it did.
                if let Some(version) = reloaded.registry_version {
                    body["registry_version"] = json!(version);
                }
                json_response(StatusCode::OK, body.to_string())
            }
            Err(e) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({
                    "result": "failure",
                    "error": "reload failed",
                    "kind": e.kind(),
                    "detail": e.to_string(),
                    "model_version": self.store.model().map(|m| m.artifact.model_version.clone()),
                })
                .to_string(),
            ),
        })
    }
}

/// `GET /model`, which only the admin token may read when one is
/// configured: its training reference (per-feature moments, range and
/// deciles) describes the training data. Without a token it is open, as
/// `/ready` is, so that `mlwatch load` needs no secret on a service that
/// has none.
pub struct ModelEndpoint {
    pub token: Option<String>,
    pub store: Arc<Store>,
    pub metrics: Arc<ServiceMetrics>,
}

impl Endpoint for ModelEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if let Some(token) = &self.token {
            if let Some(refusal) = refusal(&req, token, &self.metrics, "GET /model") {
                return Ok(refusal);
            }
        }
        Ok(status::model(&self.store))
    }
}

/// `None` when the request carries the admin token; otherwise the 401 to
/// answer, counted and logged (the log names `what` and the problem, never
/// what was sent).
fn refusal(req: &Request, token: &str, metrics: &ServiceMetrics, what: &str) -> Option<Response> {
    let Err(problem) = authorize(req, token) else {
        return None;
    };
    metrics.unauthorized();
    tracing::warn!("{what} refused: {problem}");
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": "unauthorized", "detail": problem}).to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Checks `Authorization: Bearer <token>`; the error says what was wrong
/// without echoing what was sent.
fn authorize(req: &Request, token: &str) -> Result<(), &'static str> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or("missing Authorization header")?;
    let value = header
        .to_str()
        .map_err(|_| "Authorization header is not ASCII")?;
    let (scheme, presented) = value
        .split_once(' ')
        .ok_or("Authorization header is not 'Bearer <token>'")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("Authorization scheme is not Bearer");
    }
    if constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err("wrong bearer token")
    }
}

/// Equality whose time depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SIGHUP, listened for from [`Hangups::listen`] on: a SIGHUP that arrives
/// before [`Hangups::reload_on_each`] starts is kept and acted on then.
pub struct Hangups {
    #[cfg(unix)]
    signals: tokio::signal::unix::Signal,
}

impl Hangups {
    pub fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            signals: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot listen for SIGHUP")?,
        })
    }

    /// Reloads the model on every SIGHUP until the task is aborted.
    pub fn reload_on_each(
        self,
        store: Arc<Store>,
        metrics: Arc<ServiceMetrics>,
    ) -> tokio::task::JoinHandle<()> {
        #[cfg(unix)]
        let mut signals = self.signals;
        tokio::spawn(async move {
            #[cfg(unix)]
            while signals.recv().await.is_some() {
                tracing::info!("SIGHUP received, reloading {}", store.source());
                // The outcome is logged and counted by the store.
                let _ = reload(&store, &metrics, Trigger::Hangup).await;
            }
            #[cfg(not(unix))]
            drop((store, metrics));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comes_from_one_source_and_is_trimmed() {
        assert_eq!(load_token(None, None).unwrap(), None);
        assert_eq!(
            load_token(Some(" s3cret\n"), None).unwrap().as_deref(),
            Some("s3cret")
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-file\n").unwrap();
        assert_eq!(
            load_token(None, Some(file.path())).unwrap().as_deref(),
            Some("from-file")
        );
        assert!(load_token(Some("a"), Some(file.path())).is_err());
        assert!(load_token(Some("  "), None).is_err());
        assert!(load_token(None, Some(Path::new("/nonexistent/token"))).is_err());
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let request = |value: Option<&str>| {
            let mut builder = Request::builder();
            if let Some(v) = value {
                builder = builder.header(header::AUTHORIZATION, v);
            }
            builder.finish()
        };
        assert_eq!(authorize(&request(Some("Bearer s3cret")), "s3cret"), Ok(()));
        assert_eq!(authorize(&request(Some("bearer s3cret")), "s3cret"), Ok(()));
        assert!(authorize(&request(None), "s3cret").is_err());
        assert!(authorize(&request(Some("Bearer s3cre")), "s3cret").is_err());
        assert!(authorize(&request(Some("Basic s3cret")), "s3cret").is_err());
        assert!(authorize(&request(Some("s3cret")), "s3cret").is_err());
    }
}
