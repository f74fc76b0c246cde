//! The report page: one self-contained HTML file.
//!
//! Dashboards become top-level sections, their rows sub-sections, and every
//! panel a `<figure class="panel">` with its title, description, one inline
//! SVG chart and, for tables and alert lists, an HTML table. The Alerts and
//! Model sections follow. The CSS is inline; there is no script and no
//! reference to anything outside the file, so it opens offline and prints
//! to PDF as it looks.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::alerts::Interval;
use super::dashboard::Dashboard;
use super::panel::{AlertData, Rendered, Table, Window};
use super::{rfc3339, units};

/// Everything the page shows.
pub struct Page<'a> {
    pub title: &'a str,
    pub prometheus: &'a str,
    pub window: Window,
    pub variables: &'a BTreeMap<String, String>,
    pub generated_at: f64,
    /// Each dashboard with its rendered panels, section by section.
    pub dashboards: Vec<(&'a Dashboard, Vec<Vec<Rendered>>)>,
    pub alerts: &'a AlertData,
    /// (heading, table, text when the table is empty).
    pub models: Vec<(String, Table, String)>,
    /// Annotation events by dashboard uid (also drawn on its time series).
    pub annotations: &'a BTreeMap<String, Vec<super::annotations::Event>>,
}

/// `&`, `<`, `>` and quotes escaped, for text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { --fg: #222; --muted: #666; --line: #ddd; --bg: #fff; --soft: #f6f7f9; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: var(--fg); background: var(--bg); margin: 0 auto; padding: 24px; max-width: 1320px; line-height: 1.4; }
h1 { font-size: 1.7em; margin: 0 0 .3em; }
h2 { font-size: 1.4em; border-bottom: 2px solid var(--line); padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.15em; margin: 1.4em 0 .2em; }
h4 { font-size: .95em; margin: 0; }
p { margin: .3em 0; }
.muted, .description { color: var(--muted); }
.description { font-size: .85em; }
.meta { border-collapse: collapse; margin: .6em 0 1em; }
.meta th { text-align: left; padding: 2px 16px 2px 0; color: var(--muted); font-weight: normal; }
nav ul { margin: .2em 0; padding-left: 1.2em; }
.grid { display: grid; grid-template-columns: repeat(24, 1fr); gap: 10px; }
.panel { margin: 0; padding: 8px 10px; border: 1px solid var(--line); border-radius: 4px;
  background: var(--bg); min-width: 0; break-inside: avoid; page-break-inside: avoid; }
