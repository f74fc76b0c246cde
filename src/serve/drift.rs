//! The drift window: the bins of the last N samples seen by /predict, kept
//! without a lock so that recording never serialises requests.
//!
//! Every sample (one instance of a request) takes the next slot of a ring
//! from one atomic sequence number, and stores one bin index per tracked
//! quantity (each input feature, then the prediction) into its slot: one
//! atomic sequence step per request and one relaxed byte store per feature,
//! O(features) per sample with no read-modify-write on shared counters. A
//! slot's bytes sit together, so one sample touches one cache line.
//!
//! Scrapes count the bins over the whole ring, O(window × features) (about
//! 10 µs for 1000 samples × 10 features), and compare the shares with the
//! artifact's reference as a PSI. A scrape racing a write may see a slot
//! half-updated, which PSI over hundreds of samples does not notice.
//!
//! Beside the ring, one monotonic counter per track and bin counts every
//! sample ever recorded (`model_*_drift_bin_samples_total`). PSI values of
//! several replicas cannot be combined, but these counts add up: the fleet
//! rules (prometheus/rules/ml_fleet.yml) sum them over a time window. A
//! batch adds its bins locally first, so it costs one add per touched bin;
//! a single row adds to the totals directly, one per track, with nothing
//! allocated. The totals are kept per thread ([`ShardedCounts`]) and summed
//! at scrape time, like PSI and the window's bin counts.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use ndarray::ArrayView2;

use super::sharded::ShardedCounts;
use crate::model::{BinReference, DriftReference, Prediction};

/// A slot byte that has not held a sample yet.
const EMPTY: u8 = u8::MAX;

/// Cumulative bin counts of one track and the reference shares of its bins.
#[derive(Debug, Clone, PartialEq)]
pub struct BinTotals<'a> {
    pub counts: Vec<u64>,
    pub proportions: &'a [f64],
}

/// The window for one model.
#[derive(Debug)]
pub struct DriftWindow {
    capacity: usize,
    sequence: AtomicU64,
    /// The bins of each feature, then of the prediction; `None` for a
    /// reference with more bins than a slot byte can name.
    references: Vec<Option<BinReference>>,
    /// `capacity` slots of `references.len()` bin bytes each.
    slots: Box<[AtomicU8]>,
    /// Samples ever recorded per bin: track t's bins start at `offsets[t]`.
    /// One copy per thread, summed at scrape: every request adds to one bin
    /// per track, which as shared counters would be a dozen cache lines
    /// moving between the cores on every request.
    totals: ShardedCounts,
    offsets: Vec<usize>,
}

impl DriftWindow {
    /// A window of `capacity` samples (at least 1) against `reference`.
    pub fn new(reference: &DriftReference, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let usable = |bins: &BinReference, what: &str| {
            if bins.bins() < usize::from(EMPTY) {
                Some(bins.clone())
            } else {
                tracing::warn!(
                    "drift reference for {what} has {} bins; drift is not tracked for it",
                    bins.bins()
                );
                None
            }
        };
        let references: Vec<Option<BinReference>> = reference
            .features
            .iter()
            .map(|f| usable(&f.bins, &f.name))
            .chain(std::iter::once(usable(
                &reference.prediction,
                "predictions",
            )))
            .collect();
        let slots = (0..capacity * references.len())
            .map(|_| AtomicU8::new(EMPTY))
            .collect();
        let mut offsets = Vec::with_capacity(references.len() + 1);
        offsets.push(0);
        for reference in &references {
            let bins = reference.as_ref().map_or(0, BinReference::bins);
            offsets.push(offsets.last().copied().unwrap_or(0) + bins);
        }
        let totals = ShardedCounts::new(offsets.last().copied().unwrap_or(0));
        Self {
            capacity,
            sequence: AtomicU64::new(0),
            references,
            slots,
            totals,
            offsets,
        }
    }

