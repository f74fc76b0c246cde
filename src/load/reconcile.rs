//! Reconciliation: nothing the load generator sent may go missing from the
//! service's own counters, nor may the counters show traffic it did not
//! send. `/metrics` is scraped before and after the run, and the change of
//! `model_prediction_requests_total` (summed over `model_version`) per
//! `status` is compared with the generator's own tally of answers:
//! 2xx → `success`, 4xx → `invalid_input`, 5xx → `error`; a 405 is not a
//! prediction request and is not counted (kept apart as `not_counted`).
//!
//! This holds only while the generator is the service's only client: any
//! other traffic during the run shows up as a mismatch (that is the point:
//! it is indistinguishable from double counting). Requests that failed in
//! transport (timeouts, resets) may or may not have reached the service, so
//! each widens the allowed surplus by one.
//!
//! The exposition is parsed by the `prometheus-parse` crate, the same
//! parser the integration tests read /metrics with, so the tool and the
//! tests cannot disagree about a scrape. That parser skips lines it cannot
//! read; an answer with no sample at all is refused here as not being an
//! exposition.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use serde::Serialize;

/// The counter the service counts every /predict request in.
const REQUESTS_METRIC: &str = "model_prediction_requests_total";

/// The service's request outcomes (`status` label values).
const STATUSES: [&str; 3] = ["success", "invalid_input", "error"];

/// Parses a whole exposition (Prometheus text format 0.0.4); an error when
/// nothing in it is a sample.
pub(super) fn parse_exposition(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("cannot read the exposition")?;
    anyhow::ensure!(
        !scrape.samples.is_empty(),
        "no sample in it (first line: {:?})",
        text.lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>()
    );
    Ok(scrape)
}

/// `model_prediction_requests_total` summed over `model_version`, by
/// `status`; `present` is false when the service exports no such counter
/// (e.g. `mlwatch serve --no-instrumentation`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    pub present: bool,
    pub by_status: BTreeMap<String, f64>,
}

impl RequestCounts {
    fn from_samples(scrape: &prometheus_parse::Scrape) -> Self {
        use prometheus_parse::Value;
        let mut counts = RequestCounts::default();
        for sample in scrape
            .samples
            .iter()
            .filter(|s| s.metric == REQUESTS_METRIC)
        {
            let (Value::Counter(value) | Value::Untyped(value)) = sample.value else {
                continue;
            };
            counts.present = true;
            let status = sample
                .labels
                .get("status")
                .unwrap_or("(no status label)")
                .to_owned();
            *counts.by_status.entry(status).or_insert(0.0) += value;
        }
        counts
    }

    fn get(&self, status: &str) -> f64 {
        self.by_status.get(status).copied().unwrap_or(0.0)
    }
}

/// Scrapes `{target}/metrics` and sums the request counter.
pub async fn scrape(client: &reqwest::Client, target: &str) -> anyhow::Result<RequestCounts> {
    let url = format!("{target}/metrics");
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot scrape {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "scraping {url} answered {status}");
    let text = response
        .text()
        .await
        .with_context(|| format!("cannot read {url}"))?;
    let scrape =
        parse_exposition(&text).with_context(|| format!("{url} is not a Prometheus exposition"))?;
    Ok(RequestCounts::from_samples(&scrape))
}

/// [`scrape`] of every target, summed: replicas behind one round robin
/// together saw what the tool sent.
pub async fn scrape_all(
    client: &reqwest::Client,
    targets: &[String],
) -> anyhow::Result<RequestCounts> {
    let mut total = RequestCounts::default();
    for target in targets {
        let counts = scrape(client, target).await?;
        total.present |= counts.present;
        for (status, value) in counts.by_status {
            *total.by_status.entry(status).or_insert(0.0) += value;
        }
    }
    Ok(total)
}

/// The tool's tally key for a 405: the service does not count a wrong
/// method as a prediction request (docs/service.md).
const NOT_COUNTED: &str = "not_counted";

/// The outcome the service counts for an HTTP status, or `None` for a
/// status it never answers on /predict (1xx, 3xx).
pub fn outcome_of(status: u16) -> Option<&'static str> {
    match status {
        405 => Some(NOT_COUNTED),
        200..=299 => Some("success"),
        400..=499 => Some("invalid_input"),
        500..=599 => Some("error"),
        _ => None,
    }
}

