//! The push path against the real Prometheus on PATH (docs/otlp.md).
//!
//! With a Prometheus that has the OTLP receiver (nixpkgs' 3.14, an upstream
//! 3.x): it runs with the stack's push config and flags, `mlwatch serve`
//! and `mlwatch train` push into it with `--no-scrape`, and the pushed
//! request count equals the requests sent and the native histogram's count
//! (one query), a dashboard's latency quantile has data, and both jobs'
//! heartbeats arrive under their job names.
//!
//! With one that has not (CI's Debian 2.42 and 3.5.3): the test says "not
//! applicable" on stdout, after checking that the binary really answers 404
//! on the receiver's path, so it never passes silently on a wrong guess.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::stack::{
    prometheus_query, require_binary, spawn, spawn_on_any_port, SERVICE_LISTENING,
};
use common::{free_port, poll, wait_for_status};
use mlwatch::stack::config::{self, Assets, Timing};
use mlwatch::stack::endpoints::Endpoints;
use mlwatch::stack::receiver::{self, OTLP_PATH};
use mlwatch::stack::{commands, plan};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

fn post_status(url: &str) -> u16 {
    match common::agent()
        .post(url)
        .set("Content-Type", "application/x-protobuf")
        .send_bytes(&[])
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("POST {url}: {e}"),
    }
}

fn scalar(prometheus: &str, promql: &str) -> Option<f64> {
    let result = prometheus_query(prometheus, promql, None);
    // Prometheus' API writes sample values as strings.
    result
        .first()
        .and_then(|sample| sample["value"][1].as_str()?.parse().ok())
}

#[test]
fn serve_and_train_push_into_a_prometheus_with_the_receiver() {
    let program = require_binary(&["prometheus"], "prometheus");
    match receiver::probe(&program) {
        Ok(found) => push_for_real(&program, &found.flags),
        Err(why) => not_applicable(&program, &format!("{why:#}")),
    }
}

/// Debian's build or 2.x: started plainly, its receiver path must be 404.
fn not_applicable(program: &Path, why: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n").unwrap();
    let child = plan::prometheus(
        "prometheus",
        program,
        &config,
        &dir.path().join("data"),
        loopback(),
    );
    let mut prometheus = spawn(&child, dir.path());
    wait_for_status(
        &child.ready_url(),
        200,
        Duration::from_secs(60),
        &mut prometheus,
    );
    let url = format!("http://{}{OTLP_PATH}", child.listen);
    assert_eq!(
        post_status(&url),
        404,
        "{} has no receiver flag but its OTLP path does not answer 404 ({why})",
        program.display()
    );
    let built_without = why.contains("built without the OTLP receiver");
    visible(&format!(
        "not applicable: {}; POST {OTLP_PATH} answers 404 (checked). {why}",
        if built_without {
            "built without the OTLP receiver"
        } else {
            "this Prometheus has no OTLP receiver"
        }
    ));
}

/// A line on the test's real stderr: libtest captures `println!` of a
/// passing test, and a "not applicable" must never look like a silent pass.
fn visible(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "otlp_push_live: {line}");
}

