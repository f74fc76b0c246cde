//! Supervised child processes of the local stack: each writes its output to
//! a log file in the state directory, is stopped with SIGTERM (then SIGKILL
//! after a grace period), and, when it dies on its own, is reported with the
//! last lines of its log.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// How long a child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub struct Supervised {
    pub name: String,
    pub log: PathBuf,
    child: Child,
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
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            log,
            child,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal (SIGHUP to reload, SIGTERM to stop).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Exit status if it has exited (non-blocking).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; always reaps.
    pub async fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// The last `n` lines of the child's log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A program from PATH, trying each name in turn.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}
