//! skiff-bridge: a CNI plugin attaching containers to a Linux bridge.

use skiff_cni::plugin;
use skiff_cni::spec::{CniError, Command, Env, ErrorCode};
use std::io::{Read, Write};

fn main() {
    if std::env::var_os("SKIFF_CNI_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SKIFF_CNI_LOG"))
            // Span close events carry each phase's wall time (`time.busy`).
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .init();
    }
    let code = match run() {
        Ok(Some(out)) => {
            print_json(&out);
            0
        }
        Ok(None) => 0,
        Err(e) => {
            tracing::debug!(error = %e, "command failed");
            print_json(&serde_json::to_value(&e).unwrap_or_default());
            1
        }
    };
    std::process::exit(code);
}

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn run() -> Result<Option<serde_json::Value>, CniError> {
    let cmd_str = std::env::var("CNI_COMMAND").unwrap_or_default();
    let cmd = Command::parse(&cmd_str).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnv,
            format!("unknown CNI_COMMAND {cmd_str:?}"),
        )
    })?;
    let env = Env::from_lookup(cmd, |k| std::env::var(k).ok())?;
    let mut stdin = Vec::new();
    if cmd != Command::Version {
        std::io::stdin()
            .take(plugin::MAX_STDIN as u64 + 1)
            .read_to_end(&mut stdin)
            .map_err(|e| CniError::io("cannot read stdin", e))?;
    }
    plugin::run(cmd, env, stdin)
}
