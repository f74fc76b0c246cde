//! The link from a model artifact back to the MLflow run that produced it:
//! what the trainer records in the artifact and what the service shows in
//! `GET /model` and on `model_info`.

use serde::{Deserialize, Serialize};

/// Where a model was tracked. Absent from artifacts trained without MLflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlflowRun {
    pub run_id: String,
    pub experiment_id: String,
    pub experiment_name: String,
    /// Base URL of the tracking server, without credentials.
    pub tracking_uri: String,
}

impl MlflowRun {
    /// The run's page in the MLflow UI.
    pub fn run_url(&self) -> String {
        run_url(&self.tracking_uri, &self.experiment_id, &self.run_id)
    }
}

/// The MLflow UI's route for a run (the same one the dashboards' data link
/// builds from `mlflow_url`, `mlflow_experiment_id` and `mlflow_run_id`).
pub fn run_url(tracking_uri: &str, experiment_id: &str, run_id: &str) -> String {
    format!(
        "{}/#/experiments/{experiment_id}/runs/{run_id}",
        tracking_uri.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_url_joins_without_double_slashes() {
        assert_eq!(
            run_url("http://127.0.0.1:5000/", "3", "abc"),
            "http://127.0.0.1:5000/#/experiments/3/runs/abc"
        );
        assert_eq!(
            run_url("http://mlflow:5000/prefix", "0", "r"),
            "http://mlflow:5000/prefix/#/experiments/0/runs/r"
        );
    }
}