/// The comparison of the generator's tally with the counters' change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Answers the generator received, by the outcome the service counts.
    pub tool: BTreeMap<String, u64>,
    /// Change of the service's counter over the run, by status.
    pub service: BTreeMap<String, f64>,
    /// Requests without an answer (timeouts, resets): each may or may not
    /// have been counted by the service.
    pub transport_errors: u64,
    /// One line per disagreement; empty when the counts reconcile.
    pub mismatches: Vec<String>,
}

impl Reconciliation {
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Compares `tool` (answers by outcome; statuses the service never
    /// counts under the key `unclassified`) with `after - before`.
    pub fn compare(
        tool: &BTreeMap<String, u64>,
        before: &RequestCounts,
        after: &RequestCounts,
        transport_errors: u64,
    ) -> Self {
        let mut mismatches = Vec::new();
        let answered: u64 = tool.values().sum();
        if !after.present && answered + transport_errors > 0 {
            mismatches.push(format!(
                "the service exports no {REQUESTS_METRIC} (started with --no-instrumentation?), so {answered} answers cannot be reconciled; use --no-reconcile"
            ));
        }
        if let Some(n) = tool.get("unclassified").filter(|n| **n > 0) {
            mismatches.push(format!(
                "{n} answers had a status (1xx/3xx) the service never counts on /predict"
            ));
        }
        let mut statuses: Vec<String> = STATUSES.iter().map(|s| s.to_string()).collect();
        for status in before.by_status.keys().chain(after.by_status.keys()) {
            if !statuses.contains(status) {
                statuses.push(status.clone());
            }
        }
        let mut service = BTreeMap::new();
        let mut surplus = 0.0;
        let mut excess = Vec::new();
        for status in &statuses {
            let delta = after.get(status) - before.get(status);
            service.insert(status.clone(), delta);
            let mine = tool.get(status.as_str()).copied().unwrap_or(0) as f64;
            let series = format!("{REQUESTS_METRIC}{{status=\"{status}\"}}");
            if delta < 0.0 {
                mismatches.push(format!(
                    "{series} went down by {} during the run (the service restarted?)",
                    -delta
                ));
            } else if delta < mine {
                mismatches.push(format!(
                    "{series}: the service counted {delta}, the tool got {mine} answers with that outcome; {} are missing from the counter",
                    mine - delta
                ));
            } else if delta > mine {
                surplus += delta - mine;
                excess.push((series, delta, mine));
            }
        }
        if surplus > transport_errors as f64 {
            for (series, delta, mine) in excess {
                let allowance = if transport_errors > 0 {
                    format!(" (beyond the {transport_errors} requests that failed in transport)")
                } else {
                    String::new()
                };
                mismatches.push(format!(
                    "{series}: the service counted {delta}, the tool got {mine} answers with that outcome; {} more than the tool sent{allowance}: another client sending during the run?",
                    delta - mine
                ));
            }
        }
        Reconciliation {
            tool: tool.clone(),
            service,
            transport_errors,
            mismatches,
        }
    }
}

impl fmt::Display for Reconciliation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reconciliation ({REQUESTS_METRIC}, change over the run, summed over model_version):"
        )?;
        writeln!(f, "  {:<15} {:>9} {:>9}", "status", "tool", "service")?;
        for (status, delta) in &self.service {
            let mine = self.tool.get(status).copied().unwrap_or(0);
            let mark = if (mine as f64 - delta).abs() < 0.5 {
                "ok"
            } else {
                "MISMATCH"
            };
            writeln!(f, "  {status:<15} {mine:>9} {delta:>9} {mark}")?;
        }
        if self.transport_errors > 0 {
            writeln!(
                f,
                "  {} requests failed in transport and may or may not be counted",
                self.transport_errors
            )?;
        }
        if self.is_ok() {
            write!(f, "  counts reconcile")
        } else {
            for m in &self.mismatches {
                writeln!(f, "  mismatch: {m}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP model_prediction_requests_total Every request to /predict
# TYPE model_prediction_requests_total counter
model_prediction_requests_total{model_version="abc",status="success"} 10
model_prediction_requests_total{model_version="abc",status="invalid_input"} 4
model_prediction_requests_total{model_version="none",status="error"} 1
model_prediction_requests_total{model_version="def",status="success"} 5 1700000000000
# TYPE model_loaded gauge
model_loaded 1
"#;

    #[test]
    fn request_counts_sum_over_model_versions() {
        let counts = RequestCounts::from_samples(&parse_exposition(EXPOSITION).unwrap());
        assert!(counts.present);
        assert_eq!(counts.get("success"), 15.0);
        assert_eq!(counts.get("invalid_input"), 4.0);
        assert_eq!(counts.get("error"), 1.0);
        let none = RequestCounts::from_samples(&parse_exposition("model_loaded 1").unwrap());
        assert!(!none.present);
    }

    #[test]
    fn an_answer_without_samples_is_not_an_exposition() {
        for text in ["", "<html>not metrics</html>", "# HELP x y\n"] {
            let error = parse_exposition(text).unwrap_err().to_string();
            assert!(error.contains("no sample"), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_service_exposition_reconciles_through_the_shared_parser() {
        // The real exporter's output, not a hand-written sample: labels it
        // adds (otel_scope_*) and its formatting must parse.
        let telemetry = crate::telemetry::Telemetry::new().unwrap();
        let counter = telemetry
            .meter()
            // As serve/metrics.rs names it: the exporter adds `_total`.
            .u64_counter("model_prediction_requests")
            .build();
        counter.add(
            3,
            &[
                opentelemetry::KeyValue::new("status", "success"),
                opentelemetry::KeyValue::new("model_version", "v1"),
            ],
        );
        let counts =
            RequestCounts::from_samples(&parse_exposition(&telemetry.render().unwrap()).unwrap());
        assert!(counts.present);
        assert_eq!(counts.get("success"), 3.0);
    }

    #[test]
    fn statuses_map_to_the_service_outcomes() {
        assert_eq!(outcome_of(200), Some("success"));
        assert_eq!(outcome_of(413), Some("invalid_input"));
        assert_eq!(outcome_of(405), Some(NOT_COUNTED));
        assert_eq!(outcome_of(503), Some("error"));
        assert_eq!(outcome_of(302), None);
    }

    fn counts(pairs: &[(&str, f64)]) -> RequestCounts {
        RequestCounts {
            present: true,
            by_status: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    fn tally(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn equal_deltas_reconcile() {
        let before = counts(&[("success", 3.0)]);
        let after = counts(&[("success", 13.0), ("invalid_input", 5.0)]);
        let r = Reconciliation::compare(
            &tally(&[("success", 10), ("invalid_input", 5)]),
            &before,
            &after,
            0,
        );
        assert!(r.is_ok(), "{:?}", r.mismatches);
        assert_eq!(r.service["error"], 0.0);
    }

    #[test]
    fn extra_service_counts_are_a_mismatch_naming_the_status() {
        let before = counts(&[]);
        let after = counts(&[("success", 12.0), ("invalid_input", 5.0)]);
        let r = Reconciliation::compare(
            &tally(&[("success", 10), ("invalid_input", 5)]),
            &before,
            &after,
            0,
        );
        assert_eq!(r.mismatches.len(), 1, "{:?}", r.mismatches);
        assert!(
            r.mismatches[0].contains("status=\"success\"")
                && r.mismatches[0].contains("2 more than the tool sent"),
            "{}",
            r.mismatches[0]
        );
    }

    #[test]
    fn answers_missing_from_the_counter_are_a_mismatch() {
        let after = counts(&[("success", 8.0)]);
        let r = Reconciliation::compare(&tally(&[("success", 10)]), &counts(&[]), &after, 0);
        assert!(
            r.mismatches.len() == 1 && r.mismatches[0].contains("2 are missing"),
            "{:?}",
            r.mismatches
        );
    }

    #[test]
    fn transport_errors_allow_as_many_uncertain_counts_and_no_more() {
        let after = counts(&[("success", 10.0), ("error", 1.0)]);
        let tool = tally(&[("success", 9)]);
        let within = Reconciliation::compare(&tool, &counts(&[]), &after, 2);
        assert!(within.is_ok(), "{:?}", within.mismatches);
        let beyond = Reconciliation::compare(&tool, &counts(&[]), &after, 1);
        assert_eq!(beyond.mismatches.len(), 2, "{:?}", beyond.mismatches);
    }

    #[test]
    fn a_counter_that_goes_down_is_a_mismatch() {
        let r = Reconciliation::compare(
            &tally(&[]),
            &counts(&[("success", 5.0)]),
            &counts(&[("success", 1.0)]),
            0,
        );
        assert!(r.mismatches[0].contains("went down"), "{:?}", r.mismatches);
    }

    #[test]
    fn a_service_without_the_counter_cannot_reconcile() {
        let r = Reconciliation::compare(
            &tally(&[("success", 1)]),
            &RequestCounts::default(),
            &RequestCounts::default(),
            0,
        );
        assert!(
            r.mismatches.iter().any(|m| m.contains("--no-reconcile")),
            "{:?}",
            r.mismatches
        );
    }
}
