//! `mlwatch up`: the whole stack in the foreground until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::config::{Assets, Timing};
use super::launcher::Stack;
use super::ports::Ports;
use super::spec::{Binaries, StackConfig};
use crate::shutdown::Shutdown;
use crate::train::Algorithm;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Where configs, data, logs and the model go (default: $XDG_STATE_HOME/mlwatch).
    #[arg(long, env = "MLWATCH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Directory holding prometheus/ and grafana/ (default: this repository, or the installed share/mlwatch).
    #[arg(long, env = "MLWATCH_ASSETS")]
    pub assets: Option<PathBuf>,
    /// Every component's port (src/stack/ports.rs: --app-port,
    /// --trainer-port, ...).
    #[command(flatten)]
    pub ports: Ports,
    /// Prediction API replicas on consecutive ports from --app-port, all
    /// scraped as job ml-api (docs/fleet.md).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Base URL of the runbooks (each alert an anchor, e.g. URL#higherrorrate),
    /// used by the alerts' runbook_url and the dashboards' runbook links
    /// (default: the page this command serves, http://127.0.0.1:<webhook-port>/runbooks).
    #[arg(long, env = "MLWATCH_RUNBOOK_URL")]
    pub runbook_url: Option<String>,
    /// Do not start Grafana even if it is installed.
    #[arg(long)]
    no_grafana: bool,
    /// Do not start an MLflow server even if `mlflow` is on PATH.
    #[arg(long)]
    no_mlflow: bool,
    /// Model for the trainer (the same choices as `mlwatch train --model`).
    #[arg(long, value_enum, default_value = "linear")]
    pub model: Algorithm,
    /// Trainer pace per iteration, so that progress is visible.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub pace: Duration,
    /// Highly available alerting: a second Prometheus on the port after
    /// --prometheus-port and two Alertmanagers in one gossip cluster (web on
    /// --alertmanager-port and the port 2 above, gossip on the ports 1 and
    /// 3 above); docs/fleet.md.
    #[arg(long)]
    pub ha: bool,
    /// Push instead of scrape (docs/otlp.md): the services and the trainer
    /// push OTLP to Prometheus (both of an HA pair), which is started with
    /// its OTLP receiver and native histograms. Needs an upstream
    /// Prometheus 3 (Debian's build lacks the receiver; 2.x has none):
    /// refused, before anything starts, when the one on PATH cannot receive.
    #[arg(long)]
    pub otlp: bool,
    /// For tests: 1s scrape and rule evaluation, 3s `for:`, 1s grouping.
    #[arg(long, hide = true)]
    test_timing: bool,
}

/// `mlwatch train` flags for `model` at `pace`, spelled as a user would.
pub(crate) fn trainer_flags(model: Algorithm, pace: Duration) -> Vec<String> {
    let model = clap::ValueEnum::to_possible_value(&model)
        .map(|v| v.get_name().to_owned())
        .unwrap_or_else(|| "linear".to_owned());
    vec![
        "--model".into(),
        model,
        "--pace".into(),
        humantime::format_duration(pace).to_string(),
    ]
}

pub(crate) fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("mlwatch")
}

pub(crate) fn print_urls(stack: &Stack) {
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

pub async fn run(args: UpArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    // Flags that give one port to two components are refused before
    // anything is looked up, written or started.
    super::ports::check(&args.ports, args.replicas, args.ha)?;
    let binaries = Binaries::locate()?;
    let otlp = if args.otlp {
        Some(
            super::receiver::probe(&binaries.prometheus)
                .context("mlwatch up --otlp cannot start")?,
        )
    } else {
        None
    };
    let assets = Assets::discover(args.assets.as_deref())?;
    let mut trainer_args = trainer_flags(args.model, args.pace);
    trainer_args.extend(["--linger".into(), "120s".into()]);
    let config = StackConfig {
        assets,
        state_dir: args.state_dir.clone().unwrap_or_else(default_state_dir),
        ports: args.ports.clone(),
        timing: if args.test_timing {
            Timing::quick()
        } else {
            Timing::default()
        },
        trainer_args,
        drift_window: 1000,
        grafana: !args.no_grafana,
        replicas: args.replicas,
        ha: args.ha,
        otlp,
        mlflow: !args.no_mlflow,
        runbook_url: args.runbook_url.clone(),
    };
    let mut stack = Stack::start(&config, &binaries).await?;
    print_urls(&stack);
    println!("  state and logs          {}", config.state_dir.display());
    println!("Ctrl-C stops everything.");
    let outcome = stack.supervise(shutdown.requested()).await;
    println!("stopping...");
    stack.shutdown().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        up: UpArgs,
    }

    #[test]
    fn model_and_pace_are_typed_and_reach_the_trainer_as_train_accepts_them() {
        let cli = Cli::try_parse_from(["up", "--model", "forest", "--pace", "1500ms"]).unwrap();
        let flags = trainer_flags(cli.up.model, cli.up.pace);
        assert_eq!(flags, ["--model", "forest", "--pace", "1s 500ms"]);
        #[derive(Parser)]
        struct Train {
            #[command(flatten)]
            args: crate::train::TrainArgs,
        }
        let train = Train::try_parse_from(std::iter::once("train".to_owned()).chain(flags))
            .expect("mlwatch train accepts the launcher's flags");
        assert_eq!(train.args.algorithm, Algorithm::Forest);
        assert_eq!(train.args.pace, Duration::from_millis(1500));
    }

    #[test]
    fn a_replica_on_mlflows_port_is_refused_before_anything_starts() {
        let cli = Cli::try_parse_from(["up", "--app-port", "4999", "--replicas", "2"]).unwrap();
        let state = tempfile::tempdir().unwrap();
        let args = UpArgs {
            state_dir: Some(state.path().join("state")),
            ..cli.up
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let error = runtime
            .block_on(run(args, Shutdown::manual()))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("port 5000")
                && error.contains("--app-port 4999")
                && error.contains("MLflow (--mlflow-port 5000)"),
            "{error}"
        );
        assert!(!state.path().join("state").exists());
    }

    #[test]
    fn an_unknown_model_is_a_usage_error_naming_the_choices() {
        let error = Cli::try_parse_from(["up", "--model", "svm"])
            .err()
            .expect("svm is refused");
        let text = error.to_string();
        assert!(text.contains("svm") && text.contains("linear"), "{text}");
        assert!(Cli::try_parse_from(["up", "--pace", "soon"]).is_err());
    }
}
