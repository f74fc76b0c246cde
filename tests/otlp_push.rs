//! OTLP push against the protocol (docs/otlp.md): real `mlwatch serve` and
//! `mlwatch train` processes push to loopback receivers that decode every
//! request with the official protobuf definitions (tests/common/otlp_receiver.rs).
//!
//! Held here: exact counts against the requests sent, summed over two
//! replicas and equal at both receivers of an HA pair; cumulative,
//! monotonic sums with a fixed start time; the resource (`service.name`
//! the job, `service.instance.id` one per process); exponential latency
//! histograms when only pushing, with consistent counts; the trainer's final
//! push on exit; and a receiver down, then slow, then back: counted
//! failures, one warning per episode, `/predict` unaffected, recovery.

mod common;
mod serve_support;

use std::net::SocketAddr;
use std::time::Duration;

use common::otlp_receiver::{
    metric, points, resource_attribute, total, AggregationTemporality, Data,
    ExportMetricsServiceRequest, Receiver,
};
use common::{poll, Process};
use serve_support::{linear_artifact, Service};

const ROW: &str =
    r#"{"features": [0.038, 0.05, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.02, -0.018]}"#;
const BAD_ROW: &str = r#"{"features": [1.0]}"#;

/// The last export from the process whose `service.instance.id` is `instance`.
fn last_from(receiver: &Receiver, instance: &str) -> Option<ExportMetricsServiceRequest> {
    receiver
        .exports()
        .into_iter()
        .rev()
        .find(|e| resource_attribute(e, "service.instance.id").as_deref() == Some(instance))
}

fn requests(export: &ExportMetricsServiceRequest, status: &str) -> f64 {
    metric(export, "model_prediction_requests")
        .map(|m| total(m, &[("status", status)]))
        .unwrap_or(0.0)
}

/// The `service.instance.id` a replica listening on `base` reports.
fn instance_of(service: &Service) -> String {
    let port = service
        .base
        .rsplit(':')
        .next()
        .expect("port in base URL")
        .parse()
        .expect("numeric port");
    mlwatch::telemetry::instance_id(port)
}

