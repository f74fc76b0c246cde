//! SVG charts, drawn with plotters' SVG backend into a `String`.
//!
//! Each function takes data that is already shaped for one panel type (lines
//! with names and colours, stat values, bars, heatmap cells, alert spans) and
//! returns one self-contained `<svg>` element with its legend drawn inside,
//! so the same text can be inlined in the HTML page or written to a `.svg`
//! file. Knowing which panel needs which chart is `panel.rs`'s job.

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::units;

const FONT: &str = "sans-serif";
/// plotters font sizes (the SVG backend writes size / 1.24 as px).
const SMALL: f64 = 14.0;
const TITLE: f64 = 19.0;
/// Estimated width of one character of SMALL text, in px.
const CHAR_W: f64 = 6.3;
const LEGEND_ROW: u32 = 17;
const MAX_LEGEND_ROWS: usize = 10;
const TITLE_H: u32 = 28;

const AXIS: RGBColor = RGBColor(140, 140, 140);
const GRID: RGBColor = RGBColor(228, 228, 228);
const TEXT: RGBColor = RGBColor(60, 60, 60);
const MUTED: RGBColor = RGBColor(120, 120, 120);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Width and height of the chart body in px (legend and title come on top).
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

/// Grafana's classic palette, in order.
const PALETTE: [RGBColor; 12] = [
    RGBColor(0x7E, 0xB2, 0x6D),
    RGBColor(0xEA, 0xB8, 0x39),
    RGBColor(0x6E, 0xD0, 0xE0),
    RGBColor(0xEF, 0x84, 0x3C),
    RGBColor(0xE2, 0x4D, 0x42),
    RGBColor(0x1F, 0x78, 0xC1),
    RGBColor(0xBA, 0x43, 0xA9),
    RGBColor(0x70, 0x5D, 0xA0),
    RGBColor(0x50, 0x86, 0x42),
    RGBColor(0xCC, 0xA3, 0x00),
    RGBColor(0x44, 0x7E, 0xBC),
    RGBColor(0xC1, 0x5C, 0x17),
];

/// The `i`-th colour of the palette.
pub fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A Grafana colour name (`green`, `dark-red`, ...), `#rgb`/`#rrggbb` or `rgb(r, g, b)`.
pub fn color(name: &str) -> Option<RGBColor> {
    let hex = |s: &str| u8::from_str_radix(s, 16).ok();
    if let Some(h) = name.strip_prefix('#') {
        return match h.len() {
            6 => Some(RGBColor(hex(&h[0..2])?, hex(&h[2..4])?, hex(&h[4..6])?)),
            3 => {
                let d = |i: usize| hex(&h[i..i + 1]).map(|v| v * 17);
                Some(RGBColor(d(0)?, d(1)?, d(2)?))
            }
            _ => None,
        };
    }
    if let Some(inner) = name
        .strip_prefix("rgba(")
        .or_else(|| name.strip_prefix("rgb("))
        .and_then(|s| s.strip_suffix(')'))
    {
        let parts: Vec<u8> = inner
            .split(',')
            .take(3)
            .filter_map(|p| {
                p.trim()
                    .parse::<f64>()
                    .ok()
                    .map(|v| v.clamp(0.0, 255.0) as u8)
            })
            .collect();
        return (parts.len() == 3).then(|| RGBColor(parts[0], parts[1], parts[2]));
    }
    let base = |n: &str| -> Option<[u32; 5]> {
        // super-light, light, (base), semi-dark, dark
        Some(match n {
            "red" => [0xFFA6B0, 0xFF7383, 0xF2495C, 0xE02F44, 0xC4162A],
            "orange" => [0xFFCB7D, 0xFFB357, 0xFF9830, 0xFF780A, 0xFA6400],
            "yellow" => [0xFFF899, 0xFFEE52, 0xFADE2A, 0xF2CC0C, 0xE0B400],
            "green" => [0xC8F2C2, 0x96D98D, 0x73BF69, 0x56A64B, 0x37872D],
            "blue" => [0xC0D8FF, 0x8AB8FF, 0x5794F2, 0x3274D9, 0x1F60C4],
            "purple" => [0xDEB6F2, 0xCA95E5, 0xB877D9, 0xA352CC, 0x8F3BB8],
            _ => return None,
        })
    };
    let (shade, n) = if let Some(n) = name.strip_prefix("super-light-") {
        (0, n)
    } else if let Some(n) = name.strip_prefix("light-") {
        (1, n)
    } else if let Some(n) = name.strip_prefix("semi-dark-") {
        (3, n)
    } else if let Some(n) = name.strip_prefix("dark-") {
        (4, n)
    } else {
        (2, name)
    };
    match n {
        "text" => Some(TEXT),
        "white" => Some(WHITE),
        "black" => Some(BLACK),
        "transparent" => Some(WHITE),
        _ => {
            let v = base(n)?[shade];
            Some(RGBColor((v >> 16) as u8, (v >> 8) as u8, v as u8))
        }
    }
}

