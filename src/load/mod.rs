//! The load generator (`mlwatch load`): sends prediction traffic of a
//! chosen mix (valid, invalid, drifted, batch) to a running service at a
//! fixed rate or concurrency, prints what came back, and checks that the
//! service's own request counters saw exactly that traffic.
//!
//! [`generate`] is the library entry; [`execute`] runs a [`LoadConfig`]
//! and reports like the subcommand (the demo calls it); [`run`] is the
//! subcommand. The parts: [`target`] learns
//! the model's features and training reference, [`traffic`] builds the
//! requests, [`mix`] interleaves the classes, [`driver`] paces and sends,
//! [`stats`] keeps latency percentiles, [`summary`] reports, [`reconcile`]
//! compares counts with `/metrics`, [`feedback`] sends ground truth for
//! labelled predictions afterwards. docs/load.md is the user's guide.

pub mod driver;
pub mod feedback;
pub mod mix;
pub mod reconcile;
pub mod stats;
pub mod summary;
pub mod target;
pub mod traffic;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

pub use driver::{Pace, Stop};
pub use mix::{Class, Mix, MixError};
pub use reconcile::Reconciliation;
pub use summary::LoadSummary;
pub use target::AdminToken;
pub use traffic::{InvalidKind, Limits};

use reconcile::RequestCounts;
use summary::RunInfo;
use traffic::{Generator, TrafficOptions};

/// The slowest `--rate`: one request a day.
const MIN_RATE: f64 = 1.0 / 86_400.0;

/// Closed-loop clients when neither `--rate` nor `--concurrency` is given.
const DEFAULT_CONCURRENCY: usize = 8;
/// Run length when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the prediction service; repeat for several replicas of
    /// one model, which then get the requests in turn (round robin).
    #[arg(long = "target", default_value = "http://127.0.0.1:9000")]
    pub targets: Vec<String>,
    /// Open loop: start this many requests per second, however slowly the
    /// service answers.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each sending its next request when
    /// the previous one is answered [default: 8].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// How long to send, e.g. 30s or 2m [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// How many requests to send.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Traffic mix as class=weight pairs; classes: valid, invalid, drifted, batch.
    #[arg(long, default_value = "valid=100")]
    pub mix: Mix,
    /// Feature that drifted requests shift (repeatable) [default: the model's first feature].
    #[arg(long = "drift-feature", value_name = "NAME")]
    pub drift_features: Vec<String>,
    /// Shift of drifted features, in standard deviations of the training reference.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub drift_sigma: f64,
    /// Instances per batch request.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Seed of the value generator (same seed, same requests).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Per-request timeout, e.g. 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Do not compare the tool's counts with the service's counters (for a
    /// service that other clients use at the same time).
    #[arg(long)]
    no_reconcile: bool,
    /// The service's --max-body-bytes: adds a body just over it to the invalid rotation.
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// The service's --max-batch: adds a batch one over it to the invalid rotation.
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Artifact to read the training reference from, when GET /model does
    /// not expose it and the service's own artifact path is not readable here.
    #[arg(long)]
    pub artifact: Option<PathBuf>,
    /// The service's admin token, for a service that serves GET /model only
    /// with it (prefer --admin-token-file).
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the service's admin token (what its --admin-token-file holds).
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// After the traffic, predict --feedback-rows rows of the model's data
    /// set and send the truth of this share of them (0: no feedback phase).
    #[arg(long, default_value_t = 0.0)]
    pub feedback_fraction: f64,
    /// Data set rows the feedback phase predicts.
    #[arg(long, default_value_t = 200)]
    pub feedback_rows: usize,
    /// Wait between a prediction and its feedback.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub feedback_delay: Duration,
    /// Concept shift of the truth sent: regression targets move by this many
    /// standard deviations; classes become the next class with this probability.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub concept_shift: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also fail on answers with an unexpected status and on transport errors.
    #[arg(long)]
    pub strict: bool,
}

/// Everything a load run needs; [`LoadConfig::new`] gives the CLI's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// Base URLs of the service's replicas (at least one), each serving the
    /// same model; requests go to them in turn.
    pub targets: Vec<String>,
    pub pace: Pace,
    pub stop: Stop,
    pub mix: Mix,
    /// Names of the features drifted requests shift; empty: the first feature.
    pub drift_features: Vec<String>,
    /// Shift in reference standard deviations.
    pub drift_sigma: f64,
    pub batch_size: usize,
    pub seed: u64,
    pub timeout: Duration,
    /// Compare counts with the service's counters (the tool must be its only client).
    pub reconcile: bool,
    /// The service's limits, when known.
    pub limits: Limits,
    /// Artifact to read the training reference from.
    pub artifact: Option<PathBuf>,
    /// The service's admin token, when it guards GET /model with one.
    pub admin_token: Option<AdminToken>,
    /// The labelled phase after the traffic, if any.
    pub feedback: Option<feedback::FeedbackOptions>,
}

