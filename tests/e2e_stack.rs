//! End to end on loopback: trainer, service, Prometheus 2.x, Alertmanager and
//! a webhook receiver, all real. Configs are derived from prometheus/ by
//! `mlwatch::stack::config` with 1 s intervals and 3 s `for:`.

mod common;

use std::time::Duration;

use common::stack::{eventually, LiveStack, StackOptions};

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn alerts_fire_through_prometheus_and_alertmanager() {
    let stack = LiveStack::start(StackOptions::default());

    // Every target up, every group loaded, every rule healthy.
    eventually("all targets up", WAIT, || {
        let targets = stack.api("/api/v1/targets")["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let jobs: std::collections::BTreeSet<String> = targets
            .iter()
            .map(|t| t["labels"]["job"].as_str().unwrap_or("").to_owned())
            .collect();
        let all_up = targets.iter().all(|t| t["health"] == "up");
        (all_up && jobs.len() == 4).then_some(())
    });
    let expected_groups = [
        "ml_recording_rules",
        "mlwatch-api",
        "mlwatch-drift",
        "mlwatch-training",
    ];
    eventually("every rule evaluated with health ok", WAIT, || {
        let groups = stack.api("/api/v1/rules")["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = groups
            .iter()
            .map(|g| g["name"].as_str().unwrap_or("").to_owned())
            .collect();
        let rules: Vec<serde_json::Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let ok = expected_groups.iter().all(|g| names.iter().any(|n| n == g))
            && rules.len() >= 22
            && rules.iter().all(|r| r["health"] == "ok");
        ok.then_some(())
    });

    // A burst of invalid requests: InvalidInputSurge fires in Prometheus and
    // reaches the test's webhook through Alertmanager.
    let valid = stack.batch(0, 1, None);
    eventually("InvalidInputSurge firing in Prometheus", WAIT, || {
        for i in 0..20 {
            assert_eq!(stack.post_predict("{not json"), 400);
            if i % 4 == 0 {
                assert_eq!(stack.post_predict(&valid), 200);
            }
        }
        stack
            .prometheus_alerts("firing")
            .iter()
            .any(|a| a.name() == "InvalidInputSurge")
            .then_some(())
    });
    eventually("InvalidInputSurge at the webhook", WAIT, || {
        stack.webhook.has_firing("InvalidInputSurge").then_some(())
    });

    // One feature shifted by 3 standard deviations: DataDrift names it, and
    // only it.
    let mut start = 0;
    let drifted = eventually("DataDrift firing for body mass index", WAIT, || {
        assert_eq!(
            stack.post_predict(&stack.batch(start, 50, Some(("body mass index", 3.0)))),
            200
        );
        start += 50;
        let firing: Vec<String> = stack
            .prometheus_alerts("firing")
            .iter()
            .filter(|a| a.name() == "DataDrift")
            .map(|a| a.labels.get("feature").cloned().unwrap_or_default())
            .collect();
        (!firing.is_empty()).then_some(firing)
    });
    assert_eq!(
        drifted,
        vec!["body mass index".to_owned()],
        "only the shifted feature drifts"
    );
    eventually("DataDrift at the webhook", WAIT, || {
        stack.webhook.has_firing("DataDrift").then_some(())
    });

    // The trainer dies mid-run: TrainingTargetDown fires; the inhibition
    // keeps StalledTraining from the receiver.
    // Polled: one slow scrape (1 s timeout with the test timing) leaves
    // the series stale for a moment; a trainer that finished never
    // shows 1 again and fails here.
    eventually("the trainer is still training when killed", WAIT, || {
        (stack.query("training_in_progress == 1").len() == 1).then_some(())
    });
    stack.trainers[0].signal("KILL");
    eventually("TrainingTargetDown at the webhook", WAIT, || {
        stack.webhook.has_firing("TrainingTargetDown").then_some(())
    });
    assert!(
        !stack.webhook.has_firing("StalledTraining"),
        "StalledTraining must be inhibited or silent"
    );
    let alerts = stack.webhook.alerts();
    let (_, _, labels) = alerts
        .iter()
        .find(|(name, _, _)| name == "TrainingTargetDown")
        .unwrap();
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["job"], "model-training");
}

fn alive(pid: u32) -> bool {
    // A killed child is reaped by the harness, so its /proc entry is gone.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn every_process_is_gone_after_a_failed_assertion() {
    let pids = std::sync::Mutex::new(Vec::new());
    let outcome = std::panic::catch_unwind(|| {
        let options = StackOptions {
            trainers: vec![vec!["--pace".into(), "1s".into()]],
            ..StackOptions::default()
        };
        let stack = LiveStack::start(options);
        let mut started = vec![
            stack.service.pid(),
            stack.prometheus.pid(),
            stack.alertmanager.pid(),
        ];
        started.extend(stack.trainers.iter().map(|t| t.pid()));
        assert!(started.iter().all(|p| alive(*p)), "all started");
        *pids.lock().unwrap() = started;
        panic!("deliberate failure inside a running stack");
    });
    assert!(outcome.is_err(), "the closure panicked");
    let pids = pids.into_inner().unwrap();
    assert_eq!(pids.len(), 4);
    let survivors: Vec<u32> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        survivors.is_empty(),
        "processes left running: {survivors:?}"
    );
}
