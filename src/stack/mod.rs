//! The local stack: configs for Prometheus, Alertmanager and Grafana derived
//! from the repository's own files ([`assets`], [`config`], for the
//! [`endpoints`] the parts listen on) with the
//! dashboards' provisioned constants ([`dashboard_constants`]), the ports
//! and their one conflict check ([`ports`]), the children's command lines
//! ([`commands`]), what a stack is made of ([`spec`]: the user's choices and
//! the binaries found), the stack planned as data ([`plan`]), supervised child
//! processes ([`children`]), the launcher that writes the plan's files and
//! runs its children on 127.0.0.1 ([`launcher`]), its HTTP
//! server for Alertmanager's notifications and the rendered runbooks
//! ([`webhook`], [`runbooks`]), the optional MLflow server
//! ([`mlflow`]), whether a Prometheus can receive OTLP pushes ([`receiver`]), the state directory a demo may clear ([`state`]) and
//! `mlwatch up` on top of it ([`up`]). Tests, `mlwatch demo` and `nix run`
//! use the same code, so there is never a second hand-written copy of a
//! config or a second way to start the stack.
//!
//! Only [`assets`] and [`runbooks`] belong to the service build (the NixOS module's and
//! compose's runbooks page); the rest is the launcher, built with the
//! `tools` feature.

pub mod assets;
#[cfg(feature = "tools")]
pub(crate) mod children;
#[cfg(feature = "tools")]
pub mod commands;
#[cfg(feature = "tools")]
pub mod config;
#[cfg(feature = "tools")]
pub mod dashboard_constants;
#[cfg(feature = "tools")]
pub mod endpoints;
#[cfg(feature = "tools")]
pub(crate) mod grafana;
#[cfg(feature = "tools")]
pub mod launcher;
#[cfg(feature = "tools")]
pub mod mlflow;
#[cfg(feature = "tools")]
pub mod plan;
#[cfg(feature = "tools")]
pub mod ports;
#[cfg(feature = "tools")]
pub mod receiver;
pub mod runbooks;
#[cfg(feature = "tools")]
pub mod spec;
#[cfg(feature = "tools")]
pub(crate) mod state;
#[cfg(feature = "tools")]
pub mod up;
#[cfg(feature = "tools")]
pub mod webhook;
