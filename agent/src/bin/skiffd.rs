//! skiffd: the CRI server of a skiff node, and its kubelet when started as one (see
//! `skiff_agent::node`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use skiff_agent::config::{self, Config};
use skiff_agent::node;

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
    let argv: Vec<String> = std::env::args().collect();
    let argv0 = argv.first().map(String::as_str).unwrap_or_default();
    if node::cli::is_node_mode(argv0, &argv[1..]) {
        return node_main(&argv[1..]);
    }
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

/// skiffd as the kubelet: kubelet's command line, the CRI server and the node agent together.
fn node_main(args: &[String]) -> Result<()> {
    let flags = node::cli::Flags::parse(args.iter().cloned())?;
    if flags.version {
        println!("{}", node::version_line());
        return Ok(());
    }
    if flags.help {
        println!("{NODE_USAGE}");
        return Ok(());
    }
    let kubelet_config = match &flags.config {
        Some(path) => node::config::KubeletConfiguration::load(path)?,
        None => node::config::KubeletConfiguration::default(),
    };
    let mut cfg = match &flags.skiffd_config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(Path::new(config::DEFAULT_PATH), false)?,
    };
    let endpoint = flags
        .container_runtime_endpoint
        .clone()
        .or_else(|| kubelet_config.container_runtime_endpoint.clone())
        .filter(|e| !e.is_empty());
    if let Some(e) = endpoint {
        cfg.socket = config::strip_unix(Path::new(&e));
    }
    if let Some(image) = &flags.pod_infra_container_image {
        cfg.pause_image = Some(image.clone());
    }
    if flags.verbosity >= 4 {
        cfg.log_level = "debug".into();
    }
    init_logging(&cfg.log_level)?;
    for u in &flags.unknown {
        tracing::warn!(flag = %u, "unknown kubelet flag: ignored");
    }
    let driver = flags
        .cgroup_driver
        .clone()
        .or(kubelet_config.cgroup_driver.clone());
    if let Some(d) = driver.filter(|d| d.as_str() != cfg.cgroup_driver.as_str()) {
        tracing::warn!(kubelet = %d, skiffd = %cfg.cgroup_driver.as_str(), "cgroup driver differs from skiffd.toml's: skiffd's applies");
    }
    let settings = node::Settings::new(&flags, &kubelet_config).map_err(anyhow::Error::msg)?;
    node::check_swap(&settings).map_err(anyhow::Error::msg)?;
    let daemon = skiff_agent::cri::Daemon::open(cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let paths = node::bootstrap::Paths {
            kubeconfig: settings.kubeconfig.clone(),
            bootstrap_kubeconfig: settings.bootstrap_kubeconfig.clone(),
            cert_dir: settings.cert_dir.clone(),
        };
        let start = node::bootstrap::prepare(&paths).await?;
        node::healthz::start(settings.healthz).await?;
        skiff_agent::cri::recover(&daemon).await;
        let ctx = Arc::new(node::NodeContext {
            settings,
            machine: node::machine::Machine::read(),
            daemon: daemon.clone(),
            network: Default::default(),
        });
        tokio::select! {
            r = skiff_agent::server::serve(daemon) => r,
            r = node::run(ctx, start) => r,
        }
    })
}

const NODE_USAGE: &str = "Usage: kubelet [flags]  (skiffd in node mode)

Takes kubelet's command line as kubeadm writes it: --bootstrap-kubeconfig, --kubeconfig,
--config (a KubeletConfiguration), --container-runtime-endpoint (where skiffd serves the CRI),
--node-ip, --hostname-override, --node-labels, --register-with-taints, --cert-dir, --root-dir,
--healthz-port, --max-pods, --v. Unknown kubelet flags are warned about and ignored.
--skiffd-config names skiffd's own configuration (default /etc/skiff/skiffd.toml).";

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("log level {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