impl LoadConfig {
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            targets: vec![target.into()],
            pace: Pace::Concurrency(DEFAULT_CONCURRENCY),
            stop: Stop::Duration(DEFAULT_DURATION),
            mix: Mix::default(),
            drift_features: Vec::new(),
            drift_sigma: 3.0,
            batch_size: 16,
            seed: 42,
            timeout: Duration::from_secs(10),
            reconcile: true,
            limits: Limits::default(),
            artifact: None,
            admin_token: None,
            feedback: None,
        }
    }

    /// Checks what can be checked before contacting the service.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.targets.is_empty(), "--target is required");
        for target in &self.targets {
            let url = reqwest::Url::parse(target)
                .with_context(|| format!("--target {target:?} is not a URL"))?;
            anyhow::ensure!(
                url.scheme() == "http",
                "--target {target}: only http:// is supported (this build has no TLS)"
            );
        }
        match self.pace {
            Pace::Rate(r) => {
                anyhow::ensure!(
                    r.is_finite() && r > 0.0,
                    "--rate must be a positive number of requests per second, got {r}"
                );
                // A slower schedule puts requests past any representable
                // instant; one a day is slow enough for any use.
                anyhow::ensure!(
                    r >= MIN_RATE,
                    "--rate must be at least {MIN_RATE:.3e} (one request a day), got {r}"
                );
            }
            Pace::Concurrency(n) => anyhow::ensure!(n > 0, "--concurrency must be at least 1"),
        }
        match self.stop {
            Stop::Requests(n) => anyhow::ensure!(n > 0, "--requests must be at least 1"),
            Stop::Duration(d) => anyhow::ensure!(!d.is_zero(), "--duration must be positive"),
        }
        anyhow::ensure!(!self.timeout.is_zero(), "--timeout must be positive");
        anyhow::ensure!(
            self.drift_sigma.is_finite(),
            "--drift-sigma must be a finite number"
        );
        anyhow::ensure!(self.batch_size > 0, "--batch-size must be at least 1");
        if let Some(f) = &self.feedback {
            anyhow::ensure!(
                f.fraction > 0.0 && f.fraction <= 1.0,
                "--feedback-fraction must be in (0, 1], got {}",
                f.fraction
            );
            anyhow::ensure!(f.rows > 0, "--feedback-rows must be at least 1");
            anyhow::ensure!(
                f.concept_shift.is_finite(),
                "--concept-shift must be a finite number"
            );
        }
        Ok(())
    }

    fn bases(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|t| t.trim_end_matches('/').to_owned())
            .collect()
    }
}

impl TryFrom<LoadArgs> for LoadConfig {
    type Error = anyhow::Error;

