//! The drift reference: how the training data was distributed, stored in the
//! artifact so the service can compare live traffic against it.
//!
//! Each feature (and the model's predictions) gets decile edges and the share
//! of reference rows in each bin. The population stability index (PSI)
//! compares those shares with the shares seen in a window of recent requests:
//! below 0.1 is usually noise, above 0.2 a shift worth acting on.

use serde::{Deserialize, Serialize};

/// Shares below this are floored so that an empty bin gives a large but
/// finite PSI instead of infinity.
const PSI_FLOOR: f64 = 1e-4;

/// Bins defined by ascending inner edges: bin 0 holds values ≤ `edges[0]`,
/// bin i values in (`edges[i-1]`, `edges[i]`], the last bin values > the
/// last edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinReference {
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
}

impl BinReference {
    /// Decile edges of `values` (ties collapse, so a binary feature gets two
    /// edges rather than nine identical ones) and the share of `values` in
    /// each bin. `None` when there are no finite values.
    pub fn deciles(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..10)
            .map(|decile| {
                let position = (decile as f64 / 10.0 * (sorted.len() - 1) as f64).round() as usize;
                sorted[position]
            })
            .collect();
        edges.dedup();
        Some(Self::with_edges(edges, &sorted))
    }

    /// Bins fixed by the caller, shares measured on `values`.
    pub fn with_edges(edges: Vec<f64>, values: &[f64]) -> Self {
        let mut reference = Self {
            proportions: vec![0.0; edges.len() + 1],
            edges,
        };
        let counts = values
            .iter()
            .fold(vec![0u64; reference.bins()], |mut counts, v| {
                counts[reference.bin(*v)] += 1;
                counts
            });
        reference.proportions = shares(&counts);
        reference
    }

    pub fn bins(&self) -> usize {
        self.edges.len() + 1
    }

    /// The bin a value falls into. Binary search: O(log bins).
    pub fn bin(&self, value: f64) -> usize {
        self.edges.partition_point(|edge| *edge < value)
    }

    /// PSI of observed bin counts against the reference shares. `None` when
    /// nothing was observed or the counts do not match the bins.
    pub fn psi(&self, counts: &[u64]) -> Option<f64> {
        if counts.len() != self.proportions.len() || counts.iter().all(|c| *c == 0) {
            return None;
        }
        let observed = shares(counts);
        Some(
            observed
                .iter()
                .zip(&self.proportions)
                .map(|(actual, expected)| {
                    let (a, e) = (actual.max(PSI_FLOOR), expected.max(PSI_FLOOR));
                    (a - e) * (a / e).ln()
                })
                .sum(),
        )
    }

    pub(crate) fn is_consistent(&self) -> bool {
        self.proportions.len() == self.edges.len() + 1
            && self.edges.windows(2).all(|w| w[0] <= w[1])
            && self.edges.iter().all(|e| e.is_finite())
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|c| *c as f64 / total as f64).collect()
}

/// Reference for one input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureReference {
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub bins: BinReference,
}

impl FeatureReference {
    pub fn from_values(name: &str, values: &[f64]) -> Option<Self> {
        let bins = BinReference::deciles(values)?;
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Some(Self {
            name: name.to_owned(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            std: variance.sqrt(),
            bins,
        })
    }

    pub fn is_out_of_range(&self, value: f64) -> bool {
        value < self.min || value > self.max
    }
}

/// Everything the service needs to measure drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    pub features: Vec<FeatureReference>,
    pub prediction: BinReference,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decile_edges_of_one_to_hundred() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let reference = BinReference::deciles(&values).unwrap();
        // position round(k/10 * 99): 10, 20, 30, 40, 50, 59, 69, 79, 89 → values +1.
        assert_eq!(
            reference.edges,
            vec![11.0, 21.0, 31.0, 41.0, 51.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert_eq!(reference.proportions.len(), 10);
        assert!((reference.proportions[0] - 0.11).abs() < 1e-12);
        assert!((reference.proportions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ties_collapse_into_fewer_bins() {
        let values = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
        let reference = BinReference::deciles(&values).unwrap();
        assert_eq!(reference.edges, vec![1.0, 2.0]);
        assert_eq!(reference.proportions, vec![0.5, 0.5, 0.0]);
    }

    #[test]
    fn psi_matches_hand_computed_value() {
        let reference = BinReference {
            edges: vec![0.0],
            proportions: vec![0.5, 0.5],
        };
        assert_eq!(reference.psi(&[50, 50]), Some(0.0));
        // 0.8/0.2 vs 0.5/0.5: 0.3 ln 1.6 + (-0.3) ln 0.4 = 0.3 ln 4.
        let psi = reference.psi(&[80, 20]).unwrap();
        assert!((psi - 0.3 * 4f64.ln()).abs() < 1e-12, "{psi}");
        assert_eq!(reference.psi(&[0, 0]), None);
    }

    #[test]
    fn psi_of_empty_reference_bin_is_finite() {
        let reference = BinReference {
            edges: vec![0.0],
            proportions: vec![1.0, 0.0],
        };
        let psi = reference.psi(&[0, 10]).unwrap();
        assert!(psi.is_finite() && psi > 5.0, "{psi}");
    }

    #[test]
    fn feature_reference_range_and_moments() {
        let feature = FeatureReference::from_values("x", &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((feature.min, feature.max, feature.mean), (1.0, 4.0, 2.5));
        assert!((feature.std - 1.25f64.sqrt()).abs() < 1e-12);
        assert!(feature.is_out_of_range(4.5) && !feature.is_out_of_range(4.0));
    }
}
