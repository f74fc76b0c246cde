//! The Grafana dashboard JSON model, as far as `mlwatch report` draws it.
//!
//! Every struct here is `deny_unknown_fields`: a field the report has not
//! classified is a load-time error naming the dashboard and the panel, so
//! a feature added to `grafana/generate.py` cannot go missing from the
//! report without a word. A field whose value changes what the report
//! draws is typed, and a value it cannot draw is refused, by an enum that
//! lacks it or by a check in [`super::dashboard`]. A field that Grafana
//! writes but that cannot change a static chart (interactive behaviour,
//! layout hints, the editor's state) is listed as [`Ignored`], with the
//! reason. Panels, variables and annotations are buffered as JSON values
//! and read one by one ([`typed`]), so that an error names which one.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, IgnoredAny as Ignored};
use serde::Deserialize;
use serde_json::Value;

/// `T` from one buffered JSON value; the error says where (`what`).
pub fn typed<T: DeserializeOwned>(
    value: &Value,
    what: impl FnOnce() -> String,
) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("{}: {e}", what()))
}

/// What names a panel, variable or annotation in an error: read leniently
/// (unknown fields allowed, wrong types tolerated) before the typed read.
#[derive(Debug, Default, Deserialize)]
pub struct Header {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Header {
    pub fn of(value: &Value) -> Self {
        Header::deserialize(value).unwrap_or_default()
    }
}

/// A dashboard's JSON model (a file under `grafana/provisioning/dashboards/`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardJson {
    /// The `--svg-dir` subdirectory and the page anchor; the file name when absent.
    pub uid: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Panels and rows, read one by one into [`PanelJson`].
    pub panels: Vec<Value>,
    #[serde(default)]
    pub templating: List,
    #[serde(default)]
    pub annotations: List,
    /// Dashboard links (the runbook index): each panel lists its own runbook.
    #[serde(default, rename = "links")]
    _links: Ignored,
    /// Grafana's database id and save counter.
    #[serde(default, rename = "id")]
    _id: Ignored,
    #[serde(default, rename = "version")]
    _version: Ignored,
    /// The JSON model's version (generate.py writes 41, the fields read here).
    #[serde(default, rename = "schemaVersion")]
    _schema_version: Ignored,
    /// Editing and interaction in Grafana's UI.
    #[serde(default, rename = "editable")]
    _editable: Ignored,
    #[serde(default, rename = "graphTooltip")]
    _graph_tooltip: Ignored,
    /// A static page does not refresh.
    #[serde(default, rename = "refresh")]
    _refresh: Ignored,
    #[serde(default, rename = "tags")]
    _tags: Ignored,
    /// The report's window comes from `--since`/`--start`/`--end`, in UTC.
    #[serde(default, rename = "time")]
    _time: Ignored,
    #[serde(default, rename = "timepicker")]
    _timepicker: Ignored,
    #[serde(default, rename = "timezone")]
    _timezone: Ignored,
    #[serde(default, rename = "weekStart")]
    _week_start: Ignored,
    #[serde(default, rename = "fiscalYearStartMonth")]
    _fiscal_year_start_month: Ignored,
}

/// `templating` and `annotations`: a `list`, read item by item.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    #[serde(default)]
    pub list: Vec<Value>,
}

/// A template variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VariableJson {
    #[serde(rename = "type")]
    pub kind: VariableKind,
    pub name: String,
    #[serde(default)]
    pub include_all: bool,
    pub all_value: Option<String>,
    pub current: Option<Current>,
    /// A constant's or textbox's value, a datasource variable's plugin
    /// type; a query variable's query (never run: see `regex`).
    pub query: Option<VariableQuery>,
    /// How Grafana lists the values to pick from: the report never lists
    /// them, it uses the "All" value or the `--var` regex.
    #[serde(default, rename = "regex")]
    _regex: Ignored,
    #[serde(default, rename = "refresh")]
    _refresh: Ignored,
    #[serde(default, rename = "sort")]
    _sort: Ignored,
    #[serde(default, rename = "multi")]
    _multi: Ignored,
    #[serde(default, rename = "options")]
    _options: Ignored,
    /// The datasource the value list comes from (see `regex`).
    #[serde(default, rename = "datasource")]
    _datasource: Ignored,
    /// Presentation in Grafana's variable bar and URL.
    #[serde(default, rename = "label")]
    _label: Ignored,
    #[serde(default, rename = "description")]
    _description: Ignored,
    #[serde(default, rename = "hide")]
    _hide: Ignored,
    #[serde(default, rename = "skipUrlSync")]
    _skip_url_sync: Ignored,
}

