//! Training: fit a linfa model on an embedded data set, one iteration at a
//! time, while a /metrics endpoint shows the progress live; then write the
//! model artifact and keep serving the final values for a linger period.
//!
//! The fit runs on a blocking thread; the async runtime serves /metrics and
//! samples resources beside it. [`fit`] is the loop itself, usable without
//! any endpoint (tests, benchmarks).

mod data;
mod evaluate;
mod learners;
mod metrics;
mod push;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use data::{prepare, Prepared, Split, Targets};
pub use evaluate::Scores;
pub use metrics::TrainingMetrics;

use crate::model::{
    Artifact, BinReference, DriftReference, FeatureReference, Model, Task, FORMAT_VERSION,
};
use crate::resources::{ResourceSampler, Role};
use crate::telemetry::Telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// ElasticNet with an alpha sweep (regression).
    Linear,
    /// One decision tree, max_depth searched 1..=iterations (classification).
    Tree,
    /// Bagged decision trees grown one per iteration (classification).
    Forest,
    /// AdaBoost (SAMME) over depth-2 trees, one round per iteration.
    Boost,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Linear => "elasticnet",
            Algorithm::Tree => "decision_tree",
            Algorithm::Forest => "random_forest",
            Algorithm::Boost => "adaboost",
        }
    }

    fn default_dataset(self) -> DatasetName {
        match self {
            Algorithm::Linear => DatasetName::Diabetes,
            _ => DatasetName::Winequality,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    /// 441 patients, 10 features, disease progression (regression).
    Diabetes,
    /// 1599 red wines, 11 features, quality 3-8 (classification).
    Winequality,
    /// 150 flowers, 4 features, 3 species (classification).
    Iris,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Learner to train.
    #[arg(long = "model", value_enum, default_value = "linear")]
    pub algorithm: Algorithm,
    /// Embedded data set; defaults to diabetes for `linear`, winequality otherwise.
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Address of the /metrics endpoint.
    #[arg(long, env = "MLWATCH_TRAIN_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: SocketAddr,
    /// Where to write the model artifact.
    #[arg(long, env = "MLWATCH_MODEL_PATH", default_value = "model.json")]
    pub output: PathBuf,
    /// Minimum time per iteration, so that people can watch progress live.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub pace: Duration,
    /// How long to keep serving the final metrics after training.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Seed for the split and the learners.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Iterations (alpha trials, depths, trees or rounds); default per model.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub iterations: Option<u64>,
    /// Share of rows held out for validation.
    #[arg(long, default_value_t = 0.2, value_parser = parse_fraction)]
    pub validation_fraction: f64,
    /// Rows per scored mini-batch (training_batches_total).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// How many features feature_importance exports.
    #[arg(long, default_value_t = 5)]
    pub top_features: usize,
    /// Pushgateway base URL (http://host:9091) to push the final metrics to.
    /// Not with --no-metrics: a push replaces the job's group, and an empty
    /// one would wipe the last run's metrics.
    #[arg(long, env = "MLWATCH_PUSHGATEWAY", conflicts_with = "no_metrics")]
    pub pushgateway: Option<String>,
    /// Interval of the CPU/memory/GPU sampler.
    #[arg(long, env = "MLWATCH_SAMPLE_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Train without recording metrics or serving /metrics (benchmark baseline).
    #[arg(long)]
    no_metrics: bool,
    #[command(flatten)]
    pub mlflow: crate::mlflow::MlflowArgs,
    #[command(flatten)]
    pub export: crate::telemetry::ExportArgs,
}

/// `service.name` on the push path: the receiver makes it the `job`, the
/// scrape path's job name (prometheus/prometheus.yml).
pub const SERVICE_NAME: &str = "model-training";

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(format!("{value} is not strictly between 0 and 1"))
    }
}

/// What the loop needs besides the data.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub algorithm: Algorithm,
    pub dataset: Option<DatasetName>,
    pub seed: u64,
    pub iterations: Option<usize>,
    pub validation_fraction: f64,
    pub batch_size: usize,
    pub pace: Duration,
    pub top_features: usize,
}

