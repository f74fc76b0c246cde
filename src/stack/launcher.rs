//! The launcher behind `mlwatch up`, `mlwatch demo` and `nix run`: starts
//! Alertmanager, Prometheus (two of each with `--ha`), the service (one or
//! several replicas on consecutive ports, discovered by Prometheus from a
//! targets file), a trainer and (when installed) Grafana and an MLflow
//! tracking server on 127.0.0.1 with configs derived into a state
//! directory, relays alerts from Alertmanager to the terminal through a
//! built-in webhook, and reloads every replica whenever the trainer writes
//! a new artifact.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use super::children::{find_binary, Supervised};
use super::commands;
use super::config::{self, Assets, Endpoints, Timing};
use super::grafana;
use super::runbooks;
use super::webhook::{self, AlertInbox};

/// The Debian/Ubuntu command that installs what the stack needs.
/// Without recommends: they pull in a few dozen packages nobody asked for.
pub const INSTALL_HINT: &str =
    "apt-get install --no-install-recommends prometheus prometheus-alertmanager";

#[derive(Debug, Clone)]
pub struct Ports {
    pub app: u16,
    pub trainer: u16,
    pub prometheus: u16,
    pub alertmanager: u16,
    pub grafana: u16,
    pub webhook: u16,
    pub mlflow: u16,
}

