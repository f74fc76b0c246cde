//! `mlwatch runbooks`: the page the NixOS module serves from
//! `mlwatch-runbooks.service`, with an anchor for every alert, and a clean
//! stop on SIGTERM.

mod common;

use std::time::Duration;

use common::{get, listening_address, Process};

/// Every alert name of prometheus/rules/ml_alerts.yml, lowercased: the
/// anchors the alerts' runbook_url and the dashboards' links point at.
fn alert_anchors() -> Vec<String> {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/prometheus/rules/ml_alerts.yml"
    ))
    .expect("prometheus/rules/ml_alerts.yml");
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .map(|name| name.trim().to_lowercase())
        .collect()
}

#[test]
fn the_served_page_has_an_anchor_for_every_alert_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let assets = env!("CARGO_MANIFEST_DIR");
    let mut server = Process::mlwatch(
        "runbooks",
        &["runbooks", "--assets", assets, "--listen", "127.0.0.1:0"],
        dir.path(),
    );
    let address = listening_address(&mut server, "serving the runbooks address=");
    let (status, page) = get(&format!("http://{address}/runbooks")).expect("GET /runbooks");
    assert_eq!(status, 200);
    let anchors = alert_anchors();
    assert!(anchors.len() >= 10, "found only {anchors:?}");
    for anchor in anchors {
        assert!(
            page.contains(&format!("id=\"{anchor}\"")),
            "no anchor #{anchor} in the served runbooks"
        );
    }
    server.signal("TERM");
    let exit = server
        .wait_exit(Duration::from_secs(10))
        .expect("mlwatch runbooks stops within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn without_listen_the_page_is_printed() {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["runbooks", "--assets", env!("CARGO_MANIFEST_DIR")])
        .output()
        .expect("run mlwatch runbooks");
    assert!(run.status.success());
    let page = String::from_utf8_lossy(&run.stdout);
    assert!(
        page.starts_with("<!DOCTYPE html>"),
        "{}",
        &page[..page.len().min(200)]
    );
    assert!(page.contains("id=\"mlapidown\""));
}

#[test]
fn assets_without_runbooks_are_a_clear_error() {
    let empty = tempfile::tempdir().expect("temp dir");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["runbooks", "--assets"])
        .arg(empty.path())
        .output()
        .expect("run mlwatch runbooks");
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("has no"),
        "the error names what is missing: {stderr}"
    );
}
