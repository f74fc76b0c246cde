//! `mlwatch serve --model-uri` against a real `mlflow server` on loopback:
//! two replicas follow `models:/NAME@champion` as `mlwatch train
//! --mlflow-register NAME --mlflow-alias champion` set it, roll out when the
//! alias moves to another version, roll back when it moves back, keep
//! serving (ready, counted, logged once, not retried) when it moves to a
//! version whose artifact was altered, and keep serving, counted, while the
//! registry is down. The configuration errors need no server.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mlflow::MlflowServer;
use common::{get, listening_address, poll, scrape, value, Process};
use serde_json::{json, Value};

/// What the service logs once bound, just before its address (the same
/// as tests/common/stack.rs, which exists only with the tools).
const SERVICE_LISTENING: &str = "prediction service listening listen=";

/// Generous: MLflow answers slowly on a loaded machine, and a poll that
/// needs several registry calls may take seconds there.
const CONVERGE: Duration = Duration::from_secs(120);

fn unique(prefix: &str) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{}-{ms}", std::process::id())
}

fn post(server: &str, path: &str, body: Value) -> Value {
    let url = format!("{server}/api/2.0/mlflow/{path}");
    let response = common::agent()
        .post(&url)
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    response.into_json().expect("MLflow answers JSON")
}

fn set_alias(server: &str, name: &str, alias: &str, version: &str) {
    post(
        server,
        "registered-models/alias",
        json!({"name": name, "alias": alias, "version": version}),
    );
}

/// The version an alias points at, as the registry says.
fn alias_version(server: &str, name: &str, alias: &str) -> String {
    let url = format!("{server}/api/2.0/mlflow/registered-models/alias?name={name}&alias={alias}");
    let (status, body) = get(&url).unwrap_or_else(|| panic!("GET {url}: no answer"));
    assert_eq!(status, 200, "GET {url}: {body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["model_version"]["version"]
        .as_str()
        .expect("a version")
        .to_owned()
}

/// A real training run, tracked and registered as a new version of `name`;
/// returns the artifact's model_version.
fn train_and_register(
    server: &str,
    dir: &Path,
    name: &str,
    seed: &str,
    alias: Option<&str>,
) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut args = vec![
        "train",
        "--listen",
        "127.0.0.1:0",
        "--linger",
        "0s",
        "--seed",
        seed,
        "--output",
        "model.json",
        "--mlflow-tracking-uri",
        server,
        "--mlflow-register",
        name,
    ];
    if let Some(alias) = alias {
        args.extend(["--mlflow-alias", alias]);
    }
    let mut trainer = Process::mlwatch(&format!("trainer-{seed}"), &args, dir);
    let status = trainer
        .wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|| panic!("trainer did not finish:\n{}", trainer.log_text()));
    assert!(status.success(), "trainer failed:\n{}", trainer.log_text());
    assert!(
        trainer.log_text().contains("registered as version"),
        "the run was not registered:\n{}",
        trainer.log_text()
    );
    let artifact: Value =
        serde_json::from_slice(&std::fs::read(dir.join("model.json")).unwrap()).unwrap();
    artifact["model_version"].as_str().unwrap().to_owned()
}

