//! `mlwatch demo --quick` end to end: the real binary starts the stack from
//! PATH, trains, sends traffic, waits for the two alerts, writes the report,
//! and leaves no process behind.

mod common;

use std::path::Path;
use std::time::Duration;

use common::queries::{dashboards, panels};
use common::Process;

#[test]
fn quick_demo_fires_both_alerts_writes_the_report_and_cleans_up() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    common::stack::require_binary(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo-state");
    let state_arg = state.display().to_string();
    let mut demo = Process::mlwatch(
        "demo",
        &["demo", "--quick", "--no-install", "--state-dir", &state_arg],
        dir.path(),
    );
    let status = demo
        .wait_exit(Duration::from_secs(400))
        .expect("demo finishes within its bounded waits");
    let log = demo.log_text();
    assert!(status.success(), "demo failed ({status}):\n{log}");

    for alert in ["DataDrift", "InvalidInputSurge"] {
        let line = log
            .lines()
            .find(|l| l.trim_start().starts_with(alert))
            .unwrap_or_else(|| panic!("{alert} not printed:\n{log}"));
        assert!(!line.is_empty());
    }
    assert!(
        log.contains("/runbooks#datadrift"),
        "runbook links printed:\n{log}"
    );

    let report = std::fs::read_to_string(state.join("report.html")).expect("report.html written");
    let mut expected = 0;
    for (_, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            if panel["type"] == "row" {
                continue;
            }
            expected += 1;
            let title = panel["title"].as_str().unwrap_or("");
            let escaped = title
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            assert!(
                report.contains(&escaped),
                "panel {title:?} missing from the report"
            );
        }
    }
    let charts = report.matches("<svg").count();
    assert!(charts >= expected, "{charts} charts for {expected} panels");
    assert!(
        report.contains("DataDrift") && report.contains("InvalidInputSurge"),
        "fired alerts listed in the report"
    );

    let left = common::processes_mentioning(&state_arg);
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    assert!(Path::new(&state).join("logs/prometheus.log").exists());
}
