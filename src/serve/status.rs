//! What the service says about itself: `/health` (the process answers),
//! `/ready` (a model is loaded, or 503 naming why not) and `/model` (the
//! loaded artifact's identity, features, training metrics and MLflow run).
//!
//! `/health` and `/ready` answer anyone, and `/model` does unless an admin
//! token is configured ([`super::admin::ModelEndpoint`]), so none of them
//! names the server's filesystem: the model path is in the start-up and
//! reload logs, and a load failure is reported by its kind and the file's
//! name only. `/model` carries the artifact's drift reference instead, so
//! that a client needs no access to the server's files to generate traffic
//! like the training data.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::Response;
use serde_json::json;

use super::json_response;
use super::loaded::Store;

pub fn health() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}).to_string())
}

pub fn ready(store: &Arc<Store>) -> Response {
    match store.model() {
        Some(model) => json_response(
            StatusCode::OK,
            json!({"status": "ready", "model_version": model.artifact.model_version}).to_string(),
        ),
        None => not_ready(store),
    }
}

pub fn model(store: &Arc<Store>) -> Response {
    let Some((model, origin)) = store.current() else {
        return not_ready(store);
    };
    let a = &model.artifact;
    json_response(
        StatusCode::OK,
        json!({
            "model_version": a.model_version,
            "algorithm": a.algorithm,
            "task": a.task.as_str(),
            "dataset": a.dataset,
            "trained_at": a.trained_at,
            // The split seed: `mlwatch load --feedback-fraction` labels rows
            // of the same validation split.
            "seed": a.seed,
            "features": a.feature_names,
            "class_names": a.class_names,
            "metrics": a.metrics,
            "hyperparameters": a.hyperparameters,
            // Aggregate training statistics (per-feature moments, range and
            // deciles), which `mlwatch load` draws traffic from.
            "reference": a.reference,
            "mlflow": a.mlflow.as_ref().map(|r| json!({
                "run_id": r.run_id,
                "experiment_id": r.experiment_id,
                "experiment_name": r.experiment_name,
                "tracking_uri": r.tracking_uri,
                "run_url": r.run_url(),
            })),
            // The registry version served with --model-uri; null otherwise.
            "registry": origin.map(|o| json!({
                "model_uri": o.model_uri,
                "name": o.name,
                "version": o.version,
                "alias": o.alias,
                "run_id": o.run_id,
            })),
        })
        .to_string(),
    )
}

/// 503 with the load failure: its kind (`missing`, `corrupt`, ...) and the
/// full message, which names the path.
fn not_ready(store: &Store) -> Response {
    let failure = store.failure();
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({
            "status": "not ready",
            "error": "no model loaded",
            "kind": failure.as_ref().map(|f| f.kind),
            "detail": failure.map(|f| f.message),
        })
        .to_string(),
    )
}