/// One series of a time chart.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
    /// Drawn against the right-hand axis.
    pub right: bool,
    pub dashed: bool,
}

/// A horizontal dashed line at a threshold step.
#[derive(Debug, Clone)]
pub struct Threshold {
    pub value: f64,
    pub color: RGBColor,
    pub right: bool,
}

/// An annotation event: a vertical line at `start` (and a band to `end`
/// when it lasted), in the annotation's colour.
#[derive(Debug, Clone)]
pub struct Marker {
    pub start: f64,
    pub end: f64,
    pub color: RGBColor,
}

/// Unit and fixed bounds of a y axis.
#[derive(Debug, Clone, Default)]
pub struct Axis {
    pub unit: String,
    pub decimals: Option<u32>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct TimeChart {
    /// Range start and end, unix seconds.
    pub x: (f64, f64),
    /// Query step in seconds: points further apart than 1.5 steps are a gap.
    pub step: f64,
    pub lines: Vec<Line>,
    pub thresholds: Vec<Threshold>,
    /// Left-axis lines stacked on each other (filled bands).
    pub stacked: bool,
    pub left: Axis,
    pub right: Axis,
    /// The dashboard's annotation events inside the range.
    pub markers: Vec<Marker>,
}

/// A big number with its name, over a sparkline.
#[derive(Debug, Clone)]
pub struct StatValue {
    pub name: String,
    pub text: String,
    pub color: RGBColor,
    /// Fill the cell with the colour (Grafana's colorMode "background").
    pub background: bool,
    pub points: Vec<(f64, f64)>,
}

/// One bar of a bar gauge.
#[derive(Debug, Clone)]
pub struct Bar {
    pub name: String,
    pub value: f64,
    pub text: String,
    pub color: RGBColor,
}

/// Pre-bucketed counts: `cells` are (time, bucket index, value).
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub x: (f64, f64),
    pub step: f64,
    /// Upper bound label of each bucket, lowest first.
    pub buckets: Vec<String>,
    pub cells: Vec<(f64, usize, f64)>,
    /// Unit of the cell values.
    pub unit: String,
}

/// One alert (label set) and the spans it was in a state.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    pub label: String,
    /// (start, end, colour).
    pub spans: Vec<(f64, f64, RGBColor)>,
}

enum Swatch {
    Line(RGBColor),
    Dashed(RGBColor),
    Block(RGBColor),
}

struct LegendEntry {
    swatch: Swatch,
    text: String,
}

fn small(color: &RGBColor) -> TextStyle<'static> {
    (FONT, SMALL).into_font().color(color)
}

fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_W
}

/// Lays legend entries out left to right, wrapping: (row, x) per shown
/// entry, rows used, and how many entries did not fit.
fn legend_layout(entries: &[LegendEntry], width: u32) -> (Vec<(usize, i32)>, usize, usize) {
    let mut placed = Vec::new();
    let (mut row, mut x) = (0usize, 8.0);
    for e in entries {
        let w = 22.0 + text_width(&e.text) + 14.0;
        if x + w > width as f64 && x > 8.0 {
            row += 1;
            x = 8.0;
        }
        if row >= MAX_LEGEND_ROWS {
            break;
        }
        placed.push((row, x as i32));
        x += w;
    }
    let rows = if entries.is_empty() {
        0
    } else {
        row.min(MAX_LEGEND_ROWS - 1) + 1
    };
    let hidden = entries.len() - placed.len();
    (placed, rows + usize::from(hidden > 0), hidden)
}

fn legend_height(entries: &[LegendEntry], width: u32) -> u32 {
    let (_, rows, _) = legend_layout(entries, width);
    if rows == 0 {
        0
    } else {
        rows as u32 * LEGEND_ROW + 6
    }
}

fn draw_legend(area: &Area, entries: &[LegendEntry], width: u32) -> DrawResult {
    let (placed, rows, hidden) = legend_layout(entries, width);
    for (e, (row, x)) in entries.iter().zip(&placed) {
        let y = 4 + *row as i32 * LEGEND_ROW as i32 + 8;
        match e.swatch {
            Swatch::Line(c) => area.draw(&PathElement::new(
                vec![(*x, y), (x + 16, y)],
                c.stroke_width(3),
            ))?,
            Swatch::Dashed(c) => {
                for dx in [0, 7, 14] {
                    area.draw(&PathElement::new(
                        vec![(x + dx, y), (x + dx + 4, y)],
                        c.stroke_width(2),
                    ))?;
                }
            }
            Swatch::Block(c) => {
                area.draw(&Rectangle::new([(*x, y - 5), (x + 16, y + 5)], c.filled()))?
            }
        }
        area.draw(&Text::new(e.text.clone(), (x + 22, y - 6), small(&TEXT)))?;
    }
    if hidden > 0 {
        let y = 4 + (rows as i32 - 1) * LEGEND_ROW as i32 + 2;
        area.draw(&Text::new(
            format!("… and {hidden} more series"),
            (8, y),
            small(&MUTED),
        ))?;
    }
    Ok(())
}

