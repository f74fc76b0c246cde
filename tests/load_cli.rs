//! `mlwatch load` against a real `mlwatch serve`: exact request counts,
//! the service's counters moving by exactly the tool's tally, every
//! bad-input class answered with its documented status (a contract test of
//! the service as much as of the tool), and a reconciliation that must fail
//! when another client sends during the run.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{free_port, scrape, value, wait_for_status, Process, Scrape};
use mlwatch::model::Artifact;
use mlwatch::train::{train_quietly, Algorithm, FitOptions};
use serde_json::Value;

const MAX_BODY_BYTES: &str = "4096";
const MAX_BATCH: &str = "8";

/// One linear model on diabetes, trained once for every test in this file.
fn artifact() -> &'static Artifact {
    static ARTIFACT: OnceLock<Artifact> = OnceLock::new();
    ARTIFACT.get_or_init(|| {
        train_quietly(&FitOptions::new(Algorithm::Linear)).expect("train a linear model")
    })
}

/// `mlwatch serve` on a free port with the artifact, small limits so that
/// the oversized classes are cheap.
struct Service {
    /// Held for its Drop, which kills the service.
    _process: Process,
    base: String,
    model_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`Service::start`] with `extra` flags for `mlwatch serve`.
    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let model_path = dir.path().join("model.json");
        artifact().save(&model_path).expect("save artifact");
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model-path",
            model_path.to_str().expect("utf-8 path"),
            "--max-body-bytes",
            MAX_BODY_BYTES,
            "--max-batch",
            MAX_BATCH,
        ];
        args.extend_from_slice(extra);
        let mut process = Process::mlwatch("serve", &args, dir.path());
        let listen = common::listening_address(&mut process, common::stack::SERVICE_LISTENING);
        let base = format!("http://{listen}");
        wait_for_status(
            &format!("{base}/ready"),
            200,
            Duration::from_secs(30),
            &mut process,
        );
        Self {
            _process: process,
            base,
            model_path,
            dir,
        }
    }

    fn scrape(&self) -> Scrape {
        scrape(&format!("{}/metrics", self.base))
    }

    /// `model_prediction_requests_total` summed over model_version.
    fn requests(&self, scrape: &Scrape, status: &str) -> f64 {
        common::samples(
            scrape,
            "model_prediction_requests_total",
            &[("status", status)],
        )
        .iter()
        .map(|s| common::scalar(&s.value))
        .sum()
    }

    fn predict(&self, content_type: &str, body: &str) -> u16 {
        let response = common::agent()
            .post(&format!("{}/predict", self.base))
            .set("Content-Type", content_type)
            .send_string(body);
        match response {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("extra request failed: {e}"),
        }
    }
}

