//! The integration-test harness: spawn the real `mlwatch` binary (or another
//! real program) on a free port, wait until it answers, scrape and parse its
//! /metrics with a real exposition parser, and kill it when the test ends,
//! whether the test passed or panicked.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub mod mlflow;
pub mod otlp_receiver;
pub mod queries;
// The local stack is built on the launcher's configs: tests that start it
// need the tools (Cargo.toml's `required-features`).
#[cfg(feature = "tools")]
pub mod stack;

use mlwatch::process_tree::ProcessTree;
pub use prometheus_parse::{Sample, Scrape, Value};

/// A port nobody listens on right now, never handed out twice in this test
/// binary ([`mlwatch::free_ports`]). Prefer `--listen 127.0.0.1:0` and
/// [`listening_address`] where the program reports what it bound; this is
/// for programs that need a number up front (Prometheus, Alertmanager, the
/// launcher's flags).
pub fn free_port() -> u16 {
    free_ports_in_a_row(1)
}

/// The address a process reports after binding `--listen 127.0.0.1:0`: the
/// text after `prefix` in its log, up to the next `/` or space.
pub fn listening_address(process: &mut Process, prefix: &str) -> std::net::SocketAddr {
    let text = poll(
        &format!("{} to log {prefix:?}", process.name),
        Duration::from_secs(30),
        || {
            if let Some(exit) = process.try_exit() {
                panic!(
                    "{} exited with {exit} before listening:\n{}",
                    process.name,
                    process.log_text()
                );
            }
            let log = process.log_text();
            let (_, rest) = log.split_once(prefix)?;
            let end = rest
                .find(|c: char| c == '/' || c.is_whitespace())
                .unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        },
    );
    text.parse()
        .unwrap_or_else(|e| panic!("{prefix}{text} is not an address: {e}"))
}

/// The one polling helper of the tests ([`mlwatch::poll::blocking`] every
/// 50 ms): `check` until it returns `Some`, or a panic naming `what`.
pub fn poll<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    mlwatch::poll::blocking(Duration::from_millis(50), timeout, check)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The first of `count` consecutive ports that are all free right now
/// (`mlwatch up --replicas` and `--ha` take ports in a row).
pub fn free_ports_in_a_row(count: u16) -> u16 {
    mlwatch::free_ports::run_of(count).unwrap_or_else(|e| panic!("{e:#}"))
}

/// How long a dropped [`Process`] and what it started get between SIGTERM
/// and SIGKILL: enough for `mlwatch up` to stop its children in order.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process in a process group of its own, stopped with everything
/// it started ([`mlwatch::process_tree`]) and reaped on drop, whether the
/// test passed or panicked. Its stdout/stderr go to files so that a
/// failing test can print them.
pub struct Process {
    pub name: String,
    child: Option<std::process::Child>,
    /// Set once [`Process::try_exit`] has reaped the child: from then on
    /// its pid may name a stranger, and only its group is stopped.
    reaped: bool,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> Self {
        Self::spawn_with_env(name, program, args, &[], dir)
    }

    /// [`Process::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        dir: &Path,
    ) -> Self {
        use std::os::unix::process::CommandExt;
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("create log file");
        let err = file.try_clone().expect("clone log file");
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Self {
            name: name.to_owned(),
            child: Some(child),
            reaped: false,
            log,
        }
    }

    /// The `mlwatch` binary built by cargo for this test run.
    pub fn mlwatch(name: &str, args: &[&str], dir: &Path) -> Self {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Self::spawn(name, Path::new(env!("CARGO_BIN_EXE_mlwatch")), &args, dir)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.reaped |= status.is_some();
        status
    }

    /// Waits for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        mlwatch::poll::blocking(Duration::from_millis(50), timeout, || self.try_exit()).ok()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{signal} {} failed",
            self.name
        );
    }

    fn tree(&self, child: &std::process::Child) -> ProcessTree {
        if self.reaped {
            ProcessTree::left_by(child.id())
        } else {
            ProcessTree::of(child.id())
        }
    }

    /// SIGKILL to the process and everything it started, at once (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.tree(&child).signal(nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM to the process and everything it started, SIGKILL to what is
    /// left after [`STOP_GRACE`]. The tree is read before the process is
    /// reaped, while its pid still names it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.tree(&child).stop_blocking(STOP_GRACE);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Command lines of running processes that mention `needle` (a test's