#[test]
fn two_replicas_push_exact_cumulative_counts_to_both_receivers_of_an_ha_pair() {
    let (first, second) = (Receiver::start(), Receiver::start());
    let artifact = linear_artifact(0);
    let flags = [
        "--otlp-endpoint",
        &first.endpoint(),
        "--otlp-endpoint",
        &second.endpoint(),
        "--otlp-export-interval",
        "200ms",
        "--no-scrape",
    ];
    let replicas = [
        Service::start(Some(&artifact), &flags),
        Service::start(Some(&artifact), &flags),
    ];
    // No exposition when only pushing.
    let (status, _) = replicas[0].get_json("/metrics");
    assert_eq!(status, 404, "--no-scrape still serves /metrics");

    let sent = [(7, 2), (11, 3)]; // (successes, invalid inputs) per replica
    for (replica, (good, bad)) in replicas.iter().zip(sent) {
        for _ in 0..good {
            assert_eq!(replica.predict(ROW).0, 200);
        }
        for _ in 0..bad {
            assert_eq!(replica.predict(BAD_ROW).0, 422);
        }
    }

    let instances: Vec<String> = replicas.iter().map(instance_of).collect();
    assert_ne!(instances[0], instances[1], "one instance id per process");
    for receiver in [&first, &second] {
        for (instance, (good, bad)) in instances.iter().zip(sent) {
            // The exports after the requests carry them all (cumulative).
            let export = poll(
                &format!("{instance}'s counts at {}", receiver.address),
                Duration::from_secs(30),
                || {
                    let export = last_from(receiver, instance)?;
                    (requests(&export, "success") == good as f64
                        && requests(&export, "invalid_input") == bad as f64)
                        .then_some(export)
                },
            );
            assert_eq!(
                resource_attribute(&export, "service.name").as_deref(),
                Some("ml-api"),
                "service.name is the scrape path's job"
            );
            // Latency: exponential (native in Prometheus), one observation
            // per successful request, every observation in a bucket.
            let duration = metric(&export, "model_prediction_duration_seconds")
                .expect("model_prediction_duration_seconds pushed");
            assert_eq!(duration.unit, "s");
            let Some(Data::ExponentialHistogram(histogram)) = &duration.data else {
                panic!("latency is not exponential when only pushing: {duration:?}");
            };
            assert_eq!(
                histogram.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            let count: u64 = histogram.data_points.iter().map(|p| p.count).sum();
            assert_eq!(count, good, "one latency observation per success");
            for point in &histogram.data_points {
                let in_buckets: u64 = point.zero_count
                    + point
                        .positive
                        .as_ref()
                        .map_or(0, |b| b.bucket_counts.iter().sum())
                    + point
                        .negative
                        .as_ref()
                        .map_or(0, |b| b.bucket_counts.iter().sum());
                assert_eq!(in_buckets, point.count, "bucket counts add up");
                assert!((-10..=20).contains(&point.scale), "scale {}", point.scale);
                assert!(point.sum.unwrap_or(0.0) > 0.0);
            }
            let http = metric(&export, "http_server_request_duration_seconds").expect("http");
            assert!(
                matches!(http.data, Some(Data::ExponentialHistogram(_))),
                "HTTP latency exponential too"
            );
            // Liveness: a heartbeat in seconds, from this process's clock.
            let heartbeat =
                metric(&export, "mlwatch_heartbeat_timestamp_seconds").expect("heartbeat pushed");
            let beat = points(heartbeat)[0].1;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert!(
                beat > now - 60.0 && beat <= now + 1.0,
                "heartbeat {beat}, now {now}"
            );
        }
    }

    // Cumulative and monotonic, one start time per series, never decreasing.
    let exports = poll(
        "three exports of one replica",
        Duration::from_secs(30),
        || {
            let exports: Vec<_> = first
                .exports()
                .into_iter()
                .filter(|e| {
                    resource_attribute(e, "service.instance.id").as_ref() == Some(&instances[1])
                })
                .collect();
            (exports.len() >= 3).then_some(exports)
        },
    );
    let mut previous = 0.0;
    let mut start = None;
    for export in &exports {
        let Some(counter) = metric(export, "model_prediction_requests") else {
            continue;
        };
        let Some(Data::Sum(sum)) = &counter.data else {
            panic!("a counter is a sum: {counter:?}");
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        for point in &sum.data_points {
            assert_eq!(
                *start.get_or_insert(point.start_time_unix_nano),
                point.start_time_unix_nano
            );
        }
        let now = requests(export, "success") + requests(export, "invalid_input");
        assert!(
            now >= previous,
            "a cumulative count went down: {previous} -> {now}"
        );
        previous = now;
    }
    assert_eq!(previous, 14.0);
}

#[test]
fn the_trainer_pushes_its_run_and_a_final_state_on_exit() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("model.json");
    let mut trainer = Process::mlwatch(
        "train",
        &[
            "train",
            "--listen",
            "127.0.0.1:0",
            "--output",
            output.to_str().unwrap(),
            "--iterations",
            "12",
            "--linger",
            "0s",
            "--otlp-endpoint",
            &receiver.endpoint(),
            // Longer than the run: what arrives comes from the final push.
            "--otlp-export-interval",
            "1h",
            "--no-scrape",
        ],
        dir.path(),
    );
    let exit = trainer
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("train did not finish:\n{}", trainer.log_text()));
    assert!(exit.success(), "train failed:\n{}", trainer.log_text());
    let exports = receiver.exports();
    assert_eq!(
        exports.len(),
        1,
        "one push, on exit:\n{}",
        trainer.log_text()
    );
    let export = &exports[0];
    assert_eq!(
        resource_attribute(export, "service.name").as_deref(),
        Some("model-training")
    );
    let instance = resource_attribute(export, "service.instance.id").expect("instance id");
    let port = instance.rsplit(':').next().and_then(|p| p.parse().ok());
    assert_eq!(
        Some(instance.clone()),
        port.map(mlwatch::telemetry::instance_id),
        "host:port of the trainer"
    );
    let epochs = metric(export, "training_epochs").expect("training_epochs pushed");
    assert_eq!(total(epochs, &[]), 12.0, "every iteration counted");
    let in_progress = metric(export, "training_in_progress").expect("training_in_progress");
    assert_eq!(total(in_progress, &[]), 0.0, "the final push says finished");
    assert!(metric(export, "mlwatch_heartbeat_timestamp_seconds").is_some());
    assert!(
        !trainer.log_text().contains("training metrics on"),
        "no exposition announced"
    );
}

