//! OTLP/HTTP push: one periodic reader per receiver, each with its own
//! exporter, so a receiver that is down or slow delays only its own
//! exports.
//!
//! Cumulative temporality, no retries: every export carries the full state,
//! so the next one repairs a lost one, and nothing queues up while a
//! receiver is away (the memory a dead receiver can cost is one request
//! body). Each export is bounded by the timeout, connection included.
//! Outcomes are counted per receiver (`mlwatch_otlp_exports_total`), and a
//! failure is logged once per episode, with its cause, and the recovery
//! once.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, Temporality};

/// Receivers answer with an empty or tiny body; anything beyond this is
/// not read.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// The exports of one receiver, as counted and as last logged.
#[derive(Debug, Default)]
pub struct ExportOutcomes {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    failing: AtomicBool,
}

/// A blocking HTTP client for the exporter. The SDK's periodic reader runs
/// each export on its own thread under a plain executor (no Tokio
/// runtime), so a blocking request there is what the thread is for, and
/// the async clients' runtime requirement (opentelemetry-rust #2673) does
/// not arise.
#[derive(Debug)]
struct BlockingClient {
    agent: ureq::Agent,
}

impl BlockingClient {
    fn new(timeout: Duration) -> Self {
        Self {
            agent: ureq::AgentBuilder::new()
                .timeout(timeout)
                .redirects(0)
                .build(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut call = self
            .agent
            .request(parts.method.as_str(), &parts.uri.to_string());
        for (name, value) in &parts.headers {
            if let Ok(value) = value.to_str() {
                call = call.set(name.as_str(), value);
            }
        }
        // A status error still carries the response: the exporter turns its
        // status into the failure it reports.
        let response = match call.send_bytes(&body) {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(transport) => return Err(Box::new(transport)),
        };
        let status = response.status();
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut bytes)?;
        Ok(Response::builder()
            .status(status)
            .body(Bytes::from(bytes))?)
    }
}

/// The OTLP exporter of one receiver, counting and logging its outcomes.
struct CountedExporter {
    inner: opentelemetry_otlp::MetricExporter,
    endpoint: String,
    outcomes: Arc<ExportOutcomes>,
}

impl std::fmt::Debug for CountedExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl PushMetricExporter for CountedExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Ok(()) => {
                self.outcomes.succeeded.fetch_add(1, Ordering::Relaxed);
                if self.outcomes.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, "OTLP export recovered");
                }
            }
            Err(e) => {
                let failures = self.outcomes.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.outcomes.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        failures,
                        "OTLP export failed: {e}; retrying every interval, logged again on recovery (mlwatch_otlp_exports_total)"
                    );
                }
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The periodic reader pushing to `endpoint` every `interval`.
pub fn reader(
    endpoint: &str,
    interval: Duration,
    timeout: Duration,
    outcomes: Arc<ExportOutcomes>,
) -> Result<PeriodicReader<impl PushMetricExporter>, opentelemetry_otlp::ExporterBuildError> {
    let inner = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .with_http_client(BlockingClient::new(timeout))
        .with_retry_policy(RetryPolicy::disabled())
        .with_temporality(Temporality::Cumulative)
        .build()?;
    let exporter = CountedExporter {
        inner,
        endpoint: endpoint.to_owned(),
        outcomes,
    };
    Ok(PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build())
}
