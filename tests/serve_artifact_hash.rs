//! Artifacts written before the content hash was canonicalised explicitly
//! (by `mlwatch train`, checked in under serve_support/fixtures) still load:
//! their model_version is still the hash of their content.

use std::path::Path;

use mlwatch::model::Artifact;

#[test]
fn artifacts_written_by_earlier_builds_keep_their_version() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve_support/fixtures");
    for (file, version) in [
        ("linear-7c32e6fbde8e.json", "7c32e6fbde8e"),
        ("tree-ba121ae0a0e5.json", "ba121ae0a0e5"),
    ] {
        let artifact = Artifact::load(&fixtures.join(file))
            .unwrap_or_else(|e| panic!("{file} no longer loads: {e}"));
        assert_eq!(artifact.model_version, version, "{file}");
        assert_eq!(
            artifact.clone().seal().unwrap().model_version,
            version,
            "{file}: sealing again gives the same version"
        );
    }
}