/// Log lines that contain both `message` and `endpoint`.
fn lines_with(log: &str, message: &str, endpoint: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(message) && l.contains(endpoint))
        .count()
}

#[test]
fn a_receiver_down_then_slow_is_counted_logged_once_and_recovered_from() {
    let down_port = common::free_port();
    let down = SocketAddr::from(([127, 0, 0, 1], down_port));
    let slow = Receiver::start();
    slow.set_delay(Duration::from_secs(3));
    // Scraped too: the failure counts are read from /metrics, and a scraped
    // process pushes explicit buckets (the text exposition has no exponential form).
    let service = Service::start(
        Some(&linear_artifact(0)),
        &[
            "--otlp-endpoint",
            &format!("http://{down}/api/v1/otlp/v1/metrics"),
            "--otlp-endpoint",
            &slow.endpoint(),
            "--otlp-export-interval",
            "100ms",
            "--otlp-timeout",
            "300ms",
        ],
    );
    let exports = |scrape: &common::Scrape, endpoint: &str, result: &str| {
        common::value(
            scrape,
            "mlwatch_otlp_exports_total",
            &[("endpoint", endpoint), ("result", result)],
        )
        .unwrap_or(0.0)
    };
    poll(
        "three failures at each receiver",
        Duration::from_secs(60),
        || {
            let scrape = service.scrape();
            (exports(&scrape, "0", "failure") >= 3.0 && exports(&scrape, "1", "failure") >= 3.0)
                .then_some(())
        },
    );
    // Predictions are untouched by the failing pushes.
    for _ in 0..20 {
        assert_eq!(service.predict(ROW).0, 200);
    }
    let log = service.process.log_text();
    for endpoint in [down.to_string(), slow.address.to_string()] {
        let warnings = lines_with(&log, "OTLP export failed", &endpoint);
        assert_eq!(
            warnings, 1,
            "one warning per episode for {endpoint}:\n{log}"
        );
    }
    // And nothing else complains every interval (the SDK's own error
    // line per failed export is filtered out).
    let complaints = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .count();
    assert_eq!(complaints, 2, "two warnings in all:\n{log}");

    // Both come back.
    let back = Receiver::on(down);
    slow.set_delay(Duration::ZERO);
    for receiver in [&back, &slow] {
        poll(
            &format!("the 20 predictions at {}", receiver.address),
            Duration::from_secs(60),
            || {
                let export = receiver.exports().pop()?;
                (requests(&export, "success") == 20.0).then_some(export)
            },
        );
    }
    let scrape = service.scrape();
    assert!(exports(&scrape, "0", "success") >= 1.0);
    let log = service.process.log_text();
    for endpoint in [down.to_string(), slow.address.to_string()] {
        let recoveries = lines_with(&log, "OTLP export recovered", &endpoint);
        assert_eq!(recoveries, 1, "one recovery line for {endpoint}:\n{log}");
    }
    let export = back.exports().pop().expect("an export");
    let duration = metric(&export, "model_prediction_duration_seconds").expect("latency");
    assert!(
        matches!(duration.data, Some(Data::Histogram(_))),
        "a scraped process pushes explicit buckets"
    );
}

/// docs/otlp.md's name mapping: (unit, type) per OTLP instrument.
fn name_table() -> std::collections::BTreeMap<String, (String, String)> {
    common::otlp_mapping()
        .into_iter()
        .map(|row| (row.instrument, (row.unit, row.kind)))
        .collect()
}

