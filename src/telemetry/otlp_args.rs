//! The push flags `mlwatch serve` and `mlwatch train` share
//! (docs/otlp.md), with the standard `OTEL_*` variables as their
//! environment, resolved into the [`Exporters`] a [`super::Telemetry`] is
//! built with.

use std::time::Duration;

use super::{Exporters, PushTargets};

/// How the process exports: scraped (`/metrics`), pushed (OTLP/HTTP), or both.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// OTLP/HTTP metrics URL to push to, in full (for Prometheus 3:
    /// http://HOST:9090/api/v1/otlp/v1/metrics); repeat it for every
    /// receiver (both Prometheus of an HA pair).
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    pub otlp_endpoints: Vec<String>,
    /// Time between two pushes (a bare number is milliseconds, as in
    /// OTEL_METRIC_EXPORT_INTERVAL).
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value = "15s", value_parser = parse_otel_duration)]
    pub otlp_export_interval: Duration,
    /// Longest one push may take, connection included, before it counts as
    /// failed (a bare number is milliseconds, as in OTEL_EXPORTER_OTLP_METRICS_TIMEOUT).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", default_value = "10s", value_parser = parse_otel_duration)]
    pub otlp_timeout: Duration,
    /// Serve no Prometheus exposition (/metrics): the process only pushes,
    /// and latency histograms become exponential (native in Prometheus).
    /// A process both scraped and pushed is two series sets.
    #[arg(long, env = "MLWATCH_NO_SCRAPE")]
    pub no_scrape: bool,
}

impl ExportArgs {
    /// The exporters, for a process whose resource is `service_name` and
    /// `instance_id`. `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL) is read
    /// when no metrics URL is given, as the OpenTelemetry specification
    /// says: `/v1/metrics` appended.
    pub fn exporters(
        &self,
        service_name: &'static str,
        instance_id: String,
    ) -> anyhow::Result<Exporters> {
        let mut endpoints = self.otlp_endpoints.clone();
        if endpoints.is_empty() {
            if let Some(base) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .filter(|b| !b.trim().is_empty())
            {
                endpoints.push(format!("{}/v1/metrics", base.trim().trim_end_matches('/')));
            }
        }
        // The scrape-only path reads no OTLP variable at all.
        if endpoints.is_empty() {
            anyhow::ensure!(
                !self.no_scrape,
                "--no-scrape needs at least one --otlp-endpoint: the process would export nothing"
            );
            return Ok(Exporters::scrape_only());
        }
        check_protocol(std::env::var("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL").ok())?;
        check_protocol(std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())?;
        for endpoint in &endpoints {
            check_endpoint(endpoint)?;
        }
        anyhow::ensure!(
            !self.otlp_export_interval.is_zero(),
            "--otlp-export-interval must be longer than 0s"
        );
        anyhow::ensure!(
            !self.otlp_timeout.is_zero(),
            "--otlp-timeout must be longer than 0s"
        );
        Ok(Exporters {
            scrape: !self.no_scrape,
            push: Some(PushTargets {
                endpoints,
                interval: self.otlp_export_interval,
                timeout: self.otlp_timeout,
                service_name,
                instance_id,
            }),
        })
    }
}

/// Durations as the `OTEL_*` variables write them (integer milliseconds)
/// or as every other mlwatch flag does (`15s`, `500ms`).
fn parse_otel_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| format!("{text}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text}: {e}"))
}

/// Only HTTP/protobuf is built in: Prometheus' receiver speaks nothing else.
fn check_protocol(protocol: Option<String>) -> anyhow::Result<()> {
    match protocol.as_deref().map(str::trim) {
        None | Some("") | Some("http/protobuf") => Ok(()),
        Some(other) => anyhow::bail!(
            "OTLP protocol {other:?} is not supported: mlwatch pushes http/protobuf only (what Prometheus' receiver accepts)"
        ),
    }
}

/// An http:// URL with a host; TLS is not built in, and a mistyped URL
/// should stop the start, not fail every export.
fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    let uri: poem::http::Uri = endpoint
        .parse()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => anyhow::bail!(
            "--otlp-endpoint {endpoint:?}: https is not built in; push to a local receiver over http, or terminate TLS in a proxy"
        ),
        _ => anyhow::bail!(
            "--otlp-endpoint {endpoint:?} needs http://HOST:PORT/PATH (for Prometheus: http://HOST:9090/api/v1/otlp/v1/metrics)"
        ),
    }
    anyhow::ensure!(
        uri.host().is_some_and(|h| !h.is_empty()),
        "--otlp-endpoint {endpoint:?} has no host"
    );
    Ok(())
}

/// `host:port` of this process: the scrape path's `instance` for the same
/// process, so one replica keeps one instance across restarts and paths.
pub fn instance_id(port: u16) -> String {
    let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        export: ExportArgs,
    }

    fn parse(args: &[&str]) -> Result<ExportArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.export)
    }

    #[test]
    fn durations_read_milliseconds_like_the_otel_variables_and_units_like_the_flags() {
        assert_eq!(parse_otel_duration("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_otel_duration("15s"), Ok(Duration::from_secs(15)));
        assert!(parse_otel_duration("soon").is_err());
    }

    #[test]
    fn scrape_only_without_endpoints_and_no_scrape_needs_one() {
        let args = parse(&[]).unwrap();
        assert!(args.otlp_endpoints.is_empty());
        assert!(args.exporters("ml-api", "h:1".into()).unwrap().scrape);
        // --no-scrape alone would export nothing (unless
        // OTEL_EXPORTER_OTLP_ENDPOINT names a receiver).
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
            let error = parse(&["--no-scrape"])
                .unwrap()
                .exporters("ml-api", "h:1".into())
                .unwrap_err();
            assert!(error.to_string().contains("--otlp-endpoint"), "{error}");
        }
    }

    #[test]
    fn every_endpoint_is_kept_and_checked() {
        let args = parse(&[
            "--otlp-endpoint",
            "http://a:9090/api/v1/otlp/v1/metrics",
            "--otlp-endpoint",
            "http://b:9090/api/v1/otlp/v1/metrics",
            "--no-scrape",
        ])
        .unwrap();
        let exporters = args.exporters("ml-api", "h:1".into()).unwrap();
        assert!(!exporters.scrape);
        let push = exporters.push.unwrap();
        assert_eq!(push.endpoints.len(), 2);
        assert_eq!(push.interval, Duration::from_secs(15));
        for bad in ["https://a/v1/metrics", "a:9090/v1/metrics", "http:///x"] {
            let args = parse(&["--otlp-endpoint", bad]).unwrap();
            let error = args.exporters("ml-api", "h:1".into()).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        assert!(check_protocol(None).is_ok());
        assert!(check_protocol(Some("http/protobuf".into())).is_ok());
        let error = check_protocol(Some("grpc".into())).unwrap_err();
        assert!(error.to_string().contains("grpc"), "{error}");
    }
}
