//! Reading a request body within the service's three limits: size
//! (`--max-body-bytes`, 413), time (`--body-read-timeout`, 408) and how many
//! bodies are read at once (`--max-inflight-bodies`, 503). Together they
//! bound the memory of bodies in flight to about
//! `max_inflight_bodies × max_body_bytes`, whatever the clients do.
//!
//! The buffer is sized from Content-Length (exactly, never doubled) and never
//! grows past the limit, so a body costs its own size once; a declared
//! Content-Length over the limit is refused without buffering anything.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use poem::Body;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::bad_input::{BadInput, InputError};

/// After the body limit is exceeded, up to this many further bytes are read
/// and dropped so that the client, still sending, gets the 413 instead of a
/// reset connection.
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Without a Content-Length, the buffer starts this large and doubles,
/// capped at the limit.
const INITIAL_CAPACITY: usize = 16 * 1024;

/// The limits, shared by every request.
#[derive(Debug, Clone)]
pub struct BodyLimits {
    max_bytes: usize,
    read_timeout: Duration,
    permits: Arc<Semaphore>,
    max_inflight: usize,
}

/// A body that was not read.
#[derive(Debug)]
pub enum BodyRefused {
    /// Too large, too slow or unreadable: the client's doing.
    Input(InputError),
    /// Every in-flight slot is taken; the service is saturated.
    Busy { max_inflight: usize },
}

impl From<InputError> for BodyRefused {
    fn from(e: InputError) -> Self {
        BodyRefused::Input(e)
    }
}

impl BodyLimits {
    pub fn new(max_bytes: usize, read_timeout: Duration, max_inflight: usize) -> Self {
        Self {
            max_bytes,
            read_timeout,
            permits: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
        }
    }

    /// Takes an in-flight slot without waiting: a saturated service answers
    /// at once rather than queueing memory. Hold it until the decoded body
    /// is dropped.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, BodyRefused> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| BodyRefused::Busy {
                max_inflight: self.max_inflight,
            })
    }

    /// Reads the whole body; `content_length` is the request's header.
    pub async fn read(
        &self,
        body: Body,
        content_length: Option<usize>,
    ) -> Result<Vec<u8>, BodyRefused> {
        let mut reader = body.into_async_read();
        let limit = self.max_bytes;
        let read = async {
            if content_length.is_some_and(|n| n > limit) {
                return Ok(None);
            }
            read_within(&mut reader, limit, content_length).await
        };
        let timed_out = || {
            InputError::new(BadInput::BodyTimeout).expected(format!(
                "the whole body within {}",
                humantime::format_duration(self.read_timeout)
            ))
        };
        // A small body usually arrives with its header and is read in one
        // poll: only a body still on its way arms the timer, so the timeout
        // costs nothing on the common path (it then runs from the first
        // poll that had to wait, a poll's time later than the header).
        let outcome = {
            let mut read = std::pin::pin!(read);
            let first = std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(outcome) => Ok(outcome),
                Poll::Pending => tokio::time::timeout(self.read_timeout, read).await,
            }
        };
        match outcome {
            Err(_) => Err(timed_out().into()),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(Some(data))) => Ok(data),
            Ok(Ok(None)) => {
                drain(&mut reader, limit).await;
                Err(InputError::new(BadInput::BodyTooLarge)
                    .expected(format!("at most {limit} bytes"))
                    .got(format!("more than {limit} bytes"))
                    .into())
            }
        }
    }
}

/// Reads to the end, or `None` once more than `limit` bytes arrived.
async fn read_within(
    reader: &mut (impl AsyncRead + Unpin),
    limit: usize,
    content_length: Option<usize>,
) -> Result<Option<Vec<u8>>, InputError> {
    // One spare byte, so that reading the end needs no reallocation and a
    // body longer than announced is noticed.
    let mut data = Vec::with_capacity(
        content_length
            .unwrap_or(INITIAL_CAPACITY)
            .min(limit)
            .saturating_add(1),
    );
    loop {
        if data.len() == data.capacity() {
            // Grow by doubling, but never past limit + 1: `read_buf` would
            // otherwise double on its own.
            let target = (data.capacity() * 2)
                .max(INITIAL_CAPACITY)
                .min(limit.saturating_add(1));
            data.reserve_exact(target.saturating_sub(data.len()));
        }
        let n = reader
            .read_buf(&mut data)
            .await
            .map_err(|e| InputError::new(BadInput::CannotReadBody).detail(e.to_string()))?;
        if n == 0 {
            return Ok(Some(data));
        }
        if data.len() > limit {
            return Ok(None);
        }
    }
}

/// Reads and drops what the client still sends, within [`DRAIN_LIMIT`]
/// and [`DRAIN_TIME`], so that it reads the 413 rather than a reset.
async fn drain(reader: &mut (impl AsyncRead + Unpin), limit: usize) {
    let mut scratch = vec![0u8; 64 * 1024];
    let mut seen = 0usize;
    let drain = async {
        while seen <= limit.saturating_add(DRAIN_LIMIT) {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize) -> BodyLimits {
        BodyLimits::new(max, Duration::from_secs(5), 2)
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_into_an_exact_buffer() {
        let data = limits(100)
            .read(Body::from_vec(vec![b'x'; 100]), Some(100))
            .await
            .unwrap();
        assert_eq!(data.len(), 100);
        assert_eq!(
            data.capacity(),
            101,
            "sized from Content-Length, not doubled"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413_with_or_without_content_length() {
        for hint in [None, Some(101), Some(10)] {
            match limits(100)
                .read(Body::from_vec(vec![b'x'; 101]), hint)
                .await
            {
                Err(BodyRefused::Input(e)) => assert_eq!(e.error(), "body too large", "{hint:?}"),
                other => panic!("{hint:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn without_content_length_the_buffer_never_exceeds_the_limit() {
        let limit = 100_000;
        let data = limits(limit)
            .read(Body::from_vec(vec![b'x'; limit]), None)
            .await
            .unwrap();
        assert_eq!(data.len(), limit);
        assert!(data.capacity() <= limit + 1, "{}", data.capacity());
    }

    #[tokio::test]
    async fn a_body_slower_than_the_timeout_is_a_408() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let limits = BodyLimits::new(100, Duration::from_millis(100), 1);
        let body = Body::from_async_read(rx);
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = tx.write_all(b"{\"features\"").await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        match limits.read(body, Some(50)).await {
            Err(BodyRefused::Input(e)) => {
                assert_eq!(
                    (e.status().as_u16(), e.error()),
                    (408, "request body timeout")
                )
            }
            other => panic!("{other:?}"),
        }
        sender.abort();
    }

    #[test]
    fn in_flight_slots_are_bounded_and_given_back() {
        let limits = limits(10);
        let a = limits.admit().unwrap();
        let _b = limits.admit().unwrap();
        assert!(matches!(
            limits.admit(),
            Err(BodyRefused::Busy { max_inflight: 2 })
        ));
        drop(a);
        assert!(limits.admit().is_ok());
    }
}
