//! Model lifecycle over real HTTP and real signals: starting without a
//! model, reloading by SIGHUP and POST /admin/reload, surviving a corrupt
//! artifact, admin token enforcement, and graceful shutdown.

mod common;
mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use serve_support::{linear_artifact, requests, write_artifact, Service};

const TOKEN: &str = "correct-horse-battery-staple";

fn with_token_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("admin-token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// Starts with no artifact on disk, an admin token file, and `extra` flags.
fn start_without_model(extra: &[&str]) -> Service {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = with_token_file(&dir);
    let model_path = dir.path().join("model.json");
    let mut args = vec!["--admin-token-file", token_file.as_str()];
    args.extend_from_slice(extra);
    Service::start_in(dir, model_path, &args)
}

/// GET /model with the admin token, which a service with a token requires.
fn model(service: &Service) -> (u16, serde_json::Value) {
    let bearer = format!("Bearer {TOKEN}");
    let (status, text) = service.request("GET", "/model", None, &[], &[("Authorization", &bearer)]);
    (status, serve_support::parse_json(&text))
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn row() -> String {
    json!({"features": vec![0.01; 10]}).to_string()
}

#[test]
fn without_a_model_the_service_stays_up_unready_and_becomes_ready_after_admin_reload() {
    let service = start_without_model(&[]);
    let (status, ready) = service.get_json("/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["kind"], "missing", "names the cause: {ready}");
    assert!(
        ready["detail"].as_str().unwrap().contains("model.json"),
        "names the path: {ready}"
    );
    let (status, body) = service.predict(&row());
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "no model loaded");
    assert_eq!(body["kind"], "missing");
    assert_eq!(model(&service).0, 503);
    let scrape = service.scrape();
    assert_eq!(common::value(&scrape, "model_loaded", &[]), Some(0.0));
    assert_eq!(
        requests(&scrape, "none", "error"),
        1.0,
        "a 503 without a model is a server-side failure"
    );
    assert!(
        common::samples(&scrape, "model_info", &[]).is_empty(),
        "no model_info without a model"
    );

    let artifact = linear_artifact(1);
    write_artifact(&artifact, &service.model_path);
    let (status, body) = service.admin_reload(Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"result": "success", "model_version": artifact.model_version, "previous_model_version": null, "changed": true})
    );
    let (status, ready) = service.get_json("/ready");
    assert_eq!(
        (status, ready["model_version"].as_str()),
        (200, Some(artifact.model_version.as_str()))
    );
    let (status, model) = model(&service);
    assert_eq!(status, 200);
    assert_eq!(model["features"], json!(artifact.feature_names));
    assert_eq!(model["task"], "regression");
    assert_eq!(model["algorithm"], "linear");
    assert_eq!(service.predict(&row()).0, 200);

    let scrape = service.scrape();
    assert_eq!(common::value(&scrape, "model_loaded", &[]), Some(1.0));
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(requests(&scrape, &artifact.model_version, "success"), 1.0);
    assert_eq!(
        requests(&scrape, &artifact.model_version, "error"),
        0.0,
        "new version's series start at 0"
    );
}

#[test]
fn corrupt_artifact_at_start_names_the_cause_and_sighup_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model_path = dir.path().join("model.json");
    let artifact = linear_artifact(1);
    let json = serde_json::to_string(&artifact).unwrap();
    std::fs::write(&model_path, &json[..json.len() / 2]).unwrap();
    let service = Service::start_in(dir, model_path, &[]);
    let (status, ready) = service.get_json("/ready");
    assert_eq!(
        (status, ready["kind"].as_str()),
        (503, Some("truncated")),
        "{ready}"
    );
    assert_eq!(service.predict(&row()).0, 503);

    std::fs::write(
        &service.model_path,
        b"{\"format_version\": 1, \"model\": 5}",
    )
    .unwrap();
    service.process.signal("HUP");
    wait_until("the corrupt reload is counted", || {
        common::value(
            &service.scrape(),
            "model_reloads_total",
            &[("result", "failure")],
        ) == Some(1.0)
    });
    let (status, ready) = service.get_json("/ready");
    assert_eq!(
        (status, ready["kind"].as_str()),
        (503, Some("corrupt")),
        "reports the latest cause: {ready}"
    );

    write_artifact(&artifact, &service.model_path);
    service.process.signal("HUP");
    wait_until("SIGHUP loads the good artifact", || {
        service.get_json("/ready").0 == 200
    });
    assert_eq!(service.predict(&row()).0, 200);
}

