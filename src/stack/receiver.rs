//! Whether a Prometheus binary can receive OTLP pushes, and the flags that
//! turn its receiver on (`mlwatch up --otlp`, docs/otlp.md).
//!
//! Decided from the binary itself, before anything starts: its version
//! (`prometheus --version`) and whether its flag list (`prometheus --help`)
//! has `--web.enable-otlp-receiver`. The version alone is not enough:
//! Debian's 3.5.3 is built without the receiver (the flag is unknown and
//! `/api/v1/otlp/v1/metrics` answers 404), while upstream's 3.5.3 has it.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// The flag that turns the receiver on (Prometheus 3.0 and later).
pub const RECEIVER_FLAG: &str = "--web.enable-otlp-receiver";

/// Stores OTLP exponential histograms as native histograms; needed before
/// 3.8, where native histograms became stable (later versions ingest them
/// without it, and 3.9 ignores it).
pub const NATIVE_HISTOGRAMS_FLAG: &str = "--enable-feature=native-histograms";

/// The receiver's path on Prometheus' web address.
pub const OTLP_PATH: &str = "/api/v1/otlp/v1/metrics";

/// What to install instead, named in every refusal.
pub const INSTALL_HINT: &str = "install an upstream Prometheus 3.x release \
     (https://prometheus.io/download/, or nixpkgs' `prometheus`, 3.14 in nixos-26.05) \
     and put it first on PATH; or run `mlwatch up` without --otlp (the scrape path)";

/// A Prometheus release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Version {
    /// The first line of `prometheus --version`: `prometheus, version
    /// 3.5.3+ds1 (branch: ...)`; build suffixes (`+ds1`, `-rc.0`) ignored.
    pub fn parse(output: &str) -> anyhow::Result<Self> {
        let word = output
            .lines()
            .next()
            .and_then(|line| {
                line.split_whitespace()
                    .skip_while(|w| *w != "version")
                    .nth(1)
            })
            .with_context(|| format!("no version in {:?}", output.lines().next()))?;
        let numeric: String = word
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = numeric.split('.').map(str::parse::<u32>);
        let mut next = || -> anyhow::Result<u32> {
            parts
                .next()
                .unwrap_or(Ok(0))
                .with_context(|| format!("version {word:?} is not numeric"))
        };
        Ok(Self {
            major: next()?,
            minor: next()?,
            patch: next()?,
        })
    }
}

/// A Prometheus that can receive OTLP, and how to start it so that it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub version: Version,
    /// Flags to add to its command line.
    pub flags: Vec<String>,
}

/// The receiver flags for `version` whose `--help` output is `help`, or why
/// it cannot receive OTLP (naming the version and what to install).
pub fn decide(version: Version, help: &str) -> anyhow::Result<Receiver> {
    if version.major < 3 {
        bail!(
            "Prometheus {version} has no OTLP receiver mlwatch can use (2.x had one only \
             behind an experimental feature flag, from 2.47): `mlwatch up --otlp` needs \
             Prometheus 3; {INSTALL_HINT}"
        );
    }
    if !help.contains(RECEIVER_FLAG) {
        bail!(
            "this Prometheus {version} was built without the OTLP receiver (it does not \
             know {RECEIVER_FLAG}, and {OTLP_PATH} would answer 404; Debian's package is \
             built this way): {INSTALL_HINT}"
        );
    }
    let mut flags = vec![RECEIVER_FLAG.to_owned()];
    if version
        < (Version {
            major: 3,
            minor: 8,
            patch: 0,
        })
    {
        flags.push(NATIVE_HISTOGRAMS_FLAG.to_owned());
    }
    Ok(Receiver { version, flags })
}

/// Runs `program --version` and `program --help` and [`decide`]s.
pub fn probe(program: &Path) -> anyhow::Result<Receiver> {
    let run = |flag: &str| -> anyhow::Result<String> {
        let output = Command::new(program)
            .arg(flag)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {} {flag}", program.display()))?;
        // Prometheus prints both to stderr (kingpin); either stream counts.
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    };
    let version = Version::parse(&run("--version")?)
        .with_context(|| format!("cannot tell the version of {}", program.display()))?;
    decide(version, &run("--help")?).with_context(|| format!("{}", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH: &str = "usage: prometheus [<flags>]\n      --web.enable-otlp-receiver  Enable API endpoint accepting OTLP write requests.\n";
    const WITHOUT: &str = "usage: prometheus [<flags>]\n      --web.enable-remote-write-receiver\n";

    fn v(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    #[test]
    fn versions_parse_from_the_first_line_of_prometheus_version() {
        let debian = "prometheus, version 3.5.3+ds1 (branch: debian/sid, revision: 3.5.3+ds1-6)\n  build user: x";
        assert_eq!(Version::parse(debian).unwrap(), v(3, 5, 3));
        assert_eq!(
            Version::parse("prometheus, version 2.42.0+ds (branch: debian/sid)").unwrap(),
            v(2, 42, 0)
        );
        assert_eq!(
            Version::parse("prometheus, version 3.14.0 (branch: HEAD, revision: abc)").unwrap(),
            v(3, 14, 0)
        );
        assert_eq!(
            Version::parse("prometheus, version 3.8.0-rc.1").unwrap(),
            v(3, 8, 0)
        );
        assert!(Version::parse("something else").is_err());
        assert!(Version::parse("").is_err());
    }

    #[test]
    fn native_histograms_need_the_feature_flag_before_3_8_only() {
        let flags = |version| decide(version, WITH).unwrap().flags;
        assert_eq!(
            flags(v(3, 5, 0)),
            [RECEIVER_FLAG, NATIVE_HISTOGRAMS_FLAG],
            "3.5 (compose's image)"
        );
        assert_eq!(flags(v(3, 7, 9)), [RECEIVER_FLAG, NATIVE_HISTOGRAMS_FLAG]);
        assert_eq!(flags(v(3, 8, 0)), [RECEIVER_FLAG]);
        assert_eq!(flags(v(3, 14, 0)), [RECEIVER_FLAG], "nixpkgs 26.05");
    }

    #[test]
    fn a_build_without_the_receiver_and_2x_are_refused_by_name() {
        let error = decide(v(3, 5, 3), WITHOUT).unwrap_err().to_string();
        assert!(
            error.contains("3.5.3")
                && error.contains("built without the OTLP receiver")
                && error.contains("404")
                && error.contains("upstream Prometheus 3.x"),
            "{error}"
        );
        let error = decide(v(2, 42, 0), WITH).unwrap_err().to_string();
        assert!(
            error.contains("Prometheus 2.42.0") && error.contains("needs Prometheus 3"),
            "{error}"
        );
    }
}
