//! A real `mlflow server` for the MLflow tests, and a reader for what it
//! stored (runs, metric histories, artifacts, registry versions).
//!
//! The server boots slowly (7-20 s), so a test binary shares one
//! ([`MlflowServer::shared`]); a test that kills its server starts its own
//! ([`MlflowServer::start`]). `mlflow server` runs uvicorn as a child, so the
//! server lives in its own process group, started by a small shell that
//! stops the group when the test binary exits, even for the shared server,
//! which no destructor ever sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, get, wait_for_status, Process};

/// The version `.ci/install-mlflow.sh` pins.
pub const MLFLOW_VERSION: &str = "3.14.0";

/// `mlflow` from target/mlflow-venv (what .ci/install-mlflow.sh installs) or
/// PATH, or a panic that says how to install it.
pub fn mlflow_binary() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mlflow-venv/bin/mlflow");
    if venv.is_file() {
        return venv;
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&path)
            .map(|d| d.join("mlflow"))
            .find(|p| p.is_file())
        {
            return found;
        }
    }
    panic!(
        "mlflow not found in target/mlflow-venv/bin or on PATH: run .ci/install-mlflow.sh \
         (installs the PyPI package mlflow=={MLFLOW_VERSION} into target/mlflow-venv)"
    );
}

pub struct MlflowServer {
    api: Api,
    pub dir: PathBuf,
    pub log: PathBuf,
    group: i32,
}

