//! Every query in every rule and dashboard parses as PromQL and selects only
//! metrics that exist: documented in docs/metrics.md (with the series a
//! histogram exports, and a native histogram's bare name where docs/otlp.md
//! pushes an exponential histogram), produced by a recording rule, or built
//! into Prometheus.

mod common;

use std::collections::BTreeSet;

use common::queries::{annotation_queries, dashboard_queries, metric_names, parse, rule_queries};

/// Series Prometheus itself provides.
const BUILT_IN: &[&str] = &[
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
];

fn known_metrics() -> BTreeSet<String> {
    let mut known: BTreeSet<String> = BUILT_IN.iter().map(|s| s.to_string()).collect();
    for section in ["Training", "Service", "Quality", "Liveness"] {
        for (name, kind, _) in common::documented_metrics(section) {
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    known.insert(format!("{name}{suffix}"));
                }
            } else {
                known.insert(name);
            }
        }
    }
    // The push path's native histograms (docs/otlp.md: the rows of type
    // "exponential histogram") are one series under the bare name.
    let native: Vec<String> = common::otlp_mapping()
        .into_iter()
        .filter(|row| row.kind == "exponential histogram")
        .map(|row| row.prometheus)
        .collect();
    assert_eq!(
        native.len(),
        2,
        "exponential histograms in docs/otlp.md: {native:?}"
    );
    known.extend(native);
    known.extend(rule_queries().1);
    known
}

#[test]
fn every_rule_and_dashboard_query_selects_known_metrics() {
    let known = known_metrics();
    let (rules, _) = rule_queries();
    let dashboards = dashboard_queries();
    let annotations = annotation_queries();
    assert!(rules.len() >= 20, "rules found: {}", rules.len());
    assert!(annotations.len() >= 8, "annotations: {}", annotations.len());
    assert!(
        dashboards.len() >= 40,
        "dashboard queries found: {}",
        dashboards.len()
    );
    let mut unknown = Vec::new();
    for query in rules.iter().chain(&dashboards).chain(&annotations) {
        for name in metric_names(&parse(query)) {
            if !known.contains(&name) {
                unknown.push(format!("{}: {name}", query.origin));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "queries select metrics that nothing exports:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_check_catches_an_unknown_metric() {
    let query = common::queries::Query {
        origin: "probe".into(),
        expr: "rate(no_such_metric_total[5m]) / up".into(),
        optional_without_gpu: false,
    };
    let names = metric_names(&parse(&query));
    assert_eq!(
        names,
        BTreeSet::from(["no_such_metric_total".to_owned(), "up".to_owned()])
    );
    assert!(!known_metrics().contains("no_such_metric_total"));
}

#[test]
fn every_documented_metric_is_used_or_deliberately_unqueried() {
    // Not a hard rule of Prometheus, but a dashboard that ignores a metric
    // usually means one of the two drifted. Listed exceptions are metrics
    // for ad-hoc queries only.
    let (rules, _) = rule_queries();
    let used: BTreeSet<String> = rules
        .iter()
        .chain(&dashboard_queries())
        .flat_map(|q| metric_names(&parse(q)))
        .collect();
    let unqueried: Vec<String> = ["Training", "Service", "Quality", "Liveness"]
        .into_iter()
        .flat_map(common::documented_metrics)
        .map(|(name, kind, _)| (name, kind))
        .filter(|(name, kind)| {
            let series = if kind == "histogram" {
                format!("{name}_bucket")
            } else {
                name.clone()
            };
            !used.contains(&series) && !used.contains(name)
        })
        .map(|(name, _)| name)
        .collect();
    let allowed = [
        "admin_unauthorized_requests_total",
        "app_gpu_utilization_percent",
        "app_gpu_memory_used_bytes",
        "app_gpu_memory_total_bytes",
        "app_gpu_temperature_celsius",
        "app_gpu_power_watts",
        // Push health: read ad hoc (or from the other receiver of an HA
        // pair); a receiver that is down shows in its own `up`.
        "mlwatch_otlp_exports_total",
    ];
    let unexpected: Vec<&String> = unqueried
        .iter()
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "documented metrics no rule or dashboard uses: {unexpected:?}"
    );
}