impl Ports {
    /// Seven distinct ports that are free right now ([`crate::free_ports`]:
    /// drawn below the ephemeral range, so no outgoing connection can take
    /// one before the child binds it).
    pub fn free() -> anyhow::Result<Self> {
        let ports =
            crate::free_ports::distinct(7).context("cannot find free ports on 127.0.0.1")?;
        Ok(Self {
            app: ports[0],
            trainer: ports[1],
            prometheus: ports[2],
            alertmanager: ports[3],
            grafana: ports[4],
            webhook: ports[5],
            mlflow: ports[6],
        })
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            app: 9000,
            trainer: 8002,
            prometheus: 9090,
            alertmanager: 9093,
            grafana: 3000,
            webhook: 5001,
            mlflow: 5000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct StackConfig {
    pub assets: Assets,
    pub state_dir: PathBuf,
    pub ports: Ports,
    pub timing: Timing,
    /// Extra `mlwatch train` arguments (model, pace, ...).
    pub trainer_args: Vec<String>,
    pub drift_window: usize,
    /// Start Grafana when a server binary is on PATH.
    pub grafana: bool,
    /// Start an MLflow tracking server (and track the trainer's run in it)
    /// when `mlflow` is on PATH.
    pub mlflow: bool,
    /// Base URL of the runbooks for alerts and dashboards; `None` is the
    /// page the launcher's own HTTP server renders from docs/runbooks.md.
    pub runbook_url: Option<String>,
    /// Prediction service replicas, on ports `ports.app`, `ports.app + 1`, ...
    pub replicas: usize,
    /// Two Prometheus (`ports.prometheus`, `+ 1`) and two clustered
    /// Alertmanagers (web `ports.alertmanager` and `+ 2`, gossip `+ 1` and
    /// `+ 3`) instead of one of each ([`ha_ports`]).
    pub ha: bool,
}

/// The second members of an HA pair and the Alertmanagers' gossip ports.
#[derive(Debug, Clone, Copy)]
pub struct HaPorts {
    pub prometheus_b: SocketAddr,
    pub alertmanager_b: SocketAddr,
    pub gossip_a: SocketAddr,
    pub gossip_b: SocketAddr,
}

/// The HA pair's extra ports next to `ports`, none of them another
/// component's or a replica's.
pub fn ha_ports(ports: &Ports, replicas: usize) -> anyhow::Result<HaPorts> {
    let next = |port: u16, by: u16, flag: &str| {
        port.checked_add(by)
            .with_context(|| format!("--ha needs {flag} + {by} to be a port"))
    };
    let ha = HaPorts {
        prometheus_b: loopback(next(ports.prometheus, 1, "--prometheus-port")?),
        gossip_a: loopback(next(ports.alertmanager, 1, "--alertmanager-port")?),
        alertmanager_b: loopback(next(ports.alertmanager, 2, "--alertmanager-port")?),
        gossip_b: loopback(next(ports.alertmanager, 3, "--alertmanager-port")?),
    };
    let mut taken: Vec<u16> = vec![
        ports.trainer,
        ports.prometheus,
        ports.alertmanager,
        ports.grafana,
        ports.webhook,
    ];
    taken.extend(
        replica_addresses(ports, replicas)?
            .iter()
            .map(SocketAddr::port),
    );
    for extra in [ha.prometheus_b, ha.gossip_a, ha.alertmanager_b, ha.gossip_b] {
        if taken.contains(&extra.port()) {
            bail!(
                "--ha puts the second Prometheus on --prometheus-port + 1 and the Alertmanagers on \
                 --alertmanager-port .. + 3, but port {} is already another component's",
                extra.port()
            );
        }
        taken.push(extra.port());
    }
    Ok(ha)
}

/// The most replicas `mlwatch up` starts: a laptop's worth, and a bound on
/// the `instance` label's cardinality.
pub const MAX_REPLICAS: usize = 32;

/// The replicas' addresses: `count` consecutive ports from `ports.app`,
/// none of them another component's port.
pub fn replica_addresses(ports: &Ports, count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    if count == 0 || count > MAX_REPLICAS {
        bail!("--replicas must be between 1 and {MAX_REPLICAS}, got {count}");
    }
    let last = usize::from(ports.app) + count - 1;
    let Ok(last) = u16::try_from(last) else {
        bail!(
            "--replicas {count} from --app-port {} runs past port 65535",
            ports.app
        );
    };
    let others = [
        ("--trainer-port", ports.trainer),
        ("--prometheus-port", ports.prometheus),
        ("--alertmanager-port", ports.alertmanager),
        ("--grafana-port", ports.grafana),
        ("--webhook-port", ports.webhook),
    ];
    if let Some((flag, port)) = others.iter().find(|(_, p)| (ports.app..=last).contains(p)) {
        bail!(
            "{flag} {port} lies in the replicas' ports {}..={last}; move one of them",
            ports.app
        );
    }
    Ok((ports.app..=last).map(loopback).collect())
}

/// Prometheus and Alertmanager binaries, or the install command.
pub struct Binaries {
    pub prometheus: PathBuf,
    pub alertmanager: PathBuf,
    pub grafana: Option<grafana::GrafanaBinary>,
    pub mlflow: Option<PathBuf>,
}

impl Binaries {
    pub fn locate() -> anyhow::Result<Self> {
        let prometheus = find_binary(&["prometheus"]);
        let alertmanager = find_binary(&["alertmanager", "prometheus-alertmanager"]);
        match (prometheus, alertmanager) {
            (Some(prometheus), Some(alertmanager)) => Ok(Self {
                prometheus,
                alertmanager,
                grafana: grafana::locate(),
                mlflow: super::mlflow::locate(),
            }),
            (p, a) => {
                let missing: Vec<&str> = [
                    p.is_none().then_some("prometheus"),
                    a.is_none().then_some("alertmanager"),
                ]
                .into_iter()
                .flatten()
                .collect();
                bail!(
                    "{} not found on PATH. On Debian/Ubuntu: sudo {INSTALL_HINT}; with Nix: nix run (brings its own)",
                    missing.join(" and ")
                )
            }
        }
    }
}

pub struct Stack {
    pub urls: Vec<(&'static str, String)>,
    pub prometheus_url: String,
    /// The first replica's URL; `app_urls` holds all of them.
    pub app_url: String,
    pub app_urls: Vec<String>,
    pub model_path: PathBuf,
    pub inbox: AlertInbox,
    pub grafana_password: Option<String>,
    /// The MLflow server's URL, when one runs.
    pub mlflow_url: Option<String>,
    /// The live replicas; one that dies is dropped with a warning while
    /// others still serve.
    services: Vec<Supervised>,
    trainer: Option<Supervised>,
    /// Every other child, in start order; an HA pair is one group of two,
    /// any other child a group of one.
    core: Vec<Vec<Supervised>>,
    webhook: tokio::task::JoinHandle<()>,
    model_seen: Option<SystemTime>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Stack {
    pub async fn start(config: &StackConfig, binaries: &Binaries) -> anyhow::Result<Self> {
        // Prometheus resolves relative rule paths against its config file's
        // directory, not ours: every path handed to a child is absolute.
        let state = &std::path::absolute(&config.state_dir).with_context(|| {
            format!(
                "cannot resolve state directory {}",
                config.state_dir.display()
            )
        })?;
        std::fs::create_dir_all(state)
            .with_context(|| format!("cannot create state directory {}", state.display()))?;
        let logs = state.join("logs");
        let p = &config.ports;
        let mlflow = binaries
            .mlflow
            .as_ref()
            .filter(|_| config.mlflow)
            .map(|binary| (binary, super::mlflow::can_expose_prometheus(binary)));
        let runbook_url = match &config.runbook_url {
            Some(url) => runbooks::check_url(url)?,
            None => format!("http://{}{}", loopback(p.webhook), runbooks::PATH),
        };
        let endpoints = Endpoints {
            apps: replica_addresses(p, config.replicas)?,
            trainers: vec![loopback(p.trainer)],
            prometheus: loopback(p.prometheus),
            alertmanager: loopback(p.alertmanager),
            mlflow: mlflow
                .filter(|(_, metrics)| *metrics)
                .map(|_| loopback(p.mlflow)),
            runbooks: runbook_url.clone(),
        };
        let webhook_url = format!("http://{}{}", loopback(p.webhook), webhook::PATH);
        let runbook_page = runbooks::load(&config.assets.root)?;
        let written = config::write(
            &config.assets,
            &state.join("config"),
            &endpoints,
            &webhook_url,
            &config.timing,
        )?;

        let inbox = AlertInbox::default();
        let (_, webhook) =
            webhook::start(loopback(p.webhook), inbox.clone(), Some(runbook_page)).await?;

        let mut core = Vec::new();
        let ha = config
            .ha
            .then(|| ha_ports(p, config.replicas))
            .transpose()?;
        let mut ha_urls = Vec::new();
        if let Some(ha) = ha {
            // Pairs (docs/fleet.md, "HA pair"): identical rules, distinct
            // `replica` labels, both Prometheus alerting both Alertmanagers.
            let derived = std::fs::read_to_string(&written.prometheus_yml)
                .with_context(|| format!("cannot read {}", written.prometheus_yml.display()))?;
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
            let mut pair = Vec::new();
            for (name, web, gossip, peer, storage) in members {
                pair.push(Supervised::spawn(
                    name,
                    &binaries.alertmanager,
                    &commands::clustered_alertmanager(
                        &written.alertmanager_yml,
                        &storage,
                        web,
                        gossip,
                        &[peer],
                        None,
                    ),
                    &logs,
                )?);
            }
            core.push(pair);
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
                std::fs::write(&file, config::ha_member(&derived, replica, &alertmanagers)?)
                    .with_context(|| format!("cannot write {}", file.display()))?;
                pair.push(Supervised::spawn(
                    name,
                    &binaries.prometheus,
                    &commands::prometheus(&file, &storage, listen),
                    &logs,
                )?);
            }
            core.push(pair);
            ha_urls.push((
                "Prometheus (replica b)",
                format!("http://{}", ha.prometheus_b),
            ));
            ha_urls.push(("Alertmanager b", format!("http://{}", ha.alertmanager_b)));
        } else {
            core.push(vec![Supervised::spawn(
                "alertmanager",
                &binaries.alertmanager,
                &commands::alertmanager(
                    &written.alertmanager_yml,
                    &state.join("alertmanager"),
                    endpoints.alertmanager,
                ),
                &logs,
            )?]);
            core.push(vec![Supervised::spawn(
                "prometheus",
                &binaries.prometheus,
                &commands::prometheus(
                    &written.prometheus_yml,
                    &state.join("prometheus"),
                    endpoints.prometheus,
                ),
                &logs,
            )?]);
        }
        let mut grafana_password = None;
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
            (
                "trainer metrics",
                format!("http://{}/metrics", endpoints.trainers[0]),
            ),
            ("Prometheus", format!("http://{}", endpoints.prometheus)),
            ("Alertmanager", format!("http://{}", endpoints.alertmanager)),
            ("runbooks", runbook_url),
        ];
        urls.extend(ha_urls);
        if config.grafana {
            if let Some(binary) = &binaries.grafana {
                let settings =
                    grafana::write_config(state, &written.grafana_provisioning, p.grafana)?;
                let mut args: Vec<String> = binary
                    .subcommand
                    .map(|s| vec![s.to_owned()])
                    .unwrap_or_default();
                args.extend([
                    format!("--homepath={}", binary.home.display()),
                    format!("--config={}", settings.ini.display()),
                ]);
                core.push(vec![Supervised::spawn(
                    "grafana",
                    &binary.program,
                    &args,
                    &logs,
                )?]);
                urls.push((
                    "Grafana (user admin)",
                    format!("http://{}", loopback(p.grafana)),
                ));
                grafana_password = Some(settings.admin_password);
            }
        }

        let mut mlflow_url = None;
        if let Some((binary, metrics)) = mlflow {
            let address = loopback(p.mlflow);
            core.push(vec![Supervised::spawn_with_env(
                "mlflow",
                binary,
                &super::mlflow::server_args(state, address, metrics),
                &super::mlflow::ENV,
                &logs,
            )?]);
            let url = format!("http://{address}");
            urls.push(("MLflow", url.clone()));
            mlflow_url = Some(url);
        }

        let exe = std::env::current_exe().context("cannot find the mlwatch executable")?;
        let model_path = state.join("model.json");
        // One feedback key for every replica (0600, kept across restarts so
        // ids issued before a restart still verify): docs/quality.md.
        let feedback_key = state.join("feedback.key");
        super::grafana::persistent_secret(&feedback_key)?;
        let mut services = Vec::new();
        for (i, address) in endpoints.apps.iter().enumerate() {
            let name = if endpoints.apps.len() == 1 {
                "service".to_owned()
            } else {
                format!("service-{i}")
            };
            let mut args = commands::service(*address, &model_path, config.drift_window);
            args.extend([
                "--feedback-key-file".into(),
                feedback_key.display().to_string(),
            ]);
            services.push(Supervised::spawn(&name, &exe, &args, &logs)?);
        }
        let app_urls: Vec<String> = endpoints
            .apps
            .iter()
            .map(|a| format!("http://{a}"))
            .collect();
        let mut trainer_args = commands::trainer(endpoints.trainers[0], &model_path);
        if let Some(url) = &mlflow_url {
            // The server boots while the trainer starts, in 7 s on an idle
            // laptop but over 30 s on a busy 2-core machine: the trainer
            // waits for it, longer than its default.
            trainer_args.extend([
                "--mlflow-tracking-uri".into(),
                url.clone(),
                "--mlflow-startup-wait".into(),
                "120s".into(),
            ]);
        }
        trainer_args.extend(config.trainer_args.iter().cloned());
        let trainer = Supervised::spawn("trainer", &exe, &trainer_args, &logs)?;
        Ok(Self {
            urls,
            prometheus_url: format!("http://{}", endpoints.prometheus),
            app_url: app_urls[0].clone(),
            app_urls,
            model_seen: modified(&model_path),
            model_path,
            inbox,
            grafana_password,
            mlflow_url,
            services,
            trainer: Some(trainer),
            core,
            webhook,
        })
    }

    /// One supervision step: reload the service on a new artifact, report
    /// children that died. Errors when a long-running child died.
    pub fn check(&mut self) -> anyhow::Result<()> {
        let current = modified(&self.model_path);
        if current.is_some() && current != self.model_seen {
            self.model_seen = current;
            tracing::info!(
                "new model artifact at {}; reloading {} service replica(s)",
                self.model_path.display(),
                self.services.len()
            );
            for service in &self.services {
                service.signal(nix::sys::signal::Signal::SIGHUP);
            }
        }
        if let Some(trainer) = &mut self.trainer {
            if let Some(status) = trainer.exited() {
                if status.success() {
                    tracing::info!("trainer finished");
                } else {
                    tracing::warn!(
                        "trainer exited with {status}; last log lines:\n{}",
                        trainer.tail(20)
                    );
                }
                self.trainer = None;
            }
        }
        // A replica that dies leaves the others serving (Prometheus reports
        // it as MlApiDown), and an HA member its partner; the stack gives up
        // only when a group has no member left.
        drop_exited_members(&mut self.services, "replica(s) still serve");
        for pair in &mut self.core {
            drop_exited_members(pair, "member(s) of its pair still run");
        }
        for child in self
            .services
            .iter_mut()
            .chain(self.core.iter_mut().flatten())
        {
            if let Some(status) = child.exited() {
                bail!(
                    "{} exited with {status}; last log lines of {}:\n{}",
                    child.name,
                    child.log.display(),
                    child.tail(20)
                );
            }
        }
        Ok(())
    }

    /// Supervises until `until` completes or a child dies.
    pub async fn supervise(
        &mut self,
        until: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(until);
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = &mut until => return Ok(()),
                _ = ticker.tick() => self.check()?,
            }
        }
    }

