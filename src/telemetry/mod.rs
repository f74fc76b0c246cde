//! The metrics pipeline shared by the trainer and the prediction service.
//!
//! Instruments are created through the OpenTelemetry SDK. Two kinds of
//! reader can watch them ([`Exporters`]): a pull reader (scrape, the
//! default) whose collection [`Telemetry::render`] writes as the text
//! exposition ([`exposition`]), and one OTLP periodic reader per receiver
//! (push, [`otlp_exporter`]). The exposition has no scope labels, no
//! `target_info` and no unit suffixes, and the instrument units are chosen
//! so that Prometheus' OTLP receiver appends none either (docs/otlp.md):
//! both paths give exactly the names of docs/metrics.md.

pub mod exposition;
mod otlp_args;
pub mod otlp_exporter;

pub use otlp_args::{instance_id, ExportArgs};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider, ObservableCounter, ObservableGauge};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{Aggregation, Instrument, SdkMeterProvider, Stream};
use opentelemetry_sdk::Resource;

use exposition::ScrapeReader;

use otlp_exporter::ExportOutcomes;

/// The Content-Type of the Prometheus text format 0.0.4. Prometheus 3 refuses
/// a scrape whose Content-Type it cannot parse.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request latency buckets: 50 µs to 5 s. In-process model inference sits in
/// the tens of microseconds, so the low end needs resolution too.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// The latency histograms that become exponential (native in Prometheus)
/// when the process only pushes (docs/otlp.md, "Histograms and quantiles").
/// One instrument has one aggregation for every reader, and the text
/// exposition has no exponential form, so a scraped process keeps
/// explicit buckets on both paths.
pub const EXPONENTIAL_WHEN_PUSHED: &[&str] = &[
    "model_prediction_duration_seconds",
    "http_server_request_duration_seconds",
];

/// Exponential histograms: 160 buckets at most, the SDK's default, and
/// scale 20, so the SDK picks the finest scale the observed range allows
/// (µs model latencies and 5 s stalls in one histogram fit at scale ≥ 3,
/// a relative error under 5 %).
const EXPONENTIAL: Aggregation = Aggregation::Base2ExponentialHistogram {
    max_size: 160,
    max_scale: 20,
    record_min_max: true,
};

/// Where the process's metrics go.
#[derive(Debug, Clone)]
pub struct Exporters {
    /// The Prometheus exposition (`/metrics`).
    pub scrape: bool,
    /// OTLP/HTTP receivers.
    pub push: Option<PushTargets>,
}

impl Exporters {
    pub fn scrape_only() -> Self {
        Self {
            scrape: true,
            push: None,
        }
    }

    /// A one-line account for the start-up log.
    pub fn describe(&self) -> String {
        match (&self.push, self.scrape) {
            (None, _) => "scrape (/metrics)".to_owned(),
            (Some(push), scrape) => format!(
                "{}OTLP push every {} to {}",
                if scrape { "scrape (/metrics) and " } else { "" },
                humantime::format_duration(push.interval),
                push.endpoints.join(", ")
            ),
        }
    }
}

/// The receivers one process pushes to, and who it says it is: the receiver
/// turns `service.name` into `job` and `service.instance.id` into
/// `instance`.
#[derive(Debug, Clone)]
pub struct PushTargets {
    pub endpoints: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub service_name: &'static str,
    pub instance_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot collect metrics: {0}")]
    Collect(String),
    #[error("cannot compress the exposition: {0}")]
    Compress(std::io::Error),
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Otlp { endpoint: String, reason: String },
}

/// One meter provider with its readers.
pub struct Telemetry {
    /// `Some` when scraping.
    scrape: Option<ScrapeReader>,
    provider: SdkMeterProvider,
    // Held so that the callbacks live as long as the provider.
    _observables: (ObservableGauge<f64>, Option<ObservableCounter<u64>>),
}

impl Telemetry {
    /// Scrape only, default cardinality limits (tests and tools).
    pub fn new() -> Result<Self, TelemetryError> {
        Self::build(&[], &Exporters::scrape_only())
    }

