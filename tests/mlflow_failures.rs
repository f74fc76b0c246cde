//! MLflow failing never costs the training: a tracking server killed
//! mid-run, or none at all, still gives a complete local artifact, one
//! warning, and the failures counted in training_mlflow_errors_total.

mod common;

use std::time::Duration;

use common::mlflow::{start_tracked_trainer, MlflowServer};
use common::{free_port, samples, scalar, scrape, value, Process, Scrape};
use mlwatch::model::Artifact;

fn errors(s: &Scrape) -> f64 {
    samples(s, "training_mlflow_errors_total", &[])
        .iter()
        .map(|x| scalar(&x.value))
        .sum()
}

fn finished(url: &str, timeout: Duration) -> Scrape {
    common::stack::eventually("training finishes", timeout, || {
        let s = scrape(url);
        (value(&s, "training_in_progress", &[]) == Some(0.0)).then_some(s)
    })
}

/// Lines that warn about MLflow: the first failure is the only one.
fn mlflow_warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("MLflow"))
        .count()
}

#[test]
fn killing_mlflow_mid_run_leaves_a_complete_artifact_and_a_counted_error() {
    let server = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, metrics) = start_tracked_trainer(
        dir.path(),
        &server.url,
        &[
            "--model",
            "linear",
            "--iterations",
            "30",
            "--pace",
            "400ms",
            "--mlflow-timeout",
            "2s",
        ],
    );
    // Mid-run: the run exists and has iterations in it.
    server.wait_for_logged_iterations("mlwatch", 2);
    let before = value(&scrape(&metrics), "training_epochs_total", &[]).unwrap();
    assert!(before < 30.0, "killed mid-run, after {before} iterations");
    assert_eq!(
        errors(&scrape(&metrics)),
        0.0,
        "no errors while MLflow is up"
    );
    server.kill();

    // That a dead server never slows the loop is the hung-server test's
    // (a refused connection costs nothing to wait for); this one is about
    // what is left and counted.
    let done = finished(&metrics, Duration::from_secs(60));
    let artifact =
        Artifact::load(&dir.path().join("model.json")).expect("a complete, valid local artifact");
    assert_eq!(value(&done, "training_epochs_total", &[]), Some(30.0));
    let lineage = artifact
        .mlflow
        .expect("the run was created before the kill, so the artifact names it");
    let info = samples(&done, "training_model_info", &[]);
    assert_eq!(
        info[0].labels.get("mlflow_run_id"),
        Some(lineage.run_id.as_str())
    );

    // The end of the run (flush, upload, status) fails too, bounded by the
    // give-up rule; the errors are counted, the warning is logged once.
    let counted = common::stack::eventually("errors counted", Duration::from_secs(30), || {
        let n = errors(&scrape(&metrics));
        (n > 0.0).then_some(n)
    });
    assert!(counted >= 1.0);
    // After the run's closing tally no MLflow call is made: count the
    // warnings then (the counter moves before the warning is written).
    common::poll("the MLflow tally", Duration::from_secs(60), || {
        trainer.log_text().contains("is incomplete: ").then_some(())
    });
    let log = trainer.log_text();
    assert_eq!(
        mlflow_warnings(&log),
        1,
        "one warning, not one per call:\n{log}"
    );
    assert!(
        log.contains("training_mlflow_errors_total"),
        "the warning names the counter:\n{log}"
    );
    assert!(trainer.try_exit().is_none(), "still lingering, not crashed");
}

#[test]
fn a_hung_mlflow_server_never_slows_training() {
    let server = MlflowServer::start();
    let dir = tempfile::tempdir().unwrap();
    let experiment = "hung";
    let (mut trainer, metrics) = start_tracked_trainer(
        dir.path(),
        &server.url,
        &[
            "--model",
            "linear",
            "--iterations",
            "30",
            "--pace",
            "300ms",
            "--mlflow-experiment",
            experiment,
            // Far longer than the rest of training: a call that the loop
            // waited for could not have returned, failed or succeeded,
            // before training ends (3 attempts: 90 s before a failure).
            "--mlflow-timeout",
            "30s",
        ],
    );
    server.wait_for_logged_iterations(experiment, 2);
    let before = value(&scrape(&metrics), "training_epochs_total", &[]).unwrap();
    assert!(before < 30.0, "frozen mid-run, after {before} iterations");
    // Every request from now on hangs until the client's timeout.
    server.freeze();
    // Training ends while every MLflow call since the freeze still hangs:
    // no failure is counted yet, so none of them has returned, and the
    // loop cannot have waited for one. No clock decides it.
    let done = finished(&metrics, Duration::from_secs(60));
    assert_eq!(value(&done, "training_epochs_total", &[]), Some(30.0));
    assert_eq!(
        errors(&done),
        0.0,
        "training finished before any MLflow call returned"
    );
    Artifact::load(&dir.path().join("model.json")).expect("a complete, valid local artifact");
    assert!(trainer.try_exit().is_none(), "still lingering, not crashed");
}

#[test]
fn unreachable_mlflow_at_start_still_trains_and_counts_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let (trainer, metrics) = start_tracked_trainer(
        dir.path(),
        &nowhere,
        &[
            "--model",
            "tree",
            "--iterations",
            "4",
            "--mlflow-startup-wait",
            "2s",
        ],
    );
    let done = finished(&metrics, Duration::from_secs(30));
    let artifact = Artifact::load(&dir.path().join("model.json")).expect("valid artifact");
    assert!(artifact.mlflow.is_none(), "no run, so no lineage");
    assert_eq!(
        value(
            &done,
            "training_mlflow_errors_total",
            &[("operation", "experiment")]
        ),
        Some(1.0),
        "the failed experiment lookup is counted once"
    );
    let info = samples(&done, "training_model_info", &[]);
    assert_eq!(info[0].labels.get("mlflow_run_id"), Some(""));
    assert_eq!(info[0].labels.get("mlflow_experiment_id"), Some(""));
    let log = trainer.log_text();
    assert_eq!(mlflow_warnings(&log), 1, "{log}");
}

#[test]
fn a_tracking_uri_that_is_not_http_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Process::mlwatch(
        "trainer",
        &[
            "train",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--mlflow-tracking-uri",
            "file:./mlruns",
        ],
        dir.path(),
    );
    let status = trainer
        .wait_exit(Duration::from_secs(30))
        .expect("exits at once");
    assert!(!status.success());
    let log = trainer.log_text();
    assert!(
        log.contains("tracking URI file:") && log.contains("plain http://"),
        "{log}"
    );
    assert!(!dir.path().join("model.json").exists());
}
