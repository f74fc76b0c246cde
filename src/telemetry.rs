//! The metrics pipeline shared by the trainer and the prediction service.
//!
//! Instruments are created through the OpenTelemetry SDK; the
//! `opentelemetry-prometheus` bridge is the only reader and writes into an
//! explicit `prometheus::Registry` that [`Telemetry::render`] turns into the
//! text exposition. Scope labels and `target_info` are switched off and unit
//! suffixes are never appended, so the exported names are exactly the
//! instrument names (plus `_total` for counters) listed in docs/metrics.md.

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::{Instrument, SdkMeterProvider, Stream};
use prometheus::{Encoder, TextEncoder};

/// The Content-Type of the Prometheus text format 0.0.4. Prometheus 3 refuses
/// a scrape whose Content-Type it cannot parse.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request latency buckets: 50 µs to 5 s. In-process model inference sits in
/// the tens of microseconds, so the low end needs resolution too.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot build the Prometheus exporter: {0}")]
    Exporter(String),
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
}

/// One meter provider bound to one registry.
pub struct Telemetry {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

impl Telemetry {
    pub fn new() -> Result<Self, TelemetryError> {
        Self::with_cardinality_limits(&[])
    }

    /// A provider whose instruments named in `limits` keep at most that many
    /// label sets each; later ones are folded into one series labelled
    /// `otel_metric_overflow="true"`. Others keep the SDK default (2000).
    pub fn with_cardinality_limits(
        limits: &'static [(&'static str, usize)],
    ) -> Result<Self, TelemetryError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .without_units()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_view(move |instrument: &Instrument| {
                let (_, limit) = limits.iter().find(|(n, _)| *n == instrument.name())?;
                Stream::builder()
                    .with_cardinality_limit(*limit)
                    .build()
                    .ok()
            })
            .build();
        Ok(Self { registry, provider })
    }

    pub fn meter(&self) -> Meter {
        self.provider.meter("mlwatch")
    }

    /// Renders the text exposition of everything recorded so far.
    pub fn render(&self) -> Result<String, TelemetryError> {
        let families = self.registry.gather();
        let mut buffer = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&families, &mut buffer)?;
        // The encoder only ever writes UTF-8.
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

/// The `/metrics` response: the exposition with its Content-Type, or a 500
/// naming the encoding failure.
pub fn exposition_response(telemetry: &Telemetry) -> poem::Response {
    match telemetry.render() {
        Ok(text) => poem::Response::builder()
            .content_type(EXPOSITION_CONTENT_TYPE)
            .body(text),
        Err(e) => {
            tracing::error!("rendering /metrics failed: {e}");
            poem::Response::builder()
                .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                .body(e.to_string())
        }
    }
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
