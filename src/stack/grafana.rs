//! Running a Grafana server from PATH for the local stack: its ini file, its
//! home path, and its two secrets (the admin password and the secret key):
//! generated once from the OS's RNG, kept in files of mode 0600 in a 0700
//! directory, and only named in grafana.ini, never copied into it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Grafana's server binary and how to call it: `grafana server` (10+) or
/// the older `grafana-server`.
pub struct GrafanaBinary {
    pub program: PathBuf,
    pub subcommand: Option<&'static str>,
    pub home: PathBuf,
}

pub fn locate() -> Option<GrafanaBinary> {
    let (program, subcommand) = match super::children::find_binary(&["grafana"]) {
        Some(p) => (p, Some("server")),
        None => (super::children::find_binary(&["grafana-server"])?, None),
    };
    let home = home_path(&program)?;
    Some(GrafanaBinary {
        program,
        subcommand,
        home,
    })
}

/// `<prefix>/share/grafana` next to the real binary (nixpkgs), or the
/// Debian/RPM location.
fn home_path(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).ok()?;
    let prefix = real.parent()?.parent()?;
    [
        prefix.join("share/grafana"),
        PathBuf::from("/usr/share/grafana"),
    ]
    .into_iter()
    .find(|p| p.join("conf/defaults.ini").is_file())
}

/// A random hex secret (128 bits) from the operating system's RNG.
fn secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut bytes)
        .context("the operating system's random number generator failed")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Only the owner may read or write a secret, or list its directory.
const SECRET_MODE: u32 = 0o600;
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Reads `path`, or creates it with a fresh secret readable only by us.
///
/// The file is born 0600 (the mode is given to open(2), so it is never
/// readable by others, not even between a write and a chmod) under a
/// temporary name, filled, synced, and only then linked into place: a
/// reader sees either no secret or the whole of it. A secret left with
/// looser permissions by an older mlwatch is tightened.
pub(crate) fn persistent_secret(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::read_to_string(path) {
        Ok(existing) => {
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} was readable by others (mode {:o}); restricting it to its owner",
                    path.display(),
                    mode & 0o777
                );
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(SECRET_MODE))
                    .with_context(|| format!("cannot restrict {}", path.display()))?;
            }
            let value = existing.trim().to_owned();
            if value.is_empty() {
                bail!(
                    "{} is empty; delete it to generate a new secret",
                    path.display()
                );
            }
            return Ok(value);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let value = secret()?;
    let file_name = path
        .file_name()
        .context("a secret path needs a file name")?
        .to_string_lossy();
    let temporary = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_MODE)
            .open(&temporary)?;
        file.write_all(value.as_bytes())?;
        file.sync_all()?;
        // A link, unlike a rename, fails when another start won the race.
        std::fs::hard_link(&temporary, path)
    })();
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => Ok(value),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => persistent_secret(path),
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
}

/// Creates `dir` (and parents) with only the owner allowed in, and
/// restricts it if it exists.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
        .with_context(|| format!("cannot restrict {}", dir.display()))
}

/// grafana.ini for a server on `port` with its provisioning from
/// `provisioning` (written by [`super::config::derive`]): its path under
/// `state/grafana` and its text. The ini names the secret files (Grafana
/// expands `$__file{path}`, see [`prepare`]) instead of holding the
/// secrets, so the ini itself is not sensitive.
pub fn ini(state: &Path, provisioning: &Path, port: u16) -> anyhow::Result<(PathBuf, String)> {
    let dir = state.join("grafana");
    // Grafana's expander reads `$__file{PATH}` up to the first `}`.
    if dir.display().to_string().contains(['{', '}']) {
        bail!(
            "the state directory {} contains a brace, which grafana.ini's $__file{{…}} cannot name; choose another --state-dir",
            state.display()
        );
    }
    let text = format!(
        "[paths]\ndata = {data}\nlogs = {data}/log\nplugins = {data}/plugins\nprovisioning = {provisioning}\n\n\
         [server]\nhttp_addr = 127.0.0.1\nhttp_port = {port}\n\n\
         [security]\nadmin_user = admin\nadmin_password = $__file{{{password}}}\nsecret_key = $__file{{{key}}}\n\n\
         [analytics]\nreporting_enabled = false\ncheck_for_updates = false\n",
        data = dir.join("data").display(),
        provisioning = provisioning.display(),
        password = dir.join(PASSWORD_FILE).display(),
        key = dir.join(KEY_FILE).display(),
    );
    Ok((dir.join("grafana.ini"), text))
}

