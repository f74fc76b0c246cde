//! The local stack: configs for Prometheus, Alertmanager and Grafana derived
//! from the repository's own files ([`config`]) with the dashboards'
//! provisioned constants ([`dashboard_constants`]), the ports and their
//! one conflict check ([`ports`]), the children's command lines
//! ([`commands`]), the stack planned as data ([`plan`]), supervised child
//! processes ([`children`]), the launcher that writes the plan's files and
//! runs its children on 127.0.0.1 ([`launcher`]), its HTTP
//! server for Alertmanager's notifications and the rendered runbooks
//! ([`webhook`], [`runbooks`]), the optional MLflow server
//! ([`mlflow`]), the state directory a demo may clear ([`state`]) and
//! `mlwatch up` on top of it ([`up`]). Tests, `mlwatch demo` and `nix run`
//! use the same code, so there is never a second hand-written copy of a
//! config or a second way to start the stack.

pub(crate) mod children;
pub mod commands;
pub mod config;
pub mod dashboard_constants;
pub(crate) mod grafana;
pub mod launcher;
pub mod mlflow;
pub mod plan;
pub mod ports;
pub mod runbooks;
pub(crate) mod state;
pub mod up;
pub mod webhook;
