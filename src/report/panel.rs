//! What one dashboard panel shows in the report.
//!
//! A panel's targets are expanded (template variables), sent to Prometheus
//! (a range query over the report's window, or an instant query at its end
//! for tables and instant bar gauges), named by their legend format, and
//! shaped for the chart its type calls for: lines for a time series, a big
//! value over a sparkline for a stat or gauge, bars for a bar gauge, cells
//! for a heatmap, an HTML table plus its series over time for a table, and
//! an alert timeline for an alert list. A panel without data gets a box
//! with its `noValue` text, or "No data". Every panel yields exactly one SVG.

use std::collections::{BTreeMap, BTreeSet};

use super::alerts::Interval;
use super::chart::{self, Size};
use super::dashboard::{legend, Panel, PanelKind, StateFilter};
use super::grafana::{Reducer, TargetFormat, Transformation};
use super::units;
use super::variables::Template;
use crate::prometheus_api::{Alert, Client, Labels};

/// The report's window: unix seconds, and the query step in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    pub step: f64,
}

/// What alert-list panels show, fetched once per report.
#[derive(Debug, Clone, Default)]
pub struct AlertData {
    pub intervals: Vec<Interval>,
    /// The query step the intervals were computed with.
    pub step: f64,
    pub current: Vec<Alert>,
}

pub struct Context<'a> {
    pub client: &'a Client,
    pub template: &'a Template,
    pub window: Window,
    pub alerts: &'a AlertData,
    /// Also draw the chart with its title, for `--svg-dir`.
    pub standalone: bool,
    /// The dashboard's annotation events, drawn on every time series.
    pub markers: &'a [chart::Marker],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Something to show.
    Data,
    /// Nothing: the chart is a "No data" (or noValue) box.
    Empty,
    /// Every query failed.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Data => "data",
            State::Empty => "empty",
            State::Error => "error",
        }
    }
}

/// Rows of an HTML table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub struct Rendered {
    pub state: State,
    /// The chart for the page (no title: the page has it).
    pub svg: String,
    /// The chart with the panel title drawn in, when asked for.
    pub standalone: Option<String>,
    pub table: Option<Table>,
    /// Shown under the table when it has no rows.
    pub empty_table_text: Option<String>,
    /// Queries Prometheus rejected, with its message.
    pub errors: Vec<String>,
}

/// A series of one panel, named by its target's legend format.
#[derive(Debug, Clone)]
struct Named {
    name: String,
    labels: Labels,
    points: Vec<(f64, f64)>,
}

/// Pixel size of a panel's chart from its grid size.
fn size_of(panel: &Panel) -> Size {
    Size {
        width: panel.width * 50,
        height: (panel.height * 28).max(100),
    }
}

/// A series as found: the target it came from, its labels, its points.
type Found = (usize, Labels, Vec<(f64, f64)>);

