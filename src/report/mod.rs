//! `mlwatch report`: the provisioned Grafana dashboards rendered into one
//! static HTML file, for whoever has Prometheus but no Grafana.
//!
//! The report is a renderer, not a second dashboard: it reads every JSON
//! file under `grafana/provisioning/dashboards/`, expands each panel's own
//! expressions ([`variables`]), runs them against Prometheus' HTTP API
//! ([`crate::prometheus_api`]) over a time window, and draws each panel as an SVG chart
//! ([`panel`], [`chart`]) in a page ([`html`]) that also lists the alerts
//! that fired ([`alerts`]) and the model versions seen. `--svg-dir` writes
//! every chart as its own `.svg` file as well, for the README.

pub mod alerts;
pub mod annotations;
pub mod chart;
pub mod dashboard;
pub mod grafana;
pub mod html;
pub mod panel;
pub mod units;
pub mod variables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};

use self::dashboard::Dashboard;
use self::panel::{AlertData, Context, State, Table, Window};
use self::variables::{promql_duration, Template, Timing};
use crate::prometheus_api::Client;

/// Where the dashboards live below an assets directory.
pub const DASHBOARDS_DIR: &str = "grafana/provisioning/dashboards";
const DATASOURCES_DIR: &str = "grafana/provisioning/datasources";
/// Points Prometheus returns at most per series.
const MAX_POINTS: f64 = 11_000.0;
/// Points per chart when --step is not given.
const POINTS_PER_CHART: u32 = 240;
/// `--prometheus`, `--output` and `--title` when not given.
const DEFAULT_PROMETHEUS: &str = "http://127.0.0.1:9090";
const DEFAULT_OUTPUT: &str = "report.html";
const DEFAULT_TITLE: &str = "mlwatch report";
/// `--since` when not given (the flag's default_value, "30m").
const DEFAULT_SINCE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Prometheus base URL.
    #[arg(long, default_value = DEFAULT_PROMETHEUS)]
    pub prometheus: String,

    /// Directory containing grafana/provisioning/dashboards [default: the
    /// repository around the current directory, else <exe>/../share/mlwatch].
    #[arg(long, value_name = "DIR")]
    pub assets: Option<PathBuf>,

    /// Report the last DURATION, ending now (or at --end): 30m, 2h, 1d.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    pub since: Duration,

    /// Start of the window, RFC 3339 in UTC (2025-01-31T14:00:00Z); overrides --since.
    #[arg(long, value_name = "RFC3339", value_parser = humantime::parse_rfc3339_weak)]
    pub start: Option<SystemTime>,

    /// End of the window, RFC 3339 in UTC [default: now].
    #[arg(long, value_name = "RFC3339", value_parser = humantime::parse_rfc3339_weak)]
    pub end: Option<SystemTime>,

    /// Query step [default: the window / 240, at least 1s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub step: Option<Duration>,

    /// The HTML file to write.
    #[arg(long, short, value_name = "PATH", default_value = DEFAULT_OUTPUT)]
    pub output: PathBuf,

    /// Also write each chart, titled, as DIR/<dashboard uid>/<panel title>.svg.
    #[arg(long, value_name = "DIR")]
    pub svg_dir: Option<PathBuf>,

    /// A template variable as a regex, e.g. --var instance=127.0.0.1:9000
    /// (repeatable; unset variables are All, `.*`).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,

    /// Title of the page.
    #[arg(long, default_value = DEFAULT_TITLE)]
    pub title: String,
}

/// Everything a report needs; [`ReportConfig::new`] gives the CLI's
/// defaults, and [`ReportArgs`] converts into it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// Prometheus base URL.
    pub prometheus: String,
    /// Directory holding grafana/provisioning/dashboards; `None`: discovered.
    pub assets: Option<PathBuf>,
    /// The window's length when `start` is not given.
    pub since: Duration,
    /// Start of the window; overrides `since`.
    pub start: Option<SystemTime>,
    /// End of the window; `None`: now.
    pub end: Option<SystemTime>,
    /// Query step; `None`: the window / 240, at least 1 s.
    pub step: Option<Duration>,
    /// The HTML file to write.
    pub output: PathBuf,
    /// Also write each chart as DIR/<dashboard uid>/<panel title>.svg.
    pub svg_dir: Option<PathBuf>,
    /// Template variables as (name, regex); unset variables are All.
    pub vars: Vec<(String, String)>,
    /// Title of the page.
    pub title: String,
}

impl ReportConfig {
    pub fn new(prometheus: impl Into<String>) -> Self {
        Self {
            prometheus: prometheus.into(),
            assets: None,
            since: DEFAULT_SINCE,
            start: None,
            end: None,
            step: None,
            output: PathBuf::from(DEFAULT_OUTPUT),
            svg_dir: None,
            vars: Vec::new(),
            title: DEFAULT_TITLE.to_owned(),
        }
    }
}

