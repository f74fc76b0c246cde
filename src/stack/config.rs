//! Deriving runnable configs from prometheus/ and grafana/.
//!
//! The files under prometheus/ name the hosts of the brief's docker-compose
//! network (`app:9000`, `training-metrics:8002`, ...). Running them anywhere
//! else means rewriting the targets, the rule path and the webhook URL, and,
//! for tests, shortening intervals and `for:` durations. Every rewrite is a
//! change to a parsed document, so anything not rewritten stays as written,
//! and an unknown job fails loudly instead of being scraped from nowhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_yaml::{Mapping, Value};

use super::endpoints::Endpoints;

impl Endpoints {
    /// `None` for an optional job whose target does not run.
    fn targets(&self, job: &str) -> anyhow::Result<Option<Vec<String>>> {
        if job == "mlflow" {
            return Ok(self.mlflow.map(|a| vec![a.to_string()]));
        }
        Ok(Some(match job {
            "ml-api" => self.apps.iter().map(ToString::to_string).collect(),
            "model-training" => self.trainers.iter().map(ToString::to_string).collect(),
            "prometheus" => vec![self.prometheus.to_string()],
            "alertmanager" => vec![self.alertmanager.to_string()],
            other => bail!(
                "prometheus.yml has a job {other:?} that the stack does not know how to place"
            ),
        }))
    }
}

/// Optional speed-ups for tests and demos; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Timing {
    /// Replaces every scrape interval (global and per job).
    pub scrape_interval: Option<Duration>,
    pub evaluation_interval: Option<Duration>,
    /// Replaces every alert's `for:`.
    pub alert_for: Option<Duration>,
    /// Replaces Alertmanager's group_wait / group_interval everywhere.
    pub alert_grouping: Option<Duration>,
}

impl Timing {
    /// The timings of the tests and `mlwatch demo --quick`: 1s scrapes and
    /// evaluations, 3s `for:`, 1s Alertmanager grouping.
    pub fn quick() -> Self {
        let seconds = |s| Some(Duration::from_secs(s));
        Self {
            scrape_interval: seconds(1),
            evaluation_interval: seconds(1),
            alert_for: seconds(3),
            alert_grouping: seconds(1),
        }
    }
}

fn duration(d: Duration) -> Value {
    let ms = d.as_millis();
    Value::String(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

fn key(name: &str) -> Value {
    Value::String(name.to_owned())
}

fn mapping_mut<'a>(value: &'a mut Value, what: &str) -> anyhow::Result<&'a mut Mapping> {
    value
        .as_mapping_mut()
        .with_context(|| format!("{what} is not a mapping"))
}

