//! Sending: the two ways of pacing a load test, and the single HTTP call
//! every request goes through.
//!
//! * Closed loop (`--concurrency N`): N clients, each sending its next
//!   request when the previous one is answered. The service's speed sets
//!   the rate; latency is measured from each send.
//! * Open loop (`--rate R`): request i starts at `start + i/R` whatever the
//!   answers do, as independent users would, so a slow service cannot slow
//!   the sender down and hide its own latency (coordinated omission).
//!   Latency is measured from each send; how late each send started against
//!   its schedule (timer resolution, a saturated machine) is kept apart as
//!   the schedule lag, so the tool's own delay neither inflates the
//!   service's latency nor goes unnoticed.
//!
//! Either stops after `--requests` or `--duration`, or early when the stop
//! signal fires; requests in flight are always waited for (each is bounded
//! by `--timeout`), so every request sent is counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::summary::{Answer, Tally, TransportError};
use super::traffic::{Generator, PlannedRequest};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: this many requests started per second.
    Rate(f64),
    /// Closed loop: this many clients, one request in flight each.
    Concurrency(usize),
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Rate(r) => write!(f, "open loop, {r} requests/s"),
            Pace::Concurrency(n) => write!(f, "closed loop, concurrency {n}"),
        }
    }
}

/// When to stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests.
    Requests(u64),
    /// After this long (requests in flight still finish).
    Duration(Duration),
}

/// What a drive produced.
#[derive(Debug)]
pub struct Driven {
    pub tally: Tally,
    pub elapsed: Duration,
    pub interrupted: bool,
}

/// Shared state of one drive.
struct Shared {
    client: reqwest::Client,
    /// One /predict URL per replica, taken in turn.
    urls: Vec<String>,
    turn: AtomicU64,
    generator: Mutex<Generator>,
    tally: Mutex<Tally>,
}

impl Shared {
    /// The next replica's URL (round robin).
    fn url(&self) -> &str {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(turn % self.urls.len().max(1) as u64).unwrap_or(0);
        self.urls.get(index).map_or("", String::as_str)
    }

    fn next_request(&self) -> PlannedRequest {
        self.generator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_request()
    }

    fn record(
        &self,
        request: &PlannedRequest,
        result: Result<Answer, (TransportError, String)>,
        latency: Duration,
    ) {
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(request, result, latency);
    }
}

/// Sends the generator's requests to `urls` in turn until `stop`, or until
/// `interrupt` turns true.
pub async fn drive(
    client: reqwest::Client,
    urls: Vec<String>,
    generator: Generator,
    pace: Pace,
    stop: Stop,
    interrupt: watch::Receiver<bool>,
) -> Driven {
    let shared = Arc::new(Shared {
        client,
        urls,
        turn: AtomicU64::new(0),
        generator: Mutex::new(generator),
        tally: Mutex::new(Tally::default()),
    });
    let started = Instant::now();
    match pace {
        Pace::Concurrency(n) => closed_loop(&shared, n, stop, interrupt.clone()).await,
        Pace::Rate(rate) => open_loop(&shared, rate, stop, interrupt.clone()).await,
    }
    let elapsed = started.elapsed();
    let tally = std::mem::take(&mut *shared.tally.lock().unwrap_or_else(PoisonError::into_inner));
    let interrupted = *interrupt.borrow();
    Driven {
        tally,
        elapsed,
        interrupted,
    }
}

async fn closed_loop(
    shared: &Arc<Shared>,
    clients: usize,
    stop: Stop,
    interrupt: watch::Receiver<bool>,
) {
    let claimed = Arc::new(AtomicU64::new(0));
    let deadline = match stop {
        Stop::Duration(d) => Some(Instant::now() + d),
        Stop::Requests(_) => None,
    };
    let mut workers = JoinSet::new();
    for _ in 0..clients {
        let shared = Arc::clone(shared);
        let claimed = Arc::clone(&claimed);
        let interrupt = interrupt.clone();
        workers.spawn(async move {
            loop {
                if *interrupt.borrow() {
                    break;
                }
                match stop {
                    Stop::Requests(n) if claimed.fetch_add(1, Ordering::Relaxed) >= n => break,
                    Stop::Duration(_) if deadline.is_some_and(|d| Instant::now() >= d) => break,
                    _ => {}
                }
                let request = shared.next_request();
                let sent = Instant::now();
                let result = send(&shared.client, shared.url(), &request).await;
                shared.record(&request, result, sent.elapsed());
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open_loop(
    shared: &Arc<Shared>,
    rate: f64,
    stop: Stop,
    mut interrupt: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let mut in_flight = JoinSet::new();
    let mut index: u64 = 0;
    loop {
        if *interrupt.borrow() {
            break;
        }
        // Checked: a schedule past any representable instant ends the run
        // instead of panicking (validation keeps the rate far from that).
        let Some((offset, at)) = Duration::try_from_secs_f64(index as f64 / rate)
            .ok()
            .and_then(|offset| Some((offset, start.checked_add(offset)?)))
        else {
            break;
        };
        match stop {
            Stop::Requests(n) if index >= n => break,
            Stop::Duration(d) if offset >= d => break,
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            // A closed channel cannot interrupt any more: keep going.
            Ok(()) = interrupt.changed() => continue,
        }
        let request = shared.next_request();
        let shared = Arc::clone(shared);
        in_flight.spawn(async move {
            let sent = Instant::now();
            let result = send(&shared.client, shared.url(), &request).await;
            let latency = sent.elapsed();
            let mut tally = shared.tally.lock().unwrap_or_else(PoisonError::into_inner);
            tally.record(&request, result, latency);
            tally.record_lag(sent.saturating_duration_since(at));
        });
        index += 1;
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// Sends one request and reads the whole answer. The `error` member of a
/// JSON body is kept for requests that expect one or got an unexpected
/// status.
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    request: &PlannedRequest,
) -> Result<Answer, (TransportError, String)> {
    let mut builder = client.request(request.method.clone(), url);
    if let Some(content_type) = request.content_type {
        builder = builder.header(CONTENT_TYPE, content_type);
    }
    if request.method != Method::GET {
        builder = builder.body(request.body.clone());
    }
    let response = builder.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    // The status has been counted by the service already: a body that
    // fails to arrive is still an answer.
    let body = read_capped(response, ANSWER_BYTES).await;
    let error = if request.expected_error.is_some() || status != request.expected_status {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
    } else {
        None
    };
    Ok(Answer { status, error })
}

/// The most of an answer's body that is read: error bodies are a few
/// dozen bytes, and a misbehaving service must not make the tool hold
/// megabytes per request.
const ANSWER_BYTES: usize = 16 * 1024;

/// Up to `limit` bytes of the body; the rest is not read (the connection is
/// dropped with the response). A body cut short parses as no `error`.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

fn classify(error: reqwest::Error) -> (TransportError, String) {
    let kind = if error.is_timeout() {
        TransportError::Timeout
    } else if error.is_connect() {
        TransportError::Connect
    } else {
        TransportError::Other
    };
    // The chain of sources says what actually happened (refused, reset...).
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    (kind, message)
}
