//! Where prometheus/, grafana/ and docs/ are: an `--assets` directory, the
//! repository, or an installed share/mlwatch. Part of the service build
//! (`mlwatch runbooks` finds docs/runbooks.md through it); what the
//! launcher derives from these files is [`super::config`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The repository's (or an installed share/mlwatch's) config files: the one
/// answer to "where are prometheus/ and grafana/" for `up`, `demo`,
/// `report`, `runbooks` and the tests.
#[derive(Debug, Clone)]
pub struct Assets {
    pub root: PathBuf,
}

/// What a directory must hold to be an assets directory.
const ASSET_PROBES: [&str; 2] = [
    "prometheus/prometheus.yml",
    "grafana/provisioning/dashboards",
];

fn holds_assets(dir: &Path) -> bool {
    ASSET_PROBES.iter().all(|probe| dir.join(probe).exists())
}

impl Assets {
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let root = root.into();
        // Absolute, because Grafana and Prometheus resolve relative paths
        // against their own working or config directories.
        let root = std::path::absolute(&root)
            .with_context(|| format!("cannot resolve {}", root.display()))?;
        let missing: Vec<&str> = ASSET_PROBES
            .into_iter()
            .filter(|p| !root.join(p).exists())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} has no {}; pass the repository (or share/mlwatch) directory",
                root.display(),
                missing.join(" and no ")
            );
        }
        Ok(Self { root })
    }

    /// `explicit` (`--assets`), else the repository around the current
    /// directory, else the installed `<exe>/../share/mlwatch`, else the
    /// checkout the binary was built from (`cargo run`, `cargo install
    /// --path`).
    pub fn discover(explicit: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = explicit {
            return Self::new(dir);
        }
        let mut candidates: Vec<PathBuf> = std::env::current_dir()
            .map(|cwd| cwd.ancestors().map(Path::to_path_buf).collect())
            .unwrap_or_default();
        if let Some(share) = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("share/mlwatch")))
        {
            candidates.push(share);
        }
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        match candidates.into_iter().find(|d| holds_assets(d)) {
            Some(dir) => Self::new(dir),
            None => bail!(
                "cannot find prometheus/ and grafana/: run inside the mlwatch repository, \
                 or pass --assets DIR"
            ),
        }
    }
}
