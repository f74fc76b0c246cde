//! The prediction API over real HTTP: right answers, every bad-input class
//! as a counted 4xx, a non-finite model output as a counted 500, and the
//! metrics contract of docs/metrics.md ("Service").

mod common;
mod serve_support;

use std::collections::BTreeSet;

use mlwatch::model::Prediction;
use serde_json::json;
use serve_support::{
    diabetes, linear_artifact, overflowing_artifact, requests, tree_artifact, Service, IRIS_CLASSES,
};

#[test]
fn single_named_and_batch_predictions_equal_the_library_predictions() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    let version = artifact.model_version.as_str();
    let data = diabetes();
    let expected: Vec<f64> = artifact
        .model
        .predict(data.records.view())
        .into_iter()
        .map(|p| match p {
            Prediction::Value(v) => v,
            other => panic!("regression model gave {other:?}"),
        })
        .collect();

    for i in [0, 1, 100, data.records.nrows() - 1] {
        let row = data.records.row(i).to_vec();
        let (status, body) = service.predict(&json!({"features": row}).to_string());
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model_version"], version);
        assert_eq!(
            body["prediction"].as_f64(),
            Some(expected[i]),
            "positional row {i}: {body}"
        );

        let named: serde_json::Map<String, serde_json::Value> = data
            .feature_names
            .iter()
            .cloned()
            .zip(row.iter().map(|v| json!(v)))
            .rev()
            .collect();
        let (status, body) = service.predict(&json!({"features": named}).to_string());
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["prediction"].as_f64(),
            Some(expected[i]),
            "named row {i} (keys reversed): {body}"
        );
    }

    let rows: Vec<Vec<f64>> = (0..200).map(|i| data.records.row(i).to_vec()).collect();
    let (status, body) = service.predict(&json!({"instances": rows}).to_string());
    assert_eq!(status, 200, "{body}");
    let predictions: Vec<f64> = body["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(
        predictions,
        expected[..200].to_vec(),
        "batch predictions equal Model::predict row by row"
    );

    let scrape = service.scrape();
    assert_eq!(
        requests(&scrape, version, "success"),
        9.0,
        "8 single requests and 1 batch, each counted once"
    );
    assert_eq!(
        requests(&scrape, version, "invalid_input"),
        0.0,
        "series exists at 0 before the first bad request"
    );
    assert_eq!(requests(&scrape, version, "error"), 0.0);
    assert!(
        common::samples(
            &scrape,
            "model_prediction_requests_total",
            &[("model_version", "none")]
        )
        .is_empty(),
        "no model_version=\"none\" series when a model loaded at start"
    );
    let durations = common::value(
        &scrape,
        "model_prediction_duration_seconds",
        &[("model_version", version)],
    );
    assert_eq!(
        durations,
        Some(9.0),
        "one latency observation per successful request"
    );
    let values = common::value(
        &scrape,
        "model_prediction_value",
        &[("model_version", version)],
    );
    assert_eq!(
        values,
        Some(9.0),
        "one prediction value per request, a batch included (docs/metrics.md)"
    );
}

