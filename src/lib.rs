//! mlwatch: a trainer and a prediction service for linfa models, both
//! instrumented for Prometheus through the OpenTelemetry SDK, and the
//! tooling that runs, drives and reports on them.
//!
//! Layout:
//! - [`telemetry`]: the metrics pipeline and its exposition (the only user
//!   of `opentelemetry-prometheus`).
//! - `resources`: the CPU/memory/GPU sampler (crate-internal).
//! - [`model`]: the artifact, the predictor, the drift reference.
//! - [`train`]: the training loop, its metrics, the Pushgateway push.
//! - [`serve`]: the prediction API, its middleware and drift window.
//! - [`free_ports`]: port numbers for children that take a number.
//! - `listen`: binding a listener up front (crate-internal).
//! - [`load`]: `mlwatch load`, the traffic generator and reconciliation.
//! - [`report`]: `mlwatch report`, dashboards rendered to static HTML.
//! - [`stack`]: configs, supervised children and the launcher behind
//!   `mlwatch up` and `mlwatch demo`.
//! - [`demo`]: `mlwatch demo`, the whole story in one command.
//! - [`shutdown`]: the one process-wide stop request.
//! - [`poll`]: waiting for a condition with a deadline.
//! - [`process_tree`]: stopping a child with everything it started.
//!
//! Modules are public only where the binary, the integration tests or the
//! benchmarks need them.

pub mod demo;
pub mod free_ports;
pub(crate) mod listen;
pub mod load;
pub mod mlflow;
pub mod model;
pub mod poll;
pub mod process_tree;
pub mod prometheus_api;
pub mod report;
pub(crate) mod resources;
pub mod serve;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
pub mod train;
