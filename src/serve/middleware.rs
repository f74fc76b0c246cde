//! HTTP metrics for every route, as prometheus_flask_exporter gives a Flask
//! app: `http_server_request_duration_seconds{method, route, status_code}`
//! and `http_server_active_requests`, written as a poem middleware on the
//! OpenTelemetry SDK.
//!
//! No label comes from the request as sent: `route` is the route template
//! poem matched (`poem::PathPattern` in the response data), or `unmatched`;
//! `method` is one of a fixed set, anything else `other`.

use std::sync::Arc;
use std::time::Instant;

use opentelemetry::metrics::{Histogram, Meter, UpDownCounter};
use opentelemetry::KeyValue;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use crate::telemetry::LATENCY_BUCKETS_SECONDS;

/// The `route` label of a request no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The middleware; clone-cheap handles to its two instruments.
#[derive(Clone)]
pub struct HttpMetrics {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
}

impl HttpMetrics {
    pub fn new(meter: &Meter) -> Self {
        let active = meter
            .i64_up_down_counter("http_server_active_requests")
            .with_unit("{request}")
            .with_description("HTTP requests in flight")
            .build();
        active.add(0, &[]);
        Self {
            duration: meter
                .f64_histogram("http_server_request_duration_seconds")
                .with_unit("s")
                .with_description("HTTP request duration by method, route template and status code")
                .with_boundaries(LATENCY_BUCKETS_SECONDS.to_vec())
                .build(),
            active,
        }
    }
}

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        HttpMetricsEndpoint {
            inner,
            metrics: self.clone(),
        }
    }
}

pub struct HttpMetricsEndpoint<E> {
    inner: E,
    metrics: HttpMetrics,
}

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let method = method_label(req.method());
        let _in_flight = InFlight::start(&self.metrics.active);
        let started = Instant::now();
        let response = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            // Error responses keep the error's data, the route pattern included.
            Err(error) => error.into_response(),
        };
        let route = match response.data::<poem::PathPattern>() {
            Some(pattern) => route_label(&pattern.0),
            None => KeyValue::new("route", UNMATCHED_ROUTE),
        };
        self.metrics.duration.record(
            started.elapsed().as_secs_f64(),
            &[
                KeyValue::new("method", method),
                route,
                KeyValue::new("status_code", i64::from(response.status().as_u16())),
            ],
        );
        Ok(response)
    }
}

/// The `route` label of a matched template: a static string for the
/// service's own routes (no reference count shared between threads), the
/// template itself otherwise.
fn route_label(pattern: &Arc<str>) -> KeyValue {
    match super::ROUTES.iter().find(|route| **route == &**pattern) {
        Some(route) => KeyValue::new("route", *route),
        None => KeyValue::new("route", Arc::clone(pattern)),
    }
}

/// Counts a request in flight until dropped, also when the client goes away
/// and the request future is dropped unfinished.
struct InFlight<'a>(&'a UpDownCounter<i64>);

impl<'a> InFlight<'a> {
    fn start(counter: &'a UpDownCounter<i64>) -> Self {
        counter.add(1, &[]);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}

/// The `method` label: standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_collapse_into_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
