//! Process shutdown as one value. [`Shutdown::listen`] is called once, in
//! `main`, before any work starts: from then on a task listens to SIGINT and
//! SIGTERM for the whole life of the process and cancels one token, so a
//! signal that arrives between two waits (during a save, a push, a report)
//! is never lost. Every wait takes a [`Shutdown`] (a cheap clone) and
//! selects on [`Shutdown::requested`]. A second signal forces the exit: the
//! child processes registered with [`track_child`] are killed first, so
//! nothing is left behind even then.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

/// Exit status of a forced exit (128 + SIGINT, as shells report it).
const FORCED_EXIT: i32 = 130;

/// The process-wide stop request; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A shutdown that only [`Shutdown::request`] triggers (library callers,
    /// tests).
    pub fn manual() -> Self {
        Self::default()
    }

    /// Installs the signal listeners for the rest of the process's life.
    /// Must run inside the tokio runtime; fails only when the OS refuses a
    /// signal handler.
    pub fn listen() -> anyhow::Result<Self> {
        let shutdown = Self::default();
        let mut signals = Signals::new()?;
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            let name = signals.next().await;
            tracing::info!("{name} received, shutting down (again to force)");
            token.cancel();
            let name = signals.next().await;
            eprintln!("{name} received again: forcing exit");
            kill_tracked_children();
            std::process::exit(FORCED_EXIT);
        });
        Ok(shutdown)
    }

    /// Asks everything waiting on this shutdown to stop.
    pub fn request(&self) {
        self.token.cancel();
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once a stop was requested (at once if it already was).
    pub async fn requested(&self) {
        self.token.cancelled().await;
    }

    /// [`Shutdown::requested`] as an owned future, for APIs that take one
    /// by value (poem's graceful shutdown).
    pub fn requested_owned(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// Runs `work` unless a stop is requested first; a stop requested while
    /// it runs drops it and is an error naming `what`.
    pub async fn guard<T>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        tokio::select! {
            biased;
            _ = self.requested() => anyhow::bail!("interrupted during {what}"),
            result = work => {
                // Work that stops on the request itself (a load run) returns
                // normally; the caller must still not go on.
                if self.is_requested() {
                    anyhow::bail!("interrupted during {what}");
                }
                result
            }
        }
    }
}

/// Pids of running child processes that a forced exit must kill.
static CHILDREN: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn children() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    CHILDREN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers a child that a forced exit kills (until [`untrack_child`]).
pub fn track_child(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        children().insert(pid);
    }
}

/// The child was reaped: its pid may be reused by a stranger.
pub fn untrack_child(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        children().remove(&pid);
    }
}

/// SIGKILLs every tracked child and everything it started (a forced exit
/// runs no destructors).
fn kill_tracked_children() {
    for pid in children().iter() {
        if let Ok(pid) = u32::try_from(*pid) {
            crate::process_tree::ProcessTree::of(pid).signal(Signal::SIGKILL);
        }
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "Ctrl-C (SIGINT)",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_before_the_wait_is_not_lost() {
        let shutdown = Shutdown::manual();
        shutdown.request();
        let clone = shutdown.clone();
        tokio::time::timeout(std::time::Duration::from_secs(1), clone.requested())
            .await
            .expect("an earlier request completes a later wait");
    }

    #[tokio::test]
    async fn guard_stops_work_and_names_it() {
        let shutdown = Shutdown::manual();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            trigger.request();
        });
        let error = shutdown
            .guard("the alert wait", async {
                std::future::pending::<anyhow::Result<()>>().await
            })
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "interrupted during the alert wait");
    }

    #[tokio::test]
    async fn guard_refuses_to_go_on_after_work_that_ended_on_the_request() {
        let shutdown = Shutdown::manual();
        let inner = shutdown.clone();
        let result = shutdown
            .guard("a load run", async move {
                inner.request();
                anyhow::Ok(7)
            })
            .await;
        assert!(result.is_err(), "{result:?}");
        let untouched = Shutdown::manual();
        assert_eq!(
            untouched.guard("x", async { anyhow::Ok(7) }).await.unwrap(),
            7
        );
    }
}
