//! The provisioned Grafana dashboards, read as the report needs them.
//!
//! Each JSON file under `grafana/provisioning/dashboards/` becomes a
//! [`Dashboard`]: its template variables, and its rows as [`Section`]s
//! holding [`Panel`]s in the order Grafana shows them (panels nested in
//! collapsed rows included). A panel keeps what rendering needs: type, title,
//! description, width, unit, thresholds, value mappings, overrides, targets
//! with their legend formats, and the type-specific options. Nothing here
//! knows which panels exist; the JSON is the only list.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::prometheus_api::Labels;

#[derive(Debug, Clone)]
pub struct Dashboard {
    pub file: PathBuf,
    pub uid: String,
    pub title: String,
    pub description: String,
    /// (name, "All" value) of each template variable.
    pub variables: Vec<(String, Option<String>)>,
    pub sections: Vec<Section>,
    /// The dashboard's annotation queries, drawn as markers on its time
    /// series and listed under its title.
    pub annotations: Vec<Annotation>,
}

/// A Prometheus annotation query (the only kind the report can run).
#[derive(Debug, Clone)]
pub struct Annotation {
    pub name: String,
    pub color: String,
    pub expr: String,
    /// Query step in seconds (the annotation's `target.interval`).
    pub step: f64,
    pub title_format: String,
    pub text_format: String,
}

/// A dashboard row (or the panels above the first row, untitled).
#[derive(Debug, Clone)]
pub struct Section {
    pub title: Option<String>,
    pub description: String,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PanelKind {
    TimeSeries,
    Stat,
    Gauge,
    BarGauge,
    Table,
    Heatmap,
    AlertList,
    Text,
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub id: i64,
    pub kind: PanelKind,
    pub title: String,
    pub description: String,
    /// Width in Grafana's 24-column grid, and height in grid units.
    pub width: u32,
    pub height: u32,
    pub field: FieldConfig,
    pub overrides: Vec<Override>,
    pub targets: Vec<Target>,
    /// (title, url) of the panel links (runbooks).
    pub links: Vec<(String, String)>,
    /// The panel's `options`, for type-specific settings.
    pub options: Value,
    pub transformations: Vec<Value>,
    /// Settings the report cannot render; [`parse`] refuses the dashboard.
    pub unsupported: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub ref_id: String,
    pub expr: String,
    pub legend_format: Option<String>,
    pub instant: bool,
    /// `time_series` (default), `table` or `heatmap`.
    pub format: String,
}

/// Absolute threshold steps; the first step's value is None (the base).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    pub steps: Vec<(Option<f64>, String)>,
}

impl Thresholds {
    /// Colour of the step `value` falls in.
    pub fn color_for(&self, value: f64) -> Option<&str> {
        let mut color = None;
        for (limit, c) in &self.steps {
            match limit {
                None => color = Some(c.as_str()),
                Some(l) if value >= *l => color = Some(c.as_str()),
                _ => {}
            }
        }
        color
    }

    /// The (value, colour) of every step above the base.
    pub fn lines(&self) -> impl Iterator<Item = (f64, &str)> {
        self.steps
            .iter()
            .filter_map(|(v, c)| v.map(|v| (v, c.as_str())))
    }
}

/// A value mapping: an exact value or a range shown as text (and colour).
#[derive(Debug, Clone, PartialEq)]
pub enum Mapping {
    Value {
        value: f64,
        text: String,
        color: Option<String>,
    },
    Range {
        from: Option<f64>,
        to: Option<f64>,
        text: String,
        color: Option<String>,
    },
}

/// Field settings of a panel's defaults, or of one series after overrides.
#[derive(Debug, Clone, Default)]
pub struct FieldConfig {
    pub unit: String,
    pub decimals: Option<u32>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub no_value: Option<String>,
    pub thresholds: Thresholds,
    pub mappings: Vec<Mapping>,
    /// A fixed series colour.
    pub color: Option<String>,
    pub axis_right: bool,
    pub dashed: bool,
    pub stacked: bool,
    /// `custom.thresholdsStyle.mode` is `off`.
    pub thresholds_hidden: bool,
}