/// Output and exit status of a finished `mlwatch load`.
struct LoadRun {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl LoadRun {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not the JSON summary ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn explain(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }
}

/// Reads a child's pipe to its end on a thread, so that a chatty child
/// never blocks on a full pipe while the test waits for it to exit.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

/// Runs `mlwatch load ARGS` to the end (at most 60 s).
fn load(args: &[&str], dir: &Path) -> LoadRun {
    load_logging(args, dir, "info")
}

/// [`load`] with `RUST_LOG` set to `filter`.
fn load_logging(args: &[&str], dir: &Path, filter: &str) -> LoadRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .arg("load")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", filter)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mlwatch load");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status =
        mlwatch::poll::blocking(Duration::from_millis(20), Duration::from_secs(60), || {
            child.try_wait().expect("poll mlwatch load")
        });
    let Ok(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "mlwatch load {args:?} still running after 60 s:\n{}",
            stderr.join().unwrap_or_default()
        );
    };
    LoadRun {
        success: status.success(),
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn count(summary: &Value, pointer: &str) -> u64 {
    summary
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing from {summary:#}"))
}

#[test]
fn load_sends_exactly_the_requested_mix_and_the_service_counts_every_request() {
    let service = Service::start();
    let before = service.scrape();
    let run = load(
        &[
            "--target",
            &service.base,
            "--requests",
            "120",
            "--concurrency",
            "4",
            "--mix",
            "valid=40,invalid=40,drifted=20,batch=20",
            "--batch-size",
            "5",
            "--max-body-bytes",
            MAX_BODY_BYTES,
            "--max-batch",
            MAX_BATCH,
            "--artifact",
            service.model_path.to_str().expect("utf-8 path"),
            "--json",
        ],
        service.dir.path(),
    );
    assert!(run.success, "load failed:\n{}", run.explain());
    let summary = run.json();
    let after = service.scrape();

    assert_eq!(
        count(&summary, "/sent"),
        120,
        "exactly --requests were sent"
    );
    assert_eq!(count(&summary, "/answered"), 120, "every request answered");
    assert_eq!(count(&summary, "/errors/total"), 0);
    for (class, n) in [
        ("valid", 40),
        ("invalid", 40),
        ("drifted", 20),
        ("batch", 20),
    ] {
        assert_eq!(
            count(&summary, &format!("/by_class/{class}/sent")),
            n,
            "the mix's weights are exact proportions: {class}"
        );
    }
    assert_eq!(
        count(&summary, "/by_status/200"),
        80,
        "valid, drifted and batch requests all succeed"
    );
    assert_eq!(
        summary["unexpected"],
        serde_json::json!([]),
        "no unexpected answers"
    );
    let latency = &summary["latency_ms"];
    let (p50, p95, p99) = (
        latency["p50"].as_f64().unwrap_or(-1.0),
        latency["p95"].as_f64().unwrap_or(-1.0),
        latency["p99"].as_f64().unwrap_or(-1.0),
    );
    assert!(
        0.0 < p50 && p50 <= p95 && p95 <= p99,
        "ordered latency percentiles: {latency}"
    );
    assert!(summary["achieved_rate"].as_f64().unwrap_or(0.0) > 0.0);

    let reconciliation = &summary["reconciliation"];
    assert_eq!(reconciliation["mismatches"], serde_json::json!([]));
    // Our own scrape agrees with the tool's tally, status by status.
    let delta = |status| service.requests(&after, status) - service.requests(&before, status);
    assert_eq!(delta("success"), 80.0, "success: valid + drifted + batch");
    // The rotation starts with wrong_method (a 405, not a prediction
    // request): 40 invalid requests send it twice.
    assert_eq!(
        delta("invalid_input"),
        38.0,
        "invalid_input: every invalid but the 405s"
    );
    assert_eq!(delta("error"), 0.0);
    for status in ["success", "invalid_input", "error"] {
        assert_eq!(
            reconciliation["service"][status].as_f64(),
            Some(delta(status)),
            "the tool's scrape matches ours for {status}"
        );
    }

    // Drifted requests move the first feature (the default drift feature)
    // outside the training range; valid values are clamped inside it.
    let names = &artifact().feature_names;
    let out_of_range = |scrape: &Scrape, feature: &str| {
        value(
            scrape,
            "model_input_out_of_range_total",
            &[("feature", feature)],
        )
        .unwrap_or(0.0)
    };
    let moved = |feature: &str| out_of_range(&after, feature) - out_of_range(&before, feature);
    assert!(
        moved(&names[0]) > 0.0,
        "drifted requests leave the range of {}",
        names[0]
    );
    for other in &names[1..] {
        assert_eq!(
            moved(other),
            0.0,
            "{other} is never drifted nor out of range"
        );
    }
}

#[test]
fn every_invalid_class_gets_its_documented_status_and_error_from_the_real_service() {
    let service = Service::start();
    // No --artifact: the reference comes from GET /model.
    let run = load(
        &[
            "--target",
            &service.base,
            "--requests",
            "26",
            "--concurrency",
            "2",
            "--mix",
            "invalid=1",
            "--max-body-bytes",
            MAX_BODY_BYTES,
            "--max-batch",
            MAX_BATCH,
            "--strict",
            "--json",
        ],
        service.dir.path(),
    );
    assert!(run.success, "strict run failed:\n{}", run.explain());
    let summary = run.json();
    let kinds = summary["invalid_kinds"]
        .as_object()
        .expect("invalid_kinds object");
    assert_eq!(
        kinds.len(),
        26,
        "every bad-input class once: {:?}",
        kinds.keys()
    );
    assert_eq!(summary["skipped_invalid_kinds"], serde_json::json!([]));
    for (kind, k) in kinds {
        let expected = k["expected_status"].as_u64().expect("expected_status");
        assert_eq!(
            k["by_status"],
            serde_json::json!({ expected.to_string(): 1 }),
            "{kind} must be answered {expected} ({})",
            k["expected_error"]
        );
    }
    for (kind, status) in [
        ("wrong_method", 405),
        ("wrong_content_type", 415),
        ("body_too_large", 413),
        ("batch_too_large", 413),
        ("wrong_feature_count", 422),
        ("malformed_json", 400),
    ] {
        assert_eq!(kinds[kind]["expected_status"], status, "{kind}");
    }
    assert_eq!(summary["unexpected"], serde_json::json!([]));
    assert_eq!(
        summary["reconciliation"]["service"]["invalid_input"].as_f64(),
        Some(25.0),
        "each is counted once as invalid_input, but the 405 (not a prediction request)"
    );
    assert!(
        summary["reference"]
            .as_str()
            .is_some_and(|r| r.contains("the service's artifact")),
        "reference read from GET /model: {}",
        summary["reference"]
    );
}

#[test]
fn requests_from_another_client_during_the_run_fail_reconciliation_naming_each_status() {
    let service = Service::start();
    let args = |reconcile: bool| {
        let mut args = vec![
            "load",
            "--target",
            &service.base,
            "--rate",
            "20",
            // Open-ended: the run ends when the test interrupts it, after
            // the extra requests, so they land inside it by construction.
            "--duration",
            "600s",
            "--mix",
            "valid=3,invalid=1",
        ];
        if !reconcile {
            args.push("--no-reconcile");
        }
        args
    };
    let extra_body =
        serde_json::json!({"features": vec![0.0; artifact().feature_names.len()]}).to_string();

    for reconcile in [true, false] {
        let mut tool = Process::mlwatch("load", &args(reconcile), service.dir.path());
        // The first scrape is taken before "sending load" is logged.
        common::poll("load to start sending", Duration::from_secs(30), || {
            assert!(
                tool.try_exit().is_none(),
                "load ended before sending:\n{}",
                tool.log_text()
            );
            tool.log_text().contains("sending load").then_some(())
        });
        assert_eq!(service.predict("application/json", &extra_body), 200);
        assert_eq!(service.predict("application/json", &extra_body), 200);
        assert_eq!(service.predict("text/plain", &extra_body), 415);
        // Interrupted, the tool waits for its requests in flight, scrapes
        // and reconciles as at the end of a run.
        tool.signal("INT");
        let status = tool
            .wait_exit(Duration::from_secs(60))
            .expect("load finishes");
        let log = tool.log_text();
        assert!(
            log.contains("sent ") && log.contains("interrupted"),
            "the summary is printed:\n{log}"
        );
        if reconcile {
            assert!(!status.success(), "extra traffic must fail the run:\n{log}");
            assert!(
                log.contains("model_prediction_requests_total{status=\"success\"}")
                    && log.contains("2 more than the tool sent"),
                "the success mismatch is named with its size:\n{log}"
            );
            assert!(
                log.contains("model_prediction_requests_total{status=\"invalid_input\"}")
                    && log.contains("1 more than the tool sent"),
                "the invalid_input mismatch is named with its size:\n{log}"
            );
            assert!(
                log.contains("error: the service's counters do not match"),
                "{log}"
            );
        } else {
            assert!(
                status.success(),
                "--no-reconcile ignores other clients:\n{log}"
            );
            assert!(log.contains("reconciliation: skipped"), "{log}");
        }
    }
}

#[test]
fn duration_mode_prints_a_text_summary_that_reconciles() {
    let service = Service::start();
    let started = Instant::now();
    let run = load(
        &[
            "--target",
            &service.base,
            "--duration",
            "1s",
            "--concurrency",
            "2",
            "--mix",
            "valid=5,drifted=2,batch=1,invalid=2",
            "--batch-size",
            "4",
            "--drift-feature",
            &artifact().feature_names[2],
        ],
        service.dir.path(),
    );
    let took = started.elapsed();
    assert!(run.success, "{}", run.explain());
    assert!(
        took >= Duration::from_secs(1),
        "ran for the duration: {took:?}"
    );
    for needle in [
        "mlwatch load → ",
        "closed loop, concurrency 2",
        "by status: 200×",
        "latency: p50 ",
        " p95 ",
        " p99 ",
        "unexpected answers: none",
        "skipped: body_too_large, batch_too_large",
        "counts reconcile",
    ] {
        assert!(
            run.stdout.contains(needle),
            "summary lacks {needle:?}:\n{}",
            run.explain()
        );
    }
}

#[test]
fn load_reads_a_token_guarded_model_with_the_admin_token_file() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, "load-test-token\n").expect("write token file");
    let token_file = token_file.to_str().expect("utf-8 path");
    let service = Service::start_with(&["--admin-token-file", token_file]);
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "--target",
            service.base.as_str(),
            "--requests",
            "20",
            "--concurrency",
            "2",
            "--mix",
            "drifted=1",
            "--json",
        ];
        args.extend_from_slice(extra);
        args
    };

    // Without the token: a clear error before anything is sent.
    let run = load(&args(&[]), service.dir.path());
    assert!(!run.success, "{}", run.explain());
    assert!(
        run.stderr.contains("answered 401") && run.stderr.contains("--admin-token-file"),
        "{}",
        run.explain()
    );
    assert_eq!(service.requests(&service.scrape(), "success"), 0.0);

    // With the service's token file: drifted traffic from /model's reference.
    let mut with_token = args(&[]);
    with_token.extend_from_slice(&["--admin-token-file", token_file]);
    let run = load(&with_token, service.dir.path());
    assert!(run.success, "{}", run.explain());
    let summary = run.json();
    assert_eq!(count(&summary, "/sent"), 20, "{summary:#}");
    assert!(
        summary["reference"]
            .as_str()
            .is_some_and(|r| r.contains("GET /model")),
        "reference read from the guarded GET /model: {}",
        summary["reference"]
    );
    assert_eq!(service.requests(&service.scrape(), "success"), 20.0);
    assert!(
        !run.stderr.contains("load-test-token") && !run.stdout.contains("load-test-token"),
        "the token is never printed: {}",
        run.explain()
    );
}

