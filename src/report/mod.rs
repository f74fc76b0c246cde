//! The offline report (being written).

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Prometheus base URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub prometheus: String,
}

pub async fn run(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("report is not implemented yet")
}