/// Renders into an SVG string: `body` gets the area below the title.
fn svg(
    size: (u32, u32),
    title: Option<&str>,
    body: impl FnOnce(&Area) -> DrawResult,
) -> anyhow::Result<String> {
    let height = size.1 + if title.is_some() { TITLE_H } else { 0 };
    let mut buf = String::new();
    // plotters asserts on some inputs; a chart it cannot draw must not take
    // the whole report down.
    let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> DrawResult {
        let root = SVGBackend::with_string(&mut buf, (size.0, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let area = match title {
            Some(t) => {
                let (head, rest) = root.split_vertically(TITLE_H);
                head.draw(&Text::new(
                    t.to_owned(),
                    (8, 7),
                    (FONT, TITLE)
                        .into_font()
                        .style(FontStyle::Bold)
                        .color(&TEXT),
                ))?;
                rest
            }
            None => root.clone(),
        };
        body(&area)?;
        root.present()?;
        Ok(())
    }));
    match drawn {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(anyhow::anyhow!("drawing a chart: {e}")),
        Err(_) => Err(anyhow::anyhow!("drawing a chart: plotters panicked")),
    }
}

/// A box with a centred message ("No data", a panel's noValue text).
pub fn message(text: &str, size: Size, title: Option<&str>) -> anyhow::Result<String> {
    svg((size.width, size.height), title, |area| {
        let (w, h) = area.dim_in_pixel();
        area.draw(&Rectangle::new(
            [(4, 4), (w as i32 - 4, h as i32 - 4)],
            ShapeStyle::from(&RGBColor(248, 248, 248)).filled(),
        ))?;
        area.draw(&Rectangle::new(
            [(4, 4), (w as i32 - 4, h as i32 - 4)],
            RGBColor(200, 200, 200).stroke_width(1),
        ))?;
        let style = (FONT, 18.0)
            .into_font()
            .color(&MUTED)
            .pos(Pos::new(HPos::Center, VPos::Center));
        area.draw(&Text::new(
            text.to_owned(),
            (w as i32 / 2, h as i32 / 2),
            style,
        ))?;
        Ok(())
    })
}

/// Round tick intervals for a time axis, in seconds.
const TICK_STEPS: [f64; 20] = [
    1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 604800.0,
];

/// Times on a round interval (10 s, 1 min, 5 min, 1 h, ... in UTC) that
/// give at most `max` ticks between `x0` and `x1`, and that interval.
fn time_ticks(x0: f64, x1: f64, max: usize) -> (Vec<f64>, f64) {
    let span = (x1 - x0).max(1.0);
    let max = max.max(1) as f64;
    let step = TICK_STEPS
        .iter()
        .copied()
        .find(|s| span / s <= max)
        .unwrap_or_else(|| (span / max / 604800.0).ceil() * 604800.0);
    let mut ticks = Vec::new();
    let mut t = (x0 / step).ceil() * step;
    while t <= x1 + 1e-6 {
        ticks.push(t);
        t += step;
    }
    (ticks, step)
}

/// A tick label in UTC: "HH:MM:SS" for ticks under a minute apart,
/// "HH:MM" within two days, else "MM-DD HH:MM".
fn time_label(t: f64, tick_step: f64, span: f64) -> String {
    let secs = t.max(0.0).round() as u64;
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
    )
    .to_string();
    // YYYY-MM-DDTHH:MM:SSZ
    if tick_step < 60.0 {
        text[11..19].to_owned()
    } else if span <= 2.0 * 86400.0 {
        text[11..16].to_owned()
    } else {
        format!("{} {}", &text[5..10], &text[11..16])
    }
}

/// The x axis of a time chart: the window, with ticks at round times
/// (plotters' own f64 axis would put them at round numbers of seconds).
#[derive(Clone)]
struct TimeAxis {
    x: (f64, f64),
    ticks: Vec<f64>,
    step: f64,
}

impl TimeAxis {
    fn new(x: (f64, f64), width: u32) -> Self {
        let (ticks, step) = time_ticks(x.0, x.1, (width / 90).max(2) as usize);
        Self { x, ticks, step }
    }

    fn label(&self, t: &f64) -> String {
        time_label(*t, self.step, self.x.1 - self.x.0)
    }
}

impl Ranged for TimeAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.x.1 - self.x.0;
        if span <= 0.0 {
            return (limit.0 + limit.1) / 2;
        }
        let f = (value - self.x.0) / span;
        limit.0 + ((limit.1 - limit.0) as f64 * f + 1e-3).floor() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.x.0..self.x.1
    }
}

impl ValueFormatter<f64> for TimeAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.label(value)
    }
}

