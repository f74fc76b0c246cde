//! One training run's MLflow run, driven by a background task so that a slow
//! or dead tracking server never blocks training.
//!
//! The training loop hands each iteration's metrics to a bounded queue
//! ([`Sink::log_iteration`] never waits). The task creates the run (waiting
//! up to [`RunSpec::startup_wait`] for a server that is still booting), drains the
//! queue into `runs/log-batch` requests, and at the end logs the final
//! params and tags, uploads the artifact, registers it when asked and sets
//! the run's status. A failed call is warned about once and counted; after
//! [`GIVE_UP_AFTER`] failed calls in a row the run is abandoned, so nothing
//! is retried forever.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use super::batch::{self, Metric};
use super::client::{Client, MlflowError, Operation, RunInfo, RunStatus};
use super::lineage::MlflowRun;

/// How long the end of the run may take (flush, upload, registration,
/// status) before the trainer stops waiting for it.
pub const FINISH_WAIT: Duration = Duration::from_secs(60);
/// The same when a stop was requested (Ctrl-C, SIGTERM).
pub const STOP_WAIT: Duration = Duration::from_secs(10);
/// Failed calls in a row after which the run is abandoned.
const GIVE_UP_AFTER: u32 = 3;
/// Queued iterations; above the trainer's 10 000-iteration limit, so a
/// single run never overflows it, and memory stays bounded regardless.
const QUEUE: usize = 16_384;

/// Artifact path of the model file inside the run.
const MODEL_DIR: &str = "model";

/// What the run is created with.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub experiment_name: String,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// `--mlflow-register NAME`
    pub register: Option<String>,
    /// `--mlflow-alias ALIAS`: pointed at the registered version.
    pub alias: Option<String>,
    /// How long run creation keeps retrying a server that does not answer
    /// yet (`mlwatch up` starts MLflow beside the trainer; it boots slowly).
    pub startup_wait: Duration,
}

/// How the training ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Finished {
        /// The local artifact, uploaded byte for byte.
        artifact: PathBuf,
        params: Vec<(String, String)>,
        tags: Vec<(String, String)>,
        /// Metrics of the chosen model, logged once at `step`.
        metrics: Vec<(String, f64)>,
        step: i64,
    },
    Failed,
    Killed,
}

impl Outcome {
    fn status(&self) -> RunStatus {
        match self {
            Outcome::Finished { .. } => RunStatus::Finished,
            Outcome::Failed => RunStatus::Failed,
            Outcome::Killed => RunStatus::Killed,
        }
    }
}

/// What the end of the run achieved.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub run: Option<MlflowRun>,
    /// Version number in the model registry, with `--mlflow-register`.
    pub registered_version: Option<String>,
    /// Calls that failed after their retries.
    pub failures: u64,
}

enum Event {
    Iteration(Vec<Metric>),
    Finish(Outcome, oneshot::Sender<Summary>),
}

#[derive(Clone)]
enum Setup {
    Pending,
    Ready(MlflowRun),
    Failed,
}

/// Counts failures (through the caller's counter) and warns about the first.
pub struct Failures {
    count: Box<dyn Fn(Operation) + Send + Sync>,
    warned: AtomicBool,
    total: AtomicU64,
    tracking_uri: String,
}

impl Failures {
    pub fn new(tracking_uri: &str, count: impl Fn(Operation) + Send + Sync + 'static) -> Self {
        Self {
            count: Box::new(count),
            warned: AtomicBool::new(false),
            total: AtomicU64::new(0),
            tracking_uri: tracking_uri.to_owned(),
        }
    }

    fn record(&self, error: &MlflowError) {
        (self.count)(error.operation());
        self.total.fetch_add(1, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "MLflow at {}: {error}. Training goes on and still writes the local artifact; \
                 further MLflow failures are counted in training_mlflow_errors_total, not logged",
                self.tracking_uri
            );
        } else {
            tracing::debug!("MLflow: {error}");
        }
    }

    fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// Hands iterations to the background task; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Sink(mpsc::Sender<Event>);

impl Sink {
    /// Queues one iteration's metrics at `step`, stamped now.
    pub fn log_iteration(&self, step: i64, values: Vec<(String, f64)>) {
        let timestamp_ms = now_ms();
        let metrics = values
            .into_iter()
            .map(|(key, value)| Metric {
                key,
                value,
                timestamp_ms,
                step,
            })
            .collect();
        // Full only if the task is stuck far behind; dropping is the bound.
        let _ = self.0.try_send(Event::Iteration(metrics));
    }
}

pub struct Tracker {
    events: mpsc::Sender<Event>,
    setup: watch::Receiver<Setup>,
    task: tokio::task::JoinHandle<()>,
    failures: Arc<Failures>,
}

