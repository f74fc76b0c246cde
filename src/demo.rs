//! `mlwatch demo`: the brief's whole story in one command. Starts the stack
//! (the same launcher as `mlwatch up`), trains with a visible pace, sends
//! normal traffic, then drifted and invalid traffic, waits until DataDrift
//! and InvalidInputSurge fire, prints them with their runbooks, and writes
//! the static report. `--quick` is the same story compressed for CI.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::load::{Class, LoadConfig, Mix, Output, Pace, Stop};
use crate::report::ReportConfig;
use crate::shutdown::Shutdown;
use crate::stack::config::{Assets, Timing};
use crate::stack::launcher::Stack;
use crate::stack::ports::Ports;
use crate::stack::spec::{Binaries, StackConfig, INSTALL_HINT};
use crate::stack::up::{default_state_dir, print_urls};

/// The alerts the demo provokes and waits for.
const EXPECTED_ALERTS: [&str; 2] = ["DataDrift", "InvalidInputSurge"];

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Compressed timings and free ports; exits when done (CI).
    #[arg(long)]
    pub quick: bool,
    /// Where the demo's state, logs and report go (default: $XDG_STATE_HOME/mlwatch/demo).
    /// Must be new, empty, or a directory an earlier demo created: only then
    /// does the demo clear what it wrote there.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Directory holding prometheus/ and grafana/ (default: this repository or share/mlwatch).
    #[arg(long)]
    pub assets: Option<PathBuf>,
    /// Install Prometheus and Alertmanager with apt-get when they are
    /// missing (needs root; without recommends). Otherwise the demo prints
    /// the command.
    #[arg(long)]
    pub install: bool,
    /// Stop the stack after the report instead of keeping it up until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// Finds Prometheus and Alertmanager; with `--install`, installs them first
/// through apt-get (as root, without recommends, as a child process awaited
/// off the runtime's threads); otherwise says how.
async fn binaries(install: bool, shutdown: &Shutdown) -> anyhow::Result<Binaries> {
    let missing = match Binaries::locate() {
        Ok(b) => return Ok(b),
        Err(missing) => missing,
    };
    if !install {
        return Err(anyhow::anyhow!(
            "{missing:#}; or run `mlwatch demo --install` as root to let the demo install them"
        ));
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("--install runs apt-get and needs root: run `sudo {INSTALL_HINT}` yourself, or the demo as root");
    }
    if crate::stack::children::find_binary(&["apt-get"]).is_none() {
        bail!("--install needs apt-get (Debian/Ubuntu); install Prometheus and Alertmanager another way (Nix: `nix run`)");
    }
    println!("installing Prometheus and Alertmanager: {INSTALL_HINT} -y");
    let mut apt = tokio::process::Command::new("apt-get")
        .args(install_args())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .spawn()
        .context("cannot run apt-get")?;
    // apt-get is not killed on a stop request: an interrupted dpkg leaves
    // packages half-configured. The demo stops once it is done (a second
    // Ctrl-C still forces the exit).
    let status = tokio::select! {
        status = apt.wait() => status.context("cannot wait for apt-get")?,
        _ = shutdown.requested() => {
            println!("stopping once apt-get has finished (interrupting dpkg can break packages)");
            let _ = apt.wait().await;
            bail!("interrupted during apt-get install");
        }
    };
    if !status.success() {
        bail!("apt-get install failed ({status}); run `sudo {INSTALL_HINT}` yourself");
    }
    Binaries::locate()
}

/// apt-get's arguments for [`INSTALL_HINT`]'s packages.
fn install_args() -> Vec<&'static str> {
    let mut args: Vec<&str> = INSTALL_HINT.split_whitespace().skip(1).collect();
    args.insert(1, "-y");
    args
}

/// Test hook: when set, the report step waits for a stop request before it
/// writes. The step otherwise takes well under a second, too short for a
/// test's signal to land in it reliably on a loaded machine; with the hold
/// the signal lands in it by construction (tests/demo_cli.rs).
const HOLD_REPORT_ENV: &str = "MLWATCH_TEST_HOLD_REPORT";

/// Runs `work` while the stack is supervised (reloads, dead children) and
/// until a stop is requested, which is an error naming `what`.
async fn during<T>(
    stack: &mut Stack,
    shutdown: &Shutdown,
    what: &str,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let supervised = async {
        tokio::select! {
            result = work => result,
            failure = stack.supervise(std::future::pending()) => Err(failure.err().unwrap_or_else(|| anyhow::anyhow!("supervision ended"))),
        }
    };
    shutdown.guard(what, supervised).await
}

