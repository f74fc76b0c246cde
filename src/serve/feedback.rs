//! `POST /feedback`: the truth for predictions made earlier, by any replica
//! of the fleet (docs/service.md, "POST /feedback"; docs/quality.md).
//!
//! `{"prediction_id": ..., "truth": ...}` answers one item with the status
//! of its outcome; `{"feedback": [{...}, ...]}` (at most `--max-batch`
//! items) answers 200 with one result per item. Each item is counted once
//! in `model_feedback_total{outcome}`; an accepted one adds to its
//! version's quality counters ([`super::quality`]). A request that is not
//! feedback at all (bad JSON, wrong Content-Type, too large) is refused
//! like a bad /predict and counted as one `malformed` item. Nothing here
//! answers 5xx except a saturated service (503, the shared body slots) and
//! a service started without a key (503 "feedback disabled").

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use poem::http::{header, Method, StatusCode};
use poem::{Endpoint, Request, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::bad_input::{BadInput, InputError};
use super::body::{BodyLimits, BodyRefused};
use super::decode;
use super::prediction_id::{self, Issuer, Predicted};
use super::quality::{FeedbackOutcome, Labelled, QualityMetrics, VersionQuality};
use super::refusals::{Refusal, Refusals};
use super::seen::SeenIds;
use super::{json_response, post_only};
use crate::model::Task;

/// An id issued further in the future than this (replica clocks disagree)
/// is not one a sane fleet issued.
const CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// The largest |truth| and |prediction| whose errors are summed: squares
/// stay far from overflow, so one item cannot turn a counter into +Inf.
pub const MAX_MAGNITUDE: f64 = 1e12;

/// Everything feedback needs, shared with /predict (which issues ids).
pub struct FeedbackState {
    pub issuer: Issuer,
    pub metrics: QualityMetrics,
    pub seen: SeenIds,
    pub window: Duration,
}

impl FeedbackState {
    /// Milliseconds since the Unix epoch, the ids' clock.
    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

pub struct FeedbackEndpoint {
    pub state: Option<Arc<FeedbackState>>,
    pub refusals: Refusals,
    pub max_batch: usize,
    pub body: BodyLimits,
}

/// One item's answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct ItemResult {
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip)]
    kind: Option<FeedbackOutcome>,
}

impl ItemResult {
    fn refused(outcome: FeedbackOutcome, error: &'static str, detail: impl Into<String>) -> Self {
        Self {
            outcome: outcome.as_str(),
            model_version: None,
            error: Some(error),
            detail: Some(detail.into()),
            kind: Some(outcome),
        }
    }

    fn with_version(mut self, version: &str) -> Self {
        self.model_version = Some(version.to_owned());
        self
    }

    pub fn kind(&self) -> Option<FeedbackOutcome> {
        self.kind
    }
}

impl Endpoint for FeedbackEndpoint {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        if req.method() != Method::POST {
            return Ok(post_only(
                InputError::new(BadInput::MethodNotAllowed)
                    .field("method")
                    .expected("POST"),
            ));
        }
        let Some(state) = &self.state else {
            return Ok(json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": "feedback disabled",
                    "detail": "start the service with --feedback-key-file (the key every replica shares) to issue prediction ids and accept feedback",
                })
                .to_string(),
            ));
        };
        let refused = |e: InputError| {
            state.metrics.outcome(FeedbackOutcome::Malformed);
            let mut response = json_response(e.status(), e.body());
            if matches!(e.problem, BadInput::BodyTimeout | BadInput::BodyTooLarge) {
                let close = header::HeaderValue::from_static("close");
                response.headers_mut().insert(header::CONNECTION, close);
            }
            Ok(response)
        };
        if let Err(e) = decode::check_content_type(
            req.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("")),
        ) {
            return refused(e);
        }
        let content_length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let read = async {
            let slot = self.body.admit()?;
            let body = self.body.read(req.take_body(), content_length).await?;
            Ok::<_, BodyRefused>((slot, body))
        };
        let (_slot, body) = match read.await {
            Ok(read) => read,
            Err(BodyRefused::Busy { max_inflight }) => {
                self.refusals.count(Refusal::Busy);
                return Ok(busy(max_inflight));
            }
            Err(BodyRefused::Input(e)) => {
                if e.problem == BadInput::BodyTimeout {
                    self.refusals.count(Refusal::BodyTimeout);
                }
                return refused(e);
            }
        };
        let request = match parse(&body, self.max_batch) {
            Ok(request) => request,
            Err(e) => return refused(e),
        };
        let now_ms = FeedbackState::now_ms();
        Ok(match request {
            Parsed::Single(item) => {
                let result = judge(state, item, now_ms);
                let status = result.kind.map_or(StatusCode::OK, FeedbackOutcome::status);
                json_response(status, to_json(&result))
            }
            Parsed::Batch(items) => {
                let results: Vec<ItemResult> = items
                    .into_iter()
                    .map(|item| judge(state, item, now_ms))
                    .collect();
                let accepted = results
                    .iter()
                    .filter(|r| r.kind == Some(FeedbackOutcome::Accepted))
                    .count();
                json_response(
                    StatusCode::OK,
                    to_json(&json!({"accepted": accepted, "results": results})),
                )
            }
        })
    }
}