impl Tracker {
    /// Starts the background task on the current runtime.
    pub fn start(client: Client, tracking_uri: String, spec: RunSpec, failures: Failures) -> Self {
        let (events, receiver) = mpsc::channel(QUEUE);
        let (setup_tx, setup) = watch::channel(Setup::Pending);
        let failures = Arc::new(failures);
        let session = Session {
            client,
            tracking_uri,
            failures: Arc::clone(&failures),
            in_a_row: 0,
            given_up: false,
        };
        let task = tokio::spawn(session.run(spec, receiver, setup_tx));
        Self {
            events,
            setup,
            task,
            failures,
        }
    }

    pub fn sink(&self) -> Sink {
        Sink(self.events.clone())
    }

    /// The run, once created; `None` if creating it failed or takes longer
    /// than `wait`.
    pub async fn run(&self, wait: Duration) -> Option<MlflowRun> {
        let mut setup = self.setup.clone();
        let ready = tokio::time::timeout(wait, async {
            loop {
                match &*setup.borrow_and_update() {
                    Setup::Ready(run) => return Some(run.clone()),
                    Setup::Failed => return None,
                    Setup::Pending => {}
                }
                if setup.changed().await.is_err() {
                    return None;
                }
            }
        });
        ready.await.ok().flatten()
    }