const PASSWORD_FILE: &str = "admin-password";
const KEY_FILE: &str = "secret-key";

/// Makes Grafana's directory `dir` (`state/grafana`) private, creates its
/// data directory, and the two secrets that [`ini`] names when they do not
/// exist yet; returns the admin password.
pub fn prepare(dir: &Path) -> anyhow::Result<String> {
    private_dir(dir)?;
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("cannot create {}", dir.join("data").display()))?;
    let admin_password = persistent_secret(&dir.join(PASSWORD_FILE))?;
    persistent_secret(&dir.join(KEY_FILE))?;
    Ok(admin_password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    struct Written {
        ini: PathBuf,
        admin_password: String,
    }

    /// What the launcher does: the planned ini written, the secrets prepared.
    fn write_config(state: &Path, provisioning: &Path, port: u16) -> anyhow::Result<Written> {
        let (path, text) = ini(state, provisioning, port)?;
        let admin_password = prepare(&state.join("grafana"))?;
        std::fs::write(&path, text)?;
        Ok(Written {
            ini: path,
            admin_password,
        })
    }

    #[test]
    fn secrets_live_in_private_files_that_the_ini_only_names() {
        let state = tempfile::tempdir().unwrap();
        let first = write_config(state.path(), Path::new("/p/provisioning"), 3123).unwrap();
        let dir = state.path().join("grafana");
        let ini = std::fs::read_to_string(&first.ini).unwrap();
        assert!(
            ini.contains("http_addr = 127.0.0.1") && ini.contains("http_port = 3123"),
            "{ini}"
        );
        assert!(ini.contains("provisioning = /p/provisioning"), "{ini}");
        assert_eq!(first.admin_password.len(), 32);
        let key = std::fs::read_to_string(dir.join("secret-key")).unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(key, first.admin_password, "two independent secrets");
        assert!(
            !ini.contains(&first.admin_password) && !ini.contains(&key),
            "no secret in the ini:\n{ini}"
        );
        assert!(
            ini.contains(&format!(
                "admin_password = $__file{{{}}}",
                dir.join("admin-password").display()
            )),
            "{ini}"
        );
        assert!(ini.contains(&format!(
            "secret_key = $__file{{{}}}",
            dir.join("secret-key").display()
        )));
        assert_eq!(mode(&dir.join("admin-password")), 0o600);
        assert_eq!(mode(&dir.join("secret-key")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(stray.is_empty(), "temporary files left: {stray:?}");

        let second = write_config(state.path(), Path::new("/p/provisioning"), 3123).unwrap();
        assert_eq!(
            second.admin_password, first.admin_password,
            "password survives restarts"
        );
    }

    #[test]
    fn a_path_grafana_cannot_expand_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("odd}dir");
        let error = write_config(&state, Path::new("/p"), 3000)
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("brace"), "{error}");
        assert!(!state.exists(), "nothing written before refusing");
    }

    #[test]
    fn a_secret_left_readable_by_others_is_restricted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        std::fs::write(&path, "old-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(persistent_secret(&path).unwrap(), "old-secret");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn an_empty_secret_file_is_an_error_not_an_empty_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin-password");
        std::fs::write(&path, "").unwrap();
        let error = persistent_secret(&path).unwrap_err().to_string();
        assert!(error.contains("is empty"), "{error}");
    }
}
