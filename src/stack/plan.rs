//! What the launcher starts, as data: every child's name, program,
//! arguments, environment, address and readiness path, the config files
//! to write, and the URLs to print. [`Plan::new`] computes it from the
//! stack's config and the located binaries without starting or writing
//! anything (it only reads the assets), so it is tested as a value; the
//! launcher ([`super::launcher`]) writes the files and spawns the children
//! in plan order.
//!
//! The building blocks ([`prometheus()`], [`alertmanager`], [`service`],
//! [`trainer`], ...) are public: the integration tests start their own
//! fleets (several services with different models, several trainers)
//! from them, so a child's command line exists once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::commands;
use super::config::{self, Files};
use super::endpoints::Endpoints;
use super::grafana::{self, GrafanaBinary};
use super::ports::{self, loopback, Ports};
use super::runbooks;
use super::spec::{Binaries, StackConfig};
use super::webhook;

/// How often a pushing binary exports when the stack's timing does not say
/// (`mlwatch serve`'s and `train`'s own default; the rules' 60 s heartbeat
/// threshold is 4 of these).
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(15);

/// One child process to start.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(&'static str, &'static str)>,
    /// Where it serves HTTP (`127.0.0.1:0` for a test's "any port").
    pub listen: SocketAddr,
    /// The path that answers 200 on `listen` once it is ready.
    pub ready_path: &'static str,
}

impl Child {
    /// The readiness URL on `listen`.
    pub fn ready_url(&self) -> String {
        ready_url(self.listen, self.ready_path)
    }
}

/// The readiness URL of a child at `address` (the one it reports having
/// bound, when it was asked for any port).
pub fn ready_url(address: SocketAddr, path: &str) -> String {
    format!("http://{address}{path}")
}

/// Prometheus `name` on `listen` with its TSDB in `storage`.
pub fn prometheus(
    name: &str,
    program: &Path,
    config: &Path,
    storage: &Path,
    listen: SocketAddr,
) -> Child {
    Child {
        name: name.to_owned(),
        program: program.to_owned(),
        args: commands::prometheus(config, storage, listen),
        env: Vec::new(),
        listen,
        ready_path: "/-/ready",
    }
}

/// A lone Alertmanager on `listen` with its data in `storage`.
pub fn alertmanager(program: &Path, config: &Path, storage: &Path, listen: SocketAddr) -> Child {
    Child {
        name: "alertmanager".to_owned(),
        program: program.to_owned(),
        args: commands::alertmanager(config, storage, listen),
        env: Vec::new(),
        listen,
        ready_path: "/-/ready",
    }
}

/// Where one member of an Alertmanager cluster listens.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub web: SocketAddr,
    pub gossip: SocketAddr,
    pub peers: &'a [SocketAddr],
    /// None: Alertmanager's default ([`commands::clustered_alertmanager`]).
    pub peer_timeout: Option<Duration>,
}

/// Alertmanager `name` as one member of a gossip cluster.
pub fn clustered_alertmanager(
    name: &str,
    program: &Path,
    config: &Path,
    storage: &Path,
    member: Member<'_>,
) -> Child {
    Child {
        name: name.to_owned(),
        program: program.to_owned(),
        args: commands::clustered_alertmanager(
            config,
            storage,
            member.web,
            member.gossip,
            member.peers,
            member.peer_timeout,
        ),
        env: Vec::new(),
        listen: member.web,
        ready_path: "/-/ready",
    }
}

/// `mlwatch serve` `name` on `listen` serving `model` (`exe` is mlwatch).
pub fn service(
    name: &str,
    exe: &Path,
    listen: SocketAddr,
    model: &Path,
    drift_window: usize,
) -> Child {
    Child {
        name: name.to_owned(),
        program: exe.to_owned(),
        args: commands::service(listen, model, drift_window),
        env: Vec::new(),
        listen,
        ready_path: "/ready",
    }
}