    /// Sends what is queued, ends the run with `outcome`, and waits up to
    /// `wait` for it; past that the task is abandoned.
    pub async fn finish(self, outcome: Outcome, wait: Duration) -> Summary {
        let (reply, done) = oneshot::channel();
        let sent = self.events.send(Event::Finish(outcome, reply)).await;
        let summary = match sent {
            Ok(()) => tokio::time::timeout(wait, done)
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        match summary {
            Some(summary) => summary,
            None => {
                self.task.abort();
                tracing::warn!(
                    "MLflow did not complete the run within {}; it may be left RUNNING",
                    humantime::format_duration(wait)
                );
                Summary {
                    failures: self.failures.total(),
                    ..Summary::default()
                }
            }
        }
    }
}

struct Session {
    client: Client,
    tracking_uri: String,
    failures: Arc<Failures>,
    in_a_row: u32,
    given_up: bool,
}

impl Session {
    async fn run(
        mut self,
        spec: RunSpec,
        mut events: mpsc::Receiver<Event>,
        setup: watch::Sender<Setup>,
    ) {
        let created = self.create(&spec).await;
        let run = created.as_ref().map(|(info, _)| MlflowRun {
            run_id: info.run_id.clone(),
            experiment_id: info.experiment_id.clone(),
            experiment_name: spec.experiment_name.clone(),
            tracking_uri: self.tracking_uri.clone(),
        });
        let _ = setup.send(match &run {
            Some(run) => Setup::Ready(run.clone()),
            None => Setup::Failed,
        });
        let mut pending: Vec<Metric> = Vec::new();
        loop {
            // Wait when idle; otherwise take what is queued and send it,
            // so that a slow server gets fewer, fuller batches.
            let event = if pending.is_empty() {
                events.recv().await
            } else {
                match events.try_recv() {
                    Ok(event) => Some(event),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        self.send_metrics(&created, &mut pending).await;
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            match event {
                Some(Event::Iteration(metrics)) => {
                    pending.extend(metrics);
                    if pending.len() >= batch::MAX_METRICS {
                        self.send_metrics(&created, &mut pending).await;
                    }
                }
                Some(Event::Finish(outcome, reply)) => {
                    while !pending.is_empty() {
                        self.send_metrics(&created, &mut pending).await;
                    }
                    let mut summary = Summary {
                        run: run.clone(),
                        ..Summary::default()
                    };
                    if let Some((info, _)) = &created {
                        summary.registered_version = self.end(info, &spec, outcome).await;
                    }
                    summary.failures = self.failures.total();
                    let _ = reply.send(summary);
                    return;
                }
                // The trainer went away without finishing (it returned an
                // error before the end): the run stays as it is.
                None => return,
            }
        }
    }

    /// Runs `call` unless MLflow was given up on; counts a failure.
    async fn attempt<T>(
        &mut self,
        call: impl std::future::Future<Output = Result<T, MlflowError>>,
    ) -> Option<T> {
        if self.given_up {
            return None;
        }
        match call.await {
            Ok(value) => {
                self.in_a_row = 0;
                Some(value)
            }
            Err(error) => {
                self.failures.record(&error);
                self.in_a_row += 1;
                if self.in_a_row >= GIVE_UP_AFTER {
                    self.given_up = true;
                    tracing::debug!("MLflow: {GIVE_UP_AFTER} failures in a row; run abandoned");
                }
                None
            }
        }
    }

    /// Finds or creates the experiment and creates the run, retrying while
    /// the server is unreachable for up to [`RunSpec::startup_wait`].
    async fn create(&mut self, spec: &RunSpec) -> Option<(RunInfo, String)> {
        let deadline = Instant::now() + spec.startup_wait;
        let mut tags = spec.tags.clone();
        tags.truncate(batch::MAX_TAGS);
        loop {
            let attempt = async {
                let experiment = self.client.ensure_experiment(&spec.experiment_name).await?;
                let info = self.client.create_run(&experiment, now_ms(), &tags).await?;
                Ok::<_, MlflowError>((info, experiment))
            };
            match attempt.await {
                Ok(created) => break self.log_start(created, spec).await,
                Err(MlflowError::Transport { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    self.failures.record(&error);
                    self.given_up = true;
                    return None;
                }
            }
        }
    }

    async fn log_start(
        &mut self,
        created: (RunInfo, String),
        spec: &RunSpec,
    ) -> Option<(RunInfo, String)> {
        let run_id = created.0.run_id.clone();
        for batch in batch::split(Vec::new(), spec.params.clone(), Vec::new()) {
            self.attempt(self.client.clone().log_batch_owned(run_id.clone(), batch))
                .await;
        }
        Some(created)
    }

    async fn send_metrics(
        &mut self,
        created: &Option<(RunInfo, String)>,
        pending: &mut Vec<Metric>,
    ) {
        let take = pending.len().min(batch::MAX_METRICS);
        let metrics: Vec<Metric> = pending.drain(..take).collect();
        let Some((info, _)) = created else { return };
        for batch in batch::split(metrics, Vec::new(), Vec::new()) {
            self.attempt(
                self.client
                    .clone()
                    .log_batch_owned(info.run_id.clone(), batch),
            )
            .await;
        }
    }

    /// Final params, tags, artifact, registration and status. Returns the
    /// registered version, if any.
    async fn end(&mut self, info: &RunInfo, spec: &RunSpec, outcome: Outcome) -> Option<String> {
        let status = outcome.status();
        let mut version = None;
        if let Outcome::Finished {
            artifact,
            params,
            tags,
            metrics,
            step,
        } = outcome
        {
            let timestamp_ms = now_ms();
            let metrics = metrics
                .into_iter()
                .map(|(key, value)| Metric {
                    key,
                    value,
                    timestamp_ms,
                    step,
                })
                .collect();
            for batch in batch::split(metrics, params, tags) {
                self.attempt(
                    self.client
                        .clone()
                        .log_batch_owned(info.run_id.clone(), batch),
                )
                .await;
            }
            let uploaded = match tokio::fs::read(&artifact).await {
                Ok(bytes) => {
                    let name = artifact
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "model.json".into());
                    let client = self.client.clone();
                    let uri = info.artifact_uri.clone();
                    self.attempt(async move {
                        client
                            .upload_artifact(&uri, &format!("{MODEL_DIR}/{name}"), &bytes)
                            .await
                    })
                    .await
                    .is_some()
                }
                Err(e) => {
                    tracing::warn!(
                        "MLflow: cannot read {} to upload it: {e}",
                        artifact.display()
                    );
                    false
                }
            };
            if let (Some(name), true) = (&spec.register, uploaded) {
                let client = self.client.clone();
                let source = format!("{}/{MODEL_DIR}", info.artifact_uri.trim_end_matches('/'));
                let name = name.clone();
                let run_id = info.run_id.clone();
                let registered = self
                    .attempt({
                        let name = name.clone();
                        async move {
                            client.create_registered_model(&name).await?;
                            client.create_model_version(&name, &source, &run_id).await
                        }
                    })
                    .await;
                // A call of its own: a failure to move the alias must not
                // register the version twice.
                if let (Some(alias), Some(registered)) = (&spec.alias, &registered) {
                    let client = self.client.clone();
                    let call = {
                        let (name, alias, registered) =
                            (name.clone(), alias.clone(), registered.clone());
                        async move { client.set_model_alias(&name, &alias, &registered).await }
                    };
                    if self.attempt(call).await.is_some() {
                        tracing::info!(
                            "MLflow: alias {alias} of {name} now points at version {registered}"
                        );
                    }
                }
                version = registered;
            }
        }
        let client = self.client.clone();
        let run_id = info.run_id.clone();
        self.attempt(async move { client.update_run(&run_id, status, now_ms()).await })
            .await;
        version
    }
}

impl Client {
    /// `log_batch` with owned arguments, for futures that outlive a borrow.
    async fn log_batch_owned(self, run_id: String, batch: batch::Batch) -> Result<(), MlflowError> {
        self.log_batch(&run_id, &batch).await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
