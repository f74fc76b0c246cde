//! The provisioned Grafana dashboards, read as the report needs them.
//!
//! Each JSON file under `grafana/provisioning/dashboards/` is read into
//! the typed JSON model of [`super::grafana`] and becomes a [`Dashboard`]:
//! its template variables, its annotation queries, and its rows as
//! [`Section`]s holding [`Panel`]s in the order Grafana shows them (panels
//! nested in collapsed rows included). A panel keeps what rendering needs:
//! type with its type-specific settings, title, description, width, field
//! config, overrides, targets with their legend formats, links. Anything
//! the report would draw differently from Grafana, or not at all, is
//! refused here with every problem of the dashboard in one message naming
//! the file, the panel and the setting. Nothing here knows which panels
//! exist; the JSON is the only list.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use super::grafana::StateFilter;
use super::grafana::{
    self, AlertListOptions, AnnotationJson, AxisPlacement, BarGaugeOptions, ColorMode,
    CurrentValue, DashboardJson, FieldDefaults, GaugeOptions, Header, HeatmapOptions, LineFill,
    MappingJson, MatcherId, PanelJson, PanelType, Property, ReduceOptions, Reducer, StackingMode,
    StatColorMode, StatOptions, TableOptions, TargetFormat, TextOptions, ThresholdsJson,
    ThresholdsStyleMode, TimeSeriesOptions, Transformation, VariableJson, VariableKind,
    VariableQuery,
};
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

/// A panel's type, with the settings of its `options` the report uses.
#[derive(Debug, Clone)]
pub enum PanelKind {
    TimeSeries,
    Stat {
        reducer: Reducer,
        /// `colorMode: background`: the value's cell is coloured.
        background: bool,
    },
    Gauge {
        reducer: Reducer,
    },
    BarGauge {
        reducer: Reducer,
    },
    Table {
        transformations: Vec<Transformation>,
    },
    Heatmap {
        /// The bucket bounds' unit (`options.yAxis.unit`).
        y_unit: String,
    },
    AlertList {
        states: StateFilter,
        max_items: usize,
    },
    Text {
        content: String,
    },
}

impl PanelKind {
    /// Grafana's name of the type (the page's `data-type`).
    pub fn name(&self) -> &'static str {
        match self {
            PanelKind::TimeSeries => "timeseries",
            PanelKind::Stat { .. } => "stat",
            PanelKind::Gauge { .. } => "gauge",
            PanelKind::BarGauge { .. } => "bargauge",
            PanelKind::Table { .. } => "table",
            PanelKind::Heatmap { .. } => "heatmap",
            PanelKind::AlertList { .. } => "alertlist",
            PanelKind::Text { .. } => "text",
        }
    }

    /// The reducer of a stat, gauge or bar gauge (`reduceOptions.calcs`).
    pub fn reducer(&self) -> Reducer {
        match self {
            PanelKind::Stat { reducer, .. }
            | PanelKind::Gauge { reducer }
            | PanelKind::BarGauge { reducer } => *reducer,
            _ => Reducer::default(),
        }
    }
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
    /// (title, url) of the panel links (runbooks), then of the data links.
    pub links: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub ref_id: String,
    pub expr: String,
    pub legend_format: Option<String>,
    pub instant: bool,
    pub format: TargetFormat,
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

    fn apply(&mut self, change: &FieldChange) {
        match change {
            FieldChange::Unit(unit) => self.unit = unit.clone(),
            FieldChange::Decimals(d) => self.decimals = *d,
            FieldChange::Min(min) => self.min = *min,
            FieldChange::Max(max) => self.max = *max,
            FieldChange::NoValue(text) => self.no_value = text.clone(),
            FieldChange::Thresholds(t) => self.thresholds = t.clone(),
            FieldChange::Mappings(m) => self.mappings = m.clone(),
            FieldChange::Color(c) => self.color = c.clone(),
            FieldChange::AxisRight(right) => self.axis_right = *right,
            FieldChange::Dashed(dashed) => self.dashed = *dashed,
            FieldChange::ThresholdsHidden(hidden) => self.thresholds_hidden = *hidden,
        }
    }
}

