//! The artifact written by training: round trip, reproducibility, and a
//! clear error for every way the file can be broken.

use std::path::Path;

use mlwatch::model::{Artifact, ArtifactError};
use mlwatch::train::{train_quietly, Algorithm, FitOptions};

fn linear() -> Artifact {
    let mut options = FitOptions::new(Algorithm::Linear);
    options.iterations = Some(4);
    train_quietly(&options).expect("training succeeds")
}

#[test]
fn artifact_round_trips_through_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/model.json");
    let artifact = linear();
    artifact.save(&path).expect("save");
    let loaded = Artifact::load(&path).expect("load");
    assert_eq!(loaded, artifact);
    assert_eq!(loaded.feature_names.len(), 10);
    assert_eq!(loaded.reference.features.len(), 10);
    // No temporary file is left beside the artifact.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

#[test]
fn same_seed_gives_same_model_version() {
    let a = linear();
    let b = linear();
    assert_eq!(a.model_version, b.model_version);
    let mut options = FitOptions::new(Algorithm::Linear);
    options.iterations = Some(4);
    options.seed = 7;
    assert_ne!(
        train_quietly(&options).unwrap().model_version,
        a.model_version
    );
}

#[test]
fn every_algorithm_trains_and_round_trips() {
    for algorithm in [Algorithm::Tree, Algorithm::Forest, Algorithm::Boost] {
        let mut options = FitOptions::new(algorithm);
        options.iterations = Some(3);
        let artifact = train_quietly(&options).expect("training succeeds");
        let json = serde_json::to_vec(&artifact).unwrap();
        let loaded = Artifact::from_slice(Path::new("x.json"), &json).expect("loads");
        assert_eq!(loaded.model_version, artifact.model_version);
        assert_eq!(loaded.class_names, ["3", "4", "5", "6", "7", "8"]);
        let score = loaded.validation_score().unwrap();
        assert!(
            (0.3..=1.0).contains(&score),
            "{algorithm:?} accuracy {score}"
        );
    }
}

#[test]
fn regression_needs_a_regression_data_set() {
    let mut options = FitOptions::new(Algorithm::Linear);
    options.dataset = Some(mlwatch::train::DatasetName::Iris);
    let error = train_quietly(&options).unwrap_err().to_string();
    assert!(
        error.contains("needs a regression data set") && error.contains("iris"),
        "{error}"
    );
}

fn load_bytes(bytes: &[u8]) -> ArtifactError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.json");
    std::fs::write(&path, bytes).unwrap();
    let error = Artifact::load(&path).expect_err("must not load");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "error must name the file: {error}"
    );
    error
}

#[test]
fn missing_file_is_named() {
    let error = Artifact::load(Path::new("/nonexistent/model.json")).unwrap_err();
    assert!(matches!(error, ArtifactError::Missing { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "model artifact /nonexistent/model.json: file not found"
    );
}

#[test]
fn truncated_file_is_reported_as_truncated() {
    let json = serde_json::to_vec(&linear()).unwrap();
    let error = load_bytes(&json[..json.len() / 2]);
    assert!(matches!(error, ArtifactError::Truncated { .. }), "{error}");
    let error = load_bytes(b"");
    assert!(matches!(error, ArtifactError::Truncated { .. }), "{error}");
}

#[test]
fn garbage_is_reported_as_corrupt() {
    let error = load_bytes(b"\x00\x01not json at all");
    assert!(matches!(error, ArtifactError::Corrupt { .. }), "{error}");
    let error = load_bytes(b"{\"hello\": 1}");
    assert!(
        error.to_string().contains("not an mlwatch artifact"),
        "{error}"
    );
}

#[test]
fn other_format_version_is_refused_by_number() {
    let mut value = serde_json::to_value(linear()).unwrap();
    value["format_version"] = 99.into();
    let error = load_bytes(&serde_json::to_vec(&value).unwrap());
    assert!(
        matches!(error, ArtifactError::UnsupportedFormat { found: 99, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("format version 99 is not supported"),
        "{error}"
    );
}

#[test]
fn edited_content_fails_the_checksum() {
    let mut value = serde_json::to_value(linear()).unwrap();
    value["model"]["intercept"] = 1234.5.into();
    let error = load_bytes(&serde_json::to_vec(&value).unwrap());
    assert!(
        matches!(error, ArtifactError::ChecksumMismatch { .. }),
        "{error}"
    );
}

#[test]
fn wrong_schema_is_corrupt_and_names_the_field() {
    let mut value = serde_json::to_value(linear()).unwrap();
    value.as_object_mut().unwrap().remove("feature_names");
    let error = load_bytes(&serde_json::to_vec(&value).unwrap());
    assert!(error.to_string().contains("feature_names"), "{error}");
}

#[test]
fn inconsistent_model_is_invalid() {
    let artifact = linear();
    let mut broken = artifact.clone();
    if let mlwatch::model::Model::Linear { coefficients, .. } = &mut broken.model {
        coefficients.pop();
    }
    let broken = broken.seal().unwrap();
    let error = load_bytes(&serde_json::to_vec(&broken).unwrap());
    assert!(matches!(error, ArtifactError::Invalid { .. }), "{error}");
    assert!(
        error.to_string().contains("9 coefficients for 10 features"),
        "{error}"
    );
}
