//! Accepting and driving HTTP connections: hyper directly (through
//! hyper-util), because poem's `Server` cannot set hyper's header-read
//! timeout. Each connection is served by hyper's HTTP/1.1 + HTTP/2 builder
//! with a timer, so a request header must arrive within
//! `--header-read-timeout`; a connection that sent part of a header and then
//! stalled is answered `408` with a JSON body, closed, and counted
//! (`http_server_refused_requests_total{reason="header_timeout"}`). An idle
//! keep-alive connection is closed after the same time, silently: that is
//! not a refusal.
//!
//! Shutdown: stop accepting, let every connection finish its request in
//! flight (hyper's graceful shutdown), and give up after the grace period.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use poem::endpoint::BoxEndpoint;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

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
pub async fn serve(
    listener: TcpListener,
    app: BoxEndpoint<'static, Response>,
    options: ServerOptions,
    refusals: Refusals,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let app = Arc::new(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
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
        let pending = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Watched {
            stream,
            pending: Arc::clone(&pending),
        });
        let service = hyper::service::service_fn({
            let app = Arc::clone(&app);
            move |request| {
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
            let header_timeout = error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            if header_timeout && pending.load(Ordering::Relaxed) {
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

/// The connection's socket as hyper reads and writes it. `pending` is
/// true while bytes of a request have been read and no response written
/// since: a header timeout then means half a request, not an idle
/// keep-alive connection.
///
/// Reads go to tokio's own `poll_read`, which reads into hyper's buffer as
/// it is (uninitialised spare capacity); zeroing the unfilled part first
/// (`ReadBuf::initialize_unfilled`) cost more than the rest of the read
/// (benches/serve_profile.sh).
struct Watched {
    stream: TcpStream,
    pending: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.pending.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.pending.store(false, Ordering::Relaxed);
        Pin::new(&mut self.stream).poll_write_vectored(cx, data)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
