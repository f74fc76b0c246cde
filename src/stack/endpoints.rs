//! Where the stack's parts listen and what the dashboards link to: the
//! one value the configs ([`super::config`]) and the dashboards' provisioned
//! constants ([`super::dashboard_constants`]) are both derived from.

use std::net::SocketAddr;

/// Where each scrape job's targets listen.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Prediction services (usually one).
    pub apps: Vec<SocketAddr>,
    pub trainers: Vec<SocketAddr>,
    pub prometheus: SocketAddr,
    pub alertmanager: SocketAddr,
    /// MLflow's own metrics; without them the `mlflow` job is left out.
    pub mlflow: Option<SocketAddr>,
    /// Base URL of the rendered runbooks (each alert an anchor): the alerts'
    /// external label `runbook_base` and the dashboards' `runbook_base`.
    pub runbooks: String,
    /// MLflow's UI as browsers reach it, the dashboards' `mlflow_url`
    /// (their links from a served model to its run), whether or not its
    /// metrics are scraped.
    pub mlflow_url: String,
}
