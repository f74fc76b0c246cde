//! A live stack for end-to-end tests: trainer(s), the service, Prometheus,
//! Alertmanager and a webhook receiver owned by the test, all real
//! processes on free loopback ports. Configs come from the repository's
//! files through `mlwatch::stack::config`, with intervals and `for:`
//! shortened, and every child (program, command line, readiness path) from
//! the launcher's own plan building blocks, `mlwatch::stack::plan`; nothing
//! is hand-written twice. (The tests keep their own synchronous harness
//! around those children: several services with different models and
//! several trainers, pre-trained artifacts, and a panic that names the
//! missing package, which the launcher's stack has no use for.) Every
//! process is killed when the stack is dropped, also when an assertion
//! fails.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, listening_address, wait_for_status, Process};
pub use mlwatch::prometheus_api::{Alert, Sample};
use mlwatch::stack::config::{self, Assets, Timing};
use mlwatch::stack::endpoints::Endpoints;
use mlwatch::stack::plan::{self, Child};
use mlwatch::stack::webhook::{self, AlertInbox};

/// A binary from PATH, or a panic that names the Debian package.
pub fn require_binary(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("none of {names:?} on PATH: install the Debian package {package} (apt-get install -y {package})");
}

/// Starts a planned child in `dir` (its log there too).
pub fn spawn(child: &Child, dir: &Path) -> Process {
    assert!(
        child.env.is_empty(),
        "{}: the harness passes no environment",
        child.name
    );
    Process::spawn(&child.name, &child.program, &child.args, dir)
}

/// Starts a planned child asked for any port, and the address it bound
/// (what it logs after `listening`) with its readiness URL there.
pub fn spawn_on_any_port(
    child: &Child,
    listening: &str,
    dir: &Path,
) -> (Process, SocketAddr, String) {
    let mut process = spawn(child, dir);
    let address = listening_address(&mut process, listening);
    let ready = plan::ready_url(address, child.ready_path);
    (process, address, ready)
}

/// The launcher's own webhook receiver ([`mlwatch::stack::webhook`]) on a
/// free port, on a runtime of its own: records every notification.
pub struct Webhook {
    pub url: String,
    inbox: AlertInbox,
    _runtime: tokio::runtime::Runtime,
}

impl Webhook {
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("webhook runtime");
        let inbox = AlertInbox::default();
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let (address, _) = runtime
            .block_on(webhook::start(loopback, inbox.clone(), None))
            .expect("start the webhook receiver");
        Self {
            url: format!("http://{address}{}", webhook::PATH),
            inbox,
            _runtime: runtime,
        }
    }

    /// Every notification (POST body) received so far, in order.
    pub fn notifications(&self) -> Vec<Value> {
        self.inbox.notifications()
    }

    /// (alertname, status, labels) of every alert received so far.
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        self.inbox
            .alerts()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
                    a["status"].as_str().unwrap_or("").to_owned(),
                    a["labels"].clone(),
                )
            })
            .collect()
    }

    pub fn has_firing(&self, alertname: &str) -> bool {
        self.alerts()
            .iter()
            .any(|(name, status, _)| name == alertname && status == "firing")
    }
}

/// What to start.
pub struct StackOptions {
    /// One prediction service per entry, serving a model of this kind.
    pub services: Vec<mlwatch::train::Algorithm>,
    /// Extra `mlwatch train` arguments, one trainer per entry.
    pub trainers: Vec<Vec<String>>,
    pub drift_window: usize,
    pub timing: Timing,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            services: vec![mlwatch::train::Algorithm::Linear],
            trainers: vec![vec![
                "--pace".into(),
                "500ms".into(),
                "--iterations".into(),
                "2000".into(),
            ]],
            drift_window: 200,
            timing: Timing {
                scrape_interval: Some(Duration::from_secs(1)),
                evaluation_interval: Some(Duration::from_secs(1)),
                alert_for: Some(Duration::from_secs(3)),
                alert_grouping: Some(Duration::from_secs(1)),
            },
        }
    }
}

pub struct LiveStack {
    pub webhook: Webhook,
    pub trainers: Vec<Process>,
    pub trainer_addresses: Vec<SocketAddr>,
    /// The first service; `services` holds any further ones.
    pub service: Process,
    pub services: Vec<Process>,
    pub app_urls: Vec<String>,
    pub artifacts: Vec<mlwatch::model::Artifact>,
    pub prometheus: Process,
    pub alertmanager: Process,
    pub app_url: String,
    pub prometheus_url: String,
    pub alertmanager_url: String,
    pub artifact: mlwatch::model::Artifact,
    client: PrometheusClient,
    // Last: the directory goes after every process has been killed.
    pub dir: tempfile::TempDir,
}