/// What one override property sets.
#[derive(Debug, Clone)]
pub enum FieldChange {
    Unit(String),
    Decimals(Option<u32>),
    Min(Option<f64>),
    Max(Option<f64>),
    NoValue(Option<String>),
    Thresholds(Thresholds),
    Mappings(Vec<Mapping>),
    Color(Option<String>),
    AxisRight(bool),
    Dashed(bool),
    ThresholdsHidden(bool),
}

#[derive(Debug, Clone)]
pub enum Matcher {
    ByName(String),
    ByRegexp(String),
}

#[derive(Debug, Clone)]
pub struct Override {
    pub matcher: Matcher,
    pub changes: Vec<FieldChange>,
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
            for change in &o.changes {
                field.apply(change);
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

/// What a dashboard cannot be rendered with, collected so that one
/// message lists all of it.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, at: &str, what: impl std::fmt::Display) {
        self.0.push(format!("{at}: {what}"));
    }

    /// `T` from `value`, or its default after noting why not.
    fn read<T: DeserializeOwned + Default>(&mut self, value: &Value, at: &str) -> T {
        T::deserialize(value).unwrap_or_else(|e| {
            self.add(at, e);
            T::default()
        })
    }
}

/// A dashboard from its JSON model.
pub fn parse(file: &Path, json: &Value) -> anyhow::Result<Dashboard> {
    let d = DashboardJson::deserialize(json)
        .map_err(|e| anyhow!("{}: mlwatch report cannot render it: {e}", file.display()))?;
    let mut problems = Problems::default();
    let mut sections: Vec<Section> = Vec::new();
    for value in &d.panels {
        let Some((p, at)) = read_panel(value, &mut problems) else {
            continue;
        };
        if p.kind == PanelType::Row {
            let mut panels = Vec::new();
            for nested in &p.panels {
                match read_panel(nested, &mut problems) {
                    Some((n, at)) if n.kind == PanelType::Row => {
                        problems.add(&at, "a row inside a row")
                    }
                    Some((n, at)) => panels.push(panel(n, &at, &mut problems)),
                    None => {}
                }
            }
            sections.push(Section {
                title: Some(p.title.unwrap_or_default()),
                description: p.description,
                panels,
            });
        } else {
            if !p.panels.is_empty() {
                problems.add(&at, "panels inside a panel that is not a row");
            }
            if sections.is_empty() {
                sections.push(Section {
                    title: None,
                    description: String::new(),
                    panels: Vec::new(),
                });
            }
            let panel = panel(p, &at, &mut problems);
            if let Some(section) = sections.last_mut() {
                section.panels.push(panel);
            }
        }
    }
    let variables: Vec<(String, Option<String>)> = d
        .templating
        .list
        .iter()
        .filter_map(|v| variable(v, &mut problems))
        .collect();
    // Links as Grafana would open them: `${runbook_base}` and the other
    // dashboard-wide values filled in (per-row `${__data…}` stays).
    for panel in sections.iter_mut().flat_map(|s| s.panels.iter_mut()) {
        for (_, url) in &mut panel.links {
            for (name, value) in &variables {
                if let Some(value) = value {
                    *url = url.replace(&format!("${{{name}}}"), value);
                }
            }
        }
    }
    let annotations = d
        .annotations
        .list
        .iter()
        .filter_map(|a| annotation(a, &mut problems))
        .collect();
    if !problems.0.is_empty() {
        bail!(
            "{}: mlwatch report cannot render:\n  {}",
            file.display(),
            problems.0.join("\n  ")
        );
    }
    Ok(Dashboard {
        annotations,
        file: file.to_owned(),
        uid: d.uid.unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        title: d.title,
        description: d.description,
        variables,
        sections,
    })
}