/// Polls `check` until it returns `Ok(Some)` or `limit` passes. An error
/// is not "not yet": it is kept, polling goes on (Prometheus may still be
/// starting), and a timeout names the last one.
async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let last_error = std::sync::Mutex::new(None::<String>);
    let outcome = crate::poll::until(Duration::from_millis(500), limit, || {
        let attempt = check();
        let last_error = &last_error;
        async move {
            match attempt.await {
                Ok(value) => value,
                Err(e) => {
                    tracing::debug!("still waiting for {what}: {e:#}");
                    *last_error
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(format!("{e:#}"));
                    None
                }
            }
        }
    })
    .await;
    outcome.map_err(|gave_up| {
        let last = last_error
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last {
            Some(error) => anyhow::anyhow!("waiting for {what}: {gave_up} (last error: {error})"),
            None => anyhow::anyhow!("waiting for {what}: {gave_up}"),
        }
    })
}

/// Unix seconds now, for instant queries.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The story's two traffic phases against the service at `app`: normal
/// traffic (valid and batch), then the drifted and invalid traffic that
/// fires the alerts. Each is the load tool's defaults (reconciled against
/// the service's counters) at a fixed rate for a fixed time.
fn traffic_phases(app: &str, quick: bool) -> anyhow::Result<[LoadConfig; 2]> {
    let (normal, bad) = if quick { (4, 6) } else { (30, 60) };
    let rate = if quick { 100.0 } else { 20.0 };
    let phase = |weights: &[(Class, u32)], seconds| -> anyhow::Result<LoadConfig> {
        Ok(LoadConfig {
            pace: Pace::Rate(rate),
            stop: Stop::Duration(Duration::from_secs(seconds)),
            mix: Mix::new(weights)?,
            ..LoadConfig::new(app)
        })
    };
    Ok([
        phase(&[(Class::Valid, 90), (Class::Batch, 10)], normal)?,
        LoadConfig {
            drift_sigma: 3.0,
            ..phase(&[(Class::Drifted, 60), (Class::Invalid, 40)], bad)?
        },
    ])
}

/// The report of the story: the last `since`, into `state_dir`.
fn report_config(
    prometheus: &str,
    state_dir: &Path,
    assets: &Path,
    since: Duration,
) -> ReportConfig {
    ReportConfig {
        since,
        output: state_dir.join("report.html"),
        svg_dir: Some(state_dir.join("report-svg")),
        assets: Some(assets.to_path_buf()),
        ..ReportConfig::new(prometheus)
    }
}

/// Runs a phase the way `mlwatch load` would, under the demo's shutdown.
async fn load(config: LoadConfig, shutdown: &Shutdown) -> anyhow::Result<()> {
    crate::load::execute(&config, Output::default(), shutdown).await
}

pub async fn run(args: DemoArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir().join("demo"));
    // Checked first: a refused directory needs no Prometheus to be refused.
    // A demo starts from nothing: no old model, no old time series.
    let state_dir = crate::stack::state::prepare_fresh(&state_dir)?;
    let assets = Assets::discover(args.assets.as_deref())?;
    let binaries = binaries(args.install, &shutdown).await?;
    let quick = args.quick;
    let ports = if quick {
        Ports::free()?
    } else {
        Ports::default()
    };
    let seconds = |s| Some(Duration::from_secs(s));
    let timing = if quick {
        Timing {
            scrape_interval: seconds(1),
            evaluation_interval: seconds(1),
            alert_for: seconds(3),
            alert_grouping: seconds(1),
        }
    } else {
        Timing {
            scrape_interval: seconds(2),
            evaluation_interval: seconds(2),
            alert_for: seconds(20),
            alert_grouping: seconds(5),
        }
    };
    let pace = if quick { 100 } else { 1000 };
    let mut trainer_args = crate::stack::up::trainer_flags(
        crate::train::Algorithm::Linear,
        Duration::from_millis(pace),
    );
    trainer_args.extend(["--iterations", "12", "--linger", "900s"].map(String::from));
    let config = StackConfig {
        assets,
        state_dir: state_dir.clone(),
        ports,
        timing,
        trainer_args,
        drift_window: if quick { 200 } else { 300 },
        runbook_url: None,
        grafana: !quick,
        replicas: 1,
        ha: false,
        otlp: None,
        // The story is timed; MLflow's slow boot would only delay it.
        mlflow: false,
    };
    let started = Instant::now();
    let mut stack = Stack::start(&config, &binaries).await?;
    let outcome = story(
        &mut stack,
        &args,
        &shutdown,
        &state_dir,
        &config.assets.root,
        started,
    )
    .await;
    let keep_running = outcome.is_ok() && !quick && !args.exit && !shutdown.is_requested();
    if keep_running {
        println!("\nThe stack keeps running so you can explore it; Ctrl-C stops everything.");
        print_urls(&stack);
        let _ = stack.supervise(shutdown.requested()).await;
    }
    println!("stopping the stack...");
    stack.shutdown().await;
    outcome
}