/// The kinds of variable the report expands; others (ad hoc filters,
/// intervals, custom lists) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariableKind {
    Query,
    Datasource,
    Constant,
    Textbox,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VariableQuery {
    Text(String),
    /// A query variable's query object (not run, see [`VariableJson`]).
    Object(Ignored),
}

/// The value Grafana opens the dashboard with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    pub value: Option<CurrentValue>,
    /// What the variable bar shows for the value.
    #[serde(default, rename = "text")]
    _text: Ignored,
    #[serde(default, rename = "selected")]
    _selected: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CurrentValue {
    One(String),
    /// A multi-select's values (`["$__all"]`): the report uses the "All" value.
    Many(Vec<String>),
}

/// An annotation query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnnotationJson {
    #[serde(default)]
    pub name: String,
    /// Absent: enabled.
    pub enable: Option<bool>,
    pub datasource: Option<DataSourceRef>,
    pub target: Option<AnnotationTarget>,
    /// The pre-`target` places of the query and its step.
    pub expr: Option<String>,
    pub step: Option<String>,
    pub icon_color: Option<String>,
    #[serde(default)]
    pub title_format: String,
    #[serde(default)]
    pub text_format: String,
    /// Events at the sample's value instead of its time: not drawn.
    #[serde(default)]
    pub use_value_for_time: bool,
    /// Whether Grafana shows the annotation's on/off toggle.
    #[serde(default, rename = "hide")]
    _hide: Ignored,
    /// Labels Grafana shows as tags; the report's table shows
    /// `titleFormat` and `textFormat`, which name them.
    #[serde(default, rename = "tagKeys")]
    _tag_keys: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationTarget {
    pub expr: Option<String>,
    pub interval: Option<String>,
    #[serde(default, rename = "refId")]
    _ref_id: Ignored,
}

/// A panel's, target's or annotation's datasource: its type must be
/// `prometheus`; the uid (`${datasource}`) is the one Prometheus the
/// report is pointed at.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSourceRef {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default, rename = "uid")]
    _uid: Ignored,
}

impl DataSourceRef {
    pub fn is_prometheus(&self) -> bool {
        self.kind.as_deref().is_none_or(|k| k == "prometheus")
    }
}

/// A panel or a row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PanelJson {
    #[serde(rename = "type")]
    pub kind: PanelType,
    #[serde(default)]
    pub id: i64,
    pub title: Option<String>,
    #[serde(default)]
    pub description: String,
    pub grid_pos: Option<GridPos>,
    pub datasource: Option<DataSourceRef>,
    #[serde(default)]
    pub field_config: FieldConfigJson,
    /// Typed by panel type ([`TimeSeriesOptions`], [`StatOptions`], …).
    pub options: Option<Value>,
    #[serde(default)]
    pub targets: Vec<TargetJson>,
    #[serde(default)]
    pub links: Vec<LinkJson>,
    /// Tables only.
    #[serde(default)]
    pub transformations: Vec<Transformation>,
    /// A row's panels (read like the dashboard's).
    #[serde(default)]
    pub panels: Vec<Value>,
    /// Rows: the report shows every row open.
    #[serde(default, rename = "collapsed")]
    _collapsed: Ignored,
    /// The Grafana version that last saved the panel.
    #[serde(default, rename = "pluginVersion")]
    _plugin_version: Ignored,
}

