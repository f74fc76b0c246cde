//! The local stack: configs for Prometheus, Alertmanager and Grafana derived
//! from the repository's own files, and (in later modules) the launcher that
//! runs everything on 127.0.0.1. Tests use the same derivation, so there is
//! never a second hand-written copy of a config.

pub mod config;