/// `mlwatch train` `name` on `listen` writing `output`, with `extra` flags.
pub fn trainer(
    name: &str,
    exe: &Path,
    listen: SocketAddr,
    output: &Path,
    extra: &[String],
) -> Child {
    let mut args = commands::trainer(listen, output);
    args.extend(extra.iter().cloned());
    Child {
        name: name.to_owned(),
        program: exe.to_owned(),
        args,
        env: Vec::new(),
        listen,
        ready_path: "/health",
    }
}

/// The MLflow tracking server on `listen`, everything in `state/mlflow`.
pub fn mlflow(program: &Path, state: &Path, listen: SocketAddr, expose_metrics: bool) -> Child {
    Child {
        name: "mlflow".to_owned(),
        program: program.to_owned(),
        args: super::mlflow::server_args(state, listen, expose_metrics),
        env: super::mlflow::ENV.to_vec(),
        listen,
        ready_path: "/health",
    }
}

/// Grafana on `listen` with the settings in `ini` (`grafana::ini`).
pub fn grafana(binary: &GrafanaBinary, ini: &Path, listen: SocketAddr) -> Child {
    let mut args: Vec<String> = binary
        .subcommand
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default();
    args.extend([
        format!("--homepath={}", binary.home.display()),
        format!("--config={}", ini.display()),
    ]);
    Child {
        name: "grafana".to_owned(),
        program: binary.program.clone(),
        args,
        env: Vec::new(),
        listen,
        ready_path: "/api/health",
    }
}

/// The runbooks page the launcher's own HTTP server renders.
pub fn runbook_page_url(ports: &Ports) -> String {
    format!("http://{}{}", loopback(ports.webhook), runbooks::PATH)
}

/// Where every scrape job's targets and every provisioned link point, for
/// a stack on `ports` with `replicas` services, its runbooks at
/// `runbooks`, and MLflow's own metrics scraped when `mlflow_metrics`.
pub fn endpoints(
    ports: &Ports,
    replicas: usize,
    runbooks: &str,
    mlflow_metrics: bool,
) -> anyhow::Result<Endpoints> {
    Ok(Endpoints {
        apps: ports::replica_addresses(ports, replicas)?,
        trainers: vec![loopback(ports.trainer)],
        prometheus: loopback(ports.prometheus),
        alertmanager: loopback(ports.alertmanager),
        mlflow: mlflow_metrics.then(|| loopback(ports.mlflow)),
        runbooks: runbooks.to_owned(),
        mlflow_url: format!("http://{}", loopback(ports.mlflow)),
    })
}

/// Everything `mlwatch up` starts and writes, in start order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The state directory, absolute.
    pub state: PathBuf,
    pub logs: PathBuf,
    pub files: Files,
    /// The built-in webhook and runbooks server.
    pub webhook: SocketAddr,
    /// Grafana's directory under `state`, whose secrets
    /// (`grafana::prepare`) must exist before Grafana starts.
    pub grafana_state: Option<PathBuf>,
    /// Alertmanager(s), Prometheus(es), Grafana, MLflow; an HA pair is one
    /// group of two, any other child a group of one.
    pub core: Vec<Vec<Child>>,
    /// The API replicas.
    pub services: Vec<Child>,
    pub trainer: Child,
    /// What to print, in order.
    pub urls: Vec<(&'static str, String)>,
    pub prometheus_url: String,
    pub app_urls: Vec<String>,
    pub model_path: PathBuf,
    /// The one feedback key of every replica (0600, created before they
    /// start and kept across restarts, so ids issued before a restart still
    /// verify: docs/quality.md).
    pub feedback_key: PathBuf,
    pub mlflow_url: Option<String>,
}

