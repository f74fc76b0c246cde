//! The scrape path: a pull reader on the meter provider ([`ScrapeReader`])
//! and the Prometheus text exposition (format 0.0.4) of what it collects
//! ([`encode`]), written straight from the SDK's data points.
//!
//! It writes what the `opentelemetry-prometheus` bridge wrote with target
//! info, scope labels and unit suffixes off, byte for byte (a test holds it
//! to the bridge): families sorted by name, monotonic sums as counters with
//! `_total`, up-down sums and gauges as gauges, explicit histograms with
//! cumulative `le` buckets, `+Inf`, `_sum` and `_count`, series sorted by
//! their label values, labels sorted by name, values in Rust's shortest
//! round-trip form. The bridge built a protobuf `MetricFamily` per data
//! point, a `String` per label name and value, merged the families by name
//! and then encoded them: 4.0 M of a scrape's 6.1 M instructions
//! (benches/serve_profile.sh, `SCRAPE=1`). Exponential histograms have no
//! text form and are left out, as the bridge left them out.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// A pull reader the provider owns one handle of and [`Telemetry`] the
/// other, so `/metrics` can collect on demand. Cumulative, as Prometheus
/// expects.
///
/// [`Telemetry`]: super::Telemetry
#[derive(Debug, Clone)]
pub struct ScrapeReader(Arc<ManualReader>);

impl Default for ScrapeReader {
    fn default() -> Self {
        Self(Arc::new(ManualReader::builder().build()))
    }
}

impl MetricReader for ScrapeReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, _kind: InstrumentKind) -> Temporality {
        Temporality::Cumulative
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One series' samples.
enum Samples {
    Value(f64),
    Histogram {
        bounds: Vec<f64>,
        counts: Vec<u64>,
        count: u64,
        sum: f64,
    },
}

/// One series: its labels sorted by name, then its samples.
struct Series<'a> {
    labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    samples: Samples,
}

/// One metric family.
struct Family<'a> {
    name: Cow<'a, str>,
    help: &'a str,
    kind: Kind,
    series: Vec<Series<'a>>,
}

/// A value as Prometheus writes it.
trait AsF64: Copy {
    fn as_f64(self) -> f64;
}

impl AsF64 for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}

impl AsF64 for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl AsF64 for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

/// Appends the text exposition of `metrics` to `out`. Never inlined: a
/// frame of its own for benches/serve_profile.sh (one call per scrape).
#[inline(never)]
pub fn encode(metrics: &ResourceMetrics, out: &mut String) {
    let mut families: Vec<Family<'_>> = metrics
        .scope_metrics()
        .flat_map(|scope| scope.metrics())
        .filter_map(family)
        .filter(|f| !f.series.is_empty())
        .collect();
    // The same name from two scopes would be one family; mlwatch has one
    // meter, so a stable sort by name is all the merging there is.
    families.sort_by(|a, b| a.name.cmp(&b.name));
    for family in &mut families {
        family.series.sort_by(|a, b| {
            a.labels.len().cmp(&b.labels.len()).then_with(|| {
                a.labels
                    .iter()
                    .zip(&b.labels)
                    .map(|((_, x), (_, y))| x.cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        });
        write_family(family, out);
    }
}

fn family(metric: &Metric) -> Option<Family<'_>> {
    match metric.data() {
        AggregatedMetrics::F64(data) => family_of(metric, data),
        AggregatedMetrics::U64(data) => family_of(metric, data),
        AggregatedMetrics::I64(data) => family_of(metric, data),
    }
}

fn family_of<'a, T: AsF64>(metric: &'a Metric, data: &'a MetricData<T>) -> Option<Family<'a>> {
    let name = sanitize_name(metric.name());
    let (name, kind, series) = match data {
        MetricData::Gauge(gauge) => (
            name,
            Kind::Gauge,
            gauge
                .data_points()
                .map(|p| series(p.attributes(), Samples::Value(p.value().as_f64())))
                .collect(),
        ),
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (Cow::Owned(format!("{name}_total")), Kind::Counter)
            } else {
                (name, Kind::Gauge)
            };
            let points = sum
                .data_points()
                .map(|p| series(p.attributes(), Samples::Value(p.value().as_f64())))
                .collect();
            (name, kind, points)
        }
        MetricData::Histogram(histogram) => (
            name,
            Kind::Histogram,
            histogram
                .data_points()
                .map(|p| {
                    series(
                        p.attributes(),
                        Samples::Histogram {
                            bounds: p.bounds().collect(),
                            counts: p.bucket_counts().collect(),
                            count: p.count(),
                            sum: p.sum().as_f64(),
                        },
                    )
                })
                .collect(),
        ),
        MetricData::ExponentialHistogram(_) => return None,
    };
    Some(Family {
        name,
        help: metric.description(),
        kind,
        series,
    })
}

