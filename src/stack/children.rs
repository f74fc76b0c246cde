//! Supervised child processes of the local stack: each writes its output to
//! a log file in the state directory, leads a process group of its own, is
//! stopped with everything it started ([`crate::process_tree`]: SIGTERM,
//! then SIGKILL after a grace period), and, when it dies on its own, is
//! reported with the last lines of its log. Every live child is also
//! tracked by [`crate::shutdown`], so that a forced exit (a second Ctrl-C)
//! kills them all without running destructors. A group of its own also
//! keeps a terminal's Ctrl-C (sent to the foreground group) from reaching
//! the children directly: the launcher stops them, in order.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::process_tree::ProcessTree;

/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The most of a log's end that [`Supervised::tail`] reads: a chatty child
/// can write gigabytes, and only the last lines are shown.
const TAIL_BYTES: u64 = 64 * 1024;

pub struct Supervised {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    /// The child's pid, which is its process group's id: known after the
    /// child is reaped, to stop what it left behind.
    group: Option<u32>,
}

impl Supervised {
    pub fn spawn(name: &str, program: &Path, args: &[String], logs: &Path) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], logs)
    }

    /// [`Supervised::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        logs: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let log = logs.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let group = child.id();
        if let Some(pid) = group {
            crate::shutdown::track_child(pid);
        }
        Ok(Self {
            name: name.to_owned(),
            log,
            child,
            group,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal (SIGHUP to reload, SIGTERM to stop). The pid is only
    /// known while the child is unreaped, so it cannot name a stranger.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Exit status if it has exited (non-blocking).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let pid = self.child.id();
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            forget(pid);
        }
        status
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let pid = self.child.id();
        let status = self.child.wait().await;
        forget(pid);
        status
    }

    /// SIGTERM to the child and everything it started, up to the grace
    /// period for all of them to exit, then SIGKILL; always reaps. A child
    /// that already exited may have left processes of its group behind:
    /// they are stopped too.
    pub async fn stop(&mut self) {
        let tree = match (self.child.id(), self.group) {
            // Read before the leader is reaped: its pid cannot name a
            // stranger while it is unreaped.
            (Some(pid), _) => ProcessTree::of(pid),
            (None, Some(group)) => ProcessTree::left_by(group),
            (None, None) => return,
        };
        tree.stop(GRACE).await;
        let _ = self.child.start_kill();
        let _ = self.wait().await;
    }

    /// The last `n` lines of the child's log (of its last 64 KiB at most).
    pub fn tail(&self, n: usize) -> String {
        tail(&self.log, n, TAIL_BYTES)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        // A child that was never stopped (an early return): its whole tree
        // goes with it. kill_on_drop then reaps the leader; the pid must not
        // stay registered.
        if let Some(pid) = self.child.id() {
            ProcessTree::of(pid).signal(Signal::SIGKILL);
        }
        forget(self.child.id());
    }
}

fn forget(pid: Option<u32>) {
    if let Some(pid) = pid {
        crate::shutdown::untrack_child(pid);
    }
}

/// The last `n` lines among the last `limit` bytes of `path` (a line cut by
/// the limit is dropped); empty when it cannot be read.
fn tail(path: &Path, n: usize, limit: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(limit);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.take(limit).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<&str> = text.lines().collect();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A program from PATH, trying each name in turn.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_only_the_end_of_a_big_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("chatty.log");
        let mut text = String::new();
        for i in 0..100_000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&log, &text).unwrap();
        assert_eq!(tail(&log, 2, 64), "line 99998\nline 99999");
        // A limit that cuts the first line drops it rather than show half.
        let few = tail(&log, 100, 25);
        assert_eq!(few, "line 99998\nline 99999", "{few}");
        assert_eq!(tail(&dir.path().join("missing"), 3, 64), "");
    }
}
