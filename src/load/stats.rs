//! Latency statistics in fixed memory: a log-linear histogram in the manner
//! of HdrHistogram, so a run of any length keeps the same few kilobytes and
//! still reports percentiles within 1%.
//!
//! Values are nanoseconds. Below 128 ns every value has its own bucket;
//! above, each power of two is split into 64 equal buckets, so a bucket is
//! at most 1/64 (1.6%) of its values wide and a reported percentile (the
//! bucket's highest value, never above the largest value recorded) is at
//! most 1.6% above the true one.

use std::time::Duration;

/// Sub-buckets per power of two above the linear range.
const SUB_BUCKETS: u64 = 64;
/// Values below this are counted exactly.
const LINEAR: u64 = 2 * SUB_BUCKETS;
/// Enough buckets for every u64.
const BUCKETS: usize = (LINEAR + SUB_BUCKETS * (64 - 7)) as usize;

/// A latency histogram; merge per-worker histograms with [`Histogram::merge`].
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    pub fn record(&mut self, value: Duration) {
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.record_nanos(nanos);
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.counts[bucket(nanos)] += 1;
        self.total += 1;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos(self.max))
    }

    pub fn min(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos(self.min))
    }

    pub fn mean(&self) -> Option<Duration> {
        (self.total > 0).then(|| {
            let mean = self.sum / u128::from(self.total);
            Duration::from_nanos(u64::try_from(mean).unwrap_or(u64::MAX))
        })
    }

    /// The `p`-th percentile (0 < p ≤ 100) by nearest rank: the smallest
    /// recorded value such that at least p% of the values are at or below
    /// it, to the histogram's precision. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.total == 0 || !(p > 0.0 && p <= 100.0) {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let value = highest_in_bucket(index).clamp(self.min, self.max);
                return Some(Duration::from_nanos(value));
            }
        }
        Some(Duration::from_nanos(self.max))
    }
}

/// The bucket of a value: itself below [`LINEAR`], else 64 buckets per
/// power of two, numbered on from the linear range.
fn bucket(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let magnitude = 63 - u64::from(value.leading_zeros()); // ≥ 7
    let shift = magnitude - 6; // ≥ 1; value >> shift lies in 64..128
    let sub = value >> shift;
    (SUB_BUCKETS * shift + sub) as usize
}

/// The largest value that falls into bucket `index`.
fn highest_in_bucket(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let shift = index / SUB_BUCKETS - 1;
    let sub = index % SUB_BUCKETS + SUB_BUCKETS;
    // In u128: the top bucket ends at u64::MAX, one below 2^64.
    let end = (u128::from(sub + 1) << shift) - 1;
    u64::try_from(end).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(values: impl IntoIterator<Item = u64>) -> Histogram {
        let mut h = Histogram::new();
        for v in values {
            h.record_nanos(v);
        }
        h
    }

    fn nanos(d: Option<Duration>) -> u64 {
        d.expect("non-empty histogram").as_nanos() as u64
    }

    #[test]
    fn percentiles_of_one_to_hundred_are_exact_nearest_ranks() {
        let h = of(1..=100);
        assert_eq!(nanos(h.percentile(50.0)), 50);
        assert_eq!(nanos(h.percentile(95.0)), 95);
        assert_eq!(nanos(h.percentile(99.0)), 99);
        assert_eq!(nanos(h.percentile(100.0)), 100);
        assert_eq!(nanos(h.percentile(0.1)), 1, "the lowest rank is 1");
        assert_eq!(nanos(h.mean()), 50, "5050 / 100 rounded down");
        assert_eq!((nanos(h.min()), nanos(h.max())), (1, 100));
    }

    #[test]
    fn percentile_rank_rounds_up_so_p50_of_two_values_is_the_first() {
        let h = of([10, 20]);
        assert_eq!(nanos(h.percentile(50.0)), 10);
        assert_eq!(nanos(h.percentile(50.1)), 20);
    }

    #[test]
    fn large_values_are_reported_within_two_percent_and_never_below_the_truth() {
        // Milliseconds to seconds, spread over several powers of two.
        let values: Vec<u64> = (1..=1000u64).map(|i| i * 1_234_567).collect();
        let h = of(values.iter().copied());
        for p in [50.0, 90.0, 95.0, 99.0, 99.9] {
            let rank = ((p / 100.0) * 1000.0_f64).ceil() as usize;
            let truth = values[rank - 1];
            let got = nanos(h.percentile(p));
            assert!(
                got >= truth && (got - truth) as f64 <= truth as f64 / 64.0,
                "p{p}: got {got}, true value {truth}"
            );
        }
        assert_eq!(
            nanos(h.percentile(100.0)),
            1000 * 1_234_567,
            "p100 is the max"
        );
    }

    #[test]
    fn a_single_value_is_every_percentile_exactly() {
        let h = of([987_654_321]);
        for p in [1.0, 50.0, 99.0, 100.0] {
            assert_eq!(nanos(h.percentile(p)), 987_654_321, "p{p}");
        }
    }

    #[test]
    fn empty_histogram_and_out_of_range_percentiles_have_no_value() {
        let h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.mean(), None);
        let h = of([5]);
        assert_eq!(h.percentile(0.0), None);
        assert_eq!(h.percentile(100.5), None);
        assert_eq!(h.percentile(f64::NAN), None);
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_values() {
        let mut a = of((1..=500).map(|i| i * 1000));
        let b = of((501..=1000).map(|i| i * 1000));
        a.merge(&b);
        let all = of((1..=1000).map(|i| i * 1000));
        for p in [50.0, 95.0, 99.0] {
            assert_eq!(a.percentile(p), all.percentile(p));
        }
        assert_eq!((a.count(), a.mean()), (all.count(), all.mean()));
    }

    #[test]
    fn buckets_are_contiguous_and_cover_every_u64() {
        // Each bucket's highest value + 1 starts the next bucket.
        let mut index = 0;
        let mut value = 0u64;
        while value < u64::MAX / 2 {
            assert_eq!(bucket(value), index, "value {value}");
            let top = highest_in_bucket(index);
            assert_eq!(bucket(top), index, "top {top} of bucket {index}");
            value = top + 1;
            index += 1;
        }
        assert!(bucket(u64::MAX) < BUCKETS);
        assert_eq!(highest_in_bucket(bucket(u64::MAX)), u64::MAX);
    }
}
