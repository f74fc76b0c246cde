//! The artifact's MLflow lineage: format 2 carries it, format 1 artifacts
//! (written before it existed) still load, and where a model was tracked
//! does not change its content hash.

use std::path::Path;

use mlwatch::mlflow::MlflowRun;
use mlwatch::model::{Artifact, FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use mlwatch::train::{train_quietly, Algorithm, FitOptions};

fn linear() -> Artifact {
    let mut options = FitOptions::new(Algorithm::Linear);
    options.iterations = Some(3);
    train_quietly(&options).expect("train")
}

fn run() -> MlflowRun {
    MlflowRun {
        run_id: "0749e3c017874d86a28c50e8dd3796f6".into(),
        experiment_id: "1".into(),
        experiment_name: "mlwatch".into(),
        tracking_uri: "http://127.0.0.1:5000".into(),
    }
}

fn reload(artifact: &Artifact) -> Artifact {
    let bytes = serde_json::to_vec_pretty(artifact).unwrap();
    Artifact::from_slice(Path::new("model.json"), &bytes).expect("loads")
}

#[test]
fn format_one_artifacts_without_lineage_still_load() {
    assert_eq!((OLDEST_FORMAT_VERSION, FORMAT_VERSION), (1, 2));
    let mut old = linear();
    old.format_version = 1;
    let old = old.seal().unwrap();
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("mlflow").is_none(), "format 1 has no mlflow field");
    let loaded = reload(&old);
    assert_eq!(loaded.format_version, 1);
    assert_eq!(loaded.mlflow, None);
    assert_eq!(loaded.model_version, old.model_version);
}

#[test]
fn lineage_round_trips_and_leaves_the_model_version_alone() {
    let plain = linear();
    assert_eq!(plain.format_version, FORMAT_VERSION);
    let mut tracked = plain.clone();
    tracked.mlflow = Some(run());
    let loaded = reload(&tracked);
    assert_eq!(loaded.mlflow, Some(run()));
    assert_eq!(
        loaded.model_version, plain.model_version,
        "same seed and data, same version, with or without MLflow"
    );
    assert_eq!(
        run().run_url(),
        "http://127.0.0.1:5000/#/experiments/1/runs/0749e3c017874d86a28c50e8dd3796f6"
    );
}

#[test]
fn an_artifact_without_mlflow_has_no_mlflow_field() {
    let json = serde_json::to_value(linear()).unwrap();
    assert!(json.get("mlflow").is_none());
}

#[test]
fn the_next_format_is_refused_by_number() {
    let mut value = serde_json::to_value(linear()).unwrap();
    value["format_version"] = (FORMAT_VERSION + 1).into();
    let error = Artifact::from_slice(Path::new("m.json"), &serde_json::to_vec(&value).unwrap())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("this build reads versions 1 to 2"),
        "{error}"
    );
}
