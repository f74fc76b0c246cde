//! Accepting and driving HTTP connections: hyper directly (through
//! hyper-util), with the connection's socket wrapped ([`Watched`]) so that
//! a request header must arrive within `--header-read-timeout`; a
//! connection that sent part of a header and then stalled is answered `408`
//! with a JSON body, closed, and counted
//! (`http_server_refused_requests_total{reason="header_timeout"}`). An idle
//! keep-alive connection is closed after the same time, silently: that is
//! not a refusal.
//!
//! The deadline is one timer per connection, re-armed only when it fires,
//! not hyper's own header timeout: that boxes and registers a timer for
//! every request on a kept-alive connection and cancels it when the header
//! is in (about 1 200 instructions of a request's 35 000, and two trips
//! through the runtime's timer lock; benches/serve_profile.sh).
//!
//! Shutdown: stop accepting, let every connection finish its request in
//! flight (hyper's graceful shutdown), and give up after the grace period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use poem::web::{LocalAddr, RemoteAddr};
use poem::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use super::bad_input::{BadInput, InputError};
use super::refusals::{Refusal, Refusals};

/// hyper's per-connection read buffer is capped at this (its default is
/// about 400 KiB), so that many connections sending large bodies at once
/// cost their bodies, not their buffers. Request headers must fit in it.
const MAX_READ_BUFFER: usize = 64 * 1024;

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub header_read_timeout: Duration,
    /// How long requests in flight get to finish after the shutdown signal.
    pub shutdown_grace: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve<E>(
    listener: TcpListener,
    app: E,
    options: ServerOptions,
    refusals: Refusals,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()>
where
    E: Endpoint + 'static,
{
    let local = listener.local_addr()?;
    let app = Arc::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The header deadline is `Watched`'s.
        .header_read_timeout(None)
        .max_buf_size(MAX_READ_BUFFER);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A second descriptor of the socket, for the 408 after hyper gave
        // the first one up (dropped with the connection otherwise).
        let spare = match socket2::SockRef::from(&stream).try_clone() {
            Ok(spare) => spare,
            Err(e) => {
                tracing::warn!(%remote, "cannot serve a connection: {e}");
                continue;
            }
        };
        let state = Arc::new(ConnectionState::default());
        let io = TokioIo::new(Watched::new(
            stream,
            Arc::clone(&state),
            options.header_read_timeout,
        ));
        let service = hyper::service::service_fn({
            let app = Arc::clone(&app);
            let state = Arc::clone(&state);
            move |request| {
                // The header is in: no deadline until the response is written.
                state.in_request.store(true, Ordering::Relaxed);
                let app = Arc::clone(&app);
                async move {
                    let request = poem::Request::from((
                        request,
                        LocalAddr(local.into()),
                        RemoteAddr(remote.into()),
                        poem::http::uri::Scheme::HTTP,
                    ));
                    let response = app.get_response(request).await;
                    Ok::<_, Infallible>(hyper::Response::<BoxBody<Bytes, io::Error>>::from(
                        response,
                    ))
                }
            }
        });
        let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
        let refusals = refusals.clone();
        let timeout = options.header_read_timeout;
        tokio::spawn(async move {
            let Err(error) = connection.await else { return };
            let header_timeout = state.timed_out.load(Ordering::Relaxed);
            if header_timeout && state.pending.load(Ordering::Relaxed) {
                refusals.count(Refusal::HeaderTimeout);
                match TcpStream::from_std(spare.into()) {
                    Ok(stream) => answer_header_timeout(&stream, remote, timeout).await,
                    Err(e) => tracing::debug!(%remote, "cannot answer the header timeout: {e}"),
                }
            } else if !header_timeout {
                tracing::debug!(%remote, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after {}; stopping anyway",
            humantime::format_duration(options.shutdown_grace)
        );
    }
    Ok(())
}

/// Writes a 408 to a connection whose header timed out. hyper has let go
/// of the socket; the send buffer is empty, so a non-blocking write of a
/// few hundred bytes goes through (or the client is gone and it does not
/// matter).
async fn answer_header_timeout(stream: &TcpStream, remote: SocketAddr, timeout: Duration) {
    let body = InputError::new(BadInput::HeaderTimeout)
        .expected(format!(
            "the whole request header within {}",
            humantime::format_duration(timeout)
        ))
        .body();
    let response = format!(
        "HTTP/1.1 {} Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        BadInput::HeaderTimeout.status().as_u16(),
        body.len()
    );
    let write = async {
        let mut rest = response.as_bytes();
        while !rest.is_empty() {
            stream.writable().await?;
            match stream.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<_, io::Error>(())
    };
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), write).await {
        tracing::debug!(%remote, "cannot answer the header timeout: {e}");
    }
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
    tracing::info!(%remote, "closed a connection whose request header did not arrive in time");
}

/// What the connection's socket wrapper and the connection's task share.
#[derive(Debug, Default)]
struct ConnectionState {
    /// Bytes of a request have been read and no response written since: a
    /// header timeout then means half a request, not an idle keep-alive
    /// connection.
    pending: AtomicBool,
    /// hyper has the request's header (the service was called) and no
    /// response has been written yet: the body has its own timeout
    /// (`serve::body`), so the header deadline waits.
    in_request: AtomicBool,
    /// The header deadline passed; the read failed with `TimedOut`.
    timed_out: AtomicBool,
}

/// The connection's socket as hyper reads and writes it, with the header
/// deadline: while no request is being served, bytes must arrive by
/// `waiting_since + timeout`, where `waiting_since` is the connection's
/// start or the end of its last response. A read that would wait past
/// that fails with `TimedOut`, and hyper drops the connection.
///
/// One timer serves the connection's life. It is reset only when it
/// fires: a request whose header arrives in time never touches it (the
/// read does not wait), and a fired timer that finds the deadline moved
/// on is set to the new deadline. An HTTP/2 connection (its preface) has
/// no header deadline, as hyper's header timeout applied to HTTP/1 only.
///
/// Reads go to tokio's own `poll_read`, which reads into hyper's buffer as
/// it is (uninitialised spare capacity); zeroing the unfilled part first
/// (`ReadBuf::initialize_unfilled`) cost more than the rest of the read
/// (benches/serve_profile.sh).
struct Watched {
    stream: TcpStream,
    state: Arc<ConnectionState>,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    waiting_since: Instant,
    /// No header deadline: the connection speaks HTTP/2.
    http2: bool,
    first_read: bool,
}

/// The connection preface every HTTP/2 client sends first (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Whether a connection's first bytes are HTTP/2's preface, or its start
/// when the read was shorter: `PRI ` starts no HTTP/1 request mlwatch
/// serves.
fn is_http2_preface(first: &[u8]) -> bool {
    let n = first.len().min(HTTP2_PREFACE.len());
    n >= 4 && first[..n] == HTTP2_PREFACE[..n]
}

impl Watched {
    fn new(stream: TcpStream, state: Arc<ConnectionState>, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            stream,
            state,
            timeout,
            deadline: Box::pin(tokio::time::sleep_until(now + timeout)),
            waiting_since: now,
            http2: false,
            first_read: true,
        }
    }

    /// Whether the header deadline has passed, for a read that would
    /// wait. Not while a request is being served, nor on HTTP/2.
    fn header_deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        !self.http2 && !self.state.in_request.load(Ordering::Relaxed) && self.poll_deadline(cx)
    }

    /// Whether the deadline has passed; otherwise the timer is set to it
    /// (if it fired before) and wakes `cx`'s task when it is due.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.waiting_since + self.timeout;
        while self.deadline.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
        false
    }

    /// A response (or part of one) went out: the next header's wait
    /// starts now (one clock read per write, usually one per response).
    /// The timer is registered with the connection's task here, because
    /// hyper may not read again before the next bytes arrive: it had read
    /// (and been told to wait) while the request was served.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        self.state.in_request.store(false, Ordering::Relaxed);
        self.state.pending.store(false, Ordering::Relaxed);
        self.waiting_since = Instant::now();
        if !self.http2 {
            self.poll_deadline(cx);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    if std::mem::take(&mut self.first_read) {
                        self.http2 = is_http2_preface(read);
                    }
                    self.state.pending.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.header_deadline_passed(cx) => {
                self.state.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request header timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.wrote(cx);
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wrote(cx);
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    /// Not vectored, although the socket could be: hyper then copies a
    /// response's body into its header buffer and writes both with one
    /// `send`, instead of keeping a queue of buffers for a `writev`. For
    /// this service's responses (a small JSON body, a /metrics page of
    /// tens of KiB) that is 900 fewer instructions per /predict (2.7 %,
    /// benches/serve_profile.sh) and the system call the minimal poem
    /// server makes (benches/serve_syscalls.sh).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_is_told_by_its_preface_even_from_a_short_first_read() {
        assert!(is_http2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(is_http2_preface(b"PRI * HT"));
        assert!(!is_http2_preface(b"PRI"), "too short to tell");
        assert!(!is_http2_preface(b"POST /predict HTTP/1.1\r\n"));
        assert!(!is_http2_preface(b"PRIX"));
    }
}