    /// Scrape only; see [`Self::build`] for `limits`.
    pub fn with_cardinality_limits(
        limits: &'static [(&'static str, usize)],
    ) -> Result<Self, TelemetryError> {
        Self::build(limits, &Exporters::scrape_only())
    }

    /// A provider with the readers of `exporters`, whose instruments named in
    /// `limits` keep at most that many label sets each; later ones are
    /// folded into one series labelled `otel_metric_overflow="true"`.
    /// Others keep the SDK default (2000).
    pub fn build(
        limits: &'static [(&'static str, usize)],
        exporters: &Exporters,
    ) -> Result<Self, TelemetryError> {
        let mut builder = SdkMeterProvider::builder();
        let scrape = exporters.scrape.then(ScrapeReader::default);
        if let Some(reader) = &scrape {
            builder = builder.with_reader(reader.clone());
        }
        let mut outcomes = Vec::new();
        if let Some(push) = &exporters.push {
            builder = builder.with_resource(
                Resource::builder_empty()
                    .with_service_name(push.service_name)
                    .with_attribute(KeyValue::new(
                        "service.instance.id",
                        push.instance_id.clone(),
                    ))
                    .build(),
            );
            for endpoint in &push.endpoints {
                let counted = Arc::new(ExportOutcomes::default());
                let reader = otlp_exporter::reader(
                    endpoint,
                    push.interval,
                    push.timeout,
                    Arc::clone(&counted),
                )
                .map_err(|e| TelemetryError::Otlp {
                    endpoint: endpoint.clone(),
                    reason: e.to_string(),
                })?;
                builder = builder.with_reader(reader);
                outcomes.push(counted);
            }
        }
        let exponential = exporters.push.is_some() && !exporters.scrape;
        let provider = builder
            .with_view(move |instrument: &Instrument| {
                let limit = limits
                    .iter()
                    .find(|(n, _)| *n == instrument.name())
                    .map(|(_, limit)| *limit);
                let exponential =
                    exponential && EXPONENTIAL_WHEN_PUSHED.contains(&instrument.name());
                if limit.is_none() && !exponential {
                    return None;
                }
                let mut stream = Stream::builder();
                if let Some(limit) = limit {
                    stream = stream.with_cardinality_limit(limit);
                }
                if exponential {
                    stream = stream.with_aggregation(EXPONENTIAL);
                }
                stream.build().ok()
            })
            .build();
        let meter = provider.meter("mlwatch");
        let heartbeat = meter
            .f64_observable_gauge("mlwatch_heartbeat_timestamp_seconds")
            .with_unit("s")
            .with_description("Unix time of this collection or export (liveness on the push path)")
            .with_callback(|observer| observer.observe(now_unix_seconds(), &[]))
            .build();
        let exports = (!outcomes.is_empty()).then(|| {
            meter
                .u64_observable_counter("mlwatch_otlp_exports")
                .with_unit("{export}")
                .with_description(
                    "OTLP pushes by receiver (its index among --otlp-endpoint) and result",
                )
                .with_callback(move |observer| {
                    for (index, counted) in outcomes.iter().enumerate() {
                        let endpoint = KeyValue::new("endpoint", index.to_string());
                        for (result, count) in [
                            ("success", &counted.succeeded),
                            ("failure", &counted.failed),
                        ] {
                            observer.observe(
                                count.load(Ordering::Relaxed),
                                &[endpoint.clone(), KeyValue::new("result", result)],
                            );
                        }
                    }
                })
                .build()
        });
        Ok(Self {
            scrape,
            provider,
            _observables: (heartbeat, exports),
        })
    }

    /// Whether `/metrics` has anything to serve.
    pub fn scrapes(&self) -> bool {
        self.scrape.is_some()
    }

    /// Pushes the final state to every receiver and stops the readers; a
    /// scrape-only provider has nothing to do. Blocks up to the export
    /// timeout, so call it last.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("metrics provider shutdown: {e}");
        }
    }

    pub fn meter(&self) -> Meter {
        self.provider.meter("mlwatch")
    }

    /// Renders the text exposition of everything recorded so far (empty
    /// when the process does not scrape).
    pub fn render(&self) -> Result<String, TelemetryError> {
        let Some(reader) = &self.scrape else {
            return Ok(String::new());
        };
        let mut collected = ResourceMetrics::default();
        reader
            .collect(&mut collected)
            .map_err(|e| TelemetryError::Collect(e.to_string()))?;
        // The service's exposition with one model is about 32 KiB.
        let mut text = String::with_capacity(48 * 1024);
        exposition::encode(&collected, &mut text);
        Ok(text)
    }
}