async fn story(
    stack: &mut Stack,
    args: &DemoArgs,
    shutdown: &Shutdown,
    state_dir: &Path,
    assets: &Path,
    started: Instant,
) -> anyhow::Result<()> {
    let quick = args.quick;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    print_urls(stack);
    println!("\n[1/5] training (watch training_epochs_total climb on the trainer's /metrics)");
    let app = stack.app_url.clone();
    let prometheus = stack.prometheus_url.clone();
    let ready_url = format!("{app}/ready");
    during(
        stack,
        shutdown,
        "training",
        wait_until(
            "the service to load the trained model",
            Duration::from_secs(120),
            || {
                let client = client.clone();
                let url = ready_url.clone();
                async move {
                    let response = client
                        .get(&url)
                        .send()
                        .await
                        .context("the service did not answer")?;
                    Ok(response.status().is_success().then_some(()))
                }
            },
        ),
    )
    .await?;
    // rate() needs a sample of the new model's counters from before the
    // traffic: a series whose first sample already holds the burst shows
    // no increase at all.
    let api = &crate::prometheus_api::Client::new(&prometheus)?;
    during(
        stack,
        shutdown,
        "training",
        wait_until("Prometheus to scrape the loaded model twice", Duration::from_secs(60), || async move {
            let expr = "count_over_time(model_prediction_requests_total{status=\"success\",model_version!=\"none\"}[1m]) >= 2";
            let samples = api.query(expr, now()).await?;
            Ok((!samples.is_empty()).then_some(()))
        }),
    )
    .await?;
    println!("[2/5] normal traffic");
    let [normal_traffic, bad_traffic] = traffic_phases(&app, quick)?;
    during(
        stack,
        shutdown,
        "normal traffic",
        load(normal_traffic, shutdown),
    )
    .await?;
    concept_shift(stack, shutdown, api, &app, quick).await?;
    println!("[3/5] drifted and invalid traffic");
    during(
        stack,
        shutdown,
        "drifted and invalid traffic",
        load(bad_traffic, shutdown),
    )
    .await?;
    println!(
        "[4/5] waiting for {} to fire",
        EXPECTED_ALERTS.join(" and ")
    );
    let limit = if quick {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(300)
    };
    let firing = during(
        stack,
        shutdown,
        "the alert wait",
        wait_until(
            "DataDrift and InvalidInputSurge firing in Prometheus",
            limit,
            || async move {
                let firing: Vec<_> = api
                    .alerts()
                    .await?
                    .into_iter()
                    .filter(|a| a.state == "firing")
                    .collect();
                let names: Vec<String> = firing.iter().map(|a| a.name()).collect();
                let all = EXPECTED_ALERTS.iter().all(|e| names.iter().any(|n| n == e));
                Ok(all.then_some(firing))
            },
        ),
    )
    .await?;
    println!("firing alerts:");
    for alert in &firing {
        println!(
            "  {:<20} {:<8} {}\n  {:<20} runbook: {}",
            alert.name(),
            alert.labels.get("severity").map_or("", String::as_str),
            alert.annotation("description"),
            "",
            alert.annotation("runbook_url")
        );
    }
    println!("[5/5] writing the report");
    // The whole story and a minute before it.
    let since = Duration::from_secs(started.elapsed().as_secs() + 60);
    let report = report_config(&prometheus, state_dir, assets, since);
    let write = async {
        if std::env::var_os(HOLD_REPORT_ENV).is_some() {
            std::future::pending::<()>().await;
        }
        crate::report::write(&report).await
    };
    during(stack, shutdown, "the report", write).await?;
    println!("report: {}", report.output.display());
    Ok(())
}