    /// Process ids of every running child (tests check they are gone).
    pub fn pids(&self) -> Vec<u32> {
        self.services
            .iter()
            .chain(self.trainer.as_ref())
            .chain(self.core.iter().flatten())
            .filter_map(Supervised::pid)
            .collect()
    }

    /// Stops every child (trainer and service first, Prometheus last).
    pub async fn shutdown(mut self) {
        if let Some(trainer) = &mut self.trainer {
            trainer.stop().await;
        }
        for service in &mut self.services {
            service.stop().await;
        }
        for child in self
            .core
            .iter_mut()
            .rev()
            .flat_map(|group| group.iter_mut().rev())
        {
            child.stop().await;
        }
        self.webhook.abort();
    }
}

/// Members of a redundant group (API replicas, an HA pair) that exited are
/// dropped with a warning while another member still runs; the last one is
/// kept, so that its exit ends the stack like any single child's.
fn drop_exited_members(group: &mut Vec<Supervised>, still: &str) {
    let mut i = 0;
    while i < group.len() && group.len() > 1 {
        if let Some(status) = group[i].exited() {
            let dead = group.remove(i);
            tracing::warn!(
                "{} exited with {status}; {} {still}; last log lines of {}:\n{}",
                dead.name,
                group.len(),
                dead.log.display(),
                dead.tail(20)
            );
        } else {
            i += 1;
        }
    }
}
