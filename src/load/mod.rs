//! The load generator (being written).

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Base URL of the prediction service.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub target: String,
}

pub async fn run(_args: LoadArgs) -> anyhow::Result<()> {
    anyhow::bail!("load is not implemented yet")
}
