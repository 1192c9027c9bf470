//! skiffd: the CRI server of a skiff node.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use skiff_agent::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "skiffd",
    version,
    about = "skiff's CRI server: what crictl and kubelet talk to"
)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Overrides the socket of the configuration file.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Overrides the log filter of the configuration file.
    #[arg(long)]
    log_level: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let required = args.config.as_os_str() != config::DEFAULT_PATH;
    let mut cfg = Config::load(&args.config, required)?;
    if let Some(s) = args.socket {
        cfg.socket = config::strip_unix(&s);
    }
    if let Some(l) = args.log_level {
        cfg.log_level = l;
    }
    init_logging(&cfg.log_level)?;
    let daemon = skiff_agent::cri::Daemon::open(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        skiff_agent::cri::recover(&daemon).await;
        skiff_agent::server::serve(daemon).await
    })
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("log level {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
