//! mlwatch: a trainer and a prediction service for linfa models, both
//! instrumented for Prometheus through the OpenTelemetry SDK.
//!
//! Layout: [`telemetry`] owns the metrics pipeline and exposition,
//! [`resources`] the CPU/memory/GPU sampler, [`model`] the artifact and the
//! predictor, [`train`] the training loop and its metrics, [`serve`] the
//! prediction API, [`shutdown`] the stop signal.

pub mod demo;
pub mod listen;
pub mod load;
pub mod mlflow;
pub mod model;
pub mod report;
pub mod resources;
pub mod serve;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
pub mod train;
