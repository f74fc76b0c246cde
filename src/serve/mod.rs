//! The prediction service (`mlwatch serve`): a poem app that answers
//! `POST /predict` from the model artifact, exports its metrics on
//! `/metrics`, reloads the model on SIGHUP or `POST /admin/reload`, and
//! stops gracefully on SIGTERM/Ctrl-C. docs/service.md describes the API.
//!
//! [`run`] wires the parts: [`server`] accepts connections within the
//! header timeout, [`dispatch`] sends `/predict` and `/metrics` past the
//! router, [`state`] holds the model ([`loaded`] is what it holds),
//! [`body`] reads a body within its limits, [`decode`] turns it into
//! feature rows (refusals are [`bad_input`]), [`predict`] answers,
//! [`metrics`] (with [`labels`]), [`drift`] and [`refusals`] record,
//! [`middleware`] times every HTTP request, [`admin`] reloads and guards
//! `/model` with the admin token, [`status`] reports health and readiness.
//! With `--model-uri` the model comes from the MLflow model registry and
//! [`registry`] polls it.
//! With a `--feedback-key-file`, /predict signs a [`prediction_id`] per row
//! and [`feedback`] joins later truth to it into the [`quality`] counters,
//! refusing duplicates it has [`seen`].

pub mod admin;
pub mod bad_input;
pub mod body;
pub mod decode;
pub mod dispatch;
pub mod drift;
pub mod feedback;
pub mod labels;
pub mod loaded;
pub mod metrics;
pub mod middleware;
pub mod predict;
pub mod prediction_id;
pub mod quality;
pub mod refusals;
pub mod registry;
pub mod seen;
pub mod server;
pub mod sharded;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::make_sync;
use poem::http::{header, StatusCode};
use poem::{get, EndpointExt, Response, Route};
use serde_json::json;

use crate::resources::{ResourceSampler, Role};
use crate::telemetry::{exposition_response, Telemetry};
use bad_input::InputError;
use body::BodyLimits;
use feedback::{FeedbackEndpoint, FeedbackState};
use loaded::{LoadedModel, Store};
use metrics::ServiceMetrics;
use middleware::HttpMetrics;
use predict::PredictEndpoint;
use refusals::Refusals;
use server::ServerOptions;

/// The route every prediction takes (answered without the router).
pub const PREDICT_ROUTE: &str = "/predict";

/// Where Prometheus scrapes; not timed by the HTTP metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The route templates of the app, as the HTTP metrics label them.
pub const ROUTES: [&str; 6] = [
    PREDICT_ROUTE,
    "/feedback",
    "/health",
    "/ready",
    "/model",
    "/admin/reload",
];

