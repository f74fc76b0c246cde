//! A model as the service answers with it: the artifact plus everything
//! derived from it when it loads (the input schema, the metric label sets,
//! the drift window). [`Store`] is the model store holding one.

use super::decode::Schema;
use super::drift::DriftWindow;
use super::labels::{BinLabels, ModelLabels};
use super::state::{Loaded, ModelStore};
use crate::model::Artifact;

/// The service's model store.
pub type Store = ModelStore<LoadedModel>;

/// A model ready to answer requests.
#[derive(Debug)]
pub struct LoadedModel {
    pub artifact: Artifact,
    pub schema: Schema,
    pub labels: ModelLabels,
    /// `None` without instrumentation.
    pub drift: Option<DriftWindow>,
    /// The version as prediction ids carry it (always `Some` for a loaded
    /// artifact, whose version is 12 hex digits).
    pub id_version: Option<[u8; 6]>,
    /// This version's quality entry (ids issued), when remembered.
    pub quality: Option<std::sync::Arc<super::quality::VersionQuality>>,
    /// The drift bin series' label sets, built by the first scrape.
    pub(crate) bin_labels: std::sync::OnceLock<BinLabels>,
}

impl LoadedModel {
    /// Derives what requests need from `artifact`; `drift_capacity` is
    /// `None` without instrumentation.
    pub fn new(artifact: Artifact, labels: ModelLabels, drift_capacity: Option<usize>) -> Self {
        Self {
            schema: Schema::new(&artifact.feature_names),
            drift: drift_capacity.map(|c| DriftWindow::new(&artifact.reference, c)),
            id_version: super::prediction_id::version_bytes(&artifact.model_version),
            quality: None,
            bin_labels: std::sync::OnceLock::new(),
            labels,
            artifact,
        }
    }

    /// The drift window with its bin series' label sets (`None` without
    /// instrumentation).
    pub(crate) fn drift_bins(&self) -> Option<(&DriftWindow, &BinLabels)> {
        let window = self.drift.as_ref()?;
        let labels = self.bin_labels.get_or_init(|| {
            let features: Vec<usize> = window
                .feature_totals()
                .iter()
                .map(|t| t.as_ref().map_or(0, |t| t.counts.len()))
                .collect();
            let prediction = window.prediction_totals().map_or(0, |t| t.counts.len());
            BinLabels::new(&self.labels, &features, prediction)
        });
        Some((window, labels))
    }
}

impl Loaded for LoadedModel {
    fn artifact(&self) -> &Artifact {
        &self.artifact
    }
}