    /// Records every row of a request with its prediction.
    pub fn record(&self, rows: ArrayView2<'_, f64>, predictions: &[Prediction]) {
        let first = self
            .sequence
            .fetch_add(rows.nrows() as u64, Ordering::Relaxed);
        if let (1, [prediction]) = (rows.nrows(), predictions) {
            // The common request, one row: one relaxed add per track,
            // straight into this thread's totals, nothing allocated.
            let totals = self.totals.local();
            self.bin_row(first, rows.row(0), prediction, |index| {
                totals.add(index, 1);
            });
            return;
        }
        // A batch: its bin counts, added to the totals once.
        let mut added = vec![0u64; self.totals.len()];
        for (offset, (row, prediction)) in rows.rows().into_iter().zip(predictions).enumerate() {
            self.bin_row(first + offset as u64, row, prediction, |index| {
                if let Some(count) = added.get_mut(index) {
                    *count += 1;
                }
            });
        }
        let totals = self.totals.local();
        for (index, count) in added.into_iter().enumerate() {
            if count > 0 {
                totals.add(index, count);
            }
        }
    }

    /// Stores the bins of one row (its features, then its prediction) in
    /// the window slot of sample number `sample`, and passes the index in
    /// `totals` of each bin it fell into to `count`.
    fn bin_row(
        &self,
        sample: u64,
        row: ndarray::ArrayView1<'_, f64>,
        prediction: &Prediction,
        mut count: impl FnMut(usize),
    ) {
        let tracks = self.references.len();
        let slot = (sample % self.capacity as u64) as usize;
        let Some(bytes) = self.slots.get(slot * tracks..(slot + 1) * tracks) else {
            return;
        };
        let values = row
            .iter()
            .copied()
            .chain(std::iter::once(prediction.as_number()));
        for (((byte, reference), value), offset) in bytes
            .iter()
            .zip(&self.references)
            .zip(values)
            .zip(&self.offsets)
        {
            if let Some(reference) = reference {
                // Below EMPTY by construction (checked in `new`).
                let bin = reference.bin(value).min(usize::from(EMPTY - 1));
                byte.store(bin as u8, Ordering::Relaxed);
                count(offset + bin);
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples the window holds: every sample so far, up to the capacity.
    pub fn fill(&self) -> usize {
        usize::try_from(self.sequence.load(Ordering::Relaxed))
            .map_or(self.capacity, |n| n.min(self.capacity))
    }

    /// PSI of each feature, in feature order; `None` for an empty window or
    /// an untracked feature.
    pub fn feature_psi(&self) -> Vec<Option<f64>> {
        let features = self.references.len() - 1;
        (0..features).map(|track| self.psi(track)).collect()
    }

    pub fn prediction_psi(&self) -> Option<f64> {
        self.psi(self.references.len() - 1)
    }

    /// Samples ever recorded in each bin of each feature, in feature order,
    /// with the reference share of each bin; `None` for an untracked feature.
    pub fn feature_totals(&self) -> Vec<Option<BinTotals<'_>>> {
        let features = self.references.len() - 1;
        (0..features)
            .map(|track| self.track_totals(track))
            .collect()
    }

    pub fn prediction_totals(&self) -> Option<BinTotals<'_>> {
        self.track_totals(self.references.len() - 1)
    }

    fn track_totals(&self, track: usize) -> Option<BinTotals<'_>> {
        let reference = self.references.get(track)?.as_ref()?;
        let start = *self.offsets.get(track)?;
        Some(BinTotals {
            counts: (start..start + reference.bins())
                .map(|index| self.totals.sum(index))
                .collect(),
            proportions: &reference.proportions,
        })
    }

    fn psi(&self, track: usize) -> Option<f64> {
        let reference = self.references.get(track)?.as_ref()?;
        reference.psi(&self.counts(track, reference.bins()))
    }

