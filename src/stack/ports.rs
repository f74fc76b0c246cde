//! The stack's ports: one table (the `ports!` invocation below) of every component with
//! its `mlwatch up` flag, its default, and how many consecutive ports it
//! takes. The [`Ports`] struct, its defaults, its flags and the one
//! conflict check ([`check`]) all come from that table, so a component
//! added there is a flag, a default and a checked port at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};

/// The most replicas `mlwatch up` starts: a laptop's worth, and a bound on
/// the `instance` label's cardinality.
const MAX_REPLICAS: usize = 32;

/// How many consecutive ports from its flag's a component takes.
#[derive(Debug, Clone, Copy)]
pub enum Span {
    One,
    /// One per prediction API replica (`--replicas`).
    Replicas,
    /// With `--ha`, one per listed role (the first is the flag's port
    /// itself); without, only the first.
    Ha(&'static [&'static str]),
}

/// One row of the table, for one set of flags.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// The flag, `--app-port`.
    pub flag: &'static str,
    /// What a person calls it in an error message.
    pub name: &'static str,
    pub port: u16,
    pub span: Span,
}

macro_rules! ports {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident, $flag:literal, $default:literal, $name:literal, $span:expr;
    )*) => {
        /// Every component's (first) port, as given by its flag.
        #[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
        pub struct Ports {
            $(
                $(#[doc = $doc])*
                #[arg(long = $flag, value_name = "PORT", default_value_t = $default)]
                pub $field: u16,
            )*
        }

        impl Default for Ports {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl Ports {
            /// The table's rows with these ports, in its order.
            pub fn components(&self) -> Vec<Component> {
                vec![$(Component {
                    flag: concat!("--", $flag),
                    name: $name,
                    port: self.$field,
                    span: $span,
                },)*]
            }

            /// Distinct ports that are free right now, one per component
            /// ([`crate::free_ports`]: drawn below the ephemeral range, so
            /// no outgoing connection can take one before the child binds
            /// it). One port each: for `--replicas 1` without `--ha`.
            pub fn free() -> anyhow::Result<Self> {
                let mut ports = crate::free_ports::distinct(Self::default().components().len())
                    .context("cannot find free ports on 127.0.0.1")?
                    .into_iter();
                Ok(Self {
                    $($field: ports.next().context("too few free ports")?,)*
                })
            }
        }
    };
}

ports! {
    /// Port of the prediction API; replicas take the ports after it.
    app, "app-port", 9000, "the prediction API", Span::Replicas;
    /// Port of the trainer's /metrics.
    trainer, "trainer-port", 8002, "the trainer", Span::One;
    /// Port of Prometheus; with --ha the second one takes the port after it.
    prometheus, "prometheus-port", 9090, "Prometheus", Span::Ha(&["", "b"]);
    /// Port of Alertmanager; with --ha the three ports after it are its
    /// gossip port and the second Alertmanager's web and gossip ports.
    alertmanager, "alertmanager-port", 9093, "Alertmanager", Span::Ha(&["", "gossip", "b", "b gossip"]);
    /// Port of Grafana (when it is installed).
    grafana, "grafana-port", 3000, "Grafana", Span::One;
    /// Port of the built-in webhook that prints alerts (and serves the runbooks).
    webhook, "webhook-port", 5001, "the webhook", Span::One;
    /// Port of the MLflow tracking server (when `mlflow` is on PATH).
    mlflow, "mlflow-port", 5000, "MLflow", Span::One;
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// One port that a component takes, named for an error message.
struct Claim {
    port: u16,
    owner: String,
}

/// Every port the stack takes with `replicas` API replicas and (with `ha`)
/// the pairs' extra ports, each named by its component and flag.
fn claims(ports: &Ports, replicas: usize, ha: bool) -> anyhow::Result<Vec<Claim>> {
    if replicas == 0 || replicas > MAX_REPLICAS {
        bail!("--replicas must be between 1 and {MAX_REPLICAS}, got {replicas}");
    }
    let mut claims = Vec::new();
    for c in ports.components() {
        let roles: Vec<String> = match c.span {
            Span::One => vec![String::new()],
            Span::Replicas if replicas == 1 => vec![String::new()],
            Span::Replicas => (0..replicas).map(|i| format!(" replica {i}")).collect(),
            Span::Ha(roles) if ha => roles
                .iter()
                .map(|r| {
                    if r.is_empty() {
                        String::new()
                    } else {
                        format!(" {r}")
                    }
                })
                .collect(),
            Span::Ha(_) => vec![String::new()],
        };
        for (offset, role) in roles.iter().enumerate() {
            let why = match c.span {
                Span::Replicas => format!("--replicas {replicas}"),
                _ => "--ha".to_owned(),
            };
            let Some(port) = u16::try_from(offset)
                .ok()
                .and_then(|o| c.port.checked_add(o))
            else {
                bail!(
                    "{why} puts {}{role} on {} {} + {offset}, past port 65535",
                    c.name,
                    c.flag,
                    c.port
                );
            };
            let owner = if offset == 0 {
                format!("{}{role} ({} {})", c.name, c.flag, c.port)
            } else {
                format!("{}{role} ({} {} + {offset}, {why})", c.name, c.flag, c.port)
            };
            claims.push(Claim { port, owner });
        }
    }
    Ok(claims)
}

/// Refuses flags that give one port to two components: every component's
/// port, every replica's, the pairs' extra ports and MLflow's, whether or
/// not the component turns out to be installed (the flags are checked up
/// front, before anything starts). The error names both and the port.
pub fn check(ports: &Ports, replicas: usize, ha: bool) -> anyhow::Result<()> {
    let claims = claims(ports, replicas, ha)?;
    for (i, claim) in claims.iter().enumerate() {
        if let Some(other) = claims[..i].iter().find(|c| c.port == claim.port) {
            bail!(
                "port {} would be taken twice, by {} and by {}; move one of them",
                claim.port,
                other.owner,
                claim.owner
            );
        }
    }
    Ok(())
}

/// The replicas' addresses: `count` consecutive ports from `ports.app`
/// (after [`check`]).
pub fn replica_addresses(ports: &Ports, count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    check(ports, count, false)?;
    Ok((0..count).map(|i| loopback(ports.app + i as u16)).collect())
}

/// The second members of an HA pair and the Alertmanagers' gossip ports.
#[derive(Debug, Clone, Copy)]
pub struct HaPorts {
    pub prometheus_b: SocketAddr,
    pub alertmanager_b: SocketAddr,
    pub gossip_a: SocketAddr,
    pub gossip_b: SocketAddr,
}

/// The HA pair's extra ports next to `ports` (after [`check`] with `ha`).
pub fn ha_ports(ports: &Ports, replicas: usize) -> anyhow::Result<HaPorts> {
    check(ports, replicas, true)?;
    Ok(HaPorts {
        prometheus_b: loopback(ports.prometheus + 1),
        gossip_a: loopback(ports.alertmanager + 1),
        alertmanager_b: loopback(ports.alertmanager + 2),
        gossip_b: loopback(ports.alertmanager + 3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ports: Ports,
    }

    fn parse(args: &[&str]) -> Ports {
        Cli::try_parse_from(std::iter::once("up").chain(args.iter().copied()))
            .unwrap()
            .ports
    }

    fn refusal(ports: &Ports, replicas: usize, ha: bool) -> String {
        check(ports, replicas, ha)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{ports:?} with {replicas} replicas, ha {ha} was accepted"))
    }

    #[test]
    fn the_flags_and_the_defaults_come_from_one_table() {
        assert_eq!(parse(&[]), Ports::default());
        let p = Ports::default();
        assert_eq!(
            (p.app, p.trainer, p.prometheus, p.alertmanager),
            (9000, 8002, 9090, 9093)
        );
        assert_eq!((p.grafana, p.webhook, p.mlflow), (3000, 5001, 5000));
        let flags: Vec<&str> = p.components().iter().map(|c| c.flag).collect();
        let mut args = Vec::new();
        for (i, flag) in flags.iter().enumerate() {
            args.extend([flag.to_string(), (20_000 + i).to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let parsed = parse(&args);
        let ports: Vec<u16> = parsed.components().iter().map(|c| c.port).collect();
        assert_eq!(ports, (20_000..20_007).collect::<Vec<u16>>());
        check(&Ports::default(), 1, false).unwrap();
        check(&Ports::default(), MAX_REPLICAS, true).unwrap();
        let free = Ports::free().unwrap();
        check(&free, 1, false).unwrap();
    }

    /// The case: a replica and MLflow both on 5000.
    #[test]
    fn a_replica_on_mlflows_port_is_refused_naming_both() {
        let ports = parse(&["--app-port", "4999"]);
        check(&ports, 1, false).unwrap();
        let error = refusal(&ports, 2, false);
        assert_eq!(
            error,
            "port 5000 would be taken twice, by the prediction API replica 1 \
             (--app-port 4999 + 1, --replicas 2) and by MLflow (--mlflow-port 5000); \
             move one of them"
        );
    }

    #[test]
    fn every_pair_of_components_is_checked() {
        let defaults = Ports::default();
        let n = defaults.components().len();
        let set = |ports: &mut Ports, i: usize, port: u16| match i {
            0 => ports.app = port,
            1 => ports.trainer = port,
            2 => ports.prometheus = port,
            3 => ports.alertmanager = port,
            4 => ports.grafana = port,
            5 => ports.webhook = port,
            _ => ports.mlflow = port,
        };
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let mut ports = Ports::default();
                set(&mut ports, i, 12_345);
                set(&mut ports, j, 12_345);
                let error = refusal(&ports, 1, false);
                let components = ports.components();
                assert!(error.contains("port 12345"), "{error}");
                for c in [components[i], components[j]] {
                    assert!(
                        error.contains(&format!("{} ({} 12345)", c.name, c.flag)),
                        "{error}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_ha_extras_and_the_replicas_are_checked_against_everything() {
        // Prometheus b on the webhook's port.
        let ports = parse(&["--prometheus-port", "5000", "--mlflow-port", "6000"]);
        check(&ports, 1, false).unwrap();
        let error = refusal(&ports, 1, true);
        assert!(
            error.contains("port 5001")
                && error.contains("Prometheus b (--prometheus-port 5000 + 1, --ha)")
                && error.contains("the webhook (--webhook-port 5001)"),
            "{error}"
        );
        // Alertmanager b's gossip port on a replica.
        let ports = parse(&["--alertmanager-port", "9093", "--app-port", "9094"]);
        let error = refusal(&ports, 1, true);
        assert!(
            error.contains("port 9094")
                && error.contains("Alertmanager gossip (--alertmanager-port 9093 + 1, --ha)"),
            "{error}"
        );
        let ports = parse(&["--app-port", "2998"]);
        let error = refusal(&ports, 3, false);
        assert!(
            error.contains("port 3000")
                && error.contains("replica 2 (--app-port 2998 + 2, --replicas 3)")
                && error.contains("Grafana (--grafana-port 3000)"),
            "{error}"
        );
    }

    #[test]
    fn ports_past_65535_and_replica_counts_out_of_bounds_are_refused() {
        let error = refusal(&parse(&["--app-port", "65535"]), 2, false);
        assert!(error.contains("past port 65535"), "{error}");
        let error = refusal(&parse(&["--alertmanager-port", "65533"]), 1, true);
        assert!(error.contains("--ha") && error.contains("65535"), "{error}");
        check(&parse(&["--alertmanager-port", "65533"]), 1, false).unwrap();
        assert!(refusal(&Ports::default(), 0, false).contains("between 1 and 32"));
        assert!(refusal(&Ports::default(), 33, false).contains("between 1 and 32"));
    }

    #[test]
    fn addresses_follow_the_table() {
        let ports = Ports::default();
        let apps = replica_addresses(&ports, 3).unwrap();
        assert_eq!(apps, [9000, 9001, 9002].map(loopback));
        let ha = ha_ports(&ports, 1).unwrap();
        assert_eq!(ha.prometheus_b, loopback(9091));
        assert_eq!(
            [ha.gossip_a, ha.alertmanager_b, ha.gossip_b],
            [9094, 9095, 9096].map(loopback)
        );
        assert!(replica_addresses(&parse(&["--app-port", "4999"]), 2).is_err());
    }
}