impl Plan {
    /// The stack of `config` with `binaries` (`exe` is mlwatch itself);
    /// `mlflow_metrics`: the installed MLflow can expose its metrics
    /// ([`super::mlflow::can_expose_prometheus`]).
    pub fn new(
        config: &StackConfig,
        binaries: &Binaries,
        exe: &Path,
        mlflow_metrics: bool,
    ) -> anyhow::Result<Self> {
        let p = &config.ports;
        ports::check(p, config.replicas, config.ha)?;
        // Prometheus resolves relative rule paths against its config
        // file's directory, not ours: every path handed to a child is
        // absolute.
        let state = std::path::absolute(&config.state_dir).with_context(|| {
            format!(
                "cannot resolve state directory {}",
                config.state_dir.display()
            )
        })?;
        let mlflow = binaries.mlflow.as_ref().filter(|_| config.mlflow);
        let runbook_url = match &config.runbook_url {
            Some(url) => runbooks::check_url(url)?,
            None => runbook_page_url(p),
        };
        let endpoints = endpoints(
            p,
            config.replicas,
            &runbook_url,
            mlflow.is_some() && mlflow_metrics,
        )?;
        let webhook = loopback(p.webhook);
        let webhook_url = format!("http://{webhook}{}", webhook::PATH);
        let (written, mut files) = config::derive(
            &config.assets,
            &state.join("config"),
            &endpoints,
            &webhook_url,
            &config.timing,
        )?;
        files.dirs.push(state.clone());
        if config.otlp.is_some() {
            // Before the HA members copy it: both get the receiver's config.
            let text = files
                .get_mut(&written.prometheus_yml)
                .context("internal: no prometheus.yml derived")?;
            *text = config::push(text, &config.assets.otlp_overlay()?)?;
        }
        let receiver_flags = config
            .otlp
            .as_ref()
            .map(|r| r.flags.clone())
            .unwrap_or_default();
        let mut receivers = vec![endpoints.prometheus];

        let mut core = Vec::new();
        let mut ha_urls = Vec::new();
        if config.ha {
            let ha = ports::ha_ports(p, config.replicas)?;
            // Pairs (docs/fleet.md, "HA pair"): identical rules, distinct
            // `replica` labels, both Prometheus alerting both Alertmanagers.
            let derived = files
                .get(&written.prometheus_yml)
                .context("internal: no prometheus.yml derived")?
                .to_owned();
            let alertmanagers = [endpoints.alertmanager, ha.alertmanager_b];
            let members = [
                (
                    "alertmanager",
                    endpoints.alertmanager,
                    ha.gossip_a,
                    ha.gossip_b,
                    state.join("alertmanager"),
                ),
                (
                    "alertmanager-b",
                    ha.alertmanager_b,
                    ha.gossip_b,
                    ha.gossip_a,
                    state.join("ha/alertmanager-b"),
                ),
            ];
            core.push(
                members
                    .into_iter()
                    .map(|(name, web, gossip, peer, storage)| {
                        clustered_alertmanager(
                            name,
                            &binaries.alertmanager,
                            &written.alertmanager_yml,
                            &storage,
                            Member {
                                web,
                                gossip,
                                peers: &[peer],
                                peer_timeout: None,
                            },
                        )
                    })
                    .collect(),
            );
            let members = [
                (
                    "prometheus",
                    "a",
                    endpoints.prometheus,
                    state.join("prometheus"),
                ),
                (
                    "prometheus-b",
                    "b",
                    ha.prometheus_b,
                    state.join("ha/prometheus-b"),
                ),
            ];
            let mut pair = Vec::new();
            for (name, replica, listen, storage) in members {
                let file = written
                    .prometheus_yml
                    .with_file_name(format!("prometheus-{replica}.yml"));
                files.files.push((
                    file.clone(),
                    config::ha_member(&derived, replica, &alertmanagers)?,
                ));
                let mut member = prometheus(name, &binaries.prometheus, &file, &storage, listen);
                member.args.extend(receiver_flags.iter().cloned());
                pair.push(member);
            }
            receivers.push(ha.prometheus_b);
            core.push(pair);
            ha_urls.push((
                "Prometheus (replica b)",
                format!("http://{}", ha.prometheus_b),
            ));
            ha_urls.push(("Alertmanager b", format!("http://{}", ha.alertmanager_b)));
        } else {
            core.push(vec![alertmanager(
                &binaries.alertmanager,
                &written.alertmanager_yml,
                &state.join("alertmanager"),
                endpoints.alertmanager,
            )]);
            let mut single = prometheus(
                "prometheus",
                &binaries.prometheus,
                &written.prometheus_yml,
                &state.join("prometheus"),
                endpoints.prometheus,
            );
            single.args.extend(receiver_flags.iter().cloned());
            core.push(vec![single]);
        }
        let mut urls = vec![
            (
                "prediction API",
                endpoints
                    .apps
                    .iter()
                    .map(|a| format!("http://{a}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            match &config.otlp {
                // --no-scrape: the trainer has no /metrics to show.
                Some(_) => (
                    "trainer (pushes OTLP)",
                    format!("http://{}/health", endpoints.trainers[0]),
                ),
                None => (
                    "trainer metrics",
                    format!("http://{}/metrics", endpoints.trainers[0]),
                ),
            },
            ("Prometheus", format!("http://{}", endpoints.prometheus)),
            ("Alertmanager", format!("http://{}", endpoints.alertmanager)),
            ("runbooks", runbook_url),
        ];
        urls.extend(ha_urls);

        let mut grafana_state = None;
        if let Some(binary) = binaries.grafana.as_ref().filter(|_| config.grafana) {
            let (ini, text) = grafana::ini(&state, &written.grafana_provisioning, p.grafana)?;
            core.push(vec![grafana(binary, &ini, loopback(p.grafana))]);
            files.files.push((ini, text));
            grafana_state = Some(state.join("grafana"));
            urls.push((
                "Grafana (user admin)",
                format!("http://{}", loopback(p.grafana)),
            ));
        }

        let mut mlflow_url = None;
        if let Some(program) = mlflow {
            let address = loopback(p.mlflow);
            core.push(vec![self::mlflow(program, &state, address, mlflow_metrics)]);
            urls.push(("MLflow", endpoints.mlflow_url.clone()));
            mlflow_url = Some(endpoints.mlflow_url.clone());
        }

        // The push path: every service and the trainer push to every
        // Prometheus, as often as the scrape path would scrape them.
        let push_flags = match &config.otlp {
            Some(_) => commands::otlp_push(
                &receivers,
                config
                    .timing
                    .scrape_interval
                    .unwrap_or(DEFAULT_EXPORT_INTERVAL),
            ),
            None => Vec::new(),
        };
        let model_path = state.join("model.json");
        let feedback_key = state.join("feedback.key");
        let services: Vec<Child> = endpoints
            .apps
            .iter()
            .enumerate()
            .map(|(i, address)| {
                let name = if endpoints.apps.len() == 1 {
                    "service".to_owned()
                } else {
                    format!("service-{i}")
                };
                let mut child = service(&name, exe, *address, &model_path, config.drift_window);
                child.args.extend([
                    "--feedback-key-file".into(),
                    feedback_key.display().to_string(),
                ]);
                child.args.extend(push_flags.iter().cloned());
                child
            })
            .collect();
        let mut trainer_flags = Vec::new();
        if let Some(url) = &mlflow_url {
            // The server boots while the trainer starts, in 7 s on an idle
            // laptop but over 30 s on a busy 2-core machine: the trainer
            // waits for it, longer than its default.
            trainer_flags.extend([
                "--mlflow-tracking-uri".into(),
                url.clone(),
                "--mlflow-startup-wait".into(),
                "120s".into(),
            ]);
        }
        trainer_flags.extend(config.trainer_args.iter().cloned());
        trainer_flags.extend(push_flags.iter().cloned());
        let trainer = trainer(
            "trainer",
            exe,
            endpoints.trainers[0],
            &model_path,
            &trainer_flags,
        );
        Ok(Self {
            logs: state.join("logs"),
            state,
            files,
            webhook,
            grafana_state,
            core,
            services,
            trainer,
            urls,
            prometheus_url: format!("http://{}", endpoints.prometheus),
            app_urls: endpoints
                .apps
                .iter()
                .map(|a| format!("http://{a}"))
                .collect(),
            model_path,
            feedback_key,
            mlflow_url,
        })
    }

    /// Every child in start order.
    pub fn children(&self) -> impl Iterator<Item = &Child> {
        self.core
            .iter()
            .flatten()
            .chain(&self.services)
            .chain(std::iter::once(&self.trainer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::config::{Assets, Timing};
    use std::collections::BTreeSet;

    fn config(state: &Path) -> StackConfig {
        StackConfig {
            assets: Assets::new(env!("CARGO_MANIFEST_DIR")).unwrap(),
            state_dir: state.to_owned(),
            ports: Ports::default(),
            timing: Timing::quick(),
            trainer_args: vec!["--pace".into(), "2s".into()],
            drift_window: 1000,
            grafana: true,
            mlflow: true,
            runbook_url: None,
            replicas: 1,
            ha: false,
            otlp: None,
        }
    }

    fn receiver(minor: u32) -> crate::stack::receiver::Receiver {
        let version = crate::stack::receiver::Version {
            major: 3,
            minor,
            patch: 0,
        };
        crate::stack::receiver::decide(version, "--web.enable-otlp-receiver").unwrap()
    }

    fn binaries(grafana: bool, mlflow: bool) -> Binaries {
        Binaries {
            prometheus: "/bin/prometheus".into(),
            alertmanager: "/bin/alertmanager".into(),
            grafana: grafana.then(|| GrafanaBinary {
                program: "/bin/grafana".into(),
                subcommand: Some("server"),
                home: "/share/grafana".into(),
            }),
            mlflow: mlflow.then(|| PathBuf::from("/bin/mlflow")),
        }
    }

    const EXE: &str = "/bin/mlwatch";

    fn names(plan: &Plan) -> Vec<Vec<String>> {
        plan.core
            .iter()
            .map(|g| g.iter().map(|c| c.name.clone()).collect())
            .collect()
    }

    fn has(args: &[String], pair: [&str; 2]) -> bool {
        args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
    }

    #[test]
    fn the_plain_stack_without_grafana_or_mlflow() {
        let plan = Plan::new(
            &config(Path::new("/s")),
            &binaries(false, false),
            Path::new(EXE),
            false,
        )
        .unwrap();
        assert_eq!(names(&plan), [["alertmanager"], ["prometheus"]]);
        let am = &plan.core[0][0];
        assert_eq!(am.program, Path::new("/bin/alertmanager"));
        assert!(am
            .args
            .contains(&"--web.listen-address=127.0.0.1:9093".to_owned()));
        assert!(am.args.contains(&"--cluster.listen-address=".to_owned()));
        assert_eq!(am.ready_url(), "http://127.0.0.1:9093/-/ready");
        let prom = &plan.core[1][0];
        assert!(prom
            .args
            .contains(&"--config.file=/s/config/prometheus/prometheus.yml".to_owned()));
        assert!(prom
            .args
            .contains(&"--storage.tsdb.path=/s/prometheus".to_owned()));
        assert_eq!(plan.services.len(), 1);
        let service = &plan.services[0];
        assert_eq!(service.name, "service");
        assert_eq!(service.program, Path::new(EXE));
        assert!(has(&service.args, ["--listen", "127.0.0.1:9000"]));
        assert!(has(&service.args, ["--model-path", "/s/model.json"]));
        assert!(has(&service.args, ["--drift-window", "1000"]));
        assert_eq!(service.ready_url(), "http://127.0.0.1:9000/ready");
        let trainer = &plan.trainer;
        assert!(has(&trainer.args, ["--listen", "127.0.0.1:8002"]));
        assert!(has(&trainer.args, ["--output", "/s/model.json"]));
        assert!(has(&trainer.args, ["--pace", "2s"]));
        assert!(!trainer.args.contains(&"--mlflow-tracking-uri".to_owned()));
        assert_eq!(plan.mlflow_url, None);
        assert_eq!(plan.grafana_state, None);
        assert_eq!(plan.webhook, loopback(5001));
        assert_eq!(
            plan.urls.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            [
                "prediction API",
                "trainer metrics",
                "Prometheus",
                "Alertmanager",
                "runbooks"
            ]
        );
        assert_eq!(plan.urls[4].1, "http://127.0.0.1:5001/runbooks");
        // The files to write: every path absolute under the state
        // directory, the configs the children are given among them.
        assert!(plan
            .files
            .files
            .iter()
            .all(|(p, _)| p.starts_with("/s/config")));
        for file in ["prometheus/prometheus.yml", "alertmanager/alertmanager.yml"] {
            assert!(
                plan.files.get(&Path::new("/s/config").join(file)).is_some(),
                "{file}"
            );
        }
        // Nothing was written.
        assert!(!Path::new("/s").exists());
    }

    #[test]
    fn a_relative_state_directory_becomes_absolute() {
        let plan = Plan::new(
            &config(Path::new("rel/state")),
            &binaries(false, false),
            Path::new(EXE),
            false,
        )
        .unwrap();
        assert!(plan.state.is_absolute() && plan.state.ends_with("rel/state"));
        assert!(plan.children().all(|c| c
            .args
            .iter()
            .filter(|a| a.contains("rel/state"))
            .all(|a| a.contains(&plan.state.display().to_string()))));
    }

    /// `--mlflow-port P`: MLflow on P, the trainer tracking to P, and the
    /// dashboards' MLflow links at P.
    #[test]
    fn mlflow_runs_on_its_port_and_every_link_points_there() {
        let mut config = config(Path::new("/s"));
        config.ports.mlflow = 15_123;
        let plan = Plan::new(&config, &binaries(false, true), Path::new(EXE), true).unwrap();
        assert_eq!(names(&plan), [["alertmanager"], ["prometheus"], ["mlflow"]]);
        let mlflow = &plan.core[2][0];
        assert!(has(&mlflow.args, ["--port", "15123"]));
        assert!(mlflow.args.contains(&"--expose-prometheus".to_owned()));
        assert!(mlflow.env.contains(&("MLFLOW_DISABLE_TELEMETRY", "true")));
        assert!(has(
            &plan.trainer.args,
            ["--mlflow-tracking-uri", "http://127.0.0.1:15123"]
        ));
        assert_eq!(plan.mlflow_url.as_deref(), Some("http://127.0.0.1:15123"));
        let dashboards: Vec<&str> = plan
            .files
            .files
            .iter()
            .filter(|(p, _)| p.extension().is_some_and(|x| x == "json"))
            .filter(|(p, _)| p.starts_with("/s/config/grafana/dashboards"))
            .map(|(_, c)| c.as_str())
            .collect();
        assert!(dashboards.len() >= 2);
        for text in dashboards {
            let doc: serde_json::Value = serde_json::from_str(text).unwrap();
            let variable = doc["templating"]["list"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "mlflow_url")
                .cloned()
                .unwrap();
            assert_eq!(variable["current"]["value"], "http://127.0.0.1:15123");
        }
        let prometheus = plan
            .files
            .get(Path::new("/s/config/prometheus/prometheus.yml"))
            .unwrap();
        assert!(prometheus.contains("127.0.0.1:15123"), "{prometheus}");
        // Without the exporter the server runs unscraped.
        let plan = Plan::new(&config, &binaries(false, true), Path::new(EXE), false).unwrap();
        assert!(!plan.core[2][0]
            .args
            .contains(&"--expose-prometheus".to_owned()));
        let prometheus = plan
            .files
            .get(Path::new("/s/config/prometheus/prometheus.yml"))
            .unwrap();
        assert!(!prometheus.contains("127.0.0.1:15123"), "{prometheus}");
        // --no-mlflow: no server, no tracking, the links still at the port.
        config.mlflow = false;
        let plan = Plan::new(&config, &binaries(false, true), Path::new(EXE), true).unwrap();
        assert_eq!(names(&plan), [["alertmanager"], ["prometheus"]]);
        assert!(!plan
            .trainer
            .args
            .contains(&"--mlflow-tracking-uri".to_owned()));
    }

    #[test]
    fn grafana_reads_its_planned_ini() {
        let mut config = config(Path::new("/s"));
        config.ports.grafana = 13_000;
        let plan = Plan::new(&config, &binaries(true, false), Path::new(EXE), false).unwrap();
        assert_eq!(
            names(&plan),
            [["alertmanager"], ["prometheus"], ["grafana"]]
        );
        let grafana = &plan.core[2][0];
        assert_eq!(
            grafana.args,
            [
                "server",
                "--homepath=/share/grafana",
                "--config=/s/grafana/grafana.ini"
            ]
        );
        let ini = plan.files.get(Path::new("/s/grafana/grafana.ini")).unwrap();
        assert!(ini.contains("http_port = 13000"), "{ini}");
        assert!(
            ini.contains("provisioning = /s/config/grafana/provisioning"),
            "{ini}"
        );
        assert_eq!(plan.grafana_state.as_deref(), Some(Path::new("/s/grafana")));
        assert!(plan
            .urls
            .contains(&("Grafana (user admin)", "http://127.0.0.1:13000".to_owned())));
        config.grafana = false;
        let plan = Plan::new(&config, &binaries(true, false), Path::new(EXE), false).unwrap();
        assert_eq!(names(&plan), [["alertmanager"], ["prometheus"]]);
    }

    #[test]
    fn ha_and_replicas_plan_pairs_and_consecutive_ports() {
        let mut config = config(Path::new("/s"));
        config.ha = true;
        config.replicas = 3;
        let plan = Plan::new(&config, &binaries(false, false), Path::new(EXE), false).unwrap();
        assert_eq!(
            names(&plan),
            [
                ["alertmanager", "alertmanager-b"],
                ["prometheus", "prometheus-b"]
            ]
        );
        let b = &plan.core[0][1];
        assert!(b
            .args
            .contains(&"--cluster.listen-address=127.0.0.1:9096".to_owned()));
        assert!(b.args.contains(&"--cluster.peer=127.0.0.1:9094".to_owned()));
        assert!(b
            .args
            .contains(&"--storage.path=/s/ha/alertmanager-b".to_owned()));
        for (child, replica) in plan.core[1].iter().zip(["a", "b"]) {
            let file = format!("/s/config/prometheus/prometheus-{replica}.yml");
            assert!(child.args.contains(&format!("--config.file={file}")));
            let text = plan.files.get(Path::new(&file)).unwrap();
            let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
            assert_eq!(doc["global"]["external_labels"]["replica"], replica);
        }
        assert_eq!(
            plan.services
                .iter()
                .map(|s| (s.name.as_str(), s.listen.port()))
                .collect::<Vec<_>>(),
            [
                ("service-0", 9000),
                ("service-1", 9001),
                ("service-2", 9002)
            ]
        );
        assert_eq!(plan.app_urls.len(), 3);
        assert!(plan
            .urls
            .contains(&("Prometheus (replica b)", "http://127.0.0.1:9091".to_owned())));
        // No two children share an address.
        let listens: BTreeSet<SocketAddr> = plan.children().map(|c| c.listen).collect();
        assert_eq!(listens.len(), plan.children().count());
    }

    /// `mlwatch up --otlp`: both Prometheus of a pair with the receiver
    /// and the push config, every service and the trainer pushing to both,
    /// nothing scraped twice.
    #[test]
    fn the_push_stack_receives_on_every_prometheus_and_scrapes_no_pusher() {
        let mut config = config(Path::new("/s"));
        config.ha = true;
        config.replicas = 2;
        config.otlp = Some(receiver(5));
        let plan = Plan::new(&config, &binaries(false, false), Path::new(EXE), false).unwrap();
        let endpoints = [
            "http://127.0.0.1:9090/api/v1/otlp/v1/metrics",
            "http://127.0.0.1:9091/api/v1/otlp/v1/metrics",
        ];
        for (child, replica) in plan.core[1].iter().zip(["a", "b"]) {
            assert!(child
                .args
                .contains(&"--web.enable-otlp-receiver".to_owned()));
            assert!(
                child
                    .args
                    .contains(&"--enable-feature=native-histograms".to_owned()),
                "3.5 < 3.8: {:?}",
                child.args
            );
            let file = format!("/s/config/prometheus/prometheus-{replica}.yml");
            let doc: serde_yaml::Value =
                serde_yaml::from_str(plan.files.get(Path::new(&file)).unwrap()).unwrap();
            assert_eq!(
                doc["otlp"]["translation_strategy"],
                "UnderscoreEscapingWithSuffixes"
            );
            assert_eq!(doc["storage"]["tsdb"]["out_of_order_time_window"], "30m");
            assert_eq!(doc["global"]["external_labels"]["replica"], replica);
            let jobs: Vec<&str> = doc["scrape_configs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|j| j["job_name"].as_str().unwrap())
                .collect();
            assert!(
                !jobs.contains(&"ml-api") && !jobs.contains(&"model-training"),
                "{jobs:?}"
            );
            assert!(jobs.contains(&"prometheus"), "{jobs:?}");
        }
        for child in plan.services.iter().chain([&plan.trainer]) {
            for endpoint in endpoints {
                assert!(has(&child.args, ["--otlp-endpoint", endpoint]), "{child:?}");
            }
            assert!(
                has(&child.args, ["--otlp-export-interval", "1s"]),
                "quick timing"
            );
            assert!(child.args.contains(&"--no-scrape".to_owned()));
        }
        assert!(plan.urls.contains(&(
            "trainer (pushes OTLP)",
            "http://127.0.0.1:8002/health".to_owned()
        )));
        // 3.8 and later store native histograms without the feature flag.
        config.ha = false;
        config.otlp = Some(receiver(14));
        let plan = Plan::new(&config, &binaries(false, false), Path::new(EXE), false).unwrap();
        let prometheus = &plan.core[1][0];
        assert!(prometheus
            .args
            .contains(&"--web.enable-otlp-receiver".to_owned()));
        assert!(!prometheus
            .args
            .iter()
            .any(|a| a.starts_with("--enable-feature")));
        assert!(has(&plan.trainer.args, ["--otlp-endpoint", endpoints[0]]));
        assert!(!plan.trainer.args.contains(&endpoints[1].to_owned()));
        // The scrape path is unchanged: no receiver, no push flags.
        config.otlp = None;
        let plan = Plan::new(&config, &binaries(false, false), Path::new(EXE), false).unwrap();
        assert!(plan.children().all(|c| !c
            .args
            .iter()
            .any(|a| a.contains("otlp") || a == "--no-scrape")));
        let doc: serde_yaml::Value = serde_yaml::from_str(
            plan.files
                .get(Path::new("/s/config/prometheus/prometheus.yml"))
                .unwrap(),
        )
        .unwrap();
        assert!(doc.get("otlp").is_none());
    }

    #[test]
    fn conflicting_flags_are_refused_by_the_plan() {
        let mut config = config(Path::new("/s"));
        config.ports.app = 4999;
        config.replicas = 2;
        let error = Plan::new(&config, &binaries(false, true), Path::new(EXE), false)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("port 5000") && error.contains("MLflow"),
            "{error}"
        );
    }
}