impl From<ReportArgs> for ReportConfig {
    fn from(args: ReportArgs) -> Self {
        Self {
            prometheus: args.prometheus,
            assets: args.assets,
            since: args.since,
            start: args.start,
            end: args.end,
            step: args.step,
            output: args.output,
            svg_dir: args.svg_dir,
            vars: args.vars,
            title: args.title,
        }
    }
}

fn parse_var(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((
            name.trim().trim_start_matches('$').to_owned(),
            value.to_owned(),
        )),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// Unix seconds, as RFC 3339 (UTC, whole seconds).
pub fn rfc3339(t: f64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_seconds(time).to_string()
}

fn unix(t: SystemTime) -> anyhow::Result<f64> {
    Ok(t.duration_since(UNIX_EPOCH)
        .context("a time before 1970")?
        .as_secs_f64())
}

/// The window and step the arguments ask for.
pub fn window(config: &ReportConfig, now: SystemTime) -> anyhow::Result<Window> {
    let end = config.end.unwrap_or(now);
    let start = match config.start {
        Some(start) => start,
        None => end
            .checked_sub(config.since)
            .context("--since reaches before 1970")?,
    };
    let range = end
        .duration_since(start)
        .ok()
        .filter(|r| !r.is_zero())
        .context("the window is empty: --start must be before --end")?;
    let step = config
        .step
        .unwrap_or_else(|| {
            Duration::from_millis((range.as_millis() / POINTS_PER_CHART as u128) as u64)
        })
        .max(Duration::from_secs(1));
    if range.as_secs_f64() / step.as_secs_f64() > MAX_POINTS {
        bail!(
            "--step {} gives more than {MAX_POINTS} points over {}: Prometheus refuses that; use a larger step",
            humantime::format_duration(step),
            humantime::format_duration(range)
        );
    }
    Ok(Window {
        start: unix(start)?,
        end: unix(end)?,
        step: step.as_secs_f64(),
    })
}

/// Where prometheus/ and grafana/ are: the one discovery that `up` and
/// `demo` use too.
fn find_assets(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(crate::stack::config::Assets::discover(explicit)?.root)
}

/// A datasource provisioning file, as far as [`scrape_interval`] reads it
/// (the rest of a datasource's settings do not concern the report).
#[derive(serde::Deserialize)]
struct DatasourcesFile {
    #[serde(default)]
    datasources: Vec<DatasourceYaml>,
}

#[derive(serde::Deserialize)]
struct DatasourceYaml {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default, rename = "jsonData")]
    json_data: DatasourceJsonData,
}

#[derive(Default, serde::Deserialize)]
struct DatasourceJsonData {
    #[serde(rename = "timeInterval")]
    time_interval: Option<String>,
}

/// The Prometheus datasource's `timeInterval` (Grafana's scrape-interval
/// floor), 15s when the provisioning files do not set one.
pub fn scrape_interval(assets: &Path) -> Duration {
    let fallback = Duration::from_secs(15);
    let Ok(entries) = std::fs::read_dir(assets.join(DATASOURCES_DIR)) else {
        return fallback;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let Ok(doc) = serde_yaml::from_str::<DatasourcesFile>(&text) else {
            continue;
        };
        for ds in doc.datasources {
            if ds.kind.as_deref() != Some("prometheus") {
                continue;
            }
            if let Some(d) = ds
                .json_data
                .time_interval
                .and_then(|t| humantime::parse_duration(&t).ok())
            {
                return d;
            }
        }
    }
    fallback
}

