//! Helpers for the prediction-service tests: real artifacts built through
//! the library (a linear model on diabetes, a decision tree on iris), a
//! running `mlwatch serve` on a free port, and HTTP calls that return the
//! status and body whatever the status.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linfa::prelude::*;
use mlwatch::model::{
    Artifact, BinReference, DriftReference, FeatureReference, Model, Task, FORMAT_VERSION,
};
use ndarray::{Array2, ArrayView2};

use crate::common::{self, Process, Scrape};

/// The diabetes data set as the tests use it: rows, targets, feature names.
pub struct Diabetes {
    pub records: Array2<f64>,
    pub targets: Vec<f64>,
    pub feature_names: Vec<String>,
}

pub fn diabetes() -> Diabetes {
    let dataset = linfa_datasets::diabetes();
    Diabetes {
        records: dataset.records().to_owned(),
        targets: dataset.targets().to_vec(),
        feature_names: dataset
            .feature_names()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// A sealed linear-regression artifact fitted on diabetes. `variant` ends
/// up in the seed, so different variants have different model versions.
pub fn linear_artifact(variant: u64) -> Artifact {
    let data = diabetes();
    let dataset = Dataset::new(
        data.records.clone(),
        ndarray::Array1::from(data.targets.clone()),
    );
    let fitted = linfa_linear::LinearRegression::new()
        .fit(&dataset)
        .expect("fit linear regression");
    let model = Model::Linear {
        coefficients: fitted.params().to_vec(),
        intercept: fitted.intercept(),
    };
    seal(
        model,
        "linear",
        Task::Regression,
        "diabetes",
        &data.feature_names,
        Vec::new(),
        data.records.view(),
        variant,
    )
}

/// A linear artifact whose predictions overflow to infinity for inputs
/// around 1e300: the model is valid, its output is not.
pub fn overflowing_artifact() -> Artifact {
    let data = diabetes();
    let width = data.feature_names.len();
    let model = Model::Linear {
        coefficients: vec![1e300; width],
        intercept: 0.0,
    };
    seal(
        model,
        "linear",
        Task::Regression,
        "diabetes",
        &data.feature_names,
        Vec::new(),
        data.records.view(),
        7,
    )
}

/// The iris data set: rows and class indices.
pub fn iris() -> (Array2<f64>, Vec<usize>, Vec<String>) {
    let dataset = linfa_datasets::iris();
    let names = dataset
        .feature_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    (
        dataset.records().to_owned(),
        dataset.targets().to_vec(),
        names,
    )
}

pub const IRIS_CLASSES: [&str; 3] = ["setosa", "versicolor", "virginica"];

/// A sealed decision-tree classifier on iris.
pub fn tree_artifact() -> Artifact {
    let (records, targets, names) = iris();
    let dataset = Dataset::new(records.clone(), ndarray::Array1::from(targets));
    let tree = linfa_trees::DecisionTree::params()
        .max_depth(Some(3))
        .fit(&dataset)
        .expect("fit tree");
    let model = Model::Trees {
        trees: vec![tree],
        weights: vec![1.0],
        classes: 3,
    };
    let classes = IRIS_CLASSES.iter().map(|s| s.to_string()).collect();
    seal(
        model,
        "tree",
        Task::Classification,
        "iris",
        &names,
        classes,
        records.view(),
        1,
    )
}

#[allow(clippy::too_many_arguments)]
fn seal(
    model: Model,
    algorithm: &str,
    task: Task,
    dataset: &str,
    feature_names: &[String],
    class_names: Vec<String>,
    records: ArrayView2<'_, f64>,
    seed: u64,
) -> Artifact {
    let features = feature_names
        .iter()
        .zip(records.columns())
        .map(|(name, column)| {
            FeatureReference::from_values(name, &column.to_vec()).expect("feature reference")
        })
        .collect();
    let predictions: Vec<f64> = model
        .predict(records)
        .iter()
        .map(|p| p.as_number())
        .collect();
    let artifact = Artifact {
        format_version: FORMAT_VERSION,
        model_version: String::new(),
        algorithm: algorithm.to_owned(),
        task,
        dataset: dataset.to_owned(),
        feature_names: feature_names.to_vec(),
        class_names,
        trained_at: "2024-05-01T12:00:00Z".to_owned(),
        seed,
        hyperparameters: BTreeMap::from([("max_depth".to_owned(), 3.0)]),
        metrics: BTreeMap::from([("validation_score".to_owned(), 0.5)]),
        reference: DriftReference {
            features,
            prediction: BinReference::deciles(&predictions).expect("prediction reference"),
        },
        model,
    };
    artifact.seal().expect("seal artifact")
}

/// What `mlwatch serve` logs, just before the bound address, once bound.
pub const LISTENING: &str = "prediction service listening listen=";

/// A running `mlwatch serve`, killed when dropped.
pub struct Service {
    pub process: Process,
    pub base: String,
    pub model_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// Starts the service on a free port with `artifact` (if any) written
    /// to its model path, and waits until /health answers.
    pub fn start(artifact: Option<&Artifact>, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let model_path = dir.path().join("model.json");
        if let Some(artifact) = artifact {
            artifact.save(&model_path).expect("save artifact");
        }
        Self::start_in(dir, model_path, extra_args)
    }

    pub fn start_in(dir: tempfile::TempDir, model_path: PathBuf, extra_args: &[&str]) -> Self {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model-path",
            model_path.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra_args);
        let mut process = Process::mlwatch("serve", &args, dir.path());
        // The service binds (and logs the port) before it loads the model.
        let listen = common::listening_address(&mut process, LISTENING);
        let base = format!("http://{listen}");
        common::wait_for_status(
            &format!("{base}/health"),
            200,
            Duration::from_secs(30),
            &mut process,
        );
        Self {
            process,
            base,
            model_path,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn scrape(&self) -> Scrape {
        common::scrape(&self.url("/metrics"))
    }

    /// POST /predict with a JSON Content-Type.
    pub fn predict(&self, body: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.request(
            "POST",
            "/predict",
            Some("application/json"),
            body.as_bytes(),
            &[],
        );
        (status, parse_json(&text))
    }

    /// Any request; returns the status and the body text.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut request = common::agent().request(method, &self.url(path));
        if let Some(content_type) = content_type {
            request = request.set("Content-Type", content_type);
        }
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = if body.is_empty() && method != "POST" {
            request.call()
        } else {
            request.send_bytes(body)
        };
        match result {
            Ok(response) => (
                response.status(),
                response.into_string().unwrap_or_default(),
            ),
            Err(ureq::Error::Status(code, response)) => {
                (code, response.into_string().unwrap_or_default())
            }
            Err(e) => panic!("{method} {path}: {e}\n{}", self.process.log_text()),
        }
    }

    /// GET returning the status and parsed JSON body.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, text) = self.request("GET", path, None, &[], &[]);
        (status, parse_json(&text))
    }

    /// POST /admin/reload with an optional bearer token.
    pub fn admin_reload(&self, token: Option<&str>) -> (u16, serde_json::Value) {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        let (status, text) = self.request("POST", "/admin/reload", None, &[], &headers);
        (status, parse_json(&text))
    }
}

pub fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"))
}

/// `model_prediction_requests_total` for one version and status (0 when absent).
pub fn requests(scrape: &Scrape, version: &str, status: &str) -> f64 {
    common::value(
        scrape,
        "model_prediction_requests_total",
        &[("model_version", version), ("status", status)],
    )
    .unwrap_or(0.0)
}

/// Writes `artifact` to `path` the way the trainer does (atomic rename).
pub fn write_artifact(artifact: &Artifact, path: &Path) {
    artifact.save(path).expect("save artifact");
}

/// Rows of `records` as JSON arrays.
pub fn rows_json(records: ArrayView2<'_, f64>) -> Vec<serde_json::Value> {
    records
        .rows()
        .into_iter()
        .map(|r| serde_json::json!(r.to_vec()))
        .collect()
}