/// temporary directory), to prove nothing was left behind.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let bytes = std::fs::read(entry.path().join("cmdline")).ok()?;
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            text.contains(needle)
                .then(|| format!("{}: {text}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// GET returning (status, body) for any status; `None` if nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    match agent().get(url).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

/// Polls `url` until it answers with `status`, or panics after `timeout`
/// (or at once when `process` exits).
pub fn wait_for_status(url: &str, status: u16, timeout: Duration, process: &mut Process) {
    poll(&format!("{url} answering {status}"), timeout, || {
        if let Some(exit) = process.try_exit() {
            panic!(
                "{} exited with {exit} before {url} answered {status}:\n{}",
                process.name,
                process.log_text()
            );
        }
        get(url).filter(|(code, _)| *code == status).map(|_| ())
    });
}

/// Scrapes a /metrics URL, asserting the Content-Type Prometheus requires,
/// and parses the body with a text-format parser.
pub fn scrape(url: &str) -> Scrape {
    let response = agent()
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("scrape {url}: {e}"));
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "/metrics Content-Type"
    );
    let body = response.into_string().expect("metrics body");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

/// Value of the single sample named `name` whose labels include `labels`.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples(scrape, name, labels);
    assert!(
        matching.len() <= 1,
        "{name}{labels:?} matches {} samples",
        matching.len()
    );
    matching.first().map(|s| scalar(&s.value))
}

pub fn samples<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// A counter or gauge value; for a histogram, its observation count.
pub fn scalar(value: &Value) -> f64 {
    match value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => f64::NAN,
    }
}

/// Metric family names (as documented) present in a scrape: histogram
/// families appear once under their base name.
pub fn family_names(scrape: &Scrape) -> HashMap<String, &'static str> {
    scrape
        .samples
        .iter()
        .map(|s| {
            let kind = match s.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
                Value::Histogram(_) => "histogram",
                Value::Summary(_) => "summary",
                Value::Untyped(_) => "untyped",
            };
            (s.metric.clone(), kind)
        })
        .collect()
}

/// The header of docs/otlp.md's name mapping.
const OTLP_HEADER: &str = "| OTLP instrument | unit | type | Prometheus name | labels |";

#[derive(Debug)]
pub struct OtlpRow {
    pub instrument: String,
    pub unit: String,
    pub kind: String,
    pub prometheus: String,
    pub labels: Vec<String>,
}

/// The table under the exact header of docs/otlp.md.
pub fn otlp_mapping() -> Vec<OtlpRow> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/otlp.md"))
        .expect("docs/otlp.md");
    let mut lines = text.lines().skip_while(|l| *l != OTLP_HEADER);
    assert_eq!(
        lines.next(),
        Some(OTLP_HEADER),
        "docs/otlp.md has no table headed {OTLP_HEADER}"
    );
    assert!(lines.next().is_some_and(|l| l.starts_with("| ---")));
    lines
        .take_while(|l| l.starts_with("| "))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 5, "{line}");
            OtlpRow {
                instrument: cells[0].to_owned(),
                unit: cells[1].to_owned(),
                kind: cells[2].to_owned(),
                prometheus: cells[3].to_owned(),
                labels: cells[4]
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }
        })
        .collect()
}

/// Rows of a section's table in docs/metrics.md: (name, type, labels).
pub fn documented_metrics(section: &str) -> Vec<(String, String, Vec<String>)> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .expect("docs/metrics.md");
    let mut in_section = false;
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_section = heading.starts_with(section);
            continue;
        }
        if !in_section
            || !line.starts_with("| ")
            || line.starts_with("| name")
            || line.starts_with("| ---")
        {
            continue;
        }
        // Split on unescaped pipes: label cells hold `a\|b`, unit cells may be empty.
        let cells: Vec<&str> = split_row(line.trim().trim_matches('|'))
            .map(str::trim)
            .collect();
        if cells.len() < 4 {
            continue;
        }
        let labels = cells[3]
            .split(',')
            .map(|l| l.split('=').next().unwrap_or("").trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        rows.push((cells[0].to_owned(), cells[1].to_owned(), labels));
    }
    assert!(
        !rows.is_empty(),
        "no metrics table under '## {section}' in docs/metrics.md"
    );
    rows
}

/// Cells of a Markdown table row: split at `|` but not at `\|`.
fn split_row(row: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut previous = ' ';
    let mut cells = Vec::new();
    for (i, c) in row.char_indices() {
        if c == '|' && previous != '\\' {
            cells.push(&row[start..i]);
            start = i + 1;
        }
        previous = c;
    }
    cells.push(&row[start..]);
    cells.into_iter()
}
