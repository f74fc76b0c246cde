//! mlwatch: a trainer and a prediction service for linfa models, both
//! instrumented for Prometheus through the OpenTelemetry SDK, and the
//! tooling that runs, drives and reports on them.
//!
//! Layout:
//! - [`telemetry`]: the metrics pipeline, its text exposition and OTLP push.
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
//!
//! The tools (`demo`, `load`, `report`, the launcher behind `up`, and the
//! Prometheus API client they share) exist only with the `tools` feature, on
//! by default. The service build (`--no-default-features`, what the images
//! and the NixOS units run) is the trainer, the service and the runbooks
//! page: a production host carries no installer, traffic generator or
//! dashboard renderer.

// The command-line help of clap's derive is the fields' doc comments, with
// placeholders such as `<panel title>` that rustdoc would read as HTML tags.
#![allow(rustdoc::invalid_html_tags)]
// The docs are the developers' (`cargo doc --document-private-items`, as
// .ci/test builds them): module docs may name the private items they explain.
#![allow(rustdoc::private_intra_doc_links)]

#[cfg(feature = "tools")]
pub mod demo;
pub mod free_ports;
pub(crate) mod listen;
#[cfg(feature = "tools")]
pub mod load;
pub mod mlflow;
pub mod model;
pub mod poll;
pub mod process_tree;
#[cfg(feature = "tools")]
pub mod prometheus_api;
#[cfg(feature = "tools")]
pub mod report;
pub(crate) mod resources;
pub mod serve;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
pub mod train;