/// The table's type words for a pushed metric.
fn kind(metric: &common::otlp_receiver::Metric) -> &'static str {
    match &metric.data {
        Some(Data::Sum(sum)) if sum.is_monotonic => "sum (monotonic)",
        Some(Data::Sum(_)) => "sum (non-monotonic)",
        Some(Data::Gauge(_)) => "gauge",
        Some(Data::Histogram(_)) => "histogram",
        Some(Data::ExponentialHistogram(_)) => "exponential histogram",
        other => panic!("{}: unexpected data {other:?}", metric.name),
    }
}

fn key_file(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("feedback.key");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef-test-key\n").expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Every instrument the binaries push, in every configuration that adds
/// instruments (a regressor and a classifier served with a feedback key,
/// a linear and a boosted run trained), has the name, unit and type of its
/// row in docs/otlp.md; and every row is pushed by one of them, except the
/// GPU rows (no NVML here).
#[test]
fn what_is_pushed_is_the_name_table_of_docs_otlp_md() {
    let receiver = Receiver::start();
    let keys = tempfile::tempdir().expect("temp dir");
    let key = key_file(keys.path());
    let push = [
        "--otlp-endpoint",
        &receiver.endpoint(),
        "--otlp-export-interval",
        "200ms",
        "--no-scrape",
    ];
    let serve_flags: Vec<&str> = ["--feedback-key-file", key.to_str().unwrap()]
        .into_iter()
        .chain(push)
        .collect();
    let regressor = Service::start(Some(&linear_artifact(0)), &serve_flags);
    let classifier = Service::start(Some(&serve_support::tree_artifact()), &serve_flags);
    // One labelled prediction: the label delay histogram exists once a
    // label arrived.
    let (status, answer) = regressor.predict(ROW);
    assert_eq!(status, 200, "{answer}");
    let id = answer["prediction_id"].as_str().expect("a prediction id");
    let body = serde_json::json!({"prediction_id": id, "truth": 151.0}).to_string();
    let (status, text) = regressor.request(
        "POST",
        "/feedback",
        Some("application/json"),
        body.as_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let dir = tempfile::tempdir().expect("temp dir");
    for model in ["linear", "boost"] {
        let output = dir.path().join(format!("{model}.json"));
        let mut args = vec![
            "train",
            "--model",
            model,
            "--listen",
            "127.0.0.1:0",
            "--output",
            output.to_str().unwrap(),
            "--iterations",
            "3",
            // Long enough for the resource sampler's first samples.
            "--pace",
            "300ms",
            "--sample-interval",
            "100ms",
            "--linger",
            "0s",
        ];
        args.extend(push);
        let mut trainer = Process::mlwatch(&format!("train-{model}"), &args, dir.path());
        let exit = trainer.wait_exit(Duration::from_secs(120));
        assert!(
            exit.is_some_and(|e| e.success()),
            "train {model}:\n{}",
            trainer.log_text()
        );
    }
    // Both services have pushed after their first requests.
    let before = receiver.export_count();
    poll("two more exports", Duration::from_secs(30), || {
        (receiver.export_count() >= before + 4).then_some(())
    });
    drop((regressor, classifier));

    let table = name_table();
    let mut pushed = std::collections::BTreeMap::new();
    for export in receiver.exports() {
        for metric in export
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            pushed.insert(
                metric.name.clone(),
                (metric.unit.clone(), kind(metric).to_owned()),
            );
        }
    }
    let mut wrong = Vec::new();
    for (name, pushed) in &pushed {
        match table.get(name) {
            None => wrong.push(format!("{name} {pushed:?}: no row in docs/otlp.md")),
            Some(row) if row != pushed => wrong.push(format!(
                "{name}: pushed {pushed:?}, docs/otlp.md says {row:?}"
            )),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let unpushed: Vec<&String> = table
        .keys()
        .filter(|name| !pushed.contains_key(*name) && !name.contains("_gpu_"))
        .collect();
    assert!(unpushed.is_empty(), "rows no binary pushed: {unpushed:?}");
}
