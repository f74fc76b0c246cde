//! `mlwatch up`: the whole stack in the foreground until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;

use super::config::{Assets, Timing};
use super::launcher::{Binaries, Ports, Stack, StackConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where configs, data, logs and the model go (default: $XDG_STATE_HOME/mlwatch).
    #[arg(long, env = "MLWATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory holding prometheus/ and grafana/ (default: this repository, or the installed share/mlwatch).
    #[arg(long, env = "MLWATCH_ASSETS")]
    pub assets: Option<PathBuf>,
    #[arg(long, default_value_t = 9000)]
    pub app_port: u16,
    #[arg(long, default_value_t = 8002)]
    pub trainer_port: u16,
    #[arg(long, default_value_t = 9090)]
    pub prometheus_port: u16,
    #[arg(long, default_value_t = 9093)]
    pub alertmanager_port: u16,
    #[arg(long, default_value_t = 3000)]
    pub grafana_port: u16,
    /// Port of the built-in webhook that prints alerts.
    #[arg(long, default_value_t = 5001)]
    pub webhook_port: u16,
    #[arg(long, default_value_t = 5000)]
    pub mlflow_port: u16,
    /// Do not start Grafana even if it is installed.
    #[arg(long)]
    pub no_grafana: bool,
    /// Do not start an MLflow server even if `mlflow` is on PATH.
    #[arg(long)]
    pub no_mlflow: bool,
    /// Model for the trainer.
    #[arg(long, default_value = "linear")]
    pub model: String,
    /// Trainer pace per iteration, so that progress is visible.
    #[arg(long, default_value = "2s")]
    pub pace: String,
}

impl UpArgs {
    pub fn ports(&self) -> Ports {
        Ports {
            app: self.app_port,
            trainer: self.trainer_port,
            prometheus: self.prometheus_port,
            alertmanager: self.alertmanager_port,
            grafana: self.grafana_port,
            webhook: self.webhook_port,
            mlflow: self.mlflow_port,
        }
    }
}

/// The repository (found upward from the current directory) or the
/// installed `<prefix>/share/mlwatch` beside the executable.
pub fn default_assets() -> anyhow::Result<Assets> {
    let mut candidates = Vec::new();
    if let Ok(mut dir) = std::env::current_dir() {
        loop {
            candidates.push(dir.clone());
            if !dir.pop() {
                break;
            }
        }
    }
    if let Some(prefix) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent()?.parent().map(PathBuf::from))
    {
        candidates.push(prefix.join("share/mlwatch"));
    }
    // A binary built from a checkout (cargo run, cargo install --path) can
    // still find the checkout it was built from.
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    candidates
        .into_iter()
        .find(|d| d.join("prometheus/prometheus.yml").is_file())
        .map(Assets::new)
        .transpose()?
        .context("cannot find prometheus/ and grafana/: run from the mlwatch repository or pass --assets DIR")
}

pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mlwatch")
}

pub fn print_urls(stack: &Stack) {
    println!("mlwatch stack is up:");
    for (name, url) in &stack.urls {
        println!("  {name:<22} {url}");
    }
    match &stack.grafana_password {
        Some(password) => println!("  Grafana admin password  {password}"),
        None => println!(
            "  Grafana is not installed: dashboards need a Grafana server on PATH (Nix: `nix run` brings one; \
             Debian: https://grafana.com/docs/grafana/latest/setup-grafana/installation/debian/). \
             Meanwhile use Prometheus' own UI above, or `mlwatch report` for a static HTML report."
        ),
    }
    if stack.mlflow_url.is_none() && super::mlflow::locate().is_none() {
        println!(
            "  MLflow is not running: to track every training run, put `mlflow` on PATH \
             ({}; or .ci/install-mlflow.sh, then add target/mlflow-venv/bin to PATH) \
             and run `mlwatch up` again; see docs/mlflow.md.",
            super::mlflow::INSTALL_HINT
        );
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let binaries = Binaries::locate()?;
    let assets = match &args.assets {
        Some(dir) => Assets::new(dir.clone())?,
        None => default_assets()?,
    };
    let config = StackConfig {
        assets,
        state_dir: args.state_dir.clone().unwrap_or_else(default_state_dir),
        ports: args.ports(),
        timing: Timing::default(),
        trainer_args: vec![
            "--model".into(),
            args.model.clone(),
            "--pace".into(),
            args.pace.clone(),
            "--linger".into(),
            "120s".into(),
        ],
        drift_window: 1000,
        grafana: !args.no_grafana,
        mlflow: !args.no_mlflow,
    };
    let mut stack = Stack::start(&config, &binaries).await?;
    print_urls(&stack);
    println!("  state and logs          {}", config.state_dir.display());
    println!("Ctrl-C stops everything.");
    let outcome = stack.supervise(crate::shutdown::signal()).await;
    println!("stopping...");
    stack.shutdown().await;
    outcome
}