/// mlwatch's async Prometheus client with a runtime of its own, for the
/// tests' blocking code; the runtime lives as long as the client's pooled
/// connections.
struct PrometheusClient {
    api: mlwatch::prometheus_api::Client,
    runtime: tokio::runtime::Runtime,
}

impl PrometheusClient {
    fn new(url: &str) -> Self {
        Self {
            api: mlwatch::prometheus_api::Client::new(url).expect("Prometheus URL"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the Prometheus client"),
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// What `mlwatch serve` logs once bound, just before its address.
pub const SERVICE_LISTENING: &str = "prediction service listening listen=";
/// What `mlwatch train` logs once bound, just before its address.
pub const TRAINER_LISTENING: &str = "training metrics on http://";

impl LiveStack {
    pub fn start(options: StackOptions) -> Self {
        let prometheus_bin = require_binary(&["prometheus"], "prometheus");
        let alertmanager_bin = require_binary(
            &["alertmanager", "prometheus-alertmanager"],
            "prometheus-alertmanager",
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();

        // Served models come from the library trainer; the live trainers
        // write their own artifacts elsewhere.
        let artifacts: Vec<mlwatch::model::Artifact> = options
            .services
            .iter()
            .map(|algorithm| {
                let mut fit = mlwatch::train::FitOptions::new(*algorithm);
                fit.iterations = Some(5);
                mlwatch::train::train_quietly(&fit).expect("train")
            })
            .collect();

        // Services and trainers bind :0 and report what they bound, so their
        // ports cannot be taken between choosing and binding. They start
        // first: Prometheus' config needs their addresses.
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let mlwatch = Path::new(env!("CARGO_BIN_EXE_mlwatch"));
        let mut services = Vec::new();
        let mut apps = Vec::new();
        let mut ready = Vec::new();
        for (i, artifact) in artifacts.iter().enumerate() {
            let model_path = root.join(format!("model-{i}.json"));
            artifact.save(&model_path).expect("save artifact");
            let mut child = plan::service(
                &format!("service-{i}"),
                mlwatch,
                any_port,
                &model_path,
                options.drift_window,
            );
            child.args.extend(["--sample-interval".into(), "1s".into()]);
            let (service, address, url) = spawn_on_any_port(&child, SERVICE_LISTENING, root);
            apps.push(address);
            ready.push(url);
            services.push(service);
        }
        let mut trainers = Vec::new();
        let mut trainer_addresses = Vec::new();
        let mut trainers_ready = Vec::new();
        for (i, extra) in options.trainers.iter().enumerate() {
            let mut flags = vec!["--sample-interval".to_owned(), "1s".to_owned()];
            flags.extend(extra.iter().cloned());
            let child = plan::trainer(
                &format!("trainer-{i}"),
                mlwatch,
                any_port,
                &root.join(format!("trainer-{i}.json")),
                &flags,
            );
            let (trainer, address, url) = spawn_on_any_port(&child, TRAINER_LISTENING, root);
            trainer_addresses.push(address);
            trainers_ready.push(url);
            trainers.push(trainer);
        }

        // Prometheus and Alertmanager take a port number up front.
        let endpoints = Endpoints {
            apps,
            trainers: trainer_addresses,
            prometheus: loopback(),
            alertmanager: loopback(),
            mlflow: None,
            // No runbook server in these tests; the links are checked on a
            // real `mlwatch up` (tests/grafana_dashboards.rs).
            runbooks: "http://runbooks.invalid/runbooks".into(),
            mlflow_url: "http://mlflow.invalid".into(),
        };
        let webhook = Webhook::start();
        let assets = Assets::new(env!("CARGO_MANIFEST_DIR")).expect("repository assets");
        let written = config::write(
            &assets,
            &root.join("config"),
            &endpoints,
            &webhook.url,
            &options.timing,
        )
        .expect("derive configs");

        // The launcher's own children: the flags live in one place.
        let alertmanager_child = plan::alertmanager(
            &alertmanager_bin,
            &written.alertmanager_yml,
            &root.join("alertmanager-data"),
            endpoints.alertmanager,
        );
        let mut alertmanager = spawn(&alertmanager_child, root);
        let prometheus_child = plan::prometheus(
            "prometheus",
            &prometheus_bin,
            &written.prometheus_yml,
            &root.join("prometheus-data"),
            endpoints.prometheus,
        );
        let mut prometheus = spawn(&prometheus_child, root);
        let app_urls: Vec<String> = endpoints
            .apps
            .iter()
            .map(|a| format!("http://{a}"))
            .collect();
        let prometheus_url = format!("http://{}", endpoints.prometheus);
        let alertmanager_url = format!("http://{}", endpoints.alertmanager);
        let startup = Duration::from_secs(60);
        for (service, url) in services.iter_mut().zip(&ready) {
            wait_for_status(url, 200, startup, service);
        }
        wait_for_status(&prometheus_child.ready_url(), 200, startup, &mut prometheus);
        wait_for_status(
            &alertmanager_child.ready_url(),
            200,
            startup,
            &mut alertmanager,
        );
        for (trainer, url) in trainers.iter_mut().zip(&trainers_ready) {
            wait_for_status(url, 200, startup, trainer);
        }
        Self {
            client: PrometheusClient::new(&prometheus_url),
            webhook,
            trainers,
            trainer_addresses: endpoints.trainers.clone(),
            service: services.remove(0),
            services,
            app_url: app_urls[0].clone(),
            artifact: artifacts[0].clone(),
            app_urls,
            artifacts,
            prometheus,
            alertmanager,
            prometheus_url,
            alertmanager_url,
            dir,
        }
    }

    /// GET a Prometheus API path that mlwatch's client has no call for
    /// (targets, rules) and return `data`.
    pub fn api(&self, path_and_query: &str) -> Value {
        let url = format!("{}{path_and_query}", self.prometheus_url);
        let body: Value = super::agent()
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .into_json()
            .expect("json");
        assert_eq!(body["status"], "success", "{url}: {body}");
        body["data"].clone()
    }

    /// Instant query, now, through mlwatch's own Prometheus client (the one
    /// the report and the demo use).
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        self.client
            .runtime
            .block_on(self.client.api.query(promql, now))
            .unwrap_or_else(|e| panic!("query {promql}: {e}"))
    }

    /// Alerts Prometheus holds in `state` ("firing" or "pending").
    pub fn prometheus_alerts(&self, state: &str) -> Vec<Alert> {
        self.client
            .runtime
            .block_on(self.client.api.alerts())
            .unwrap_or_else(|e| panic!("alerts: {e}"))
            .into_iter()
            .filter(|a| a.state == state)
            .collect()
    }

    pub fn post_predict(&self, body: &str) -> u16 {
        self.post_predict_to(&self.app_url, body)
    }

    pub fn post_predict_to(&self, app_url: &str, body: &str) -> u16 {
        let url = format!("{app_url}/predict");
        match super::agent()
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(body)
        {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("POST {url}: {e}"),
        }
    }

    /// A batch body of `rows` valid instances from the training data of the
    /// first service's model, with `shift` standard deviations added to one
    /// feature (None: no shift).
    pub fn batch(&self, start: usize, rows: usize, shift: Option<(&str, f64)>) -> String {
        batch_for(&self.artifact, start, rows, shift)
    }
}

/// A batch body for `artifact`'s data set; see [`LiveStack::batch`].
pub fn batch_for(
    artifact: &mlwatch::model::Artifact,
    start: usize,
    rows: usize,
    shift: Option<(&str, f64)>,
) -> String {
    let records = match artifact.dataset.as_str() {
        "diabetes" => linfa_datasets::diabetes().records().to_owned(),
        "winequality" => linfa_datasets::winequality().records().to_owned(),
        "iris" => linfa_datasets::iris().records().to_owned(),
        other => panic!("no rows for data set {other}"),
    };
    let instances: Vec<Vec<f64>> = (0..rows)
        .map(|i| {
            let row = records.row((start + i) % records.nrows());
            artifact
                .feature_names
                .iter()
                .enumerate()
                .map(|(j, name)| match shift {
                    Some((feature, k)) if feature == name => {
                        row[j] + k * artifact.reference.features[j].std
                    }
                    _ => row[j],
                })
                .collect()
        })
        .collect();
    serde_json::json!({ "instances": instances }).to_string()
}

/// Instant query result vector from the Prometheus at `prometheus_url`,
/// evaluated now or at `time` (Unix seconds).
pub fn prometheus_query(prometheus_url: &str, promql: &str, time: Option<f64>) -> Vec<Value> {
    let url = format!("{prometheus_url}/api/v1/query");
    let time = time.map(|t| format!("{t:.3}"));
    let mut form = vec![("query", promql)];
    if let Some(t) = &time {
        form.push(("time", t.as_str()));
    }
    let body: Value = super::agent()
        .post(&url)
        .send_form(&form)
        .unwrap_or_else(|e| panic!("query {promql}: {e}"))
        .into_json()
        .expect("json");
    assert_eq!(body["status"], "success", "{promql}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `check` every 250 ms (checks here query Prometheus, which only
/// changes once per evaluation) until it returns `Some`, or panics with
/// `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    mlwatch::poll::blocking(Duration::from_millis(250), timeout, check)
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// Two trainers (one finished and lingering, one still training) and two
/// services (a regressor and a classifier): every dashboard panel has
/// something to show.
pub fn two_model_stack() -> LiveStack {
    LiveStack::start(StackOptions {
        services: vec![
            mlwatch::train::Algorithm::Linear,
            mlwatch::train::Algorithm::Boost,
        ],
        trainers: vec![
            // Finished and lingering: regression values and training_model_info.
            ["--model", "linear", "--iterations", "6", "--linger", "600s"]
                .map(String::from)
                .to_vec(),
            // Still training: live classification and tree values.
            [
                "--model",
                "boost",
                "--pace",
                "300ms",
                "--iterations",
                "2000",
            ]
            .map(String::from)
            .to_vec(),
        ],
        drift_window: 100,
        ..StackOptions::default()
    })
}

/// Valid, drifted and invalid traffic on every service until the recording
/// rules have samples and an alert fires; returns the firing alert names.
pub fn drive_until_an_alert_fires(stack: &LiveStack) -> BTreeSet<String> {
    eventually(
        "both trainers and both services scraped",
        Duration::from_secs(60),
        || (stack.query("up == 1").len() == 6).then_some(()),
    );
    let mut round = 0;
    eventually(
        "traffic recorded and an alert firing",
        Duration::from_secs(120),
        || {
            for (url, artifact) in stack.app_urls.iter().zip(&stack.artifacts) {
                let feature = artifact.feature_names[2].clone();
                let valid = batch_for(artifact, round * 20, 20, None);
                let drifted = batch_for(artifact, round * 20, 20, Some((&feature, 3.0)));
                assert_eq!(stack.post_predict_to(url, &valid), 200);
                assert_eq!(stack.post_predict_to(url, &drifted), 200);
                for _ in 0..10 {
                    assert_eq!(stack.post_predict_to(url, "[1, 2"), 400);
                }
            }
            round += 1;
            let firing: BTreeSet<String> = stack
                .query("ALERTS{alertstate=\"firing\"}")
                .iter()
                .filter_map(|a| a.labels.get("alertname").cloned())
                .collect();
            let recorded = !stack
                .query("job_model_version:model_prediction_duration_seconds:p95_5m")
                .is_empty()
                && !stack
                    .query("job:model_prediction_invalid_input:ratio_rate5m")
                    .is_empty();
            (recorded && !firing.is_empty()).then_some(firing)
        },
    )
}

/// Every dashboard panel query returns data on `stack` (GPU panels only
/// where a GPU is), the annotation queries run and the alert markers show
/// the firing alert: what an on-call engineer would see in Grafana.
pub fn assert_every_panel_has_data(stack: &LiveStack) {
    use super::queries::{
        annotation_queries, dashboard_queries, dashboards, panels, substitute_variables,
    };
    let gpu_present = !stack.query("training_gpu_utilization_percent").is_empty();
    let queries: Vec<_> = dashboard_queries()
        .into_iter()
        .filter(|q| gpu_present || !q.optional_without_gpu)
        .collect();
    assert!(queries.len() >= 40, "queries checked: {}", queries.len());
    // Polled: one slow scrape (a 1 s timeout with the test timing) leaves
    // a series stale for a moment, and the other rule group may not have
    // run since the alert fired. A panel that never has data still fails.
    let mut empty = BTreeSet::new();
    let _ = mlwatch::poll::blocking(Duration::from_millis(250), Duration::from_secs(30), || {
        empty = queries
            .iter()
            .map(|q| (q, substitute_variables(&q.expr)))
            .filter(|(_, promql)| stack.query(promql).is_empty())
            .map(|(q, promql)| format!("{}: {promql}", q.origin))
            .collect();
        empty.is_empty().then_some(())
    });
    // Annotation queries: Prometheus accepts every one (stack.query asserts
    // success), and the alert markers have the alert that fired.
    for query in annotation_queries() {
        let result = stack.query(&substitute_variables(&query.expr));
        if query.origin.contains("Firing alerts") && query.origin.starts_with("predict_api") {
            assert!(!result.is_empty(), "{}: no firing alert", query.origin);
        }
    }
    assert!(
        empty.is_empty(),
        "panels that would show \"No data\":\n{}",
        empty.into_iter().collect::<Vec<_>>().join("\n")
    );
    // The exemption is for GPU panels only, and only without a GPU.
    let exempt: Vec<Value> = dashboards()
        .iter()
        .flat_map(|(_, d)| panels(d))
        .filter(super::queries::is_gpu_panel)
        .collect();
    assert!(
        exempt.iter().all(|p| p["title"]
            .as_str()
            .unwrap_or("")
            .to_lowercase()
            .contains("gpu")),
        "only GPU panels are exempt"
    );
}
