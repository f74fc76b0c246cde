//! Highly available alerting with real binaries: two Prometheus servers
//! with the repository's rules and distinct `replica` external labels, two
//! Alertmanagers in one gossip cluster on loopback, both Prometheus sending
//! to both Alertmanagers, one webhook. Alerts come from real outages: an
//! `mlwatch serve` replica is killed (MlApiDown fires) and restarted (it
//! resolves).
//!
//! "Exactly once" means: for each transition of the alert group
//! {alertname="MlApiDown", job="ml-api"} (the route's group_by), one alert
//! instance firing or resolved, the webhook receives exactly one
//! notification carrying it, counted after a quiet period longer than the
//! cluster's peer timeout times its size plus the group interval (so a
//! duplicate from the second Alertmanager, or from the second Prometheus'
//! copy of the alert, would have arrived) and far shorter than the
//! critical route's repeat_interval (1h, so no legitimate reminder is due).
//!
//! The cluster deduplicates through its gossiped notification log, which
//! has one known race: a member whose flush began before a resolution
//! reached it, and whose peer wait then ends after the other member sent
//! that resolution, sends the stale "firing" again (then "resolved"). Its
//! chance per resolution is about (peer_timeout / group_interval)^2 / 2,
//! so the test runs a group_interval of 6s against a peer timeout of
//! 500ms (0.35 %); the repository's critical route, 1m against
//! Alertmanager's default 15s, gives about 3 % (docs/fleet.md).
//!
//! Phases: both pairs up; one Alertmanager killed; then one Prometheus
//! killed, while alerts still fire and resolve. Run with Prometheus 3 by
//! putting its directory first on PATH (see docs/fleet.md).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::stack::{eventually, prometheus_query, require_binary, spawn, Webhook};
use common::{free_port, wait_for_status, Process};
use mlwatch::stack::config::{self, Assets, Timing};
use mlwatch::stack::endpoints::Endpoints;
use mlwatch::stack::plan;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const PEER_TIMEOUT: Duration = Duration::from_millis(500);
const GROUP_INTERVAL: &str = "6s";
/// Longer than group_interval + PEER_TIMEOUT × 2 members + an evaluation
/// and a scrape of slack.
const QUIET: Duration = Duration::from_secs(9);

