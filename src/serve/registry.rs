//! The registry poll of `serve --model-uri`: loads the first model, then
//! every `--model-poll-interval` asks the store to load again, which
//! resolves the URI and swaps in the version it points at when that
//! changed. Each poll is counted in `model_registry_polls_total{result}`;
//! one that tried a new version also in `model_reloads_total`, like a
//! SIGHUP. A failure is logged once per episode (when its cause changes),
//! and logged again as resolved when a poll succeeds.
//!
//! With an interval of 0 nothing is polled once a model is loaded (reloads
//! come from SIGHUP and POST /admin/reload only); until then, the first
//! load is tried again every [`FIRST_LOAD_RETRY`], so that a replica that
//! starts before the registry answers still gets its model.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;

use super::loaded::Store;
use super::metrics::ServiceMetrics;
use super::state::{LoadError, Reloaded, Trigger};

/// How often the first load is retried with `--model-poll-interval 0`.
pub const FIRST_LOAD_RETRY: Duration = Duration::from_secs(5);

/// How a poll ended: the `result` label of `model_registry_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    /// The URI points at the version served.
    Unchanged,
    /// A new version was loaded and now answers.
    Updated,
    /// The URI points at a version refused before; not downloaded again.
    KnownBad,
    /// The registry could not say which version the URI points at
    /// (unreachable, an error, no such alias or model).
    ResolveError,
    /// The new version could not be downloaded or is not a valid artifact.
    LoadError,
}

impl PollResult {
    pub const ALL: [PollResult; 5] = [
        PollResult::Unchanged,
        PollResult::Updated,
        PollResult::KnownBad,
        PollResult::ResolveError,
        PollResult::LoadError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PollResult::Unchanged => "unchanged",
            PollResult::Updated => "updated",
            PollResult::KnownBad => "known_bad",
            PollResult::ResolveError => "resolve_error",
            PollResult::LoadError => "load_error",
        }
    }

    fn of(outcome: &Result<Reloaded, LoadError>) -> Self {
        match outcome {
            Ok(reloaded) if reloaded.changed => PollResult::Updated,
            Ok(_) => PollResult::Unchanged,
            Err(LoadError::KnownBad { .. }) => PollResult::KnownBad,
            Err(LoadError::Resolve(_)) => PollResult::ResolveError,
            Err(LoadError::Download(_) | LoadError::Artifact(_)) => PollResult::LoadError,
        }
    }

    /// Whether the poll tried to load a new version (a reload attempt).
    fn attempted_load(self) -> bool {
        matches!(self, PollResult::Updated | PollResult::LoadError)
    }
}

/// `model_registry_polls_total`.
pub struct PollMetrics {
    polls: Counter<u64>,
}

impl PollMetrics {
    pub fn new(meter: &Meter) -> Self {
        let polls = meter
            .u64_counter("model_registry_polls")
            .with_unit("{poll}")
            .with_description("Model registry polls of serve --model-uri by result")
            .build();
        for result in PollResult::ALL {
            polls.add(0, &[KeyValue::new("result", result.as_str())]);
        }
        Self { polls }
    }

    fn count(&self, result: PollResult) {
        self.polls
            .add(1, &[KeyValue::new("result", result.as_str())]);
    }
}

/// Logs a failure when its cause differs from the last one logged, so that
/// a registry down for an hour is one error line, not one per poll.
#[derive(Default)]
struct Episode {
    logged: Option<String>,
}

impl Episode {
    fn record(&mut self, store: &Store, outcome: &Result<Reloaded, LoadError>) {
        match outcome {
            Ok(reloaded) => {
                if self.logged.take().is_some() {
                    tracing::info!(
                        model_version = %reloaded.model_version,
                        registry_version = reloaded.registry_version.as_deref().unwrap_or("none"),
                        "model registry poll succeeded again"
                    );
                }
            }
            // The refusal that made the version known-bad was the log line;
            // a later different failure is a new episode.
            Err(e @ LoadError::KnownBad { .. }) => self.logged = Some(e.kind().to_owned()),
            Err(e) => {
                let cause = format!("{}: {e}", e.kind());
                if self.logged.as_deref() == Some(cause.as_str()) {
                    tracing::debug!("model registry poll failed again: {e}");
                    return;
                }
                match store.model() {
                    Some(model) => tracing::error!(
                        kind = e.kind(),
                        "model registry poll failed, still serving {}: {e} (logged once until \
                         the cause changes; every poll is counted in model_registry_polls_total)",
                        model.artifact.model_version
                    ),
                    None => tracing::error!(
                        kind = e.kind(),
                        "no model loaded yet: {e} (retrying; logged once until the cause changes)"
                    ),
                }
                self.logged = Some(cause);
            }
        }
    }
}

/// Polls until the task is aborted (or, with a zero interval, until the
/// first model is loaded).
pub fn spawn(
    store: Arc<Store>,
    metrics: Arc<ServiceMetrics>,
    polls: PollMetrics,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut episode = Episode::default();
        let mut loaded_once = false;
        loop {
            // Until a model has loaded, loads are the start-up's, not
            // reloads (as with a file artifact).
            let trigger = if loaded_once {
                Trigger::Poll
            } else {
                Trigger::Startup
            };
            let outcome = store.reload(trigger).await;
            let result = PollResult::of(&outcome);
            polls.count(result);
            if trigger == Trigger::Poll && result.attempted_load() {
                metrics.reload(outcome.is_ok());
            }
            episode.record(&store, &outcome);
            loaded_once |= store.model().is_some();
            let wait = match (interval.is_zero(), loaded_once) {
                (false, _) => interval,
                (true, false) => FIRST_LOAD_RETRY,
                (true, true) => return,
            };
            tokio::time::sleep(wait).await;
        }
    })
}