/// How long in-flight requests get to finish after SIGTERM/Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MLWATCH_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,
    /// Model artifact written by `mlwatch train`.
    #[arg(long, env = "MLWATCH_MODEL_PATH", default_value = "model.json")]
    pub model_path: PathBuf,
    /// Set when --model-path was given on the command line (not from the
    /// environment or the default), which --model-uri refuses.
    #[arg(skip)]
    pub model_path_on_command_line: bool,
    /// Serve from the MLflow model registry instead of --model-path:
    /// models:/NAME@ALIAS (followed as it moves) or models:/NAME/VERSION.
    #[arg(long, env = "MLWATCH_MODEL_URI")]
    pub model_uri: Option<String>,
    /// MLflow tracking server holding the registry (http://host:5000).
    #[arg(
        long = "mlflow-tracking-uri",
        env = "MLFLOW_TRACKING_URI",
        hide_env_values = true
    )]
    pub mlflow_tracking_uri: Option<String>,
    /// How often --model-uri is resolved again; 0: only on SIGHUP and
    /// POST /admin/reload.
    #[arg(long, env = "MLWATCH_MODEL_POLL_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub model_poll_interval: Duration,
    /// Timeout of one registry request (each is tried at most 3 times).
    #[arg(long = "mlflow-timeout", env = "MLWATCH_MLFLOW_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub mlflow_timeout: Duration,
    /// Largest model artifact downloaded from the registry, in bytes.
    #[arg(long, env = "MLWATCH_MODEL_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub model_max_bytes: u64,
    /// Bearer token for POST /admin/reload and GET /model (prefer --admin-token-file).
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the bearer token for POST /admin/reload and GET /model.
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted batch in {"instances": [...]}.
    #[arg(long, env = "MLWATCH_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MLWATCH_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Time a client has to send a whole request header (408 and close after).
    #[arg(long, env = "MLWATCH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body once its header is in (408).
    #[arg(long, env = "MLWATCH_BODY_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    body_read_timeout: Duration,
    /// Request bodies read at once; more get 503 (bounds body memory to about this × --max-body-bytes).
    #[arg(long, env = "MLWATCH_MAX_INFLIGHT_BODIES", default_value_t = 128)]
    pub max_inflight_bodies: usize,
    /// Recent inputs kept for drift (PSI) computation.
    #[arg(long, env = "MLWATCH_DRIFT_WINDOW", default_value_t = 1000)]
    pub drift_window: usize,
    /// Interval of the CPU/memory/GPU sampler.
    #[arg(long, env = "MLWATCH_SAMPLE_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Key shared by every replica, to sign prediction ids and verify
    /// feedback (0600, at least 32 bytes). Without it no ids are issued and
    /// POST /feedback answers 503.
    #[arg(long, env = "MLWATCH_FEEDBACK_KEY_FILE")]
    pub feedback_key_file: Option<PathBuf>,
    /// How long after a prediction its feedback is accepted.
    #[arg(long, env = "MLWATCH_FEEDBACK_WINDOW", default_value = "24h", value_parser = humantime::parse_duration)]
    pub feedback_window: Duration,
    /// Accepted prediction ids remembered to refuse duplicates (per replica).
    #[arg(
        long,
        env = "MLWATCH_FEEDBACK_DEDUP_CAPACITY",
        default_value_t = 100_000
    )]
    pub feedback_dedup_capacity: usize,
    /// Disable prediction metrics and drift tracking (benchmark baseline).
    #[arg(long)]
    no_instrumentation: bool,
    #[command(flatten)]
    pub export: crate::telemetry::ExportArgs,
}

/// `service.name` on the push path: the receiver makes it the `job`, the
/// scrape path's job name (prometheus/prometheus.yml).
pub const SERVICE_NAME: &str = "ml-api";

