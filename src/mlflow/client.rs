//! A small client for MLflow's documented REST API (the `/api/2.0/mlflow`
//! tracking and registry endpoints and the `/api/2.0/mlflow-artifacts`
//! artifact proxy), over reqwest. Every call has a timeout and a bounded
//! number of retries for failures that may pass (connection errors, 5xx,
//! 429); MLflow's own errors (4xx with an `error_code`) are returned as they
//! are, never retried.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value};

use super::batch::Batch;

/// Attempts per call, including the first.
const ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled before each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The largest tracking-API answer read: the answers to the calls made
/// here are a few KiB.
const API_RESPONSE_LIMIT: u64 = 4 * 1024 * 1024;

/// Credentials, from MLflow's own environment variables.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// `MLFLOW_TRACKING_TOKEN`
    Bearer(String),
    /// `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`
    Basic(String, String),
}

impl Auth {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        if let Some(token) = var("MLFLOW_TRACKING_TOKEN") {
            Auth::Bearer(token)
        } else if let Some(user) = var("MLFLOW_TRACKING_USERNAME") {
            Auth::Basic(user, var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default())
        } else {
            Auth::None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    #[error("{operation}: cannot reach the tracking server: {detail}")]
    Transport {
        operation: Operation,
        detail: String,
    },
    #[error("{operation}: HTTP {status} {code}: {message}")]
    Api {
        operation: Operation,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{operation}: {detail}")]
    Protocol {
        operation: Operation,
        detail: String,
    },
    #[error("{operation}: the response is larger than {limit} bytes")]
    TooLarge { operation: Operation, limit: u64 },
}

impl MlflowError {
    fn retryable(&self) -> bool {
        match self {
            MlflowError::Transport { .. } => true,
            MlflowError::Api { status, .. } => *status >= 500 || *status == 429,
            MlflowError::Protocol { .. } | MlflowError::TooLarge { .. } => false,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            MlflowError::Transport { operation, .. }
            | MlflowError::Api { operation, .. }
            | MlflowError::Protocol { operation, .. }
            | MlflowError::TooLarge { operation, .. } => *operation,
        }
    }

    /// MLflow's `error_code` (`RESOURCE_ALREADY_EXISTS`, ...), if any.
    pub fn code(&self) -> Option<&str> {
        match self {
            MlflowError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What a call was for: the trainer's operations ([`Operation::ALL`]) are
/// the `operation` label of `training_mlflow_errors_total`, a small fixed
/// set; the service's registry reads name themselves in errors only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `experiments/get-by-name`, `experiments/create`
    Experiment,
    /// `runs/create`
    CreateRun,
    /// `runs/log-batch`
    LogBatch,
    /// `runs/update`
    UpdateRun,
    /// `PUT mlflow-artifacts/artifacts/...`
    UploadArtifact,
    /// `registered-models/create`, `model-versions/create`,
    /// `registered-models/alias` (set)
    RegisterModel,
    /// The service: `registered-models/alias` (get), `model-versions/get`,
    /// `model-versions/get-download-uri`
    ResolveModel,
    /// The service: listing and downloading a version's artifact
    DownloadModel,
}

impl Operation {
    /// The trainer's operations (the service's are not counted there).
    pub const ALL: [Operation; 6] = [
        Operation::Experiment,
        Operation::CreateRun,
        Operation::LogBatch,
        Operation::UpdateRun,
        Operation::UploadArtifact,
        Operation::RegisterModel,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Operation::Experiment => "experiment",
            Operation::CreateRun => "create_run",
            Operation::LogBatch => "log_batch",
            Operation::UpdateRun => "update_run",
            Operation::UploadArtifact => "upload_artifact",
            Operation::RegisterModel => "register_model",
            Operation::ResolveModel => "resolve_model",
            Operation::DownloadModel => "download_model",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Experiment => "experiment lookup",
            Operation::CreateRun => "runs/create",
            Operation::LogBatch => "runs/log-batch",
            Operation::UpdateRun => "runs/update",
            Operation::UploadArtifact => "artifact upload",
            Operation::RegisterModel => "model registration",
            Operation::ResolveModel => "model version lookup",
            Operation::DownloadModel => "model download",
        })
    }
}

/// A run as `runs/create` returns it.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub experiment_id: String,
    pub artifact_uri: String,
}

/// Run states of MLflow's `RunStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The tracking URI with a trailing slash, so that joins keep its path.
    base: Url,
    auth: Auth,
}