impl FieldConfig {
    /// The mapped text and colour of `value`, if a mapping matches.
    pub fn mapping(&self, value: f64) -> Option<(&str, Option<&str>)> {
        self.mappings.iter().find_map(|m| match m {
            Mapping::Value {
                value: v,
                text,
                color,
            } if *v == value => Some((text.as_str(), color.as_deref())),
            Mapping::Range {
                from,
                to,
                text,
                color,
            } if from.is_none_or(|f| value >= f) && to.is_none_or(|t| value <= t) => {
                Some((text.as_str(), color.as_deref()))
            }
            _ => None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Matcher {
    ByName(String),
    ByRegexp(String),
}

#[derive(Debug, Clone)]
pub struct Override {
    pub matcher: Matcher,
    pub properties: Vec<(String, Value)>,
}

impl Override {
    pub fn matches(&self, name: &str) -> bool {
        match &self.matcher {
            Matcher::ByName(n) => n == name,
            Matcher::ByRegexp(pattern) => regex_match(pattern, name).unwrap_or(false),
        }
    }
}

impl Panel {
    /// The field config of the series called `name`, overrides applied.
    pub fn field_for(&self, name: &str) -> FieldConfig {
        let mut field = self.field.clone();
        for o in self.overrides.iter().filter(|o| o.matches(name)) {
            for (id, value) in &o.properties {
                apply_property(&mut field, id, value);
            }
        }
        field
    }

    /// A file-name-safe slug of the title.
    pub fn slug(&self) -> String {
        let mut slug = String::new();
        for c in self.title.to_lowercase().chars() {
            let c = match c {
                '²' => '2',
                '³' => '3',
                c => c,
            };
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.ends_with('-') && !slug.is_empty() {
                slug.push('-');
            }
        }
        let slug = slug.trim_end_matches('-').to_owned();
        if slug.is_empty() {
            format!("panel-{}", self.id)
        } else {
            slug
        }
    }
}

/// Every `*.json` dashboard in `dir`, sorted by file name.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Dashboard>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the dashboards in {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no dashboard JSON files in {}", dir.display());
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let json: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            parse(file, &json)
        })
        .collect()
}

/// A dashboard from its JSON model.
pub fn parse(file: &Path, json: &Value) -> anyhow::Result<Dashboard> {
    let panels = json["panels"]
        .as_array()
        .with_context(|| format!("{}: no \"panels\" list", file.display()))?;
    let mut sections: Vec<Section> = Vec::new();
    for p in panels {
        if p["type"] == "row" {
            let nested = p["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            sections.push(Section {
                title: Some(text(&p["title"])),
                description: text(&p["description"]),
                panels: nested.iter().map(parse_panel).collect(),
            });
        } else {
            if sections.is_empty() {
                sections.push(Section {
                    title: None,
                    description: String::new(),
                    panels: Vec::new(),
                });
            }
            if let Some(section) = sections.last_mut() {
                section.panels.push(parse_panel(p));
            }
        }
    }
    let variables = json["templating"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|v| variable(file, v))
        .collect::<anyhow::Result<_>>()?;
    // Links as Grafana would open them: `${runbook_base}` and the other
    // dashboard-wide values filled in (per-row `${__data…}` stays).
    let variables: Vec<(String, Option<String>)> = variables;
    for panel in sections.iter_mut().flat_map(|s| s.panels.iter_mut()) {
        for (_, url) in &mut panel.links {
            for (name, value) in &variables {
                if let Some(value) = value {
                    *url = url.replace(&format!("${{{name}}}"), value);
                }
            }
        }
    }
    let unsupported: Vec<String> = sections
        .iter()
        .flat_map(|s| &s.panels)
        .flat_map(|p| {
            p.unsupported
                .iter()
                .map(move |u| format!("panel {:?}: {u}", p.title))
        })
        .collect();
    if !unsupported.is_empty() {
        bail!(
            "{}: mlwatch report cannot render:\n  {}",
            file.display(),
            unsupported.join("\n  ")
        );
    }
    let annotations = json["annotations"]["list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|a| a["enable"] != false)
        .map(|a| annotation(file, a))
        .collect::<anyhow::Result<_>>()?;
    Ok(Dashboard {
        annotations,
        file: file.to_owned(),
        uid: json["uid"].as_str().map(str::to_owned).unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        title: text(&json["title"]),
        description: text(&json["description"]),
        variables,
        sections,
    })
}

/// (name, value when nothing is chosen) of a template variable: the "All"
/// value of a multi-select, the default of a single-select (Grafana opens
/// the dashboard on it), the value of a constant or textbox. Any other kind
/// of variable is an error, not a query with `$name` left in it.
fn variable(file: &Path, v: &Value) -> anyhow::Result<(String, Option<String>)> {
    let name = v["name"]
        .as_str()
        .with_context(|| format!("{}: a variable without a name", file.display()))?
        .to_owned();
    let current = v["current"]["value"].as_str().map(str::to_owned);
    let value = match v["type"].as_str().unwrap_or("query") {
        "query" if v["includeAll"] == true => v["allValue"].as_str().map(str::to_owned),
        "query" | "datasource" => current,
        "constant" | "textbox" => v["query"].as_str().map(str::to_owned),
        other => bail!(
            "{}: variable {name} has type {other}, which mlwatch report does not expand",
            file.display()
        ),
    };
    Ok((name, value))
}

/// An enabled annotation; anything but a Prometheus query is an error
/// (the report has no Grafana to ask for built-in annotations).
fn annotation(file: &Path, a: &Value) -> anyhow::Result<Annotation> {
    let name = text(&a["name"]);
    let expr = a["target"]["expr"].as_str().or(a["expr"].as_str());
    let (true, Some(expr)) = (a["datasource"]["type"] == "prometheus", expr) else {
        bail!(
            "{}: annotation {name:?} is not a Prometheus query; mlwatch report cannot draw it",
            file.display()
        );
    };
    let step = a["target"]["interval"]
        .as_str()
        .or(a["step"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("60s");
    let step = humantime::parse_duration(step)
        .with_context(|| format!("{}: annotation {name:?}: step {step:?}", file.display()))?
        .as_secs_f64()
        .max(1.0);
    Ok(Annotation {
        name,
        color: a["iconColor"].as_str().unwrap_or("red").to_owned(),
        expr: expr.to_owned(),
        step,
        title_format: text(&a["titleFormat"]),
        text_format: text(&a["textFormat"]),
    })
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn parse_panel(p: &Value) -> Panel {
    let kind = match p["type"].as_str().unwrap_or_default() {
        "timeseries" | "graph" => PanelKind::TimeSeries,
        "stat" | "singlestat" => PanelKind::Stat,
        "gauge" => PanelKind::Gauge,
        "bargauge" => PanelKind::BarGauge,
        "table" => PanelKind::Table,
        "heatmap" => PanelKind::Heatmap,
        "alertlist" => PanelKind::AlertList,
        "text" => PanelKind::Text,
        other => PanelKind::Other(other.to_owned()),
    };
    let defaults = &p["fieldConfig"]["defaults"];
    let mut field = FieldConfig {
        unit: text(&defaults["unit"]),
        no_value: defaults["noValue"].as_str().map(str::to_owned),
        ..FieldConfig::default()
    };
    if let Some(obj) = defaults.as_object() {
        for (key, value) in obj {
            apply_property(&mut field, key, value);
        }
    }
    if let Some(custom) = defaults["custom"].as_object() {
        for (key, value) in custom {
            apply_property(&mut field, &format!("custom.{key}"), value);
        }
    }
    // Anything the report would otherwise drop without a word.
    let mut unsupported = Vec::new();
    if let PanelKind::Other(kind) = &kind {
        unsupported.push(format!("panel type {kind}"));
    }
    for t in p["transformations"].as_array().into_iter().flatten() {
        let id = t["id"].as_str().unwrap_or("?");
        if !matches!(id, "organize" | "sortBy") {
            unsupported.push(format!("transformation {id}"));
        }
    }
    if let Some(calc) = p["options"]["reduceOptions"]["calcs"][0].as_str() {
        if !matches!(
            calc,
            "last" | "lastNotNull" | "mean" | "max" | "min" | "sum" | "first" | "firstNotNull"
        ) {
            unsupported.push(format!("reducer {calc}"));
        }
    }
    for m in defaults["mappings"].as_array().into_iter().flatten() {
        let kind = m["type"].as_str().unwrap_or("?");
        if !matches!(kind, "value" | "range") {
            unsupported.push(format!("value mapping of type {kind}"));
        }
    }
    let overrides = p["fieldConfig"]["overrides"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter_map(|o| {
            let options = o["matcher"]["options"].as_str()?.to_owned();
            let matcher = match o["matcher"]["id"].as_str()? {
                "byName" => Matcher::ByName(options),
                "byRegexp" if regex_match(&options, "").is_some() => Matcher::ByRegexp(options),
                other => {
                    unsupported.push(format!("override matcher {other} {options:?}"));
                    return None;
                }
            };
            let properties = o["properties"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
                .iter()
                .filter_map(|prop| Some((prop["id"].as_str()?.to_owned(), prop["value"].clone())))
                .collect();
            Some(Override {
                matcher,
                properties,
            })
        })
        .collect();
    let targets = p["targets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .filter(|t| t["hide"] != true)
        .filter_map(|t| {
            let expr = t["expr"].as_str()?.trim();
            (!expr.is_empty()).then(|| Target {
                ref_id: text(&t["refId"]),
                expr: expr.to_owned(),
                legend_format: t["legendFormat"].as_str().map(str::to_owned),
                instant: t["instant"] == true && t["range"] != true,
                format: t["format"].as_str().unwrap_or("time_series").to_owned(),
            })
        })
        .collect();
    // Panel links, then data links (per row or point, e.g. the MLflow run
    // of a model_info row): the page lists both, with their URL templates.
    let links = p["links"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(defaults["links"].as_array().into_iter().flatten())
        .filter_map(|l| Some((text(&l["title"]), l["url"].as_str()?.to_owned())))
        .collect();
    Panel {
        id: p["id"].as_i64().unwrap_or_default(),
        kind,
        title: p["title"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or("(untitled)")
            .to_owned(),
        description: text(&p["description"]),
        width: p["gridPos"]["w"].as_u64().unwrap_or(12).clamp(1, 24) as u32,
        height: p["gridPos"]["h"].as_u64().unwrap_or(8).clamp(1, 40) as u32,
        field,
        overrides,
        targets,
        links,
        options: p["options"].clone(),
        transformations: p["transformations"].as_array().cloned().unwrap_or_default(),
        unsupported,
    }
}

fn apply_property(field: &mut FieldConfig, id: &str, value: &Value) {
    match id {
        "unit" => field.unit = text(value),
        "decimals" => field.decimals = value.as_u64().map(|d| d.min(10) as u32),
        "min" => field.min = value.as_f64(),
        "max" => field.max = value.as_f64(),
        "noValue" => field.no_value = value.as_str().map(str::to_owned),
        "thresholds" => field.thresholds = parse_thresholds(value),
        "mappings" => field.mappings = parse_mappings(value),
        "color" if value["mode"] == "fixed" => {
            field.color = value["fixedColor"].as_str().map(str::to_owned)
        }
        "custom.axisPlacement" => field.axis_right = value == "right",
        "custom.lineStyle" => field.dashed = value["fill"] == "dash" || value["fill"] == "dot",
        "custom.stacking" => {
            field.stacked = value["mode"] == "normal" || value["mode"] == "percent"
        }
        "custom.thresholdsStyle" => field.thresholds_hidden = value["mode"] == "off",
        _ => {}
    }
}

fn parse_thresholds(value: &Value) -> Thresholds {
    let steps = value["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .map(|s| (s["value"].as_f64(), text(&s["color"])))
        .collect();
    Thresholds { steps }
}

fn parse_mappings(value: &Value) -> Vec<Mapping> {
    let mut out = Vec::new();
    for m in value.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        match m["type"].as_str() {
            Some("value") => {
                for (key, result) in m["options"].as_object().into_iter().flatten() {
                    if let Ok(v) = key.parse::<f64>() {
                        out.push(Mapping::Value {
                            value: v,
                            text: text(&result["text"]),
                            color: result["color"].as_str().map(str::to_owned),
                        });
                    }
                }
            }
            Some("range") => {
                let o = &m["options"];
                out.push(Mapping::Range {
                    from: o["from"].as_f64(),
                    to: o["to"].as_f64(),
                    text: text(&o["result"]["text"]),
                    color: o["result"]["color"].as_str().map(str::to_owned),
                });
            }
            _ => {}
        }
    }
    out
}

/// The legend of a series: `{{label}}` in the target's legendFormat replaced
/// by the label's value (empty when absent); without a legendFormat,
/// Grafana's default `name{label="value", ...}`.
pub fn legend(format: Option<&str>, labels: &Labels, expr: &str) -> String {
    match format {
        Some(f) if !f.is_empty() && f != "__auto" => {
            let mut out = String::new();
            let mut rest = f;
            while let Some(open) = rest.find("{{") {
                out.push_str(&rest[..open]);
                let after = &rest[open + 2..];
                match after.find("}}") {
                    Some(close) => {
                        let name = after[..close].trim();
                        out.push_str(labels.get(name).map(String::as_str).unwrap_or(""));
                        rest = &after[close + 2..];
                    }
                    None => {
                        out.push_str(&rest[open..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            out
        }
        _ => {
            let name = labels.get("__name__").cloned().unwrap_or_default();
            let rest: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            match (name.is_empty(), rest.is_empty()) {
                (true, true) => expr.to_owned(),
                (_, true) => name,
                _ => format!("{name}{{{}}}", rest.join(", ")),
            }
        }
    }
}

/// A JavaScript-style regex (`/^MSE /` or `^MSE `, Grafana's byRegexp
/// matcher) matched against `text`, with the `regex` crate; None when the
/// pattern does not compile (the caller reports it).
pub fn regex_match(pattern: &str, text: &str) -> Option<bool> {
    let source = match pattern.strip_prefix('/') {
        Some(rest) => &rest[..rest.rfind('/')?],
        None => pattern,
    };
    regex::Regex::new(source).ok().map(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn legend_substitutes_labels_and_blanks_missing_ones() {
        let l = labels(&[("split", "validation"), ("instance", "127.0.0.1:8002")]);
        assert_eq!(
            legend(Some("{{split}} · {{instance}}"), &l, "x"),
            "validation · 127.0.0.1:8002"
        );
        assert_eq!(legend(Some("MSE {{ split }}"), &l, "x"), "MSE validation");
        assert_eq!(legend(Some("{{missing}}!"), &l, "x"), "!");
        assert_eq!(legend(Some("open {{split"), &l, "x"), "open {{split");
    }

    #[test]
    fn legend_defaults_to_name_and_labels() {
        let l = labels(&[("__name__", "up"), ("job", "ml-api")]);
        assert_eq!(legend(None, &l, "up"), "up{job=\"ml-api\"}");
        assert_eq!(
            legend(Some("__auto"), &labels(&[]), "vector(0)"),
            "vector(0)"
        );
        assert_eq!(legend(None, &labels(&[("__name__", "up")]), "up"), "up");
    }

    #[test]
    fn slugs_are_file_names() {
        let json = json!({"panels": [
            {"type": "timeseries", "id": 7, "title": "R² by split"},
            {"type": "timeseries", "id": 8, "title": "Error & invalid-input ratio"},
            {"type": "timeseries", "id": 9, "title": "·"}]});
        let d = parse(Path::new("t.json"), &json).unwrap();
        let slugs: Vec<String> = d.sections[0].panels.iter().map(Panel::slug).collect();
        assert_eq!(
            slugs,
            vec!["r2-by-split", "error-invalid-input-ratio", "panel-9"]
        );
    }

    #[test]
    fn javascript_regexes_match_like_grafana() {
        assert_eq!(regex_match("/^MSE /", "MSE train · a"), Some(true));
        assert_eq!(regex_match("/^MSE /", "RMSE train"), Some(false));
        assert_eq!(regex_match("/^capacity/", "capacity · x"), Some(true));
        assert_eq!(regex_match("fill", "a fill b"), Some(true));
        assert_eq!(regex_match("^a.*z$", "abcz"), Some(true));
        assert_eq!(regex_match("^a.*z$", "abczy"), Some(false));
        assert_eq!(regex_match(r"^1\.5$", "1.5"), Some(true));
        assert_eq!(regex_match(r"^1\.5$", "105"), Some(false));
        assert_eq!(
            regex_match("/^(fill|capacity) /", "capacity · x"),
            Some(true)
        );
        assert_eq!(
            regex_match("/[/", "x"),
            None,
            "a broken pattern is reported"
        );
    }

    #[test]
    fn panels_in_rows_and_collapsed_rows_keep_their_order() {
        let json = json!({"uid": "u", "title": "T", "panels": [
            {"type": "stat", "id": 1, "title": "loose"},
            {"type": "row", "id": 2, "title": "Open", "panels": []},
            {"type": "timeseries", "id": 3, "title": "a",
             "targets": [{"refId": "A", "expr": "up", "legendFormat": "{{job}}"},
                         {"refId": "B", "expr": "up", "hide": true}]},
            {"type": "row", "id": 4, "title": "Collapsed", "collapsed": true, "panels": [
                {"type": "table", "id": 5, "title": "b",
                 "targets": [{"refId": "A", "expr": "x", "instant": true, "format": "table"}]}]}
        ]});
        let d = parse(Path::new("t.json"), &json).unwrap();
        let titles: Vec<(Option<String>, Vec<String>)> = d
            .sections
            .iter()
            .map(|s| {
                (
                    s.title.clone(),
                    s.panels.iter().map(|p| p.title.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            titles,
            vec![
                (None, vec!["loose".to_owned()]),
                (Some("Open".into()), vec!["a".to_owned()]),
                (Some("Collapsed".into()), vec!["b".to_owned()]),
            ]
        );
        assert_eq!(
            d.sections[1].panels[0].targets.len(),
            1,
            "hidden target dropped"
        );
        assert!(d.sections[2].panels[0].targets[0].instant);
        assert_eq!(d.sections[2].panels[0].targets[0].format, "table");
    }

    #[test]
    fn overrides_and_mappings_apply_per_series() {
        let json = json!({"panels": [{"type": "timeseries", "id": 1, "title": "t",
            "fieldConfig": {
                "defaults": {"unit": "percentunit", "noValue": "none here",
                    "thresholds": {"mode": "absolute", "steps": [
                        {"color": "green", "value": null}, {"color": "red", "value": 0.1}]},
                    "mappings": [{"type": "value", "options": {"1": {"text": "loaded", "color": "green"}}}],
                    "custom": {"stacking": {"mode": "normal"}}},
                "overrides": [
                    {"matcher": {"id": "byName", "options": "invalid input"},
                     "properties": [{"id": "thresholds", "value": {"steps": [
                        {"color": "green", "value": null}, {"color": "red", "value": 0.2}]}}]},
                    {"matcher": {"id": "byRegexp", "options": "/^MSE /"},
                     "properties": [{"id": "custom.axisPlacement", "value": "right"}]}]}}]});
        let d = parse(Path::new("t.json"), &json).unwrap();
        let p = &d.sections[0].panels[0];
        assert!(p.field.stacked);
        assert_eq!(p.field.no_value.as_deref(), Some("none here"));
        assert_eq!(p.field.thresholds.color_for(0.05), Some("green"));
        assert_eq!(p.field.thresholds.color_for(0.15), Some("red"));
        assert_eq!(
            p.field_for("invalid input").thresholds.color_for(0.15),
            Some("green")
        );
        assert!(p.field_for("MSE train").axis_right);
        assert!(!p.field_for("RMSE train").axis_right);
        assert_eq!(p.field.mapping(1.0), Some(("loaded", Some("green"))));
        assert_eq!(p.field.mapping(0.0), None);
    }

    #[test]
    fn what_the_report_cannot_render_fails_the_dashboard() {
        let json = serde_json::json!({"panels": [{"type": "timeseries", "title": "T",
            "fieldConfig": {"defaults": {}, "overrides": [
                {"matcher": {"id": "byFrameRefID", "options": "A"}, "properties": []}]}}]});
        let err = parse(Path::new("d.json"), &json).unwrap_err().to_string();
        assert!(err.contains("override matcher byFrameRefID"), "{err}");
        let json = serde_json::json!({"panels": [{"type": "table", "title": "T",
            "transformations": [{"id": "merge", "options": {}}],
            "options": {"reduceOptions": {"calcs": ["range"]}}},
            {"type": "piechart", "title": "P"}]});
        let err = parse(Path::new("d.json"), &json).unwrap_err().to_string();
        for what in [
            "transformation merge",
            "reducer range",
            "panel type piechart",
        ] {
            assert!(err.contains(what), "{what}: {err}");
        }
        let json = serde_json::json!({"panels": [], "templating": {"list": [
            {"type": "adhoc", "name": "filters"}]}});
        let err = parse(Path::new("d.json"), &json).unwrap_err().to_string();
        assert!(err.contains("variable filters has type adhoc"), "{err}");
    }

    #[test]
    fn variables_expand_to_what_grafana_opens_the_dashboard_with() {
        let json = serde_json::json!({"panels": [], "templating": {"list": [
            {"type": "query", "name": "job", "includeAll": false, "current": {"value": "ml-api"}},
            {"type": "query", "name": "instance", "includeAll": true, "allValue": ".*"},
            {"type": "constant", "name": "runbook_base", "query": "http://r"},
            {"type": "datasource", "name": "datasource", "current": {"value": "uid"}}]}});
        let d = parse(Path::new("d.json"), &json).unwrap();
        assert_eq!(d.variables[0], ("job".into(), Some("ml-api".into())));
        assert_eq!(d.variables[1], ("instance".into(), Some(".*".into())));
        assert_eq!(
            d.variables[2],
            ("runbook_base".into(), Some("http://r".into()))
        );
        assert_eq!(d.variables[3], ("datasource".into(), Some("uid".into())));
    }
}
