//! The service's protections, over real sockets: a request header or body
//! that comes too slowly is answered 408 and the connection closed within
//! the documented timeout; too many bodies in flight is a 503; each is
//! counted in `http_server_refused_requests_total`. Also: `GET /predict`
//! is not counted as invalid input, `/model` and `/ready` never name the
//! server's filesystem, and the port is bound before the model is loaded.

mod common;
mod serve_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_support::{linear_artifact, requests, Service};

fn address(service: &Service) -> String {
    service.base.trim_start_matches("http://").to_owned()
}

fn refused(service: &Service, reason: &str) -> f64 {
    common::value(
        &service.scrape(),
        "http_server_refused_requests_total",
        &[("reason", reason)],
    )
    .unwrap_or_else(|| panic!("no refused series for {reason}"))
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns what arrived and when the connection was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&received).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&received).into(),
                    Some(started.elapsed()),
                )
            }
        }
    }
    (String::from_utf8_lossy(&received).into(), None)
}

#[test]
fn half_open_requests_are_answered_408_and_closed_within_the_header_timeout() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--header-read-timeout", "2s"]);
    let address = address(&service);
    // A keep-alive connection that completed a request and then idles.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let sent = Instant::now();
    let mut half_open: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Ty")
                .unwrap();
            stream
        })
        .collect();
    for (i, stream) in half_open.iter_mut().enumerate() {
        let (text, closed) = read_until_closed(stream, Duration::from_secs(10));
        let closed_at = closed.map(|_| sent.elapsed());
        let closed_at = closed_at.unwrap_or_else(|| panic!("connection {i} still open after 10 s"));
        assert!(
            // Sent before connecting, so never early; the upper bound only
            // tells the flag from the default (10 s) on a loaded machine.
            closed_at >= Duration::from_millis(1500) && closed_at < Duration::from_secs(8),
            "connection {i} closed after {closed_at:?}, documented 2 s (default 10 s)"
        );
        assert!(
            text.starts_with("HTTP/1.1 408 "),
            "connection {i}: {text:?}"
        );
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"], "request header timeout", "{text}");
    }
    // The idle one is closed too, after its response, without a 408.
    let (text, closed) = read_until_closed(&mut idle, Duration::from_secs(10));
    assert!(closed.is_some(), "idle keep-alive connection left open");
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(
        !text.contains("408"),
        "an idle connection is not refused: {text}"
    );
    assert_eq!(
        refused(&service, "header_timeout"),
        10.0,
        "each half-open request counted once, the idle connection not at all"
    );
    // Still serving.
    let (status, _) = service.predict(&json!({"features": vec![0.0; 10]}).to_string());
    assert_eq!(status, 200);
}

#[test]
fn a_body_slower_than_the_body_timeout_is_a_counted_408() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--body-read-timeout", "1s"]);
    let version = artifact.model_version.as_str();
    let before = service.scrape();
    // Taken before the bytes exist, so the server's timer cannot start
    // before it.
    let started = Instant::now();
    let mut stream = TcpStream::connect(address(&service)).unwrap();
    stream
        .write_all(
            b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"features\": [",
        )
        .unwrap();
    let (text, closed) = read_until_closed(&mut stream, Duration::from_secs(25));
    let elapsed = started.elapsed();
    assert!(closed.is_some(), "connection left open: {text}");
    assert!(
        // The upper bound only tells the flag from the default (30 s).
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(20),
        "answered after {elapsed:?}, documented 1 s (default 30 s)"
    );
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(
        text.contains("\"error\":\"request body timeout\""),
        "{text}"
    );
    let after = service.scrape();
    assert_eq!(
        requests(&after, version, "invalid_input") - requests(&before, version, "invalid_input"),
        1.0,
        "a body that never arrives is the client's failure"
    );
    assert_eq!(refused(&service, "body_timeout"), 1.0);
}

/// What a slow upload sends of its 200-byte body before it stalls.
const UPLOAD_START: &str = "{\"features\":";

/// A `/predict` upload that sent its header and the start of its body.
struct SlowUpload {
    stream: TcpStream,
    received: Vec<u8>,
}

impl SlowUpload {
    fn start(address: &str) -> Self {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .write_all(
                format!(
                    "POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{UPLOAD_START}"
                )
                .as_bytes(),
            )
            .unwrap();
        stream.set_nonblocking(true).unwrap();
        Self {
            stream,
            received: Vec::new(),
        }
    }

    /// Whatever the server answered so far, without waiting.
    fn answer(&mut self) -> Option<&str> {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = self.stream.read(&mut buf) {
            self.received.extend_from_slice(&buf[..n]);
        }
        (!self.received.is_empty()).then(|| self.text())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.received).unwrap_or("<not utf-8>")
    }
}

