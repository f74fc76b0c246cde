//! The real `mlwatch train` binary, scraped over HTTP while it trains and
//! after it finishes, against the "Training" table of docs/metrics.md.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{documented_metrics, family_names, listening_address, scrape, value, Process};

use common::stack::TRAINER_LISTENING;

/// Starts `mlwatch train ARGS --listen 127.0.0.1:0` and returns it with
/// the address it bound.
fn trainer(args: &[&str], dir: &std::path::Path) -> (Process, String) {
    let mut all = vec!["train", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut process = Process::mlwatch("trainer", &all, dir);
    let address = listening_address(&mut process, TRAINER_LISTENING).to_string();
    (process, address)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Documented names a run of this kind must export (GPU series only exist
/// with an NVIDIA GPU; task- and model-specific families per the doc's rules).
fn expected(regression: bool, trees: bool, boosting: bool) -> HashSet<String> {
    documented_metrics("Training")
        .into_iter()
        .chain(documented_metrics("Liveness"))
        .map(|(name, _, _)| name)
        // Exported only when pushing (tests/otlp_push.rs).
        .filter(|name| name != "mlwatch_otlp_exports_total")
        .filter(|name| !name.starts_with("training_gpu_"))
        .filter(|name| regression || !name.starts_with("regression_"))
        .filter(|name| !regression || !name.starts_with("classification_"))
        .filter(|name| trees || !(name.starts_with("tree_") || name == "ensemble_tree_count"))
        .filter(|name| boosting || name != "boosting_rounds_total")
        .collect()
}

/// Types and label keys of every exported family match the documentation.
fn assert_documented(scrape: &common::Scrape) {
    let names = family_names(scrape);
    let documented = documented_metrics("Training")
        .into_iter()
        .chain(documented_metrics("Liveness"));
    for (name, kind, labels) in documented {
        if let Some(exported) = names.get(&name) {
            assert_eq!(
                *exported, kind,
                "{name}: exported as {exported}, documented as {kind}"
            );
            let documented: HashSet<String> = labels.into_iter().collect();
            for sample in common::samples(scrape, &name, &[]) {
                let keys: HashSet<String> = sample
                    .labels
                    .keys()
                    .filter(|k| *k != "le")
                    .cloned()
                    .collect();
                assert_eq!(
                    keys, documented,
                    "{name}: exported labels differ from docs/metrics.md"
                );
            }
        }
    }
}

/// Scrapes until training_in_progress drops to 0 and the resource
/// sampler has taken its first samples; returns that scrape. (A short run
/// can finish before the sampler's first tick: CI saw a 0.3 s boosting run
/// scraped without them.)
fn scrape_when_finished(url: &str, timeout: Duration) -> common::Scrape {
    common::poll("training to finish", timeout, || {
        let s = scrape(url);
        let sampled = [
            "training_cpu_usage_percent",
            "training_memory_usage_bytes",
            "system_memory_used_bytes",
            "system_memory_total_bytes",
        ]
        .iter()
        .all(|name| s.samples.iter().any(|x| x.metric == *name));
        (value(&s, "training_in_progress", &[]) == Some(0.0) && sampled).then_some(s)
    })
}

#[test]
fn linear_training_exports_every_documented_metric_live() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, listen) = trainer(
        &[
            "--model",
            "linear",
            "--pace",
            "300ms",
            // 9 s of training: a first and a later epoch are seen during it
            // even when the machine stalls this test for seconds.
            "--iterations",
            "30",
            "--linger",
            "30s",
            "--sample-interval",
            "200ms",
            "--output",
            "model.json",
        ],
        dir.path(),
    );
    let url = format!("http://{listen}/metrics");

    // During training: in progress, heartbeat fresh, epochs moving.
    let epochs = |s: &common::Scrape| value(s, "training_epochs_total", &[]).unwrap_or(0.0);
    // Each try notes the time before it scrapes: whatever is recorded
    // after that scrape is stamped later than that.
    let (before_first, first) = common::poll("a first epoch", Duration::from_secs(30), || {
        let before = now();
        Some((before, scrape(&url))).filter(|(_, s)| epochs(s) >= 1.0)
    });
    assert_eq!(
        value(&first, "training_in_progress", &[]),
        Some(1.0),
        "in progress while training"
    );
    let beat = |s: &common::Scrape| value(s, "training_last_update_timestamp_seconds", &[]);
    let second = common::poll("a further epoch and beat", Duration::from_secs(30), || {
        Some(scrape(&url)).filter(|s| epochs(s) > epochs(&first) && beat(s) > beat(&first))
    });
    let after_second = now();
    let heartbeat = beat(&second).unwrap();
    // A heartbeat newer than the first scrape's was recorded after that
    // scrape began and before the second one returned: it lies between
    // the two readings of this clock, by cause and effect.
    assert!(
        heartbeat >= before_first && heartbeat <= after_second,
        "heartbeat {heartbeat} between {before_first} and {after_second}"
    );
    let alpha = value(&second, "training_hyperparameter", &[("name", "alpha")]).unwrap();
    assert!(alpha > 0.0 && alpha <= 1.0, "alpha {alpha}");

    // After training: finished, artifact on disk, every documented metric.
    let done = scrape_when_finished(&url, Duration::from_secs(30));
    assert!(
        dir.path().join("model.json").exists(),
        "artifact written before in_progress drops to 0"
    );
    let names = family_names(&done);
    let missing: Vec<_> = expected(true, false, false)
        .into_iter()
        .filter(|n| !names.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );
    assert_documented(&done);
    assert_eq!(epochs(&done), 30.0);
    let r2 = value(&done, "regression_r_squared", &[("split", "validation")]).unwrap();
    assert!(
        (0.3..0.7).contains(&r2),
        "diabetes validation R² {r2} is plausible for a linear model"
    );
    let rmse = value(
        &done,
        "regression_root_mean_squared_error",
        &[("split", "validation")],
    )
    .unwrap();
    let mse = value(
        &done,
        "regression_mean_squared_error",
        &[("split", "validation")],
    )
    .unwrap();
    assert!((rmse * rmse - mse).abs() < 1e-6 * mse, "RMSE² = MSE");
    assert_eq!(
        common::samples(&done, "feature_importance", &[]).len(),
        5,
        "top 5 features"
    );
    assert!(value(&done, "training_memory_usage_bytes", &[]).unwrap() > 1e6);
    assert!(value(&done, "system_memory_total_bytes", &[]).unwrap() > 1e8);
    let artifact = mlwatch::model::Artifact::load(&dir.path().join("model.json")).unwrap();
    assert_eq!(
        common::samples(
            &done,
            "training_model_info",
            &[
                ("model_version", &artifact.model_version),
                ("algorithm", "elasticnet")
            ]
        )
        .len(),
        1
    );
    // Without an NVIDIA driver: no GPU series, and one log line about it
    // rather than one per sample (the sampler ran ~20 times here).
    assert!(
        !names.keys().any(|n| n.contains("_gpu_")),
        "GPU series without a GPU"
    );
    trainer.kill();
    let log = trainer.log_text();
    let gpu_lines = log
        .lines()
        .filter(|l| l.contains("GPU") || l.contains("NVML"))
        .count();
    assert!(
        gpu_lines <= 1,
        "GPU absence logged {gpu_lines} times:\n{log}"
    );
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");
}

#[test]
fn boosting_exports_classification_and_tree_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (_trainer, listen) = trainer(
        &[
            "--model",
            "boost",
            "--iterations",
            "6",
            "--linger",
            "30s",
            "--output",
            "boost.json",
        ],
        dir.path(),
    );
    let url = format!("http://{listen}/metrics");
    let done = scrape_when_finished(&url, Duration::from_secs(60));
    let names = family_names(&done);
    let missing: Vec<_> = expected(false, true, true)
        .into_iter()
        .filter(|n| !names.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not exported: {missing:?}"
    );
    assert!(
        !names.keys().any(|n| n.starts_with("regression_")),
        "no regression metrics for a classifier"
    );
    assert_documented(&done);
    assert_eq!(value(&done, "boosting_rounds_total", &[]), Some(6.0));
    assert_eq!(value(&done, "ensemble_tree_count", &[]), Some(6.0));
    assert!(value(&done, "tree_max_depth", &[]).unwrap() <= 2.0);
    let accuracy = value(&done, "classification_accuracy", &[("split", "validation")]).unwrap();
    assert!((0.4..=1.0).contains(&accuracy), "wine accuracy {accuracy}");
    let gap = value(&done, "training_overfitting_gap", &[]).unwrap();
    let train = value(&done, "classification_accuracy", &[("split", "train")]).unwrap();
    assert!(
        (gap - (train - accuracy)).abs() < 1e-9,
        "gap = train - validation"
    );
}