#[test]
fn classifier_answers_class_names_and_probabilities() {
    let artifact = tree_artifact();
    let service = Service::start(Some(&artifact), &[]);
    let version = artifact.model_version.as_str();
    let (records, _, _) = serve_support::iris();
    let expected = artifact.model.predict(records.view());

    let (status, body) = service.predict(&json!({"features": records.row(0).to_vec()}).to_string());
    assert_eq!(status, 200, "{body}");
    let Prediction::Class {
        class,
        probabilities,
    } = &expected[0]
    else {
        panic!("classifier gave {:?}", expected[0])
    };
    assert_eq!(body["prediction"]["class"], IRIS_CLASSES[*class]);
    assert_eq!(body["prediction"]["class_index"], *class);
    for (name, p) in IRIS_CLASSES.iter().zip(probabilities) {
        assert_eq!(
            body["prediction"]["probabilities"][name].as_f64(),
            Some(*p),
            "{body}"
        );
    }

    let rows: Vec<Vec<f64>> = (0..150)
        .step_by(3)
        .map(|i| records.row(i).to_vec())
        .collect();
    let (status, body) = service.predict(&json!({"instances": rows}).to_string());
    assert_eq!(status, 200, "{body}");
    let got: Vec<usize> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class_index"].as_u64().unwrap() as usize)
        .collect();
    let want: Vec<usize> = (0..150)
        .step_by(3)
        .map(|i| match &expected[i] {
            Prediction::Class { class, .. } => *class,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, want);

    let scrape = service.scrape();
    let per_class: f64 = IRIS_CLASSES
        .iter()
        .map(|c| {
            common::value(
                &scrape,
                "model_predictions_total",
                &[("model_version", version), ("class", c)],
            )
            .expect("class series exists")
        })
        .sum();
    assert_eq!(per_class, 51.0, "one count per predicted instance (1 + 50)");
    assert!(
        common::samples(&scrape, "model_prediction_value", &[]).is_empty(),
        "no value histogram for a classifier"
    );
}

/// One bad request: how it is sent, and what must come back.
struct Case {
    name: &'static str,
    method: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    error: &'static str,
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    body: impl Into<String>,
    status: u16,
    error: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "POST",
        content_type: Some("application/json"),
        body: body.into(),
        status,
        error,
        field,
    }
}

