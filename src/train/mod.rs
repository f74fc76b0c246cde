//! Training (being written).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::Artifact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Linear,
    Tree,
    Forest,
    Boost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    Diabetes,
    Winequality,
    Iris,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[arg(long = "model", value_enum, default_value = "linear")]
    pub algorithm: Algorithm,
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    #[arg(long, env = "MLWATCH_TRAIN_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: SocketAddr,
    #[arg(long, env = "MLWATCH_MODEL_PATH", default_value = "model.json")]
    pub output: PathBuf,
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub pace: Duration,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Options for training without the metrics endpoint.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub algorithm: Algorithm,
    pub dataset: Option<DatasetName>,
    pub seed: u64,
}

/// Trains and returns the sealed artifact, recording no metrics.
pub fn train_quietly(_options: &TrainOptions) -> anyhow::Result<Artifact> {
    anyhow::bail!("not yet")
}

pub async fn run(_args: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
