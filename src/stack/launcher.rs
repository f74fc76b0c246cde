//! The launcher behind `mlwatch up`, `mlwatch demo` and `nix run`: starts
//! Alertmanager, Prometheus (two of each with `--ha`), the service (one or
//! several replicas on consecutive ports, discovered by Prometheus from a
//! targets file), a trainer and (when installed) Grafana and an MLflow
//! tracking server on 127.0.0.1 with configs derived into a state
//! directory, relays alerts from Alertmanager to the terminal through a
//! built-in webhook, and reloads every replica whenever the trainer writes
//! a new artifact. What to start and write is planned first, as data
//! ([`super::plan`]); this module writes, spawns and supervises.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use super::children::Supervised;
use super::grafana;
use super::plan::{Child, Plan};
use super::runbooks;
use super::spec::{Binaries, StackConfig};
use super::webhook::{self, AlertInbox};

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

/// Starts one planned child, its output in `logs/<name>.log`.
fn spawn(child: &Child, logs: &Path) -> anyhow::Result<Supervised> {
    if child.env.is_empty() {
        Supervised::spawn(&child.name, &child.program, &child.args, logs)
    } else {
        Supervised::spawn_with_env(&child.name, &child.program, &child.args, &child.env, logs)
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Stack {
    /// Plans the stack ([`Plan::new`]), writes its files and starts its
    /// children in plan order.
    pub async fn start(config: &StackConfig, binaries: &Binaries) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the mlwatch executable")?;
        // Asking the installed MLflow takes a Python start: only when it runs.
        let mlflow_metrics = config.mlflow
            && binaries
                .mlflow
                .as_deref()
                .is_some_and(super::mlflow::can_expose_prometheus);
        let plan = Plan::new(config, binaries, &exe, mlflow_metrics)?;
        let runbook_page = runbooks::load(&config.assets.root)?;
        plan.files.write()?;
        super::grafana::persistent_secret(&plan.feedback_key)?;
        let grafana_password = plan
            .grafana_state
            .as_ref()
            .map(|dir| grafana::prepare(dir))
            .transpose()?;

        let inbox = AlertInbox::default();
        let (_, webhook) = webhook::start(plan.webhook, inbox.clone(), Some(runbook_page)).await?;
        let logs = &plan.logs;
        let mut core = Vec::new();
        for group in &plan.core {
            core.push(
                group
                    .iter()
                    .map(|child| spawn(child, logs))
                    .collect::<anyhow::Result<Vec<_>>>()?,
            );
        }
        let services = plan
            .services
            .iter()
            .map(|child| spawn(child, logs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let trainer = spawn(&plan.trainer, logs)?;
        Ok(Self {
            urls: plan.urls,
            prometheus_url: plan.prometheus_url,
            app_url: plan.app_urls[0].clone(),
            app_urls: plan.app_urls,
            model_seen: modified(&plan.model_path),
            model_path: plan.model_path,
            inbox,
            grafana_password,
            mlflow_url: plan.mlflow_url,
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