/// A panel or row with the words that name it in an error.
fn read_panel(value: &Value, problems: &mut Problems) -> Option<(PanelJson, String)> {
    let header = Header::of(value);
    let title = header.title.as_deref().unwrap_or("(untitled)");
    let at = match &header.kind {
        Some(kind) => format!("panel {title:?} of type {kind}"),
        None => format!("panel {title:?}"),
    };
    match grafana::typed::<PanelJson>(value, || at.clone()) {
        Ok(p) => Some((p, format!("panel {title:?}"))),
        Err(e) => {
            problems.0.push(e);
            None
        }
    }
}

/// The typed options of a panel type (none given: its defaults).
fn options<T: DeserializeOwned + Default>(
    options: &Option<Value>,
    at: &str,
    problems: &mut Problems,
) -> T {
    match options {
        Some(value) => problems.read(value, &format!("{at}: options")),
        None => T::default(),
    }
}

/// The one reducer of `reduceOptions`, refusing what would be drawn
/// differently.
fn reducer(o: &ReduceOptions, at: &str, problems: &mut Problems) -> Reducer {
    if o.calcs.len() > 1 {
        problems.add(at, "more than one reducer in reduceOptions.calcs");
    }
    if o.values {
        problems.add(at, "reduceOptions.values (every value, not reduced)");
    }
    if !o.fields.is_empty() {
        problems.add(at, format!("reduceOptions.fields {:?}", o.fields));
    }
    o.calcs.first().copied().unwrap_or_default()
}