/// Runs the service until SIGTERM/Ctrl-C. Only configuration errors and a
/// port that cannot be bound end it early; a missing or broken model does
/// not (the service waits, unready, for a reload).
pub async fn run(args: ServeArgs, shutdown: crate::shutdown::Shutdown) -> anyhow::Result<()> {
    for (value, flag) in [
        (args.max_batch, "--max-batch"),
        (args.max_body_bytes, "--max-body-bytes"),
        (args.drift_window, "--drift-window"),
        (args.max_inflight_bodies, "--max-inflight-bodies"),
        (args.feedback_dedup_capacity, "--feedback-dedup-capacity"),
    ] {
        anyhow::ensure!(value > 0, "{flag} must be at least 1");
    }
    for (value, flag) in [
        (args.header_read_timeout, "--header-read-timeout"),
        (args.body_read_timeout, "--body-read-timeout"),
        (args.feedback_window, "--feedback-window"),
    ] {
        anyhow::ensure!(!value.is_zero(), "{flag} must be longer than 0s");
    }
    anyhow::ensure!(
        args.model_max_bytes > 0,
        "--model-max-bytes must be at least 1"
    );
    anyhow::ensure!(
        !args.mlflow_timeout.is_zero(),
        "--mlflow-timeout must be longer than 0s"
    );
    let registry = registry_source(&args)?;
    let token = admin::load_token(
        args.admin_token.as_deref(),
        args.admin_token_file.as_deref(),
    )?;
    // Before the port: a bad key is a configuration error, not a state.
    let key = args
        .feedback_key_file
        .as_deref()
        .map(prediction_id::Key::load)
        .transpose()?;
    let instrumented = !args.no_instrumentation;
    // The port first: "address in use" is a start-up error before the
    // (possibly slow) model load, and a `:0` port is known when logged.
    let (listener, address) = crate::listen::bind_tcp(args.listen).await?;
    let exporters = args
        .export
        .exporters(SERVICE_NAME, crate::telemetry::instance_id(address.port()))?;
    let feedback_enabled = key.is_some();
    let source = match &registry {
        Some(registry) => registry.uri().to_string(),
        None => args.model_path.display().to_string(),
    };
    tracing::info!(
        listen = %address,
        feedback = feedback_enabled,
        model = %source,
        instrumented,
        drift_window = args.drift_window,
        header_read_timeout = %humantime::format_duration(args.header_read_timeout),
        body_read_timeout = %humantime::format_duration(args.body_read_timeout),
        max_inflight_bodies = args.max_inflight_bodies,
        metrics = %exporters.describe(),
        "prediction service listening"
    );

    let telemetry = Arc::new(Telemetry::build(metrics::CARDINALITY_LIMITS, &exporters)?);
    let meter = telemetry.meter();
    let sampler = ResourceSampler::new(&meter, Role::App).spawn(args.sample_interval);
    let metrics = Arc::new(ServiceMetrics::new(&meter, instrumented));
    let refusals = Refusals::new(&meter);
    let versions = Arc::new(quality::Versions::default());
    quality::observe_baseline(&meter, Arc::clone(&versions));
    let feedback = key.map(|key| {
        Arc::new(FeedbackState {
            issuer: prediction_id::Issuer::new(key),
            metrics: quality::QualityMetrics::new(&meter, Arc::clone(&versions)),
            seen: seen::SeenIds::new(args.feedback_dedup_capacity),
            window: args.feedback_window,
        })
    });
    // Listen for SIGHUP before the (possibly slow) first load, so that an
    // early SIGHUP reloads rather than kills the process.
    let hangups = admin::Hangups::listen()?;
    let drift_capacity = instrumented.then_some(args.drift_window);
    let prepare = {
        let metrics = Arc::clone(&metrics);
        let feedback = feedback.clone();
        Box::new(move |artifact| {
            let quality = match &feedback {
                Some(feedback) => feedback.metrics.prepare(&artifact),
                None => versions.register(&artifact),
            };
            let labels = metrics.prepare(&artifact);
            let mut model = LoadedModel::new(artifact, labels, drift_capacity);
            model.quality = quality;
            model
        })
    };
    // Exported (at zero) with --model-path too, like every service series.
    let polls = registry::PollMetrics::new(&meter);
    let (store, poller) = match registry {
        None => (Arc::new(Store::open(&args.model_path, prepare).await), None),
        Some(registry) => {
            // The first load is the poller's: a slow registry must not keep
            // /health from answering.
            let store = Arc::new(Store::empty(state::Source::Registry(registry), prepare));
            let poller = registry::spawn(
                Arc::clone(&store),
                Arc::clone(&metrics),
                polls,
                args.model_poll_interval,
            );
            (store, Some(poller))
        }
    };
    if store.model().is_none() {
        metrics.prepare_without_model();
    }
    let hangup = hangups.reload_on_each(Arc::clone(&store), Arc::clone(&metrics));
    metrics.observe(&store, drift_capacity);

    // One set of body slots for /predict and /feedback together.
    let body = BodyLimits::new(
        args.max_body_bytes,
        args.body_read_timeout,
        args.max_inflight_bodies,
    );
    let predict = PredictEndpoint {
        store: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        refusals: refusals.clone(),
        max_batch: args.max_batch,
        body: body.clone(),
        feedback: feedback.clone(),
    };
    let app = Route::new()
        .at(
            "/feedback",
            FeedbackEndpoint {
                state: feedback,
                refusals: refusals.clone(),
                max_batch: args.max_batch,
                body,
            },
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
            get(admin::ModelEndpoint {
                token: token.clone(),
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
            }),
        )
        .at(
            "/admin/reload",
            admin::ReloadEndpoint {
                token,
                store: Arc::clone(&store),
                metrics: Arc::clone(&metrics),
            },
        );
    // /predict first, without the router (serve::dispatch).
    let app = dispatch::PathFirst {
        path: PREDICT_ROUTE,
        endpoint: Some(predict),
        routes: app,
    }
    .catch_all_error(json_error);
    // GET /metrics outside the HTTP metrics, as prometheus_flask_exporter
    // leaves its own endpoint out: Prometheus times every scrape itself
    // (scrape_duration_seconds), and a scrape that counted itself would
    // read one request in flight on an idle service. --no-scrape: no
    // /metrics at all (a 404 like any unknown path, counted as one), so a
    // stray scrape job fails loudly instead of counting the process twice.
    let exposition = telemetry.scrapes().then(|| {
        let telemetry = Arc::clone(&telemetry);
        get(make_sync(move |request| {
            exposition_response(&telemetry, &request)
        }))
        .catch_all_error(json_error)
    });

    let options = ServerOptions {
        header_read_timeout: args.header_read_timeout,
        shutdown_grace: SHUTDOWN_GRACE,
    };
    let shutdown = shutdown.requested_owned();
    // Two types, so two calls: the endpoint is not boxed (a boxed endpoint
    // allocates and copies every request's future).
    let served = if instrumented {
        let app = scrapes_first(exposition, app.with(HttpMetrics::new(&meter)));
        server::serve(listener, app, options, refusals, shutdown).await
    } else {
        let app = scrapes_first(exposition, app);
        server::serve(listener, app, options, refusals, shutdown).await
    };
    hangup.abort();
    if let Some(poller) = poller {
        poller.abort();
    }
    sampler.abort();
    // The last push carries the final counts (blocking up to the timeout).
    let flushed = Arc::clone(&telemetry);
    let _ = tokio::task::spawn_blocking(move || flushed.shutdown()).await;
    served.map_err(|e| anyhow::anyhow!("cannot serve on {address}: {e}"))?;
    tracing::info!("prediction service stopped");
    Ok(())
}

