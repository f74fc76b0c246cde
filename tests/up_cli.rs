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

#[test]
fn an_unknown_model_is_refused_before_anything_starts() {
    let empty = tempfile::tempdir().unwrap();
    let state = empty.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["up", "--model", "svm", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
    assert!(
        stderr.contains("invalid value 'svm'") && stderr.contains("linear"),
        "{stderr}"
    );
    assert!(!state.exists(), "nothing was started or written");
}

/// A replica and MLflow both on 5000 is refused up front, naming both,
/// instead of both starting and the stack dying when MLflow cannot bind.
#[test]
fn two_components_on_one_port_are_refused_before_anything_starts() {
    let empty = tempfile::tempdir().unwrap();
    let state = empty.path().join("state");
    let output = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["up", "--app-port", "4999", "--replicas", "2", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "port 5000 would be taken twice, by the prediction API replica 1 \
             (--app-port 4999 + 1, --replicas 2) and by MLflow (--mlflow-port 5000)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!state.exists(), "nothing was started or written");
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

/// `mlwatch up` in `dir/state`, once its service and Prometheus answer.
fn running_stack(dir: &std::path::Path) -> (Process, std::path::PathBuf) {
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
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Process::mlwatch("up", &args, dir);
    // The service becomes ready once the trainer's artifact is reloaded.
    wait_for_status(
        &format!("http://127.0.0.1:{app_port}/ready"),
        200,
        Duration::from_secs(60),
        &mut up,
    );
    wait_for_status(
        &format!("http://127.0.0.1:{prometheus_port}/-/ready"),
        200,
        Duration::from_secs(30),
        &mut up,
    );
    assert!(up.log_text().contains("mlwatch stack is up"));
    (up, state)
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
    // the children are being stopped gracefully (Prometheus alone takes
    // far longer than this loop's millisecond).
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
    common::poll("the children to be gone", Duration::from_secs(5), || {
        common::processes_mentioning(&state.display().to_string())
            .is_empty()
            .then_some(())
    });
}