impl FitOptions {
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            dataset: None,
            seed: 42,
            iterations: None,
            validation_fraction: 0.2,
            batch_size: 32,
            pace: Duration::ZERO,
            top_features: 5,
        }
    }

    /// Iterations to run: the flag, or the learner's default.
    pub fn iterations(&self) -> usize {
        self.iterations
            .unwrap_or_else(|| learners::DEFAULT_ITERATIONS(self.algorithm))
    }

    fn dataset(&self) -> anyhow::Result<DatasetName> {
        let dataset = self.dataset.unwrap_or(self.algorithm.default_dataset());
        let wanted = if self.algorithm == Algorithm::Linear {
            Task::Regression
        } else {
            Task::Classification
        };
        if dataset.task() != wanted {
            anyhow::bail!(
                "--model {} needs a {} data set, but {} is {}",
                format!("{:?}", self.algorithm).to_lowercase(),
                wanted.as_str(),
                dataset.as_str(),
                dataset.task().as_str()
            );
        }
        Ok(dataset)
    }
}

/// Progress callbacks of [`fit`].
pub trait Progress {
    fn started(&mut self, _iterations: usize) {}
    fn batch(&mut self) {}
    fn iteration(&mut self, _report: &IterationReport<'_>) {}
}

/// No metrics, no output.
struct Silent;
impl Progress for Silent {}

pub struct IterationReport<'a> {
    pub index: usize,
    pub task: Task,
    pub model: &'a Model,
    pub hyperparameters: &'a [(&'static str, f64)],
    pub train: Scores,
    pub validation: Scores,
    pub improvement: f64,
    pub is_boosting_round: bool,
    pub top_features: Vec<(String, f64)>,
}

/// Trains and returns the sealed artifact (not yet written). `cancel` stops
/// the loop between iterations.
pub fn fit(
    options: &FitOptions,
    progress: &mut dyn Progress,
    cancel: &AtomicBool,
) -> anyhow::Result<Artifact> {
    let dataset = options.dataset()?;
    let data = prepare(dataset, options.seed, options.validation_fraction);
    let iterations = options.iterations();
    let mut learner = learners::learner(options.algorithm, iterations, options.seed);
    let classes = data.class_names.len();
    progress.started(iterations);

    let mut best: Option<(f64, learners::Candidate)> = None;
    let mut last: Option<learners::Candidate> = None;
    let mut previous_score: Option<f64> = None;
    let mut index = 0;
    while let Some(candidate) = learner.next_candidate(&data)? {
        if cancel.load(Ordering::Relaxed) {
            anyhow::bail!("training interrupted");
        }
        let started = std::time::Instant::now();
        let batches = data
            .train
            .records
            .nrows()
            .div_ceil(options.batch_size.max(1))
            .max(1);
        let pause = options.pace / batches as u32;
        let train_predictions = evaluate::predict_in_batches(
            &candidate.model,
            data.train.records.view(),
            options.batch_size,
            || {
                progress.batch();
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            },
        );
        let train = evaluate::score(&data.train.targets, &train_predictions, classes);
        let validation = evaluate::evaluate(&candidate.model, &data.validation, classes);
        let improvement = previous_score.map(|p| validation.score - p).unwrap_or(0.0);
        previous_score = Some(validation.score);
        progress.iteration(&IterationReport {
            index,
            task: data.task,
            model: &candidate.model,
            hyperparameters: &candidate.hyperparameters,
            train,
            validation,
            improvement,
            is_boosting_round: candidate.is_boosting_round,
            top_features: top_features(
                &data.feature_names,
                &candidate.importance,
                options.top_features,
            ),
        });
        index += 1;
        if let Some(rest) = options.pace.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        if learner.keeps_best() {
            if best
                .as_ref()
                .is_none_or(|(score, _)| validation.score > *score)
            {
                best = Some((validation.score, candidate));
            }
        } else {
            last = Some(candidate);
        }
    }
    let chosen = best
        .map(|(_, c)| c)
        .or(last)
        .context("the learner produced no model")?;
    build_artifact(options, &data, chosen)
}

/// Trains with no metrics, no pace and no output: for tests and tools that
/// need an artifact.
pub fn train_quietly(options: &FitOptions) -> anyhow::Result<Artifact> {
    fit(options, &mut Silent, &AtomicBool::new(false))
}