#[test]
fn reload_to_a_new_artifact_changes_the_model_version_label() {
    let first = linear_artifact(1);
    let second = linear_artifact(2);
    assert_ne!(first.model_version, second.model_version);
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = with_token_file(&dir);
    let model_path = dir.path().join("model.json");
    write_artifact(&first, &model_path);
    let service = Service::start_in(dir, model_path, &["--admin-token-file", &token_file]);
    assert_eq!(
        service.predict(&row()).1["model_version"],
        first.model_version.as_str()
    );

    write_artifact(&second, &service.model_path);
    let (status, body) = service.admin_reload(Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_model_version"], first.model_version.as_str());
    assert_eq!(body["model_version"], second.model_version.as_str());
    let (_, prediction) = service.predict(&row());
    assert_eq!(prediction["model_version"], second.model_version.as_str());

    let scrape = service.scrape();
    let info = common::samples(&scrape, "model_info", &[]);
    assert_eq!(
        info.len(),
        1,
        "only the current model has a model_info series"
    );
    assert_eq!(
        info[0].labels.get("model_version"),
        Some(second.model_version.as_str())
    );
    assert_eq!(requests(&scrape, &first.model_version, "success"), 1.0);
    assert_eq!(requests(&scrape, &second.model_version, "success"), 1.0);

    // Reloading the same file again changes nothing and still succeeds.
    let (status, body) = service.admin_reload(Some(TOKEN));
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "success")]),
        Some(2.0)
    );
}

#[test]
fn reload_to_a_corrupt_artifact_keeps_serving_the_old_model() {
    let artifact = linear_artifact(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = with_token_file(&dir);
    let model_path = dir.path().join("model.json");
    write_artifact(&artifact, &model_path);
    let service = Service::start_in(dir, model_path, &["--admin-token-file", &token_file]);

    // Edited after training: the content no longer matches model_version.
    let mut tampered = serde_json::to_value(&artifact).unwrap();
    tampered["model"]["intercept"] = json!(0.0);
    std::fs::write(&service.model_path, tampered.to_string()).unwrap();
    let (status, body) = service.admin_reload(Some(TOKEN));
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["result"], "failure");
    assert_eq!(body["kind"], "checksum_mismatch");
    assert_eq!(
        body["model_version"],
        artifact.model_version.as_str(),
        "still serving the old model"
    );

    std::fs::write(&service.model_path, b"not json").unwrap();
    service.process.signal("HUP");
    wait_until("the SIGHUP failure is counted", || {
        common::value(
            &service.scrape(),
            "model_reloads_total",
            &[("result", "failure")],
        ) == Some(2.0)
    });
    assert_eq!(service.get_json("/ready").0, 200, "still ready");
    let (status, body) = service.predict(&row());
    assert_eq!(
        (status, body["model_version"].as_str()),
        (200, Some(artifact.model_version.as_str()))
    );
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "success")]),
        Some(0.0)
    );
    assert_eq!(common::value(&scrape, "model_loaded", &[]), Some(1.0));
    assert!(
        service.process.log_text().contains("model reload failed"),
        "the failure is logged"
    );
}

#[test]
fn admin_reload_requires_the_bearer_token_and_counts_refusals() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--admin-token", TOKEN]);
    let (status, body) = service.admin_reload(None);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "missing token: {body}"
    );
    let (status, body) = service.admin_reload(Some("wrong-token"));
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "wrong token: {body}"
    );
    let (status, _) = service.request(
        "POST",
        "/admin/reload",
        None,
        &[],
        &[("Authorization", &format!("Basic {TOKEN}"))],
    );
    assert_eq!(status, 401, "only the Bearer scheme");
    let (status, body) = service.admin_reload(Some(TOKEN));
    assert_eq!(status, 200, "right token: {body}");
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "admin_unauthorized_requests_total", &[]),
        Some(3.0)
    );
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "success")]),
        Some(1.0),
        "refusals do not reload"
    );
    assert!(
        !service.process.log_text().contains(TOKEN),
        "the token never reaches the log"
    );
}

#[test]
fn admin_endpoint_is_disabled_without_a_token() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    let (status, body) = service.admin_reload(Some("anything"));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("admin endpoint disabled")),
        "{body}"
    );
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "admin_unauthorized_requests_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "success")]),
        Some(0.0)
    );
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let artifact = linear_artifact(1);
    let mut service = Service::start(Some(&artifact), &[]);
    let body = row();
    let (head, tail) = body.split_at(body.len() / 2);
    let address = service.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /predict HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    // The request is in flight once the server counts it (the scrape that
    // asks is not timed): it waits for the rest of its body.
    common::poll(
        "the upload to be in flight",
        Duration::from_secs(30),
        || {
            (common::value(&service.scrape(), "http_server_active_requests", &[]) == Some(1.0))
                .then_some(())
        },
    );
    service.process.signal("TERM");
    // Shutdown has begun once the listener is gone.
    common::poll("the listener to close", Duration::from_secs(30), || {
        TcpStream::connect(&address).is_err().then_some(())
    });
    assert!(
        service.process.try_exit().is_none(),
        "the process waits for the in-flight request"
    );
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "in-flight request completes: {response}"
    );
    assert!(response.contains(&artifact.model_version));
    let exit = service
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the process exits after the request");
    assert!(exit.success(), "clean exit: {exit}");
    assert!(TcpStream::connect(&address).is_err(), "no longer listening");
}