    /// How many samples of the window fall in each bin of one track.
    fn counts(&self, track: usize, bins: usize) -> Vec<u64> {
        let mut counts = vec![0u64; bins];
        for byte in self.slots.iter().skip(track).step_by(self.references.len()) {
            if let Some(count) = counts.get_mut(usize::from(byte.load(Ordering::Relaxed))) {
                *count += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FeatureReference;
    use ndarray::Array2;
    use std::sync::Arc;

    fn reference() -> DriftReference {
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
        DriftReference {
            features: vec![
                FeatureReference::from_values("a", &values).unwrap(),
                FeatureReference::from_values("b", &values).unwrap(),
            ],
            prediction: BinReference::deciles(&values).unwrap(),
        }
    }

    fn rows(values: impl Iterator<Item = (f64, f64)>) -> (Array2<f64>, Vec<Prediction>) {
        let pairs: Vec<(f64, f64)> = values.collect();
        let rows = Array2::from_shape_fn((pairs.len(), 2), |(r, c)| {
            if c == 0 {
                pairs[r].0
            } else {
                pairs[r].1
            }
        });
        let predictions = pairs.iter().map(|(a, _)| Prediction::Value(*a)).collect();
        (rows, predictions)
    }

    fn total(window: &DriftWindow, track: usize) -> u64 {
        window.counts(track, 10).iter().sum()
    }

    #[test]
    fn window_evicts_old_samples_and_psi_follows_the_recent_ones() {
        let window = DriftWindow::new(&reference(), 500);
        assert_eq!(window.fill(), 0);
        assert_eq!(window.feature_psi(), vec![None, None]);
        assert_eq!(window.prediction_psi(), None);
        // Matching the reference: PSI near 0.
        let (r, p) = rows((0..500).map(|i| (f64::from(i) / 500.0, f64::from(i) / 500.0)));
        window.record(r.view(), &p);
        assert_eq!(window.fill(), 500);
        let psi: Vec<f64> = window
            .feature_psi()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert!(psi.iter().all(|p| *p < 0.01), "{psi:?}");
        // Replace the whole window with feature a shifted out of range.
        let (r, p) = rows((0..500).map(|i| (5.0, f64::from(i) / 500.0)));
        window.record(r.view(), &p);
        assert_eq!(window.fill(), 500);
        let psi: Vec<f64> = window
            .feature_psi()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert!(psi[0] > 1.0 && psi[1] < 0.01, "{psi:?}");
        assert!(window.prediction_psi().unwrap() > 1.0);
        assert_eq!(
            total(&window, 0),
            500,
            "counts always sum to the samples held"
        );
    }

    #[test]
    fn bin_totals_count_every_sample_ever_recorded() {
        let window = DriftWindow::new(&reference(), 10);
        // 25 samples through a 10-sample ring: the totals keep all of them.
        let (r, p) = rows((0..25).map(|i| (if i < 20 { 0.05 } else { 0.95 }, 0.5)));
        window.record(r.view(), &p);
        let (one, _) = rows(std::iter::once((0.95, 0.5)));
        window.record(one.view(), &[Prediction::Value(0.95)]);
        let features = window.feature_totals();
        let a = features[0].as_ref().unwrap();
        assert_eq!(a.counts.iter().sum::<u64>(), 26);
        assert_eq!((a.counts[0], a.counts[9]), (20, 6), "{:?}", a.counts);
        assert_eq!(a.proportions.len(), 10);
        let b = features[1].as_ref().unwrap();
        assert_eq!(b.counts[4], 26, "0.5 is the fifth decile: {:?}", b.counts);
        let prediction = window.prediction_totals().unwrap();
        assert_eq!((prediction.counts[0], prediction.counts[9]), (20, 6));
        // The ring itself still holds only its capacity.
        assert_eq!(total(&window, 0), 10);
    }

    #[test]
    fn a_partly_filled_window_counts_only_its_samples() {
        let window = DriftWindow::new(&reference(), 100);
        let (r, p) = rows((0..30).map(|i| (f64::from(i) / 30.0, 0.5)));
        window.record(r.view(), &p);
        assert_eq!(
            (window.fill(), total(&window, 0), total(&window, 2)),
            (30, 30, 30)
        );
    }

    #[test]
    fn concurrent_writers_fill_every_slot() {
        let window = Arc::new(DriftWindow::new(&reference(), 64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = Arc::clone(&window);
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let v = f64::from((i * 7 + t * 13) % 1000) / 1000.0;
                        let (r, p) = rows(std::iter::once((v, 1.0 - v)));
                        window.record(r.view(), &p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(window.fill(), 64);
        for track in 0..3 {
            assert_eq!(total(&window, track), 64);
        }
        for totals in window.feature_totals() {
            assert_eq!(totals.unwrap().counts.iter().sum::<u64>(), 8000);
        }
    }
}
