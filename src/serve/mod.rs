//! The prediction service (being written).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MLWATCH_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,
    /// Model artifact written by `mlwatch train`.
    #[arg(long, env = "MLWATCH_MODEL_PATH", default_value = "model.json")]
    pub model_path: PathBuf,
    /// Bearer token for POST /admin/reload (prefer --admin-token-file).
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the bearer token for POST /admin/reload.
    #[arg(long, env = "MLWATCH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted batch in {"instances": [...]}.
    #[arg(long, env = "MLWATCH_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Largest accepted request body in bytes.
    #[arg(long, env = "MLWATCH_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Recent inputs kept for drift (PSI) computation.
    #[arg(long, env = "MLWATCH_DRIFT_WINDOW", default_value_t = 1000)]
    pub drift_window: usize,
    /// Interval of the CPU/memory/GPU sampler.
    #[arg(long, env = "MLWATCH_SAMPLE_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// Disable prediction metrics and drift tracking (benchmark baseline).
    #[arg(long)]
    pub no_instrumentation: bool,
}

pub async fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not implemented yet")
}