#[test]
fn trainer_exits_after_linger_and_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, listen) = trainer(
        &["--iterations", "2", "--linger", "1s", "--output", "m.json"],
        dir.path(),
    );
    let status = trainer
        .wait_exit(Duration::from_secs(30))
        .expect("trainer exits after its linger");
    assert!(status.success(), "{status}");
    assert!(
        common::get(&format!("http://{listen}/metrics")).is_none(),
        "nothing listens after exit"
    );
}

#[test]
fn bad_flags_give_a_clear_error_and_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["train", "--model", "linear", "--dataset", "iris"],
            "needs a regression data set",
        ),
        (
            &["train", "--validation-fraction", "1.5"],
            "not strictly between 0 and 1",
        ),
        (&["train", "--pace", "fast"], "--pace"),
        (&["train", "--model", "svm"], "invalid value 'svm'"),
    ];
    for (args, message) in cases {
        let mut process = Process::mlwatch("bad-flags", args, dir.path());
        let status = process.wait_exit(Duration::from_secs(20)).expect("exits");
        let log = process.log_text();
        assert!(!status.success(), "{args:?} must fail");
        assert!(
            log.contains(message),
            "{args:?}: expected {message:?} in:\n{log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[test]
fn port_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let mut process = Process::mlwatch("trainer", &["train", "--listen", &listen], dir.path());
    let status = process.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(!status.success());
    assert!(
        process
            .log_text()
            .contains(&format!("cannot listen on {listen}")),
        "{}",
        process.log_text()
    );
}

/// A real Pushgateway on `[::1]` (127.0.0.1 where the machine has no IPv6
/// loopback, as some build sandboxes) under the route prefix `/gw`, on the
/// port it reports after binding `:0`; returns it and its base URL.
fn pushgateway(dir: &std::path::Path) -> (Process, String) {
    let binary = common::stack::require_binary(
        &["prometheus-pushgateway", "pushgateway"],
        "prometheus-pushgateway",
    );
    let host = if std::net::TcpListener::bind("[::1]:0").is_ok() {
        "[::1]"
    } else {
        eprintln!("no IPv6 loopback here: the Pushgateway listens on 127.0.0.1");
        "127.0.0.1"
    };
    let mut gateway = Process::spawn(
        "pushgateway",
        &binary,
        &[
            format!("--web.listen-address={host}:0"),
            "--web.route-prefix=/gw".into(),
            "--persistence.interval=0".into(),
        ],
        dir,
    );
    let address = listening_address(&mut gateway, "msg=\"Listening on\" address=");
    let base = format!("http://{address}/gw");
    common::wait_for_status(
        &format!("{base}/-/ready"),
        200,
        Duration::from_secs(20),
        &mut gateway,
    );
    (gateway, base)
}

#[test]
fn final_metrics_reach_a_real_pushgateway_and_a_metrics_less_run_cannot_wipe_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_gateway, base) = pushgateway(dir.path());
    // IPv6, credentials, a path prefix and a trailing slash: the URL is
    // parsed, not split by hand (the Pushgateway ignores the credentials).
    let url = base.replace("http://", "http://trainer:secret@") + "/";
    let (mut trainer, _) = trainer(
        &[
            "--iterations",
            "3",
            "--linger",
            "0s",
            "--output",
            "m.json",
            "--pushgateway",
            &url,
        ],
        dir.path(),
    );
    let status = trainer.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(status.success(), "{}", trainer.log_text());
    assert!(
        trainer.log_text().contains("pushed final metrics"),
        "{}",
        trainer.log_text()
    );
    assert!(
        !trainer.log_text().contains("secret"),
        "no password in logs"
    );
    let pushed = || scrape(&format!("{base}/metrics"));
    let epochs =
        |s: &common::Scrape| value(s, "training_epochs_total", &[("job", "model-training")]);
    assert_eq!(epochs(&pushed()), Some(3.0));
    assert_eq!(
        value(
            &pushed(),
            "training_in_progress",
            &[("job", "model-training")]
        ),
        Some(0.0)
    );

    // An empty push would replace the group: refused as a flag and from
    // the environment alike, before anything is trained or sent.
    let mut flags = Process::mlwatch(
        "no-metrics-flag",
        &[
            "train",
            "--no-metrics",
            "--linger",
            "0s",
            "--output",
            "n.json",
            "--pushgateway",
            &url,
        ],
        dir.path(),
    );
    let env_run = std::process::Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args([
            "train",
            "--no-metrics",
            "--linger",
            "0s",
            "--output",
            "e.json",
        ])
        .env("MLWATCH_PUSHGATEWAY", &url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let status = flags.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(
        status.code(),
        Some(2),
        "a usage error:\n{}",
        flags.log_text()
    );
    assert!(
        flags.log_text().contains("--no-metrics") && flags.log_text().contains("--pushgateway"),
        "{}",
        flags.log_text()
    );
    let stderr = String::from_utf8_lossy(&env_run.stderr).into_owned();
    assert!(!env_run.status.success(), "{stderr}");
    assert_eq!(env_run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-metrics"), "{stderr}");
    for name in ["n.json", "e.json"] {
        assert!(!dir.path().join(name).exists(), "{name}: nothing trained");
    }
    assert_eq!(
        epochs(&pushed()),
        Some(3.0),
        "the good run's group is intact"
    );
}

/// Accepts connections and never answers: a Pushgateway that hangs.
fn silent_server() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, connections) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            if accepted.send(()).is_err() {
                break;
            }
        }
    });
    (url, connections)
}

