//! Choosing port numbers for programs that take a number, not a socket
//! (Prometheus, Alertmanager, the launcher's flags).
//!
//! Why not a bind to `:0`: the OS hands out those ports from the ephemeral
//! range, the same range every outgoing connection takes its local port
//! from. Between choosing a port and the child binding it, any client on the
//! machine (a test's HTTP client, a scrape) can take it, and the child dies
//! with "address already in use". That happened in CI under parallel tests.
//! So ports are drawn at random below the ephemeral range, where only
//! listeners that ask for a number go, checked by a bind, and never handed
//! out twice by one process.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context};
use rand::Rng;

/// The lowest port drawn: above the well-known services' usual numbers.
const LOWEST: u16 = 10_000;
/// Draws before giving up: a busy range fails clearly instead of spinning.
const ATTEMPTS: usize = 2_000;

/// Every port this process has handed out, so two callers never get the
/// same one even after its listener closed.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// `count` distinct ports, each free on 127.0.0.1 right now.
pub fn distinct(count: usize) -> anyhow::Result<Vec<u16>> {
    (0..count).map(|_| run_of(1)).collect()
}

/// The first of `count` consecutive ports that are all free right now
/// (`--replicas` and `--ha` take ports in a row).
pub fn run_of(count: u16) -> anyhow::Result<u16> {
    let (low, high) = draw_range()?;
    let span = count.max(1);
    let last_start = high
        .checked_sub(span - 1)
        .filter(|&last| last >= low)
        .with_context(|| format!("no room for {count} consecutive ports in {low}..{high}"))?;
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let given = given.get_or_insert_with(HashSet::new);
    let mut rng = rand::thread_rng();
    for _ in 0..ATTEMPTS {
        let start = rng.gen_range(low..=last_start);
        let ports = start..start + span;
        if ports.clone().any(|p| given.contains(&p)) {
            continue;
        }
        // Held together until the whole run is checked.
        let held: Vec<_> = ports
            .clone()
            .map_while(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
            .collect();
        if held.len() == usize::from(span) {
            given.extend(ports);
            return Ok(start);
        }
    }
    bail!("no {count} consecutive free ports on 127.0.0.1 in {low}..={high} after {ATTEMPTS} tries")
}

/// Ports from [`LOWEST`] up to just below the kernel's ephemeral range.
fn draw_range() -> anyhow::Result<(u16, u16)> {
    let ephemeral_low = ephemeral_low().unwrap_or(32_768);
    let high = ephemeral_low.saturating_sub(1);
    if high <= LOWEST {
        bail!("the ephemeral port range starts at {ephemeral_low}: no ports below it to draw from");
    }
    Ok((LOWEST, high))
}

/// The first port of `net.ipv4.ip_local_port_range` (Linux), if readable.
fn ephemeral_low() -> Option<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_free() {
        let (_, high) = draw_range().unwrap();
        let ports = distinct(50).unwrap();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), 50, "{ports:?}");
        for port in ports {
            assert!((LOWEST..=high).contains(&port), "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn a_run_is_consecutive_and_never_overlaps_what_was_given() {
        let start = run_of(4).unwrap();
        for port in start..start + 4 {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
        let again = distinct(200).unwrap();
        assert!(again.iter().all(|p| !(start..start + 4).contains(p)));
    }
}