fn push_for_real(program: &Path, receiver_flags: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mlwatch = Path::new(env!("CARGO_BIN_EXE_mlwatch"));
    let timing = Timing::quick();
    let interval = timing.scrape_interval.unwrap_or(Duration::from_secs(1));

    // Prometheus with the stack's push config (prometheus.yml + otlp.yml).
    let endpoints = Endpoints {
        apps: Vec::new(),
        trainers: Vec::new(),
        prometheus: loopback(),
        alertmanager: loopback(),
        mlflow: None,
        runbooks: "http://runbooks.invalid/runbooks".into(),
        mlflow_url: "http://mlflow.invalid".into(),
    };
    let assets = Assets::new(env!("CARGO_MANIFEST_DIR")).unwrap();
    let (written, mut files) = config::derive(
        &assets,
        &root.join("config"),
        &endpoints,
        "http://127.0.0.1:9/unused",
        &timing,
    )
    .unwrap();
    let text = files.get_mut(&written.prometheus_yml).unwrap();
    *text = config::push(text, &assets.otlp_overlay().unwrap()).unwrap();
    files.write().unwrap();
    let mut child = plan::prometheus(
        "prometheus",
        program,
        &written.prometheus_yml,
        &root.join("prometheus-data"),
        endpoints.prometheus,
    );
    child.args.extend(receiver_flags.iter().cloned());
    let mut prometheus = spawn(&child, root);
    wait_for_status(
        &child.ready_url(),
        200,
        Duration::from_secs(60),
        &mut prometheus,
    );
    let prometheus_url = format!("http://{}", endpoints.prometheus);
    let push = commands::otlp_push(&[endpoints.prometheus], interval);

    // A service with a model, and a trainer, both only pushing.
    let mut fit = mlwatch::train::FitOptions::new(mlwatch::train::Algorithm::Linear);
    fit.iterations = Some(5);
    let artifact = mlwatch::train::train_quietly(&fit).unwrap();
    let model = root.join("model.json");
    artifact.save(&model).unwrap();
    let mut service = plan::service(
        "service",
        mlwatch,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &model,
        1000,
    );
    service.args.extend(push.iter().cloned());
    let (mut service_process, _, ready) = spawn_on_any_port(&service, SERVICE_LISTENING, root);
    wait_for_status(&ready, 200, Duration::from_secs(60), &mut service_process);
    let mut flags = vec![
        "--pace".to_owned(),
        "200ms".to_owned(),
        "--linger".to_owned(),
        "120s".to_owned(),
    ];
    flags.extend(push.iter().cloned());
    let trainer = plan::trainer(
        "trainer",
        mlwatch,
        loopback(),
        &root.join("trained.json"),
        &flags,
    );
    let _trainer = spawn(&trainer, root);

    let app = ready.trim_end_matches("/ready").to_owned();
    let sent = 30;
    for i in 0..sent {
        let body = common::stack::batch_for(&artifact, i, 1, None);
        let status = match common::agent()
            .post(&format!("{app}/predict"))
            .set("Content-Type", "application/json")
            .send_string(&body)
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("POST /predict: {e}"),
        };
        assert_eq!(status, 200, "prediction {i}");
    }

    let success = r#"sum(model_prediction_requests_total{job="ml-api",status="success"})"#;
    poll("the pushed request count", Duration::from_secs(60), || {
        scalar(&prometheus_url, success).filter(|n| *n == sent as f64)
    });
    // One instant: the counter and the native histogram agree.
    let difference = format!(
        r#"{success} - sum(histogram_count(model_prediction_duration_seconds{{job="ml-api"}}))"#
    );
    assert_eq!(
        scalar(&prometheus_url, &difference),
        Some(0.0),
        "{difference}"
    );
    // A dashboard query, as the predict-API dashboard sends it.
    let quantile = dashboard_query("Prediction latency p50 / p95 / p99", 1);
    let p95 = poll(
        "the dashboard's p95 from the native histogram",
        Duration::from_secs(60),
        || scalar(&prometheus_url, &quantile).filter(|v| v.is_finite()),
    );
    assert!(p95 > 0.0 && p95 < 5.0, "p95 {p95} s from {quantile}");
    // Both binaries' heartbeats, under the scrape path's job names.
    poll("both jobs' heartbeats", Duration::from_secs(60), || {
        let jobs: std::collections::BTreeSet<String> = prometheus_query(
            &prometheus_url,
            "count by (job) (mlwatch_heartbeat_timestamp_seconds)",
            None,
        )
        .iter()
        .filter_map(|s| s["metric"]["job"].as_str().map(str::to_owned))
        .collect();
        (jobs.len() == 2 && jobs.contains("ml-api") && jobs.contains("model-training"))
            .then_some(())
    });
    visible(&format!(
        "pushed {sent} predictions; p95 {p95:.6} s from the native histogram"
    ));
}

/// Target `index` of the panel titled `title` in the predict-API dashboard,
/// with the dashboard's variables set to "all".
fn dashboard_query(title: &str, index: usize) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("grafana/provisioning/dashboards/predict_api_dashboard.json"),
    )
    .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn find<'a>(panels: &'a [serde_json::Value], title: &str) -> Option<&'a serde_json::Value> {
        panels.iter().find_map(|p| {
            if p["title"] == title {
                Some(p)
            } else {
                find(
                    p["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                    title,
                )
            }
        })
    }
    let panel = find(doc["panels"].as_array().unwrap(), title).expect(title);
    panel["targets"][index]["expr"]
        .as_str()
        .unwrap()
        .replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$model_version", ".*")
}