fn panel(p: PanelJson, at: &str, problems: &mut Problems) -> Panel {
    if p.datasource.as_ref().is_some_and(|d| !d.is_prometheus()) {
        problems.add(at, "a datasource that is not Prometheus");
    }
    let opts = &p.options;
    let kind = match p.kind {
        PanelType::Row => {
            // Rows are taken apart by `parse`; one here was nested.
            problems.add(at, "a row where a panel belongs");
            PanelKind::TimeSeries
        }
        PanelType::TimeSeries => {
            options::<TimeSeriesOptions>(opts, at, problems);
            if p.field_config.defaults.color.as_ref().map(|c| c.mode) == Some(ColorMode::Thresholds)
            {
                problems.add(at, "colour mode thresholds on a time series");
            }
            PanelKind::TimeSeries
        }
        PanelType::Stat => {
            let o: StatOptions = options(opts, at, problems);
            if o.show_percent_change {
                problems.add(at, "options.showPercentChange");
            }
            PanelKind::Stat {
                reducer: reducer(&o.reduce_options, at, problems),
                background: o.color_mode == Some(StatColorMode::Background),
            }
        }
        PanelType::Gauge => {
            let o: GaugeOptions = options(opts, at, problems);
            PanelKind::Gauge {
                reducer: reducer(&o.reduce_options, at, problems),
            }
        }
        PanelType::BarGauge => {
            let o: BarGaugeOptions = options(opts, at, problems);
            PanelKind::BarGauge {
                reducer: reducer(&o.reduce_options, at, problems),
            }
        }
        PanelType::Table => {
            let o: TableOptions = options(opts, at, problems);
            if o.show_header == Some(false) {
                problems.add(at, "options.showHeader false");
            }
            for t in &p.transformations {
                if let Transformation::SortBy(s) = t {
                    if s.sort.len() > 1 {
                        problems.add(at, "sortBy on more than one field");
                    }
                }
            }
            PanelKind::Table {
                transformations: p.transformations.clone(),
            }
        }
        PanelType::Heatmap => {
            let o: HeatmapOptions = options(opts, at, problems);
            if o.calculate {
                problems.add(at, "options.calculate (Grafana's own bucketing)");
            }
            if o.y_axis.as_ref().is_some_and(|y| y.reverse) {
                problems.add(at, "options.yAxis.reverse");
            }
            PanelKind::Heatmap {
                y_unit: o
                    .y_axis
                    .and_then(|y| y.unit)
                    .unwrap_or_else(|| "short".to_owned()),
            }
        }
        PanelType::AlertList => {
            let o: AlertListOptions = options(opts, at, problems);
            if !o.alert_name.is_empty() || !o.alert_instance_label_filter.is_empty() {
                problems.add(at, "an alert name or label filter");
            }
            if o.dashboard_alerts {
                problems.add(at, "options.dashboardAlerts");
            }
            PanelKind::AlertList {
                states: o.state_filter,
                max_items: o.max_items.unwrap_or(20) as usize,
            }
        }
        PanelType::Text => {
            let o: TextOptions = options(opts, at, problems);
            PanelKind::Text { content: o.content }
        }
    };
    if p.kind != PanelType::Table && !p.transformations.is_empty() {
        problems.add(at, "transformations (applied to tables only)");
    }
    let defaults = &p.field_config.defaults;
    let field = field_config(defaults, at, problems);
    let overrides = p
        .field_config
        .overrides
        .iter()
        .filter_map(|o| {
            let options = o.matcher.options.clone();
            let matcher = match o.matcher.id {
                MatcherId::ByName => Matcher::ByName(options),
                MatcherId::ByRegexp if regex_match(&options, "").is_some() => {
                    Matcher::ByRegexp(options)
                }
                MatcherId::ByRegexp => {
                    problems.add(
                        at,
                        format!("override matcher byRegexp {options:?} does not compile"),
                    );
                    return None;
                }
            };
            let changes = o
                .properties
                .iter()
                .map(|prop| change(prop, at, problems))
                .collect();
            Some(Override { matcher, changes })
        })
        .collect();
    let targets = p
        .targets
        .iter()
        .filter(|t| !t.hide)
        .filter_map(|t| {
            if t.datasource.as_ref().is_some_and(|d| !d.is_prometheus()) {
                problems.add(
                    at,
                    format!("target {}: a datasource that is not Prometheus", t.ref_id),
                );
            }
            let expr = t.expr.trim();
            (!expr.is_empty()).then(|| Target {
                ref_id: t.ref_id.clone(),
                expr: expr.to_owned(),
                legend_format: t.legend_format.clone(),
                instant: t.instant && !t.range,
                format: t.format,
            })
        })
        .collect();
    // Panel links, then data links (per row or point, e.g. the MLflow run
    // of a model_info row): the page lists both, with their URL templates.
    let links = p
        .links
        .iter()
        .chain(&defaults.links)
        .map(|l| {
            if l.include_vars || l.keep_time {
                problems.add(
                    at,
                    format!("link {:?} with includeVars or keepTime", l.title),
                );
            }
            (l.title.clone(), l.url.clone())
        })
        .collect();
    let grid = p.grid_pos.as_ref();
    Panel {
        id: p.id,
        kind,
        title: p
            .title
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "(untitled)".to_owned()),
        description: p.description,
        width: grid.and_then(|g| g.w).unwrap_or(12).clamp(1, 24) as u32,
        height: grid.and_then(|g| g.h).unwrap_or(8).clamp(1, 40) as u32,
        field,
        overrides,
        targets,
        links,
    }
}

fn decimals(d: Option<u64>) -> Option<u32> {
    d.map(|d| d.min(10) as u32)
}