#[test]
fn every_bad_input_class_is_a_counted_4xx_naming_the_problem() {
    let artifact = linear_artifact(1);
    let service = Service::start(
        Some(&artifact),
        &["--max-body-bytes", "4096", "--max-batch", "8"],
    );
    let version = artifact.model_version.as_str();
    let names = &artifact.feature_names;
    let row = || vec![0.01; 10];
    let named = |skip: usize, extra: Option<&str>| {
        let mut entries: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, n)| format!("{n:?}: 0.01"))
            .collect();
        if let Some(extra) = extra {
            entries.push(extra.to_owned());
        }
        format!("{{\"features\": {{{}}}}}", entries.join(", "))
    };
    let with_value =
        |value: &str| format!("{{\"features\": [0.1, {value}, 0, 0, 0, 0, 0, 0, 0, 0]}}");
    let cases = vec![
        case(
            "malformed JSON",
            "{\"features\": [1, 2",
            400,
            "malformed JSON",
            None,
        ),
        case(
            "trailing garbage",
            format!("{} x", json!({"features": row()})),
            400,
            "malformed JSON",
            None,
        ),
        Case {
            content_type: None,
            ..case(
                "missing Content-Type",
                json!({"features": row()}).to_string(),
                415,
                "unsupported content type",
                Some("Content-Type"),
            )
        },
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong Content-Type",
                json!({"features": row()}).to_string(),
                415,
                "unsupported content type",
                Some("Content-Type"),
            )
        },
        case("empty body", "", 400, "empty body", None),
        case(
            "not an object",
            "[1, 2, 3]",
            400,
            "request must be a JSON object",
            None,
        ),
        case("no features", "{}", 400, "missing field", Some("features")),
        case(
            "unknown top-level field",
            json!({"feature": row()}).to_string(),
            400,
            "unknown field",
            Some("feature"),
        ),
        case(
            "too few features",
            json!({"features": [1.0, 2.0]}).to_string(),
            422,
            "wrong number of features",
            Some("features"),
        ),
        case(
            "too many features",
            json!({"features": vec![0.0; 11]}).to_string(),
            422,
            "wrong number of features",
            Some("features"),
        ),
        case(
            "unknown feature name",
            named(99, Some("\"height\": 1.8")),
            422,
            "unknown feature",
            Some("features.height"),
        ),
        case(
            "missing feature name",
            named(2, None),
            422,
            "missing feature",
            Some("features.body mass index"),
        ),
        case(
            "duplicate feature name",
            named(99, Some("\"age\": 0.5")),
            400,
            "duplicate key",
            Some("features.age"),
        ),
        case(
            "duplicate top-level key",
            format!("{{\"features\": {0:?}, \"features\": {0:?}}}", row()),
            400,
            "duplicate key",
            Some("features"),
        ),
        case(
            "string value",
            with_value("\"0.5\""),
            400,
            "non-numeric value",
            Some("features[1]"),
        ),
        case(
            "null value",
            with_value("null"),
            400,
            "non-numeric value",
            Some("features[1]"),
        ),
        case(
            "boolean value",
            with_value("true"),
            400,
            "non-numeric value",
            Some("features[1]"),
        ),
        case(
            "nested array value",
            with_value("[0.5]"),
            400,
            "non-numeric value",
            Some("features[1]"),
        ),
        case(
            "nested object value",
            with_value("{\"v\": 0.5}"),
            400,
            "non-numeric value",
            Some("features[1]"),
        ),
        case(
            "NaN string",
            with_value("\"NaN\""),
            400,
            "non-finite value",
            Some("features[1]"),
        ),
        case(
            "Infinity string",
            with_value("\"-Infinity\""),
            400,
            "non-finite value",
            Some("features[1]"),
        ),
        case("bare NaN", with_value("NaN"), 400, "malformed JSON", None),
        case(
            "f64 overflow",
            with_value("1e400"),
            400,
            "number out of range",
            None,
        ),
        case(
            "body over the limit",
            json!({"features": vec![0.123456789; 600]}).to_string(),
            413,
            "body too large",
            None,
        ),
        case(
            "batch over the limit",
            json!({"instances": vec![row(); 9]}).to_string(),
            413,
            "batch too large",
            Some("instances"),
        ),
        case(
            "empty batch",
            json!({"instances": []}).to_string(),
            400,
            "empty batch",
            Some("instances"),
        ),
        case(
            "bad instance in a batch",
            json!({"instances": [row(), [1.0]]}).to_string(),
            422,
            "wrong number of features",
            Some("instances[1]"),
        ),
        case(
            "deeply nested JSON",
            format!(
                "{{\"features\": {}0{}}}",
                "[".repeat(1000),
                "]".repeat(1000)
            ),
            400,
            "JSON nested too deeply",
            None,
        ),
        Case {
            method: "GET",
            content_type: None,
            ..case(
                "GET /predict",
                "",
                405,
                "method not allowed",
                Some("method"),
            )
        },
        Case {
            method: "PUT",
            ..case(
                "PUT /predict",
                json!({"features": row()}).to_string(),
                405,
                "method not allowed",
                Some("method"),
            )
        },
    ];

    let before = service.scrape();
    for c in &cases {
        let (status, text) =
            service.request(c.method, "/predict", c.content_type, c.body.as_bytes(), &[]);
        assert_eq!(status, c.status, "{}: status ({text})", c.name);
        let body = serve_support::parse_json(&text);
        assert_eq!(body["error"], c.error, "{}: error ({text})", c.name);
        assert_eq!(
            body["field"].as_str(),
            c.field,
            "{}: field ({text})",
            c.name
        );
        if c.status == 413 || c.status == 415 || c.status == 405 || c.status == 422 {
            assert!(
                body.get("expected").is_some(),
                "{}: names what was expected ({text})",
                c.name
            );
        }
    }
    // The service is still healthy and a good request still works.
    let (status, _) = service.predict(&json!({"features": row()}).to_string());
    assert_eq!(status, 200);

    let after = service.scrape();
    let delta =
        |status: &str| requests(&after, version, status) - requests(&before, version, status);
    let wrong_method = cases.iter().filter(|c| c.status == 405).count();
    assert_eq!(wrong_method, 2, "GET and PUT");
    assert_eq!(
        delta("invalid_input"),
        (cases.len() - wrong_method) as f64,
        "every bad POST counted once as invalid_input; a 405 is not a prediction request"
    );
    assert_eq!(delta("success"), 1.0);
    assert_eq!(delta("error"), 0.0, "bad input is never a server error");
    let durations = common::value(
        &after,
        "model_prediction_duration_seconds",
        &[("model_version", version)],
    );
    assert_eq!(
        durations,
        Some(1.0),
        "latency is recorded for successful requests only"
    );
    let http_405 = common::value(
        &after,
        "http_server_request_duration_seconds",
        &[
            ("route", "/predict"),
            ("method", "other"),
            ("status_code", "405"),
        ],
    );
    assert_eq!(
        http_405,
        Some(wrong_method as f64),
        "HTTP metrics see the 405s (GET and PUT) under the route template, as methods the route does not serve"
    );
}