/// Names every series: the legend format where the target has one; where
/// not, the labels that differ between the series (all of them for one).
fn name_all(panel: &Panel, found: Vec<Found>) -> Vec<Named> {
    let unformatted: Vec<&Labels> = found
        .iter()
        .filter(|(t, _, _)| {
            panel.targets[*t]
                .legend_format
                .as_deref()
                .is_none_or(|f| f.is_empty() || f == "__auto")
        })
        .map(|(_, l, _)| l)
        .collect();
    let varying: BTreeSet<String> = if unformatted.len() > 1 {
        let keys: BTreeSet<&String> = unformatted.iter().flat_map(|l| l.keys()).collect();
        keys.into_iter()
            .filter(|k| {
                let first = unformatted[0].get(*k);
                unformatted.iter().any(|l| l.get(*k) != first)
            })
            .cloned()
            .collect()
    } else {
        BTreeSet::new()
    };
    found
        .into_iter()
        .map(|(t, labels, points)| {
            let target = &panel.targets[t];
            let mut name = legend(target.legend_format.as_deref(), &labels, &target.expr);
            let defaulted = target
                .legend_format
                .as_deref()
                .is_none_or(|f| f.is_empty() || f == "__auto");
            if defaulted && !varying.is_empty() {
                name = labels
                    .iter()
                    .filter(|(k, _)| varying.contains(*k))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            Named {
                name,
                labels,
                points,
            }
        })
        .collect()
}

impl Context<'_> {
    /// Range queries of every target; Prometheus' refusals become `errors`.
    async fn range(&self, panel: &Panel, errors: &mut Vec<String>) -> anyhow::Result<Vec<Named>> {
        let mut found = Vec::new();
        for (i, target) in panel.targets.iter().enumerate() {
            let expr = self.template.expand(&target.expr);
            match self
                .client
                .query_range(&expr, self.window.start, self.window.end, self.window.step)
                .await
            {
                Ok(series) => {
                    found.extend(series.into_iter().map(|s| (i, s.labels, s.points)));
                }
                Err(e) if e.is_query_error() => errors.push(format!("{}: {e}", target.ref_id)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(name_all(panel, found))
    }

    /// Instant queries of every target at the window's end: (target, labels, time, value).
    async fn instant(
        &self,
        panel: &Panel,
        errors: &mut Vec<String>,
    ) -> anyhow::Result<Vec<(usize, Labels, f64, f64)>> {
        let mut rows = Vec::new();
        for (i, target) in panel.targets.iter().enumerate() {
            let expr = self.template.expand(&target.expr);
            match self.client.query(&expr, self.window.end).await {
                Ok(samples) => {
                    rows.extend(samples.into_iter().map(|s| (i, s.labels, s.time, s.value)))
                }
                Err(e) if e.is_query_error() => errors.push(format!("{}: {e}", target.ref_id)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(rows)
    }

    fn draw(
        &self,
        panel: &Panel,
        draw: impl Fn(Option<&str>) -> anyhow::Result<String>,
    ) -> anyhow::Result<(String, Option<String>)> {
        // A chart that cannot be drawn becomes a box that says so.
        let draw = |title: Option<&str>| {
            draw(title).or_else(|e| {
                tracing::warn!("panel {:?}: {e:#}", panel.title);
                chart::message(&format!("{e}"), size_of(panel), title)
            })
        };
        let svg = draw(None)?;
        let standalone = if self.standalone {
            Some(draw(Some(&panel.title))?)
        } else {
            None
        };
        Ok((svg, standalone))
    }

    fn nothing(&self, panel: &Panel, errors: Vec<String>) -> anyhow::Result<Rendered> {
        let (state, text) = if errors.is_empty() {
            (
                State::Empty,
                panel
                    .field
                    .no_value
                    .clone()
                    .unwrap_or_else(|| "No data".into()),
            )
        } else {
            (State::Error, "Query error".to_owned())
        };
        let size = size_of(panel);
        let (svg, standalone) = self.draw(panel, |title| chart::message(&text, size, title))?;
        Ok(Rendered {
            state,
            svg,
            standalone,
            table: None,
            empty_table_text: None,
            errors,
        })
    }

    /// Queries the panel's data and draws it.
    pub async fn render(&self, panel: &Panel) -> anyhow::Result<Rendered> {
        let mut errors = Vec::new();
        match &panel.kind {
            PanelKind::TimeSeries => {
                let series = self.range(panel, &mut errors).await?;
                if !has_points(&series) {
                    return self.nothing(panel, errors);
                }
                let chart = self.time_chart(panel, &series);
                let size = size_of(panel);
                self.done(panel, errors, |t| chart::time_chart(&chart, size, t))
            }
            PanelKind::Stat { .. } | PanelKind::Gauge { .. } => {
                let series = self.range(panel, &mut errors).await?;
                if !has_points(&series) {
                    return self.nothing(panel, errors);
                }
                let values = stat_values(panel, &series);
                let (x, step) = ((self.window.start, self.window.end), self.window.step);
                let size = size_of(panel);
                self.done(panel, errors, |t| chart::stat(&values, x, step, size, t))
            }
            PanelKind::BarGauge { .. } => {
                let named: Vec<(String, f64)> = if panel.targets.iter().all(|t| t.instant) {
                    let rows = self.instant(panel, &mut errors).await?;
                    let found = rows
                        .into_iter()
                        .map(|(t, labels, time, v)| (t, labels, vec![(time, v)]))
                        .collect();
                    name_all(panel, found)
                        .into_iter()
                        .filter_map(|n| Some((n.name, n.points.first()?.1)))
                        .collect()
                } else {
                    let series = self.range(panel, &mut errors).await?;
                    series
                        .iter()
                        .filter_map(|s| Some((s.name.clone(), reduce(panel, &s.points)?)))
                        .collect()
                };
                let named: Vec<(String, f64)> =
                    named.into_iter().filter(|(_, v)| v.is_finite()).collect();
                if named.is_empty() {
                    return self.nothing(panel, errors);
                }
                let bars: Vec<chart::Bar> = named
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, value))| {
                        let field = panel.field_for(&name);
                        let (text, color) = value_text(&field, value, i);
                        chart::Bar {
                            name,
                            value,
                            text,
                            color,
                        }
                    })
                    .collect();
                let min = panel.field.min.unwrap_or(0.0);
                let max = panel
                    .field
                    .max
                    .unwrap_or_else(|| bars.iter().map(|b| b.value).fold(min, f64::max));
                let size = size_of(panel);
                self.done(panel, errors, |t| {
                    chart::bar_gauge(&bars, min, max, size, t)
                })
            }
            PanelKind::Heatmap { y_unit } => {
                let series = self.range(panel, &mut errors).await?;
                if !has_points(&series) {
                    return self.nothing(panel, errors);
                }
                let size = size_of(panel);
                match self.heatmap(panel, y_unit, &series) {
                    Some(map) => self.done(panel, errors, |t| chart::heatmap(&map, size, t)),
                    None => {
                        let chart = self.time_chart(panel, &series);
                        self.done(panel, errors, |t| chart::time_chart(&chart, size, t))
                    }
                }
            }
            PanelKind::Table { .. } => self.table(panel).await,
            PanelKind::AlertList { states, max_items } => {
                self.alert_list(panel, states, *max_items)
            }
            PanelKind::Text { content } => {
                let first = content.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let size = size_of(panel);
                let (svg, standalone) =
                    self.draw(panel, |t| chart::message(first.trim(), size, t))?;
                Ok(Rendered {
                    state: State::Data,
                    svg,
                    standalone,
                    table: None,
                    empty_table_text: None,
                    errors,
                })
            }
        }
    }

    fn done(
        &self,
        panel: &Panel,
        errors: Vec<String>,
        draw: impl Fn(Option<&str>) -> anyhow::Result<String>,
    ) -> anyhow::Result<Rendered> {
        let (svg, standalone) = self.draw(panel, draw)?;
        Ok(Rendered {
            state: State::Data,
            svg,
            standalone,
            table: None,
            empty_table_text: None,
            errors,
        })
    }

    fn time_chart(&self, panel: &Panel, series: &[Named]) -> chart::TimeChart {
        let mut lines = Vec::new();
        let mut thresholds: Vec<chart::Threshold> = Vec::new();
        let mut right_field = None;
        let mut add_thresholds = |field: &super::dashboard::FieldConfig, right: bool| {
            if field.thresholds_hidden {
                return;
            }
            for (value, color) in field.thresholds.lines() {
                let color = chart::color(color).unwrap_or(chart::palette(4));
                if !thresholds
                    .iter()
                    .any(|t| t.value == value && t.color == color && t.right == right)
                {
                    thresholds.push(chart::Threshold {
                        value,
                        color,
                        right,
                    });
                }
            }
        };
        add_thresholds(&panel.field, false);
        for (i, s) in series.iter().enumerate() {
            let field = panel.field_for(&s.name);
            if field.thresholds != panel.field.thresholds {
                add_thresholds(&field, field.axis_right);
            }
            if field.axis_right && right_field.is_none() {
                right_field = Some(field.clone());
            }
            lines.push(chart::Line {
                name: s.name.clone(),
                color: field
                    .color
                    .as_deref()
                    .and_then(chart::color)
                    .unwrap_or_else(|| chart::palette(i)),
                points: s.points.clone(),
                right: field.axis_right,
                dashed: field.dashed,
            });
        }
        let axis = |f: &super::dashboard::FieldConfig| chart::Axis {
            unit: f.unit.clone(),
            decimals: f.decimals,
            min: f.min,
            max: f.max,
        };
        chart::TimeChart {
            x: (self.window.start, self.window.end),
            step: self.window.step,
            lines,
            thresholds,
            stacked: panel.field.stacked,
            left: axis(&panel.field),
            right: right_field.as_ref().map(axis).unwrap_or_default(),
            markers: self.markers.to_vec(),
        }
    }

    /// Cells from series labelled `le`, cumulative buckets turned into
    /// per-bucket values; None when the series are not buckets.
    fn heatmap(&self, panel: &Panel, y_unit: &str, series: &[Named]) -> Option<chart::Heatmap> {
        let mut buckets: BTreeMap<u64, (f64, BTreeMap<i64, f64>)> = BTreeMap::new();
        for s in series {
            let le = s.labels.get("le")?.parse::<f64>().ok()?;
            let entry = buckets
                .entry(le_key(le))
                .or_insert_with(|| (le, BTreeMap::new()));
            for &(t, v) in &s.points {
                if v.is_finite() {
                    *entry.1.entry((t * 1000.0).round() as i64).or_insert(0.0) += v;
                }
            }
        }
        let cumulative = panel
            .targets
            .iter()
            .all(|t| t.format == TargetFormat::Heatmap);
        let mut labels = Vec::new();
        let mut cells = Vec::new();
        let mut previous: Option<&BTreeMap<i64, f64>> = None;
        for (i, (le, values)) in buckets.values().enumerate() {
            labels.push(if le.is_infinite() {
                "+Inf".to_owned()
            } else {
                units::format(*le, y_unit, None)
            });
            for (&t, &v) in values {
                let below = if cumulative {
                    previous.and_then(|p| p.get(&t)).copied().unwrap_or(0.0)
                } else {
                    0.0
                };
                cells.push((t as f64 / 1000.0, i, (v - below).max(0.0)));
            }
            previous = Some(values);
        }
        Some(chart::Heatmap {
            x: (self.window.start, self.window.end),
            step: self.window.step,
            buckets: labels,
            cells,
            unit: panel.field.unit.clone(),
        })
    }

    async fn table(&self, panel: &Panel) -> anyhow::Result<Rendered> {
        let mut errors = Vec::new();
        let rows = self.instant(panel, &mut errors).await?;
        let table = build_table(panel, &rows);
        let series = self.range(panel, &mut errors).await?;
        let size = Size {
            width: size_of(panel).width,
            height: 170,
        };
        let empty_text = panel
            .field
            .no_value
            .clone()
            .unwrap_or_else(|| "No data".into());
        let (state, (svg, standalone)) = if has_points(&series) {
            let chart = self.time_chart(panel, &series);
            (
                State::Data,
                self.draw(panel, |t| chart::time_chart(&chart, size, t))?,
            )
        } else {
            let state = if !table.rows.is_empty() {
                State::Data
            } else if errors.is_empty() {
                State::Empty
            } else {
                State::Error
            };
            (
                state,
                self.draw(panel, |t| chart::message(&empty_text, size, t))?,
            )
        };
        Ok(Rendered {
            state,
            svg,
            standalone,
            empty_table_text: table.rows.is_empty().then_some(empty_text),
            table: Some(table),
            errors,
        })
    }

    fn alert_list(
        &self,
        panel: &Panel,
        states: &StateFilter,
        max_items: usize,
    ) -> anyhow::Result<Rendered> {
        let wanted = |state: &str| states.wants(state);
        let mut rows: Vec<chart::TimelineRow> = Vec::new();
        for i in self.alerts.intervals.iter().filter(|i| wanted(&i.state)) {
            let label = match i.labels.get("severity") {
                Some(sev) => format!("{} ({sev})", i.alertname),
                None => i.alertname.clone(),
            };
            let mut rest = i.labels.clone();
            rest.remove("severity");
            let label = if rest.is_empty() {
                label
            } else {
                format!(
                    "{label} · {}",
                    rest.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let color = state_color(&i.state);
            match rows.iter_mut().find(|r| r.label == label) {
                Some(row) => row.spans.push((i.start, i.end, color)),
                None => rows.push(chart::TimelineRow {
                    label,
                    spans: vec![(i.start, i.end, color)],
                }),
            }
        }
        let current: Vec<&Alert> = self
            .alerts
            .current
            .iter()
            .filter(|a| wanted(&a.state))
            .take(max_items)
            .collect();
        let table = Table {
            columns: ["Alert", "State", "Active since", "Labels", "Summary"]
                .map(String::from)
                .to_vec(),
            rows: current
                .iter()
                .map(|a| {
                    vec![
                        a.name(),
                        a.state.clone(),
                        a.active_at.clone().unwrap_or_default(),
                        a.other_labels(),
                        a.annotation("summary"),
                    ]
                })
                .collect(),
        };
        let size = size_of(panel);
        let (state, (svg, standalone)) = if rows.is_empty() {
            let state = if table.rows.is_empty() {
                State::Empty
            } else {
                State::Data
            };
            (
                state,
                self.draw(panel, |t| chart::message("No alerts", size, t))?,
            )
        } else {
            let legend = [
                ("firing", state_color("firing")),
                ("pending", state_color("pending")),
            ];
            let (x, step) = ((self.window.start, self.window.end), self.alerts.step);
            (
                State::Data,
                self.draw(panel, |t| chart::timeline(&rows, x, step, &legend, size, t))?,
            )
        };
        Ok(Rendered {
            state,
            svg,
            standalone,
            empty_table_text: table
                .rows
                .is_empty()
                .then(|| "No alerts pending or firing now".to_owned()),
            table: Some(table),
            errors: Vec::new(),
        })
    }
}

fn state_color(state: &str) -> plotters::style::RGBColor {
    chart::color(if state == "firing" { "red" } else { "orange" }).unwrap_or(chart::palette(4))
}

/// Buckets keyed in order, +Inf last.
fn le_key(le: f64) -> u64 {
    // Non-negative floats order like their bit patterns; negatives come first.
    if le < 0.0 {
        0
    } else {
        le.to_bits()
    }
}

fn has_points(series: &[Named]) -> bool {
    series
        .iter()
        .any(|s| s.points.iter().any(|p| p.1.is_finite()))
}

/// The panel's reducer (`reduceOptions.calcs[0]`, default lastNotNull) over `points`.
fn reduce(panel: &Panel, points: &[(f64, f64)]) -> Option<f64> {
    let finite: Vec<f64> = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .collect();
    match panel.kind.reducer() {
        Reducer::Mean => {
            (!finite.is_empty()).then(|| finite.iter().sum::<f64>() / finite.len() as f64)
        }
        Reducer::Max => finite.iter().copied().reduce(f64::max),
        Reducer::Min => finite.iter().copied().reduce(f64::min),
        Reducer::Sum => (!finite.is_empty()).then(|| finite.iter().sum()),
        Reducer::First | Reducer::FirstNotNull => finite.first().copied(),
        Reducer::Last | Reducer::LastNotNull => finite.last().copied(),
    }
}

/// The text and colour a value gets: its mapping, else its unit format and
/// threshold colour.
fn value_text(
    field: &super::dashboard::FieldConfig,
    value: f64,
    index: usize,
) -> (String, plotters::style::RGBColor) {
    let threshold = field
        .thresholds
        .color_for(value)
        .and_then(chart::color)
        .unwrap_or_else(|| chart::palette(index));
    match field.mapping(value) {
        Some((text, color)) => (
            text.to_owned(),
            color.and_then(chart::color).unwrap_or(threshold),
        ),
        None => (units::format(value, &field.unit, field.decimals), threshold),
    }
}

fn stat_values(panel: &Panel, series: &[Named]) -> Vec<chart::StatValue> {
    let background = matches!(
        panel.kind,
        PanelKind::Stat {
            background: true,
            ..
        }
    );
    let named = series.len() > 1;
    series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let value = reduce(panel, &s.points)?;
            let field = panel.field_for(&s.name);
            let (text, color) = value_text(&field, value, i);
            Some(chart::StatValue {
                name: if named { s.name.clone() } else { String::new() },
                text,
                color,
                background,
                points: s.points.clone(),
            })
        })
        .collect()
}

/// A Grafana table from instant samples, with the panel's `organize`
/// (hide, order, rename) and `sortBy` transformations applied.
fn build_table(panel: &Panel, rows: &[(usize, Labels, f64, f64)]) -> Table {
    let multi = panel.targets.len() > 1;
    let value_col = |t: usize| {
        if multi {
            format!("Value #{}", panel.targets[t].ref_id)
        } else {
            "Value".to_owned()
        }
    };
    let mut columns: Vec<String> = vec!["Time".to_owned()];
    let labels: BTreeSet<&String> = rows.iter().flat_map(|r| r.1.keys()).collect();
    columns.extend(labels.into_iter().cloned());
    for t in 0..panel.targets.len() {
        columns.push(value_col(t));
    }
    let mut cells: Vec<BTreeMap<String, (String, f64)>> = rows
        .iter()
        .map(|(t, labels, time, value)| {
            let mut row: BTreeMap<String, (String, f64)> = labels
                .iter()
                .map(|(k, v)| (k.clone(), (v.clone(), f64::NAN)))
                .collect();
            row.insert("Time".into(), (super::rfc3339(*time), *time));
            let (text, _) = value_text(&panel.field, *value, 0);
            row.insert(value_col(*t), (text, *value));
            row
        })
        .collect();
    let mut hide: BTreeSet<String> = BTreeSet::new();
    let mut order: BTreeMap<String, i64> = BTreeMap::new();
    let mut rename: BTreeMap<String, String> = BTreeMap::new();
    let mut sort_by: Option<(String, bool)> = None;
    let transformations: &[Transformation] = match &panel.kind {
        PanelKind::Table { transformations } => transformations,
        _ => &[],
    };
    for t in transformations {
        match t {
            Transformation::Organize(o) => {
                for (k, hidden) in &o.exclude_by_name {
                    if *hidden {
                        hide.insert(k.clone());
                    }
                }
                for (k, index) in &o.index_by_name {
                    order.insert(k.clone(), *index);
                }
                for (k, v) in &o.rename_by_name {
                    if !v.is_empty() {
                        rename.insert(k.clone(), v.clone());
                    }
                }
            }
            Transformation::SortBy(s) => {
                if let Some(first) = s.sort.first() {
                    sort_by = Some((first.field.clone(), first.desc));
                }
            }
        }
    }
    columns.retain(|c| !hide.contains(c));
    let position: BTreeMap<String, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect();
    columns.sort_by_key(|c| (order.get(c).copied().unwrap_or(i64::MAX), position[c]));
    if let Some((field, desc)) = sort_by {
        let original = rename
            .iter()
            .find(|(_, to)| **to == field)
            .map(|(from, _)| from.clone())
            .unwrap_or(field);
        cells.sort_by(|a, b| {
            let (x, y) = (a.get(&original), b.get(&original));
            let ord = match (x, y) {
                (Some(x), Some(y)) if x.1.is_finite() && y.1.is_finite() => x.1.total_cmp(&y.1),
                (x, y) => x.map(|v| &v.0).cmp(&y.map(|v| &v.0)),
            };
            if desc {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    Table {
        rows: cells
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|c| row.get(c).map(|v| v.0.clone()).unwrap_or_default())
                    .collect()
            })
            .collect(),
        columns: columns
            .iter()
            .map(|c| rename.get(c).cloned().unwrap_or_else(|| c.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::dashboard;
    use serde_json::{json, Value};
    use std::path::Path;

    fn panel(json: Value) -> Panel {
        let d = dashboard::parse(Path::new("t.json"), &json!({"panels": [json]})).unwrap();
        d.sections[0].panels[0].clone()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table_applies_organize_and_sort() {
        let p = panel(json!({"type": "table", "id": 1, "title": "t",
            "fieldConfig": {"defaults": {"unit": "reqps"}},
            "targets": [{"refId": "A", "expr": "x", "instant": true, "format": "table"}],
            "transformations": [
                {"id": "organize", "options": {"excludeByName": {"Time": true},
                    "indexByName": {"route": 0, "status_code": 1, "Value": 2},
                    "renameByName": {"Value": "requests/s"}}},
                {"id": "sortBy", "options": {"sort": [{"field": "route", "desc": false}]}}]}));
        let rows = vec![
            (
                0,
                labels(&[("route", "/ready"), ("status_code", "200")]),
                1.0,
                0.5,
            ),
            (
                0,
                labels(&[("route", "/predict"), ("status_code", "400")]),
                1.0,
                2.0,
            ),
        ];
        let t = build_table(&p, &rows);
        assert_eq!(t.columns, vec!["route", "status_code", "requests/s"]);
        assert_eq!(t.rows[0], vec!["/predict", "400", "2 req/s"]);
        assert_eq!(t.rows[1], vec!["/ready", "200", "0.5 req/s"]);
    }

    #[test]
    fn default_legends_keep_only_labels_that_differ() {
        let p = panel(json!({"type": "table", "id": 1, "title": "t",
            "targets": [{"refId": "A", "expr": "model_info"}]}));
        let found = vec![
            (
                0,
                labels(&[
                    ("__name__", "model_info"),
                    ("job", "ml-api"),
                    ("model_version", "a"),
                ]),
                vec![],
            ),
            (
                0,
                labels(&[
                    ("__name__", "model_info"),
                    ("job", "ml-api"),
                    ("model_version", "b"),
                ]),
                vec![],
            ),
        ];
        let names: Vec<String> = name_all(&p, found).into_iter().map(|n| n.name).collect();
        assert_eq!(names, vec!["model_version=a", "model_version=b"]);
    }

    #[test]
    fn stat_values_use_mappings_and_thresholds() {
        let p = panel(json!({"type": "stat", "id": 1, "title": "t",
            "options": {"colorMode": "background"},
            "fieldConfig": {"defaults": {"unit": "none",
                "thresholds": {"steps": [{"color": "red", "value": null}, {"color": "green", "value": 1}]},
                "mappings": [{"type": "value", "options": {"0": {"text": "no model", "color": "red"},
                                                           "1": {"text": "loaded", "color": "green"}}}]}},
            "targets": [{"refId": "A", "expr": "model_loaded"}]}));
        let series = vec![Named {
            name: "a".into(),
            labels: Labels::new(),
            points: vec![(1.0, 0.0), (2.0, 1.0), (3.0, f64::NAN)],
        }];
        let v = stat_values(&p, &series);
        assert_eq!(v[0].text, "loaded");
        assert_eq!(Some(v[0].color), chart::color("green"));
        assert!(v[0].background);
        assert_eq!(v[0].name, "", "one series: no name");
    }
}
