//! The prediction service (`mlwatch serve`): a poem app that answers
//! `POST /predict` from the model artifact, exports its metrics on
//! `/metrics`, reloads the model on SIGHUP or `POST /admin/reload`, and
//! stops gracefully on SIGTERM/Ctrl-C. docs/service.md describes the API.
//!
//! [`run`] wires the parts: [`state`] holds the model, [`decode`] turns a
//! body into feature rows, [`predict`] answers, [`metrics`] and [`drift`]
//! record, [`middleware`] times every HTTP request, [`admin`] reloads,
//! [`status`] reports health and readiness.

pub mod admin;
pub mod decode;
pub mod drift;
pub mod metrics;
pub mod middleware;
pub mod predict;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::make_sync;
use poem::http::{header, StatusCode};
use poem::listener::TcpListener;
use poem::{get, EndpointExt, Response, Route, Server};
use serde_json::json;

use crate::resources::{ResourceSampler, Role};
use crate::telemetry::{exposition_response, Telemetry};
use metrics::ServiceMetrics;
use middleware::HttpMetrics;
use predict::PredictEndpoint;
use state::ModelStore;

/// The route templates of the app, as the HTTP metrics label them.
pub const ROUTES: [&str; 6] = [
    "/predict",
    "/metrics",
    "/health",
    "/ready",
    "/model",
    "/admin/reload",
];

/// How long in-flight requests get to finish after SIGTERM/Ctrl-C.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MLWATCH_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,
    /// Model artifact written by `mlwatch train`.
    #[arg(long, env = "MLWATCH_MODEL_PATH", default_value = "model.json")]
    pub model_path: PathBuf,
    /// Bearer token for POST /admin/reload (prefer --admin-token-file).
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the bearer token for POST /admin/reload.
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted batch in {"instances": [...]}.
    #[arg(long, env = "MLWATCH_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MLWATCH_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Recent inputs kept for drift (PSI) computation.
    #[arg(long, env = "MLWATCH_DRIFT_WINDOW", default_value_t = 1000)]
    pub drift_window: usize,
    /// Interval of the CPU/memory/GPU sampler.
    #[arg(long, env = "MLWATCH_SAMPLE_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Disable prediction metrics and drift tracking (benchmark baseline).
    #[arg(long)]
    pub no_instrumentation: bool,
}

/// Runs the service until SIGTERM/Ctrl-C. Only configuration errors and a
/// port that cannot be bound end it early; a missing or broken model does
/// not (the service waits, unready, for a reload).
pub async fn run(args: ServeArgs, shutdown: crate::shutdown::Shutdown) -> anyhow::Result<()> {
    for (value, flag) in [
        (args.max_batch, "--max-batch"),
        (args.max_body_bytes, "--max-body-bytes"),
        (args.drift_window, "--drift-window"),
    ] {
        anyhow::ensure!(value > 0, "{flag} must be at least 1");
    }
    let token = admin::load_token(
        args.admin_token.as_deref(),
        args.admin_token_file.as_deref(),
    )?;
    let instrumented = !args.no_instrumentation;

    let telemetry = Arc::new(Telemetry::new()?);
    let meter = telemetry.meter();
    let sampler = ResourceSampler::new(&meter, Role::App).spawn(args.sample_interval);
    let metrics = Arc::new(ServiceMetrics::new(&meter, instrumented));
    // Listen for SIGHUP before the (possibly slow) first load, so that an
    // early SIGHUP reloads rather than kills the process.
    let hangups = admin::Hangups::listen()?;
    let store =
        Arc::new(ModelStore::open(&args.model_path, args.drift_window, Arc::clone(&metrics)).await);
    let hangup = hangups.reload_on_each(Arc::clone(&store));
    metrics.observe(&store, instrumented.then_some(args.drift_window));

    let app = Route::new()
        .at(
            "/predict",
            PredictEndpoint {
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
                max_batch: args.max_batch,
                max_body_bytes: args.max_body_bytes,
            },
        )
        .at(
            "/metrics",
            get(make_sync(move |_| exposition_response(&telemetry))),
        )
        .at("/health", get(make_sync(|_| status::health())))
        .at(
            "/ready",
            get(make_sync({
                let store = Arc::clone(&store);
                move |_| status::ready(&store)
            })),
        )
        .at(
            "/model",
            get(make_sync({
                let store = Arc::clone(&store);
                move |_| status::model(&store)
            })),
        )
        .at(
            "/admin/reload",
            admin::ReloadEndpoint {
                token,
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
            },
        )
        .catch_all_error(|e| async move { error_response(e) });
    let app = if instrumented {
        app.with(HttpMetrics::new(&meter)).boxed()
    } else {
        app.boxed()
    };

    tracing::info!(
        listen = %args.listen,
        model_path = %args.model_path.display(),
        instrumented,
        drift_window = args.drift_window,
        "prediction service starting"
    );
    let served = Server::new(TcpListener::bind(args.listen))
        .run_with_graceful_shutdown(app, shutdown.requested_owned(), Some(SHUTDOWN_GRACE))
        .await;
    hangup.abort();
    sampler.abort();
    served.map_err(|e| anyhow::anyhow!("cannot serve on {}: {e}", args.listen))?;
    tracing::info!("prediction service stopped");
    Ok(())
}

/// A JSON response with the given status and body text.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

/// poem's own errors (no route matched, method not allowed on a GET route)
/// as JSON, keeping the matched route for the HTTP metrics.
fn error_response(error: poem::Error) -> Response {
    let status = error.status();
    let message = match status {
        StatusCode::NOT_FOUND => "not found".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
        _ => error.to_string(),
    };
    let mut response = json_response(status, json!({"error": message}).to_string());
    if let Some(pattern) = error.data::<poem::PathPattern>() {
        response.set_data(pattern.clone());
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    }
    response
}
