//! `mlwatch demo` end to end: `--quick` starts the stack from PATH, trains,
//! sends traffic, waits for the two alerts, writes the report and leaves no
//! process behind; a signal at any step stops everything promptly; the
//! demo never clears a directory it did not create and never installs
//! packages unless asked.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::queries::{dashboards, panels};
use common::Process;

fn require_stack_binaries() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    common::stack::require_binary(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    );
}

#[test]
fn quick_demo_fires_both_alerts_writes_the_report_and_cleans_up() {
    require_stack_binaries();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("demo-state");
    let state_arg = state.display().to_string();
    let mut demo = Process::mlwatch(
        "demo",
        &["demo", "--quick", "--state-dir", &state_arg],
        dir.path(),
    );
    let status = demo
        .wait_exit(Duration::from_secs(400))
        .expect("demo finishes within its bounded waits");
    let log = demo.log_text();
    assert!(status.success(), "demo failed ({status}):\n{log}");

    // Each alert is printed as "NAME SEVERITY DESCRIPTION", then its runbook.
    let lines: Vec<&str> = log.lines().collect();
    for alert in ["DataDrift", "InvalidInputSurge"] {
        let at = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(alert))
            .unwrap_or_else(|| panic!("{alert} not printed:\n{log}"));
        let fields: Vec<&str> = lines[at].split_whitespace().collect();
        assert!(
            ["warning", "critical"].contains(&fields[1]),
            "{alert} is printed with its severity: {:?}",
            lines[at]
        );
        assert!(
            fields.len() > 4,
            "{alert} is printed with its description: {:?}",
            lines[at]
        );
        // The page the launcher serves (tests/grafana_dashboards.rs follows it).
        let runbook = lines.get(at + 1).map(|l| l.trim()).unwrap_or("");
        assert!(
            runbook.starts_with("runbook: http://127.0.0.1:")
                && runbook.ends_with(&format!("/runbooks#{}", alert.to_lowercase())),
            "{alert}'s runbook follows it:\n{log}"
        );
    }

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
    assert!(
        state.join(".mlwatch-state").is_file(),
        "the state directory is marked as the demo's"
    );
}