/// Every in-flight body slot is taken (the answer of /predict and
/// /feedback alike).
pub(super) fn busy(max_inflight: usize) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "error": "too many requests in flight",
            "detail": format!("at most {max_inflight} request bodies are read at once (--max-inflight-bodies); retry shortly"),
        })
        .to_string(),
    );
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    // The body was not read: the connection cannot go on.
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{\"error\":\"cannot encode\"}".to_owned())
}

/// A feedback request as parsed: one item or a batch of them, each item
/// either its fields or why it is malformed.
enum Parsed {
    Single(Result<Item, ItemResult>),
    Batch(Vec<Result<Item, ItemResult>>),
}

#[derive(Debug)]
struct Item {
    prediction_id: String,
    truth: Value,
}

fn shape() -> Value {
    json!({"prediction_id": "<id from /predict>", "truth": "<number, or one of the model's classes>"})
}

fn parse(body: &[u8], max_batch: usize) -> Result<Parsed, InputError> {
    if body.trim_ascii().is_empty() {
        return Err(InputError::new(BadInput::EmptyBody).expected(shape()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| InputError::from_json(&e).expected(shape()))?;
    let Value::Object(mut object) = value else {
        return Err(InputError::new(BadInput::NotAnObject).expected(shape()));
    };
    let Some(batch) = object.remove("feedback") else {
        return Ok(Parsed::Single(item(object)));
    };
    if let Some(extra) = object.keys().next() {
        return Err(InputError::new(BadInput::UnknownField)
            .field(super::bad_input::echo(extra))
            .expected(json!({"feedback": [shape()]})));
    }
    let Value::Array(items) = batch else {
        return Err(InputError::new(BadInput::InstancesNotArray)
            .field("feedback")
            .expected(json!([shape()])));
    };
    if items.is_empty() {
        return Err(InputError::new(BadInput::EmptyBatch).field("feedback"));
    }
    if items.len() > max_batch {
        return Err(InputError::new(BadInput::BatchTooLarge)
            .field("feedback")
            .expected(format!("at most {max_batch} items (--max-batch)"))
            .got(items.len()));
    }
    Ok(Parsed::Batch(
        items
            .into_iter()
            .map(|item_value| match item_value {
                Value::Object(object) => item(object),
                _ => Err(malformed("each feedback item must be a JSON object")),
            })
            .collect(),
    ))
}

fn malformed(detail: impl Into<String>) -> ItemResult {
    ItemResult::refused(FeedbackOutcome::Malformed, "malformed feedback", detail)
}

fn item(mut object: Map<String, Value>) -> Result<Item, ItemResult> {
    let prediction_id = match object.remove("prediction_id") {
        Some(Value::String(id)) => id,
        Some(_) => return Err(malformed("prediction_id must be a string")),
        None => return Err(malformed("missing field prediction_id")),
    };
    let Some(truth) = object.remove("truth") else {
        return Err(malformed("missing field truth"));
    };
    if let Some(extra) = object.keys().next() {
        return Err(malformed(format!(
            "unknown field {}; an item has prediction_id and truth",
            super::bad_input::echo(extra)
        )));
    }
    Ok(Item {
        prediction_id,
        truth,
    })
}

/// Decides one item's outcome, counts it, and says what to answer.
fn judge(state: &FeedbackState, item: Result<Item, ItemResult>, now_ms: u64) -> ItemResult {
    let result = match item {
        Ok(item) => join(state, &item, now_ms),
        Err(result) => result,
    };
    if let Some(outcome) = result.kind {
        if outcome != FeedbackOutcome::Accepted {
            state.metrics.outcome(outcome);
        }
    }
    result
}

fn join(state: &FeedbackState, item: &Item, now_ms: u64) -> ItemResult {
    let id = match prediction_id::verify(state.issuer.key(), &item.prediction_id) {
        Ok(id) => id,
        Err(forged) => {
            return ItemResult::refused(
                FeedbackOutcome::Forged,
                "invalid prediction id",
                forged.detail(),
            )
        }
    };
    if id.issued_ms > now_ms.saturating_add(CLOCK_SKEW_MS) {
        return ItemResult::refused(
            FeedbackOutcome::Forged,
            "invalid prediction id",
            "issued more than 5 minutes in the future",
        );
    }
    let window_ms = state.window.as_millis() as u64;
    let forget_ms = id.issued_ms.saturating_add(window_ms);
    if now_ms > forget_ms {
        return ItemResult::refused(
            FeedbackOutcome::Expired,
            "prediction id expired",
            format!(
                "issued more than {} ago (--feedback-window)",
                humantime::format_duration(state.window)
            ),
        );
    }
    let Some(version) = state.metrics.versions.find(&id.version) else {
        return ItemResult::refused(
            FeedbackOutcome::UnknownVersion,
            "unknown model version",
            "this replica never loaded the model version that made this prediction; send it to a replica that did",
        );
    };
    let labelled = match truth(&version, id.predicted, &item.truth) {
        Ok(labelled) => labelled,
        Err(detail) => {
            return ItemResult::refused(FeedbackOutcome::InvalidTruth, "invalid truth", detail)
                .with_version(&version.version)
        }
    };
    if !state.seen.first_time(id.mac, forget_ms, now_ms) {
        return ItemResult::refused(
            FeedbackOutcome::Duplicate,
            "duplicate feedback",
            "this replica already accepted feedback for this prediction id",
        )
        .with_version(&version.version);
    }
    let delay = Duration::from_millis(now_ms.saturating_sub(id.issued_ms));
    state.metrics.accepted(&version, labelled, delay);
    ItemResult {
        outcome: FeedbackOutcome::Accepted.as_str(),
        model_version: Some(version.version.clone()),
        error: None,
        detail: None,
        kind: Some(FeedbackOutcome::Accepted),
    }
}

/// Checks the truth against the version's task and classes.
fn truth(
    version: &VersionQuality,
    predicted: Predicted,
    truth: &Value,
) -> Result<Labelled, String> {
    match (version.task, predicted) {
        (Task::Regression, Predicted::Value(predicted)) => {
            let Some(value) = truth.as_f64().filter(|_| truth.is_number()) else {
                return Err("a regression model's truth is a number".into());
            };
            if !value.is_finite() || value.abs() > MAX_MAGNITUDE {
                return Err(format!(
                    "truth must be finite and within ±{MAX_MAGNITUDE:e}"
                ));
            }
            if predicted.abs() > MAX_MAGNITUDE {
                return Err(format!(
                    "the prediction is outside ±{MAX_MAGNITUDE:e}; its error is not counted"
                ));
            }
            Ok(Labelled::Value {
                predicted,
                truth: value,
            })
        }
        (Task::Classification, Predicted::Class(predicted))
            if predicted < version.classes.len() =>
        {
            let index = match truth {
                Value::String(name) => version.classes.iter().position(|c| c == name),
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|i| *i < version.classes.len()),
                _ => None,
            };
            match index {
                Some(truth) => Ok(Labelled::Class { predicted, truth }),
                None => Err(format!(
                    "a classifier's truth is one of its classes (name or index): {}",
                    version.classes.join(", ")
                )),
            }
        }
        // Authentic ids always match their version's task.
        _ => Err("the prediction id does not match its model's task".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::prediction_id::Key;

    fn state(window: Duration) -> FeedbackState {
        let meter = opentelemetry::global::meter("feedback-test");
        FeedbackState {
            issuer: Issuer::new(Key::new(&[3u8; 32])),
            metrics: QualityMetrics::new(&meter, Default::default()),
            seen: SeenIds::new(100),
            window,
        }
    }

    fn parse_one(body: &str) -> Result<Item, ItemResult> {
        match parse(body.as_bytes(), 4) {
            Ok(Parsed::Single(item)) => item,
            _ => panic!("not a single item: {body}"),
        }
    }

    #[test]
    fn envelopes_that_are_not_feedback_are_refused_with_their_reason() {
        for (body, problem) in [
            ("", BadInput::EmptyBody),
            ("{", BadInput::MalformedJson),
            ("[1]", BadInput::NotAnObject),
            (r#"{"feedback": {}}"#, BadInput::InstancesNotArray),
            (r#"{"feedback": []}"#, BadInput::EmptyBatch),
            (r#"{"feedback": [1,2,3,4,5]}"#, BadInput::BatchTooLarge),
            (r#"{"feedback": [], "x": 1}"#, BadInput::UnknownField),
        ] {
            match parse(body.as_bytes(), 4) {
                Err(e) => assert_eq!(e.problem, problem, "{body}"),
                Ok(_) => panic!("accepted {body}"),
            }
        }
    }

    #[test]
    fn items_missing_fields_or_with_extra_ones_are_malformed() {
        for body in [
            r#"{"truth": 1}"#,
            r#"{"prediction_id": 5, "truth": 1}"#,
            r#"{"prediction_id": "x"}"#,
            r#"{"prediction_id": "x", "truth": 1, "more": 2}"#,
        ] {
            let result = parse_one(body).unwrap_err();
            assert_eq!(result.kind, Some(FeedbackOutcome::Malformed), "{body}");
        }
    }

    /// A regression artifact as far as feedback reads it.
    fn artifact() -> crate::model::Artifact {
        use crate::model::{Artifact, BinReference, DriftReference, FeatureReference, Model};
        let values = [0.0, 1.0, 2.0, 3.0];
        Artifact {
            format_version: 2,
            model_version: "0a0b0c0d0e0f".into(),
            algorithm: "linear".into(),
            task: Task::Regression,
            dataset: "diabetes".into(),
            feature_names: vec!["a".into()],
            class_names: vec![],
            trained_at: String::new(),
            seed: 0,
            hyperparameters: Default::default(),
            metrics: [("validation_rmse".to_owned(), 50.0)].into_iter().collect(),
            reference: DriftReference {
                features: vec![FeatureReference::from_values("a", &values).unwrap()],
                prediction: BinReference::deciles(&values).unwrap(),
            },
            model: Model::Linear {
                coefficients: vec![1.0],
                intercept: 0.0,
            },
            mlflow: None,
        }
    }

    fn regression_version() -> VersionQuality {
        let artifact = artifact();
        VersionQuality::new(
            &artifact,
            prediction_id::version_bytes(&artifact.model_version).unwrap(),
        )
    }

    #[test]
    fn truth_is_checked_against_the_task_and_bounded() {
        let version = regression_version();
        let value = Predicted::Value(10.0);
        assert_eq!(
            truth(&version, value, &json!(12.5)),
            Ok(Labelled::Value {
                predicted: 10.0,
                truth: 12.5
            })
        );
        for bad in [json!("12"), json!(null), json!(1e13), json!([1])] {
            assert!(truth(&version, value, &bad).is_err(), "{bad}");
        }
        assert!(truth(&version, Predicted::Value(1e300), &json!(1.0)).is_err());
        assert!(truth(&version, Predicted::Class(0), &json!(1.0)).is_err());
    }

    #[test]
    fn an_id_joins_once_per_replica_and_expires() {
        let state = state(Duration::from_secs(60));
        state.metrics.prepare(&artifact());
        let bytes = prediction_id::version_bytes("0a0b0c0d0e0f").unwrap();
        let now = 1_800_000_000_000;
        let id = state.issuer.issue(bytes, now - 1000, Predicted::Value(3.0));
        let item = |truth: Value| Item {
            prediction_id: id.clone(),
            truth,
        };
        let outcome = |r: ItemResult| r.kind.unwrap();
        assert_eq!(
            outcome(join(&state, &item(json!("x")), now)),
            FeedbackOutcome::InvalidTruth,
            "a bad truth does not use the id up"
        );
        assert_eq!(
            outcome(join(&state, &item(json!(4.0)), now)),
            FeedbackOutcome::Accepted
        );
        assert_eq!(
            outcome(join(&state, &item(json!(4.0)), now)),
            FeedbackOutcome::Duplicate
        );
        assert_eq!(
            outcome(join(&state, &item(json!(4.0)), now + 60_000)),
            FeedbackOutcome::Expired
        );
        let unknown = state.issuer.issue([9; 6], now, Predicted::Value(3.0));
        let item = Item {
            prediction_id: unknown,
            truth: json!(1.0),
        };
        assert_eq!(
            outcome(join(&state, &item, now)),
            FeedbackOutcome::UnknownVersion
        );
        let future = state
            .issuer
            .issue(bytes, now + CLOCK_SKEW_MS + 1, Predicted::Value(3.0));
        let item = Item {
            prediction_id: future,
            truth: json!(1.0),
        };
        assert_eq!(outcome(join(&state, &item, now)), FeedbackOutcome::Forged);
    }
}
