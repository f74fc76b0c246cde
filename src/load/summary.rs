//! What a load run saw: the running [`Tally`] every answer is recorded
//! into, and the [`LoadSummary`] made from it at the end, printed as text
//! or JSON.
//!
//! Every request is counted once: either answered (by HTTP status, by
//! class, with its latency) or failed in transport (timeout, connection
//! refused or reset). An answer whose status, or for a bad input whose
//! `error` phrase, is not the one docs/service.md promises for its class is
//! also listed as unexpected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::mix::Class;
use super::reconcile::{outcome_of, Reconciliation};
use super::stats::Histogram;
use super::traffic::{InvalidKind, PlannedRequest};

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The `error` member of a JSON error body, when there is one.
    pub error: Option<String>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransportError {
    Timeout,
    Connect,
    Other,
}

impl TransportError {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Timeout => "timeout",
            TransportError::Connect => "connect",
            TransportError::Other => "other",
        }
    }
}

/// Distinct transport error messages kept as examples.
const ERROR_EXAMPLES: usize = 5;

/// Distinct unexpected answers itemised; further ones are only counted. The
/// key holds the service's own phrase, so without a cap a misbehaving
/// service could grow the tally without end.
const UNEXPECTED_KEYS: usize = 32;

/// The longest service phrase kept, in characters.
const PHRASE_CHARS: usize = 120;

#[derive(Debug, Clone, Default)]
struct ClassTally {
    sent: u64,
    by_status: BTreeMap<u16, u64>,
    transport_errors: u64,
}

/// Key of an unexpected answer: what was sent and expected, what came back.
type UnexpectedKey = (
    Class,
    Option<InvalidKind>,
    u16,
    Option<&'static str>,
    u16,
    Option<String>,
);

/// Counts of a run in progress; merge per-worker tallies or share one.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    sent: u64,
    by_status: BTreeMap<u16, u64>,
    by_class: BTreeMap<Class, ClassTally>,
    by_kind: BTreeMap<InvalidKind, ClassTally>,
    unexpected: BTreeMap<UnexpectedKey, u64>,
    /// Unexpected answers past [`UNEXPECTED_KEYS`] distinct ones.
    unexpected_unlisted: u64,
    errors: BTreeMap<TransportError, u64>,
    error_examples: Vec<String>,
    latency: Histogram,
    /// Open loop only: how late each send started against its schedule.
    lag: Histogram,
}

impl Tally {
    /// Records the fate of one request.
    pub fn record(
        &mut self,
        request: &PlannedRequest,
        result: Result<Answer, (TransportError, String)>,
        latency: Duration,
    ) {
        self.sent += 1;
        let class = self.by_class.entry(request.class).or_default();
        class.sent += 1;
        let mut kind = request.invalid.map(|k| self.by_kind.entry(k).or_default());
        if let Some(k) = kind.as_deref_mut() {
            k.sent += 1;
        }
        match result {
            Ok(answer) => {
                self.latency.record(latency);
                *self.by_status.entry(answer.status).or_default() += 1;
                *class.by_status.entry(answer.status).or_default() += 1;
                if let Some(k) = kind {
                    *k.by_status.entry(answer.status).or_default() += 1;
                }
                let error_differs = request.expected_error.is_some()
                    && answer.error.as_deref() != request.expected_error;
                if answer.status != request.expected_status || error_differs {
                    let key = (
                        request.class,
                        request.invalid,
                        request.expected_status,
                        request.expected_error,
                        answer.status,
                        answer.error.map(|e| e.chars().take(PHRASE_CHARS).collect()),
                    );
                    if let Some(count) = self.unexpected.get_mut(&key) {
                        *count += 1;
                    } else if self.unexpected.len() < UNEXPECTED_KEYS {
                        self.unexpected.insert(key, 1);
                    } else {
                        self.unexpected_unlisted += 1;
                    }
                }
            }
            Err((error, message)) => {
                class.transport_errors += 1;
                if let Some(k) = kind {
                    k.transport_errors += 1;
                }
                *self.errors.entry(error).or_default() += 1;
                if self.error_examples.len() < ERROR_EXAMPLES
                    && !self.error_examples.contains(&message)
                {
                    self.error_examples.push(message);
                }
            }
        }
    }

