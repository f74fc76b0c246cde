//! `POST /predict`: one endpoint for every method, so that each request,
//! whatever its method or fate, is counted exactly once in
//! `model_prediction_requests_total` with the model that answered it.
//!
//! The steps, each with its own failure: method (405), a model to answer
//! (503), Content-Type (415), body size (413), decoding (400/413/422, see
//! [`super::decode`]), prediction (500 for a panic or a non-finite output).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use poem::http::{header, Method, StatusCode};
use poem::{Body, Endpoint, Request, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;
use tokio::io::AsyncReadExt;

use super::decode::{self, BadInput, InputError};
use super::json_response;
use super::metrics::{Outcome, ServiceMetrics};
use super::state::{LoadedModel, ModelStore};
use crate::model::Prediction;

/// After the body limit is exceeded, up to this many further bytes are read
/// and dropped so that the client, still sending, gets the 413 instead of a
/// reset connection.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

pub struct PredictEndpoint {
    pub store: Arc<ModelStore>,
    pub metrics: Arc<ServiceMetrics>,
    pub max_batch: usize,
    pub max_body_bytes: usize,
}

impl Endpoint for PredictEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // One snapshot for the whole request, even if a reload lands now.
        let model = self.store.model();
        let (outcome, response) = match self.answer(req, model.as_deref()).await {
            Ok(response) => (Outcome::Success, response),
            Err(Failure::Input(e)) => {
                let mut response = json_response(e.status(), e.body());
                if e.problem == BadInput::MethodNotAllowed {
                    let allow = header::HeaderValue::from_static("POST");
                    response.headers_mut().insert(header::ALLOW, allow);
                }
                (Outcome::InvalidInput, response)
            }
            Err(Failure::Server(status, body)) => {
                (Outcome::Error, json_response(status, body.to_string()))
            }
        };
        self.metrics.request(model.as_deref(), outcome);
        Ok(response)
    }
}

enum Failure {
    Input(InputError),
    Server(StatusCode, serde_json::Value),
}

impl From<InputError> for Failure {
    fn from(e: InputError) -> Self {
        Failure::Input(e)
    }
}

impl PredictEndpoint {
    async fn answer(
        &self,
        mut req: Request,
        model: Option<&LoadedModel>,
    ) -> Result<Response, Failure> {
        if req.method() != Method::POST {
            return Err(
                InputError::new(BadInput::MethodNotAllowed)
                    .field("method")
                    .expected("POST")
                    .got(method_name(req.method()))
                    .into(),
            );
        }
        let Some(model) = model else {
            let failure = self.store.failure();
            return Err(Failure::Server(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": "no model loaded",
                    "kind": failure.as_ref().map(|f| f.kind),
                    "detail": failure.map(|f| f.message),
                }),
            ));
        };
        decode::check_content_type(
            req.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("")),
        )?;
        let size_hint = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = read_body(req.take_body(), self.max_body_bytes, size_hint).await?;
        let started = Instant::now();
        let decoded = decode::decode(&body, &model.schema, self.max_batch)?;
        let rows = decoded.rows.view();
        let predictions = std::panic::catch_unwind(AssertUnwindSafe(|| model.artifact.model.predict(rows)))
            .map_err(|_| {
                tracing::error!(model_version = %model.artifact.model_version, "the model panicked while predicting");
                Failure::Server(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "prediction failed", "model_version": model.artifact.model_version}),
                )
            })?;
        if let Some(index) = predictions.iter().position(|p| !p.is_finite()) {
            tracing::error!(model_version = %model.artifact.model_version, index, "the model produced a non-finite prediction");
            return Err(Failure::Server(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({
                    "error": "model produced a non-finite prediction",
                    "model_version": model.artifact.model_version,
                    "instance": index,
                }),
            ));
        }
        let body = render(model, &predictions, decoded.batch).map_err(|e| {
            Failure::Server(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "cannot encode the response", "detail": e.to_string()}),
            )
        })?;
        self.metrics
            .success(model, rows, &predictions, started.elapsed());
        Ok(json_response(StatusCode::OK, body))
    }
}

/// The method as a label-free string for error bodies.
fn method_name(method: &Method) -> String {
    let name = method.as_str();
    name.chars().take(16).collect()
}

/// Reads the body up to `limit` bytes: a longer one is a 413, drained first
/// (within [`DRAIN_LIMIT`] and [`DRAIN_TIME`]) so the client reads the answer.
async fn read_body(
    body: Body,
    limit: usize,
    size_hint: Option<usize>,
) -> Result<Vec<u8>, InputError> {
    let mut reader = body.into_async_read();
    // Content-Length sizes the buffer, within the limit and 64 KiB.
    let initial = size_hint.unwrap_or(1024).min(limit).min(64 * 1024);
    let mut data = Vec::with_capacity(initial.saturating_add(1));
    let read_error = |e: std::io::Error| {
        InputError::new(BadInput::CannotReadBody).detail(e.to_string())
    };
    loop {
        if reader.read_buf(&mut data).await.map_err(read_error)? == 0 {
            return Ok(data);
        }
        if data.len() > limit {
            break;
        }
    }
    let mut seen = data.len();
    let drain = async {
        while seen <= limit.saturating_add(DRAIN_LIMIT) {
            data.clear();
            match reader.read_buf(&mut data).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    Err(
        InputError::new(BadInput::BodyTooLarge)
            .expected(format!("at most {limit} bytes"))
            .got(format!("more than {limit} bytes")),
    )
}

/// The response body: one prediction or a list, with the model version.
fn render(
    model: &LoadedModel,
    predictions: &[Prediction],
    batch: bool,
) -> Result<String, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Single<'a> {
        model_version: &'a str,
        prediction: Option<Output<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        model_version: &'a str,
        predictions: Vec<Output<'a>>,
    }
    let classes = &model.artifact.class_names;
    let model_version = &model.artifact.model_version;
    let mut outputs = predictions.iter().map(|prediction| Output {
        prediction,
        classes,
    });
    if batch {
        serde_json::to_string(&Batch {
            model_version,
            predictions: outputs.collect(),
        })
    } else {
        serde_json::to_string(&Single {
            model_version,
            prediction: outputs.next(),
        })
    }
}

/// One prediction as JSON: a number, or for a classifier
/// `{"class": name, "class_index": i, "probabilities": {name: p, ...}}` in
/// class order.
struct Output<'a> {
    prediction: &'a Prediction,
    classes: &'a [String],
}

impl Serialize for Output<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.prediction {
            Prediction::Value(v) => serializer.serialize_f64(*v),
            Prediction::Class {
                class,
                probabilities,
            } => {
                let mut map = serializer.serialize_map(Some(3))?;
                map.serialize_entry("class", &class_name(self.classes, *class))?;
                map.serialize_entry("class_index", class)?;
                map.serialize_entry(
                    "probabilities",
                    &Probabilities {
                        classes: self.classes,
                        probabilities,
                    },
                )?;
                map.end()
            }
        }
    }
}

struct Probabilities<'a> {
    classes: &'a [String],
    probabilities: &'a [f64],
}

impl Serialize for Probabilities<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.probabilities.len()))?;
        for (index, p) in self.probabilities.iter().enumerate() {
            map.serialize_entry(&class_name(self.classes, index), p)?;
        }
        map.end()
    }
}

fn class_name(classes: &[String], index: usize) -> String {
    classes
        .get(index)
        .cloned()
        .unwrap_or_else(|| index.to_string())
}
