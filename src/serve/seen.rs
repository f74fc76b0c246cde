//! The duplicate window: the ids this replica accepted recently, so that
//! feedback sent twice to the same replica is counted once. Bounded twice:
//! an id is remembered until its feedback window ends (an older id is
//! refused as expired anyway), and at most `capacity` ids are remembered
//! (the oldest accepted are forgotten first). What it cannot see, the same
//! id sent to another replica, docs/quality.md states.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The ids accepted, by their MAC (unique per id).
#[derive(Debug)]
pub struct SeenIds {
    capacity: usize,
    inner: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    set: HashSet<[u8; 16]>,
    /// Arrival order, with the time each entry may be forgotten.
    order: VecDeque<([u8; 16], u64)>,
}

impl SeenIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Remembers `mac` until `forget_ms` and says whether it is new.
    /// Entries whose time has come are dropped from the front as they are
    /// met; the capacity bounds the rest.
    pub fn first_time(&self, mac: [u8; 16], forget_ms: u64, now_ms: u64) -> bool {
        // A poisoned lock only means another request panicked mid-insert;
        // the set is still a set.
        let mut seen = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((oldest, until)) = seen.order.front().copied() {
            if until > now_ms && seen.order.len() < self.capacity {
                break;
            }
            seen.order.pop_front();
            seen.set.remove(&oldest);
        }
        if !seen.set.insert(mac) {
            return false;
        }
        seen.order.push_back((mac, forget_ms));
        true
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(&i.to_be_bytes());
        m
    }

    #[test]
    fn an_id_is_new_once_while_remembered() {
        let seen = SeenIds::new(10);
        assert!(seen.first_time(mac(1), 100, 0));
        assert!(!seen.first_time(mac(1), 100, 50));
        // Its window is over: forgotten (the caller refuses it as expired).
        assert!(seen.first_time(mac(1), 300, 100));
    }

    #[test]
    fn capacity_bounds_memory_and_forgets_the_oldest_first() {
        let seen = SeenIds::new(3);
        for i in 0..10 {
            assert!(seen.first_time(mac(i), u64::MAX, 0));
            assert!(seen.len() <= 3);
        }
        assert!(!seen.first_time(mac(9), u64::MAX, 0), "recent: remembered");
        assert!(seen.first_time(mac(0), u64::MAX, 0), "oldest: forgotten");
    }
}