fn field_config(d: &FieldDefaults, at: &str, problems: &mut Problems) -> FieldConfig {
    let mut field = FieldConfig {
        unit: d.unit.clone().unwrap_or_default(),
        decimals: decimals(d.decimals),
        min: d.min,
        max: d.max,
        no_value: d.no_value.clone(),
        thresholds: d.thresholds.as_ref().map(thresholds).unwrap_or_default(),
        mappings: d
            .mappings
            .as_deref()
            .map(|m| mappings(m, at, problems))
            .unwrap_or_default(),
        color: d.color.as_ref().and_then(|c| c.fixed()),
        ..FieldConfig::default()
    };
    if let Some(custom) = &d.custom {
        field.axis_right = custom.axis_placement == Some(AxisPlacement::Right);
        field.dashed = custom
            .line_style
            .as_ref()
            .is_some_and(|l| l.fill != LineFill::Solid);
        field.stacked = custom
            .stacking
            .as_ref()
            .is_some_and(|s| s.mode == StackingMode::Normal);
        field.thresholds_hidden = custom
            .thresholds_style
            .as_ref()
            .is_some_and(|s| s.mode == ThresholdsStyleMode::Off);
        if custom.span_nulls {
            problems.add(at, "custom.spanNulls (lines across gaps)");
        }
    }
    field
}

fn change(p: &Property, at: &str, problems: &mut Problems) -> FieldChange {
    match p {
        Property::Unit(unit) => FieldChange::Unit(unit.clone()),
        Property::Decimals(d) => FieldChange::Decimals(decimals(*d)),
        Property::Min(min) => FieldChange::Min(*min),
        Property::Max(max) => FieldChange::Max(*max),
        Property::NoValue(text) => FieldChange::NoValue(text.clone()),
        Property::Thresholds(t) => FieldChange::Thresholds(thresholds(t)),
        Property::Mappings(m) => FieldChange::Mappings(mappings(m, at, problems)),
        Property::Color(c) => FieldChange::Color(c.fixed()),
        Property::AxisPlacement(a) => FieldChange::AxisRight(*a == AxisPlacement::Right),
        Property::LineStyle(l) => FieldChange::Dashed(l.fill != LineFill::Solid),
        Property::ThresholdsStyle(s) => {
            FieldChange::ThresholdsHidden(s.mode == ThresholdsStyleMode::Off)
        }
    }
}

fn thresholds(t: &ThresholdsJson) -> Thresholds {
    Thresholds {
        steps: t.steps.iter().map(|s| (s.value, s.color.clone())).collect(),
    }
}

fn mappings(list: &[MappingJson], at: &str, problems: &mut Problems) -> Vec<Mapping> {
    let mut out = Vec::new();
    for m in list {
        match m {
            MappingJson::Value { options } => {
                for (key, result) in options {
                    match key.parse::<f64>() {
                        Ok(value) => out.push(Mapping::Value {
                            value,
                            text: result.text.clone(),
                            color: result.color.clone(),
                        }),
                        Err(_) => {
                            problems.add(at, format!("value mapping of {key:?}, not a number"))
                        }
                    }
                }
            }
            MappingJson::Range { options } => out.push(Mapping::Range {
                from: options.from,
                to: options.to,
                text: options.result.text.clone(),
                color: options.result.color.clone(),
            }),
        }
    }
    out
}