fn series<'a>(attributes: impl Iterator<Item = &'a KeyValue>, samples: Samples) -> Series<'a> {
    let mut labels: Vec<(Cow<'_, str>, Cow<'_, str>)> = attributes
        .map(|kv| (sanitize_label(kv.key.as_str()), value_text(&kv.value)))
        .collect();
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    Series { labels, samples }
}

/// A label value as text: strings borrowed, anything else formatted.
fn value_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

/// A metric name with every character Prometheus does not allow replaced
/// by `_`, and `_` before a leading digit (mlwatch's names are all valid;
/// this keeps a bad one parseable).
fn sanitize_name(name: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let leading_digit = name.starts_with(|c: char| c.is_ascii_digit());
    if !leading_digit && name.chars().all(allowed) {
        return Cow::Borrowed(name);
    }
    let prefix = if leading_digit { "_" } else { "" };
    Cow::Owned(
        prefix
            .chars()
            .chain(name.chars().map(|c| if allowed(c) { c } else { '_' }))
            .collect(),
    )
}

/// A label name with every character but ASCII letters, digits and `:`
/// replaced by `_` (the SDK's `otel.metric.overflow` becomes
/// `otel_metric_overflow`).
fn sanitize_label(key: &str) -> Cow<'_, str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == ':';
    if key.chars().all(allowed) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(
            key.chars()
                .map(|c| if allowed(c) { c } else { '_' })
                .collect(),
        )
    }
}

fn write_family(family: &Family<'_>, out: &mut String) {
    let name = &*family.name;
    if !family.help.is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape_into(family.help, false, out);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(family.kind.as_str());
    out.push('\n');
    for series in &family.series {
        match &series.samples {
            Samples::Value(value) => write_sample(out, name, "", &series.labels, None, *value),
            Samples::Histogram {
                bounds,
                counts,
                count,
                sum,
            } => {
                let mut cumulative = 0u64;
                let mut bound_text = String::new();
                for (bound, n) in bounds.iter().zip(counts) {
                    cumulative += n;
                    bound_text.clear();
                    let _ = write!(bound_text, "{bound}");
                    write_sample(
                        out,
                        name,
                        "_bucket",
                        &series.labels,
                        Some(&bound_text),
                        cumulative as f64,
                    );
                }
                if !bounds.contains(&f64::INFINITY) {
                    write_sample(
                        out,
                        name,
                        "_bucket",
                        &series.labels,
                        Some("+Inf"),
                        *count as f64,
                    );
                }
                write_sample(out, name, "_sum", &series.labels, None, *sum);
                write_sample(out, name, "_count", &series.labels, None, *count as f64);
            }
        }
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(Cow<'_, str>, Cow<'_, str>)],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let extra = le.map(|le| ("le", le));
    let mut separator = '{';
    for (key, value) in labels
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .chain(extra)
    {
        out.push(separator);
        out.push_str(key);
        out.push_str("=\"");
        escape_into(value, true, out);
        out.push('"');
        separator = ',';
    }
    if separator == ',' {
        out.push('}');
    }
    let _ = write!(out, " {value}");
    out.push('\n');
}

