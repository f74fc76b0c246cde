//! A loopback OTLP/HTTP metrics receiver for the push tests: it accepts
//! `POST` requests on any path, decodes each body as an
//! `ExportMetricsServiceRequest` with the official protobuf definitions
//! (`opentelemetry-proto`), keeps them, and answers 200 — or, switched to
//! slow, answers only after a delay, like an overloaded receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

pub use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
// Not every test binary that includes the harness uses each of them.
#[allow(unused_imports)]
pub use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point::Value as Number, AggregationTemporality, Metric,
};
use prost::Message;

/// The request body size a test receiver accepts (mlwatch's exports are a
/// few tens of KiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Default)]
struct Shared {
    exports: Mutex<Vec<ExportMetricsServiceRequest>>,
    /// Milliseconds to wait before answering; 0 answers at once.
    delay_ms: AtomicU64,
    stopped: AtomicBool,
}

pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a port of its own.
    pub fn start() -> Self {
        Self::on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A receiver on `address` (a port a test kept free to start one there
    /// later: a receiver coming back).
    pub fn on(address: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(address).unwrap_or_else(|e| panic!("bind receiver {address}: {e}"));
        let address = listener.local_addr().expect("receiver address");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        let acceptor = std::thread::spawn(move || {
            while !accepting.stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let connection = Arc::clone(&accepting);
                        std::thread::spawn(move || serve_connection(stream, &connection));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The metrics URL to give `--otlp-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/api/v1/otlp/v1/metrics", self.address)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Every export received so far, in arrival order.
    pub fn exports(&self) -> Vec<ExportMetricsServiceRequest> {
        self.shared
            .exports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn export_count(&self) -> usize {
        self.shared
            .exports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// HTTP/1.1 with keep-alive: requests until the client closes.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && request_line.is_empty() =>
            {
                continue
            }
            Err(_) => return,
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)));
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length.min(MAX_BODY)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        let delay = shared.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let status = match ExportMetricsServiceRequest::decode(body.as_slice()) {
            Ok(export) if request_line.starts_with("POST ") => {
                shared
                    .exports
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(export);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A resource attribute's string value.
pub fn resource_attribute(export: &ExportMetricsServiceRequest, key: &str) -> Option<String> {
    export.resource_metrics.iter().find_map(|r| {
        r.resource.as_ref()?.attributes.iter().find_map(|kv| {
            if kv.key != key {
                return None;
            }
            match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => Some(s.clone()),
                _ => None,
            }
        })
    })
}

/// The metric `name` in `export`, wherever its scope.
pub fn metric<'a>(export: &'a ExportMetricsServiceRequest, name: &str) -> Option<&'a Metric> {
    export
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

/// The string attributes of a data point, as (key, value) pairs.
pub fn attributes(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> Vec<(String, String)> {
    attributes
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some((kv.key.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

fn number(value: &Option<Number>) -> f64 {
    match value {
        Some(Number::AsInt(i)) => *i as f64,
        Some(Number::AsDouble(d)) => *d,
        None => f64::NAN,
    }
}

/// The points of a sum or gauge: (attributes, value).
pub fn points(metric: &Metric) -> Vec<(Vec<(String, String)>, f64)> {
    let points = match &metric.data {
        Some(Data::Sum(sum)) => &sum.data_points,
        Some(Data::Gauge(gauge)) => &gauge.data_points,
        other => panic!("{} is not a sum or gauge: {other:?}", metric.name),
    };
    points
        .iter()
        .map(|p| (attributes(&p.attributes), number(&p.value)))
        .collect()
}

/// The total of a sum or gauge over the points whose attributes include
/// every pair of `matching`.
pub fn total(metric: &Metric, matching: &[(&str, &str)]) -> f64 {
    points(metric)
        .into_iter()
        .filter(|(attrs, _)| {
            matching
                .iter()
                .all(|(k, v)| attrs.iter().any(|(ak, av)| ak == k && av == v))
        })
        .map(|(_, v)| v)
        .sum()
}
