//! HTTP metrics for every route, as prometheus_flask_exporter gives a Flask
//! app: `http_server_request_duration_seconds{method, route, status_code}`
//! and `http_server_active_requests`, written as a poem middleware on the
//! OpenTelemetry SDK. Like prometheus_flask_exporter's own endpoint, the
//! scrapes of `/metrics` pass outside it ([`super::run`]).
//!
//! No label comes from the request as sent: `route` is the route template
//! poem matched (`poem::PathPattern` in the response data; for `/predict`,
//! answered without the router, `serve::dispatch::MatchedRoute`), or
//! `unmatched`;
//! `method` is one of a fixed set, anything else `other`.
//!
//! A request refused before any handler ran, for its method (a 405) or its
//! path (no route matched), is labelled `method="other"` whatever its
//! method: a scanner trying every method on every path then adds one
//! series per route instead of one per method and route (each series is a
//! 19-line histogram, about 2 KB of every later scrape, until restart);
//! no dashboard or rule asks which wrong method it was.
//!
//! The duration histogram is bound to each label set the first time a
//! request has it ([`BoundDurations`]), so a request records without the
//! SDK's attribute lookup; only label sets outside the table (a status
//! code the service does not answer itself) take the unbound path.
//!
//! Requests in flight are counted per thread ([`ShardedCounts`]) and summed
//! by an observable up-down counter at collection: the same series as a
//! synchronous one, without two shared atomic adds per request.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use opentelemetry::metrics::{BoundHistogram, Histogram, Meter};
use opentelemetry::KeyValue;
use poem::http::Method;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::dispatch::MatchedRoute;
use super::sharded::ShardedCounts;
use crate::telemetry::LATENCY_BUCKETS_SECONDS;

/// The `route` label of a request no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` labels: the standard methods, then `other`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// The index of `other` in [`METHODS`].
const OTHER_METHOD: usize = METHODS.len() - 1;

/// Status codes whose series are bound on first use: those the service's
/// handlers and poem answer. Any other code is still recorded, unbound.
const BOUND_STATUSES: [u16; 14] = [
    200, 400, 401, 404, 405, 408, 409, 410, 413, 415, 421, 422, 500, 503,
];

/// Routes in the table: the service's own, then `unmatched`.
const BOUND_ROUTES: usize = super::ROUTES.len() + 1;

/// The middleware; clone-cheap handles to its two instruments.
#[derive(Clone)]
pub struct HttpMetrics {
    duration: Arc<BoundDurations>,
    /// Requests started less requests ended (each end adds `u64::MAX`, a
    /// wrapping −1: a request may end on another thread than it started).
    active: Arc<ShardedCounts>,
}

/// `http_server_request_duration_seconds` and one lazily bound series per
/// method × route × status of the table: a slot is bound by the first
/// request with that label set (so no series exists before a request had
/// it) and read with one atomic load after that.
struct BoundDurations {
    histogram: Histogram<f64>,
    slots: Box<[OnceLock<BoundHistogram<f64>>]>,
}

impl BoundDurations {
    fn new(histogram: Histogram<f64>) -> Self {
        let slots = (0..METHODS.len() * BOUND_ROUTES * BOUND_STATUSES.len())
            .map(|_| OnceLock::new())
            .collect();
        Self { histogram, slots }
    }

    fn record(&self, seconds: f64, method: usize, route: Route, status: u16) {
        let method = if refused_at_routing(&route, status) {
            OTHER_METHOD
        } else {
            method
        };
        let attributes = || {
            [
                KeyValue::new("method", METHODS[method]),
                route.label(),
                KeyValue::new("status_code", i64::from(status)),
            ]
        };
        let status_index = BOUND_STATUSES.iter().position(|s| *s == status);
        let slot = match (route.index(), status_index) {
            (Some(route), Some(status)) => self
                .slots
                .get((method * BOUND_ROUTES + route) * BOUND_STATUSES.len() + status),
            _ => None,
        };
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.histogram.bind(&attributes()))
                .record(seconds),
            None => self.histogram.record(seconds, &attributes()),
        }
    }
}

/// The `route` label of a response: one of the service's routes (by its
/// index in `ROUTES`), another template poem matched, or none.
enum Route {
    Own(usize),
    Other(Arc<str>),
    Unmatched,
}

impl Route {
    fn of(response: &Response) -> Self {
        if let Some(MatchedRoute(route)) = response.data::<MatchedRoute>() {
            if let Some(index) = super::ROUTES.iter().position(|r| r == route) {
                return Route::Own(index);
            }
        }
        match response.data::<poem::PathPattern>() {
            Some(pattern) => match super::ROUTES.iter().position(|r| **r == *pattern.0) {
                Some(index) => Route::Own(index),
                None => Route::Other(Arc::clone(&pattern.0)),
            },
            None => Route::Unmatched,
        }
    }

    /// The row of the bound table, `None` for a template not the service's.
    fn index(&self) -> Option<usize> {
        match self {
            Route::Own(index) => Some(*index),
            Route::Unmatched => Some(super::ROUTES.len()),
            Route::Other(_) => None,
        }
    }

    /// A static string for the service's own routes (no reference count
    /// shared between threads), the template itself otherwise.
    fn label(&self) -> KeyValue {
        match self {
            Route::Own(index) => KeyValue::new("route", super::ROUTES[*index]),
            Route::Other(pattern) => KeyValue::new("route", Arc::clone(pattern)),
            Route::Unmatched => KeyValue::new("route", UNMATCHED_ROUTE),
        }
    }
}