impl Client {
    /// `tracking_uri` must be an http:// URL (this build has no TLS).
    pub fn new(tracking_uri: &Url, auth: Auth, timeout: Duration) -> Result<Self, String> {
        if tracking_uri.scheme() != "http" {
            return Err(format!(
                "MLflow tracking URI {} is not supported: mlwatch speaks plain http:// to the \
                 tracking server (this build has no TLS client; reach an https server \
                 through a local proxy)",
                redacted(tracking_uri)
            ));
        }
        let mut base = tracking_uri.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { http, base, auth })
    }

    fn url(&self, operation: Operation, path: &str) -> Result<Url, MlflowError> {
        self.base.join(path).map_err(|e| MlflowError::Protocol {
            operation,
            detail: format!("cannot build a URL for {path}: {e}"),
        })
    }

    /// One tracking-API call with retries. `body` is JSON for the tracking
    /// API, raw bytes for artifact uploads; the answer is JSON.
    async fn call(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Body<'_>,
    ) -> Result<Value, MlflowError> {
        let bytes = self
            .call_raw(operation, method, url, body, API_RESPONSE_LIMIT)
            .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| MlflowError::Protocol {
            operation,
            detail: format!("a success answer whose body is not JSON ({e})"),
        })
    }

    /// One call with retries; the answer's body as bytes, at most `limit`
    /// of them.
    async fn call_raw(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: Body<'_>,
        limit: u64,
    ) -> Result<Vec<u8>, MlflowError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self
                .once(operation, method.clone(), url.clone(), &body, limit)
                .await
            {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    tracing::debug!("MLflow {operation} attempt {attempt} failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn once(
        &self,
        operation: Operation,
        method: Method,
        url: Url,
        body: &Body<'_>,
        limit: u64,
    ) -> Result<Vec<u8>, MlflowError> {
        let mut request = self.http.request(method, url);
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
        };
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Bytes(bytes) => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.to_vec()),
        };
        let transport = |e: reqwest::Error| MlflowError::Transport {
            operation,
            // Without the URL: it may carry credentials.
            detail: e.without_url().to_string(),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let too_large = MlflowError::TooLarge { operation, limit };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large);
        }
        // Read chunk by chunk: a server (or what answers in its place) that
        // sends more than it announced, or announces nothing, is cut off at
        // the limit instead of filling the memory.
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large);
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(bytes);
        }
        Err(api_error(
            operation,
            status,
            &String::from_utf8_lossy(&bytes),
        ))
    }

    /// The id of the experiment called `name`, if it exists.
    async fn experiment_id_by_name(&self, name: &str) -> Result<Option<String>, MlflowError> {
        const OP: Operation = Operation::Experiment;
        let mut url = self.url(OP, "api/2.0/mlflow/experiments/get-by-name")?;
        url.query_pairs_mut().append_pair("experiment_name", name);
        match self.call(OP, Method::GET, url, Body::None).await {
            Ok(value) => string_at(OP, &value, "/experiment/experiment_id").map(Some),
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create_experiment(&self, name: &str) -> Result<String, MlflowError> {
        const OP: Operation = Operation::Experiment;
        let url = self.url(OP, "api/2.0/mlflow/experiments/create")?;
        let value = self
            .call(OP, Method::POST, url, Body::Json(json!({ "name": name })))
            .await?;
        string_at(OP, &value, "/experiment_id")
    }

    /// The experiment's id, creating it when missing (and tolerating another
    /// trainer creating it at the same moment).
    pub async fn ensure_experiment(&self, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self.experiment_id_by_name(name).await? {
            return Ok(id);
        }
        match self.create_experiment(name).await {
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => {
                self.experiment_id_by_name(name).await?.ok_or(e)
            }
            outcome => outcome,
        }
    }

    pub async fn create_run(
        &self,
        experiment_id: &str,
        start_time_ms: i64,
        tags: &[(String, String)],
    ) -> Result<RunInfo, MlflowError> {
        const OP: Operation = Operation::CreateRun;
        let url = self.url(OP, "api/2.0/mlflow/runs/create")?;
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let body = json!({
            "experiment_id": experiment_id,
            "start_time": start_time_ms,
            "tags": tags,
        });
        let value = self.call(OP, Method::POST, url, Body::Json(body)).await?;
        Ok(RunInfo {
            run_id: string_at(OP, &value, "/run/info/run_id")?,
            experiment_id: string_at(OP, &value, "/run/info/experiment_id")?,
            artifact_uri: string_at(OP, &value, "/run/info/artifact_uri")?,
        })
    }

    /// One `runs/log-batch` request; [`Batch`] keeps it within the limits.
    pub async fn log_batch(&self, run_id: &str, batch: &Batch) -> Result<(), MlflowError> {
        const OP: Operation = Operation::LogBatch;
        let url = self.url(OP, "api/2.0/mlflow/runs/log-batch")?;
        self.call(OP, Method::POST, url, Body::Json(batch.to_json(run_id)))
            .await
            .map(drop)
    }

    pub async fn update_run(
        &self,
        run_id: &str,
        status: RunStatus,
        end_time_ms: i64,
    ) -> Result<(), MlflowError> {
        const OP: Operation = Operation::UpdateRun;
        let url = self.url(OP, "api/2.0/mlflow/runs/update")?;
        let body = json!({"run_id": run_id, "status": status.as_str(), "end_time": end_time_ms});
        self.call(OP, Method::POST, url, Body::Json(body))
            .await
            .map(drop)
    }

    /// Uploads `bytes` as `<run artifacts>/<path>` through the server's
    /// artifact proxy (`mlflow server --serve-artifacts`).
    pub async fn upload_artifact(
        &self,
        artifact_uri: &str,
        path: &str,
        bytes: &[u8],
    ) -> Result<(), MlflowError> {
        const OP: Operation = Operation::UploadArtifact;
        let root = proxied_artifact_path(artifact_uri).ok_or_else(|| MlflowError::Protocol {
            operation: OP,
            detail: format!(
                "the run's artifact location {artifact_uri} is not served by the tracking \
                 server's artifact proxy; start the server with --serve-artifacts"
            ),
        })?;
        let url = self.url(
            OP,
            &format!("api/2.0/mlflow-artifacts/artifacts/{root}/{path}"),
        )?;
        self.call(OP, Method::PUT, url, Body::Bytes(bytes))
            .await
            .map(drop)
    }

    /// Creates the registered model; one that exists already is fine.
    pub async fn create_registered_model(&self, name: &str) -> Result<(), MlflowError> {
        const OP: Operation = Operation::RegisterModel;
        let url = self.url(OP, "api/2.0/mlflow/registered-models/create")?;
        match self
            .call(OP, Method::POST, url, Body::Json(json!({"name": name})))
            .await
        {
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            outcome => outcome.map(drop),
        }
    }

    /// A new version of `name` whose source is `source`; returns its number.
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: &str,
    ) -> Result<String, MlflowError> {
        const OP: Operation = Operation::RegisterModel;
        let url = self.url(OP, "api/2.0/mlflow/model-versions/create")?;
        let body = json!({"name": name, "source": source, "run_id": run_id});
        let value = self.call(OP, Method::POST, url, Body::Json(body)).await?;
        string_at(OP, &value, "/model_version/version")
    }
    /// Points `alias` of registered model `name` at `version` (an alias
    /// that points elsewhere is moved).
    pub async fn set_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), MlflowError> {
        const OP: Operation = Operation::RegisterModel;
        let url = self.url(OP, "api/2.0/mlflow/registered-models/alias")?;
        let body = json!({"name": name, "alias": alias, "version": version});
        self.call(OP, Method::POST, url, Body::Json(body))
            .await
            .map(drop)
    }

    /// The version that `alias` of registered model `name` points at.
    pub async fn model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion, MlflowError> {
        const OP: Operation = Operation::ResolveModel;
        let mut url = self.url(OP, "api/2.0/mlflow/registered-models/alias")?;
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("alias", alias);
        let value = self.call(OP, Method::GET, url, Body::None).await?;
        ModelVersion::from_answer(OP, &value)
    }

    /// Version `version` of registered model `name`.
    pub async fn model_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, MlflowError> {
        const OP: Operation = Operation::ResolveModel;
        let mut url = self.url(OP, "api/2.0/mlflow/model-versions/get")?;
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("version", version);
        let value = self.call(OP, Method::GET, url, Body::None).await?;
        ModelVersion::from_answer(OP, &value)
    }

    /// Where a version's files are read from (its storage location, else
    /// its source).
    pub async fn model_version_download_uri(
        &self,
        name: &str,
        version: &str,
    ) -> Result<String, MlflowError> {
        const OP: Operation = Operation::ResolveModel;
        let mut url = self.url(OP, "api/2.0/mlflow/model-versions/get-download-uri")?;
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("version", version);
        let value = self.call(OP, Method::GET, url, Body::None).await?;
        string_at(OP, &value, "/artifact_uri")
    }

    /// The entries directly under `path` (relative to the artifact proxy's
    /// root); none for a file or a path that does not exist.
    pub async fn list_proxied_artifacts(
        &self,
        path: &str,
    ) -> Result<Vec<ArtifactFile>, MlflowError> {
        const OP: Operation = Operation::DownloadModel;
        let mut url = self.url(OP, "api/2.0/mlflow-artifacts/artifacts")?;
        url.query_pairs_mut().append_pair("path", path);
        let value = self.call(OP, Method::GET, url, Body::None).await?;
        let Some(files) = value.get("files") else {
            return Ok(Vec::new());
        };
        let files = files.as_array().ok_or_else(|| MlflowError::Protocol {
            operation: OP,
            detail: "the listing's files is not an array".into(),
        })?;
        files
            .iter()
            .map(|file| {
                Ok(ArtifactFile {
                    name: string_at(OP, file, "/path")?,
                    is_dir: file.get("is_dir").and_then(Value::as_bool).unwrap_or(false),
                    // MLflow's JSON writes int64 as a string or a number.
                    size: file.get("file_size").and_then(|v| {
                        v.as_u64()
                            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    }),
                })
            })
            .collect()
    }

    /// The bytes of the file at `path` (relative to the artifact proxy's
    /// root), refused once they pass `limit`.
    pub async fn download_proxied_artifact(
        &self,
        path: &str,
        limit: u64,
    ) -> Result<Vec<u8>, MlflowError> {
        const OP: Operation = Operation::DownloadModel;
        let mut url = self.url(OP, "api/2.0/mlflow-artifacts/artifacts")?;
        url.path_segments_mut()
            .map_err(|()| MlflowError::Protocol {
                operation: OP,
                detail: "the tracking URI cannot have a path".into(),
            })?
            .extend(path.split('/').filter(|s| !s.is_empty()));
        self.call_raw(OP, Method::GET, url, Body::None, limit).await
    }
}