/// The panel types the report draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PanelType {
    Row,
    TimeSeries,
    Stat,
    Gauge,
    BarGauge,
    Table,
    Heatmap,
    AlertList,
    Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridPos {
    pub w: Option<u64>,
    pub h: Option<u64>,
    /// Panels are laid out in the JSON's order, which generate.py keeps
    /// top to bottom, left to right.
    #[serde(default, rename = "x")]
    _x: Ignored,
    #[serde(default, rename = "y")]
    _y: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfigJson {
    #[serde(default)]
    pub defaults: FieldDefaults,
    #[serde(default)]
    pub overrides: Vec<OverrideJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldDefaults {
    pub unit: Option<String>,
    pub decimals: Option<u64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub no_value: Option<String>,
    pub thresholds: Option<ThresholdsJson>,
    pub mappings: Option<Vec<MappingJson>>,
    pub color: Option<FieldColor>,
    pub custom: Option<Custom>,
    /// Data links (e.g. the MLflow run of a model_info row).
    #[serde(default)]
    pub links: Vec<LinkJson>,
}

/// `fieldConfig.defaults.custom` of a time series.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Custom {
    /// Lines only: bars or points would be drawn as lines. Parsed, never
    /// read: its type refuses every other style at load time.
    #[allow(dead_code)]
    draw_style: Option<DrawStyle>,
    pub axis_placement: Option<AxisPlacement>,
    pub stacking: Option<Stacking>,
    pub thresholds_style: Option<ThresholdsStyle>,
    pub line_style: Option<LineStyle>,
    /// The report leaves gaps where a series has no points.
    #[serde(default)]
    pub span_nulls: bool,
    /// Line width, area fill, gradient and point markers: the report
    /// draws one line style (with a fill when stacked).
    #[serde(default, rename = "lineWidth")]
    _line_width: Ignored,
    #[serde(default, rename = "fillOpacity")]
    _fill_opacity: Ignored,
    #[serde(default, rename = "gradientMode")]
    _gradient_mode: Ignored,
    #[serde(default, rename = "showPoints")]
    _show_points: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DrawStyle {
    Line,
}

/// `hidden` is not drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AxisPlacement {
    Auto,
    Left,
    Right,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stacking {
    pub mode: StackingMode,
    /// One stacking group per panel.
    #[serde(default, rename = "group")]
    _group: Ignored,
}

/// `percent` is not drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackingMode {
    None,
    Normal,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsStyle {
    pub mode: ThresholdsStyleMode,
}

/// Thresholds are drawn as dashed lines or not at all; areas are not drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdsStyleMode {
    Off,
    Line,
    Dashed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineStyle {
    pub fill: LineFill,
    /// The dash pattern: the report has one.
    #[serde(default, rename = "dash")]
    _dash: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFill {
    Solid,
    Dash,
    Dot,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldColor {
    pub mode: ColorMode,
    fixed_color: Option<String>,
}

impl FieldColor {
    /// The series colour it fixes (None: the palette's).
    pub fn fixed(&self) -> Option<String> {
        match self.mode {
            ColorMode::Fixed => self.fixed_color.clone(),
            _ => None,
        }
    }
}

/// Gradient schemes are not drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorMode {
    Fixed,
    Thresholds,
    PaletteClassic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsJson {
    /// `percentage` is not drawn.
    pub mode: Option<ThresholdsMode>,
    #[serde(default)]
    pub steps: Vec<StepJson>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdsMode {
    Absolute,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepJson {
    #[serde(default)]
    pub color: String,
    /// None for the base step.
    pub value: Option<f64>,
}

/// A value mapping; `regex` and `special` mappings are not applied.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum MappingJson {
    /// Keyed by the value as text (`"0"`, `"1"`).
    Value {
        options: BTreeMap<String, MappingResult>,
    },
    Range {
        options: RangeOptions,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeOptions {
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub result: MappingResult,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingResult {
    #[serde(default)]
    pub text: String,
    pub color: Option<String>,
    /// The mapping's position in Grafana's editor.
    #[serde(default, rename = "index")]
    _index: Ignored,
}

/// A field override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideJson {
    pub matcher: MatcherJson,
    #[serde(default)]
    pub properties: Vec<Property>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherJson {
    pub id: MatcherId,
    pub options: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MatcherId {
    ByName,
    ByRegexp,
}

/// The override properties the report applies per series.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "id", content = "value", deny_unknown_fields)]
pub enum Property {
    #[serde(rename = "unit")]
    Unit(String),
    #[serde(rename = "decimals")]
    Decimals(Option<u64>),
    #[serde(rename = "min")]
    Min(Option<f64>),
    #[serde(rename = "max")]
    Max(Option<f64>),
    #[serde(rename = "noValue")]
    NoValue(Option<String>),
    #[serde(rename = "thresholds")]
    Thresholds(ThresholdsJson),
    #[serde(rename = "mappings")]
    Mappings(Vec<MappingJson>),
    #[serde(rename = "color")]
    Color(FieldColor),
    #[serde(rename = "custom.axisPlacement")]
    AxisPlacement(AxisPlacement),
    #[serde(rename = "custom.lineStyle")]
    LineStyle(LineStyle),
    #[serde(rename = "custom.thresholdsStyle")]
    ThresholdsStyle(ThresholdsStyle),
}

/// A panel link or data link.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LinkJson {
    #[serde(default)]
    pub title: String,
    pub url: String,
    /// `link` (a URL); `dashboards` (a tag search) is not listed.
    #[serde(rename = "type")]
    pub kind: Option<LinkType>,
    /// Grafana would append the variables or the time range to the URL;
    /// the report prints the URL as written.
    #[serde(default)]
    pub include_vars: bool,
    #[serde(default)]
    pub keep_time: bool,
    /// How Grafana opens and decorates the link.
    #[serde(default, rename = "targetBlank")]
    _target_blank: Ignored,
    #[serde(default, rename = "icon")]
    _icon: Ignored,
    #[serde(default, rename = "tooltip")]
    _tooltip: Ignored,
    #[serde(default, rename = "asDropdown")]
    _as_dropdown: Ignored,
    #[serde(default, rename = "tags")]
    _tags: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Link,
}

/// A Prometheus query of a panel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetJson {
    #[serde(default)]
    pub ref_id: String,
    #[serde(default)]
    pub expr: String,
    pub legend_format: Option<String>,
    #[serde(default)]
    pub instant: bool,
    #[serde(default)]
    pub range: bool,
    #[serde(default)]
    pub format: TargetFormat,
    #[serde(default)]
    pub hide: bool,
    pub datasource: Option<DataSourceRef>,
    /// Whether Grafana's editor shows the builder or the code.
    #[serde(default, rename = "editorMode")]
    _editor_mode: Ignored,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetFormat {
    #[default]
    TimeSeries,
    Table,
    Heatmap,
}

/// A table transformation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    tag = "id",
    content = "options",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub enum Transformation {
    Organize(Organize),
    SortBy(SortBy),
}

/// Hide, order and rename columns.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Organize {
    #[serde(default)]
    pub exclude_by_name: BTreeMap<String, bool>,
    #[serde(default)]
    pub index_by_name: BTreeMap<String, i64>,
    #[serde(default)]
    pub rename_by_name: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortBy {
    #[serde(default)]
    pub sort: Vec<SortField>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortField {
    pub field: String,
    #[serde(default)]
    pub desc: bool,
}

/// `reduceOptions` of stat, gauge and bar gauge panels.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceOptions {
    #[serde(default)]
    pub calcs: Vec<Reducer>,
    /// Which fields are reduced: `""` (the numeric ones) only.
    #[serde(default)]
    pub fields: String,
    /// `true` shows every value instead of reducing: not drawn.
    #[serde(default)]
    pub values: bool,
}

/// The reducers the report implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Reducer {
    Last,
    #[default]
    LastNotNull,
    Mean,
    Max,
    Min,
    Sum,
    First,
    FirstNotNull,
}

/// A time series' legend and tooltip: the report always draws the
/// legend, and a static chart has no tooltip.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSeriesOptions {
    #[serde(default, rename = "legend")]
    _legend: Ignored,
    #[serde(default, rename = "tooltip")]
    _tooltip: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatOptions {
    #[serde(default)]
    pub reduce_options: ReduceOptions,
    pub color_mode: Option<StatColorMode>,
    /// The percent change since the window's start is not drawn.
    #[serde(default)]
    pub show_percent_change: bool,
    /// The report always draws the sparkline: the window's history is
    /// what a static report can add to the number.
    #[serde(default, rename = "graphMode")]
    _graph_mode: Ignored,
    /// Layout of the value and its name within the panel.
    #[serde(default, rename = "justifyMode")]
    _justify_mode: Ignored,
    #[serde(default, rename = "orientation")]
    _orientation: Ignored,
    #[serde(default, rename = "textMode")]
    _text_mode: Ignored,
    #[serde(default, rename = "wideLayout")]
    _wide_layout: Ignored,
    #[serde(default, rename = "percentChangeColorMode")]
    _percent_change_color_mode: Ignored,
}

/// The value's colour on the text or as the background; `none` is not drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatColorMode {
    Value,
    Background,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GaugeOptions {
    #[serde(default)]
    pub reduce_options: ReduceOptions,
    /// A gauge is drawn like a stat: value over sparkline, threshold colour.
    #[serde(default, rename = "orientation")]
    _orientation: Ignored,
    #[serde(default, rename = "showThresholdLabels")]
    _show_threshold_labels: Ignored,
    #[serde(default, rename = "showThresholdMarkers")]
    _show_threshold_markers: Ignored,
    #[serde(default, rename = "sizing")]
    _sizing: Ignored,
    #[serde(default, rename = "minVizWidth")]
    _min_viz_width: Ignored,
    #[serde(default, rename = "minVizHeight")]
    _min_viz_height: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BarGaugeOptions {
    #[serde(default)]
    pub reduce_options: ReduceOptions,
    /// Horizontal bars only.
    pub orientation: Option<BarOrientation>,
    /// Bar style (gradient, LCD, basic), value colouring and sizes: the
    /// report draws one bar style, coloured by threshold.
    #[serde(default, rename = "displayMode")]
    _display_mode: Ignored,
    #[serde(default, rename = "showUnfilled")]
    _show_unfilled: Ignored,
    #[serde(default, rename = "valueMode")]
    _value_mode: Ignored,
    #[serde(default, rename = "namePlacement")]
    _name_placement: Ignored,
    #[serde(default, rename = "sizing")]
    _sizing: Ignored,
    #[serde(default, rename = "minVizHeight")]
    _min_viz_height: Ignored,
    #[serde(default, rename = "minVizWidth")]
    _min_viz_width: Ignored,
    #[serde(default, rename = "maxVizHeight")]
    _max_viz_height: Ignored,
    /// Bar names are drawn beside the bars.
    #[serde(default, rename = "legend")]
    _legend: Ignored,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BarOrientation {
    Auto,
    Horizontal,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableOptions {
    /// The report always shows the header.
    pub show_header: Option<bool>,
    /// Row height.
    #[serde(default, rename = "cellHeight")]
    _cell_height: Ignored,
    /// Which query's frame Grafana shows first: the report shows every
    /// query in one table (a `Value #refId` column each).
    #[serde(default, rename = "frameIndex")]
    _frame_index: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeatmapOptions {
    /// `true`: Grafana buckets raw values itself; the report needs `le` buckets.
    #[serde(default)]
    pub calculate: bool,
    pub y_axis: Option<HeatmapYAxis>,
    /// Colour scheme, cell spacing and labels, the value filter, the
    /// tooltip and exemplars: the report draws one colour scale.
    #[serde(default, rename = "cellGap")]
    _cell_gap: Ignored,
    #[serde(default, rename = "showValue")]
    _show_value: Ignored,
    #[serde(default, rename = "color")]
    _color: Ignored,
    #[serde(default, rename = "filterValues")]
    _filter_values: Ignored,
    #[serde(default, rename = "rowsFrame")]
    _rows_frame: Ignored,
    #[serde(default, rename = "cellValues")]
    _cell_values: Ignored,
    #[serde(default, rename = "legend")]
    _legend: Ignored,
    #[serde(default, rename = "tooltip")]
    _tooltip: Ignored,
    #[serde(default, rename = "exemplars")]
    _exemplars: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeatmapYAxis {
    /// The bucket bounds' unit (default `short`).
    pub unit: Option<String>,
    /// Buckets are drawn lowest at the bottom.
    #[serde(default)]
    pub reverse: bool,
    #[serde(default, rename = "axisPlacement")]
    _axis_placement: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertListOptions {
    #[serde(default)]
    pub state_filter: StateFilter,
    pub max_items: Option<u64>,
    /// Filters the report does not apply: they must be empty.
    #[serde(default)]
    pub alert_name: String,
    #[serde(default)]
    pub alert_instance_label_filter: String,
    #[serde(default)]
    pub dashboard_alerts: bool,
    /// List layout, grouping and order in Grafana: the report draws a
    /// timeline and a table of every alert.
    #[serde(default, rename = "viewMode")]
    _view_mode: Ignored,
    #[serde(default, rename = "groupMode")]
    _group_mode: Ignored,
    #[serde(default, rename = "groupBy")]
    _group_by: Ignored,
    #[serde(default, rename = "sortOrder")]
    _sort_order: Ignored,
    /// The alerts come from the report's Prometheus.
    #[serde(default, rename = "datasource")]
    _datasource: Ignored,
}

/// Which alert states the alert list shows (absent: firing and pending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateFilter {
    pub firing: Option<bool>,
    pub pending: Option<bool>,
    recovering: Option<bool>,
    no_data: Option<bool>,
    pub normal: Option<bool>,
    pub error: Option<bool>,
}

impl StateFilter {
    /// Whether an alert in `state` (Prometheus' name for it) is shown.
    pub fn wants(&self, state: &str) -> bool {
        let chosen = match state {
            "firing" => self.firing,
            "pending" => self.pending,
            "recovering" => self.recovering,
            "noData" => self.no_data,
            "normal" => self.normal,
            "error" => self.error,
            _ => None,
        };
        chosen.unwrap_or(state == "firing" || state == "pending")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    #[serde(default)]
    pub content: String,
    /// Markdown, HTML or code: the report shows the first line as text.
    #[serde(default, rename = "mode")]
    _mode: Ignored,
    #[serde(default, rename = "code")]
    _code: Ignored,
}