#[test]
fn bodies_beyond_the_in_flight_cap_get_a_counted_503() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--max-inflight-bodies", "2"]);
    let version = artifact.model_version.as_str();
    // The port is bound before the model is loaded: until then /predict
    // answers 503 "no model loaded" at once and the uploads would hold
    // nothing. Wait for the model first.
    let ready_by = Instant::now() + Duration::from_secs(30);
    while service.get_json("/ready").0 != 200 {
        assert!(Instant::now() < ready_by, "the service never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three slow uploads for two slots: whichever two the server reads
    // first hold the slots (an upload never finishes on its own), the
    // third is refused. The refusal is counted before its 503 is written,
    // so "one answered and one counted" means the other two hold a slot:
    // no wait for a moment that might come late on a loaded machine.
    let mut uploads: Vec<SlowUpload> = (0..3)
        .map(|_| SlowUpload::start(&address(&service)))
        .collect();
    common::poll(
        "one upload refused, two holding",
        Duration::from_secs(30),
        || {
            let answered = uploads
                .iter_mut()
                .filter_map(|u| u.answer().map(|_| ()))
                .count();
            let counted = common::value(
                &service.scrape(),
                "http_server_refused_requests_total",
                &[("reason", "busy")],
            )
            .unwrap_or(0.0);
            (answered == 1 && counted == 1.0).then_some(())
        },
    );
    let (answered, mut holders): (Vec<_>, Vec<_>) =
        uploads.into_iter().partition(|u| !u.received.is_empty());
    assert_eq!(
        holders.len(),
        2,
        "uploads held open with --max-inflight-bodies 2"
    );
    for upload in &answered {
        assert!(
            upload.text().starts_with("HTTP/1.1 503 "),
            "{}",
            upload.text()
        );
    }
    // With both slots held, a whole request is refused at once.
    let body = json!({"features": vec![0.0; 10]}).to_string();
    let (status, text) = service.request(
        "POST",
        "/predict",
        Some("application/json"),
        body.as_bytes(),
        &[],
    );
    assert_eq!(status, 503, "{text}");
    let answer = serve_support::parse_json(&text);
    assert_eq!(answer["error"], "too many requests in flight");
    assert_eq!(
        refused(&service, "busy"),
        (answered.len() + 1) as f64,
        "every refused body counted once"
    );
    assert!(
        requests(&service.scrape(), version, "error") >= 1.0,
        "a saturated service is a server-side failure"
    );
    // Finishing the uploads frees the slots.
    let rest = format!("{}{}", json!(vec![0.0; 10]), "}");
    for upload in &mut holders {
        let padding = 200 - UPLOAD_START.len() - rest.len();
        upload
            .stream
            .write_all(format!("{rest}{}", " ".repeat(padding)).as_bytes())
            .unwrap();
    }
    for upload in &mut holders {
        let mut first = [0u8; 12];
        upload.stream.set_nonblocking(false).unwrap();
        upload.stream.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
    }
    let (status, _) = service.predict(&body);
    assert_eq!(status, 200);
}

#[test]
fn a_monitor_probing_get_predict_is_not_invalid_input() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    let version = artifact.model_version.as_str();
    let before = service.scrape();
    for _ in 0..5 {
        let (status, text) = service.request("GET", "/predict", None, &[], &[]);
        assert_eq!(status, 405, "{text}");
        assert_eq!(
            serve_support::parse_json(&text)["error"],
            "method not allowed"
        );
    }
    let after = service.scrape();
    for status in ["success", "invalid_input", "error"] {
        assert_eq!(
            requests(&after, version, status),
            requests(&before, version, status),
            "GET /predict is not a prediction request ({status})"
        );
    }
    assert_eq!(
        common::value(
            &after,
            "http_server_request_duration_seconds",
            &[
                ("route", "/predict"),
                ("method", "other"),
                ("status_code", "405")
            ],
        ),
        Some(5.0),
        "it is counted by the HTTP metrics"
    );
}

#[test]
fn model_and_ready_never_name_the_servers_filesystem() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    let directory = service.dir.path().to_str().unwrap().to_owned();
    let (status, text) = service.request("GET", "/model", None, &[], &[]);
    assert_eq!(status, 200);
    let model = serve_support::parse_json(&text);
    assert_eq!(model["model_version"], artifact.model_version.as_str());
    assert!(model.get("path").is_none(), "{text}");
    assert!(!text.contains(&directory), "{text}");

    let missing = Service::start(None, &[]);
    let directory = missing.dir.path().to_str().unwrap().to_owned();
    for path in ["/ready", "/model"] {
        let (status, text) = missing.request("GET", path, None, &[], &[]);
        assert_eq!(status, 503, "{path}");
        let body = serve_support::parse_json(&text);
        assert_eq!(body["kind"], "missing", "{path}");
        assert!(
            body["detail"].as_str().unwrap().contains("model.json"),
            "{text}"
        );
        assert!(!text.contains(&directory), "{path}: {text}");
    }
    assert!(
        missing.process.log_text().contains(&directory),
        "the log keeps the full path for the operator"
    );
}

#[test]
fn the_port_is_bound_before_the_model_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("model.json");
    // A FIFO blocks the model load until something writes to it.
    let made = std::process::Command::new("mkfifo")
        .arg(&model_path)
        .status()
        .expect("mkfifo (coreutils) is needed");
    assert!(made.success());
    let mut process = common::Process::mlwatch(
        "serve",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model-path",
            model_path.to_str().unwrap(),
        ],
        dir.path(),
    );
    // The bound port is logged while the load still waits on the FIFO...
    let listen = common::listening_address(&mut process, serve_support::LISTENING);
    // ...and accepts connections already.
    TcpStream::connect(listen).expect("the port accepts while the model loads");
    assert!(
        !process.log_text().contains("model loaded"),
        "the port accepts connections while the load still waits"
    );
    // Now let the load finish.
    let json = serde_json::to_vec(&linear_artifact(1)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model_path)
        .and_then(|mut fifo| fifo.write_all(&json))
        .unwrap();
    common::wait_for_status(
        &format!("http://{listen}/ready"),
        200,
        Duration::from_secs(30),
        &mut process,
    );
}
