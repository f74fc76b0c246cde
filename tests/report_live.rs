//! The dashboards and `mlwatch report` against one live stack: two
//! trainers, two services (a regressor and a classifier), real Prometheus
//! and Alertmanager, mixed traffic until an alert fires. Every panel query
//! of every dashboard returns data (what Grafana would show); then the real
//! binary writes the report, checked against the dashboard JSON, the alerts
//! Prometheus fired and the served artifacts.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::queries::{dashboards, is_gpu_panel, panels, repo};
use common::stack::{assert_every_panel_has_data, drive_until_an_alert_fires, two_model_stack};
use serde_json::Value;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The value of `name="..."` in an HTML start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    let len = tag[start..].find('"').expect("closing quote");
    &tag[start..start + len]
}

/// One rendered panel figure of the page.
struct Figure {
    dashboard: String,
    id: i64,
    state: String,
    body: String,
}

fn figures(html: &str) -> Vec<Figure> {
    html.split("<figure class=\"panel\"")
        .skip(1)
        .map(|chunk| {
            let tag_end = chunk.find('>').expect("end of figure tag");
            let tag = &chunk[..tag_end];
            let body_end = chunk.find("</figure>").expect("figure closes");
            Figure {
                dashboard: attribute(tag, "data-dashboard").to_owned(),
                id: attribute(tag, "data-panel-id")
                    .parse()
                    .expect("numeric panel id"),
                state: attribute(tag, "data-state").to_owned(),
                body: chunk[tag_end..body_end].to_owned(),
            }
        })
        .collect()
}

/// With MLWATCH_KEEP_REPORT=DIR, copies the report and its SVGs there to
/// look at (the stack and its temp dir are gone once the test ends).
fn keep_for_inspection(html: &Path, svg_dir: &Path) {
    let Some(keep) = std::env::var_os("MLWATCH_KEEP_REPORT") else {
        return;
    };
    let keep = Path::new(&keep);
    std::fs::create_dir_all(keep).expect("create MLWATCH_KEEP_REPORT");
    std::fs::copy(html, keep.join("report.html")).expect("copy report");
    for dir in std::fs::read_dir(svg_dir).expect("svg dir").flatten() {
        let target = keep.join("svg").join(dir.file_name());
        std::fs::create_dir_all(&target).expect("create svg copy dir");
        for file in std::fs::read_dir(dir.path())
            .expect("dashboard dir")
            .flatten()
        {
            std::fs::copy(file.path(), target.join(file.file_name())).expect("copy svg");
        }
    }
}