    /// Records how late an open-loop send started.
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.record(lag);
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn transport_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Answers by the outcome the service counts them under
    /// (`success`/`invalid_input`/`error`, else `unclassified`).
    pub fn outcomes(&self) -> BTreeMap<String, u64> {
        let mut outcomes = BTreeMap::new();
        for (status, n) in &self.by_status {
            let outcome = outcome_of(*status).unwrap_or("unclassified");
            *outcomes.entry(outcome.to_owned()).or_default() += n;
        }
        outcomes
    }
}

/// The end-of-run report, also the `--json` output.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub target: String,
    pub model_version: String,
    /// Where the training reference came from.
    pub reference: String,
    /// `closed loop, concurrency 8` or `open loop, 50 requests/s`.
    pub pace: String,
    pub mix: String,
    /// Stopped early by Ctrl-C/SIGTERM.
    pub interrupted: bool,
    elapsed_seconds: f64,
    /// Requests started; `sent == answered + errors.total`.
    pub sent: u64,
    pub answered: u64,
    /// `sent / elapsed_seconds`.
    pub achieved_rate: f64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<String, u64>,
    pub by_class: BTreeMap<String, ClassSummary>,
    /// Invalid requests by bad-input class.
    pub invalid_kinds: BTreeMap<String, KindSummary>,
    /// Bad-input classes left out for want of a known limit.
    pub skipped_invalid_kinds: Vec<String>,
    /// Answers whose status (or `error` phrase) is not the one expected,
    /// itemised up to 32 distinct kinds.
    pub unexpected: Vec<Unexpected>,
    /// Further unexpected answers, counted but not itemised.
    unexpected_unlisted: u64,
    pub errors: ErrorSummary,
    /// Latency of answered requests, in milliseconds; `None` without answers.
    pub latency_ms: Option<LatencySummary>,
    /// Open loop: how late sends started against the schedule, in
    /// milliseconds (large values mean the generator could not keep the rate).
    schedule_lag_ms: Option<LagSummary>,
    /// `None` with `--no-reconcile`.
    pub reconciliation: Option<Reconciliation>,
    /// The labelled phase (`--feedback-fraction`), if it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback: Option<super::feedback::FeedbackSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassSummary {
    pub sent: u64,
    pub by_status: BTreeMap<String, u64>,
    pub transport_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KindSummary {
    pub expected_status: u16,
    pub expected_error: &'static str,
    pub sent: u64,
    pub by_status: BTreeMap<String, u64>,
    pub transport_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unexpected {
    pub class: Class,
    pub kind: Option<InvalidKind>,
    pub expected_status: u16,
    pub expected_error: Option<&'static str>,
    pub status: u16,
    pub error: Option<String>,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    pub total: u64,
    pub timeout: u64,
    pub connect: u64,
    pub other: u64,
    /// Up to five distinct messages.
    examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct LagSummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The run's description, for the summary's header fields.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    pub model_version: String,
    pub reference: String,
    pub pace: String,
    pub mix: String,
    pub interrupted: bool,
    pub elapsed: Duration,
    pub skipped_invalid_kinds: Vec<InvalidKind>,
}

fn by_status(map: &BTreeMap<u16, u64>) -> BTreeMap<String, u64> {
    map.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn ms(d: Option<Duration>) -> f64 {
    d.map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
}

impl LoadSummary {
    pub fn new(info: RunInfo, tally: &Tally, reconciliation: Option<Reconciliation>) -> Self {
        let elapsed = info.elapsed.as_secs_f64();
        let errors = |e| tally.errors.get(&e).copied().unwrap_or(0);
        let latency = &tally.latency;
        LoadSummary {
            target: info.target,
            model_version: info.model_version,
            reference: info.reference,
            pace: info.pace,
            mix: info.mix,
            interrupted: info.interrupted,
            elapsed_seconds: elapsed,
            sent: tally.sent,
            answered: tally.by_status.values().sum(),
            achieved_rate: if elapsed > 0.0 {
                tally.sent as f64 / elapsed
            } else {
                0.0
            },
            by_status: by_status(&tally.by_status),
            by_class: tally
                .by_class
                .iter()
                .map(|(class, t)| {
                    (
                        class.as_str().to_owned(),
                        ClassSummary {
                            sent: t.sent,
                            by_status: by_status(&t.by_status),
                            transport_errors: t.transport_errors,
                        },
                    )
                })
                .collect(),
            invalid_kinds: tally
                .by_kind
                .iter()
                .map(|(kind, t)| {
                    (
                        kind.as_str().to_owned(),
                        KindSummary {
                            expected_status: kind.status(),
                            expected_error: kind.error(),
                            sent: t.sent,
                            by_status: by_status(&t.by_status),
                            transport_errors: t.transport_errors,
                        },
                    )
                })
                .collect(),
            skipped_invalid_kinds: info
                .skipped_invalid_kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            unexpected: tally
                .unexpected
                .iter()
                .map(
                    |((class, kind, expected_status, expected_error, status, error), count)| {
                        Unexpected {
                            class: *class,
                            kind: *kind,
                            expected_status: *expected_status,
                            expected_error: *expected_error,
                            status: *status,
                            error: error.clone(),
                            count: *count,
                        }
                    },
                )
                .collect(),
            unexpected_unlisted: tally.unexpected_unlisted,
            errors: ErrorSummary {
                total: tally.transport_errors(),
                timeout: errors(TransportError::Timeout),
                connect: errors(TransportError::Connect),
                other: errors(TransportError::Other),
                examples: tally.error_examples.clone(),
            },
            latency_ms: (latency.count() > 0).then(|| LatencySummary {
                p50: ms(latency.percentile(50.0)),
                p95: ms(latency.percentile(95.0)),
                p99: ms(latency.percentile(99.0)),
                max: ms(latency.max()),
                mean: ms(latency.mean()),
            }),
            schedule_lag_ms: (tally.lag.count() > 0).then(|| LagSummary {
                p50: ms(tally.lag.percentile(50.0)),
                p99: ms(tally.lag.percentile(99.0)),
                max: ms(tally.lag.max()),
            }),
            reconciliation,
            feedback: None,
        }
    }

    /// True unless reconciliation ran and found a mismatch.
    pub fn reconciled(&self) -> bool {
        self.reconciliation.as_ref().is_none_or(|r| r.is_ok())
            && self
                .feedback
                .as_ref()
                .is_none_or(|f| f.mismatches.is_empty())
    }

    /// Answers that were not what their class expects.
    pub fn unexpected_answers(&self) -> u64 {
        self.unexpected.iter().map(|u| u.count).sum::<u64>() + self.unexpected_unlisted
    }

    /// An error naming every reconciliation mismatch, if there is one.
    pub fn check_reconciliation(&self) -> anyhow::Result<()> {
        if let Some(feedback) = self.feedback.as_ref().filter(|f| !f.mismatches.is_empty()) {
            anyhow::bail!(
                "the service's feedback counters do not match what the load tool sent: {}",
                feedback.mismatches.join("; ")
            );
        }
        match &self.reconciliation {
            Some(r) if !r.is_ok() => anyhow::bail!(
                "the service's counters do not match what the load tool sent and received ({} mismatch{}): {}",
                r.mismatches.len(),
                if r.mismatches.len() == 1 { "" } else { "es" },
                r.mismatches.join("; ")
            ),
            _ => Ok(()),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn statuses(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(s, n)| format!("{s}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "mlwatch load → {} (model {}, reference from {})",
            self.target, self.model_version, self.reference
        )?;
        writeln!(f, "{}; mix {}", self.pace, self.mix)?;
        writeln!(
            f,
            "sent {} in {:.2} s ({:.1} requests/s){}; answered {}; transport errors {}",
            self.sent,
            self.elapsed_seconds,
            self.achieved_rate,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            },
            self.answered,
            self.errors.total
        )?;
        writeln!(f, "by status: {}", statuses(&self.by_status))?;
        writeln!(f, "by class:")?;
        for (class, c) in &self.by_class {
            write!(
                f,
                "  {class:<8} sent {:>7}  {}",
                c.sent,
                statuses(&c.by_status)
            )?;
            if c.transport_errors > 0 {
                write!(f, "  transport errors×{}", c.transport_errors)?;
            }
            writeln!(f)?;
        }
        if !self.invalid_kinds.is_empty() {
            writeln!(
                f,
                "bad-input classes sent: {} of {} in rotation",
                self.invalid_kinds.len(),
                InvalidKind::ALL.len() - self.skipped_invalid_kinds.len()
            )?;
            if !self.skipped_invalid_kinds.is_empty() {
                writeln!(
                    f,
                    "  skipped: {} (pass the service's --max-body-bytes / --max-batch to include them)",
                    self.skipped_invalid_kinds.join(", ")
                )?;
            }
        }
        match &self.latency_ms {
            Some(l) => writeln!(
                f,
                "latency: p50 {:.3} ms  p95 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms",
                l.p50, l.p95, l.p99, l.max, l.mean
            )?,
            None => writeln!(f, "latency: no answers")?,
        }
        if let Some(lag) = &self.schedule_lag_ms {
            writeln!(
                f,
                "schedule lag (sends behind the rate): p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                lag.p50, lag.p99, lag.max
            )?;
        }
        if self.errors.total > 0 {
            writeln!(
                f,
                "transport errors: timeout×{} connect×{} other×{}",
                self.errors.timeout, self.errors.connect, self.errors.other
            )?;
            for example in &self.errors.examples {
                writeln!(f, "  e.g. {example}")?;
            }
        }
        if self.unexpected_answers() == 0 {
            writeln!(f, "unexpected answers: none")?;
        } else {
            writeln!(f, "unexpected answers: {}", self.unexpected_answers())?;
            for u in &self.unexpected {
                let what = match u.kind {
                    Some(kind) => format!("{}/{kind}", u.class),
                    None => u.class.to_string(),
                };
                let phrase = |e: Option<&str>| e.map(|e| format!(" \"{e}\"")).unwrap_or_default();
                writeln!(
                    f,
                    "  {what}: expected {}{}, got {}{} ×{}",
                    u.expected_status,
                    phrase(u.expected_error),
                    u.status,
                    phrase(u.error.as_deref()),
                    u.count
                )?;
            }
            if self.unexpected_unlisted > 0 {
                writeln!(
                    f,
                    "  and {} more of further kinds (not itemised)",
                    self.unexpected_unlisted
                )?;
            }
        }
        match &self.reconciliation {
            Some(r) => write!(f, "{r}"),
            None => write!(f, "reconciliation: skipped (--no-reconcile)"),
        }?;
        if let Some(fb) = &self.feedback {
            let outcomes: Vec<String> = fb
                .by_outcome
                .iter()
                .map(|(o, n)| format!("{o} {n}"))
                .collect();
            write!(
                f,
                "\nfeedback: {} {} rows predicted, truth sent for {} (concept shift {}): {}; {}",
                fb.predicted,
                fb.dataset,
                fb.feedback_sent,
                fb.concept_shift,
                if outcomes.is_empty() {
                    "-".to_owned()
                } else {
                    outcomes.join(", ")
                },
                match (fb.reconciled, fb.mismatches.is_empty()) {
                    (false, _) => "not reconciled".to_owned(),
                    (true, true) => "every outcome counted by the service".to_owned(),
                    (true, false) => format!("MISMATCH: {}", fb.mismatches.join("; ")),
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Method;

    fn request(class: Class, invalid: Option<InvalidKind>) -> PlannedRequest {
        PlannedRequest {
            class,
            invalid,
            method: Method::POST,
            content_type: Some("application/json"),
            body: bytes::Bytes::new(),
            expected_status: invalid.map_or(200, |k| k.status()),
            expected_error: invalid.map(|k| k.error()),
        }
    }

    fn answer(status: u16, error: Option<&str>) -> Result<Answer, (TransportError, String)> {
        Ok(Answer {
            status,
            error: error.map(str::to_owned),
        })
    }

    #[test]
    fn every_request_is_counted_once_as_answered_or_failed() {
        let mut tally = Tally::default();
        let ms = Duration::from_millis;
        tally.record(&request(Class::Valid, None), answer(200, None), ms(1));
        tally.record(&request(Class::Batch, None), answer(200, None), ms(2));
        let empty = Some(InvalidKind::EmptyBody);
        tally.record(
            &request(Class::Invalid, empty),
            answer(400, Some("empty body")),
            ms(3),
        );
        tally.record(
            &request(Class::Drifted, None),
            Err((TransportError::Timeout, "timed out".into())),
            ms(10_000),
        );
        let summary = LoadSummary::new(
            RunInfo {
                target: "http://x".into(),
                model_version: "v".into(),
                reference: "r".into(),
                pace: "p".into(),
                mix: "m".into(),
                interrupted: false,
                elapsed: Duration::from_secs(2),
                skipped_invalid_kinds: vec![],
            },
            &tally,
            None,
        );
        assert_eq!(
            (summary.sent, summary.answered, summary.errors.total),
            (4, 3, 1)
        );
        assert_eq!(summary.achieved_rate, 2.0);
        assert_eq!(summary.by_status["200"], 2);
        assert_eq!(summary.by_class["drifted"].transport_errors, 1);
        assert_eq!(summary.invalid_kinds["empty_body"].by_status["400"], 1);
        assert_eq!(
            summary.latency_ms.as_ref().unwrap().max,
            3.0,
            "failed requests have no latency"
        );
        assert!(summary.unexpected.is_empty());
        assert_eq!(
            tally.outcomes(),
            BTreeMap::from([("success".into(), 2), ("invalid_input".into(), 1)])
        );
        let text = summary.to_string();
        assert!(text.contains("sent 4 in 2.00 s"), "{text}");
    }

    #[test]
    fn a_wrong_status_or_error_phrase_is_unexpected() {
        let mut tally = Tally::default();
        let d = Duration::from_millis(1);
        let kind = Some(InvalidKind::WrongFeatureCount);
        tally.record(
            &request(Class::Invalid, kind),
            answer(400, Some("malformed JSON")),
            d,
        );
        tally.record(
            &request(Class::Invalid, kind),
            answer(422, Some("unknown feature")),
            d,
        );
        tally.record(
            &request(Class::Valid, None),
            answer(500, Some("prediction failed")),
            d,
        );
        tally.record(
            &request(Class::Invalid, kind),
            answer(422, Some("wrong number of features")),
            d,
        );
        assert_eq!(tally.unexpected.len(), 3, "{:?}", tally.unexpected);
    }

    #[test]
    fn a_service_inventing_phrases_cannot_grow_the_tally_without_end() {
        let mut tally = Tally::default();
        let d = Duration::from_millis(1);
        let kind = Some(InvalidKind::WrongFeatureCount);
        let long = "x".repeat(10 * PHRASE_CHARS);
        tally.record(&request(Class::Invalid, kind), answer(422, Some(&long)), d);
        for i in 0..1000 {
            let phrase = format!("phrase {i}");
            tally.record(
                &request(Class::Invalid, kind),
                answer(422, Some(&phrase)),
                d,
            );
        }
        assert_eq!(tally.unexpected.len(), UNEXPECTED_KEYS);
        assert_eq!(tally.unexpected_unlisted, 1001 - UNEXPECTED_KEYS as u64);
        let kept = tally
            .unexpected
            .keys()
            .filter_map(|k| k.5.as_ref())
            .map(|e| e.chars().count())
            .max();
        assert_eq!(kept, Some(PHRASE_CHARS));
    }
}