#[test]
fn non_finite_model_output_is_a_counted_server_error() {
    let artifact = overflowing_artifact();
    let service = Service::start(Some(&artifact), &[]);
    let version = artifact.model_version.as_str();
    let (status, body) = service.predict(&json!({"features": vec![1e300; 10]}).to_string());
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "model produced a non-finite prediction");
    let (status, body) = service.predict(&json!({"features": vec![1e-300; 10]}).to_string());
    assert_eq!(status, 200, "finite output still works: {body}");
    let scrape = service.scrape();
    assert_eq!(requests(&scrape, version, "error"), 1.0);
    assert_eq!(requests(&scrape, version, "success"), 1.0);
}

#[test]
fn metrics_endpoint_exports_every_documented_service_metric_with_its_type_and_labels() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &["--sample-interval", "100ms"]);
    let data = diabetes();
    // Traffic so that every series exists: a prediction (latency, value,
    // drift), an out-of-range value, a bad request, an unmatched route.
    let rows: Vec<Vec<f64>> = (0..20).map(|i| data.records.row(i).to_vec()).collect();
    assert_eq!(
        service.predict(&json!({"instances": rows}).to_string()).0,
        200
    );
    assert_eq!(
        service
            .predict(&json!({"features": vec![100.0; 10]}).to_string())
            .0,
        200
    );
    assert_eq!(service.predict("{").0, 400);
    assert_eq!(
        service.request("GET", "/no/such/route", None, &[], &[]).0,
        404
    );
    // model_predictions_total exists for classifiers only: a second service.
    let classifier = Service::start(Some(&tree_artifact()), &[]);
    assert_eq!(
        classifier
            .predict(&json!({"features": [5.1, 3.5, 1.4, 0.2]}).to_string())
            .0,
        200
    );
    // The resource sampler's first samples appear once it has run.
    let sampled = |s: &common::Scrape| {
        [
            "app_memory_usage_bytes",
            "app_cpu_usage_percent",
            "system_memory_used_bytes",
        ]
        .iter()
        .all(|name| s.samples.iter().any(|x| x.metric == *name))
    };
    let scrape = common::poll(
        "the resource sampler's first samples",
        std::time::Duration::from_secs(30),
        || Some(service.scrape()).filter(sampled),
    );
    let classifier_scrape = common::poll(
        "the classifier's resource samples",
        std::time::Duration::from_secs(30),
        || Some(classifier.scrape()).filter(sampled),
    );
    // Liveness too: the heartbeat is on both paths (the push counter only
    // when pushing, tests/otlp_push.rs).
    let documented = common::documented_metrics("Service")
        .into_iter()
        .chain(common::documented_metrics("Liveness"));
    for (name, kind, labels) in documented {
        if name.starts_with("app_gpu_") || name == "mlwatch_otlp_exports_total" {
            continue; // only with an NVIDIA GPU, which the test machine lacks
        }
        let from = if name == "model_predictions_total" {
            &classifier_scrape
        } else {
            &scrape
        };
        let families = common::family_names(from);
        assert_eq!(
            families.get(&name).copied(),
            Some(kind.as_str()),
            "{name}: exported with type {kind}"
        );
        let documented: BTreeSet<String> = labels.into_iter().collect();
        for sample in common::samples(from, &name, &[]) {
            let exported: BTreeSet<String> = sample.labels.keys().cloned().collect();
            assert_eq!(exported, documented, "{name}: label names");
        }
    }
    let version = artifact.model_version.as_str();
    assert_eq!(
        common::value(
            &scrape,
            "model_info",
            &[
                ("model_version", version),
                ("algorithm", "linear"),
                ("trained_at", "2024-05-01T12:00:00Z")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(common::value(&scrape, "model_loaded", &[]), Some(1.0));
    assert_eq!(
        common::value(&scrape, "model_drift_window_fill", &[]),
        Some(21.0)
    );
    assert_eq!(
        common::value(&scrape, "model_drift_window_capacity", &[]),
        Some(1000.0)
    );
    for feature in &artifact.feature_names {
        let out = common::value(
            &scrape,
            "model_input_out_of_range_total",
            &[("feature", feature)],
        );
        assert_eq!(
            out,
            Some(1.0),
            "{feature}: the one request of 100s is outside every training range"
        );
    }
    assert_eq!(
        common::value(&scrape, "model_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert_eq!(
        common::value(&scrape, "admin_unauthorized_requests_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        common::value(
            &scrape,
            "http_server_request_duration_seconds",
            &[("route", "unmatched"), ("status_code", "404")]
        ),
        Some(1.0),
        "an unmatched path collapses into route=\"unmatched\""
    );
    let routes: BTreeSet<&str> =
        common::samples(&scrape, "http_server_request_duration_seconds", &[])
            .iter()
            .filter_map(|s| s.labels.get("route"))
            .collect();
    assert_eq!(
        routes,
        BTreeSet::from(["/health", "/predict", "unmatched"]),
        "routes are templates, never raw paths"
    );
}

#[test]
fn http_metrics_never_take_label_values_from_the_request() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    assert_eq!(service.request("BREW", "/predict", None, &[], &[]).0, 405);
    assert_eq!(
        service
            .request("GET", "/predict/../../etc/passwd?x=1", None, &[], &[])
            .0,
        404
    );
    assert_eq!(service.request("GET", "/model", None, &[], &[]).0, 200);
    assert_eq!(service.request("POST", "/health", None, b"x", &[]).0, 405);
    let scrape = service.scrape();
    let samples = common::samples(&scrape, "http_server_request_duration_seconds", &[]);
    let methods: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("method"))
        .collect();
    let routes: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("route"))
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(["GET", "other"]),
        "the methods of refused requests (BREW and POST: 405, GET of an unknown path: 404) are other"
    );
    assert!(
        routes
            .iter()
            .all(|r| ["/predict", "/model", "/health", "unmatched"].contains(r)),
        "{routes:?}"
    );
    assert_eq!(
        common::value(
            &scrape,
            "http_server_request_duration_seconds",
            &[("method", "other"), ("route", "/predict")]
        ),
        Some(1.0)
    );
    assert_eq!(
        common::value(&scrape, "http_server_active_requests", &[]),
        Some(0.0),
        "an idle service has nothing in flight: the scrape is not timed"
    );
    let again = service.scrape();
    assert_eq!(
        common::samples(
            &again,
            "http_server_request_duration_seconds",
            &[("route", "/metrics")]
        )
        .len(),
        0,
        "scrapes are not timed, however many came before"
    );
}