/// A registered model's version, as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    pub source: String,
    /// Empty when the version was registered without a run.
    pub run_id: String,
    /// `READY`, `PENDING_REGISTRATION` or `FAILED_REGISTRATION`.
    pub status: String,
}

impl ModelVersion {
    fn from_answer(operation: Operation, value: &Value) -> Result<Self, MlflowError> {
        let optional = |pointer: &str| {
            value
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(Self {
            name: string_at(operation, value, "/model_version/name")?,
            version: string_at(operation, value, "/model_version/version")?,
            source: optional("/model_version/source"),
            run_id: optional("/model_version/run_id"),
            // Missing counts as not READY: only a READY version is served.
            status: optional("/model_version/status"),
        })
    }
}

/// One entry of an artifact listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactFile {
    /// The entry's name (no directory part).
    pub name: String,
    pub is_dir: bool,
    pub size: Option<u64>,
}

enum Body<'a> {
    None,
    Json(Value),
    Bytes(&'a [u8]),
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<String>,
    message: Option<String>,
}

fn api_error(operation: Operation, status: StatusCode, text: &str) -> MlflowError {
    let parsed: Option<ErrorBody> = serde_json::from_str(text).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.error_code.clone())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
    let message = parsed.and_then(|b| b.message).unwrap_or_else(|| {
        // A proxy's HTML error page: keep the log line short.
        text.chars().take(200).collect()
    });
    MlflowError::Api {
        operation,
        status: status.as_u16(),
        code,
        message: message.lines().next().unwrap_or("").to_owned(),
    }
}

