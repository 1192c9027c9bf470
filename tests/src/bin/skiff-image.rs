//! Drives the image commands until the `skiff` CLI wires them in:
//! `cargo run -p skiff-tests --bin skiff-image -- pull busybox`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "skiff-image")]
struct Cli {
    #[command(subcommand)]
    command: skiff_runtime::cli::image::Command,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match skiff_runtime::cli::image::run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::exit(1);
        }
    }
}
