//! A state directory that a command may clear: `mlwatch demo` starts from
//! nothing (no old model, no old time series), but must never delete what
//! it did not create. A directory becomes the demo's when the demo creates
//! it or finds it empty, and is then marked with [`MARKER`]; clearing it
//! later removes only the entries the stack writes, and only in a marked
//! directory. Anything else is refused with a message naming the marker.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The file that says "mlwatch created this directory".
const MARKER: &str = ".mlwatch-state";

/// What the launcher and the demo write into a state directory; the only
/// names a clear removes.
const ENTRIES: [&str; 9] = [
    "config",
    "ha",
    "logs",
    "prometheus",
    "alertmanager",
    "grafana",
    "model.json",
    "report.html",
    "report-svg",
];

/// Makes `dir` an empty state directory of ours: creates and marks it when
/// it is new or empty, clears the known entries when it carries the marker,
/// and refuses anything else.
pub fn prepare_fresh(dir: &Path) -> anyhow::Result<PathBuf> {
    let marker = dir.join(MARKER);
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
        Ok(meta) if !meta.is_dir() => bail!(
            "--state-dir {} exists and is not a directory; refusing to touch it",
            dir.display()
        ),
        Ok(_) if marker.is_file() => clear(dir)?,
        Ok(_) => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "--state-dir {} is not empty and was not created by mlwatch (no {MARKER} in it); \
                     refusing to clear it: pass a new or empty directory",
                    dir.display()
                );
            }
        }
    }
    std::fs::write(
        &marker,
        "Created by mlwatch demo; `mlwatch demo` may clear the entries it writes here.\n",
    )
    .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(dir.to_owned())
}

/// Removes the known entries (and interrupted artifact writes) of a marked
/// directory; symlinks are removed, never followed.
fn clear(dir: &Path) -> anyhow::Result<()> {
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = ENTRIES.contains(&name.as_ref()) || name.starts_with(".model.json.tmp-");
        if !ours {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot clear {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_empty_directory_is_created_and_marked() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/b");
        prepare_fresh(&fresh).unwrap();
        assert!(fresh.join(MARKER).is_file());
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare_fresh(&empty).unwrap();
        assert!(empty.join(MARKER).is_file());
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_alone() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("thesis.tex"), "years of work").unwrap();
        std::fs::create_dir(root.path().join("logs")).unwrap();
        let error = prepare_fresh(root.path()).unwrap_err().to_string();
        assert!(
            error.contains("not created by mlwatch") && error.contains(MARKER),
            "{error}"
        );
        assert!(root.path().join("thesis.tex").is_file());
        assert!(root.path().join("logs").is_dir(), "even known names stay");
        assert!(!root.path().join(MARKER).exists());
    }

    #[test]
    fn a_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(prepare_fresh(&file).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    }

    #[test]
    fn a_marked_directory_loses_only_what_the_stack_writes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        prepare_fresh(dir).unwrap();
        for name in ["logs", "prometheus", "report-svg"] {
            std::fs::create_dir_all(dir.join(name).join("inner")).unwrap();
        }
        std::fs::write(dir.join("model.json"), "{}").unwrap();
        std::fs::write(dir.join(".model.json.tmp-42"), "{").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        // A symlinked entry is removed as a link; its target survives.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "k").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("grafana")).unwrap();
        prepare_fresh(dir).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [MARKER, "notes.txt"]);
        assert!(outside.path().join("keep").is_file());
    }
}
