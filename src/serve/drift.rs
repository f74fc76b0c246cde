//! The drift window: the bins of the last N samples seen by /predict, kept
//! without a lock so that recording never serialises requests.
//!
//! Every sample (one instance of a request) takes the next slot of a ring
//! from one atomic sequence number. Each tracked quantity (every input
//! feature, and the prediction) has one atomic bin index per slot and one
//! atomic count per bin: recording swaps the new bin into the slot, counts
//! the new bin up and the evicted bin down. That is O(features) atomic
//! operations per sample. At scrape time the counts are compared with the
//! artifact's reference shares as a PSI. A scrape racing a write may see a
//! count off by the samples in flight, which PSI over hundreds of samples
//! does not notice.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use ndarray::ArrayView2;

use crate::model::{BinReference, DriftReference, Prediction};

/// A slot that has not held a sample yet.
const EMPTY: u16 = u16::MAX;

/// The window for one model: one track per feature plus one for predictions.
#[derive(Debug)]
pub struct DriftWindow {
    capacity: usize,
    sequence: AtomicU64,
    features: Vec<Option<Track>>,
    prediction: Option<Track>,
}

impl DriftWindow {
    /// A window of `capacity` samples against `reference`. `capacity` must be
    /// at least 1 (checked when the service starts).
    pub fn new(reference: &DriftReference, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let track = |bins: &BinReference, what: &str| {
            let track = Track::new(bins.clone(), capacity);
            if track.is_none() {
                tracing::warn!(
                    "drift reference for {what} has {} bins; drift is not tracked for it",
                    bins.bins()
                );
            }
            track
        };
        Self {
            capacity,
            sequence: AtomicU64::new(0),
            features: reference
                .features
                .iter()
                .map(|f| track(&f.bins, &f.name))
                .collect(),
            prediction: track(&reference.prediction, "predictions"),
        }
    }

    /// Records every row of a request with its prediction.
    pub fn record(&self, rows: ArrayView2<'_, f64>, predictions: &[Prediction]) {
        let first = self
            .sequence
            .fetch_add(rows.nrows() as u64, Ordering::Relaxed);
        for (offset, (row, prediction)) in rows.rows().into_iter().zip(predictions).enumerate() {
            let slot = ((first + offset as u64) % self.capacity as u64) as usize;
            for (track, value) in self.features.iter().zip(row) {
                if let Some(track) = track {
                    track.record(slot, *value);
                }
            }
            if let Some(track) = &self.prediction {
                track.record(slot, prediction.as_number());
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
    pub fn feature_psi(&self) -> impl Iterator<Item = Option<f64>> + '_ {
        self.features
            .iter()
            .map(|t| t.as_ref().and_then(Track::psi))
    }

    pub fn prediction_psi(&self) -> Option<f64> {
        self.prediction.as_ref().and_then(Track::psi)
    }
}

/// The ring of bin indices and the bin counts of one quantity.
#[derive(Debug)]
struct Track {
    reference: BinReference,
    slots: Box<[AtomicU16]>,
    counts: Box<[AtomicU64]>,
}

impl Track {
    /// `None` when the reference has more bins than a slot can name.
    fn new(reference: BinReference, capacity: usize) -> Option<Self> {
        if reference.bins() >= usize::from(EMPTY) {
            return None;
        }
        Some(Self {
            slots: (0..capacity).map(|_| AtomicU16::new(EMPTY)).collect(),
            counts: (0..reference.bins()).map(|_| AtomicU64::new(0)).collect(),
            reference,
        })
    }

    fn record(&self, slot: usize, value: f64) {
        // `bin` is below `bins() < EMPTY`, so the conversion cannot fail.
        let Ok(bin) = u16::try_from(self.reference.bin(value)) else {
            return;
        };
        let (Some(slot), Some(count)) = (self.slots.get(slot), self.counts.get(usize::from(bin)))
        else {
            return;
        };
        // Count the new bin up before publishing it in the slot: whoever
        // later evicts it (and counts it down) synchronises with this swap,
        // so a count never dips below zero.
        count.fetch_add(1, Ordering::Relaxed);
        let evicted = slot.swap(bin, Ordering::AcqRel);
        if evicted != EMPTY {
            if let Some(old) = self.counts.get(usize::from(evicted)) {
                old.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn psi(&self) -> Option<f64> {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        self.reference.psi(&counts)
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

    #[test]
    fn window_evicts_old_samples_and_psi_follows_the_recent_ones() {
        let window = DriftWindow::new(&reference(), 500);
        assert_eq!(window.fill(), 0);
        assert_eq!(window.feature_psi().collect::<Vec<_>>(), vec![None, None]);
        // Matching the reference: PSI near 0.
        let (r, p) = rows((0..500).map(|i| (f64::from(i) / 500.0, f64::from(i) / 500.0)));
        window.record(r.view(), &p);
        assert_eq!(window.fill(), 500);
        let psi: Vec<f64> = window.feature_psi().map(Option::unwrap).collect();
        assert!(psi.iter().all(|p| *p < 0.01), "{psi:?}");
        // Replace the whole window with feature a shifted out of range.
        let (r, p) = rows((0..500).map(|i| (5.0, f64::from(i) / 500.0)));
        window.record(r.view(), &p);
        assert_eq!(window.fill(), 500);
        let psi: Vec<f64> = window.feature_psi().map(Option::unwrap).collect();
        assert!(psi[0] > 1.0 && psi[1] < 0.01, "{psi:?}");
        assert!(window.prediction_psi().unwrap() > 1.0);
        let total: u64 = window.features[0]
            .as_ref()
            .unwrap()
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        assert_eq!(total, 500, "counts always sum to the samples held");
    }

    #[test]
    fn concurrent_writers_keep_counts_consistent() {
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
        for track in window.features.iter().flatten() {
            let total: u64 = track.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            assert_eq!(total, 64);
            let held = track
                .slots
                .iter()
                .filter(|s| s.load(Ordering::Relaxed) != EMPTY)
                .count();
            assert_eq!(held, 64);
        }
    }
}