#[test]
fn an_unreachable_service_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = format!("http://127.0.0.1:{}", free_port());
    let run = load(&["--target", &target, "--requests", "1"], dir.path());
    assert!(!run.success);
    assert!(
        run.stderr.contains("cannot reach the service at") && run.stderr.contains(&target),
        "{}",
        run.explain()
    );
}

#[test]
fn a_bad_mix_is_a_usage_error_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = load(&["--mix", "valid=70,invalid=x"], dir.path());
    assert_eq!(run.code, Some(2), "clap's usage error: {}", run.explain());
    assert!(
        run.stderr
            .contains("weight of \"invalid\" must be a whole number"),
        "{}",
        run.explain()
    );
}

#[test]
fn a_chatty_run_is_read_while_it_runs_and_cannot_stall_on_its_pipes() {
    let service = Service::start();
    // Trace logs of the HTTP client: far more than a pipe buffer (64 KiB),
    // which a child blocks on when nobody reads its pipe.
    let run = load_logging(
        &[
            "--target",
            &service.base,
            "--requests",
            "500",
            "--concurrency",
            "4",
        ],
        service.dir.path(),
        "trace",
    );
    assert!(
        run.success,
        "{}",
        run.explain().chars().take(2000).collect::<String>()
    );
    assert!(
        run.stderr.len() > 128 * 1024,
        "the run was chatty enough to fill a pipe: {} bytes",
        run.stderr.len()
    );
    assert!(run.stdout.contains("sent 500 in"), "{}", run.stdout);
}