fn string_at(operation: Operation, value: &Value, pointer: &str) -> Result<String, MlflowError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| MlflowError::Protocol {
            operation,
            detail: format!("the response has no string at {pointer}"),
        })
}

/// The path under the proxy's root of an `mlflow-artifacts:` URI, in either
/// form the server hands out (`mlflow-artifacts:/1/<run>/artifacts` or
/// `mlflow-artifacts://host:port/1/<run>/artifacts`).
pub(crate) fn proxied_artifact_path(artifact_uri: &str) -> Option<String> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => &authority_and_path[authority_and_path.find('/')?..],
        None => rest,
    };
    let path = path.trim_matches('/');
    (!path.is_empty()).then(|| path.to_owned())
}

/// The URI without user name or password, for logs and the artifact.
pub fn redacted(uri: &Url) -> String {
    let mut clean = uri.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.to_string().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_proxy_paths_in_both_uri_forms() {
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts:/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            proxied_artifact_path("mlflow-artifacts://mlflow:5000/1/abc/artifacts/").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(proxied_artifact_path("file:///srv/mlruns/1/abc"), None);
        assert_eq!(proxied_artifact_path("s3://bucket/1/abc"), None);
        assert_eq!(proxied_artifact_path("mlflow-artifacts:/"), None);
    }

    #[test]
    fn credentials_never_reach_logs_or_artifacts() {
        let url = Url::parse("http://alice:secret@mlflow.internal:5000/").unwrap();
        assert_eq!(redacted(&url), "http://mlflow.internal:5000");
    }

    #[test]
    fn only_plain_http_is_accepted() {
        let https = Url::parse("https://mlflow.example").unwrap();
        let error = Client::new(&https, Auth::None, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(error.contains("http://"), "{error}");
        let http = Url::parse("http://127.0.0.1:5000/prefix").unwrap();
        let client = Client::new(&http, Auth::None, Duration::from_secs(1)).unwrap();
        assert_eq!(
            client
                .url(Operation::LogBatch, "api/2.0/mlflow/runs/create")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:5000/prefix/api/2.0/mlflow/runs/create"
        );
    }

    /// A server that answers one request with `head` and then `body_bytes`
    /// bytes of `x` (chunked, so no length announces them).
    async fn answering(head: &'static str, body_bytes: usize) -> Url {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = body_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                if socket.write_all(&framed).await.is_err() {
                    return; // the client stopped reading: what the test wants
                }
                left -= n;
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        Url::parse(&format!("http://{address}/")).unwrap()
    }

    #[tokio::test]
    async fn answers_are_read_within_their_limit() {
        const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        // A download larger than its limit, with no length announced.
        let url = answering(CHUNKED, 8 * 1024 * 1024).await;
        let client = Client::new(&url, Auth::None, Duration::from_secs(10)).unwrap();
        let error = client
            .download_proxied_artifact("1/run/artifacts/model/model.json", 100_000)
            .await
            .unwrap_err();
        assert!(
            matches!(error, MlflowError::TooLarge { limit: 100_000, .. }),
            "{error}"
        );
        // An API answer larger than API_RESPONSE_LIMIT.
        let url = answering(CHUNKED, API_RESPONSE_LIMIT as usize + 1).await;
        let client = Client::new(&url, Auth::None, Duration::from_secs(10)).unwrap();
        let error = client.model_version("m", "1").await.unwrap_err();
        assert!(matches!(error, MlflowError::TooLarge { .. }), "{error}");
        // An announced length over the limit is refused before reading.
        let url = answering("HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n", 0).await;
        let client = Client::new(&url, Auth::None, Duration::from_secs(10)).unwrap();
        let error = client
            .download_proxied_artifact("a/b.json", 1000)
            .await
            .unwrap_err();
        assert!(
            matches!(error, MlflowError::TooLarge { limit: 1000, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_malformed_registry_answer_is_an_error_not_a_panic() {
        let url = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            3,
        )
        .await;
        let client = Client::new(&url, Auth::None, Duration::from_secs(10)).unwrap();
        let error = client.model_version_by_alias("m", "a").await.unwrap_err();
        assert!(matches!(error, MlflowError::Protocol { .. }), "{error}");
    }

    #[test]
    fn mlflow_error_bodies_keep_their_code() {
        let e = api_error(
            Operation::CreateRun,
            StatusCode::NOT_FOUND,
            r#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such thing\nmore"}"#,
        );
        assert_eq!(e.code(), Some("RESOURCE_DOES_NOT_EXIST"));
        assert!(!e.retryable());
        assert_eq!(
            e.to_string(),
            "runs/create: HTTP 404 RESOURCE_DOES_NOT_EXIST: no such thing"
        );
        let e = api_error(
            Operation::LogBatch,
            StatusCode::BAD_GATEWAY,
            "<html>bad gateway</html>",
        );
        assert!(e.retryable());
        assert_eq!(e.code(), Some("Bad Gateway"));
    }
}