/// The registry to serve from with `--model-uri`, or `None` for
/// `--model-path`; a configuration error for a bad URI, a missing or
/// unusable tracking URI, or both model options.
fn registry_source(args: &ServeArgs) -> anyhow::Result<Option<crate::mlflow::registry::Registry>> {
    let Some(uri) = args.model_uri.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    anyhow::ensure!(
        !args.model_path_on_command_line,
        "--model-uri and --model-path are mutually exclusive; set one"
    );
    let model_uri: crate::mlflow::registry::ModelUri = uri.parse().map_err(anyhow::Error::msg)?;
    let tracking_uri = args
        .mlflow_tracking_uri
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--model-uri {model_uri} needs the registry's server: set \
                 --mlflow-tracking-uri (or MLFLOW_TRACKING_URI)"
            )
        })?;
    let (client, redacted) = crate::mlflow::connect(tracking_uri, args.mlflow_timeout)?;
    tracing::info!(
        model_uri = %model_uri,
        tracking_uri = %redacted,
        poll_interval = %humantime::format_duration(args.model_poll_interval),
        "serving from the MLflow model registry"
    );
    Ok(Some(crate::mlflow::registry::Registry::new(
        client,
        model_uri,
        args.model_max_bytes,
    )))
}

/// A JSON response with the given status and body text.
pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

/// The 405 of the POST-only routes (/predict, /feedback, /admin/reload):
/// `error` (method not allowed) as JSON, with `Allow: POST`.
pub(crate) fn post_only(error: InputError) -> Response {
    let mut response = json_response(error.status(), error.body());
    let allow = header::HeaderValue::from_static("POST");
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

/// `/metrics` answered by `exposition` (when the process is scraped) ahead
/// of `routes`.
fn scrapes_first<E, R>(exposition: Option<E>, routes: R) -> dispatch::PathFirst<E, R> {
    dispatch::PathFirst {
        path: METRICS_PATH,
        endpoint: exposition,
        routes,
    }
}

/// poem's own errors (no route matched, method not allowed on a GET route)
/// as JSON, keeping the matched route for the HTTP metrics; the handler of
/// `catch_all_error`.
async fn json_error(error: poem::Error) -> Response {
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
