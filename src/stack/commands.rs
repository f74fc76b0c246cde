//! How each child of the stack is started: the one place for the flags of
//! Alertmanager, Prometheus, `mlwatch serve` and `mlwatch train`. The
//! launcher supervises what these build, and the integration tests' live
//! stack spawns the same command lines, so a flag changed here changes
//! both.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Alertmanager on `listen`, alone (no gossip), with its data in `storage`.
pub fn alertmanager(config: &Path, storage: &Path, listen: SocketAddr) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", storage.display()),
        format!("--web.listen-address={listen}"),
        // An empty address turns the cluster listener off: a local stack
        // has no peers, and the default port may be taken.
        "--cluster.listen-address=".into(),
    ]
}

/// Alertmanager on `listen` as one member of a gossip cluster: gossip on
/// `gossip`, the other members' gossip addresses in `peers`. The members
/// share silences and the notification log, so a group's notification goes
/// out once however many members received its alerts. `peer_timeout` is
/// how long a member waits, per position in the cluster, for an earlier
/// member to notify (None: Alertmanager's 15s).
pub fn clustered_alertmanager(
    config: &Path,
    storage: &Path,
    listen: SocketAddr,
    gossip: SocketAddr,
    peers: &[SocketAddr],
    peer_timeout: Option<Duration>,
) -> Vec<String> {
    let mut args = alertmanager(config, storage, listen);
    args.retain(|a| !a.starts_with("--cluster."));
    args.extend([
        format!("--cluster.listen-address={gossip}"),
        // Loopback is not a "private" address: say which one to announce.
        format!("--cluster.advertise-address={gossip}"),
    ]);
    args.extend(peers.iter().map(|p| format!("--cluster.peer={p}")));
    if let Some(timeout) = peer_timeout {
        // Go durations: milliseconds always parse.
        args.push(format!("--cluster.peer-timeout={}ms", timeout.as_millis()));
    }
    args
}

/// Prometheus on `listen` with its TSDB in `storage`.
pub fn prometheus(config: &Path, storage: &Path, listen: SocketAddr) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", storage.display()),
        format!("--web.listen-address={listen}"),
    ]
}

/// `mlwatch serve` arguments for a service on `listen` serving `model`.
pub fn service(listen: SocketAddr, model: &Path, drift_window: usize) -> Vec<String> {
    vec![
        "serve".into(),
        "--listen".into(),
        listen.to_string(),
        "--model-path".into(),
        model.display().to_string(),
        "--drift-window".into(),
        drift_window.to_string(),
    ]
}

/// `mlwatch train` arguments for a trainer on `listen` writing `output`.
pub fn trainer(listen: SocketAddr, output: &Path) -> Vec<String> {
    vec![
        "train".into(),
        "--listen".into(),
        listen.to_string(),
        "--output".into(),
        output.display().to_string(),
    ]
}

/// The flags that make `mlwatch serve` or `mlwatch train` push to every
/// Prometheus in `receivers` (both of an HA pair) every `interval`,
/// without a /metrics exposition (docs/otlp.md): a binary both scraped and
/// pushed would be counted twice.
pub fn otlp_push(receivers: &[SocketAddr], interval: Duration) -> Vec<String> {
    let mut args = Vec::new();
    for address in receivers {
        args.extend([
            "--otlp-endpoint".to_owned(),
            format!("http://{address}{}", super::receiver::OTLP_PATH),
        ]);
    }
    args.extend([
        "--otlp-export-interval".to_owned(),
        humantime::format_duration(interval).to_string(),
        "--no-scrape".to_owned(),
    ]);
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mlwatch_command_lines_parse_as_the_cli_does() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: crate::serve::ServeArgs,
        }
        #[derive(clap::Parser)]
        struct Train {
            #[command(flatten)]
            args: crate::train::TrainArgs,
        }
        let listen: SocketAddr = "127.0.0.1:1234".parse().unwrap();
        let serve = service(listen, Path::new("/m.json"), 77);
        let parsed = <Serve as clap::Parser>::try_parse_from(&serve).unwrap();
        assert_eq!(parsed.args.listen, listen);
        assert_eq!(parsed.args.drift_window, 77);
        let clustered = clustered_alertmanager(
            Path::new("/a.yml"),
            Path::new("/d"),
            listen,
            "127.0.0.1:9094".parse().unwrap(),
            &["127.0.0.1:9096".parse().unwrap()],
            Some(Duration::from_millis(500)),
        );
        assert!(clustered.contains(&"--cluster.listen-address=127.0.0.1:9094".to_owned()));
        assert!(clustered.contains(&"--cluster.peer=127.0.0.1:9096".to_owned()));
        assert!(clustered.contains(&"--cluster.peer-timeout=500ms".to_owned()));
        assert!(!clustered.contains(&"--cluster.listen-address=".to_owned()));
        let train = trainer(listen, Path::new("/t.json"));
        let parsed = <Train as clap::Parser>::try_parse_from(&train).unwrap();
        assert_eq!(parsed.args.output, Path::new("/t.json"));

        // The push flags `up --otlp` adds, on both binaries, for an HA pair.
        let receivers: [SocketAddr; 2] = [
            "127.0.0.1:9090".parse().unwrap(),
            "127.0.0.1:9091".parse().unwrap(),
        ];
        let push = otlp_push(&receivers, Duration::from_secs(5));
        let serve_push: Vec<String> = serve.iter().cloned().chain(push.clone()).collect();
        let parsed = <Serve as clap::Parser>::try_parse_from(&serve_push).unwrap();
        let exporters = parsed
            .args
            .export
            .exporters("ml-api", "h:1".into())
            .unwrap();
        assert!(!exporters.scrape);
        let targets = exporters.push.expect("push targets");
        assert_eq!(
            targets.endpoints,
            [
                "http://127.0.0.1:9090/api/v1/otlp/v1/metrics",
                "http://127.0.0.1:9091/api/v1/otlp/v1/metrics"
            ]
        );
        assert_eq!(targets.interval, Duration::from_secs(5));
        let train_push: Vec<String> = train.into_iter().chain(push).collect();
        let parsed = <Train as clap::Parser>::try_parse_from(&train_push).unwrap();
        assert!(parsed.args.export.no_scrape);
        assert_eq!(parsed.args.export.otlp_endpoints.len(), 2);
    }
}