/// prometheus.yml with targets placed, rules loaded from `rule_glob`, and
/// timings applied.
pub fn prometheus(
    source: &str,
    endpoints: &Endpoints,
    rule_glob: &str,
    timing: &Timing,
) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("prometheus.yml is not valid YAML")?;
    let root = mapping_mut(&mut doc, "prometheus.yml")?;
    let global = root
        .entry(key("global"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let global = mapping_mut(global, "global")?;
    if let Some(d) = timing.scrape_interval {
        global.insert(key("scrape_interval"), duration(d));
    }
    if let Some(d) = timing.evaluation_interval {
        global.insert(key("evaluation_interval"), duration(d));
    }
    let labels = global
        .entry(key("external_labels"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    mapping_mut(labels, "global.external_labels")?.insert(
        key("runbook_base"),
        Value::String(endpoints.runbooks.clone()),
    );
    root.insert(
        key("rule_files"),
        Value::Sequence(vec![Value::String(rule_glob.to_owned())]),
    );

    // Only the Alertmanager address changes; alert_relabel_configs (which
    // keep runbook_base off the alerts) stay as written.
    let alerting = root
        .entry(key("alerting"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    mapping_mut(alerting, "alerting")?.insert(
        key("alertmanagers"),
        serde_yaml::to_value(serde_json::json!(
            [{"static_configs": [{"targets": [endpoints.alertmanager.to_string()]}]}]
        ))?,
    );

    let jobs = root
        .get_mut(key("scrape_configs"))
        .and_then(Value::as_sequence_mut)
        .context("prometheus.yml has no scrape_configs list")?;
    let mut kept = Vec::new();
    for mut job in std::mem::take(jobs) {
        let config = mapping_mut(&mut job, "a scrape config")?;
        let name = config
            .get(key("job_name"))
            .and_then(Value::as_str)
            .context("a scrape config has no job_name")?
            .to_owned();
        let Some(targets) = endpoints.targets(&name)? else {
            continue;
        };
        place(config, targets, timing)?;
        kept.push(job);
    }
    *jobs = kept;
    Ok(serde_yaml::to_string(&doc)?)
}

/// One job's targets and timing.
fn place(job: &mut Mapping, targets: Vec<String>, timing: &Timing) -> anyhow::Result<()> {
    // The placed targets are all of them: compose's replica file
    // (/etc/prometheus/targets) does not exist here.
    job.remove(key("file_sd_configs"));
    job.insert(
        key("static_configs"),
        Value::Sequence(vec![serde_yaml::to_value(
            serde_json::json!({ "targets": targets }),
        )?]),
    );
    if let Some(interval) = timing.scrape_interval {
        job.insert(key("scrape_interval"), duration(interval));
        // Prometheus refuses a timeout longer than the interval.
        if job.contains_key(key("scrape_timeout")) {
            job.insert(key("scrape_timeout"), duration(interval));
        }
    }
    Ok(())
}

/// The job whose targets come from a file (`file_sd_configs`): the
/// prediction API, the one job that runs as several replicas.
const DISCOVERED_JOB: &str = "ml-api";

/// A derived prometheus.yml where `job` finds its targets in `targets_file`
/// (`file_sd_configs`) instead of a static list. Prometheus watches the
/// file, so a launcher that rewrites it changes the targets without a
/// reload. prometheus/prometheus.yml itself keeps its static target, which
/// docker-compose's DNS resolves.
fn discover_from_file(source: &str, job: &str, targets_file: &Path) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("prometheus.yml is not valid YAML")?;
    let jobs = doc
        .get_mut("scrape_configs")
        .and_then(Value::as_sequence_mut)
        .context("prometheus.yml has no scrape_configs list")?;
    let config = jobs
        .iter_mut()
        .filter_map(Value::as_mapping_mut)
        .find(|j| j.get(key("job_name")).and_then(Value::as_str) == Some(job))
        .with_context(|| format!("prometheus.yml has no job {job:?} to discover"))?;
    config.remove(key("static_configs"));
    config.insert(
        key("file_sd_configs"),
        serde_yaml::to_value(serde_json::json!([{
            "files": [targets_file.display().to_string()],
            // Prometheus also watches the file; this is the fallback re-read.
            "refresh_interval": "30s",
        }]))?,
    );
    Ok(serde_yaml::to_string(&doc)?)
}

/// The `file_sd` JSON listing `targets` (one group, no extra labels).
pub fn targets_file(targets: &[SocketAddr]) -> anyhow::Result<String> {
    let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
    Ok(serde_json::to_string_pretty(
        &serde_json::json!([{ "targets": targets, "labels": {} }]),
    )?)
}

/// One member of a highly available Prometheus pair: a derived
/// prometheus.yml with its own external label `replica` (so the members'
/// series stay apart wherever they meet: federation, remote write, Thanos)
/// and every Alertmanager of the cluster as an alerting target. The label
/// is dropped from alerts, so both members send identical alerts and the
/// Alertmanagers deduplicate them (docs/fleet.md, "HA pair").
pub fn ha_member(
    source: &str,
    replica: &str,
    alertmanagers: &[SocketAddr],
) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("prometheus.yml is not valid YAML")?;
    let root = mapping_mut(&mut doc, "prometheus.yml")?;
    let global = root
        .entry(key("global"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let labels = mapping_mut(global, "global")?
        .entry(key("external_labels"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    mapping_mut(labels, "external_labels")?
        .insert(key("replica"), Value::String(replica.to_owned()));
    let targets: Vec<String> = alertmanagers.iter().map(ToString::to_string).collect();
    let alerting = mapping_mut(
        root.entry(key("alerting"))
            .or_insert_with(|| Value::Mapping(Mapping::new())),
        "alerting",
    )?;
    alerting.insert(
        key("alertmanagers"),
        serde_yaml::to_value(serde_json::json!([{"static_configs": [{"targets": targets}]}]))?,
    );
    // Alertmanager deduplicates the pair's alerts only if it does not see
    // them as different: `replica` is dropped before sending, after the
    // file's own relabelling.
    let relabel = alerting
        .entry(key("alert_relabel_configs"))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    relabel
        .as_sequence_mut()
        .context("alerting.alert_relabel_configs is not a list")?
        .push(serde_yaml::to_value(
            serde_json::json!({"regex": "replica", "action": "labeldrop"}),
        )?);
    Ok(serde_yaml::to_string(&doc)?)
}

/// The push path's config (docs/otlp.md): `source` (prometheus.yml, as
/// written or derived) merged with `overlay` (prometheus/otlp.yml): its
/// `otlp` and `storage` keys added, the scrape jobs of its `pushed_jobs`
/// removed (their binaries push with `--no-scrape`; a scrape would only
/// report them down). A pushed job that `source` does not scrape is an
/// error: the overlay and prometheus.yml drifted apart.
pub fn push(source: &str, overlay: &str) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("prometheus.yml is not valid YAML")?;
    let overlay: Value = serde_yaml::from_str(overlay).context("otlp.yml is not valid YAML")?;
    let pushed: Vec<&str> = overlay
        .get("pushed_jobs")
        .and_then(Value::as_sequence)
        .context("otlp.yml has no pushed_jobs list")?
        .iter()
        .map(|job| job.as_str().context("otlp.yml: a pushed job is not a name"))
        .collect::<anyhow::Result<_>>()?;
    let root = mapping_mut(&mut doc, "prometheus.yml")?;
    let jobs = root
        .get_mut(key("scrape_configs"))
        .and_then(Value::as_sequence_mut)
        .context("prometheus.yml has no scrape_configs list")?;
    for name in &pushed {
        let before = jobs.len();
        jobs.retain(|job| job.get("job_name").and_then(Value::as_str) != Some(name));
        if jobs.len() == before {
            bail!("otlp.yml pushes job {name:?}, which prometheus.yml does not scrape");
        }
    }
    for section in ["otlp", "storage"] {
        let value = overlay
            .get(section)
            .with_context(|| format!("otlp.yml has no {section} block"))?;
        root.insert(key(section), value.clone());
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// A rule file with every alert's `for:` replaced, when asked.
pub fn rules(source: &str, timing: &Timing) -> anyhow::Result<String> {
    let Some(for_duration) = timing.alert_for else {
        return Ok(source.to_owned());
    };
    let mut doc: Value = serde_yaml::from_str(source).context("rule file is not valid YAML")?;
    let groups = doc
        .get_mut("groups")
        .and_then(Value::as_sequence_mut)
        .context("rule file has no groups")?;
    for group in groups {
        if let Some(interval) = timing.evaluation_interval {
            mapping_mut(group, "a rule group")?.insert(key("interval"), duration(interval));
        }
        let Some(rules) = group.get_mut("rules").and_then(Value::as_sequence_mut) else {
            continue;
        };
        for rule in rules {
            let rule = mapping_mut(rule, "a rule")?;
            if rule.contains_key(key("alert")) {
                rule.insert(key("for"), duration(for_duration));
            }
        }
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// alertmanager.yml with every webhook pointed at `webhook_url` and, when
/// asked, grouping waits shortened.
pub fn alertmanager(source: &str, webhook_url: &str, timing: &Timing) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("alertmanager.yml is not valid YAML")?;
    let receivers = doc
        .get_mut("receivers")
        .and_then(Value::as_sequence_mut)
        .context("alertmanager.yml has no receivers")?;
    let mut webhooks = 0;
    for receiver in receivers {
        if let Some(configs) = receiver
            .get_mut("webhook_configs")
            .and_then(Value::as_sequence_mut)
        {
            for config in configs {
                mapping_mut(config, "a webhook config")?
                    .insert(key("url"), Value::String(webhook_url.to_owned()));
                webhooks += 1;
            }
        }
    }
    if webhooks == 0 {
        bail!("alertmanager.yml has no webhook receiver to point at {webhook_url}");
    }
    if let Some(wait) = timing.alert_grouping {
        shorten_route(
            mapping_mut(
                doc.get_mut("route")
                    .context("alertmanager.yml has no route")?,
                "route",
            )?,
            wait,
        );
    }
    Ok(serde_yaml::to_string(&doc)?)
}

fn shorten_route(route: &mut Mapping, wait: Duration) {
    for field in ["group_wait", "group_interval"] {
        route.insert(key(field), duration(wait));
    }
    if let Some(children) = route
        .get_mut(key("routes"))
        .and_then(Value::as_sequence_mut)
    {
        for child in children.iter_mut().filter_map(Value::as_mapping_mut) {
            shorten_route(child, wait);
        }
    }
}

/// The Grafana datasource file with the Prometheus URL replaced; the uid
/// and everything else stay as provisioned.
fn grafana_datasource(source: &str, prometheus_url: &str) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("datasource file is not valid YAML")?;
    let sources = doc
        .get_mut("datasources")
        .and_then(Value::as_sequence_mut)
        .context("no datasources list")?;
    for datasource in sources {
        mapping_mut(datasource, "a datasource")?
            .insert(key("url"), Value::String(prometheus_url.to_owned()));
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// The dashboard provider file pointed at the derived dashboards.
pub fn grafana_dashboards(source: &str, dashboards_dir: &Path) -> anyhow::Result<String> {
    let mut doc: Value =
        serde_yaml::from_str(source).context("dashboard provider file is not valid YAML")?;
    let providers = doc
        .get_mut("providers")
        .and_then(Value::as_sequence_mut)
        .context("no providers list")?;
    for provider in providers {
        let options = mapping_mut(provider, "a provider")?
            .entry(key("options"))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        mapping_mut(options, "provider options")?.insert(
            key("path"),
            Value::String(dashboards_dir.display().to_string()),
        );
    }
    Ok(serde_yaml::to_string(&doc)?)
}

pub use super::assets::Assets;

/// The files the derived configs start from.
impl Assets {
    fn read(&self, relative: &str) -> anyhow::Result<String> {
        let path = self.root.join(relative);
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    pub fn rule_files(&self) -> anyhow::Result<Vec<PathBuf>> {
        let dir = self.root.join("prometheus/rules");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// prometheus/otlp.yml, the push path's overlay ([`push`]).
    pub fn otlp_overlay(&self) -> anyhow::Result<String> {
        self.read("prometheus/otlp.yml")
    }

    pub fn dashboards_dir(&self) -> PathBuf {
        self.root.join("grafana/provisioning/dashboards")
    }
}

/// Paths of a written stack config.
#[derive(Debug, Clone)]
pub struct Written {
    pub prometheus_yml: PathBuf,
    pub alertmanager_yml: PathBuf,
    pub grafana_provisioning: PathBuf,
}

/// Files to write: directories (some stay empty, like Grafana's plugins
/// directory, which it expects) and files with their contents.
#[derive(Debug, Clone, Default)]
pub struct Files {
    pub dirs: Vec<PathBuf>,
    pub files: Vec<(PathBuf, String)>,
}

impl Files {
    fn add(&mut self, path: PathBuf, contents: String) {
        self.files.push((path, contents));
    }

    /// The file at `path`, if one is to be written there.
    pub fn get(&self, path: &Path) -> Option<&str> {
        self.files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_str())
    }

    /// The contents planned for `path`, to change before writing.
    pub fn get_mut(&mut self, path: &Path) -> Option<&mut String> {
        self.files
            .iter_mut()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c)
    }

    /// Creates every directory and writes every file (with its parents).
    pub fn write(&self) -> anyhow::Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        for (path, contents) in &self.files {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(path, contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Writes every derived config under `out` ([`derive()`], then writes).
pub fn write(
    assets: &Assets,
    out: &Path,
    endpoints: &Endpoints,
    webhook_url: &str,
    timing: &Timing,
) -> anyhow::Result<Written> {
    let (written, files) = derive(assets, out, endpoints, webhook_url, timing)?;
    files.write()?;
    Ok(written)
}

/// Every derived config under `out`, and where the children find it;
/// reads the assets and writes nothing.
pub fn derive(
    assets: &Assets,
    out: &Path,
    endpoints: &Endpoints,
    webhook_url: &str,
    timing: &Timing,
) -> anyhow::Result<(Written, Files)> {
    // Prometheus resolves a relative rule glob against its config file's
    // directory, where it would silently match nothing.
    let out =
        &std::path::absolute(out).with_context(|| format!("cannot resolve {}", out.display()))?;
    let mut files = Files::default();
    let rules_dir = out.join("prometheus/rules");
    files.dirs.push(rules_dir.clone());
    for file in assets.rule_files()? {
        let source = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let name = file.file_name().context("rule file without a name")?;
        files.add(
            rules_dir.join(name),
            rules(&source, timing).with_context(|| format!("in {}", file.display()))?,
        );
    }
    let prometheus_yml = out.join("prometheus/prometheus.yml");
    let glob = format!("{}/*.yml", rules_dir.display());
    let app_targets = out.join(format!("prometheus/targets/{DISCOVERED_JOB}.json"));
    files.add(app_targets.clone(), targets_file(&endpoints.apps)?);
    let derived = prometheus(
        &assets.read("prometheus/prometheus.yml")?,
        endpoints,
        &glob,
        timing,
    )?;
    files.add(
        prometheus_yml.clone(),
        discover_from_file(&derived, DISCOVERED_JOB, &app_targets)?,
    );
    let alertmanager_yml = out.join("alertmanager/alertmanager.yml");
    files.add(
        alertmanager_yml.clone(),
        alertmanager(
            &assets.read("prometheus/alertmanager.yml")?,
            webhook_url,
            timing,
        )?,
    );

    let grafana = out.join("grafana/provisioning");
    for sub in ["datasources", "dashboards", "plugins", "alerting"] {
        files.dirs.push(grafana.join(sub));
    }
    let datasource = assets.read("grafana/provisioning/datasources/prometheus.yml")?;
    files.add(
        grafana.join("datasources/prometheus.yml"),
        grafana_datasource(&datasource, &format!("http://{}", endpoints.prometheus))?,
    );
    // Copies with every provisioned constant filled in, at the top of the
    // provider's path like in the repository: with
    // foldersFromFilesStructure they land in the General folder, as under
    // docker-compose and NixOS.
    let dashboards = out.join("grafana/dashboards");
    files.dirs.push(dashboards.clone());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(assets.dashboards_dir())
        .with_context(|| format!("cannot list {}", assets.dashboards_dir().display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    sources.sort();
    for path in sources {
        if path.extension().is_some_and(|x| x == "json") {
            let source = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_name().context("dashboard without a name")?;
            files.add(
                dashboards.join(name),
                super::dashboard_constants::rewrite(&source, endpoints)
                    .with_context(|| format!("in {}", path.display()))?,
            );
        }
    }
    let provider = assets.read("grafana/provisioning/dashboards/dashboard.yml")?;
    files.add(
        grafana.join("dashboards/dashboard.yml"),
        grafana_dashboards(&provider, &dashboards)?,
    );
    let written = Written {
        prometheus_yml,
        alertmanager_yml,
        grafana_provisioning: grafana,
    };
    Ok((written, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        Endpoints {
            apps: vec!["127.0.0.1:19000".parse().unwrap()],
            trainers: vec![
                "127.0.0.1:18002".parse().unwrap(),
                "127.0.0.1:18003".parse().unwrap(),
            ],
            prometheus: "127.0.0.1:19090".parse().unwrap(),
            alertmanager: "127.0.0.1:19093".parse().unwrap(),
            mlflow: None,
            runbooks: "http://127.0.0.1:15001/runbooks".into(),
            mlflow_url: "http://127.0.0.1:15000".into(),
        }
    }

    #[test]
    fn the_mlflow_job_is_placed_when_mlflow_runs_and_left_out_otherwise() {
        let source = "scrape_configs:\n  - job_name: mlflow\n    static_configs: [{targets: ['mlflow:5000']}]\n  - job_name: ml-api\n    static_configs: [{targets: ['app:9000']}]\n";
        let jobs = |endpoints: &Endpoints| -> Vec<(String, String)> {
            let text = prometheus(source, endpoints, "/r/*.yml", &Timing::default()).unwrap();
            let doc: Value = serde_yaml::from_str(&text).unwrap();
            doc["scrape_configs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|j| {
                    (
                        j["job_name"].as_str().unwrap().to_owned(),
                        j["static_configs"][0]["targets"][0]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                    )
                })
                .collect()
        };
        assert_eq!(
            jobs(&endpoints()),
            vec![("ml-api".to_owned(), "127.0.0.1:19000".to_owned())]
        );
        let with = Endpoints {
            mlflow: Some("127.0.0.1:15000".parse().unwrap()),
            ..endpoints()
        };
        assert_eq!(
            jobs(&with),
            vec![
                ("mlflow".to_owned(), "127.0.0.1:15000".to_owned()),
                ("ml-api".to_owned(), "127.0.0.1:19000".to_owned())
            ]
        );
    }

    fn repo_file(path: &str) -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
    }

    #[test]
    fn the_api_job_is_discovered_from_a_targets_file() {
        let derived = prometheus(
            &repo_file("prometheus/prometheus.yml"),
            &endpoints(),
            "/tmp/rules/*.yml",
            &Timing::default(),
        )
        .unwrap();
        let text = discover_from_file(&derived, "ml-api", Path::new("/s/ml-api.json")).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let jobs = doc["scrape_configs"].as_sequence().unwrap();
        let api = jobs.iter().find(|j| j["job_name"] == "ml-api").unwrap();
        assert!(api.get("static_configs").is_none(), "{text}");
        assert_eq!(api["file_sd_configs"][0]["files"][0], "/s/ml-api.json");
        let trainer = jobs
            .iter()
            .find(|j| j["job_name"] == "model-training")
            .unwrap();
        assert!(
            trainer.get("static_configs").is_some(),
            "other jobs stay static"
        );
        assert!(discover_from_file(&derived, "nope", Path::new("/x")).is_err());
        let file: serde_json::Value = serde_json::from_str(
            &targets_file(&[
                "127.0.0.1:9000".parse().unwrap(),
                "127.0.0.1:9001".parse().unwrap(),
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            file[0]["targets"],
            serde_json::json!(["127.0.0.1:9000", "127.0.0.1:9001"])
        );
    }

    #[test]
    fn an_ha_member_has_its_replica_label_and_every_alertmanager() {
        let ams: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let text = ha_member(&repo_file("prometheus/prometheus.yml"), "b", &ams).unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["global"]["external_labels"]["replica"], "b");
        assert_eq!(doc["global"]["scrape_interval"], "15s", "the rest stays");
        let targets = &doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
        assert_eq!(targets.as_sequence().unwrap().len(), 2);
        assert_eq!(
            doc["alerting"]["alert_relabel_configs"][0]["action"],
            "labeldrop"
        );
    }

    #[test]
    fn prometheus_targets_rules_and_intervals_are_rewritten() {
        let timing = Timing {
            scrape_interval: Some(Duration::from_secs(1)),
            ..Timing::default()
        };
        let text = prometheus(
            &repo_file("prometheus/prometheus.yml"),
            &endpoints(),
            "/tmp/rules/*.yml",
            &timing,
        )
        .unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let job = |name: &str| {
            doc["scrape_configs"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|j| j["job_name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            job("ml-api")["static_configs"][0]["targets"][0],
            "127.0.0.1:19000"
        );
        assert_eq!(
            job("model-training")["static_configs"][0]["targets"]
                .as_sequence()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            job("model-training")["scrape_timeout"],
            "1s",
            "timeout never exceeds the interval"
        );
        assert_eq!(
            job("model-training")["metrics_path"],
            "/metrics",
            "untouched keys stay"
        );
        assert_eq!(doc["rule_files"][0], "/tmp/rules/*.yml");
        assert_eq!(
            doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:19093"
        );
        assert!(
            !text.contains("app:9000") && !text.contains("training-metrics"),
            "{text}"
        );
    }

    #[test]
    fn the_push_config_adds_the_otlp_blocks_and_drops_the_pushed_jobs() {
        let text = push(
            &repo_file("prometheus/prometheus.yml"),
            &repo_file("prometheus/otlp.yml"),
        )
        .unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let jobs: Vec<&str> = doc["scrape_configs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|j| j["job_name"].as_str().unwrap())
            .collect();
        assert_eq!(jobs, ["prometheus", "alertmanager", "mlflow"]);
        assert_eq!(
            doc["otlp"]["translation_strategy"],
            "UnderscoreEscapingWithSuffixes"
        );
        assert_eq!(doc["otlp"]["keep_identifying_resource_attributes"], false);
        assert_eq!(doc["storage"]["tsdb"]["out_of_order_time_window"], "30m");
        assert!(doc.get("pushed_jobs").is_none(), "not a Prometheus key");
        assert_eq!(doc["global"]["scrape_interval"], "15s", "the rest stays");
        // An overlay pushing a job prometheus.yml lacks has drifted.
        let drifted = repo_file("prometheus/otlp.yml").replace("- ml-api", "- ml-apis");
        let error = push(&repo_file("prometheus/prometheus.yml"), &drifted).unwrap_err();
        assert!(error.to_string().contains("ml-apis"), "{error}");
    }

    /// Compose's push profile mounts prometheus/prometheus-otlp.yml: it is
    /// the merge, not a second hand-kept copy (comments aside).
    #[test]
    fn the_committed_push_config_is_the_merge() {
        let merged: Value = serde_yaml::from_str(
            &push(
                &repo_file("prometheus/prometheus.yml"),
                &repo_file("prometheus/otlp.yml"),
            )
            .unwrap(),
        )
        .unwrap();
        let committed: Value =
            serde_yaml::from_str(&repo_file("prometheus/prometheus-otlp.yml")).unwrap();
        assert!(
            merged == committed,
            "prometheus/prometheus-otlp.yml differs from prometheus.yml + otlp.yml; \
             regenerate it (docs/otlp.md, \"Compose\"):\n{}",
            serde_yaml::to_string(&merged).unwrap()
        );
    }

    #[test]
    fn unknown_job_is_an_error() {
        let source =
            "scrape_configs:\n  - job_name: mystery\n    static_configs: [{targets: ['x:1']}]\n";
        let error = prometheus(source, &endpoints(), "r/*.yml", &Timing::default()).unwrap_err();
        assert!(error.to_string().contains("mystery"), "{error}");
    }

    #[test]
    fn alert_for_is_shortened_and_records_untouched() {
        let timing = Timing {
            alert_for: Some(Duration::from_secs(2)),
            ..Timing::default()
        };
        let alerts: Value = serde_yaml::from_str(
            &rules(&repo_file("prometheus/rules/ml_alerts.yml"), &timing).unwrap(),
        )
        .unwrap();
        let all: Vec<&Value> = alerts["groups"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_sequence().unwrap())
            .collect();
        assert!(all.len() >= 13);
        assert!(all.iter().all(|r| r["for"] == "2s"));
        let recording = repo_file("prometheus/rules/ml_recording.yml");
        let rewritten: Value = serde_yaml::from_str(&rules(&recording, &timing).unwrap()).unwrap();
        let original: Value = serde_yaml::from_str(&recording).unwrap();
        assert_eq!(rewritten, original);
    }

    #[test]
    fn alertmanager_webhook_and_grouping() {
        let timing = Timing {
            alert_grouping: Some(Duration::from_millis(500)),
            ..Timing::default()
        };
        let text = alertmanager(
            &repo_file("prometheus/alertmanager.yml"),
            "http://127.0.0.1:1/hook",
            &timing,
        )
        .unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["receivers"][0]["webhook_configs"][0]["url"],
            "http://127.0.0.1:1/hook"
        );
        assert_eq!(doc["route"]["group_wait"], "500ms");
        assert!(doc["route"]["routes"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|r| r["group_interval"] == "500ms"));
        assert_eq!(
            doc["inhibit_rules"].as_sequence().unwrap().len(),
            2,
            "inhibitions kept"
        );
    }

    #[test]
    fn grafana_files_keep_uid_and_point_at_repo_dashboards() {
        let ds: Value = serde_yaml::from_str(
            &grafana_datasource(
                &repo_file("grafana/provisioning/datasources/prometheus.yml"),
                "http://127.0.0.1:19090",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(ds["datasources"][0]["url"], "http://127.0.0.1:19090");
        assert_eq!(ds["datasources"][0]["uid"], "mlwatch-prometheus");
        let dashboards = grafana_dashboards(
            &repo_file("grafana/provisioning/dashboards/dashboard.yml"),
            Path::new("/repo/dash"),
        )
        .unwrap();
        assert!(dashboards.contains("path: /repo/dash"), "{dashboards}");
    }

    #[test]
    fn the_runbook_base_reaches_prometheus_and_the_dashboards() {
        let text = prometheus(
            &repo_file("prometheus/prometheus.yml"),
            &endpoints(),
            "/r/*.yml",
            &Timing::default(),
        )
        .unwrap();
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            doc["global"]["external_labels"]["runbook_base"],
            "http://127.0.0.1:15001/runbooks"
        );
        // The label stays off the alerts that reach Alertmanager.
        assert_eq!(
            doc["alerting"]["alert_relabel_configs"][0]["regex"],
            "runbook_base"
        );
        assert_eq!(
            doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:19093"
        );
        // Every written dashboard carries both provisioned values.
        let out = tempfile::tempdir().unwrap();
        let assets = Assets::new(env!("CARGO_MANIFEST_DIR")).unwrap();
        let endpoints = Endpoints {
            runbooks: "https://runbooks.example/ml".into(),
            ..endpoints()
        };
        write(
            &assets,
            out.path(),
            &endpoints,
            "http://x/a",
            &Timing::default(),
        )
        .unwrap();
        let dir = out.path().join("grafana/dashboards");
        let mut checked = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(file.unwrap().path()).unwrap())
                    .unwrap();
            let value = |name: &str| {
                doc["templating"]["list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == name)
                    .map(|v| v["current"]["value"].clone())
            };
            assert_eq!(
                value("runbook_base"),
                Some("https://runbooks.example/ml".into())
            );
            assert_eq!(value("mlflow_url"), Some("http://127.0.0.1:15000".into()));
            checked += 1;
        }
        assert!(checked >= 2, "dashboards written: {checked}");
    }

    #[test]
    fn written_paths_are_absolute_even_from_a_relative_directory() {
        let relative = PathBuf::from(format!("target/config-test-{}", std::process::id()));
        let assets = Assets::new(".").unwrap();
        assert!(assets.root.is_absolute());
        let written = write(
            &assets,
            &relative,
            &endpoints(),
            "http://127.0.0.1:1/alerts",
            &Timing::default(),
        )
        .unwrap();
        let doc: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&written.prometheus_yml).unwrap())
                .unwrap();
        let glob = doc["rule_files"][0].as_str().unwrap();
        assert!(
            Path::new(glob).is_absolute(),
            "rule glob {glob} must be absolute"
        );
        let rules = std::fs::read_dir(Path::new(glob).parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(rules, assets.rule_files().unwrap().len());
        std::fs::remove_dir_all(&relative).unwrap();
    }
}