/// `--var` values, checked against the variables the dashboards define.
fn chosen_variables(
    vars: &[(String, String)],
    dashboards: &[Dashboard],
) -> anyhow::Result<BTreeMap<String, String>> {
    let known: BTreeSet<&str> = dashboards
        .iter()
        .flat_map(|d| d.variables.iter().map(|(n, _)| n.as_str()))
        .collect();
    let mut chosen = BTreeMap::new();
    for (name, value) in vars {
        if !known.contains(name.as_str()) {
            bail!(
                "--var {name}: the dashboards define no such variable (they define: {})",
                known.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        chosen.insert(name.clone(), value.clone());
    }
    Ok(chosen)
}

/// Labels of every series of `metric` seen in the window, as a table.
async fn label_table(client: &Client, metric: &str, window: Window) -> anyhow::Result<Table> {
    let range = Duration::from_secs_f64(window.end - window.start);
    let expr = format!("last_over_time({metric}[{}])", promql_duration(range));
    let samples = client.query(&expr, window.end).await?;
    let mut columns: Vec<String> = samples
        .iter()
        .flat_map(|s| s.labels.keys().cloned())
        .filter(|k| k != "__name__")
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let first = ["model_version", "algorithm", "instance"];
    columns.sort_by_key(|c| first.iter().position(|f| f == c).unwrap_or(first.len()));
    let mut rows: Vec<Vec<String>> = samples
        .iter()
        .map(|s| {
            columns
                .iter()
                .map(|c| s.labels.get(c).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    rows.sort();
    Ok(Table { columns, rows })
}

/// `mlwatch report`: [`write()`] with the command line's config.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    write(&ReportConfig::from(args)).await
}

/// Queries Prometheus over the window, writes the HTML report (and the SVG
/// charts, when asked) and prints what it wrote. What `mlwatch report` and
/// `mlwatch demo` run.
pub async fn write(config: &ReportConfig) -> anyhow::Result<()> {
    let assets = find_assets(config.assets.as_deref())?;
    let dashboards = dashboard::load_dir(&assets.join(DASHBOARDS_DIR))?;
    let chosen = chosen_variables(&config.vars, &dashboards)?;
    let now = SystemTime::now();
    let window = window(config, now)?;
    let scrape = scrape_interval(&assets);
    let client = Client::new(&config.prometheus)?;
    // Fail early, and clearly, when Prometheus is not there.
    client.query("1", window.end).await?;

    let range = window.end - window.start;
    let alert_step = (range / 10_000.0).max(1.0).ceil();
    let alert_series = client
        .query_range(alerts::ALERTS_QUERY, window.start, window.end, alert_step)
        .await?;
    let alert_data = AlertData {
        intervals: alerts::intervals(&alert_series, alert_step, window.start, window.end),
        step: alert_step,
        current: client.alerts().await?,
    };

    let timing = Timing {
        step: Duration::from_secs_f64(window.step),
        range: Duration::from_secs_f64(range),
        scrape,
    };
    let mut rendered = Vec::new();
    let mut annotation_events = BTreeMap::new();
    for d in &dashboards {
        let template = Template::new(&d.variables, &chosen, timing);
        let events = annotations::events(&client, &template, window, &d.annotations)
            .await
            .with_context(|| d.title.clone())?;
        let markers = annotations::markers(&events);
        let ctx = Context {
            client: &client,
            template: &template,
            window,
            alerts: &alert_data,
            standalone: config.svg_dir.is_some(),
            markers: &markers,
        };
        // A dashboard's panels are queried concurrently, as Grafana does.
        let all: Vec<&dashboard::Panel> = d.sections.iter().flat_map(|s| &s.panels).collect();
        let results = futures_util::future::join_all(all.iter().map(|p| ctx.render(p))).await;
        let mut results = results.into_iter().zip(&all);
        let mut sections = Vec::new();
        for section in &d.sections {
            let mut panels = Vec::new();
            for (r, p) in results.by_ref().take(section.panels.len()) {
                let r = r.with_context(|| format!("{}: panel {:?}", d.title, p.title))?;
                for e in &r.errors {
                    tracing::warn!("{}: panel {:?}: {e}", d.title, p.title);
                }
                panels.push(r);
            }
            sections.push(panels);
        }
        annotation_events.insert(d.uid.clone(), events);
        rendered.push((d, sections));
    }

    let models = vec![
        (
            "Serving (model_info)".to_owned(),
            label_table(&client, "model_info", window).await?,
            "No service reported a model in this range.".to_owned(),
        ),
        (
            "Training (training_model_info)".to_owned(),
            label_table(&client, "training_model_info", window).await?,
            "No training run finished in this range.".to_owned(),
        ),
    ];

    let page = html::Page {
        title: &config.title,
        prometheus: client.url(),
        window,
        variables: &chosen,
        generated_at: unix(now)?,
        dashboards: rendered,
        alerts: &alert_data,
        models,
        annotations: &annotation_events,
    };
    let text = html::page(&page);
    if let Some(parent) = config.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&config.output, text)
        .with_context(|| format!("cannot write {}", config.output.display()))?;

    let mut panels = 0;
    let mut empty = Vec::new();
    let mut failed = Vec::new();
    let mut svgs = 0;
    for (d, sections) in &page.dashboards {
        let mut used = BTreeSet::new();
        for (section, rendered) in d.sections.iter().zip(sections) {
            for (p, r) in section.panels.iter().zip(rendered) {
                panels += 1;
                match r.state {
                    State::Data => {}
                    State::Empty => empty.push(p.title.clone()),
                    State::Error => failed.push(p.title.clone()),
                }
                if let (Some(dir), Some(svg)) = (&config.svg_dir, &r.standalone) {
                    let dir = dir.join(&d.uid);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let mut name = p.slug();
                    if !used.insert(name.clone()) {
                        name = format!("{name}-{}", p.id);
                        used.insert(name.clone());
                    }
                    let path = dir.join(format!("{name}.svg"));
                    std::fs::write(&path, svg)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    svgs += 1;
                }
            }
        }
    }
    let fired = alert_data
        .intervals
        .iter()
        .filter(|i| i.state == "firing")
        .map(|i| i.alertname.as_str())
        .collect::<BTreeSet<_>>();
    println!(
        "wrote {}: {panels} panels from {} dashboards, {} → {}",
        config.output.display(),
        page.dashboards.len(),
        rfc3339(window.start),
        rfc3339(window.end)
    );
    if !empty.is_empty() {
        println!("  without data: {}", empty.join("; "));
    }
    if !failed.is_empty() {
        println!("  query errors: {}", failed.join("; "));
    }
    println!(
        "  alerts fired: {}",
        if fired.is_empty() {
            "none".to_owned()
        } else {
            fired.into_iter().collect::<Vec<_>>().join(", ")
        }
    );
    if let Some(dir) = &config.svg_dir {
        println!("  wrote {svgs} SVG charts under {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReportArgs,
    }

    fn args(argv: &[&str]) -> ReportConfig {
        Cli::try_parse_from(std::iter::once("report").chain(argv.iter().copied()))
            .unwrap()
            .args
            .into()
    }

    #[test]
    fn the_config_defaults_are_the_command_line_defaults() {
        assert_eq!(args(&[]), ReportConfig::new(DEFAULT_PROMETHEUS));
        assert_eq!(args(&["--since", "30m"]).since, DEFAULT_SINCE);
    }

    #[test]
    fn default_window_is_the_last_30_minutes_in_240_steps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let w = window(&args(&[]), now).unwrap();
        assert_eq!((w.start, w.end), (1_699_998_200.0, 1_700_000_000.0));
        assert_eq!(w.step, 7.5);
        let w = window(&args(&["--since", "1m"]), now).unwrap();
        assert_eq!(w.step, 1.0, "at least one second");
    }

    #[test]
    fn start_and_end_override_since() {
        let a = args(&[
            "--start",
            "2025-01-31T14:00:00Z",
            "--end",
            "2025-01-31T16:00:00Z",
            "--step",
            "1m",
        ]);
        let w = window(&a, SystemTime::now()).unwrap();
        assert_eq!(w.end - w.start, 7200.0);
        assert_eq!(w.step, 60.0);
        let backwards = args(&[
            "--start",
            "2025-01-31T16:00:00Z",
            "--end",
            "2025-01-31T14:00:00Z",
        ]);
        assert!(window(&backwards, SystemTime::now()).is_err());
        let too_fine = args(&["--since", "30d", "--step", "1s"]);
        assert!(window(&too_fine, SystemTime::now()).is_err());
    }

    #[test]
    fn vars_parse_and_are_checked_against_the_dashboards() {
        let a = args(&[
            "--var",
            "instance=127.0.0.1:9000",
            "--var",
            "$model_version=v1|v2",
        ]);
        assert_eq!(
            a.vars,
            vec![
                ("instance".to_owned(), "127.0.0.1:9000".to_owned()),
                ("model_version".to_owned(), "v1|v2".to_owned())
            ]
        );
        assert!(Cli::try_parse_from(["report", "--var", "novalue"]).is_err());
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dashboards = dashboard::load_dir(&repo.join(DASHBOARDS_DIR)).unwrap();
        assert!(chosen_variables(&a.vars, &dashboards).is_ok());
        let err = chosen_variables(&[("nope".into(), "x".into())], &dashboards).unwrap_err();
        assert!(err.to_string().contains("instance"), "{err}");
    }

    #[test]
    fn repository_assets_and_datasource_interval() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(find_assets(Some(repo)).unwrap(), repo);
        assert!(find_assets(Some(&repo.join("src"))).is_err());
        assert_eq!(scrape_interval(repo), Duration::from_secs(5));
        assert_eq!(scrape_interval(&repo.join("src")), Duration::from_secs(15));
    }

    #[test]
    fn provisioned_dashboards_parse_with_every_panel_targeted() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dashboards = dashboard::load_dir(&repo.join(DASHBOARDS_DIR)).unwrap();
        assert!(dashboards.len() >= 2);
        for d in &dashboards {
            for p in d.sections.iter().flat_map(|s| &s.panels) {
                let needs_targets = !matches!(
                    p.kind,
                    dashboard::PanelKind::AlertList { .. } | dashboard::PanelKind::Text { .. }
                );
                assert!(
                    !needs_targets || !p.targets.is_empty(),
                    "{}: {} has no targets",
                    d.title,
                    p.title
                );
            }
        }
    }
}
