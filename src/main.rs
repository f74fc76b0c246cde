//! The `mlwatch` command line: one binary, one subcommand per role. The
//! tools (`load`, `demo`, `up`, `report`) are subcommands only with the
//! `tools` feature; the service build has `train`, `serve` and `runbooks`.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mlwatch",
    version,
    about = "Observability for ML training and serving"
)]
#[cfg_attr(
    not(feature = "tools"),
    command(
        after_help = "This is the service build: train, serve and runbooks only. `demo`, `up`, `load` and `report` are in the full build (cargo's default `tools` feature)."
    )
)]
struct Cli {
    /// Log format on stderr: human-readable text, or one JSON object per line
    /// for log collectors.
    #[arg(
        long,
        global = true,
        env = "MLWATCH_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on an embedded data set while serving live metrics.
    Train(mlwatch::train::TrainArgs),
    /// Serve predictions from a trained artifact, with metrics and drift.
    Serve(mlwatch::serve::ServeArgs),
    /// Send prediction traffic (valid, invalid, drifted, batch) and reconcile counts.
    #[cfg(feature = "tools")]
    Load(mlwatch::load::LoadArgs),
    /// Train, serve, load, provoke alerts and write the report: the whole story.
    #[cfg(feature = "tools")]
    Demo(mlwatch::demo::DemoArgs),
    /// Start the whole stack on 127.0.0.1 until Ctrl-C.
    #[cfg(feature = "tools")]
    Up(mlwatch::stack::up::UpArgs),
    /// Render the dashboards and fired alerts into a static HTML report.
    #[cfg(feature = "tools")]
    Report(mlwatch::report::ReportArgs),
    /// Print docs/runbooks.md as HTML, or serve it at /runbooks (--listen).
    Runbooks(mlwatch::stack::runbooks::RunbooksArgs),
}

/// With the `mimalloc` feature, mimalloc instead of the system allocator
/// (docs/benchmarks.md: what each allocator costs per request and holds
/// under load).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = parse();
    let log_format = cli.log_format;
    init_logging(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Listening starts before any work, and lasts until the process
        // ends: a signal at any moment reaches whatever waits next.
        let shutdown = mlwatch::shutdown::Shutdown::listen()?;
        match cli.command {
            Command::Train(args) => mlwatch::train::run(args, shutdown).await,
            Command::Serve(args) => mlwatch::serve::run(args, shutdown).await,
            #[cfg(feature = "tools")]
            Command::Demo(args) => mlwatch::demo::run(args, shutdown).await,
            #[cfg(feature = "tools")]
            Command::Up(args) => mlwatch::stack::up::run(args, shutdown).await,
            Command::Runbooks(args) => mlwatch::stack::runbooks::run(args, shutdown).await,
            #[cfg(feature = "tools")]
            Command::Load(args) => mlwatch::load::run(args, &shutdown).await,
            #[cfg(feature = "tools")]
            Command::Report(args) => {
                shutdown
                    .guard("the report", mlwatch::report::run(args))
                    .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line either way: plain for people, JSON for collectors.
            match log_format {
                LogFormat::Text => eprintln!("error: {e:#}"),
                LogFormat::Json => tracing::error!("{e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// The command line, and for `serve` whether `--model-path` was given on
/// it: the image sets MLWATCH_MODEL_PATH, which `--model-uri` overrides,
/// while the flag itself conflicts with `--model-uri`.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let (Command::Serve(args), Some(("serve", serve))) = (&mut cli.command, matches.subcommand())
    {
        args.model_path_on_command_line =
            serve.value_source("model_path") == Some(clap::parser::ValueSource::CommandLine);
    }
    cli
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,opentelemetry_sdk=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The SDK logs every failed periodic export as an error, every interval
    // for as long as a receiver is away; mlwatch logs the episode once with
    // its cause and counts every failure (telemetry/otlp_exporter.rs).
    let once_per_episode = tracing_subscriber::filter::filter_fn(|metadata| {
        !(metadata.target() == "opentelemetry_sdk"
            && metadata.name() == "PeriodicReader.ExportError")
    });
    match format {
        LogFormat::Json => builder.json().finish().with(once_per_episode).init(),
        LogFormat::Text => builder
            .with_ansi(
                std::env::var_os("NO_COLOR").is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .finish()
            .with(once_per_episode)
            .init(),
    }
}