.panel svg { display: block; width: 100%; height: auto; margin-top: 6px; }
.panel[data-state="error"] { border-color: #e0a0a0; }
.errors { color: #a00; font-size: .8em; white-space: pre-wrap; }
.links { font-size: .8em; color: var(--muted); }
table.data { border-collapse: collapse; width: 100%; font-size: .82em; margin-top: 6px; }
table.data th, table.data td { border-bottom: 1px solid var(--line); padding: 3px 6px; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
table.data th { background: var(--soft); }
.empty { color: var(--muted); font-style: italic; font-size: .85em; }
code { font-size: .9em; }
footer { margin-top: 3em; color: var(--muted); font-size: .8em; }
@media (max-width: 900px) { .panel { grid-column: span 24 !important; } }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.dashboard { break-before: page; }
  h2, h3 { break-after: avoid; }
}
"#;

fn table_html(out: &mut String, table: &Table) {
    out.push_str("<table class=\"data\"><thead><tr>");
    for c in &table.columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &table.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// The dashboard's annotation events in a table (the charts mark them as
/// dashed vertical lines, bands while they last).
fn annotations_html(out: &mut String, d: &Dashboard, events: Option<&[super::annotations::Event]>) {
    if d.annotations.is_empty() {
        return;
    }
    let names: Vec<&str> = d.annotations.iter().map(|a| a.name.as_str()).collect();
    let _ = write!(
        out,
        "<section class=\"annotations\" data-dashboard=\"{}\">\n<h3>Annotations</h3>\n\
         <p class=\"description\">{} — dashed lines on the time series below.</p>\n",
        escape(&d.uid),
        escape(&names.join(", "))
    );
    let events = events.unwrap_or(&[]);
    if events.is_empty() {
        out.push_str("<p class=\"empty\">No annotation events in this range.</p>\n");
    } else {
        let table = Table {
            columns: ["from", "to", "annotation", "event", "detail"]
                .map(String::from)
                .to_vec(),
            rows: events
                .iter()
                .map(|e| {
                    vec![
                        when(e.start),
                        when(e.end),
                        e.annotation.clone(),
                        e.title.clone(),
                        e.text.clone(),
                    ]
                })
                .collect(),
        };
        table_html(out, &table);
    }
    out.push_str("</section>\n");
}

fn anchor(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// "2025-01-31 14:00:00" (UTC; the page says so once).
fn when(t: f64) -> String {
    rfc3339(t)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// The page as one HTML string.
pub fn page(p: &Page) -> String {
    let mut out = String::with_capacity(1 << 20);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        escape(p.title)
    );
    let duration = units::format(p.window.end - p.window.start, "s", None);
    let _ = write!(
        out,
        "<header>\n<h1>{}</h1>\n<table class=\"meta\">\
         <tr><th>Time range (UTC)</th><td>{} → {} ({duration})</td></tr>\
         <tr><th>Query step</th><td>{}</td></tr>\
         <tr><th>Prometheus</th><td><code>{}</code></td></tr>\
         <tr><th>Variables</th><td>{}</td></tr>\
         <tr><th>Generated</th><td>{} by mlwatch {} (<code>mlwatch report</code>)</td></tr>\
         </table>\n",
        escape(p.title),
        when(p.window.start),
        when(p.window.end),
        units::format(p.window.step, "s", None),
        escape(p.prometheus),
        if p.variables.is_empty() {
            "all values (<code>.*</code>)".to_owned()
        } else {
            p.variables
                .iter()
                .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(v)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        when(p.generated_at),
        env!("CARGO_PKG_VERSION"),
    );
    out.push_str("<nav><ul>");
    for (d, _) in &p.dashboards {
        let _ = write!(
            out,
            "<li><a href=\"#{}\">{}</a></li>",
            escape(&anchor(&d.uid)),
            escape(&d.title)
        );
    }
    out.push_str(
        "<li><a href=\"#alerts\">Alerts</a></li><li><a href=\"#model\">Model</a></li></ul></nav>\n</header>\n",
    );

    for (d, sections) in &p.dashboards {
        let _ = write!(
            out,
            "<section class=\"dashboard\" id=\"{}\">\n<h2>{}</h2>\n<p class=\"description\">{}</p>\n",
            escape(&anchor(&d.uid)),
            escape(&d.title),
            escape(&d.description)
        );
        annotations_html(&mut out, d, p.annotations.get(&d.uid).map(Vec::as_slice));
        for (section, rendered) in d.sections.iter().zip(sections) {
            out.push_str("<section class=\"row\">\n");
            if let Some(title) = &section.title {
                let _ = writeln!(out, "<h3>{}</h3>", escape(title));
            }
            if !section.description.is_empty() {
                let _ = writeln!(
                    out,
                    "<p class=\"description\">{}</p>",
                    escape(&section.description)
                );
            }
            out.push_str("<div class=\"grid\">\n");
            for (panel, r) in section.panels.iter().zip(rendered) {
                let _ = write!(
                    out,
                    "<figure class=\"panel\" id=\"{}-{}\" data-dashboard=\"{}\" data-panel-id=\"{}\" \
                     data-type=\"{}\" data-state=\"{}\" style=\"grid-column: span {}\">\n\
                     <figcaption><h4>{}</h4><p class=\"description\">{}</p></figcaption>\n",
                    escape(&anchor(&d.uid)),
                    panel.id,
                    escape(&d.uid),
                    panel.id,
                    escape(panel.kind.name()),
                    r.state.as_str(),
                    panel.width,
                    escape(&panel.title),
                    escape(&panel.description),
                );
                out.push_str(&r.svg);
                if let Some(table) = &r.table {
                    if !table.rows.is_empty() {
                        table_html(&mut out, table);
                    }
                }
                if let Some(text) = &r.empty_table_text {
                    let _ = write!(out, "<p class=\"empty\">{}</p>", escape(text));
                }
                if !r.errors.is_empty() {
                    let _ = write!(
                        out,
                        "<p class=\"errors\">{}</p>",
                        escape(&r.errors.join("\n"))
                    );
                }
                if !panel.links.is_empty() {
                    let links: Vec<String> = panel
                        .links
                        .iter()
                        .map(|(title, url)| {
                            format!("{}: <code>{}</code>", escape(title), escape(url))
                        })
                        .collect();
                    let _ = write!(out, "<p class=\"links\">{}</p>", links.join(" · "));
                }
                out.push_str("\n</figure>\n");
            }
            out.push_str("</div>\n</section>\n");
        }
        out.push_str("</section>\n");
    }

    alerts_section(&mut out, p);
    out.push_str("<section id=\"model\">\n<h2>Model</h2>\n");
    out.push_str(
        "<p class=\"description\">Every model_info (serving) and training_model_info \
         (training) label set seen in the range.</p>\n",
    );
    for (heading, table, empty) in &p.models {
        let _ = writeln!(out, "<h3>{}</h3>", escape(heading));
        if table.rows.is_empty() {
            let _ = writeln!(out, "<p class=\"empty\">{}</p>", escape(empty));
        } else {
            table_html(&mut out, table);
        }
    }
    out.push_str("</section>\n");
    let _ = write!(
        out,
        "<footer>Rendered from the provisioned Grafana dashboards' own queries against \
         <code>{}</code>. Times are UTC.</footer>\n</body>\n</html>\n",
        escape(p.prometheus)
    );
    out
}

fn alerts_section(out: &mut String, p: &Page) {
    out.push_str("<section id=\"alerts\">\n<h2>Alerts</h2>\n");
    let fired: Vec<&Interval> = p
        .alerts
        .intervals
        .iter()
        .filter(|i| i.state == "firing")
        .collect();
    let _ = write!(
        out,
        "<h3>Fired during the range</h3>\n<p class=\"description\">From \
         <code>ALERTS</code> sampled every {}; start and end are exact to one sample.</p>\n",
        units::format(p.alerts.step, "s", None)
    );
    if fired.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"empty\">No alert fired between {} and {}.</p>",
            when(p.window.start),
            when(p.window.end)
        );
    } else {
        let rows = fired
            .iter()
            .map(|i| {
                let summary = p
                    .alerts
                    .current
                    .iter()
                    .find(|a| {
                        a.labels.get("alertname") == Some(&i.alertname)
                            && i.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
                    })
                    .and_then(|a| a.annotations.get("summary").cloned())
                    .unwrap_or_default();
                // One sample: it fired for less than a step.
                let duration = if i.end - i.start < p.alerts.step {
                    format!("< {}", units::format(p.alerts.step, "s", None))
                } else {
                    units::format(i.end - i.start, "s", None)
                };
                vec![
                    i.alertname.clone(),
                    i.labels.get("severity").cloned().unwrap_or_default(),
                    i.labels
                        .iter()
                        .filter(|(k, _)| k.as_str() != "severity")
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if i.open_start {
                        format!("at or before {}", when(i.start))
                    } else {
                        when(i.start)
                    },
                    if i.open_end {
                        "still firing at the end".to_owned()
                    } else {
                        when(i.end)
                    },
                    if (i.open_start || i.open_end) && !duration.starts_with('<') {
                        format!("≥ {duration}")
                    } else {
                        duration
                    },
                    summary,
                ]
            })
            .collect();
        table_html(
            out,
            &Table {
                columns: [
                    "Alert", "Severity", "Labels", "Started", "Ended", "Duration", "Summary",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            },
        );
    }
    out.push_str(
        "<h3>Pending or firing at report time</h3>\n\
         <p class=\"description\">From Prometheus' <code>/api/v1/alerts</code> when the report was made.</p>\n",
    );
    if p.alerts.current.is_empty() {
        out.push_str("<p class=\"empty\">None.</p>\n");
    } else {
        let rows = p
            .alerts
            .current
            .iter()
            .map(|a| {
                vec![
                    a.name(),
                    a.state.clone(),
                    a.active_at.clone().unwrap_or_default(),
                    a.value.clone(),
                    a.other_labels(),
                    a.annotation("summary"),
                    a.annotation("runbook_url"),
                ]
            })
            .collect();
        table_html(
            out,
            &Table {
                columns: [
                    "Alert",
                    "State",
                    "Active since",
                    "Value",
                    "Labels",
                    "Summary",
                    "Runbook",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            },
        );
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">R² & 'q'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;R² &amp; &#39;q&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn tables_escape_cells() {
        let mut out = String::new();
        table_html(
            &mut out,
            &Table {
                columns: vec!["a<b".into()],
                rows: vec![vec!["x&y".into()]],
            },
        );
        assert!(out.contains("<th>a&lt;b</th>") && out.contains("<td>x&amp;y</td>"));
    }
}
