//! Stopping a child with everything it started. Every child of mlwatch (and
//! of its tests) runs as the leader of its own process group; stopping it
//! means stopping the group *and* every descendant that left the group
//! (a daemon's `setsid`), found by walking `/proc`: MLflow's server, for
//! one, starts uvicorn, a job runner and huey consumers, and signalling the
//! server alone leaves them running with the port still taken.
//!
//! The order is TERM to all of them, a grace period for them to exit, then
//! KILL to whatever is left. A process is named by its pid *and* its start
//! time, so a pid that was reused by a stranger in the meantime is never
//! signalled.

use std::collections::BTreeMap;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How often a stop looks again whether everything has exited.
const POLL: Duration = Duration::from_millis(50);

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    parent: i32,
    group: i32,
    /// Clock ticks after boot: with the pid, the process's identity.
    started: u64,
    zombie: bool,
}

/// Parses `/proc/<pid>/stat`: the command name is in parentheses and may
/// itself contain spaces and parentheses, so the fields are read after the
/// last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... starttime(22).
    Some(Stat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        parent: fields.get(1)?.parse().ok()?,
        group: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every process on the machine, by pid.
fn all_processes() -> BTreeMap<i32, Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// A child that leads its own process group, and the processes it started
/// that have been seen so far.
#[derive(Debug)]
pub struct ProcessTree {
    leader: i32,
    /// False once the leader was reaped: its pid may name a stranger now,
    /// while its group id still names what it left behind.
    leader_alive: bool,
    /// pid -> start time of every member seen: the group, and descendants.
    members: BTreeMap<i32, u64>,
}

impl ProcessTree {
    /// The tree of `leader`, a process group leader not yet reaped (it may
    /// be a zombie), as it is now.
    pub fn of(leader: u32) -> Self {
        Self::new(leader, true)
    }

    /// What a reaped group leader left behind: the members of its group.
    pub fn left_by(leader: u32) -> Self {
        Self::new(leader, false)
    }

    fn new(leader: u32, leader_alive: bool) -> Self {
        let mut tree = Self {
            leader: i32::try_from(leader).unwrap_or(i32::MAX),
            leader_alive,
            members: BTreeMap::new(),
        };
        tree.refresh();
        tree
    }

    /// Adds the processes started since the last look: members of the
    /// group, and children of any member (whichever group they are in).
    fn refresh(&mut self) {
        let processes = all_processes();
        if let Some(leader) = processes.get(&self.leader).filter(|_| self.leader_alive) {
            self.members.entry(self.leader).or_insert(leader.started);
        }
        loop {
            let before = self.members.len();
            for (pid, stat) in &processes {
                let child_of_member = self.members.get(&stat.parent).is_some_and(|started| {
                    processes.get(&stat.parent).map(|p| p.started) == Some(*started)
                });
                if stat.group == self.leader || child_of_member {
                    self.members.entry(*pid).or_insert(stat.started);
                }
            }
            if self.members.len() == before {
                break;
            }
        }
    }

    /// Members that still run (the same process, not yet a zombie), with
    /// their process group now.
    fn running(&self) -> Vec<(i32, i32)> {
        self.members
            .iter()
            .filter_map(|(pid, started)| {
                let now = stat(*pid)?;
                (now.started == *started && !now.zombie).then_some((*pid, now.group))
            })
            .collect()
    }

    /// Sends `signal` once to every member: to the group as a whole, and
    /// to each running member outside it (a second SIGTERM to a member of
    /// the group would read as "again: force the exit" to mlwatch itself).
    pub fn signal(&mut self, signal: Signal) {
        self.refresh();
        let _ = killpg(Pid::from_raw(self.leader), signal);
        for (pid, group) in self.running() {
            if group != self.leader {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }

    /// Whether every member has exited (the leader may be an unreaped
    /// zombie: its parent reaps it after the stop).
    fn is_gone(&mut self) -> bool {
        self.refresh();
        self.running().is_empty()
    }

    /// TERM, up to `grace` for everything to exit, then KILL: for callers
    /// that block (the tests' harness).
    pub fn stop_blocking(mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        if crate::poll::blocking(POLL, grace, || self.is_gone().then_some(())).is_err() {
            self.signal(Signal::SIGKILL);
        }
    }

    /// [`ProcessTree::stop_blocking`] for async callers (the launcher).
    pub async fn stop(mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let exited = crate::poll::until(POLL, grace, || {
            let gone = self.is_gone();
            async move { gone.then_some(()) }
        })
        .await;
        if exited.is_err() {
            self.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis() {
        let line = "4242 (a (weird) name) S 17 4242 4242 0 -1 4194560 108 0 0 0 0 0 0 0 20 0 1 0 987654 2437120 200";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                parent: 17,
                group: 4242,
                started: 987654,
                zombie: false,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    /// A shell that ignores SIGTERM, with a child in its group and a child
    /// that left it with setsid (both ignoring SIGTERM too), all named by
    /// `marker` on their command lines.
    fn stubborn_tree(marker: &str) -> std::process::Child {
        let script = r#"trap '' TERM
            sh -c 'trap "" TERM; while :; do sleep 1; done' in-group "$0" &
            setsid sh -c 'trap "" TERM; while :; do sleep 1; done' own-session "$0" &
            while :; do sleep 1; done"#;
        std::process::Command::new("sh")
            .args(["-c", script, marker])
            .process_group(0)
            .spawn()
            .expect("sh")
    }

    fn mentioning(marker: &str) -> usize {
        all_processes()
            .keys()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
            })
            .count()
    }

    #[test]
    fn a_stubborn_tree_is_killed_whole_after_the_grace_period() {
        let marker = format!("mlwatch-tree-test-{}", std::process::id());
        let mut child = stubborn_tree(&marker);
        crate::poll::blocking(POLL, Duration::from_secs(10), || {
            (mentioning(&marker) == 3).then_some(())
        })
        .expect("the shell and its two children run");
        ProcessTree::of(child.id()).stop_blocking(Duration::from_millis(300));
        child.wait().expect("reap the leader");
        crate::poll::blocking(POLL, Duration::from_secs(10), || {
            (mentioning(&marker) == 0).then_some(())
        })
        .expect("nothing of the tree is left");
    }
}
