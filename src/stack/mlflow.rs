//! The MLflow tracking server of `mlwatch up`: when `mlflow` is on PATH it
//! runs on loopback with its sqlite database and its artifacts in the state
//! directory, proxying artifact uploads (`--serve-artifacts`), and the
//! trainer logs to it. Its own Prometheus metrics are exposed (scrape job
//! `mlflow`) when the installed MLflow can import the exporter it needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::children::find_binary;

/// What to run when MLflow is missing: the version .ci/install-mlflow.sh
/// pins, from PyPI (the exporter is the `--expose-prometheus` extra).
pub const INSTALL_HINT: &str = "pip install mlflow==3.14.0 prometheus-flask-exporter";

/// Environment for the server: no usage telemetry leaves the machine.
pub const ENV: [(&str, &str); 2] = [
    ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("DO_NOT_TRACK", "true"),
];

pub fn locate() -> Option<PathBuf> {
    find_binary(&["mlflow"])
}

/// Whether the Python behind this `mlflow` script can import
/// prometheus_flask_exporter (without it `--expose-prometheus` makes the
/// server fail at start). Reads the script's `#!` line.
pub fn can_expose_prometheus(mlflow: &Path) -> bool {
    let Ok(script) = std::fs::read(mlflow) else {
        return false;
    };
    let first = script.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(python) = std::str::from_utf8(first)
        .ok()
        .and_then(|l| l.strip_prefix("#!"))
        .map(str::trim)
        .filter(|p| !p.contains(' '))
    else {
        return false;
    };
    std::process::Command::new(python)
        .args(["-c", "import prometheus_flask_exporter"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `mlflow server` arguments: everything under `<state>/mlflow`.
pub fn server_args(state: &Path, address: SocketAddr, expose_prometheus: bool) -> Vec<String> {
    let dir = state.join("mlflow");
    let mut args = vec![
        "server".to_owned(),
        "--host".into(),
        address.ip().to_string(),
        "--port".into(),
        address.port().to_string(),
        "--backend-store-uri".into(),
        format!("sqlite:///{}", dir.join("mlflow.db").display()),
        "--artifacts-destination".into(),
        dir.join("artifacts").display().to_string(),
        "--serve-artifacts".into(),
        // One worker: a laptop's stack logs a handful of runs.
        "--workers".into(),
        "1".into(),
    ];
    if expose_prometheus {
        args.extend([
            "--expose-prometheus".into(),
            dir.join("prometheus-metrics").display().to_string(),
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_the_server_writes_is_in_the_state_directory() {
        let args = server_args(Path::new("/state"), "127.0.0.1:5000".parse().unwrap(), true);
        let joined = args.join(" ");
        assert!(joined.contains("--host 127.0.0.1 --port 5000"), "{joined}");
        assert!(
            joined.contains("sqlite:////state/mlflow/mlflow.db"),
            "{joined}"
        );
        assert!(
            joined.contains("--artifacts-destination /state/mlflow/artifacts"),
            "{joined}"
        );
        assert!(joined.contains("--serve-artifacts"), "{joined}");
        assert!(joined.contains("--expose-prometheus /state/mlflow/prometheus-metrics"));
        assert!(
            !server_args(Path::new("/s"), "127.0.0.1:1".parse().unwrap(), false)
                .contains(&"--expose-prometheus".to_owned())
        );
    }

    #[test]
    fn a_script_without_a_python_cannot_expose_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("mlflow");
        std::fs::write(&script, "#!/bin/false\n").unwrap();
        assert!(!can_expose_prometheus(&script));
        assert!(!can_expose_prometheus(&dir.path().join("missing")));
    }
}