/// Registers `bytes` as a new version of `name` the way the trainer does
/// (a run, the file under `model/`, a version whose source is that
/// directory); returns the version number.
fn register_bytes(server: &str, name: &str, bytes: &[u8]) -> String {
    let run = post(server, "runs/create", json!({"experiment_id": "0"}));
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_owned();
    let artifact_uri = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let root = artifact_uri
        .strip_prefix("mlflow-artifacts:/")
        .expect("a proxied artifact URI");
    let url = format!("{server}/api/2.0/mlflow-artifacts/artifacts/{root}/model/model.json");
    common::agent()
        .put(&url)
        .send_bytes(bytes)
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let version = post(
        server,
        "model-versions/create",
        json!({"name": name, "source": format!("{artifact_uri}/model"), "run_id": run_id}),
    );
    version["model_version"]["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

struct Replica {
    process: Process,
    base: String,
}

impl Replica {
    fn start(name: &str, dir: &Path, args: &[&str]) -> Self {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut process = Process::mlwatch(name, &all, dir);
        let address = listening_address(&mut process, SERVICE_LISTENING);
        Self {
            process,
            base: format!("http://{address}"),
        }
    }

    /// (registry version, model_version) of the model served, from one
    /// `GET /model`; `None` while there is none.
    fn served(&mut self) -> Option<(String, String)> {
        if let Some(exit) = self.process.try_exit() {
            panic!(
                "{} exited with {exit}:\n{}",
                self.process.name,
                self.process.log_text()
            );
        }
        let (status, body) = get(&format!("{}/model", self.base))?;
        if status != 200 {
            return None;
        }
        let model: Value = serde_json::from_str(&body).unwrap();
        Some((
            model["registry"]["version"].as_str()?.to_owned(),
            model["model_version"].as_str()?.to_owned(),
        ))
    }

    fn wait_for(&mut self, version: &str, model_version: &str) {
        let name = self.process.name.clone();
        poll(
            &format!("{name} serving registry version {version} ({model_version})"),
            CONVERGE,
            || (self.served()? == (version.to_owned(), model_version.to_owned())).then_some(()),
        );
        // model_info says the same as /model.
        let metrics = scrape(&format!("{}/metrics", self.base));
        let info = common::samples(&metrics, "model_info", &[]);
        assert_eq!(info.len(), 1, "{name}: one model_info series");
        assert_eq!(info[0].labels.get("model_version"), Some(model_version));
    }

    fn metric(&self, name: &str, result: &str) -> f64 {
        let metrics = scrape(&format!("{}/metrics", self.base));
        value(&metrics, name, &[("result", result)]).unwrap_or_else(|| panic!("no {name}"))
    }

    fn ready(&self) -> (u16, String) {
        get(&format!("{}/ready", self.base)).expect("/ready answers")
    }
}

#[test]
fn replicas_follow_the_alias_roll_back_and_keep_a_broken_version_out() {
    let server = MlflowServer::shared();
    let url = server.url.clone();
    let root = tempfile::tempdir().unwrap();
    let name = unique("diabetes");

    // Version 1 with the alias set by the trainer; version 2 registered only.
    let hash1 = train_and_register(&url, &root.path().join("v1"), &name, "1", Some("champion"));
    let hash2 = train_and_register(&url, &root.path().join("v2"), &name, "2", None);
    assert_ne!(hash1, hash2, "two seeds, two models");
    assert_eq!(
        alias_version(&url, &name, "champion"),
        "1",
        "the trainer set the alias"
    );

    let uri = format!("models:/{name}@champion");
    let args = [
        "--model-uri",
        uri.as_str(),
        "--mlflow-tracking-uri",
        url.as_str(),
        "--model-poll-interval",
        "1s",
    ];
    let mut replicas = [
        Replica::start("replica-a", root.path(), &args),
        Replica::start("replica-b", root.path(), &args),
    ];
    for replica in &mut replicas {
        replica.wait_for("1", &hash1);
    }

    // Roll out: the alias moves, every replica follows.
    set_alias(&url, &name, "champion", "2");
    for replica in &mut replicas {
        replica.wait_for("2", &hash2);
        assert!(replica.metric("model_reloads_total", "success") >= 1.0);
        assert!(replica.metric("model_registry_polls_total", "updated") >= 2.0);
    }

    // Roll back: the alias moves back.
    set_alias(&url, &name, "champion", "1");
    for replica in &mut replicas {
        replica.wait_for("1", &hash1);
    }

    // A version whose artifact was altered after training: the hash check
    // refuses it, the old model keeps serving, and it is not tried again.
    let mut altered: Value =
        serde_json::from_slice(&std::fs::read(root.path().join("v1/model.json")).unwrap()).unwrap();
    altered["metrics"]["validation_r_squared"] = json!(0.99);
    let broken = register_bytes(&url, &name, &serde_json::to_vec(&altered).unwrap());
    set_alias(&url, &name, "champion", &broken);
    for replica in &mut replicas {
        let base = replica.base.clone();
        // Several polls after the refusal, in one scrape: refused once,
        // skipped since.
        let metrics = poll(
            &format!("{} skipping the refused version", replica.process.name),
            CONVERGE,
            || {
                let metrics = scrape(&format!("{base}/metrics"));
                (value(
                    &metrics,
                    "model_registry_polls_total",
                    &[("result", "known_bad")],
                )? >= 3.0)
                    .then_some(metrics)
            },
        );
        // known_bad polls are the ones that did not download it again; a
        // load_error may also be a download that timed out on a loaded
        // machine, and each is a failed reload.
        let at = |n: &str, r: &str| value(&metrics, n, &[("result", r)]).unwrap();
        assert!(at("model_registry_polls_total", "load_error") >= 1.0);
        assert_eq!(
            at("model_reloads_total", "failure"),
            at("model_registry_polls_total", "load_error")
        );
        let info = common::samples(&metrics, "model_info", &[]);
        assert_eq!(info[0].labels.get("model_version"), Some(hash1.as_str()));
        assert_eq!(replica.served(), Some(("1".to_owned(), hash1.clone())));
        let (status, body) = replica.ready();
        assert_eq!(status, 200, "{body}");
        let predicted = common::agent()
            .post(&format!("{base}/predict"))
            .send_json(json!({"features": vec![0.0; 10]}))
            .expect("/predict answers");
        let predicted: Value = predicted.into_json().unwrap();
        assert_eq!(predicted["model_version"], json!(hash1));
        let log = replica.process.log_text();
        assert_eq!(
            log.matches("checksum_mismatch").count(),
            1,
            "the refusal is logged once:\n{log}"
        );
        assert!(log.contains(&format!("models:/{name}/{broken}")), "{log}");
    }

    // Fixed forward: the alias moves to a good version again.
    set_alias(&url, &name, "champion", "2");
    for replica in &mut replicas {
        replica.wait_for("2", &hash2);
        assert!(replica
            .process
            .log_text()
            .contains("model registry poll succeeded again"));
    }
}

#[test]
fn a_registry_outage_keeps_the_model_and_is_counted() {
    // A server of its own: this test kills it.
    let server = MlflowServer::start();
    let root = tempfile::tempdir().unwrap();
    let name = unique("outage");
    let hash = train_and_register(
        &server.url,
        &root.path().join("v1"),
        &name,
        "3",
        Some("prod"),
    );
    let uri = format!("models:/{name}@prod");
    let mut replica = Replica::start(
        "replica",
        root.path(),
        &[
            "--model-uri",
            &uri,
            "--mlflow-tracking-uri",
            &server.url,
            "--model-poll-interval",
            "1s",
            "--mlflow-timeout",
            "2s",
        ],
    );
    replica.wait_for("1", &hash);
    server.kill();
    let base = replica.base.clone();
    let metrics = poll("polls failing while MLflow is down", CONVERGE, || {
        let metrics = scrape(&format!("{base}/metrics"));
        (value(
            &metrics,
            "model_registry_polls_total",
            &[("result", "resolve_error")],
        )? >= 3.0)
            .then_some(metrics)
    });
    // Not a reload failure: nothing new was tried.
    assert_eq!(
        value(&metrics, "model_reloads_total", &[("result", "failure")]),
        Some(0.0)
    );
    assert_eq!(replica.ready().0, 200);
    assert_eq!(replica.served(), Some(("1".to_owned(), hash)));
    let log = replica.process.log_text();
    assert_eq!(
        log.matches("registry_unreachable").count(),
        1,
        "an outage is logged once:\n{log}"
    );
}

#[test]
fn without_a_registry_the_service_is_alive_but_not_ready() {
    let root = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", common::free_port());
    let mut replica = Replica::start(
        "replica",
        root.path(),
        &[
            "--model-uri",
            "models:/m/1",
            "--mlflow-tracking-uri",
            &nowhere,
            "--model-poll-interval",
            "0",
        ],
    );
    let base = replica.base.clone();
    let body = poll("/ready naming the registry", CONVERGE, || {
        let (status, body) = replica.ready();
        (status == 503 && body.contains("registry_unreachable")).then_some(body)
    });
    assert!(body.contains("models:/m/1"), "{body}");
    assert_eq!(get(&format!("{base}/health")).map(|r| r.0), Some(200));
    assert!(replica.served().is_none());
    let metrics = scrape(&format!("{base}/metrics"));
    assert_eq!(value(&metrics, "model_loaded", &[]), Some(0.0));
    assert!(
        value(
            &metrics,
            "model_registry_polls_total",
            &[("result", "resolve_error")]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn registry_configuration_errors_stop_the_service() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--model-uri", "models:/m@champion"],
            "needs the registry's server",
        ),
        (
            &[
                "--model-uri",
                "models:/m/latest",
                "--mlflow-tracking-uri",
                "http://127.0.0.1:1",
            ],
            "models:/NAME@ALIAS",
        ),
        (
            &[
                "--model-uri",
                "models:/m@a",
                "--model-path",
                "model.json",
                "--mlflow-tracking-uri",
                "http://127.0.0.1:1",
            ],
            "mutually exclusive",
        ),
        (
            &[
                "--model-uri",
                "models:/m@a",
                "--mlflow-tracking-uri",
                "https://mlflow.example",
            ],
            "http://",
        ),
    ];
    for (i, (args, expected)) in cases.iter().enumerate() {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut process = Process::spawn_with_env(
            &format!("serve-{i}"),
            Path::new(env!("CARGO_BIN_EXE_mlwatch")),
            &all.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &[("MLFLOW_TRACKING_URI", std::ffi::OsStr::new(""))],
            root.path(),
        );
        let status = process
            .wait_exit(Duration::from_secs(30))
            .expect("a configuration error ends the service");
        assert!(!status.success());
        let log = process.log_text();
        assert!(log.contains(expected), "{args:?}: {log}");
    }
    // MLWATCH_MODEL_PATH in the environment (the image sets it) is not a
    // conflict: --model-uri wins.
    let mut process = Process::spawn_with_env(
        "serve-env",
        Path::new(env!("CARGO_BIN_EXE_mlwatch")),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--model-uri",
            "models:/m/1",
            "--mlflow-tracking-uri",
            "http://127.0.0.1:1",
        ]
        .map(String::from),
        &[(
            "MLWATCH_MODEL_PATH",
            std::ffi::OsStr::new("/models/model.json"),
        )],
        root.path(),
    );
    listening_address(&mut process, SERVICE_LISTENING);
    assert!(process.try_exit().is_none(), "{}", process.log_text());
}

#[test]
fn without_polling_an_admin_reload_resolves_the_alias_again() {
    let server = MlflowServer::shared();
    let url = server.url.clone();
    let root = tempfile::tempdir().unwrap();
    let name = unique("pinned");
    let hash1 = train_and_register(&url, &root.path().join("v1"), &name, "4", Some("live"));
    let hash2 = train_and_register(&url, &root.path().join("v2"), &name, "5", None);
    let token = root.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let uri = format!("models:/{name}@live");
    let mut replica = Replica::start(
        "replica",
        root.path(),
        &[
            "--model-uri",
            &uri,
            "--mlflow-tracking-uri",
            &url,
            "--model-poll-interval",
            "0",
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let served = |replica: &mut Replica| {
        let (status, body) = common::agent()
            .get(&format!("{}/model", replica.base))
            .set("Authorization", "Bearer s3cret-token")
            .call()
            .map(|r| (r.status(), r.into_string().unwrap()))
            .unwrap_or((0, String::new()));
        (status == 200).then(|| serde_json::from_str::<Value>(&body).unwrap())
    };
    // The same version through a download limit below its size: refused,
    // not ready, and the size named.
    let small = Replica::start(
        "small",
        root.path(),
        &[
            "--model-uri",
            &uri,
            "--mlflow-tracking-uri",
            &url,
            "--model-max-bytes",
            "1000",
        ],
    );
    let refused = poll("the oversized version refused", CONVERGE, || {
        let (status, body) = small.ready();
        (status == 503 && body.contains("too_large")).then_some(body)
    });
    assert!(refused.contains("larger than 1000 bytes"), "{refused}");
    drop(small);
    let model = poll("the first model", CONVERGE, || served(&mut replica));
    assert_eq!(model["registry"]["version"], "1");
    assert_eq!(model["model_version"], json!(hash1));

    set_alias(&url, &name, "live", "2");
    let answer: Value = common::agent()
        .post(&format!("{}/admin/reload", replica.base))
        .set("Authorization", "Bearer s3cret-token")
        .call()
        .expect("the reload succeeds")
        .into_json()
        .unwrap();
    assert_eq!(
        answer,
        json!({"result": "success", "model_version": hash2, "previous_model_version": hash1,
               "changed": true, "registry_version": "2"})
    );
    let model = served(&mut replica).expect("a model");
    assert_eq!(model["registry"]["version"], "2");
    // The poller loaded the first version and stopped: it never saw the
    // alias unchanged, nor loaded version 2 (the reload did). A first load
    // retried after a slow answer would count as an error, not here.
    let metrics = scrape(&format!("{}/metrics", replica.base));
    let polls = |result| {
        value(
            &metrics,
            "model_registry_polls_total",
            &[("result", result)],
        )
    };
    assert_eq!(polls("updated"), Some(1.0));
    assert_eq!(polls("unchanged"), Some(0.0));
    assert_eq!(
        value(&metrics, "model_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
}