/// Part of step 2: labelled predictions whose truth moved while their
/// inputs stayed the data set's own (a concept shift, docs/quality.md).
/// ModelQualityDegraded must fire while DataDrift stays silent: drift
/// watches inputs, only the truth shows a model that became wrong.
async fn concept_shift(
    stack: &mut Stack,
    shutdown: &Shutdown,
    api: &crate::prometheus_api::Client,
    app: &str,
    quick: bool,
) -> anyhow::Result<()> {
    println!("      concept shift: the truth moves by 1.5 standard deviations, the inputs do not");
    // 240 labels: over ModelQualityDegraded's floor of 200 in 30 minutes.
    let shifted = LoadConfig {
        stop: Stop::Requests(1),
        feedback: Some(crate::load::feedback::FeedbackOptions {
            rows: 240,
            fraction: 1.0,
            delay: Duration::from_secs(1),
            concept_shift: 1.5,
        }),
        ..LoadConfig::new(app)
    };
    during(
        stack,
        shutdown,
        "the concept shift",
        load(shifted, shutdown),
    )
    .await?;
    let limit = Duration::from_secs(if quick { 120 } else { 300 });
    let degraded = during(
        stack,
        shutdown,
        "the quality alert wait",
        wait_until(
            "ModelQualityDegraded firing in Prometheus",
            limit,
            || async move {
                let alerts = api.alerts().await?;
                let firing = |name: &str| {
                    alerts
                        .iter()
                        .find(|a| a.name() == name && a.state == "firing")
                        .cloned()
                };
                if let Some(drift) = alerts.iter().find(|a| a.name() == "DataDrift") {
                    anyhow::bail!(
                        "DataDrift is {} during the concept shift: the inputs were meant to stay in distribution",
                        drift.state
                    );
                }
                Ok(firing("ModelQualityDegraded"))
            },
        ),
    )
    .await?;
    println!(
        "      ModelQualityDegraded fired, DataDrift is silent: {}\n      \
         the inputs look like the training data, so only ground truth shows the model is now wrong",
        degraded.annotation("description")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_that_only_saw_errors_names_the_last_one() {
        let error = wait_until("Prometheus", Duration::from_millis(30), || async {
            Err::<Option<()>, _>(anyhow::anyhow!("connection refused"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            error,
            "waiting for Prometheus: gave up after 30ms (last error: connection refused)"
        );
        let mut calls = 0;
        let value = wait_until("a value", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    anyhow::bail!("not up yet")
                }
                Ok(Some(n))
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 2, "an error is not the end of the wait");
    }

    /// The typed configs are what the command lines the demo used to build
    /// give: the story sends and reports exactly as before.
    #[test]
    fn the_phases_are_what_their_command_lines_give() {
        use clap::Parser;
        #[derive(Parser)]
        struct LoadCli {
            #[command(flatten)]
            args: crate::load::LoadArgs,
        }
        #[derive(Parser)]
        struct ReportCli {
            #[command(flatten)]
            args: crate::report::ReportArgs,
        }
        let load = |flags: &[&str]| {
            let cli = LoadCli::try_parse_from(std::iter::once("load").chain(flags.iter().copied()))
                .unwrap();
            cli.args.into_config().unwrap()
        };
        let app = "http://127.0.0.1:9000";
        for (quick, rate, normal, bad) in [(true, "100", "4s", "6s"), (false, "20", "30s", "60s")] {
            let [normal_traffic, bad_traffic] = traffic_phases(app, quick).unwrap();
            let flags = ["--target", app, "--rate", rate, "--duration"];
            assert_eq!(
                (normal_traffic, Output::default()),
                load(&[&flags[..], &[normal, "--mix", "valid=90,batch=10"]].concat())
            );
            assert_eq!(
                (bad_traffic, Output::default()),
                load(
                    &[
                        &flags[..],
                        &[bad, "--mix", "drifted=60,invalid=40", "--drift-sigma", "3"]
                    ]
                    .concat()
                )
            );
        }

        let state = Path::new("/state");
        let report = report_config(
            "http://127.0.0.1:9090",
            state,
            Path::new("/assets"),
            Duration::from_secs(75),
        );
        let cli = ReportCli::try_parse_from([
            "report",
            "--prometheus",
            "http://127.0.0.1:9090",
            "--since",
            "75s",
            "--output",
            "/state/report.html",
            "--svg-dir",
            "/state/report-svg",
            "--assets",
            "/assets",
        ])
        .unwrap();
        assert_eq!(report, ReportConfig::from(cli.args));
    }

    #[test]
    fn the_install_command_skips_recommends_and_asks_nothing() {
        let args = install_args();
        assert_eq!(args[..2], ["install", "-y"]);
        assert!(args.contains(&"--no-install-recommends"), "{args:?}");
        assert!(args.contains(&"prometheus") && args.contains(&"prometheus-alertmanager"));
    }
}
