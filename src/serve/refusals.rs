//! `http_server_refused_requests_total{reason}`: requests the service
//! refused to read, because they came too slowly or too many at once. These
//! protect the process rather than describe traffic, so they are counted
//! with and without `--no-instrumentation` (they cost nothing until one
//! happens).

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::KeyValue;

/// Why a request was refused, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request header did not arrive within `--header-read-timeout`;
    /// the connection was answered 408 and closed.
    HeaderTimeout,
    /// The body did not arrive within `--body-read-timeout` (408).
    BodyTimeout,
    /// `--max-inflight-bodies` bodies were being read already (503).
    Busy,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::HeaderTimeout, Refusal::BodyTimeout, Refusal::Busy];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::Busy => "busy",
        }
    }
}

/// The counter, clone-cheap.
#[derive(Clone)]
pub struct Refusals {
    counter: Counter<u64>,
}

impl Refusals {
    pub fn new(meter: &Meter) -> Self {
        let counter = meter
            .u64_counter("http_server_refused_requests")
            .with_unit("{request}")
            .with_description(
                "Requests refused for a slow header or body, or too many bodies in flight",
            )
            .build();
        for reason in Refusal::ALL {
            counter.add(0, &[KeyValue::new("reason", reason.as_str())]);
        }
        Self { counter }
    }

    pub fn count(&self, reason: Refusal) {
        self.counter
            .add(1, &[KeyValue::new("reason", reason.as_str())]);
    }
}
