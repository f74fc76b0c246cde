//! What a stack is made of, before anything runs: the user's choices
//! ([`StackConfig`]) and the monitoring binaries found on PATH
//! ([`Binaries`]). The plan ([`super::plan`]) derives the files and the
//! children from them; the launcher ([`super::launcher`]) carries it out.

use std::path::PathBuf;

use anyhow::bail;

use super::children::find_binary;
use super::config::{Assets, Timing};
use super::grafana;
use super::ports::Ports;

/// The Debian/Ubuntu command that installs what the stack needs.
/// Without recommends: they pull in a few dozen packages nobody asked for.
pub const INSTALL_HINT: &str =
    "apt-get install --no-install-recommends prometheus prometheus-alertmanager";

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub assets: Assets,
    pub state_dir: PathBuf,
    pub ports: Ports,
    pub timing: Timing,
    /// Extra `mlwatch train` arguments (model, pace, ...).
    pub trainer_args: Vec<String>,
    pub drift_window: usize,
    /// Start Grafana when a server binary is on PATH.
    pub grafana: bool,
    /// Start an MLflow tracking server (and track the trainer's run in it)
    /// when `mlflow` is on PATH.
    pub mlflow: bool,
    /// Base URL of the runbooks for alerts and dashboards; `None` is the
    /// page the launcher's own HTTP server renders from docs/runbooks.md.
    pub runbook_url: Option<String>,
    /// Prediction service replicas, on ports `ports.app`, `ports.app + 1`, ...
    pub replicas: usize,
    /// Two Prometheus (`ports.prometheus`, `+ 1`) and two clustered
    /// Alertmanagers (web `ports.alertmanager` and `+ 2`, gossip `+ 1` and
    /// `+ 3`) instead of one of each ([`super::ports::ha_ports`]).
    pub ha: bool,
    /// Push instead of scrape (`mlwatch up --otlp`, docs/otlp.md): the
    /// receiver Prometheus was found to have, whose flags it is started
    /// with; `None` is the scrape path.
    pub otlp: Option<super::receiver::Receiver>,
}

/// Prometheus and Alertmanager binaries, or the install command.
pub struct Binaries {
    pub prometheus: PathBuf,
    pub alertmanager: PathBuf,
    pub grafana: Option<grafana::GrafanaBinary>,
    pub mlflow: Option<PathBuf>,
}

impl Binaries {
    pub fn locate() -> anyhow::Result<Self> {
        let prometheus = find_binary(&["prometheus"]);
        let alertmanager = find_binary(&["alertmanager", "prometheus-alertmanager"]);
        match (prometheus, alertmanager) {
            (Some(prometheus), Some(alertmanager)) => Ok(Self {
                prometheus,
                alertmanager,
                grafana: grafana::locate(),
                mlflow: super::mlflow::locate(),
            }),
            (p, a) => {
                let missing: Vec<&str> = [
                    p.is_none().then_some("prometheus"),
                    a.is_none().then_some("alertmanager"),
                ]
                .into_iter()
                .flatten()
                .collect();
                bail!(
                    "{} not found on PATH. On Debian/Ubuntu: sudo {INSTALL_HINT}; with Nix: nix run (brings its own)",
                    missing.join(" and ")
                )
            }
        }
    }
}
