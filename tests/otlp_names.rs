//! The name mapping of docs/otlp.md: one row per metric of docs/metrics.md,
//! whose Prometheus name is the documented one (with `_total` for counters)
//! and is what Prometheus' OTLP receiver makes of the row's instrument,
//! unit and type under the configured translation strategy
//! (prometheus/otlp.yml). The translation below follows Prometheus'
//! `otlptranslator` (`normalizeName`, `buildUnitSuffixes`, the unit map) for
//! the strategies with suffixes; dashboards and rules then read the same
//! series on both paths.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect(path)
}

/// OTLP's unit strings (UCUM) -> Prometheus' unit words, as otlptranslator
/// maps them; anything else is appended as written, and a unit with `{`
/// or `}` (an annotation) is appended not at all.
fn unit_word(unit: &str) -> String {
    let unit = unit.trim();
    if unit.is_empty() || unit.contains(['{', '}']) {
        return String::new();
    }
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
    .to_owned()
}

/// The Prometheus name of an OTLP metric under
/// UnderscoreEscapingWithSuffixes: split into tokens at every character
/// outside `[a-zA-Z0-9:]`, append the unit word unless it is already a
/// token, move/append `total` for monotonic sums and `ratio` for gauges
/// with unit `1`. (Units with a `/` per-part do not occur here.)
fn translate(name: &str, unit: &str, kind: &str) -> String {
    assert!(!unit.contains('/'), "per-units are not modelled: {unit}");
    let mut tokens: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let word = unit_word(unit)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>();
    let word = word.trim_start_matches('_');
    if !word.is_empty() && !tokens.iter().any(|t| t == word) {
        tokens.push(word.to_owned());
    }
    let mut move_last = |suffix: &str| {
        tokens.retain(|t| t != suffix);
        tokens.push(suffix.to_owned());
    };
    if kind == "sum (monotonic)" {
        move_last("total");
    }
    if unit == "1" && kind == "gauge" {
        move_last("ratio");
    }
    tokens.join("_")
}

/// Each documented metric once (system memory appears in both binaries'
/// tables with the same type and labels).
fn documented() -> BTreeMap<String, (String, Vec<String>)> {
    let mut metrics = BTreeMap::new();
    for section in ["Training", "Service", "Liveness", "Quality"] {
        for (name, kind, labels) in common::documented_metrics(section) {
            let previous = metrics.insert(name.clone(), (kind.clone(), labels.clone()));
            if let Some(previous) = previous {
                assert_eq!(
                    previous,
                    (kind, labels),
                    "{name} documented twice, differently"
                );
            }
        }
    }
    assert!(metrics.len() >= 60, "metrics.md rows: {}", metrics.len());
    metrics
}

#[test]
fn the_translation_follows_otlptranslator() {
    // Examples from otlptranslator's own documentation and the cases that
    // shaped the units in docs/otlp.md.
    assert_eq!(
        translate("http.server.request.duration", "s", "exponential histogram"),
        "http_server_request_duration_seconds"
    );
    assert_eq!(
        translate("requests.count", "1", "sum (monotonic)"),
        "requests_count_total"
    );
    assert_eq!(
        translate("memory.usage", "By", "gauge"),
        "memory_usage_bytes"
    );
    // A name that already ends in its unit gets no second suffix.
    assert_eq!(
        translate("app_memory_usage_bytes", "By", "gauge"),
        "app_memory_usage_bytes"
    );
    // Unit "1" makes a gauge a ratio: why classification_accuracy carries
    // the annotation {score}, not 1.
    assert_eq!(
        translate("classification_accuracy", "1", "gauge"),
        "classification_accuracy_ratio"
    );
    assert_eq!(
        translate("classification_accuracy", "{score}", "gauge"),
        "classification_accuracy"
    );
    // A unit outside the map is appended as written.
    assert_eq!(
        translate("training_epochs", "iterations", "sum (monotonic)"),
        "training_epochs_iterations_total"
    );
}

#[test]
fn every_documented_metric_has_exactly_one_row_with_its_prometheus_name() {
    let rows = common::otlp_mapping();
    let documented = documented();
    let mut by_name: BTreeMap<&str, Vec<&common::OtlpRow>> = BTreeMap::new();
    for row in &rows {
        by_name
            .entry(row.prometheus.as_str())
            .or_default()
            .push(row);
    }
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &documented {
        match by_name.get(name.as_str()).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{name}: no row in docs/otlp.md")),
            Some([row]) => {
                let expected_types: &[&str] = match kind.as_str() {
                    "counter" => &["sum (monotonic)"],
                    "gauge" => &["gauge", "sum (non-monotonic)"],
                    "histogram" => &["histogram", "exponential histogram"],
                    other => panic!("{name}: unknown type {other}"),
                };
                if !expected_types.contains(&row.kind.as_str()) {
                    problems.push(format!("{name}: type {} for a {kind}", row.kind));
                }
                let instrument = if kind == "counter" {
                    name.strip_suffix("_total").unwrap_or(name)
                } else {
                    name
                };
                if row.instrument != instrument {
                    problems.push(format!(
                        "{name}: instrument {} (the scrape path's exporter adds only _total to counters: {instrument})",
                        row.instrument
                    ));
                }
                if &row.labels != labels {
                    problems.push(format!(
                        "{name}: labels {:?}, metrics.md {labels:?}",
                        row.labels
                    ));
                }
                let pushed = translate(&row.instrument, &row.unit, &row.kind);
                if &pushed != name {
                    problems.push(format!(
                        "{name}: the receiver would name {} ({}, {}) {pushed}",
                        row.instrument, row.unit, row.kind
                    ));
                }
            }
            Some(many) => problems.push(format!("{name}: {} rows", many.len())),
        }
    }
    for row in &rows {
        if !documented.contains_key(&row.prometheus) {
            problems.push(format!("{}: not in docs/metrics.md", row.prometheus));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/otlp.md name mapping:\n{}",
        problems.join("\n")
    );
}

/// The strategy the table is derived under is the one Prometheus is given.
#[test]
fn the_table_assumes_the_configured_strategy() {
    let overlay: serde_yaml::Value = serde_yaml::from_str(&read("prometheus/otlp.yml")).unwrap();
    assert_eq!(
        overlay["otlp"]["translation_strategy"],
        "UnderscoreEscapingWithSuffixes"
    );
    // Exponential histograms are the two latency instruments, nothing else.
    let exponential: Vec<String> = common::otlp_mapping()
        .into_iter()
        .filter(|r| r.kind == "exponential histogram")
        .map(|r| r.prometheus)
        .collect();
    assert_eq!(
        exponential,
        [
            "model_prediction_duration_seconds",
            "http_server_request_duration_seconds"
        ]
    );
}