/// Splits a series where points are more than 1.5 steps apart or not
/// finite, and clips values to the axis range `y` (as the plot area would).
fn segments(points: &[(f64, f64)], step: f64, y: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for &(t, v) in points {
        let v = v.clamp(y.0, y.1);
        if !v.is_finite() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            continue;
        }
        if let Some(&(last, _)) = current.last() {
            if t - last > step * 1.5 {
                out.push(std::mem::take(&mut current));
            }
        }
        current.push((t, v));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Y bounds from the data, the axis' fixed min/max and nearby thresholds.
fn y_range(values: &[f64], axis: &Axis, thresholds: &[f64]) -> (f64, f64) {
    // Beyond ±1e300 the span itself would overflow.
    let finite: Vec<f64> = values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && v.abs() < 1e300)
        .collect();
    let (mut lo, mut hi) = if finite.is_empty() {
        (0.0, 1.0)
    } else {
        (
            finite.iter().copied().fold(f64::INFINITY, f64::min),
            finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    if let Some(m) = axis.min {
        lo = lo.min(m);
    }
    if let Some(m) = axis.max {
        hi = hi.max(m);
    }
    if hi - lo < 1e-12 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        if lo >= 0.0 && lo - pad < 0.0 {
            hi += pad;
        } else {
            lo -= pad;
            hi += pad;
        }
    }
    // Thresholds within one data span of the data are brought into view.
    let span = hi - lo;
    for &t in thresholds {
        if t > hi && t <= hi + span {
            hi = t;
        } else if t < lo && t >= lo - span {
            lo = t;
        }
    }
    let span = hi - lo;
    if axis.max.is_none() {
        hi += span * 0.05;
    }
    if axis.min.is_none() && lo != 0.0 {
        let padded = lo - span * 0.05;
        lo = if lo > 0.0 && padded < 0.0 {
            0.0
        } else {
            padded
        };
    }
    if let Some(m) = axis.min {
        lo = m;
    }
    if let Some(m) = axis.max {
        hi = m;
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    (lo, hi)
}

/// Stacks the lines: for each, the (t, lower, upper) band at every time
/// any of them has a point (a missing value counts as 0).
fn stack(lines: &[&Line]) -> Vec<Vec<(f64, f64, f64)>> {
    let mut times: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    times.sort_by(f64::total_cmp);
    times.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
    let mut base = vec![0.0; times.len()];
    let mut out = Vec::new();
    for line in lines {
        let mut band = Vec::with_capacity(times.len());
        let mut j = 0;
        for (i, &t) in times.iter().enumerate() {
            while j < line.points.len() && line.points[j].0 < t - 1e-6 {
                j += 1;
            }
            let v = match line.points.get(j) {
                Some(&(pt, v)) if (pt - t).abs() < 1e-6 && v.is_finite() => v,
                _ => 0.0,
            };
            band.push((t, base[i], base[i] + v));
            base[i] += v;
        }
        out.push(band);
    }
    out
}

fn y_label_width(lo: f64, hi: f64, axis: &Axis) -> u32 {
    let longest = [lo, hi, (lo + hi) / 2.0, hi * 0.8]
        .iter()
        .map(|v| units::format(*v, &axis.unit, axis.decimals).chars().count())
        .max()
        .unwrap_or(4);
    (longest as f64 * CHAR_W + 12.0) as u32
}

/// A time-series chart: lines (or stacked bands), dashed thresholds, a
/// left axis and, when any line asks for it, a right axis; legend below.
pub fn time_chart(chart: &TimeChart, size: Size, title: Option<&str>) -> anyhow::Result<String> {
    let mut entries: Vec<LegendEntry> = chart
        .lines
        .iter()
        .map(|l| LegendEntry {
            swatch: if l.dashed {
                Swatch::Dashed(l.color)
            } else if chart.stacked && !l.right {
                Swatch::Block(l.color)
            } else {
                Swatch::Line(l.color)
            },
            text: if l.right {
                format!("{} (right axis)", l.name)
            } else {
                l.name.clone()
            },
        })
        .collect();
    for t in &chart.thresholds {
        let axis = if t.right { &chart.right } else { &chart.left };
        entries.push(LegendEntry {
            swatch: Swatch::Dashed(t.color),
            text: format!(
                "threshold {}",
                units::format(t.value, &axis.unit, axis.decimals)
            ),
        });
    }
    let legend_h = legend_height(&entries, size.width);
    let (left_lines, right_lines): (Vec<&Line>, Vec<&Line>) =
        chart.lines.iter().partition(|l| !l.right);
    let stacked = if chart.stacked {
        stack(&left_lines)
    } else {
        Vec::new()
    };
    let left_values: Vec<f64> = if chart.stacked {
        stacked.iter().flatten().flat_map(|b| [b.1, b.2]).collect()
    } else {
        left_lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .collect()
    };
    let right_values: Vec<f64> = right_lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .collect();
    let thresholds_on = |right: bool| -> Vec<f64> {
        chart
            .thresholds
            .iter()
            .filter(|t| t.right == right)
            .map(|t| t.value)
            .collect()
    };
    let (ylo, yhi) = y_range(&left_values, &chart.left, &thresholds_on(false));
    let has_right = !right_lines.is_empty();
    let (rlo, rhi) = if has_right {
        y_range(&right_values, &chart.right, &thresholds_on(true))
    } else {
        (ylo, yhi)
    };
    let (x0, x1) = chart.x;
    let x_axis = TimeAxis::new(chart.x, size.width);
    let x_fmt = |t: &f64| x_axis.label(t);

    svg((size.width, size.height + legend_h), title, |area| {
        let (plot, legend) = area.split_vertically(size.height);
        let mut ctx = ChartBuilder::on(&plot)
            .margin_top(8)
            .margin_left(4)
            .margin_right(if has_right { 4 } else { 14 })
            .x_label_area_size(22)
            .y_label_area_size(y_label_width(ylo, yhi, &chart.left))
            .right_y_label_area_size(if has_right {
                y_label_width(rlo, rhi, &chart.right)
            } else {
                0
            })
            .build_cartesian_2d(x_axis.clone(), ylo..yhi)?
            .set_secondary_coord(x_axis.clone(), rlo..rhi);
        let y_labels = (size.height / 45).clamp(2, 8) as usize;
        let left_fmt = |v: &f64| units::format(*v, &chart.left.unit, chart.left.decimals);
        let right_fmt = |v: &f64| units::format(*v, &chart.right.unit, chart.right.decimals);
        ctx.configure_mesh()
            .x_labels(64)
            .y_labels(y_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&left_fmt)
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .label_style(small(&MUTED))
            .draw()?;
        if has_right {
            ctx.configure_secondary_axes()
                .y_labels(y_labels)
                .y_label_formatter(&right_fmt)
                .axis_style(AXIS)
                .label_style(small(&MUTED))
                .draw()?;
        }
        if chart.stacked {
            for (line, band) in left_lines.iter().zip(&stacked) {
                for seg in segments(
                    &band.iter().map(|b| (b.0, b.2)).collect::<Vec<_>>(),
                    chart.step,
                    (ylo, yhi),
                ) {
                    let (first, last) = (seg[0].0, seg[seg.len() - 1].0);
                    let lower: Vec<(f64, f64)> = band
                        .iter()
                        .filter(|b| b.0 >= first && b.0 <= last)
                        .map(|b| (b.0, b.1.clamp(ylo, yhi)))
                        .rev()
                        .collect();
                    let mut outline = seg.clone();
                    outline.extend(lower);
                    ctx.draw_series(std::iter::once(Polygon::new(
                        outline,
                        line.color.mix(0.35).filled(),
                    )))?;
                    ctx.draw_series(LineSeries::new(seg, line.color.stroke_width(2)))?;
                }
            }
        } else {
            for line in &left_lines {
                for seg in segments(&line.points, chart.step, (ylo, yhi)) {
                    if line.dashed {
                        ctx.draw_series(DashedLineSeries::new(
                            seg,
                            8,
                            6,
                            line.color.stroke_width(2),
                        ))?;
                    } else {
                        ctx.draw_series(LineSeries::new(seg, line.color.stroke_width(2)))?;
                    }
                }
            }
        }
        for line in &right_lines {
            for seg in segments(&line.points, chart.step, (rlo, rhi)) {
                if line.dashed {
                    ctx.draw_secondary_series(DashedLineSeries::new(
                        seg,
                        8,
                        6,
                        line.color.stroke_width(2),
                    ))?;
                } else {
                    ctx.draw_secondary_series(LineSeries::new(seg, line.color.stroke_width(2)))?;
                }
            }
        }
        for m in chart
            .markers
            .iter()
            .filter(|m| m.end >= x0 && m.start <= x1)
        {
            let (start, end) = (m.start.max(x0), m.end.min(x1));
            if end > start {
                ctx.draw_series(std::iter::once(Rectangle::new(
                    [(start, ylo), (end, yhi)],
                    m.color.mix(0.12).filled(),
                )))?;
            }
            ctx.draw_series(DashedLineSeries::new(
                vec![(start, ylo), (start, yhi)],
                3,
                3,
                m.color.stroke_width(1),
            ))?;
        }
        for t in &chart.thresholds {
            let style = t.color.stroke_width(1);
            let points = vec![(x0, t.value), (x1, t.value)];
            if t.right && has_right {
                if t.value >= rlo && t.value <= rhi {
                    ctx.draw_secondary_series(DashedLineSeries::new(points, 6, 4, style))?;
                }
            } else if t.value >= ylo && t.value <= yhi {
                ctx.draw_series(DashedLineSeries::new(points, 6, 4, style))?;
            }
        }
        draw_legend(&legend, &entries, size.width)
    })
}

/// Stat panels: per series a cell with its name, the value in large type
/// and a sparkline of the range behind it.
pub fn stat(
    values: &[StatValue],
    x: (f64, f64),
    step: f64,
    size: Size,
    title: Option<&str>,
) -> anyhow::Result<String> {
    let n = values.len().max(1);
    let cols = n.min((size.width / 120).max(1) as usize);
    let rows = n.div_ceil(cols);
    let height = size.height.max(rows as u32 * 70);
    svg((size.width, height), title, |area| {
        let cells = area.split_evenly((rows, cols));
        for (value, cell) in values.iter().zip(cells) {
            let cell = cell.margin(3, 3, 3, 3);
            let (w, h) = cell.dim_in_pixel();
            let (fg, bg) = if value.background {
                (WHITE, value.color)
            } else {
                (value.color, WHITE)
            };
            cell.fill(&bg)?;
            let finite: Vec<f64> = value
                .points
                .iter()
                .map(|p| p.1)
                .filter(|v| v.is_finite())
                .collect();
            if finite.len() > 1 {
                let (lo, hi) = y_range(&finite, &Axis::default(), &[]);
                let (_, lower) = cell.split_vertically(h as i32 / 2);
                let mut spark = ChartBuilder::on(&lower).build_cartesian_2d(x.0..x.1, lo..hi)?;
                let line = if value.background { WHITE } else { value.color };
                for seg in segments(&value.points, step, (lo, hi)) {
                    spark.draw_series(
                        AreaSeries::new(seg, lo, line.mix(0.18)).border_style(line.mix(0.7)),
                    )?;
                }
            }
            if !value.name.is_empty() {
                cell.draw(&Text::new(
                    value.name.clone(),
                    (w as i32 / 2, 4),
                    small(if value.background { &WHITE } else { &MUTED })
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
            let chars = value.text.chars().count().max(1) as f64;
            let by_width = w as f64 / (chars * 0.62) * 1.24;
            let by_height = h as f64 * 0.42 * 1.24;
            let font = by_width.min(by_height).clamp(12.0, 64.0);
            cell.draw(&Text::new(
                value.text.clone(),
                (
                    w as i32 / 2,
                    h as i32 / 2 + if value.name.is_empty() { 0 } else { 6 },
                ),
                (FONT, font)
                    .into_font()
                    .style(FontStyle::Bold)
                    .color(&fg)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
        }
        Ok(())
    })
}

/// Horizontal bars from `min` to `max`, value text at the right.
pub fn bar_gauge(
    bars: &[Bar],
    min: f64,
    max: f64,
    size: Size,
    title: Option<&str>,
) -> anyhow::Result<String> {
    let row_h = 24u32;
    let height = size.height.max(bars.len() as u32 * row_h + 12);
    let name_w = bars
        .iter()
        .map(|b| text_width(&b.name))
        .fold(40.0, f64::max)
        .min(size.width as f64 * 0.45) as i32
        + 12;
    let value_w = bars
        .iter()
        .map(|b| text_width(&b.text))
        .fold(30.0, f64::max) as i32
        + 14;
    svg((size.width, height), title, |area| {
        let (w, _) = area.dim_in_pixel();
        let bar_x0 = name_w;
        let bar_x1 = (w as i32 - value_w).max(bar_x0 + 20);
        let span = if max > min { max - min } else { 1.0 };
        for (i, b) in bars.iter().enumerate() {
            let y = 6 + i as i32 * row_h as i32;
            area.draw(&Text::new(
                b.name.clone(),
                (name_w - 8, y + row_h as i32 / 2 - 2),
                small(&TEXT).pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
            area.draw(&Rectangle::new(
                [(bar_x0, y + 3), (bar_x1, y + row_h as i32 - 5)],
                RGBColor(240, 240, 240).filled(),
            ))?;
            let frac = ((b.value - min) / span).clamp(0.0, 1.0);
            let end = bar_x0 + ((bar_x1 - bar_x0) as f64 * frac).round() as i32;
            if end > bar_x0 {
                area.draw(&Rectangle::new(
                    [(bar_x0, y + 3), (end, y + row_h as i32 - 5)],
                    b.color.filled(),
                ))?;
            }
            area.draw(&Text::new(
                b.text.clone(),
                (bar_x1 + 6, y + row_h as i32 / 2 - 2),
                (FONT, SMALL)
                    .into_font()
                    .style(FontStyle::Bold)
                    .color(&b.color)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    })
}

/// Oranges, from pale to dark, at `f` in [0, 1].
fn orange(f: f64) -> RGBColor {
    let (a, b) = ((254.0, 230.0, 206.0), (166.0, 54.0, 3.0));
    let mix = |x: f64, y: f64| (x + (y - x) * f.clamp(0.0, 1.0)).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A heatmap of bucket counts over time, colour on a square-root scale.
pub fn heatmap(map: &Heatmap, size: Size, title: Option<&str>) -> anyhow::Result<String> {
    let max = map.cells.iter().map(|c| c.2).fold(0.0, f64::max);
    let entries = vec![
        LegendEntry {
            swatch: Swatch::Block(orange(0.15)),
            text: "few".to_owned(),
        },
        LegendEntry {
            swatch: Swatch::Block(orange(1.0)),
            text: format!(
                "many (max {} in a bucket)",
                units::format(max, &map.unit, None)
            ),
        },
    ];
    let legend_h = legend_height(&entries, size.width);
    let n = map.buckets.len().max(1);
    let x0 = map.x.0;
    let x_axis = TimeAxis::new(map.x, size.width);
    let x_fmt = |t: &f64| x_axis.label(t);
    svg((size.width, size.height + legend_h), title, |area| {
        let (plot, legend) = area.split_vertically(size.height);
        let longest = map
            .buckets
            .iter()
            .map(|b| b.chars().count())
            .max()
            .unwrap_or(3);
        let mut ctx = ChartBuilder::on(&plot)
            .margin_top(8)
            .margin_right(14)
            .margin_left(4)
            .x_label_area_size(22)
            .y_label_area_size((longest as f64 * CHAR_W + 12.0) as u32)
            .build_cartesian_2d(x_axis.clone(), 0.0..n as f64)?;
        let label_every = n.div_ceil(((size.height / 18).max(2)) as usize).max(1);
        let y_fmt = |v: &f64| {
            let i = v.round();
            if (v - i).abs() > 1e-6 || i < 1.0 {
                return String::new();
            }
            let i = i as usize;
            if !(i - 1).is_multiple_of(label_every) {
                return String::new();
            }
            map.buckets.get(i - 1).cloned().unwrap_or_default()
        };
        ctx.configure_mesh()
            .x_labels(64)
            .y_labels(n + 1)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .label_style(small(&MUTED))
            .draw()?;
        if max > 0.0 {
            ctx.draw_series(map.cells.iter().filter(|c| c.2 > 1e-9).map(|&(t, i, v)| {
                let f = (v / max).sqrt();
                Rectangle::new(
                    [
                        ((t - map.step).max(x0), i as f64 + 0.04),
                        (t, i as f64 + 0.96),
                    ],
                    orange(0.1 + 0.9 * f).filled(),
                )
            }))?;
        }
        draw_legend(&legend, &entries, size.width)
    })
}

/// One row per alert with a bar for every span it was pending or firing.
pub fn timeline(
    rows: &[TimelineRow],
    x: (f64, f64),
    step: f64,
    legend: &[(&str, RGBColor)],
    size: Size,
    title: Option<&str>,
) -> anyhow::Result<String> {
    let row_h = 30u32;
    let body_h = size.height.max(rows.len() as u32 * row_h + 34);
    let entries: Vec<LegendEntry> = legend
        .iter()
        .map(|(t, c)| LegendEntry {
            swatch: Swatch::Block(*c),
            text: (*t).to_owned(),
        })
        .collect();
    let legend_h = legend_height(&entries, size.width);
    let (x0, x1) = x;
    let x_axis = TimeAxis::new(x, size.width);
    let x_fmt = |t: &f64| x_axis.label(t);
    let n = rows.len().max(1) as f64;
    svg((size.width, body_h + legend_h), title, |area| {
        let (plot, legend_area) = area.split_vertically(body_h);
        let mut ctx = ChartBuilder::on(&plot)
            .margin_top(6)
            .margin_left(10)
            .margin_right(14)
            .x_label_area_size(22)
            .build_cartesian_2d(x_axis.clone(), 0.0..n)?;
        ctx.configure_mesh()
            .x_labels(64)
            .y_labels(0)
            .x_label_formatter(&x_fmt)
            .disable_y_mesh()
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(GRID)
            .axis_style(AXIS)
            .label_style(small(&MUTED))
            .draw()?;
        for (i, row) in rows.iter().enumerate() {
            let top = n - i as f64;
            ctx.draw_series(row.spans.iter().map(|&(s, e, c)| {
                Rectangle::new(
                    [(s.max(x0), top - 0.92), ((e + step).min(x1), top - 0.55)],
                    c.filled(),
                )
            }))?;
            ctx.draw_series(std::iter::once(
                EmptyElement::at((x0, top - 0.08))
                    + Text::new(row.label.clone(), (4, 0), small(&TEXT)),
            ))?;
        }
        draw_legend(&legend_area, &entries, size.width)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_and_hex_colours() {
        assert_eq!(color("green"), Some(RGBColor(0x73, 0xBF, 0x69)));
        assert_eq!(color("dark-red"), Some(RGBColor(0xC4, 0x16, 0x2A)));
        assert_eq!(color("#ff0000"), Some(RGBColor(255, 0, 0)));
        assert_eq!(color("#0f0"), Some(RGBColor(0, 255, 0)));
        assert_eq!(color("rgba(10, 20, 30, 0.5)"), Some(RGBColor(10, 20, 30)));
        assert_eq!(color("chartreuse"), None);
    }

    #[test]
    fn y_range_brings_near_thresholds_into_view_and_honours_min_max() {
        let axis = Axis::default();
        let (lo, hi) = y_range(&[0.0, 0.05], &axis, &[0.1]);
        assert!(lo <= 0.0 && hi >= 0.1, "{lo}..{hi}");
        // A threshold far above the data stays off the chart.
        let (_, hi) = y_range(&[0.0, 50e6], &axis, &[1.6e9]);
        assert!(hi < 1e9);
        let fixed = Axis {
            min: Some(0.0),
            max: Some(1.0),
            ..Axis::default()
        };
        assert_eq!(y_range(&[0.2, 0.4], &fixed, &[]), (0.0, 1.0));
        let (lo, hi) = y_range(&[5.0, 5.0], &axis, &[]);
        assert!(lo < 5.0 && hi > 5.0);
    }

    #[test]
    fn time_ticks_are_round_and_labels_fit_the_interval() {
        // 30 minutes, at most 6 ticks: every 5 minutes on the minute.
        let (ticks, step) = time_ticks(1_700_000_010.0, 1_700_001_810.0, 6);
        assert_eq!(step, 300.0);
        assert!(ticks.iter().all(|t| t % 300.0 == 0.0) && ticks.len() <= 7);
        assert_eq!(time_label(1_700_000_100.0, 300.0, 1800.0), "22:15");
        assert_eq!(time_label(1_700_000_115.0, 15.0, 300.0), "22:15:15");
        assert_eq!(
            time_label(1_700_000_100.0, 86400.0, 864000.0),
            "11-14 22:15"
        );
    }

    #[test]
    fn extreme_values_still_draw() {
        let chart = TimeChart {
            x: (0.0, 100.0),
            step: 1.0,
            lines: vec![Line {
                name: "x".into(),
                color: palette(0),
                points: vec![
                    (0.0, 1e308),
                    (1.0, -1e308),
                    (2.0, 1e-300),
                    (3.0, f64::INFINITY),
                ],
                right: false,
                dashed: true,
            }],
            thresholds: Vec::new(),
            stacked: true,
            left: Axis::default(),
            right: Axis::default(),
            markers: vec![],
        };
        let size = Size {
            width: 100,
            height: 60,
        };
        assert!(time_chart(&chart, size, None).is_ok());
        assert!(stat(&[], (0.0, 1.0), 1.0, size, None).is_ok());
        assert!(bar_gauge(&[], 0.0, 0.0, size, None).is_ok());
    }

    #[test]
    fn gaps_split_lines() {
        let points = [
            (0.0, 1.0),
            (1.0, 1.0),
            (5.0, 2.0),
            (6.0, f64::NAN),
            (7.0, 3.0),
        ];
        let segs = segments(&points, 1.0, (0.0, 2.5));
        assert_eq!(segs[2], vec![(7.0, 2.5)], "clipped to the axis");
        assert_eq!(segs.len(), 3);
    }

    #[test]
    fn stacking_adds_bands_in_order() {
        let a = Line {
            name: "a".into(),
            color: palette(0),
            points: vec![(0.0, 1.0), (1.0, 2.0)],
            right: false,
            dashed: false,
        };
        let b = Line {
            points: vec![(1.0, 3.0)],
            ..a.clone()
        };
        let bands = stack(&[&a, &b]);
        assert_eq!(bands[1], vec![(0.0, 1.0, 1.0), (1.0, 2.0, 5.0)]);
    }

    #[test]
    fn charts_render_to_svg() {
        let chart = TimeChart {
            x: (1_700_000_000.0, 1_700_000_300.0),
            step: 10.0,
            lines: vec![Line {
                name: "p95 & <co>".into(),
                color: palette(0),
                points: (0..30)
                    .map(|i| (1_700_000_000.0 + i as f64 * 10.0, i as f64 * 0.01))
                    .collect(),
                right: false,
                dashed: false,
            }],
            thresholds: vec![Threshold {
                value: 0.25,
                color: RED,
                right: false,
            }],
            stacked: false,
            left: Axis {
                unit: "s".into(),
                ..Axis::default()
            },
            right: Axis::default(),
            markers: vec![Marker {
                start: 1_700_000_100.0,
                end: 1_700_000_150.0,
                color: palette(3),
            }],
        };
        let size = Size {
            width: 600,
            height: 240,
        };
        let svg = time_chart(&chart, size, Some("Latency")).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("p95 &amp; &lt;co&gt;"));
        assert!(svg.contains("threshold 250 ms"));
        assert!(svg.contains("Latency"));
        let svg = message("No data", size, None).unwrap();
        assert!(svg.contains("No data"));
    }
}
