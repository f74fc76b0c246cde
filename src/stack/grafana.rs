//! Running a Grafana server from PATH for the local stack: its ini file, its
//! home path, and the admin password (generated once, kept in the state
//! directory with mode 0600, never printed into a config in the repo).

use std::path::{Path, PathBuf};

use anyhow::Context;

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

/// A random hex secret from the OS's randomness.
fn secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Reads `path`, or creates it with a fresh secret readable only by us.
fn persistent_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.trim().to_owned());
    }
    let value = secret()?;
    std::fs::write(path, &value).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(value)
}

pub struct GrafanaConfig {
    pub ini: PathBuf,
    pub admin_password: String,
}

/// Writes grafana.ini under `state/grafana`; provisioning comes from
/// `provisioning` (written by [`super::config::write`]).
pub fn write_config(state: &Path, provisioning: &Path, port: u16) -> anyhow::Result<GrafanaConfig> {
    let dir = state.join("grafana");
    std::fs::create_dir_all(dir.join("data"))?;
    let admin_password = persistent_secret(&dir.join("admin-password"))?;
    let secret_key = persistent_secret(&dir.join("secret-key"))?;
    let ini = format!(
        "[paths]\ndata = {data}\nlogs = {data}/log\nplugins = {data}/plugins\nprovisioning = {provisioning}\n\n\
         [server]\nhttp_addr = 127.0.0.1\nhttp_port = {port}\n\n\
         [security]\nadmin_user = admin\nadmin_password = {admin_password}\nsecret_key = {secret_key}\n\n\
         [analytics]\nreporting_enabled = false\ncheck_for_updates = false\n",
        data = dir.join("data").display(),
        provisioning = provisioning.display(),
    );
    let path = dir.join("grafana.ini");
    std::fs::write(&path, ini).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(GrafanaConfig {
        ini: path,
        admin_password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_secrets_in_private_files_and_reuses_them() {
        let dir = std::env::temp_dir().join(format!("mlwatch-grafana-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = write_config(&dir, Path::new("/p/provisioning"), 3123).unwrap();
        let ini = std::fs::read_to_string(&first.ini).unwrap();
        assert!(
            ini.contains("http_addr = 127.0.0.1") && ini.contains("http_port = 3123"),
            "{ini}"
        );
        assert!(ini.contains("provisioning = /p/provisioning"), "{ini}");
        assert_eq!(first.admin_password.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("grafana/admin-password"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = write_config(&dir, Path::new("/p/provisioning"), 3123).unwrap();
        assert_eq!(
            second.admin_password, first.admin_password,
            "password survives restarts"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