impl HttpMetrics {
    pub fn new(meter: &Meter) -> Self {
        let active = Arc::new(ShardedCounts::new(1));
        let observed = Arc::clone(&active);
        meter
            .i64_observable_up_down_counter("http_server_active_requests")
            .with_unit("{request}")
            .with_description("HTTP requests in flight")
            // The wrapping sum of the slots is the count, as two's complement.
            .with_callback(move |o| o.observe(observed.sum(0) as i64, &[]))
            .build();
        let histogram = meter
            .f64_histogram("http_server_request_duration_seconds")
            .with_unit("s")
            .with_description("HTTP request duration by method, route template and status code")
            .with_boundaries(LATENCY_BUCKETS_SECONDS.to_vec())
            .build();
        Self {
            duration: Arc::new(BoundDurations::new(histogram)),
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
        let method = method_index(req.method());
        let _in_flight = InFlight::start(&self.metrics.active);
        let started = Instant::now();
        let response = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            // Error responses keep the error's data, the route pattern included.
            Err(error) => error.into_response(),
        };
        self.metrics.duration.record(
            started.elapsed().as_secs_f64(),
            method,
            Route::of(&response),
            response.status().as_u16(),
        );
        Ok(response)
    }
}

/// Counts a request in flight until dropped, also when the client goes away
/// and the request future is dropped unfinished.
struct InFlight<'a>(&'a ShardedCounts);

impl<'a> InFlight<'a> {
    fn start(counter: &'a ShardedCounts) -> Self {
        counter.add(0, 1);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(0, u64::MAX);
    }
}

/// Whether the service refused the request for its method (405: the route
/// does not serve it) or for its path (no route matched), before any
/// handler looked at it. Its `method` label is then `other` (module doc).
fn refused_at_routing(route: &Route, status: u16) -> bool {
    status == 405 || matches!(route, Route::Unmatched)
}

/// The `method` label's index in [`METHODS`]: standard methods by name,
/// anything else `other`.
fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    /// The `_count` of the duration series whose labels contain all of `labels`.
    fn count(exposition: &str, labels: &[&str]) -> Option<u64> {
        exposition
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .find(|l| labels.iter().all(|label| l.contains(label)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn bound_and_unbound_records_land_in_their_own_series() {
        let telemetry = Telemetry::new().unwrap();
        let metrics = HttpMetrics::new(&telemetry.meter());
        let predict = || Route::Own(0);
        // Bound on first use, then recorded through the same slot.
        metrics.duration.record(0.001, 1, predict(), 200);
        metrics.duration.record(0.002, 1, predict(), 200);
        // Outside the table: a status the service does not answer, a
        // template not its own; recorded unbound.
        metrics.duration.record(0.003, 1, predict(), 418);
        metrics
            .duration
            .record(0.004, 7, Route::Other(Arc::from("/x/:id")), 200);
        metrics.duration.record(0.005, 0, Route::Unmatched, 404);
        let text = telemetry.render().unwrap();
        let post_predict = ["method=\"POST\"", "route=\"/predict\""];
        assert_eq!(
            count(
                &text,
                &[&post_predict[..], &["status_code=\"200\""]].concat()
            ),
            Some(2),
            "{text}"
        );
        assert_eq!(
            count(
                &text,
                &[&post_predict[..], &["status_code=\"418\""]].concat()
            ),
            Some(1),
            "{text}"
        );
        assert_eq!(
            count(&text, &["method=\"other\"", "route=\"/x/:id\""]),
            Some(1),
            "{text}"
        );
        assert_eq!(
            count(
                &text,
                &[
                    "method=\"other\"",
                    "route=\"unmatched\"",
                    "status_code=\"404\""
                ]
            ),
            Some(1),
            "an unmatched GET is refused at routing: {text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .count();
        assert_eq!(
            series, 4,
            "a slot makes no series before a request has its labels:\n{text}"
        );
    }

    #[test]
    fn refusals_at_routing_make_one_series_per_route_whatever_the_method() {
        let telemetry = Telemetry::new().unwrap();
        let metrics = HttpMetrics::new(&telemetry.meter());
        // Every method on every route and on an unknown path, as a scanner
        // sends them: the routes refuse the methods they do not serve.
        for method in 0..METHODS.len() {
            for route in 0..crate::serve::ROUTES.len() {
                metrics
                    .duration
                    .record(0.001, method, Route::Own(route), 405);
            }
            metrics
                .duration
                .record(0.001, method, Route::Unmatched, 404);
        }
        // A served method keeps its name, also for an error it answered.
        metrics.duration.record(0.001, 0, Route::Own(2), 200);
        metrics.duration.record(0.001, 1, Route::Own(0), 415);
        let text = telemetry.render().unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .collect();
        assert_eq!(
            series.len(),
            crate::serve::ROUTES.len() + 1 + 2,
            "{series:#?}"
        );
        assert_eq!(
            count(
                &text,
                &[
                    "method=\"other\"",
                    "route=\"/predict\"",
                    "status_code=\"405\""
                ]
            ),
            Some(METHODS.len() as u64),
            "{text}"
        );
        assert_eq!(
            count(
                &text,
                &["method=\"GET\"", "route=\"/health\"", "status_code=\"200\""]
            ),
            Some(1),
            "{text}"
        );
        assert_eq!(
            count(
                &text,
                &[
                    "method=\"POST\"",
                    "route=\"/predict\"",
                    "status_code=\"415\""
                ]
            ),
            Some(1),
            "{text}"
        );
    }

    #[test]
    fn unknown_methods_collapse_into_other() {
        assert_eq!(METHODS[method_index(&Method::GET)], "GET");
        assert_eq!(METHODS[method_index(&Method::OPTIONS)], "OPTIONS");
        assert_eq!(
            METHODS[method_index(&Method::from_bytes(b"BREW").unwrap())],
            "other"
        );
        assert_eq!(METHODS[method_index(&Method::TRACE)], "other");
    }
}