/// A scanner sends every method to every path it can think of. Each new
/// label set is a histogram of 19 lines in every later scrape until the
/// service restarts, so refusals (405, unknown path) make one series per
/// route, not one per method and route.
#[test]
fn a_scan_of_every_method_and_path_adds_one_series_per_route() {
    let artifact = linear_artifact(1);
    let service = Service::start(Some(&artifact), &[]);
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
    ];
    let paths = [
        "/predict",
        "/feedback",
        "/health",
        "/ready",
        "/model",
        "/admin/reload",
        "/wp-login.php",
        "/predict/x",
    ];
    let mut answered = BTreeSet::new();
    for method in methods {
        for path in paths {
            let (status, _) = service.request(method, path, None, &[], &[]);
            answered.insert((method, path, status));
        }
    }
    let scrape = service.scrape();
    let series: BTreeSet<(String, String, String)> =
        common::samples(&scrape, "http_server_request_duration_seconds", &[])
            .iter()
            .map(|s| {
                let label = |name: &str| s.labels.get(name).unwrap_or_default().to_owned();
                (label("method"), label("route"), label("status_code"))
            })
            .collect();
    // Served: GET and HEAD of /health, /ready, /model (200); POST /predict
    // without a body (a 4xx it answered itself), POST /feedback without a
    // key (503), POST /admin/reload without a token (404). Refused: one
    // 405 per route, one 404 for the unknown paths.
    let served: BTreeSet<_> = series.iter().filter(|s| s.0 != "other").collect();
    let refused: BTreeSet<_> = series.iter().filter(|s| s.0 == "other").collect();
    assert_eq!(served.len(), 9, "{served:#?}\nanswered: {answered:#?}");
    assert_eq!(refused.len(), 7, "{refused:#?}\nanswered: {answered:#?}");
    assert!(
        refused
            .iter()
            .all(|(_, route, status)| (status == "405") != (route == "unmatched")),
        "{refused:#?}"
    );
}

