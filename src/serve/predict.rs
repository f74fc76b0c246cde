//! `POST /predict`: one endpoint for every method, so that each POST,
//! whatever its fate, is counted exactly once in
//! `model_prediction_requests_total` with the model that answered it.
//! Another method is a 405 that is not a prediction request: it is counted
//! by the HTTP metrics only, so a monitor probing `GET /predict` cannot
//! look like a surge of invalid input.
//!
//! The steps, each with its own failure: method (405), a model to answer
//! (503), Content-Type (415), a free in-flight body slot (503), the body
//! within its size and time (413, 408; see [`super::body`]), decoding
//! (400/413/422, see [`super::decode`]), prediction (500 for a panic or a
//! non-finite output).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use super::body::{BodyLimits, BodyRefused};
use super::decode::{self, BadInput, InputError};
use super::feedback::FeedbackState;
use super::loaded::{LoadedModel, Store};
use super::metrics::{Outcome, ServiceMetrics};
use super::prediction_id::{Predicted, ID_CHARS};
use super::refusals::{Refusal, Refusals};
use super::{json_response, post_only};
use crate::model::Prediction;
use poem::http::{header, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;

pub struct PredictEndpoint {
    pub store: Arc<Store>,
    pub metrics: Arc<ServiceMetrics>,
    pub refusals: Refusals,
    pub max_batch: usize,
    pub body: BodyLimits,
    /// With a feedback key: signs one prediction id per row.
    pub feedback: Option<Arc<FeedbackState>>,
}

impl Endpoint for PredictEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // One snapshot for the whole request, even if a reload lands now.
        if req.method() != Method::POST {
            return Ok(method_not_allowed(req.method()));
        }
        let model = self.store.model();
        let (outcome, response) = match self.answer(req, model.as_deref()).await {
            Ok(response) => (Outcome::Success, response),
            Err(Failure::Input(e)) => {
                let mut response = json_response(e.status(), e.body());
                if matches!(e.problem, BadInput::BodyTimeout | BadInput::BodyTooLarge) {
                    // The body was not read to its end: the connection
                    // cannot carry another request.
                    let close = header::HeaderValue::from_static("close");
                    response.headers_mut().insert(header::CONNECTION, close);
                }
                (Outcome::InvalidInput, response)
            }
            Err(Failure::Server(status, body)) => {
                (Outcome::Error, json_response(status, body.to_string()))
            }
            Err(Failure::Busy(max_inflight)) => {
                (Outcome::Error, super::feedback::busy(max_inflight))
            }
        };
        self.metrics.request(model.as_deref(), outcome);
        Ok(response)
    }
}

enum Failure {
    Input(InputError),
    Server(StatusCode, serde_json::Value),
    /// No free in-flight body slot; the limit.
    Busy(usize),
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
        let content_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        // Held until the body and its decoded rows are dropped.
        let _slot = self.body.admit().map_err(|e| self.refused(e))?;
        let body = self
            .body
            .read(req.take_body(), content_length)
            .await
            .map_err(|e| self.refused(e))?;
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
        let ids = self.issue_ids(model, &predictions);
        let body = render(model, &predictions, decoded.batch, ids.as_deref()).map_err(|e| {
            Failure::Server(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "cannot encode the response", "detail": e.to_string()}),
            )
        })?;
        self.metrics
            .success(model, rows, &predictions, started.elapsed());
        let mut response = json_response(StatusCode::OK, body);
        if let Some(header) = ids.and_then(|ids| header::HeaderValue::try_from(ids).ok()) {
            response.headers_mut().insert(PREDICTION_ID_HEADER, header);
        }
        Ok(response)
    }

    /// One signed id per prediction, comma-separated (the header's form;
    /// the JSON lists the same), when feedback is configured.
    fn issue_ids(&self, model: &LoadedModel, predictions: &[Prediction]) -> Option<String> {
        let feedback = self.feedback.as_ref()?;
        let version = model.id_version?;
        let issued_ms = FeedbackState::now_ms();
        let mut ids = String::with_capacity(predictions.len() * (ID_CHARS + 1));
        for (i, prediction) in predictions.iter().enumerate() {
            if i > 0 {
                ids.push(',');
            }
            let predicted = match prediction {
                Prediction::Value(v) => Predicted::Value(*v),
                Prediction::Class { class, .. } => Predicted::Class(*class),
            };
            feedback
                .issuer
                .issue_into(version, issued_ms, predicted, &mut ids);
        }
        if let Some(quality) = &model.quality {
            quality.issued(predictions.len());
        }
        Some(ids)
    }
}

/// The response header with the prediction ids, comma-separated for a
/// batch (docs/service.md).
pub const PREDICTION_ID_HEADER: &str = "x-prediction-id";

impl PredictEndpoint {
    /// Counts a refused body and says how to answer it.
    fn refused(&self, refused: BodyRefused) -> Failure {
        match refused {
            BodyRefused::Busy { max_inflight } => {
                self.refusals.count(Refusal::Busy);
                Failure::Busy(max_inflight)
            }
            BodyRefused::Input(e) => {
                if e.problem == BadInput::BodyTimeout {
                    self.refusals.count(Refusal::BodyTimeout);
                }
                Failure::Input(e)
            }
        }
    }
}

/// The 405 for any method but POST, with `Allow: POST`.
fn method_not_allowed(method: &Method) -> Response {
    post_only(
        InputError::new(BadInput::MethodNotAllowed)
            .field("method")
            .expected("POST")
            .got(method_name(method)),
    )
}

/// The method as a label-free string for error bodies.
fn method_name(method: &Method) -> String {
    let name = method.as_str();
    name.chars().take(16).collect()
}

/// The response body: one prediction or a list, with the model version.
fn render(
    model: &LoadedModel,
    predictions: &[Prediction],
    batch: bool,
    ids: Option<&str>,
) -> Result<String, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Single<'a> {
        model_version: &'a str,
        prediction: Option<Output<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prediction_id: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        model_version: &'a str,
        predictions: Vec<Output<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prediction_ids: Option<IdList<'a>>,
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
            prediction_ids: ids.map(IdList),
        })
    } else {
        serde_json::to_string(&Single {
            model_version,
            prediction: outputs.next(),
            prediction_id: ids,
        })
    }
}

/// Comma-separated ids as a JSON list (ids are base64url: no commas).
struct IdList<'a>(&'a str);

impl Serialize for IdList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.split(','))
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