fn top_features(names: &[String], importance: &[f64], k: usize) -> Vec<(String, f64)> {
    let mut ranked: Vec<(String, f64)> = names
        .iter()
        .cloned()
        .zip(importance.iter().copied())
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

fn build_artifact(
    options: &FitOptions,
    data: &Prepared,
    chosen: learners::Candidate,
) -> anyhow::Result<Artifact> {
    let classes = data.class_names.len();
    let train_predictions = chosen.model.predict(data.train.records.view());
    let train = evaluate::score(&data.train.targets, &train_predictions, classes);
    let validation = evaluate::evaluate(&chosen.model, &data.validation, classes);
    let features = data
        .feature_names
        .iter()
        .enumerate()
        .map(|(j, name)| {
            let column: Vec<f64> = data.train.records.column(j).to_vec();
            FeatureReference::from_values(name, &column)
                .with_context(|| format!("feature {name} has no finite values"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let predicted: Vec<f64> = train_predictions.iter().map(|p| p.as_number()).collect();
    let prediction = match data.task {
        Task::Regression => BinReference::deciles(&predicted).context("no finite predictions")?,
        // One bin per class: edges halfway between class indices.
        Task::Classification => {
            BinReference::with_edges((1..classes).map(|c| c as f64 - 0.5).collect(), &predicted)
        }
    };
    let mut metrics = std::collections::BTreeMap::new();
    for (split, scores) in [("train", train), ("validation", validation)] {
        for (name, value) in evaluate::named(data.task, &scores) {
            metrics.insert(format!("{split}_{name}"), value);
        }
    }
    let trained_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Artifact {
        format_version: FORMAT_VERSION,
        model_version: String::new(),
        algorithm: options.algorithm.as_str().to_owned(),
        task: data.task,
        dataset: data.name.to_owned(),
        feature_names: data.feature_names.clone(),
        class_names: data.class_names.clone(),
        trained_at,
        seed: options.seed,
        hyperparameters: chosen
            .hyperparameters
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        metrics,
        reference: DriftReference {
            features,
            prediction,
        },
        model: chosen.model,
        mlflow: None,
    }
    .seal()
    .context("cannot serialise the artifact")
}

/// Forwards progress to the metrics (when on) and, on a terminal, a
/// progress bar; otherwise to the log.
pub struct Reporter {
    metrics: Option<Arc<TrainingMetrics>>,
    bar: Option<indicatif::ProgressBar>,
    mlflow: Option<crate::mlflow::Sink>,
}

impl Reporter {
    pub fn new(metrics: Option<Arc<TrainingMetrics>>, bar: Option<indicatif::ProgressBar>) -> Self {
        Self {
            metrics,
            bar,
            mlflow: None,
        }
    }

    /// Also queue every iteration's metrics for the MLflow run.
    fn with_mlflow(mut self, sink: Option<crate::mlflow::Sink>) -> Self {
        self.mlflow = sink;
        self
    }
}

/// Depth of the deepest tree, leaves over all trees, and trees.
fn tree_stats(model: &Model) -> Option<(usize, usize, usize)> {
    let Model::Trees { trees, .. } = model else {
        return None;
    };
    let depth = trees.iter().map(|t| t.max_depth()).max().unwrap_or(0);
    let leaves = trees.iter().map(|t| t.num_leaves()).sum();
    Some((depth, leaves, trees.len()))
}

/// One iteration as MLflow metrics: the values /metrics shows, keyed as in
/// docs/mlflow.md (`validation_r_squared` is `regression_r_squared{split="validation"}`).
pub fn mlflow_metrics(report: &IterationReport<'_>) -> Vec<(String, f64)> {
    let mut values = Vec::new();
    for (split, scores) in [("train", &report.train), ("validation", &report.validation)] {
        for (name, value) in evaluate::named(report.task, scores) {
            values.push((format!("{split}_{name}"), value));
        }
    }
    values.push((
        "overfitting_gap".to_owned(),
        crate::model::evaluation::overfitting_gap(report.train.score, report.validation.score),
    ));
    values.push(("iteration_improvement".to_owned(), report.improvement));
    for (name, value) in report.hyperparameters {
        values.push((format!("hyperparameter_{name}"), *value));
    }
    if let Some((depth, leaves, trees)) = tree_stats(report.model) {
        values.push(("tree_max_depth".to_owned(), depth as f64));
        values.push(("tree_leaf_count".to_owned(), leaves as f64));
        values.push(("ensemble_tree_count".to_owned(), trees as f64));
    }
    values
}

impl Progress for Reporter {
    fn started(&mut self, iterations: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(iterations as u64);
        }
    }

    fn batch(&mut self) {
        if let Some(m) = &self.metrics {
            m.batch();
        }
    }

    fn iteration(&mut self, report: &IterationReport<'_>) {
        if let Some(m) = &self.metrics {
            m.hyperparameters(report.hyperparameters);
            m.scores(report.task, &report.train, &report.validation);
            if let Some((depth, leaves, trees)) = tree_stats(report.model) {
                m.trees(depth, leaves, trees);
            }
            m.top_features(report.top_features.clone());
            m.iteration(report.improvement, report.is_boosting_round);
        }
        if let Some(sink) = &self.mlflow {
            sink.log_iteration(report.index as i64 + 1, mlflow_metrics(report));
        }
        let line = format!(
            "iteration {} validation score {:.4} (train {:.4}) {}",
            report.index + 1,
            report.validation.score,
            report.train.score,
            report
                .hyperparameters
                .iter()
                .map(|(k, v)| format!("{k}={v:.4}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("val {:.4}", report.validation.score));
                bar.inc(1);
            }
            None => tracing::info!(
                iteration = report.index + 1,
                validation_score = report.validation.score,
                "{line}"
            ),
        }
    }
}

/// `mlwatch train`. A stop requested through `shutdown` interrupts the fit
/// (no artifact), or, once the artifact is being written, lets the write
/// finish and skips the push and the linger.
pub async fn run(args: TrainArgs, shutdown: crate::shutdown::Shutdown) -> anyhow::Result<()> {
    let options = FitOptions {
        algorithm: args.algorithm,
        dataset: args.dataset,
        seed: args.seed,
        iterations: args.iterations.map(|n| n as usize),
        validation_fraction: args.validation_fraction,
        batch_size: args.batch_size as usize,
        pace: args.pace,
        top_features: args.top_features,
    };
    // Fail on a bad flag combination before binding anything.
    let dataset = options.dataset()?;
    let mlflow_client = args.mlflow.client()?;
    if args.no_metrics && args.pushgateway.is_some() {
        // Clap refuses the two together (from the environment too); this
        // guards callers that build TrainArgs themselves.
        anyhow::bail!(
            "--no-metrics with a Pushgateway would push an empty group and wipe the last run's metrics; drop one of them"
        );
    }

    if args.no_metrics && !args.export.otlp_endpoints.is_empty() {
        anyhow::bail!("--no-metrics with --otlp-endpoint would push nothing; drop one of them");
    }
    if args.export.no_scrape && args.pushgateway.is_some() {
        anyhow::bail!(
            "--no-scrape with a Pushgateway would push an empty group and wipe the last run's metrics; push OTLP or to the Pushgateway, not both"
        );
    }

    // The port before the metrics: it names this process on the push path.
    let bound = match args.no_metrics {
        true => None,
        false => Some(crate::listen::bind(args.listen).await?),
    };
    let exporters = match &bound {
        Some((_, address)) => args
            .export
            .exporters(SERVICE_NAME, crate::telemetry::instance_id(address.port()))?,
        None => crate::telemetry::Exporters::scrape_only(),
    };
    let telemetry = Arc::new(Telemetry::build(&[], &exporters)?);
    let metrics = (!args.no_metrics).then(|| Arc::new(TrainingMetrics::new(&telemetry.meter())));
    let mut background = Vec::new();
    if let (Some(m), Some((acceptor, address))) = (&metrics, bound) {
        m.initialise(args.algorithm == Algorithm::Boost);
        m.started();
        match telemetry.scrapes() {
            true => tracing::info!("training metrics on http://{address}/metrics"),
            false => tracing::info!("training health on http://{address}/health"),
        }
        if exporters.push.is_some() {
            tracing::info!("training metrics: {}", exporters.describe());
        }
        background.push(tokio::spawn(serve_metrics(
            acceptor,
            Arc::clone(&telemetry),
        )));
        background.push(
            ResourceSampler::new(&telemetry.meter(), Role::Training).spawn(args.sample_interval),
        );
    }
    let tracker = mlflow_client.map(|(client, uri)| {
        tracing::info!(
            "tracking this run in MLflow at {uri}, experiment {:?}",
            args.mlflow.experiment
        );
        let counter = metrics.clone();
        let failures = crate::mlflow::tracker::Failures::new(&uri, move |operation| {
            if let Some(m) = &counter {
                m.mlflow_error(operation);
            }
        });
        crate::mlflow::Tracker::start(client, uri, mlflow_spec(&args, &options, dataset), failures)
    });

    let cancel = Arc::new(AtomicBool::new(false));
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut reporter =
        Reporter::new(metrics.clone(), bar.clone()).with_mlflow(tracker.as_ref().map(|t| t.sink()));
    let fit_cancel = Arc::clone(&cancel);
    let fit_options = options.clone();
    let mut training =
        tokio::task::spawn_blocking(move || fit(&fit_options, &mut reporter, &fit_cancel));
    let fitted = tokio::select! {
        joined = &mut training => joined.context("the training thread panicked").and_then(|r| r),
        _ = shutdown.requested() => {
            cancel.store(true, Ordering::Relaxed);
            let _ = training.await;
            end_mlflow(tracker, crate::mlflow::Outcome::Killed, true).await;
            anyhow::bail!("training interrupted before it finished; no artifact written");
        }
    };
    let mut artifact = match fitted {
        Ok(artifact) => artifact,
        Err(e) => {
            end_mlflow(
                tracker,
                crate::mlflow::Outcome::Failed,
                shutdown.is_requested(),
            )
            .await;
            return Err(e);
        }
    };
    if let Some(bar) = &bar {
        bar.finish();
    }
    if let Some(t) = &tracker {
        // Creation gives up by itself after the startup wait; the margin
        // covers the last attempt's own timeouts.
        artifact.mlflow = t
            .run(args.mlflow.startup_wait + 4 * args.mlflow.timeout)
            .await;
    }
    if let Err(e) = artifact.save(&args.output) {
        end_mlflow(
            tracker,
            crate::mlflow::Outcome::Failed,
            shutdown.is_requested(),
        )
        .await;
        return Err(e.into());
    }
    tracing::info!(
        model_version = %artifact.model_version,
        path = %args.output.display(),
        "artifact written; validation score {:.4}",
        artifact.validation_score().unwrap_or(f64::NAN)
    );
    if let Some(m) = &metrics {
        m.finished(
            &artifact.model_version,
            &artifact.algorithm,
            artifact.mlflow.as_ref(),
        );
    }
    // After the local artifact and the metrics: a slow MLflow delays
    // neither, and training_in_progress already reads 0.
    end_mlflow(
        tracker,
        crate::mlflow::Outcome::Finished {
            artifact: args.output.clone(),
            params: artifact
                .hyperparameters
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            tags: vec![
                (
                    "mlwatch.model_version".into(),
                    artifact.model_version.clone(),
                ),
                (
                    "mlwatch.feature_names".into(),
                    artifact.feature_names.join(","),
                ),
            ],
            metrics: artifact
                .metrics
                .iter()
                .map(|(k, v)| (format!("final_{k}"), *v))
                .collect(),
            step: 0,
        },
        shutdown.is_requested(),
    )
    .await;
    if let Some(url) = args
        .pushgateway
        .as_deref()
        .filter(|_| !shutdown.is_requested())
    {
        let body = telemetry.render()?;
        tokio::select! {
            pushed = push::push(url, "model-training", body) => match pushed {
                Ok(()) => tracing::info!("pushed final metrics to the pushgateway"),
                Err(e) => tracing::warn!("pushing the final metrics failed: {e:#}"),
            },
            _ = shutdown.requested() => tracing::warn!("push abandoned: shutting down"),
        }
    }
    if metrics.is_some() && !args.linger.is_zero() && !shutdown.is_requested() {
        tracing::info!(
            "serving final metrics for {}",
            humantime::format_duration(args.linger)
        );
        tokio::select! {
            _ = tokio::time::sleep(args.linger) => {}
            _ = shutdown.requested() => {}
        }
    }
    for task in background {
        task.abort();
    }
    // The last push carries the final state (training_in_progress 0).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    Ok(())
}

/// What the MLflow run starts with: the training configuration as params
/// (the chosen model's hyperparameters follow at the end) and tags that
/// say what is trained on what.
fn mlflow_spec(
    args: &TrainArgs,
    options: &FitOptions,
    dataset: DatasetName,
) -> crate::mlflow::RunSpec {
    let params = vec![
        ("model", format!("{:?}", options.algorithm).to_lowercase()),
        ("dataset", dataset.as_str().to_owned()),
        ("seed", options.seed.to_string()),
        ("iterations", options.iterations().to_string()),
        (
            "validation_fraction",
            options.validation_fraction.to_string(),
        ),
        ("batch_size", options.batch_size.to_string()),
        ("top_features", options.top_features.to_string()),
        ("pace", humantime::format_duration(options.pace).to_string()),
    ];
    let tags = vec![
        ("mlflow.source.name", "mlwatch train".to_owned()),
        ("mlflow.source.type", "LOCAL".to_owned()),
        ("mlwatch.version", env!("CARGO_PKG_VERSION").to_owned()),
        ("mlwatch.algorithm", options.algorithm.as_str().to_owned()),
        ("mlwatch.dataset", dataset.as_str().to_owned()),
        ("mlwatch.task", dataset.task().as_str().to_owned()),
    ];
    let owned = |pairs: Vec<(&str, String)>| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Vec<_>>()
    };
    crate::mlflow::RunSpec {
        experiment_name: args.mlflow.experiment.clone(),
        params: owned(params),
        tags: owned(tags),
        register: args.mlflow.register.clone(),
        alias: args.mlflow.alias.clone(),
        startup_wait: args.mlflow.startup_wait,
    }
}

/// Ends the MLflow run (when tracking) and logs what became of it. In a
/// `hurry` (a stop was requested) the server gets 10 s instead of 60 s.
async fn end_mlflow(
    tracker: Option<crate::mlflow::Tracker>,
    outcome: crate::mlflow::Outcome,
    hurry: bool,
) {
    let Some(tracker) = tracker else { return };
    let status = match &outcome {
        crate::mlflow::Outcome::Finished { .. } => "FINISHED",
        crate::mlflow::Outcome::Failed => "FAILED",
        crate::mlflow::Outcome::Killed => "KILLED",
    };
    let wait = if hurry {
        crate::mlflow::tracker::STOP_WAIT
    } else {
        crate::mlflow::tracker::FINISH_WAIT
    };
    let summary = tracker.finish(outcome, wait).await;
    match (&summary.run, summary.failures) {
        (Some(run), 0) => {
            let registered = summary
                .registered_version
                .map(|v| format!("; registered as version {v}"))
                .unwrap_or_default();
            tracing::info!("MLflow run {status}: {}{registered}", run.run_url())
        }
        // The first failure was the warning; this is the tally.
        (Some(run), n) => tracing::info!(
            "MLflow run {} is incomplete: {n} call(s) failed (training_mlflow_errors_total)",
            run.run_url()
        ),
        (None, n) => tracing::info!(
            "no MLflow run was recorded: {n} call(s) failed (training_mlflow_errors_total)"
        ),
    }
}

async fn serve_metrics(acceptor: poem::listener::TcpAcceptor, telemetry: Arc<Telemetry>) {
    use poem::{get, handler, web::Data, EndpointExt, Route};
    #[handler]
    fn metrics(request: &poem::Request, Data(telemetry): Data<&Arc<Telemetry>>) -> poem::Response {
        crate::telemetry::exposition_response(telemetry, request)
    }
    #[handler]
    fn health() -> &'static str {
        "ok"
    }
    // --no-scrape: /health only, /metrics a 404.
    let app = match telemetry.scrapes() {
        true => Route::new().at("/metrics", get(metrics)),
        false => Route::new(),
    }
    .at("/health", get(health))
    .data(telemetry);
    if let Err(e) = poem::Server::new_with_acceptor(acceptor).run(app).await {
        tracing::error!("metrics endpoint stopped: {e}");
    }
}