#[test]
fn sigterm_during_the_push_stops_the_trainer_at_once_with_the_artifact_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (url, connections) = silent_server();
    let (mut trainer, _) = trainer(
        &[
            "--iterations",
            "2",
            "--linger",
            "900s",
            "--output",
            "m.json",
            "--pushgateway",
            &url,
        ],
        dir.path(),
    );
    // The push connects after the artifact is written: it now hangs.
    connections
        .recv_timeout(Duration::from_secs(30))
        .expect("the trainer starts its push");
    trainer.signal("TERM");
    // Far below the 900 s linger; no bound on how fast, which a loaded
    // machine decides. What proves "at once" is which branch ended the
    // push: only the shutdown branch logs "push abandoned", while a push
    // that ran into its own timeout would log its failure instead.
    let status = trainer
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still pushing or lingering:\n{}", trainer.log_text()));
    assert!(status.success(), "{}", trainer.log_text());
    let log = trainer.log_text();
    assert!(log.contains("push abandoned: shutting down"), "{log}");
    assert!(
        !log.contains("pushing the final metrics failed"),
        "the push was abandoned, not timed out: {log}"
    );
    mlwatch::model::Artifact::load(&dir.path().join("m.json")).expect("a whole artifact");
}

#[test]
fn sigterm_once_the_artifact_is_written_skips_the_linger() {
    let dir = tempfile::tempdir().unwrap();
    let (mut trainer, _) = trainer(
        &[
            "--iterations",
            "2",
            "--linger",
            "900s",
            "--output",
            "m.json",
        ],
        dir.path(),
    );
    let artifact = dir.path().join("m.json");
    common::poll("the artifact", Duration::from_secs(30), || {
        artifact.exists().then_some(())
    });
    trainer.signal("TERM");
    // Far below the 900 s linger, the only thing it could otherwise wait for.
    let status = trainer
        .wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("still lingering:\n{}", trainer.log_text()));
    assert!(status.success(), "{}", trainer.log_text());
    mlwatch::model::Artifact::load(&artifact).expect("a whole artifact");
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Process::mlwatch(
        "trainer",
        &[
            "--log-format",
            "json",
            "train",
            "--listen",
            "127.0.0.1:0",
            "--iterations",
            "2",
            "--linger",
            "0s",
            "--output",
            "m.json",
        ],
        dir.path(),
    );
    assert!(trainer
        .wait_exit(Duration::from_secs(30))
        .expect("exits")
        .success());
    let log = trainer.log_text();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["fields"]["message"].is_string(),
            "{line}"
        );
    }
}