/// (name, value when nothing is chosen) of a template variable: the "All"
/// value of a multi-select, the default of a single-select (Grafana opens
/// the dashboard on it), the value of a constant or textbox. Any other kind
/// of variable is an error, not a query with `$name` left in it.
fn variable(value: &Value, problems: &mut Problems) -> Option<(String, Option<String>)> {
    let header = Header::of(value);
    let name = header.name.as_deref().unwrap_or("(unnamed)");
    let at = format!("variable {name}");
    let v: VariableJson = grafana::typed(value, || match &header.kind {
        Some(kind) => format!("{at} of type {kind}"),
        None => at.clone(),
    })
    .map_err(|e| problems.0.push(e))
    .ok()?;
    let text = |q: &Option<VariableQuery>| match q {
        Some(VariableQuery::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let current = match v.current.and_then(|c| c.value) {
        Some(CurrentValue::One(value)) => Some(value),
        _ => None,
    };
    let value = match v.kind {
        VariableKind::Query if v.include_all => v.all_value,
        VariableKind::Query => current,
        VariableKind::Datasource => {
            if let Some(plugin) = text(&v.query).filter(|p| p != "prometheus") {
                problems.add(&at, format!("a datasource variable of type {plugin}"));
            }
            current
        }
        VariableKind::Constant | VariableKind::Textbox => text(&v.query),
    };
    Some((v.name, value))
}

/// An enabled annotation; anything but a Prometheus query is an error
/// (the report has no Grafana to ask for built-in annotations).
fn annotation(value: &Value, problems: &mut Problems) -> Option<Annotation> {
    let header = Header::of(value);
    let at = format!(
        "annotation {:?}",
        header.name.as_deref().unwrap_or_default()
    );
    let a: AnnotationJson = grafana::typed(value, || at.clone())
        .map_err(|e| problems.0.push(e))
        .ok()?;
    if a.enable == Some(false) {
        return None;
    }
    let target = a.target.as_ref();
    let expr = target.and_then(|t| t.expr.clone()).or(a.expr);
    let prometheus = a
        .datasource
        .as_ref()
        .is_some_and(|d| d.kind.as_deref() == Some("prometheus"));
    let (true, Some(expr)) = (prometheus, expr) else {
        problems.add(
            &at,
            "not a Prometheus query, which mlwatch report cannot draw",
        );
        return None;
    };
    if a.use_value_for_time {
        problems.add(&at, "useValueForTime");
    }
    let step = target
        .and_then(|t| t.interval.as_deref())
        .or(a.step.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("60s");
    let step = match humantime::parse_duration(step) {
        Ok(step) => step.as_secs_f64().max(1.0),
        Err(e) => {
            problems.add(&at, format!("step {step:?}: {e}"));
            return None;
        }
    };
    Some(Annotation {
        name: a.name,
        color: a.icon_color.unwrap_or_else(|| "red".to_owned()),
        expr,
        step,
        title_format: a.title_format,
        text_format: a.text_format,
    })
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
fn regex_match(pattern: &str, text: &str) -> Option<bool> {
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
        assert_eq!(
            d.sections[2].panels[0].targets[0].format,
            grafana::TargetFormat::Table
        );
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
        assert!(err.contains("panel \"T\""), "{err}");
        assert!(err.contains("byFrameRefID"), "{err}");
        // Every problem of the dashboard in one message, each naming its panel.
        let json = serde_json::json!({"panels": [{"type": "table", "title": "T",
            "transformations": [{"id": "merge", "options": {}}]},
            {"type": "stat", "title": "S", "options": {"reduceOptions": {"calcs": ["range"]}}},
            {"type": "piechart", "title": "P"}]});
        let err = parse(Path::new("d.json"), &json).unwrap_err().to_string();
        for what in [
            "d.json: mlwatch report cannot render",
            "panel \"T\" of type table: unknown variant `merge`",
            "panel \"S\": options: unknown variant `range`",
            "panel \"P\" of type piechart: unknown variant `piechart`",
        ] {
            assert!(err.contains(what), "{what}: {err}");
        }
        let json = serde_json::json!({"panels": [], "templating": {"list": [
            {"type": "adhoc", "name": "filters"}]}});
        let err = parse(Path::new("d.json"), &json).unwrap_err().to_string();
        assert!(
            err.contains("variable filters of type adhoc: unknown variant `adhoc`"),
            "{err}"
        );
    }

    /// A panel of `kind` with `extra` merged into its JSON.
    fn panel_with(kind: &str, extra: Value) -> Value {
        let mut p = serde_json::json!({"type": kind, "id": 3, "title": "Latency",
            "targets": [{"refId": "A", "expr": "up"}]});
        merge(&mut p, extra);
        serde_json::json!({"uid": "u", "panels": [p]})
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (k, v) in from {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
            (into, from) => *into = from,
        }
    }

    #[test]
    fn unsupported_settings_that_matter_are_named_with_their_panel() {
        use serde_json::json;
        let cases = [
            (
                "timeseries",
                json!({"timeShift": "1h"}),
                "unknown field `timeShift`",
            ),
            (
                "timeseries",
                json!({"targets": [{"refId": "A", "expr": "up", "interval": "1m"}]}),
                "unknown field `interval`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"custom": {"drawStyle": "bars"}}}}),
                "unknown variant `bars`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"custom": {"stacking": {"mode": "percent"}}}}}),
                "unknown variant `percent`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"custom": {"spanNulls": true}}}}),
                "custom.spanNulls",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"custom": {"axisPlacement": "hidden"}}}}),
                "unknown variant `hidden`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"color": {"mode": "thresholds"}}}}),
                "colour mode thresholds on a time series",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"thresholds":
                {"mode": "percentage", "steps": []}}}}),
                "unknown variant `percentage`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"mappings":
                [{"type": "regex", "options": {}}]}}}),
                "unknown variant `regex`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"mappings":
                [{"type": "value", "options": {"up": {"text": "ok"}}}]}}}),
                "value mapping of \"up\", not a number",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"overrides": [{"matcher":
                {"id": "byName", "options": "a"}, "properties": [{"id": "displayName", "value": "b"}]}]}}),
                "unknown variant `displayName`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"overrides": [{"matcher":
                {"id": "byRegexp", "options": "/[/"}, "properties": []}]}}),
                "byRegexp \"/[/\" does not compile",
            ),
            (
                "timeseries",
                json!({"transformations": [{"id": "organize", "options": {}}]}),
                "transformations (applied to tables only)",
            ),
            (
                "timeseries",
                json!({"datasource": {"type": "loki", "uid": "x"}}),
                "a datasource that is not Prometheus",
            ),
            (
                "timeseries",
                json!({"links": [{"title": "r", "url": "http://r", "includeVars": true}]}),
                "includeVars",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"defaults": {"mappings":
                [{"type": "value", "options": {}, "order": 1}]}}}),
                "unknown field `order`",
            ),
            (
                "timeseries",
                json!({"fieldConfig": {"overrides": [{"matcher":
                {"id": "byName", "options": "a"}, "properties": [{"id": "unit", "value": "s", "x": 1}]}]}}),
                "string \"x\", expected \"id\" or \"value\"",
            ),
            (
                "table",
                json!({"transformations": [{"id": "organize", "options": {}, "disabled": true}]}),
                "string \"disabled\", expected \"id\" or \"options\"",
            ),
            (
                "stat",
                json!({"options": {"reduceOptions": {"calcs": ["last", "max"]}}}),
                "more than one reducer",
            ),
            (
                "stat",
                json!({"options": {"reduceOptions": {"values": true}}}),
                "reduceOptions.values",
            ),
            (
                "stat",
                json!({"options": {"colorMode": "none"}}),
                "unknown variant `none`",
            ),
            (
                "bargauge",
                json!({"options": {"orientation": "vertical"}}),
                "unknown variant `vertical`",
            ),
            (
                "heatmap",
                json!({"options": {"calculate": true}}),
                "options.calculate",
            ),
            (
                "table",
                json!({"transformations": [{"id": "sortBy", "options": {"sort":
                [{"field": "a"}, {"field": "b"}]}}]}),
                "sortBy on more than one field",
            ),
            (
                "alertlist",
                json!({"options": {"alertName": "Foo"}}),
                "label filter",
            ),
            (
                "text",
                json!({"options": {"content": "x", "style": {}}}),
                "unknown field `style`",
            ),
        ];
        for (kind, extra, what) in cases {
            let json = panel_with(kind, extra.clone());
            let err = match parse(Path::new("dash.json"), &json) {
                Ok(_) => panic!("{kind} {extra} was accepted"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.starts_with("dash.json: mlwatch report cannot render:"),
                "{err}"
            );
            assert!(err.contains("panel \"Latency\""), "{kind} {extra}: {err}");
            assert!(err.contains(what), "{kind} {extra}: {what}: {err}");
        }
        // The same panels without the extra setting are fine.
        for kind in [
            "timeseries",
            "stat",
            "bargauge",
            "heatmap",
            "table",
            "alertlist",
            "text",
        ] {
            let json = panel_with(kind, json!({}));
            assert!(parse(Path::new("dash.json"), &json).is_ok(), "{kind}");
        }
        let json = json!({"panels": [], "annotations": {"list": [{"name": "Deploys",
            "datasource": {"type": "grafana", "uid": "-- Grafana --"}}]}});
        let err = parse(Path::new("dash.json"), &json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("annotation \"Deploys\": not a Prometheus query"),
            "{err}"
        );
        let json = json!({"panels": [], "annotations": {"list": [{"name": "Off", "enable": false,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"}}]}});
        assert!(
            parse(Path::new("dash.json"), &json).is_ok(),
            "disabled: skipped"
        );
        let json = json!({"panels": [], "time": {"from": "now-6h"}, "__inputs": []});
        let err = parse(Path::new("dash.json"), &json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `__inputs`"), "{err}");
    }

    #[test]
    fn provisioned_dashboards_load_into_the_typed_model() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = repo.join(crate::report::DASHBOARDS_DIR);
        let dashboards = load_dir(&dir).unwrap();
        let uids: Vec<&str> = dashboards.iter().map(|d| d.uid.as_str()).collect();
        assert_eq!(uids, vec!["mlwatch-predict-api", "mlwatch-training"]);
        for d in &dashboards {
            // Every panel of the file is in the model, with its type.
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(&d.file).unwrap()).unwrap();
            let file: grafana::DashboardJson = serde_json::from_value(json).unwrap();
            let mut types = Vec::new();
            for p in &file.panels {
                let p: grafana::PanelJson = serde_json::from_value(p.clone()).unwrap();
                for n in &p.panels {
                    let n: grafana::PanelJson = serde_json::from_value(n.clone()).unwrap();
                    types.push((n.id, n.kind));
                }
                if p.kind != PanelType::Row {
                    types.push((p.id, p.kind));
                }
            }
            let panels: Vec<&Panel> = d.sections.iter().flat_map(|s| &s.panels).collect();
            assert_eq!(panels.len(), types.len(), "{}", d.title);
            for (p, (id, kind)) in panels.iter().zip(&types) {
                assert_eq!(p.id, *id);
                let name = serde_json::to_value(p.kind.name()).unwrap();
                assert_eq!(serde_json::from_value::<PanelType>(name).unwrap(), *kind);
            }
            assert!(!d.annotations.is_empty(), "{}", d.title);
        }
        // The typed settings the dashboards use are read.
        let all: Vec<&Panel> = dashboards
            .iter()
            .flat_map(|d| d.sections.iter().flat_map(|s| &s.panels))
            .collect();
        assert!(all.iter().any(|p| matches!(
            p.kind,
            PanelKind::Stat {
                background: true,
                reducer: Reducer::Last
            }
        )));
        assert!(all
            .iter()
            .any(|p| matches!(&p.kind, PanelKind::Heatmap { y_unit } if y_unit == "s")));
        assert!(all.iter().any(|p| matches!(
            &p.kind,
            PanelKind::AlertList { states, max_items: 20 } if states.wants("firing") && !states.wants("normal")
        )));
        assert!(all.iter().any(|p| matches!(
            &p.kind,
            PanelKind::Table { transformations } if transformations.len() == 2
        )));
        assert!(all.iter().any(|p| p.field.stacked));
        assert!(all.iter().any(|p| !p.overrides.is_empty()));
        assert!(all.iter().any(|p| !p.field.mappings.is_empty()));
        assert!(all
            .iter()
            .flat_map(|p| &p.links)
            .any(|(_, url)| url.starts_with("http://")));
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