/// The derived alertmanager.yml with every route's group_interval set to
/// GROUP_INTERVAL (group_wait stays at the quick 1s).
fn widen_group_interval(path: &Path) {
    fn set(route: &mut serde_yaml::Value) {
        if let Some(map) = route.as_mapping_mut() {
            map.insert("group_interval".into(), GROUP_INTERVAL.into());
        }
        if let Some(children) = route.get_mut("routes").and_then(|r| r.as_sequence_mut()) {
            children.iter_mut().for_each(set);
        }
    }
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    set(doc.get_mut("route").expect("a route"));
    std::fs::write(path, serde_yaml::to_string(&doc).unwrap()).unwrap();
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Notifications for the MlApiDown group carrying `instance` in `status`.
fn count(webhook: &Webhook, instance: &SocketAddr, status: &str) -> usize {
    webhook
        .notifications()
        .iter()
        .filter(|n| n["groupLabels"]["alertname"] == "MlApiDown")
        .filter(|n| {
            n["alerts"].as_array().into_iter().flatten().any(|a| {
                a["labels"]["instance"] == instance.to_string().as_str() && a["status"] == status
            })
        })
        .count()
}

/// Waits for the first such notification, then for QUIET, and asserts
/// that exactly `expected` (the total so far) arrived.
fn delivered(webhook: &Webhook, instance: &SocketAddr, status: &str, expected: usize, what: &str) {
    eventually(what, WAIT, || {
        (count(webhook, instance, status) >= expected).then_some(())
    });
    std::thread::sleep(QUIET);
    let got = count(webhook, instance, status);
    assert_eq!(
        got,
        expected,
        "{what}: {got} notifications with {instance} {status}, expected {expected}: {:#?}",
        webhook.notifications()
    );
}

/// The launcher's service child (with `mlwatch serve`'s own default
/// drift window), once ready.
fn serve(name: &str, address: &SocketAddr, model: &Path, dir: &Path) -> Process {
    let child = plan::service(
        name,
        Path::new(env!("CARGO_BIN_EXE_mlwatch")),
        *address,
        model,
        1000,
    );
    let mut process = spawn(&child, dir);
    wait_for_status(&child.ready_url(), 200, WAIT, &mut process);
    process
}

#[test]
fn a_pair_of_each_delivers_every_alert_exactly_once_and_survives_losing_one() {
    let prometheus_bin = require_binary(&["prometheus"], "prometheus");
    let alertmanager_bin = require_binary(
        &["alertmanager", "prometheus-alertmanager"],
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let apps = [loopback(), loopback()];
    let proms = [loopback(), loopback()];
    let am_web = [loopback(), loopback()];
    let am_gossip = [loopback(), loopback()];
    let webhook = Webhook::start();
    let assets = Assets::new(env!("CARGO_MANIFEST_DIR")).unwrap();
    let written = config::write(
        &assets,
        &root.join("config"),
        &Endpoints {
            apps: apps.to_vec(),
            trainers: vec![],
            prometheus: proms[0],
            alertmanager: am_web[0],
            mlflow: None,
            runbooks: "http://runbooks.invalid/runbooks".into(),
            mlflow_url: "http://mlflow.invalid".into(),
        },
        &webhook.url,
        &Timing::quick(),
    )
    .expect("derive configs");
    let derived = std::fs::read_to_string(&written.prometheus_yml).unwrap();
    widen_group_interval(&written.alertmanager_yml);

    let mut alertmanagers: Vec<Option<Process>> = Vec::new();
    let mut ready = Vec::new();
    for i in 0..2 {
        let child = plan::clustered_alertmanager(
            &format!("alertmanager-{i}"),
            &alertmanager_bin,
            &written.alertmanager_yml,
            &root.join(format!("am-{i}")),
            plan::Member {
                web: am_web[i],
                gossip: am_gossip[i],
                peers: &[am_gossip[1 - i]],
                peer_timeout: Some(PEER_TIMEOUT),
            },
        );
        ready.push(child.ready_url());
        alertmanagers.push(Some(spawn(&child, root)));
    }
    let mut prometheus: Vec<Option<Process>> = Vec::new();
    for (i, replica) in ["a", "b"].iter().enumerate() {
        let file = root.join(format!("config/prometheus/prometheus-{replica}.yml"));
        std::fs::write(
            &file,
            config::ha_member(&derived, replica, &am_web).unwrap(),
        )
        .unwrap();
        let child = plan::prometheus(
            &format!("prometheus-{replica}"),
            &prometheus_bin,
            &file,
            &root.join(format!("prom-{replica}")),
            proms[i],
        );
        ready.push(child.ready_url());
        prometheus.push(Some(spawn(&child, root)));
    }
    for (am, url) in alertmanagers.iter_mut().zip(&ready[..2]) {
        wait_for_status(url, 200, WAIT, am.as_mut().unwrap());
    }
    // One cluster: each Alertmanager sees both members.
    eventually("the Alertmanagers form one cluster", WAIT, || {
        am_web
            .iter()
            .all(|web| {
                common::get(&format!("http://{web}/api/v2/status"))
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|s| s["cluster"]["peers"].as_array().map(Vec::len))
                    == Some(2)
            })
            .then_some(())
    });
    for (p, url) in prometheus.iter_mut().zip(&ready[2..]) {
        wait_for_status(url, 200, WAIT, p.as_mut().unwrap());
    }
    // The pair really differs by its external label.
    for (url, replica) in proms.iter().zip(["a", "b"]) {
        let (_, body) = common::get(&format!("http://{url}/api/v1/status/config")).unwrap();
        assert!(body.contains(&format!("replica: {replica}")), "{body}");
    }

    let mut fit = mlwatch::train::FitOptions::new(mlwatch::train::Algorithm::Linear);
    fit.iterations = Some(5);
    let model = root.join("model.json");
    mlwatch::train::train_quietly(&fit)
        .unwrap()
        .save(&model)
        .unwrap();
    let mut services: Vec<Process> = apps
        .iter()
        .enumerate()
        .map(|(i, a)| serve(&format!("service-{i}"), a, &model, root))
        .collect();
    for url in &proms {
        eventually("both Prometheus scrape both services", WAIT, || {
            let up = prometheus_query(&format!("http://{url}"), "up{job=\"ml-api\"} == 1", None);
            (up.len() == 2).then_some(())
        });
    }

    // Phase 1, everything up: service 0 goes down and comes back.
    services[0].kill();
    delivered(&webhook, &apps[0], "firing", 1, "phase 1: MlApiDown firing");
    services[0] = serve("service-0-again", &apps[0], &model, root);
    delivered(
        &webhook,
        &apps[0],
        "resolved",
        1,
        "phase 1: MlApiDown resolved",
    );

    // Phase 2, one Alertmanager gone: the next alert still arrives once.
    if let Some(mut am) = alertmanagers[0].take() {
        am.kill();
    }
    services[1].kill();
    delivered(
        &webhook,
        &apps[1],
        "firing",
        1,
        "phase 2: firing via the surviving Alertmanager",
    );

    // Phase 3, one Prometheus gone too: alerts still resolve and fire.
    if let Some(mut p) = prometheus[0].take() {
        p.kill();
    }
    services[1] = serve("service-1-again", &apps[1], &model, root);
    delivered(
        &webhook,
        &apps[1],
        "resolved",
        1,
        "phase 3: resolved via the surviving Prometheus",
    );
    services[0].kill();
    delivered(
        &webhook,
        &apps[0],
        "firing",
        2,
        "phase 3: a new alert fires via the survivors",
    );
    services[0] = serve("service-0-third", &apps[0], &model, root);
    delivered(&webhook, &apps[0], "resolved", 2, "phase 3: and resolves");

    // Every notification came through the webhook config of the repo's
    // alertmanager.yml, grouped as its route says.
    for n in webhook.notifications() {
        if n["groupLabels"]["alertname"] == "MlApiDown" {
            assert_eq!(n["groupLabels"]["job"], "ml-api", "{n}");
            for alert in n["alerts"].as_array().unwrap() {
                assert!(
                    alert["labels"].get("replica").is_none(),
                    "replica is dropped: {alert}"
                );
            }
        }
    }
}

/// `mlwatch up --ha`: the launcher starts the same pairs (replica labels a
/// and b, both Prometheus alerting both Alertmanagers, one gossip cluster)
/// and stops all of them on Ctrl-C.
#[test]
fn up_ha_starts_both_pairs_survives_losing_one_of_each_and_stops_them() {
    require_binary(&["prometheus"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let prometheus = common::free_ports_in_a_row(2);
    let alertmanager = common::free_ports_in_a_row(4);
    let mut args: Vec<String> = [
        "up",
        "--ha",
        "--test-timing",
        "--no-grafana",
        // Not about MLflow: its Python server would take a core for a
        // minute on a busy machine, and the trainer waits for it.
        "--no-mlflow",
        "--pace",
        "50ms",
    ]
    .map(String::from)
    .to_vec();
    for (flag, port) in [
        ("--app-port", free_port()),
        ("--trainer-port", free_port()),
        ("--prometheus-port", prometheus),
        ("--alertmanager-port", alertmanager),
        ("--grafana-port", free_port()),
        ("--webhook-port", free_port()),
        // (MLflow is off: --no-mlflow below. The flag still keeps it off
        // the default 5000 should that change.)
        ("--mlflow-port", free_port()),
    ] {
        args.extend([flag.to_owned(), port.to_string()]);
    }
    args.extend(["--state-dir".to_owned(), state.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut up = Process::mlwatch("up", &args, dir.path());
    for (port, replica) in [(prometheus, "a"), (prometheus + 1, "b")] {
        let url = format!("http://127.0.0.1:{port}");
        wait_for_status(&format!("{url}/-/ready"), 200, WAIT, &mut up);
        let (_, body) = common::get(&format!("{url}/api/v1/status/config")).unwrap();
        assert!(body.contains(&format!("replica: {replica}")), "{body}");
        eventually(
            "Prometheus {replica} knows both Alertmanagers",
            WAIT,
            || {
                let (_, body) = common::get(&format!("{url}/api/v1/alertmanagers"))?;
                let json: Value = serde_json::from_str(&body).ok()?;
                (json["data"]["activeAlertmanagers"].as_array()?.len() == 2).then_some(())
            },
        );
    }
    for port in [alertmanager, alertmanager + 2] {
        eventually("one two-member Alertmanager cluster", WAIT, || {
            let (_, body) = common::get(&format!("http://127.0.0.1:{port}/api/v2/status"))?;
            let json: Value = serde_json::from_str(&body).ok()?;
            (json["cluster"]["peers"].as_array()?.len() == 2).then_some(())
        });
    }
    assert!(
        up.log_text().contains("Prometheus (replica b)"),
        "{}",
        up.log_text()
    );

    // Losing one member of each pair is what the pairs are for: the
    // launcher warns and goes on; the surviving members still answer.
    for member in ["ha/prometheus-b", "ha/alertmanager-b"] {
        let needle = state.join(member).display().to_string();
        let pids: Vec<String> = common::processes_mentioning(&needle)
            .iter()
            .filter_map(|p| p.split(':').next().map(str::to_owned))
            .collect();
        assert_eq!(pids.len(), 1, "one process for {member}: {pids:?}");
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pids[0]])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    eventually("the launcher reports both losses", WAIT, || {
        let log = up.log_text();
        (log.contains("prometheus-b exited") && log.contains("alertmanager-b exited")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        up.try_exit().is_none(),
        "the stack stopped after losing one member of each pair:\n{}",
        up.log_text()
    );
    assert_eq!(
        common::get(&format!("http://127.0.0.1:{prometheus}/-/ready")).map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        common::get(&format!("http://127.0.0.1:{alertmanager}/-/ready")).map(|r| r.0),
        Some(200)
    );

    up.signal("INT");
    let status = up.wait_exit(WAIT).expect("Ctrl-C stops the launcher");
    assert!(status.success(), "{}", up.log_text());
    let left = common::processes_mentioning(&state.display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}
