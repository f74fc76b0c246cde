//! `mlwatch up` with `mlflow` on PATH: it starts a tracking server on
//! loopback with its store in the state directory, prints its URL, the
//! trainer's run lands in it, the service's /model links to that run,
//! Prometheus scrapes MLflow's metrics as job `mlflow`, and Ctrl-C stops the
//! server too.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mlflow::{mlflow_binary, Api};
use common::{free_port, get, wait_for_status, Process};

/// Stops `mlwatch up` with Ctrl-C when the test fails, so that it stops its
/// children (a SIGKILL, which `Process` sends on drop, would orphan them).
struct Interrupt<'a>(&'a mut Process);

impl Drop for Interrupt<'_> {
    fn drop(&mut self) {
        if self.0.try_exit().is_none() {
            self.0.signal("INT");
            let _ = self.0.wait_exit(Duration::from_secs(30));
        }
    }
}

#[test]
fn up_runs_mlflow_and_the_trainer_is_tracked_in_it() {
    common::stack::require_binary(&["prometheus"], "prometheus");
    let mlflow = mlflow_binary();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let [app, trainer, prometheus, alertmanager, grafana, webhook, mlflow_port] =
        [(); 7].map(|_| free_port());
    let path = format!(
        "{}:{}",
        mlflow.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut args = vec![
        format!("PATH={path}"),
        env!("CARGO_BIN_EXE_mlwatch").to_owned(),
    ];
    args.extend(["up", "--no-grafana", "--pace", "300ms", "--state-dir"].map(String::from));
    args.push(state.display().to_string());
    for (flag, port) in [
        ("--app-port", app),
        ("--trainer-port", trainer),
        ("--prometheus-port", prometheus),
        ("--alertmanager-port", alertmanager),
        ("--grafana-port", grafana),
        ("--webhook-port", webhook),
        ("--mlflow-port", mlflow_port),
    ] {
        args.push(flag.to_owned());
        args.push(port.to_string());
    }
    let mut process = Process::spawn("up", Path::new("/usr/bin/env"), &args, dir.path());
    let guard = Interrupt(&mut process);
    let up = &mut *guard.0;
    let mlflow_url = format!("http://127.0.0.1:{mlflow_port}");

    // The service is ready once the trainer's artifact is in: by then the
    // run was created (the trainer waits for a booting server).
    wait_for_status(
        &format!("http://127.0.0.1:{app}/ready"),
        200,
        Duration::from_secs(180),
        up,
    );
    let log = up.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("MLflow") && l.contains(&mlflow_url)),
        "up prints the MLflow URL:\n{log}"
    );
    let (_, body) = get(&format!("http://127.0.0.1:{app}/model")).unwrap();
    let model: serde_json::Value = serde_json::from_str(&body).unwrap();
    let run_id = model["mlflow"]["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("/model names the run: {model}"))
        .to_owned();
    assert_eq!(model["mlflow"]["tracking_uri"], mlflow_url.as_str());
    let api = Api {
        url: mlflow_url.clone(),
    };
    let run = api.run_when_ended(&run_id, Duration::from_secs(60));
    assert_eq!(run["info"]["status"], "FINISHED");
    assert!(
        state.join("mlflow/mlflow.db").is_file(),
        "the store is in the state directory"
    );
    assert!(
        std::fs::read_dir(state.join("mlflow/artifacts")).is_ok_and(|mut d| d.next().is_some()),
        "the artifact is in the state directory"
    );

    // MLflow's own metrics, scraped as job `mlflow` (15 s interval).
    common::stack::eventually("up{job=\"mlflow\"} == 1", Duration::from_secs(60), || {
        let (_, body) = get(&format!(
            "http://127.0.0.1:{prometheus}/api/v1/query?query=up%7Bjob%3D%22mlflow%22%7D"
        ))?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        (answer["data"]["result"][0]["value"][1] == "1").then_some(())
    });

    up.signal("INT");
    let status = up
        .wait_exit(Duration::from_secs(30))
        .expect("Ctrl-C stops the launcher");
    assert!(status.success(), "{}", up.log_text());
    assert!(
        get(&format!("{mlflow_url}/health")).is_none(),
        "the MLflow server (and its uvicorn) stopped"
    );
    let left = common::processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
