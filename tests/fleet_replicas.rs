//! `mlwatch up --replicas 3` end to end, with the real launcher, Prometheus
//! and Alertmanager: the three replicas come up on consecutive ports and
//! load the trainer's artifact, Prometheus finds them through the
//! launcher's file_sd targets file, `mlwatch load` spreads traffic over
//! them, every API dashboard query returns data with all replicas and with
//! one selected, the fleet request rate equals the sum over the replicas,
//! and killing one replica fires MlApiDown for that instance only while the
//! other two keep serving.

mod common;

use std::path::Path;
use std::time::Duration;

use common::queries::{dashboard_queries, substitute_variables};
use common::stack::{eventually, prometheus_query, require_binary};
use common::{free_port, get, wait_for_status, Process};
use serde_json::Value;

const REPLICAS: u16 = 3;
const WAIT: Duration = Duration::from_secs(90);

fn number(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

fn post_predict(url: &str, body: &str) -> Option<u16> {
    match common::agent()
        .post(&format!("{url}/predict"))
        .set("Content-Type", "application/json")
        .send_string(body)
    {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(_) => None,
    }
}

#[test]
fn three_replicas_are_discovered_add_up_and_fail_alone() {
    require_binary(&["prometheus"], "prometheus");
    require_binary(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let app_port = common::free_ports_in_a_row(REPLICAS);
    let prometheus_port = free_port();
    let mut args: Vec<String> = [
        "up",
        "--replicas",
        "3",
        "--test-timing",
        "--no-grafana",
        // Not about MLflow: its Python server would take a core for a
        // minute on a busy machine, and the trainer waits for it.
        "--no-mlflow",
        "--pace",
        "50ms",
    ]
    .map(String::from)
    .to_vec();
    for (flag, port) in [
        ("--app-port", app_port),
        ("--trainer-port", free_port()),
        ("--prometheus-port", prometheus_port),
        ("--alertmanager-port", free_port()),
        ("--grafana-port", free_port()),
        ("--webhook-port", free_port()),
        // (MLflow is off: --no-mlflow below. The flag still keeps it off
        // the default 5000 should that change.)
        ("--mlflow-port", free_port()),
    ] {
        args.extend([flag.to_owned(), port.to_string()]);
    }
    args.extend(["--state-dir".to_owned(), state.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Process::mlwatch("up", &args, dir.path());
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let urls: Vec<String> = (0..REPLICAS)
        .map(|i| format!("http://127.0.0.1:{}", app_port + i))
        .collect();
    let query = |promql: &str| prometheus_query(&prometheus, promql, None);

    // Every replica becomes ready when the launcher reloads it on the
    // trainer's artifact, and serves that artifact.
    for url in &urls {
        wait_for_status(&format!("{url}/ready"), 200, WAIT, &mut up);
    }
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("model.json")).expect("the trainer's artifact"),
    )
    .unwrap();
    let version = artifact["model_version"].as_str().unwrap().to_owned();
    for url in &urls {
        let (_, body) = get(&format!("{url}/ready")).unwrap();
        assert!(body.contains(&version), "{url} serves {version}: {body}");
    }

    // Discovery: the ml-api targets come from the launcher's targets file.
    wait_for_status(&format!("{prometheus}/-/ready"), 200, WAIT, &mut up);
    let targets_file = state.join("config/prometheus/targets/ml-api.json");
    eventually("three ml-api targets up", WAIT, || {
        let n = query("count(up{job=\"ml-api\"} == 1)");
        (n.first().map(number) == Some(f64::from(REPLICAS))).then_some(())
    });
    let targets: Value = common::agent()
        .get(&format!("{prometheus}/api/v1/targets?state=active"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let api: Vec<&Value> = targets["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["labels"]["job"] == "ml-api")
        .collect();
    assert_eq!(api.len(), usize::from(REPLICAS));
    for target in &api {
        assert_eq!(
            target["discoveredLabels"]["__meta_filepath"],
            targets_file.display().to_string(),
            "discovered through file_sd: {target}"
        );
    }

    // Traffic over all three from one `mlwatch load`, reconciled against
    // the sum of the replicas' counters (it fails on a mismatch).
    let mut load_args = vec!["load".to_owned()];
    for url in &urls {
        load_args.extend(["--target".to_owned(), url.clone()]);
    }
    load_args.extend(
        [
            "--rate",
            "40",
            "--duration",
            "30s",
            "--mix",
            "valid=60,invalid=30,drifted=10",
            "--json",
        ]
        .map(String::from),
    );
    let load_args: Vec<&str> = load_args.iter().map(String::as_str).collect();
    let mut load = Process::mlwatch("load", &load_args, dir.path());

    // Every API dashboard query returns data, with all replicas and with
    // one selected. The classification panel needs a classifier; the fleet
    // serves the launcher's default (regression) model.
    let regression = artifact["task"] == "regression";
    let gpu = !query("app_gpu_utilization_percent").is_empty();
    let api_queries: Vec<_> = dashboard_queries()
        .into_iter()
        .filter(|q| q.origin.starts_with("predict_api"))
        .filter(|q| !(regression && q.expr.contains("model_predictions_total")))
        // GPU panels have data only where an NVIDIA GPU is (as in
        // tests/grafana_dashboards.rs).
        .filter(|q| !q.optional_without_gpu || gpu)
        .collect();
    assert!(api_queries.len() >= 25, "{} queries", api_queries.len());
    let one = format!("127.0.0.1:{}", app_port + 1);
    eventually(
        "every API panel has data, fleet and one replica",
        WAIT,
        || {
            let empty: Vec<String> = api_queries
                .iter()
                .flat_map(|q| {
                    let all = substitute_variables(&q.expr);
                    let single = substitute_variables(
                        &q.expr
                            .replace("${instance}", &one)
                            .replace("$instance", &one),
                    );
                    [all, single]
                })
                .filter(|promql| query(promql).is_empty())
                .collect();
            empty.is_empty().then_some(()).or_else(|| {
                eprintln!("still empty: {empty:#?}");
                None
            })
        },
    );

    // The fleet rate is the sum of the replicas' rates, read from one
    // evaluation of the rule group: the job-level rule is computed from the
    // instance-level one in the same group, at the same timestamp, so one
    // query at that timestamp returns both sides of the same evaluation
    // (the instance-level series is committed before the job-level rule
    // reads it). That the instance-level rule is `rate()` of the counters is
    // the rule's arithmetic, tested deterministically by promtool
    // (tests/prometheus/ml_recording_test.yml). Wait until every replica's
    // rate shows its traffic: right after the panels have data, a replica's
    // 5 m window may still hold only samples from before its first request.
    let (fleet_rate, per_instance) = eventually("every replica's rate shows traffic", WAIT, || {
        let latest = query("timestamp(job:model_prediction_requests:rate5m{job=\"ml-api\"})");
        let at = number(latest.first()?);
        let both_sides = prometheus_query(
            &prometheus,
            "label_replace(job:model_prediction_requests:rate5m{job=\"ml-api\"}, \"side\", \"fleet\", \"\", \"\") \
             or label_replace(sum by (job, instance) \
                  (job_instance_model_version_status:model_prediction_requests:rate5m{job=\"ml-api\"}), \
                  \"side\", \"replica\", \"\", \"\")",
            Some(at),
        );
        let side = |name: &str| -> Vec<f64> {
            both_sides
                .iter()
                .filter(|s| s["metric"]["side"] == name)
                .map(number)
                .collect()
        };
        let (fleet, replicas) = (side("fleet"), side("replica"));
        (fleet.len() == 1
            && replicas.len() == usize::from(REPLICAS)
            && replicas.iter().all(|rate| *rate > 0.0))
        .then(|| (fleet[0], replicas))
    });
    let sum: f64 = per_instance.iter().sum();
    // One evaluation, so the only difference is the order of a float sum
    // (Prometheus adds per status and model version, this adds per
    // instance): far below 1e-9, and a third of the fleet (one replica)
    // is far above it.
    assert!(
        (fleet_rate - sum).abs() <= 1e-9 * sum,
        "fleet {fleet_rate} = sum over replicas {sum} ({per_instance:?})"
    );

    let status = load.wait_exit(WAIT).expect("load finishes its 30s run");
    assert!(
        status.success(),
        "load reconciles over all targets:\n{}",
        load.log_text()
    );
    let summary = load.log_text();
    assert!(
        summary.contains(&urls[2]),
        "the summary names every target:\n{summary}"
    );

    // Kill the middle replica: MlApiDown for it alone, the others serve,
    // the launcher stays up.
    let listen = format!("--listen 127.0.0.1:{}", app_port + 1);
    let victims = common::processes_mentioning(&listen);
    assert_eq!(victims.len(), 1, "{victims:?}");
    let pid = victims[0].split(':').next().unwrap().to_owned();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    let firing = eventually("MlApiDown firing", WAIT, || {
        let alerts = query("ALERTS{alertname=\"MlApiDown\",alertstate=\"firing\"}");
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(firing.len(), 1, "one instance down: {firing:?}");
    assert_eq!(firing[0]["metric"]["instance"], one.as_str());
    let width = artifact["feature_names"].as_array().unwrap().len();
    let body = serde_json::json!({ "instances": [vec![0.0; width]] }).to_string();
    for (i, url) in urls.iter().enumerate() {
        let answer = post_predict(url, &body);
        if i == 1 {
            assert_eq!(answer, None, "the killed replica does not answer");
        } else {
            assert_eq!(answer, Some(200), "{url} keeps serving");
        }
    }
    eventually("the launcher relays MlApiDown", WAIT, || {
        up.log_text().contains("firing MlApiDown").then_some(())
    });
    assert!(
        up.try_exit().is_none(),
        "the launcher keeps the fleet up:\n{}",
        up.log_text()
    );
    eventually("the two live replicas up", WAIT, || {
        (query("up{job=\"ml-api\"} == 1").len() == 2).then_some(())
    });
    assert!(up.log_text().contains("2 replica(s) still serve"));

    up.signal("INT");
    let status = up.wait_exit(WAIT).expect("Ctrl-C stops the launcher");
    assert!(status.success(), "{}", up.log_text());
    let left = common::processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
    assert!(Path::new(&targets_file).is_file());
}
