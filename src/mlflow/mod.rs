//! MLflow tracking for `mlwatch train`: a REST client for MLflow's
//! documented API ([`client`]), log-batch payloads within the server's
//! limits ([`batch`]), the background task that keeps a run up to date
//! without ever blocking training ([`tracker`]), the lineage that the
//! artifact carries to the service ([`lineage`]), and the model registry
//! as `mlwatch serve --model-uri` reads it ([`registry`]). See
//! docs/mlflow.md.

pub mod batch;
pub mod client;
pub mod lineage;
pub mod registry;
pub mod tracker;

use std::time::Duration;

pub use client::{Auth, Client, MlflowError, Operation, RunStatus};
pub use lineage::MlflowRun;
pub use tracker::{Outcome, RunSpec, Sink, Summary, Tracker};

/// The trainer's MLflow flags. Without a tracking URI nothing is tracked.
#[derive(Debug, Clone, clap::Args)]
pub struct MlflowArgs {
    /// MLflow tracking server (http://host:5000); MLflow's own variable.
    #[arg(long = "mlflow-tracking-uri", env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// Experiment to log to, created if missing; MLflow's own variable.
    #[arg(
        long = "mlflow-experiment",
        env = "MLFLOW_EXPERIMENT_NAME",
        default_value = "mlwatch"
    )]
    pub experiment: String,
    /// Register the uploaded artifact as a new version of this registered model.
    #[arg(long = "mlflow-register", value_name = "NAME")]
    pub register: Option<String>,
    /// Point this alias of the registered model at the new version
    /// (`mlwatch serve --model-uri models:/NAME@ALIAS` follows it).
    #[arg(
        long = "mlflow-alias",
        visible_alias = "model-alias",
        value_name = "ALIAS",
        requires = "register"
    )]
    pub alias: Option<String>,
    /// Timeout of one MLflow request (each is retried at most twice).
    #[arg(long = "mlflow-timeout", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// How long to keep trying to create the run while the server does not
    /// answer yet (it boots slowly beside the trainer).
    #[arg(long = "mlflow-startup-wait", default_value = "30s", value_parser = humantime::parse_duration)]
    pub startup_wait: Duration,
}

impl MlflowArgs {
    /// The client and the credential-free URI, or why the URI is unusable.
    /// `None` when no tracking URI is set.
    pub fn client(&self) -> anyhow::Result<Option<(Client, String)>> {
        let Some(uri) = self.tracking_uri.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if let Some(alias) = &self.alias {
            // The same rule as a model URI's alias, so that what the trainer
            // sets, serve can follow.
            format!("models:/m@{alias}")
                .parse::<registry::ModelUri>()
                .map_err(|_| {
                    anyhow::anyhow!(
                        "--mlflow-alias {alias:?}: an alias is letters, digits, '_' and '-'"
                    )
                })?;
        }
        connect(uri, self.timeout).map(Some)
    }
}

/// A client for the tracking server at `uri` (credentials from MLflow's
/// variables) and the URI without credentials, for logs and artifacts.
pub fn connect(uri: &str, timeout: Duration) -> anyhow::Result<(Client, String)> {
    let url = reqwest::Url::parse(uri)
        .map_err(|e| anyhow::anyhow!("MLflow tracking URI {uri:?} is not a URL: {e}"))?;
    let client = Client::new(&url, Auth::from_env(), timeout).map_err(anyhow::Error::msg)?;
    Ok((client, client::redacted(&url)))
}
