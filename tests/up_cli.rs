//! `mlwatch up`, the launcher behind the demo and `nix run`: it says how to
//! install what is missing, reports a child that dies with its log, and
//! leaves no process behind when stopped.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, wait_for_status, Process};

fn port_flags(prometheus: u16) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, port) in [
        ("--app-port", free_port()),
        ("--trainer-port", free_port()),
        ("--prometheus-port", prometheus),
        ("--alertmanager-port", free_port()),
        ("--grafana-port", free_port()),
        ("--webhook-port", free_port()),
        // MLflow, when started, must not take its default 5000: tests run
        // in parallel.
        ("--mlflow-port", free_port()),
    ] {
        flags.push(flag.to_owned());
        flags.push(port.to_string());
    }
    flags
}

#[test]
fn missing_prometheus_prints_the_install_command() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["up", "--state-dir"])
        .arg(empty.path().join("state"))
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr
            .contains("apt-get install --no-install-recommends prometheus prometheus-alertmanager"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `mlwatch up FLAGS` in a fresh state directory, expected to refuse:
/// its exit code, its stderr, and whether the state directory was created.
fn up_refused(flags: &[&str]) -> (Option<i32>, String, bool) {
    let empty = tempfile::tempdir().unwrap();
    let state = empty.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .arg("up")
        .args(flags)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr, state.exists())
}

#[test]
fn an_unknown_model_is_refused_before_anything_starts() {
    let (code, stderr, state_written) = up_refused(&["--model", "svm"]);
    assert_eq!(code, Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("invalid value 'svm'") && stderr.contains("linear"),
        "{stderr}"
    );
    assert!(!state_written, "nothing was started or written");
}