    fn try_from(args: LoadArgs) -> anyhow::Result<Self> {
        let config = LoadConfig {
            targets: args.targets,
            pace: match args.rate {
                Some(rate) => Pace::Rate(rate),
                None => Pace::Concurrency(args.concurrency.unwrap_or(DEFAULT_CONCURRENCY)),
            },
            stop: match args.requests {
                Some(n) => Stop::Requests(n),
                None => Stop::Duration(args.duration.unwrap_or(DEFAULT_DURATION)),
            },
            mix: args.mix,
            drift_features: args.drift_features,
            drift_sigma: args.drift_sigma,
            batch_size: args.batch_size,
            seed: args.seed,
            timeout: args.timeout,
            reconcile: !args.no_reconcile,
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                max_batch: args.max_batch,
            },
            artifact: args.artifact,
            admin_token: crate::serve::admin::load_token(
                args.admin_token.as_deref(),
                args.admin_token_file.as_deref(),
            )?
            .map(AdminToken::new),
            feedback: (args.feedback_fraction != 0.0).then_some(feedback::FeedbackOptions {
                rows: args.feedback_rows,
                fraction: args.feedback_fraction,
                delay: args.feedback_delay,
                concept_shift: args.concept_shift,
            }),
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs the load described by `config` to the end and returns its summary.
/// A reconciliation mismatch is in the summary
/// ([`LoadSummary::check_reconciliation`]), not an error; errors are what
/// prevents the run (bad config, no service, no model, no reference).
pub async fn generate(config: &LoadConfig) -> anyhow::Result<LoadSummary> {
    generate_until(config, std::future::pending()).await
}

/// [`generate`], stopping early (and still summarising and reconciling
/// what was sent) when `interrupt` completes.
async fn generate_until(
    config: &LoadConfig,
    interrupt: impl Future<Output = ()>,
) -> anyhow::Result<LoadSummary> {
    config.validate()?;
    let bases = config.bases();
    let base = bases.first().cloned().context("--target is required")?;
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .build()
        .context("cannot build the HTTP client")?;

    let token = config.admin_token.as_ref();
    let info = target::model_info(&client, &base, token).await?;
    // Round robin over replicas is only one traffic profile when they all
    // serve the model the profile was built from.
    for other in &bases[1..] {
        let version = target::model_info(&client, other, token)
            .await?
            .model_version;
        anyhow::ensure!(
            version == info.model_version,
            "--target {other} serves model {version}, but {base} serves {}: every target must serve the same model",
            info.model_version
        );
    }
    let (profile, source) = target::profile(&info, config.artifact.as_deref())?;
    let drift_features = drift_indices(&config.drift_features, &profile.feature_names)?;
    for &i in &drift_features {
        if profile.stats[i].std == 0.0 && config.mix.weight(Class::Drifted) > 0 {
            tracing::warn!(
                feature = %profile.feature_names[i],
                "this drift feature has a standard deviation of 0 in the reference: drifted requests do not move it"
            );
        }
    }
    let model_version = profile.model_version.clone();
    let generator = Generator::new(
        profile,
        TrafficOptions {
            mix: config.mix,
            drift_features,
            drift_sigma: config.drift_sigma,
            batch_size: config.batch_size,
            seed: config.seed,
            limits: config.limits,
        },
    )?;
    let skipped: Vec<InvalidKind> = InvalidKind::ALL
        .into_iter()
        .filter(|k| !generator.invalid_kinds().contains(k))
        .collect();

    let before = if config.reconcile {
        Some(reconcile::scrape_all(&client, &bases).await.context(
            "reconciliation needs the service's /metrics; pass --no-reconcile to send without it",
        )?)
    } else {
        None
    };

    tracing::info!(
        targets = %bases.join(", "),
        model_version = %model_version,
        pace = %config.pace,
        mix = %config.mix,
        "sending load"
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let drive = driver::drive(
        client.clone(),
        bases.iter().map(|b| format!("{b}/predict")).collect(),
        generator,
        config.pace,
        config.stop,
        stop_rx,
    );
    tokio::pin!(drive);
    tokio::pin!(interrupt);
    let driven = tokio::select! {
        driven = &mut drive => driven,
        () = &mut interrupt => {
            tracing::info!("stopping: waiting for the requests in flight");
            let _ = stop_tx.send(true);
            drive.await
        }
    };

    let reconciliation = match before {
        Some(before) => {
            let after = reconcile::scrape_all(&client, &bases).await;
            Some(reconcile_counts(&driven.tally, &before, after))
        }
        None => None,
    };
    let info = RunInfo {
        target: bases.join(", "),
        model_version,
        reference: source.to_string(),
        pace: config.pace.to_string(),
        mix: config.mix.to_string(),
        interrupted: driven.interrupted,
        elapsed: driven.elapsed,
        skipped_invalid_kinds: skipped,
    };
    let mut summary = LoadSummary::new(info, &driven.tally, reconciliation);
    if let Some(options) = config.feedback {
        let dataset = target::model_info(&client, &base, token)
            .await?
            .dataset
            .context("GET /model names no data set, which --feedback-fraction needs")?;
        summary.feedback = Some(
            feedback::run(
                &client,
                &bases,
                &dataset,
                options,
                config.seed,
                config.reconcile,
            )
            .await?,
        );
    }
    Ok(summary)
}

fn reconcile_counts(
    tally: &summary::Tally,
    before: &RequestCounts,
    after: anyhow::Result<RequestCounts>,
) -> Reconciliation {
    match after {
        Ok(after) => {
            Reconciliation::compare(&tally.outcomes(), before, &after, tally.transport_errors())
        }
        Err(e) => Reconciliation {
            tool: tally.outcomes(),
            service: Default::default(),
            transport_errors: tally.transport_errors(),
            mismatches: vec![format!(
                "cannot scrape the service after the run ({e:#}), so nothing could be compared"
            )],
        },
    }
}

/// Positions of the named drift features; the first feature by default.
fn drift_indices(names: &[String], features: &[String]) -> anyhow::Result<Vec<usize>> {
    if names.is_empty() {
        return Ok(vec![0]);
    }
    let mut indices = Vec::new();
    for name in names {
        let Some(i) = features.iter().position(|f| f == name) else {
            anyhow::bail!(
                "--drift-feature {name:?} is not a feature of the model (features: {features:?})"
            );
        };
        if !indices.contains(&i) {
            indices.push(i);
        }
    }
    Ok(indices)
}

/// What `mlwatch load` does with a run's summary besides printing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Output {
    /// Print the summary as JSON instead of text.
    pub json: bool,
    /// Also fail on unexpected answers and on transport errors.
    pub strict: bool,
}

impl LoadArgs {
    /// The run and its reporting that these flags describe, checked.
    pub fn into_config(self) -> anyhow::Result<(LoadConfig, Output)> {
        let output = Output {
            json: self.json,
            strict: self.strict,
        };
        Ok((LoadConfig::try_from(self)?, output))
    }
}

/// `mlwatch load`: [`execute`] with the command line's config.
pub async fn run(args: LoadArgs, shutdown: &crate::shutdown::Shutdown) -> anyhow::Result<()> {
    let (config, output) = args.into_config()?;
    execute(&config, output, shutdown).await
}

/// Runs `config` until done or a stop request, prints the summary (text or
/// JSON) on stdout, and fails when the counts do not reconcile (or, with
/// `strict`, when an answer was unexpected or a request got none). What
/// `mlwatch load` and `mlwatch demo` run.
pub async fn execute(
    config: &LoadConfig,
    output: Output,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<()> {
    let summary = generate_until(config, shutdown.requested()).await?;
    if output.json {
        println!("{}", summary.to_json());
    } else {
        println!("{summary}");
    }
    summary.check_reconciliation()?;
    if output.strict {
        anyhow::ensure!(
            summary.unexpected.is_empty(),
            "--strict: {} answers had an unexpected status or error",
            summary.unexpected_answers()
        );
        anyhow::ensure!(
            summary.errors.total == 0,
            "--strict: {} requests failed in transport",
            summary.errors.total
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }

    fn parse(args: &[&str]) -> Result<LoadConfig, String> {
        let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        LoadConfig::try_from(cli.load).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_closed_loop_for_ten_seconds_of_valid_traffic() {
        let config = parse(&[]).unwrap();
        assert_eq!(config, LoadConfig::new("http://127.0.0.1:9000"));
        assert_eq!(config.pace, Pace::Concurrency(8));
        assert_eq!(config.stop, Stop::Duration(Duration::from_secs(10)));
        assert_eq!(
            config.mix.to_string(),
            "valid=100,invalid=0,drifted=0,batch=0"
        );
    }

    #[test]
    fn several_targets_are_kept_in_order_and_each_is_validated() {
        let config = parse(&["--target", "http://a:1", "--target", "http://b:2/"]).unwrap();
        assert_eq!(config.targets, ["http://a:1", "http://b:2/"]);
        assert_eq!(config.bases(), ["http://a:1", "http://b:2"]);
        let error = parse(&["--target", "http://a:1", "--target", "https://b"]).unwrap_err();
        assert!(error.contains("--target https://b"), "{error}");
    }

    #[test]
    fn rate_and_concurrency_are_mutually_exclusive() {
        let error = parse(&["--rate", "5", "--concurrency", "2"]).unwrap_err();
        assert!(error.contains("cannot be used with"), "{error}");
        assert_eq!(parse(&["--rate", "5"]).unwrap().pace, Pace::Rate(5.0));
    }

    #[test]
    fn duration_and_request_count_are_mutually_exclusive() {
        let error = parse(&["--duration", "5s", "--requests", "2"]).unwrap_err();
        assert!(error.contains("cannot be used with"), "{error}");
        assert_eq!(
            parse(&["--duration", "1m 30s"]).unwrap().stop,
            Stop::Duration(Duration::from_secs(90))
        );
        assert_eq!(parse(&["--requests", "7"]).unwrap().stop, Stop::Requests(7));
    }

    #[test]
    fn a_bad_mix_is_a_usage_error_that_names_the_problem() {
        let error = parse(&["--mix", "valid=70,bogus=30"]).unwrap_err();
        assert!(error.contains("unknown traffic class \"bogus\""), "{error}");
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        for (args, needle) in [
            (&["--rate", "0"][..], "--rate"),
            (&["--rate", "NaN"][..], "--rate"),
            (&["--rate", "1e-10"][..], "one request a day"),
            (&["--rate", "1e-300"][..], "one request a day"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--requests", "0"][..], "--requests"),
            (&["--batch-size", "0"][..], "--batch-size"),
            (&["--timeout", "0s"][..], "--timeout"),
            (&["--target", "https://example.org"][..], "only http://"),
            (&["--target", "not a url"][..], "not a URL"),
        ] {
            let error = parse(args).unwrap_err();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }

    #[test]
    fn drift_features_default_to_the_first_and_unknown_names_are_refused() {
        let features = vec!["age".to_owned(), "bmi".to_owned()];
        assert_eq!(drift_indices(&[], &features).unwrap(), vec![0]);
        assert_eq!(
            drift_indices(&["bmi".into(), "age".into(), "bmi".into()], &features).unwrap(),
            vec![1, 0]
        );
        let error = drift_indices(&["height".into()], &features)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("\"height\"") && error.contains("bmi"),
            "{error}"
        );
    }

    #[test]
    fn negative_drift_sigma_is_accepted() {
        assert_eq!(parse(&["--drift-sigma", "-2.5"]).unwrap().drift_sigma, -2.5);
    }
}