/// Waits until `process`'s log shows `marker`, reading only what was
/// appended, every millisecond: the signal must land in the step the marker
/// opens, and the last step (the report) takes well under a second.
fn wait_for_line(process: &mut Process, marker: &str, timeout: Duration) {
    use std::io::{Read, Seek, SeekFrom};
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    let mut offset = 0u64;
    loop {
        if let Ok(mut file) = std::fs::File::open(&process.log) {
            let mut fresh = Vec::new();
            if file.seek(SeekFrom::Start(offset)).is_ok() && file.read_to_end(&mut fresh).is_ok() {
                offset += fresh.len() as u64;
                seen.push_str(&String::from_utf8_lossy(&fresh));
                if seen.contains(marker) {
                    return;
                }
                // Keep only what a marker split across reads could need.
                let keep = seen.len().saturating_sub(marker.len());
                let keep = (keep..=seen.len())
                    .find(|&i| seen.is_char_boundary(i))
                    .unwrap_or(0);
                seen.drain(..keep);
            }
        }
        if let Some(status) = process.try_exit() {
            panic!(
                "demo ended ({status}) before {marker:?}:\n{}",
                process.log_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not reach {marker:?} in {timeout:?}:\n{}",
            process.log_text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts `mlwatch demo --quick`, waits until its log shows `marker`,
/// sends `signal`, and asserts that the demo and every child are gone
/// within seconds.
fn signal_at(marker: &str, signal: &str) {
    signal_at_with(marker, signal, &[]);
}

/// [`signal_at`] with extra environment variables for the demo.
fn signal_at_with(marker: &str, signal: &str, env: &[(&str, &std::ffi::OsStr)]) {
    require_stack_binaries();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let args: Vec<String> = ["demo", "--quick", "--state-dir", &state_arg]
        .map(String::from)
        .to_vec();
    let mut demo = Process::spawn_with_env(
        "demo",
        std::path::Path::new(env!("CARGO_BIN_EXE_mlwatch")),
        &args,
        env,
        dir.path(),
    );
    if !marker.is_empty() {
        wait_for_line(&mut demo, marker, Duration::from_secs(120));
    }
    demo.signal(signal);
    // Children get SIGTERM with a 5 s grace each. No bound on how fast, which
    // a loaded machine decides: that it stopped, and did not go on, is
    // what the signal must cause.
    let status = demo
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("SIGNAL {signal} at {marker:?} did not stop the demo"));
    let log = demo.log_text();
    assert!(
        !status.success(),
        "an interrupted demo does not report success:\n{log}"
    );
    assert!(
        !log.contains("report: "),
        "the demo did not go on after the signal:\n{log}"
    );
    // The children are reaped by the demo before it exits.
    let left = common::processes_mentioning(&state_arg);
    assert!(left.is_empty(), "processes left behind: {left:#?}\n{log}");
}

#[test]
fn sigterm_right_after_start_stops_the_demo_and_its_children() {
    signal_at("mlwatch stack is up", "TERM");
}

#[test]
fn ctrl_c_while_training_stops_everything() {
    signal_at("[1/5]", "INT");
}

#[test]
fn sigterm_during_normal_traffic_stops_everything() {
    signal_at("[2/5]", "TERM");
}

#[test]
fn ctrl_c_during_bad_traffic_stops_everything() {
    signal_at("[3/5]", "INT");
}

#[test]
fn ctrl_c_during_the_alert_wait_stops_everything() {
    signal_at("[4/5]", "INT");
}

#[test]
fn ctrl_c_while_writing_the_report_stops_everything() {
    // The report step holds until the signal (the demo's test hook): it is
    // otherwise too short for the signal to land in it reliably.
    signal_at_with(
        "[5/5]",
        "INT",
        &[("MLWATCH_TEST_HOLD_REPORT", std::ffi::OsStr::new("1"))],
    );
}

#[test]
fn a_directory_the_demo_did_not_create_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("projects");
    std::fs::create_dir_all(precious.join("logs")).unwrap();
    std::fs::write(precious.join("thesis.tex"), "years of work").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["demo", "--quick", "--state-dir"])
        .arg(&precious)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("not created by mlwatch") && stderr.contains("refusing to clear it"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(precious.join("thesis.tex")).unwrap(),
        "years of work"
    );
    assert!(precious.join("logs").is_dir());
}

/// A PATH with only a fake `apt-get` that records its arguments.
fn fake_apt(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let record = dir.join("apt-args");
    let script = bin.join("apt-get");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" > {}\nexit 1\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    record
}

#[test]
fn without_install_the_demo_prints_the_command_and_runs_no_apt_get() {
    let dir = tempfile::tempdir().unwrap();
    let record = fake_apt(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["demo", "--quick", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("PATH", dir.path().join("bin"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr
            .contains("apt-get install --no-install-recommends prometheus prometheus-alertmanager"),
        "{stderr}"
    );
    assert!(stderr.contains("--install"), "{stderr}");
    assert!(!record.exists(), "apt-get was run without --install");
}

#[test]
fn with_install_apt_get_runs_without_recommends_and_its_failure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let record = fake_apt(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["demo", "--quick", "--install", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("PATH", dir.path().join("bin"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    if nix::unistd::geteuid().is_root() {
        let args = std::fs::read_to_string(&record).expect("apt-get was run");
        assert_eq!(
            args.trim(),
            "install -y --no-install-recommends prometheus prometheus-alertmanager"
        );
        assert!(stderr.contains("apt-get install failed"), "{stderr}");
    } else {
        assert!(stderr.contains("needs root"), "{stderr}");
        assert!(!record.exists());
    }
}