/// A replica and MLflow both on 5000 is refused up front, naming both,
/// instead of both starting and the stack dying when MLflow cannot bind.
#[test]
fn two_components_on_one_port_are_refused_before_anything_starts() {
    let (code, stderr, state_written) = up_refused(&["--app-port", "4999", "--replicas", "2"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "port 5000 would be taken twice, by the prediction API replica 1 \
             (--app-port 4999 + 1, --replicas 2) and by MLflow (--mlflow-port 5000)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!state_written, "nothing was started or written");
}

/// `mlwatch up --otlp` with the real Prometheus on PATH. CI runs Debian's
/// 2.42 and 3.5.3, neither of which can receive OTLP (2.x has no receiver,
/// Debian builds 3.5.3 without it): refused before anything starts, naming
/// the version and what to install. A Prometheus with the receiver (Nix's
/// 3.14) is the live push test's case (tests/otlp_push_live.rs), said so.
#[test]
fn up_otlp_refuses_a_prometheus_without_the_receiver_by_name() {
    let prometheus = common::stack::require_binary(&["prometheus"], "prometheus");
    let run = |flag: &str| {
        let out = Command::new(&prometheus).arg(flag).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let version_line = run("--version").lines().next().unwrap_or("").to_owned();
    let version = version_line
        .split_whitespace()
        .nth(2)
        .expect("prometheus --version names a version")
        .split('+')
        .next()
        .unwrap()
        .to_owned();
    if !version.starts_with("2.") && run("--help").contains("--web.enable-otlp-receiver") {
        visible(&format!(
            "not applicable: {version_line} has the OTLP receiver; tests/otlp_push_live.rs pushes into it"
        ));
        return;
    }
    let (code, stderr, state_written) = up_refused(&["--otlp"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("mlwatch up --otlp cannot start")
            && stderr.contains(&format!("Prometheus {version}"))
            && stderr.contains("upstream Prometheus 3.x"),
        "{stderr}"
    );
    if version.starts_with("2.") {
        assert!(stderr.contains("needs Prometheus 3"), "{stderr}");
    } else {
        assert!(
            stderr.contains("built without the OTLP receiver")
                && stderr.contains("/api/v1/otlp/v1/metrics would answer 404"),
            "{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!state_written, "nothing was started or written");
    visible(&format!("refused as expected for {version_line}"));
}

/// A line on the test's real stderr (libtest captures `println!` of a
/// passing test): which Prometheus the refusal was checked against.
fn visible(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "up_cli: {line}");
}

#[test]
fn a_child_that_dies_is_reported_with_its_log_and_the_rest_stop() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Prometheus cannot bind a port that is already taken, and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut args = vec![
        "up".to_owned(),
        "--no-grafana".into(),
        "--no-mlflow".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    args.extend(port_flags(taken.local_addr().unwrap().port()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Process::mlwatch("up", &args, dir.path());
    let status = up
        .wait_exit(Duration::from_secs(60))
        .expect("the launcher gives up");
    let log = up.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("prometheus exited with"),
        "the dead child is named:\n{log}"
    );
    assert!(
        log.contains("address already in use"),
        "its last log lines are shown:\n{log}"
    );
    let left = common::processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

/// `mlwatch up` in `dir/state` with `env`, once its Prometheus answers and
/// it printed its URLs; returns it, the state directory and the app port.
fn start_stack(
    dir: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
    mlflow: bool,
) -> (Process, std::path::PathBuf, String) {
    common::stack::require_binary(&["prometheus"], "prometheus");
    let state = dir.join("state");
    let flags = port_flags(free_port());
    let app_port = flags[1].clone();
    let prometheus_port = flags[5].clone();
    let mut args = vec![
        "up".to_owned(),
        "--no-grafana".into(),
        "--pace".into(),
        "50ms".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    args.extend(flags);
    if !mlflow {
        // A real MLflow takes a core for a minute on a busy machine, and
        // the trainer waits for it; only the test about MLflow runs one.
        args.push("--no-mlflow".into());
    }
    let mut up = Process::spawn_with_env(
        "up",
        std::path::Path::new(env!("CARGO_BIN_EXE_mlwatch")),
        &args,
        env,
        dir,
    );
    wait_for_status(
        &format!("http://127.0.0.1:{prometheus_port}/-/ready"),
        200,
        Duration::from_secs(60),
        &mut up,
    );
    common::poll(
        "the launcher to print its URLs",
        Duration::from_secs(30),
        || up.log_text().contains("mlwatch stack is up").then_some(()),
    );
    (up, state, app_port)
}

/// `mlwatch up` in `dir/state`, once its service and Prometheus answer.
fn running_stack(dir: &std::path::Path) -> (Process, std::path::PathBuf) {
    let (mut up, state, app_port) = start_stack(dir, &[], false);
    // The service becomes ready once the trainer's artifact is reloaded.
    wait_for_status(
        &format!("http://127.0.0.1:{app_port}/ready"),
        200,
        Duration::from_secs(60),
        &mut up,
    );
    (up, state)
}

/// Stands in for an MLflow server that is slow to stop: it ignores SIGTERM,
/// and so do its two children, one in its process group (as MLflow's
/// uvicorn is) and one that left the group with setsid. Each carries the
/// server's arguments, and so the state directory, on its command line.
const STUBBORN_MLFLOW: &str = r#"#!/bin/sh
trap '' TERM
sh -c 'trap "" TERM; while :; do sleep 1; done' uvicorn-stand-in "$@" &
setsid sh -c 'trap "" TERM; while :; do sleep 1; done' job-runner-stand-in "$@" &
while :; do sleep 1; done
"#;

#[test]
fn ctrl_c_stops_an_mlflow_that_ignores_sigterm_and_everything_it_started() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let stub = bin.join("mlflow");
    std::fs::write(&stub, STUBBORN_MLFLOW).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let (mut up, state) = {
        let (up, state, _) = start_stack(dir.path(), &[("PATH", path.as_os_str())], true);
        (up, state)
    };
    let state_text = state.display().to_string();
    let mlflow_tree = || {
        common::processes_mentioning(&state_text)
            .into_iter()
            .filter(|p| p.contains("--backend-store-uri"))
            .collect::<Vec<_>>()
    };
    common::poll(
        "the stub and its two children",
        Duration::from_secs(30),
        || (mlflow_tree().len() == 3).then_some(()),
    );
    up.signal("INT");
    let status = up
        .wait_exit(Duration::from_secs(60))
        .expect("Ctrl-C stops the launcher, past MLflow's grace period");
    assert!(status.success(), "{}", up.log_text());
    // SIGKILLed processes vanish from /proc once their parent (or init)
    // reaps them: the launcher reaps its child, init the orphan.
    common::poll(
        "nothing of the stack to be left",
        Duration::from_secs(10),
        || {
            common::processes_mentioning(&state_text)
                .is_empty()
                .then_some(())
        },
    );
}

/// Every MLflow link of the provisioned dashboards resolves to
/// `--mlflow-port`, however it is spelled in the dashboard: each link is
/// `${mlflow_url}/...`, and the variable is the port's URL.
#[test]
fn the_dashboards_link_to_mlflow_on_the_mlflow_port() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let flags = port_flags(free_port());
    let at = |flag: &str| {
        let i = flags.iter().position(|f| f == flag).unwrap();
        flags[i + 1].clone()
    };
    let mlflow_port = at("--mlflow-port");
    let mut args = vec![
        "up".to_owned(),
        "--no-grafana".into(),
        "--no-mlflow".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    args.extend(flags.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Process::mlwatch("up", &args, dir.path());
    common::poll("the stack to be up", Duration::from_secs(60), || {
        if let Some(status) = up.try_exit() {
            panic!("up exited with {status}:\n{}", up.log_text());
        }
        up.log_text().contains("mlwatch stack is up").then_some(())
    });
    let dashboards = state.join("config/grafana/dashboards");
    let expected = format!("http://127.0.0.1:{mlflow_port}");
    let mut links = 0;
    for file in std::fs::read_dir(&dashboards).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let variable = doc["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "mlflow_url")
            .cloned()
            .unwrap_or_else(|| panic!("{}: no mlflow_url", path.display()));
        for field in [&variable["query"], &variable["current"]["value"]] {
            assert_eq!(field, expected.as_str(), "{}", path.display());
        }
        assert_eq!(variable["options"][0]["value"], expected.as_str());
        // The links themselves: every MLflow run link goes through the
        // variable, and no default port is left anywhere.
        for link in text.split('"').filter(|s| s.contains("/#/experiments/")) {
            assert!(link.starts_with("${mlflow_url}/"), "{link}");
            links += 1;
        }
        assert!(!text.contains("127.0.0.1:5000"), "{}", path.display());
    }
    assert!(links >= 2, "MLflow links checked: {links}");
    up.signal("INT");
    let status = up
        .wait_exit(Duration::from_secs(30))
        .expect("Ctrl-C stops the launcher");
    assert!(status.success(), "{}", up.log_text());
}

#[test]
fn the_stack_comes_up_and_ctrl_c_stops_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, state) = running_stack(dir.path());
    assert!(
        common::processes_mentioning(&state.display().to_string()).len() >= 4,
        "service, trainer, Prometheus, Alertmanager"
    );
    up.signal("INT");
    let status = up
        .wait_exit(Duration::from_secs(30))
        .expect("Ctrl-C stops the launcher");
    assert!(status.success(), "{}", up.log_text());
    let left = common::processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

#[test]
fn a_second_ctrl_c_forces_the_exit_and_still_kills_every_child() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, state) = running_stack(dir.path());
    // Signals do not queue: a second one sent before the first is handled
    // merges with it. So the second goes once the first is logged, while
    // the children are being stopped gracefully. That stop lasts, by
    // construction, the whole grace period: the trainer, stopped first, is
    // frozen (SIGSTOP), so its SIGTERM waits; SIGKILL still ends it.
    let trainer = common::processes_mentioning(&format!("--output {}/model.json", state.display()));
    assert_eq!(trainer.len(), 1, "one trainer: {trainer:?}");
    let pid = trainer[0].split(':').next().unwrap_or_default().to_owned();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .is_ok_and(|s| s.success()));
    up.signal("INT");
    mlwatch::poll::blocking(Duration::from_millis(1), Duration::from_secs(10), || {
        up.log_text().contains("shutting down").then_some(())
    })
    .expect("the first Ctrl-C is handled");
    up.signal("INT");
    let status = up
        .wait_exit(Duration::from_secs(10))
        .expect("a second Ctrl-C exits at once");
    assert_eq!(status.code(), Some(130), "{}", up.log_text());
    assert!(up.log_text().contains("forcing exit"), "{}", up.log_text());
    // SIGKILLed children vanish from /proc once init reaps them.
    common::poll("the children to be gone", Duration::from_secs(30), || {
        common::processes_mentioning(&state.display().to_string())
            .is_empty()
            .then_some(())
    });
}
