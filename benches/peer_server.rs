//! The servers benches/serve.sh compares mlwatch with: the same `POST
//! /predict` answered by a plain poem server, with nothing mlwatch adds.
//!
//! * `minimal`: decodes the body with serde (`{"features": [..]}`), runs
//!   the artifact's model on the row through `mlwatch::model`, and answers
//!   `{"model_version": .., "prediction": ..}`, exactly the bytes mlwatch
//!   answers; no metrics, no limits, no timeouts.
//! * `metrics`: the same, instrumented the way Hugging Face TGI does it,
//!   with the `metrics` crate and its Prometheus exporter: a request counter
//!   by outcome and a latency histogram per request (the same buckets as
//!   mlwatch's), rendered on `GET /metrics`.
//!
//! A bench-only binary, built on demand (the `bench-peers` feature keeps it
//! out of every other build):
//!
//!     cargo build --release --features bench-peers --example peer_server
//!     target/release/examples/peer_server minimal|metrics ADDRESS MODEL_JSON

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use mlwatch::model::{Artifact, Prediction};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::Data;
use poem::{get, handler, post, Body, EndpointExt, Response, Route, Server};

#[derive(serde::Deserialize)]
struct Request {
    features: Vec<f64>,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    model_version: &'a str,
    prediction: f64,
}

struct Peer {
    artifact: Artifact,
    /// `Some` for the `metrics` variant.
    exporter: Option<PrometheusHandle>,
}

fn json(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body)
}

#[handler]
async fn predict(peer: Data<&Arc<Peer>>, body: Body) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer(&peer, body).await;
    if peer.exporter.is_some() {
        metrics::counter!("model_prediction_requests_total", "outcome" => outcome).increment(1);
        metrics::histogram!("model_prediction_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }
    response
}

async fn answer(peer: &Peer, body: Body) -> (&'static str, Response) {
    let bad = |detail: String| {
        (
            "invalid_input",
            json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": detail }).to_string(),
            ),
        )
    };
    let bytes = match body.into_bytes().await {
        Ok(bytes) => bytes,
        Err(e) => return bad(e.to_string()),
    };
    let request: Request = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => return bad(e.to_string()),
    };
    let width = request.features.len();
    if width != peer.artifact.feature_names.len() {
        return bad(format!("{width} features"));
    }
    let Ok(rows) = ndarray::Array2::from_shape_vec((1, width), request.features) else {
        return bad("shape".to_owned());
    };
    let prediction = match peer.artifact.model.predict(rows.view()).first() {
        Some(Prediction::Value(v)) => *v,
        Some(Prediction::Class { class, .. }) => *class as f64,
        None => return bad("no prediction".to_owned()),
    };
    let body = serde_json::to_string(&Answer {
        model_version: &peer.artifact.model_version,
        prediction,
    });
    match body {
        Ok(body) => ("success", json(StatusCode::OK, body)),
        Err(e) => bad(e.to_string()),
    }
}

#[handler]
fn render(peer: Data<&Arc<Peer>>) -> Response {
    match &peer.exporter {
        Some(handle) => Response::builder()
            .content_type("text/plain; version=0.0.4")
            .body(handle.render()),
        None => Response::builder().status(StatusCode::NOT_FOUND).finish(),
    }
}

#[handler]
fn ready() -> &'static str {
    "ready"
}

/// With the `mimalloc` feature, mimalloc instead of the system allocator
/// (docs/benchmarks.md: what each allocator costs per request and holds
/// under load).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, variant, address, model] = args.as_slice() else {
        anyhow::bail!("usage: peer_server minimal|metrics ADDRESS MODEL_JSON");
    };
    let address: SocketAddr = address.parse()?;
    let artifact = Artifact::load(&PathBuf::from(model))?;
    let exporter = match variant.as_str() {
        "minimal" => None,
        "metrics" => {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("model_prediction_duration_seconds".to_owned()),
                    mlwatch::telemetry::LATENCY_BUCKETS_SECONDS,
                )?
                .install_recorder()?;
            // The exporter's housekeeping, as its docs ask of an
            // application that renders itself.
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
            Some(handle)
        }
        other => anyhow::bail!("unknown variant {other}: minimal or metrics"),
    };
    let peer = Arc::new(Peer { artifact, exporter });
    let app = Route::new()
        .at("/predict", post(predict))
        .at("/metrics", get(render))
        .at("/ready", get(ready))
        .data(peer);
    Server::new(TcpListener::bind(address)).run(app).await?;
    Ok(())
}