/// The `/metrics` response to `request`: the exposition with its
/// Content-Type, gzip-compressed when the scraper accepts it (Prometheus
/// asks for gzip on every scrape, as client_golang's handler answers it),
/// or a 500 naming the failure.
///
/// Compression is the fastest level: the service's exposition with one
/// model shrinks about eightfold for about a tenth of a millisecond
/// (docs/benchmarks.md).
pub fn exposition_response(telemetry: &Telemetry, request: &poem::Request) -> poem::Response {
    let text = match telemetry.render() {
        Ok(text) => text,
        Err(e) => return render_failure(e),
    };
    let response = poem::Response::builder()
        .content_type(EXPOSITION_CONTENT_TYPE)
        .header(poem::http::header::VARY, "accept-encoding");
    let gzip = request
        .headers()
        .get(poem::http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    if !gzip {
        return response.body(text);
    }
    match gzip_bytes(text.as_bytes()) {
        Ok(compressed) => response
            .header(poem::http::header::CONTENT_ENCODING, "gzip")
            .body(compressed),
        Err(e) => render_failure(TelemetryError::Compress(e)),
    }
}

fn render_failure(e: TelemetryError) -> poem::Response {
    tracing::error!("rendering /metrics failed: {e}");
    poem::Response::builder()
        .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
        .body(e.to_string())
}

// A frame of its own for benches/serve_profile.sh (one call per scrape).
#[inline(never)]
fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// Whether an `Accept-Encoding` value accepts gzip: a `gzip` (or `*`)
/// coding whose quality is not zero (RFC 9110, section 12.5.3).
fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let quality = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .filter_map(|q| q.parse::<f32>().ok())
            .next_back()
            .unwrap_or(1.0);
        (name.eq_ignore_ascii_case("gzip") || name == "*") && quality > 0.0
    })
}

/// Unix time now, in seconds (0 before 1970: a clock that wrong shows as
/// a heartbeat from 1970, not a panic).
pub fn now_unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    #[test]
    fn gzip_is_taken_when_accepted_and_not_refused() {
        for accepted in [
            "gzip",
            "GZIP",
            "deflate, gzip;q=0.5",
            "*",
            "br;q=1, gzip ; q=0.001",
        ] {
            assert!(accepts_gzip(accepted), "{accepted}");
        }
        for refused in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip2",
        ] {
            assert!(!accepts_gzip(refused), "{refused}");
        }
    }

    #[test]
    fn a_gzip_scrape_decodes_to_the_exposition() {
        use std::io::Read;
        let telemetry = Telemetry::new().expect("telemetry");
        telemetry
            .meter()
            .u64_counter("requests")
            .build()
            .add(3, &[]);
        let request = poem::Request::builder()
            .header("accept-encoding", "gzip")
            .finish();
        let response = exposition_response(&telemetry, &request);
        assert_eq!(response.headers()["content-encoding"], "gzip");
        assert_eq!(response.headers()["vary"], "accept-encoding");
        let body = block_on(response.into_body().into_vec()).expect("body");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip");
        assert!(text.contains("\nrequests_total 3\n"), "{text}");
        let plain = exposition_response(&telemetry, &poem::Request::default());
        assert!(plain.headers().get("content-encoding").is_none());
    }

    /// Drives a future that needs no runtime (a body already in memory).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn exported_names_are_the_instrument_names() {
        let telemetry = Telemetry::new().expect("telemetry");
        let meter = telemetry.meter();
        meter
            .u64_counter("model_prediction_requests")
            .with_unit("{request}")
            .build()
            .add(1, &[KeyValue::new("status", "success")]);
        meter
            .f64_histogram("model_prediction_duration_seconds")
            .with_unit("s")
            .with_boundaries(LATENCY_BUCKETS_SECONDS.to_vec())
            .build()
            .record(0.0002, &[]);
        let text = telemetry.render().expect("render");
        assert!(
            text.contains("model_prediction_requests_total{status=\"success\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("model_prediction_duration_seconds_bucket{le=\"0.00025\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("seconds_seconds"),
            "unit suffix duplicated: {text}"
        );
        assert!(
            !text.contains("otel_scope"),
            "scope labels must be off: {text}"
        );
        assert!(
            !text.contains("target_info"),
            "target_info must be off: {text}"
        );
    }
}