impl std::ops::Deref for MlflowServer {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Reads what an MLflow server (this harness's or another) stored.
pub struct Api {
    pub url: String,
}

/// Stops the server's process group when the test process (`$1`) is gone
/// or the server died: SIGTERM, 3 s of grace, then SIGKILL to the whole
/// group, this shell last (a server slow to stop, or a uvicorn child that
/// outlives it, would otherwise keep the port); removes its directory
/// (`$2`) before that.
const WATCHDOG: &str = r#"
watch=$1; dir=$2; shift 2
"$@" &
server=$!
while kill -0 "$watch" 2>/dev/null && kill -0 "$server" 2>/dev/null; do sleep 0.5; done
trap '' TERM
kill -TERM 0 2>/dev/null
sleep 3
rm -rf "$dir"
kill -KILL 0
"#;

impl MlflowServer {
    /// One server for the whole test binary.
    pub fn shared() -> &'static MlflowServer {
        static SERVER: OnceLock<MlflowServer> = OnceLock::new();
        SERVER.get_or_init(MlflowServer::start)
    }

    /// A server of its own: sqlite backend and proxied artifacts in a fresh
    /// directory, on a free loopback port, answering /health.
    pub fn start() -> Self {
        let binary = mlflow_binary();
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(root).expect("create CARGO_TARGET_TMPDIR");
        let dir = tempfile::Builder::new()
            .prefix("mlflow-server-")
            .tempdir_in(root)
            .expect("temporary directory")
            .keep();
        let port = free_port();
        let log = dir.join("mlflow.log");
        let out = std::fs::File::create(&log).expect("create mlflow.log");
        let err = out.try_clone().expect("clone log");
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&dir)
            .arg(&binary)
            .args(["server", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .args(["--serve-artifacts", "--workers", "1"])
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("DO_NOT_TRACK", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("start bash for mlflow server");
        let group = child.id() as i32;
        let server = Self {
            api: Api {
                url: format!("http://127.0.0.1:{port}"),
            },
            dir,
            log,
            group,
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(180);
        loop {
            if matches!(get(&format!("{}/health", server.url)), Some((200, _))) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mlflow server exited with {status} before answering /health:\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server did not answer /health within 180 s:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "mlflow server up at {} after {:.1} s",
            server.url,
            started.elapsed().as_secs_f64()
        );
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGSTOP to the whole group: the kernel still accepts connections,
    /// but no request is ever answered (a hung server).
    pub fn freeze(&self) {
        signal_group(self.group, nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGKILL to the whole group (server and its uvicorn), then waits
    /// until the port no longer answers.
    pub fn kill(&self) {
        kill_group(self.group);
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(&format!("{}/health", self.url)).is_some() {
            assert!(
                Instant::now() < deadline,
                "mlflow server still answers after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Api {
    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.url)
    }

    fn get_json(&self, url: &str) -> Value {
        match get(url) {
            Some((200, body)) => serde_json::from_str(&body).expect("MLflow answers JSON"),
            other => panic!("GET {url}: {other:?}"),
        }
    }

    /// `runs/get`: the run's info and data.
    pub fn run(&self, run_id: &str) -> Value {
        self.get_json(&self.api(&format!("runs/get?run_id={run_id}")))["run"].clone()
    }

    /// Waits until the run has left RUNNING; returns it.
    pub fn run_when_ended(&self, run_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.run(run_id);
            if run["info"]["status"] != "RUNNING" {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} still RUNNING after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `metrics/get-history`: (step, value, timestamp) in step order.
    pub fn history(&self, run_id: &str, key: &str) -> Vec<(i64, f64, i64)> {
        let body = self.get_json(&self.api(&format!(
            "metrics/get-history?run_id={run_id}&metric_key={key}&max_results=25000"
        )));
        let mut points: Vec<(i64, f64, i64)> = body["metrics"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["step"].as_i64().unwrap_or(0),
                            m["value"].as_f64().expect("numeric metric value"),
                            m["timestamp"].as_i64().expect("timestamp"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        points.sort_by_key(|p| p.0);
        points
    }

    /// An artifact's bytes through the server's artifact proxy.
    pub fn artifact(&self, artifact_uri: &str, path: &str) -> Vec<u8> {
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:/")
            .expect("proxied artifact URI")
            .trim_matches('/');
        let url = format!(
            "{}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}",
            self.url
        );
        let response = super::agent()
            .get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes).expect("artifact");
        bytes
    }

    /// Waits until the experiment's first run has logged `count` points
    /// of validation_loss (the trainer is mid-run and MLflow is taking
    /// it); returns the run's id.
    pub fn wait_for_logged_iterations(&self, experiment: &str, count: usize) -> String {
        // Every 250 ms, as the stack's checks poll: each try is two requests.
        mlwatch::poll::blocking(Duration::from_millis(250), Duration::from_secs(60), || {
            let runs = self.runs(experiment);
            let run_id = runs.first()?["info"]["run_id"].as_str()?.to_owned();
            (self.history(&run_id, "validation_loss").len() >= count).then_some(run_id)
        })
        .unwrap_or_else(|e| panic!("waiting for the run logs iterations: {e}"))
    }

    /// The runs of an experiment (`runs/search`), none while it does not exist.
    pub fn runs(&self, experiment: &str) -> Vec<Value> {
        let Some((200, body)) = get(&self.api(&format!(
            "experiments/get-by-name?experiment_name={experiment}"
        ))) else {
            return Vec::new();
        };
        let found: Value = serde_json::from_str(&body).expect("JSON");
        let Some(id) = found["experiment"]["experiment_id"].as_str() else {
            return Vec::new();
        };
        let response = super::agent()
            .post(&self.api("runs/search"))
            .send_json(serde_json::json!({"experiment_ids": [id]}))
            .expect("runs/search");
        let body: Value = response.into_json().expect("JSON");
        body["runs"].as_array().cloned().unwrap_or_default()
    }

    /// `model-versions/search` for a registered model.
    pub fn model_versions(&self, name: &str) -> Vec<Value> {
        let body =
            self.get_json(&self.api(&format!("model-versions/search?filter=name%3D%27{name}%27")));
        body["model_versions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        kill_group(self.group);
        if std::thread::panicking() {
            eprintln!(
                "----- mlflow server log ({}) -----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL to a process group this harness created.
fn kill_group(group: i32) {
    signal_group(group, nix::sys::signal::Signal::SIGKILL);
}

fn signal_group(group: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), signal);
}

/// `mlwatch train` on a free port, tracked to `tracking_uri`, writing
/// `model.json` in `dir` and lingering 60 s after training so that its
/// /metrics can be read; `extra` adds flags (model, pace, experiment...).
/// Returns once its /health answers, with its /metrics URL.
pub fn start_tracked_trainer(dir: &Path, tracking_uri: &str, extra: &[&str]) -> (Process, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "train",
        "--listen",
        &listen,
        "--linger",
        "60s",
        "--output",
        "model.json",
        "--mlflow-tracking-uri",
        tracking_uri,
    ];
    args.extend_from_slice(extra);
    let mut trainer = Process::mlwatch("trainer", &args, dir);
    wait_for_status(
        &format!("http://{listen}/health"),
        200,
        Duration::from_secs(30),
        &mut trainer,
    );
    (trainer, format!("http://{listen}/metrics"))
}

/// Tags of a run as a map.
pub fn tags(run: &Value) -> std::collections::HashMap<String, String> {
    pairs(&run["data"]["tags"])
}

/// Params of a run as a map.
pub fn params(run: &Value) -> std::collections::HashMap<String, String> {
    pairs(&run["data"]["params"])
}

fn pairs(list: &Value) -> std::collections::HashMap<String, String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["key"].as_str().unwrap_or("").to_owned(),
                        p["value"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