#[test]
fn model_is_served_only_with_the_admin_token_when_one_is_configured() {
    const TOKEN: &str = "model-reader-token";
    let artifact = linear_artifact(1);
    let secrets = tempfile::tempdir().expect("temp dir");
    let token_file = secrets.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token file");
    let service = Service::start(
        Some(&artifact),
        &[
            "--admin-token-file",
            token_file.to_str().expect("utf-8 path"),
        ],
    );

    let (status, body) = service.get_json("/model");
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "no token: {body}"
    );
    assert!(body.get("reference").is_none(), "{body}");
    let (status, text) = service.request(
        "GET",
        "/model",
        None,
        &[],
        &[("Authorization", "Bearer not-the-token")],
    );
    let body = serve_support::parse_json(&text);
    assert_eq!(
        (status, body["error"].as_str(), body["detail"].as_str()),
        (401, Some("unauthorized"), Some("wrong bearer token")),
        "wrong token: {body}"
    );
    let bearer = format!("Bearer {TOKEN}");
    let (status, text) = service.request("GET", "/model", None, &[], &[("Authorization", &bearer)]);
    let body = serve_support::parse_json(&text);
    assert_eq!(status, 200, "right token: {body}");
    assert_eq!(body["model_version"], artifact.model_version.as_str());
    assert_eq!(
        body["reference"]["features"].as_array().map(Vec::len),
        Some(artifact.feature_names.len()),
        "the reference, with the token: {body}"
    );
    // The other public routes stay public.
    assert_eq!(service.get_json("/ready").0, 200);
    let scrape = service.scrape();
    assert_eq!(
        common::value(&scrape, "admin_unauthorized_requests_total", &[]),
        Some(2.0),
        "both refusals of /model are counted"
    );
    assert_eq!(
        common::value(
            &scrape,
            "http_server_request_duration_seconds",
            &[("route", "/model"), ("status_code", "401")]
        ),
        Some(2.0)
    );
    assert!(
        !service.process.log_text().contains(TOKEN),
        "the token never reaches the log"
    );

    // Without a configured token, /model (reference included) is open.
    let open = Service::start(Some(&artifact), &[]);
    let (status, body) = open.get_json("/model");
    assert_eq!(status, 200, "{body}");
    assert!(body["reference"]["features"].is_array(), "{body}");
}