/// Escapes `\` and newlines (and `"` in label values), as the text format
/// wants.
fn escape_into(text: &str, quotes: bool, out: &mut String) {
    if !text
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quotes && b == b'"'))
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::{SdkMeterProvider, Stream};
    use prometheus::{Encoder, TextEncoder};

    /// Every kind of instrument and label the encoder meets, recorded once
    /// and collected by both readers of one provider: this encoder and the
    /// `opentelemetry-prometheus` bridge configured as mlwatch had it.
    #[test]
    fn writes_what_the_bridge_wrote_byte_for_byte() {
        let registry = prometheus::Registry::new();
        let bridge = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .without_units()
            .build()
            .unwrap();
        let ours = ScrapeReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(bridge)
            .with_reader(ours.clone())
            .with_view(|i: &opentelemetry_sdk::metrics::Instrument| {
                (i.name() == "limited")
                    .then(|| Stream::builder().with_cardinality_limit(2).build().ok())
                    .flatten()
            })
            .build();
        let meter = provider.meter("test");
        let requests = meter
            .u64_counter("requests")
            .with_description("Requests by \"status\"\\ and a\nnewline")
            .build();
        for (status, n) in [("ok", 3), ("error", 1), ("a\"b\\c\nd", 2)] {
            requests.add(
                n,
                &[
                    KeyValue::new("status", status),
                    KeyValue::new("code", 200_i64),
                ],
            );
        }
        requests.add(
            5,
            &[
                KeyValue::new("code", 404_i64),
                KeyValue::new("status", "ok"),
            ],
        );
        let seconds = meter.f64_counter("busy_seconds").build();
        seconds.add(0.1, &[]);
        seconds.add(0.2, &[]);
        let active = meter
            .i64_up_down_counter("active")
            .with_description("In flight")
            .build();
        active.add(3, &[]);
        active.add(-5, &[KeyValue::new("pool", "b")]);
        let gauge = meter.f64_gauge("ratio").with_description("A share").build();
        for (bin, share) in [("10", 0.1), ("2", 1.0 / 3.0), ("0", 1e-9)] {
            gauge.record(
                share,
                &[KeyValue::new("bin", bin), KeyValue::new("feature", "age")],
            );
        }
        gauge.record(-2.5e20, &[KeyValue::new("bin", "x")]);
        let _observed = meter
            .u64_observable_gauge("info")
            .with_description("1 for the thing")
            .with_callback(|o| {
                o.observe(
                    1,
                    &[KeyValue::new("version", "v1"), KeyValue::new("flag", true)],
                )
            })
            .build();
        let latency = meter
            .f64_histogram("latency_seconds")
            .with_description("Latency")
            .with_boundaries(vec![0.00005, 0.001, 0.25, 1.0, 5.0])
            .build();
        for v in [0.00001, 0.0005, 0.0005, 0.3, 7.0] {
            latency.record(v, &[KeyValue::new("route", "/predict")]);
        }
        latency.record(0.002, &[KeyValue::new("route", "/metrics")]);
        let sizes = meter
            .u64_histogram("sizes")
            .with_boundaries(vec![10.0, 100.0])
            .build();
        sizes.record(50, &[]);
        let limited = meter.u64_counter("limited").build();
        for i in 0..5_i64 {
            limited.add(1, &[KeyValue::new("i", i)]);
        }
        let bad_name = meter.u64_counter("bad.name-1").build();
        bad_name.add(1, &[KeyValue::new("a.b-c", "x")]);
        let leading_digit = meter.u64_counter("9lives").build();
        leading_digit.add(1, &[]);

        let mut expected = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut expected)
            .unwrap();
        let expected = String::from_utf8(expected).unwrap();
        let mut collected = ResourceMetrics::default();
        ours.collect(&mut collected).unwrap();
        let mut text = String::new();
        encode(&collected, &mut text);
        assert!(
            expected.contains("otel_metric_overflow=\"true\""),
            "{expected}"
        );
        assert!(expected.contains("le=\"+Inf\""), "{expected}");
        assert_eq!(text, expected);
    }

    #[test]
    fn leaves_out_what_has_no_text_form() {
        let ours = ScrapeReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(ours.clone())
            .with_view(|_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder()
                    .with_aggregation(
                        opentelemetry_sdk::metrics::Aggregation::Base2ExponentialHistogram {
                            max_size: 160,
                            max_scale: 20,
                            record_min_max: true,
                        },
                    )
                    .build()
                    .ok()
            })
            .build();
        let histogram = provider.meter("test").f64_histogram("exp").build();
        histogram.record(1.0, &[]);
        let mut collected = ResourceMetrics::default();
        ours.collect(&mut collected).unwrap();
        let mut text = String::new();
        encode(&collected, &mut text);
        assert_eq!(text, "");
    }
}
