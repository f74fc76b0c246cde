//! Counters that every request adds to, kept as one copy per thread slot
//! and summed when read (at scrape time).
//!
//! One shared counter is one cache line that every core writes: under load
//! it moves between the cores on nearly every add, and a request that adds
//! to a dozen of them (a drift bin per feature) waits for a dozen line
//! transfers (benches/record_contention.rs: a 10-feature drift record costs
//! about 4.5× more when two cores record at once). Here each thread adds
//! to its own slot's copy, whose lines no other core writes unless more
//! threads record than there are slots (then the extra threads share the
//! last slot, still correctly: their adds are atomic read-modify-writes).
//! A thread that owns its slot alone adds with a plain load and store (no
//! locked instruction), unless the set is [`ShardedCounts::resettable`]:
//! there the scrape's reset and an add must not interleave. Reading sums
//! the slots, O(slots × counters), which only scrapes do.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Counters per cache line (64 bytes).
const PER_LINE: usize = 8;

/// One cache line of counters: no two slots share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line([AtomicU64; PER_LINE]);

/// `len` counters, one copy per thread slot.
#[derive(Debug)]
pub struct ShardedCounts {
    len: usize,
    /// Lines per slot.
    stride: usize,
    slots: usize,
    /// [`ShardedCounts::take`] may reset the counters: every add is then
    /// a read-modify-write.
    resettable: bool,
    lines: Box<[Line]>,
}

/// How many slots every set of sharded counters has: twice the cores (so
/// that the runtime's workers and the odd other thread rarely share one),
/// a power of two, at most 64.
fn slot_count() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 2).next_power_of_two().clamp(2, 64)
    })
}

/// This thread's number: no two live threads share one, and a thread that
/// ends gives its number back (to a free list, touched only when a thread
/// first records and when it ends), so that threads that come and go (the
/// runtime's blocking pool) do not use up the slots of their own. A
/// thread past its thread-local storage's end gets `usize::MAX` (the
/// shared slot).
fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    struct Number(usize);
    impl Drop for Number {
        fn drop(&mut self) {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(self.0);
        }
    }
    thread_local! {
        static NUMBER: Number = Number(
            FREE.lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_else(|| NEXT.fetch_add(1, Ordering::Relaxed)),
        );
    }
    NUMBER.try_with(|n| n.0).unwrap_or(usize::MAX)
}

/// The calling thread's copy of the counters.
#[derive(Debug, Clone, Copy)]
pub struct Local<'a> {
    lines: &'a [Line],
    /// No other thread writes these lines.
    sole_writer: bool,
}

impl Local<'_> {
    /// Adds `n` to counter `index` (nothing for an index out of range).
    pub fn add(&self, index: usize, n: u64) {
        let Some(line) = self.lines.get(index / PER_LINE) else {
            return;
        };
        let counter = &line.0[index % PER_LINE];
        if self.sole_writer {
            // Readers see the old or the new value, both correct.
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl ShardedCounts {
    /// Counters that are only ever summed ([`ShardedCounts::sum`]).
    pub fn new(len: usize) -> Self {
        Self::with(len, false)
    }

    /// Counters that a reader also resets ([`ShardedCounts::take`]).
    pub fn resettable(len: usize) -> Self {
        Self::with(len, true)
    }

    fn with(len: usize, resettable: bool) -> Self {
        let stride = len.div_ceil(PER_LINE);
        let slots = slot_count();
        Self {
            len,
            stride,
            slots,
            resettable,
            lines: (0..stride * slots).map(|_| Line::default()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The calling thread's copy: one thread-local lookup for several adds.
    pub fn local(&self) -> Local<'_> {
        // The last slot is shared by every thread beyond the others.
        let shared = self.slots - 1;
        let slot = thread_number().min(shared);
        Local {
            lines: self
                .lines
                .get(slot * self.stride..(slot + 1) * self.stride)
                .unwrap_or_default(),
            sole_writer: slot < shared && !self.resettable,
        }
    }

    /// Adds `n` to counter `index` in the calling thread's copy.
    pub fn add(&self, index: usize, n: u64) {
        self.local().add(index, n);
    }

    /// Counter `index` over every slot, each slot set to 0 as it is read:
    /// an add racing the reset lands before (and is taken) or after (and
    /// stays for the next take), never lost.
    /// Only for [`ShardedCounts::resettable`] counters (0 otherwise).
    pub fn take(&self, index: usize) -> u64 {
        debug_assert!(self.resettable, "take() on counters made with new()");
        if !self.resettable {
            return 0;
        }
        self.over_slots(index, |counter| counter.swap(0, Ordering::Relaxed))
    }

    /// Counter `index` over every slot (0 out of range).
    pub fn sum(&self, index: usize) -> u64 {
        self.over_slots(index, |counter| counter.load(Ordering::Relaxed))
    }

    /// The wrapping sum of `read` applied to counter `index` of every slot
    /// (0 out of range).
    fn over_slots(&self, index: usize, read: impl Fn(&AtomicU64) -> u64) -> u64 {
        if index >= self.len {
            return 0;
        }
        (0..self.slots)
            .filter_map(|slot| self.lines.get(slot * self.stride + index / PER_LINE))
            .map(|line| read(&line.0[index % PER_LINE]))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn adds_from_many_threads_sum_exactly() {
        // More threads than slots on any machine this runs on: threads
        // share slots and still lose nothing.
        let counts = Arc::new(ShardedCounts::resettable(19));
        let threads: Vec<_> = (0..(counts.slots + 3))
            .map(|t| {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    let local = counts.local();
                    for i in 0..1000 {
                        local.add((i + t) % 19, 1);
                    }
                    counts.add(18, 2);
                })
            })
            .collect();
        let threads_started = threads.len() as u64;
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = (0..19).map(|i| counts.sum(i)).sum();
        assert_eq!(total, threads_started * 1002);
        assert_eq!(counts.sum(19), 0, "out of range reads 0");
        counts.add(19, 5);
        assert_eq!(counts.sum(19), 0, "out of range adds nothing");
    }

    #[test]
    fn sole_writers_and_the_shared_slot_sum_exactly() {
        let counts = Arc::new(ShardedCounts::new(3));
        let threads: Vec<_> = (0..(counts.slots * 2))
            .map(|_| {
                let counts = Arc::clone(&counts);
                std::thread::spawn(move || {
                    for i in 0..30_000 {
                        counts.add(i % 3, 1);
                    }
                    // A wrapping −1, as a request that ends does.
                    counts.add(0, u64::MAX);
                })
            })
            .collect();
        let threads_started = threads.len() as u64;
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counts.sum(0), threads_started * 10_000 - threads_started);
        assert_eq!(counts.sum(1) + counts.sum(2), threads_started * 20_000);
    }

    #[test]
    fn each_slot_starts_on_its_own_cache_line() {
        let counts = ShardedCounts::new(9);
        assert_eq!(counts.stride, 2);
        let address = |slot: usize| std::ptr::addr_of!(counts.lines[slot * counts.stride]) as usize;
        for slot in 0..counts.slots {
            assert_eq!(address(slot) % 64, 0);
        }
        assert!(ShardedCounts::new(0).is_empty());
    }
}
