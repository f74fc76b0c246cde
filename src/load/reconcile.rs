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
//! The exposition parser here reads the Prometheus text format, enough for
//! counters and gauges: names, labels with escapes, a value, an optional
//! timestamp.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context;
use serde::Serialize;

/// The counter reconciled against.
pub const REQUESTS_METRIC: &str = "model_prediction_requests_total";

/// The `status` label values of [`REQUESTS_METRIC`].
pub const STATUSES: [&str; 3] = ["success", "invalid_input", "error"];

/// One sample of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A line of the exposition that is not a sample, a comment or blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses a whole exposition (Prometheus text format 0.0.4).
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let sample = parse_sample(trimmed).map_err(|reason| ParseError {
            line: index + 1,
            reason,
            text: trimmed.chars().take(200).collect(),
        })?;
        samples.push(sample);
    }
    Ok(samples)
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let mut rest = line;
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    rest = rest[name_end..].trim_start();
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let key_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .ok_or("unterminated labels")?;
            let key = &rest[..key_end];
            if key.is_empty() {
                return Err("bad label name");
            }
            rest = rest[key_end..].trim_start();
            rest = rest.strip_prefix('=').ok_or("label without '='")?;
            rest = rest.trim_start();
            rest = rest.strip_prefix('"').ok_or("label value not quoted")?;
            let (value, after) = label_value(rest)?;
            labels.insert(key.to_owned(), value);
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("expected ',' or '}' after a label");
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value: f64 = value.parse().map_err(|_| "value is not a number")?;
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A quoted label value (after the opening quote) with `\\`, `\"` and `\n`
/// escapes; returns the value and the text after the closing quote.
fn label_value(text: &str) -> Result<(String, &str), &'static str> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            other => value.push(other),
        }
    }
    Err("unterminated label value")
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
    pub fn from_samples(samples: &[Sample]) -> Self {
        let mut counts = RequestCounts::default();
        for sample in samples.iter().filter(|s| s.name == REQUESTS_METRIC) {
            counts.present = true;
            let status = sample
                .labels
                .get("status")
                .cloned()
                .unwrap_or_else(|| "(no status label)".to_owned());
            *counts.by_status.entry(status).or_insert(0.0) += sample.value;
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
    let samples =
        parse_exposition(&text).with_context(|| format!("{url} is not a Prometheus exposition"))?;
    Ok(RequestCounts::from_samples(&samples))
}

/// The tool's tally key for a 405: the service does not count a wrong
/// method as a prediction request (docs/service.md).
pub const NOT_COUNTED: &str = "not_counted";

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
model_loaded 1
weird{path="a \"quoted\" \\ back\nslash",le="+Inf",} +Inf
"#;

    #[test]
    fn exposition_lines_parse_with_escapes_timestamps_and_trailing_commas() {
        let samples = parse_exposition(EXPOSITION).unwrap();
        assert_eq!(samples.len(), 6);
        assert_eq!(samples[0].name, REQUESTS_METRIC);
        assert_eq!(samples[0].labels["status"], "success");
        assert_eq!(samples[3].value, 5.0, "timestamp ignored");
        assert_eq!(samples[4].labels.len(), 0);
        assert_eq!(samples[5].labels["path"], "a \"quoted\" \\ back\nslash");
        assert_eq!(samples[5].value, f64::INFINITY);
    }

    #[test]
    fn malformed_exposition_lines_are_errors_with_their_line_number() {
        for (text, reason) in [
            ("ok 1\nbroken{a=\"x} 1", "unterminated label value"),
            ("ok 1\n{a=\"x\"} 1", "no metric name"),
            ("ok 1\nm{a=x} 1", "label value not quoted"),
            ("ok 1\nm{a=\"x\"}", "no value"),
            ("ok 1\nm one", "value is not a number"),
            ("ok 1\nm 1 2 3", "text after the timestamp"),
        ] {
            let error = parse_exposition(text).unwrap_err();
            assert_eq!((error.line, error.reason), (2, reason), "{text}");
        }
    }

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
