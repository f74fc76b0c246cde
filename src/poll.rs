//! Polling with a deadline: the one way mlwatch (and its tests) wait for a
//! condition on another process — a service becoming ready, an alert
//! firing, a counter moving. The check runs at once, then every `every`,
//! and the wait gives up after `limit` with an error that names it.

use std::future::Future;
use std::time::{Duration, Instant};

/// The condition did not hold within the limit.
#[derive(Debug, thiserror::Error)]
#[error("gave up after {}", humantime::format_duration(*.0))]
pub struct GaveUp(pub Duration);

/// Awaits `check` every `every` until it returns `Some`, for at most `limit`.
pub async fn until<T, F, Fut>(every: Duration, limit: Duration, mut check: F) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(GaveUp(limit));
        }
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// [`until`] for blocking callers (integration tests).
pub fn blocking<T>(
    every: Duration,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, GaveUp> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(GaveUp(limit));
        }
        std::thread::sleep(every.min(deadline.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_some_and_gives_up_on_none() {
        let mut calls = 0;
        let value = until(Duration::from_millis(1), Duration::from_secs(5), || {
            calls += 1;
            let ready = calls == 3;
            async move { ready.then_some(calls) }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let started = Instant::now();
        let error = until(
            Duration::from_millis(5),
            Duration::from_millis(30),
            || async { None::<()> },
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(error.to_string(), "gave up after 30ms");
    }

    #[test]
    fn blocking_polls_the_same_way() {
        let mut n = 0;
        assert_eq!(
            blocking(Duration::from_millis(1), Duration::from_secs(5), || {
                n += 1;
                (n > 2).then_some(n)
            })
            .unwrap(),
            3
        );
        assert!(blocking(
            Duration::from_millis(1),
            Duration::from_millis(5),
            || None::<u8>
        )
        .is_err());
    }
}