#[test]
fn every_panel_has_live_data_and_the_report_draws_it_with_alerts_and_model() {
    // The report covers the whole run however long the machine takes:
    // "Now serving" exists only in the first 30 s after the first scrape.
    let started =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() - Duration::from_secs(60))
            .to_string();
    let stack = two_model_stack();
    let firing = drive_until_an_alert_fires(&stack);
    // What Grafana would show: no panel without data.
    assert_every_panel_has_data(&stack);
    // One more scrape and rule evaluation so the last traffic is in range.
    std::thread::sleep(Duration::from_secs(2));

    let out = tempfile::tempdir().expect("temp dir");
    let html_path = out.path().join("r.html");
    let svg_dir = out.path().join("svg");
    let run = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args([
            "report",
            "--prometheus",
            &stack.prometheus_url,
            "--start",
            &started,
        ])
        .arg("--output")
        .arg(&html_path)
        .arg("--svg-dir")
        .arg(&svg_dir)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("run mlwatch report");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "mlwatch report failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    let html = std::fs::read_to_string(&html_path).expect("report written");
    keep_for_inspection(&html_path, &svg_dir);

    // The dashboards' own panels, from the JSON: one figure and one chart each.
    let mut expected: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for (_, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().expect("uid").to_owned();
        for panel in panels(&dashboard) {
            if panel["type"] != "row" {
                let id = panel["id"].as_i64().expect("panel id");
                expected.insert((uid.clone(), id), panel);
            }
        }
    }
    assert!(
        expected.len() >= 50,
        "panels in the dashboards: {}",
        expected.len()
    );
    let figures = figures(&html);
    let seen: BTreeSet<(String, i64)> = figures
        .iter()
        .map(|f| (f.dashboard.clone(), f.id))
        .collect();
    assert_eq!(figures.len(), expected.len(), "one figure per panel");
    assert_eq!(
        seen,
        expected.keys().cloned().collect(),
        "figures are exactly the dashboard panels"
    );
    assert_eq!(
        html.matches("<svg ").count(),
        expected.len(),
        "one SVG chart per panel, and none elsewhere"
    );

    let mut without_data = Vec::new();
    for f in &figures {
        let panel = &expected[&(f.dashboard.clone(), f.id)];
        let title = panel["title"].as_str().expect("title");
        assert_eq!(
            f.body.matches("<svg ").count(),
            1,
            "{title}: exactly one chart"
        );
        assert!(
            f.body.contains(&format!("<h4>{}</h4>", escape(title))),
            "{title}: the panel keeps its title"
        );
        if let Some(description) = panel["description"].as_str() {
            assert!(
                f.body.contains(&escape(description)),
                "{title}: the panel keeps its description"
            );
        }
        if f.state != "data" && !is_gpu_panel(panel) {
            without_data.push(format!("{title} ({}): {}", f.state, f.body));
        }
        if f.state == "empty" && is_gpu_panel(panel) {
            assert!(
                f.body.contains("No GPU detected"),
                "{title}: an empty GPU panel shows its noValue text"
            );
        }
    }
    assert!(
        without_data.is_empty(),
        "panels that show \"No data\" or an error:\n{}",
        without_data.join("\n\n")
    );

    // Rows are section headings.
    for (_, dashboard) in dashboards() {
        assert!(html.contains(&format!(
            "<h2>{}</h2>",
            escape(dashboard["title"].as_str().unwrap())
        )));
        for row in panels(&dashboard).iter().filter(|p| p["type"] == "row") {
            let title = escape(row["title"].as_str().expect("row title"));
            assert!(
                html.contains(&format!("<h3>{title}</h3>")),
                "row {title} is a heading"
            );
        }
    }

    // The Alerts section names what fired, with a start time.
    let alerts = &html[html
        .find("<section id=\"alerts\">")
        .expect("Alerts section")..];
    let alerts = &alerts[..alerts.find("</section>").expect("Alerts section ends")];
    let fired = &alerts[..alerts.find("at report time").expect("current alerts part")];
    for name in &firing {
        assert!(
            fired.contains(&format!("<td>{name}</td>")),
            "{name} fired but the Alerts section does not list it:\n{alerts}"
        );
    }
    assert!(
        !fired.contains("No alert fired"),
        "the fired-alerts table is not empty"
    );

    // The API dashboard's annotations: every alert that fired, and each
    // served model appearing, are events (markers on its time series).
    let section = &html[html
        .find("<section class=\"annotations\" data-dashboard=\"mlwatch-predict-api\">")
        .expect("annotations of the API dashboard")..];
    let section = &section[..section.find("</section>").expect("annotations end")];
    for name in &firing {
        assert!(
            section.contains(&format!("<td>{name}</td>")),
            "{name} fired but is not an annotation event:\n{section}"
        );
    }
    for artifact in &stack.artifacts {
        assert!(
            section.contains(&format!("Now serving {}", escape(&artifact.model_version))),
            "no 'Served model changed' event for {}:\n{section}",
            artifact.model_version
        );
    }

    // The Model section shows the served artifacts' versions.
    let model = &html[html.find("<section id=\"model\">").expect("Model section")..];
    for artifact in &stack.artifacts {
        assert!(
            model.contains(&format!("<td>{}</td>", escape(&artifact.model_version))),
            "model version {} missing from the Model section",
            artifact.model_version
        );
    }

    // Self-contained: no script, no stylesheet or image fetched from elsewhere.
    for banned in ["<script", "<link", "src=\"http", "href=\"http", "url("] {
        assert!(!html.contains(banned), "the page contains {banned:?}");
    }

    // --svg-dir: the same charts, one file each, titled.
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&svg_dir).expect("svg dir").flatten() {
        for file in std::fs::read_dir(dir.path())
            .expect("dashboard dir")
            .flatten()
        {
            files.push(file.path());
        }
    }
    assert_eq!(files.len(), expected.len(), "one .svg per panel: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).expect("svg file");
        assert!(
            text.starts_with("<svg ") && text.trim_end().ends_with("</svg>"),
            "{} is not a standalone SVG",
            file.display()
        );
    }
    assert!(
        stdout.contains(&format!("{} panels", expected.len())),
        "summary: {stdout}"
    );
}

#[test]
fn unreachable_prometheus_is_a_clear_failure() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = tempfile::tempdir().expect("temp dir");
    let html_path = out.path().join("r.html");
    let run = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["report", "--prometheus", &url, "--output"])
        .arg(&html_path)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .output()
        .expect("run mlwatch report");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "exit status {}", run.status);
    assert!(
        stderr.contains(&format!("cannot reach Prometheus at {url}")),
        "the error names the URL: {stderr}"
    );
    assert!(!Path::new(&html_path).exists(), "no report is written");
}

#[test]
fn missing_dashboards_are_a_clear_failure() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = Command::new(env!("CARGO_BIN_EXE_mlwatch"))
        .args(["report", "--assets"])
        .arg(out.path())
        .current_dir(out.path())
        .output()
        .expect("run mlwatch report");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    // One Assets discovery for report and up: it names every probe missing.
    assert!(
        stderr.contains("has no prometheus/prometheus.yml"),
        "the error says what is missing: {stderr}"
    );
}
