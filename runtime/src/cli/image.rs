//! `skiff pull | images | rmi | image inspect | prune`: image commands over `skiff_runtime::image`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::image::{
    self, hosts, limits, rootfs, store, Credentials, Platform, Progress, PullOptions, Reference,
    Store,
};

/// Where images live and how registries are reached.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Root of the image store.
    #[arg(long, env = "SKIFF_IMAGE_ROOT", default_value = store::DEFAULT_ROOT)]
    pub image_root: PathBuf,
    /// Registry mirrors, insecure registries and CA files (TOML).
    #[arg(long, env = "SKIFF_REGISTRIES", default_value = hosts::DEFAULT_PATH)]
    pub registries_config: PathBuf,
}

impl StoreArgs {
    pub fn open(&self) -> Result<Store> {
        Store::open(&self.image_root)
            .with_context(|| format!("opening image store {}", self.image_root.display()))
    }
}

/// The image commands, for flattening into the top-level command enum.
#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// List pulled images.
    Images(ImagesArgs),
    /// Remove an image and the data no other image uses.
    Rmi(RmiArgs),
    /// Image subcommands.
    Image(ImageArgs),
    /// Delete store data no image refers to.
    Prune(PruneArgs),
}

pub fn run(cmd: Command) -> Result<i32> {
    match cmd {
        Command::Pull(a) => a.run(),
        Command::Images(a) => a.run(),
        Command::Rmi(a) => a.run(),
        Command::Image(a) => a.run(),
        Command::Prune(a) => a.run(),
    }
}

#[derive(Args, Debug, Clone)]
pub struct PullArgs {
    /// Image reference, e.g. `busybox` or `registry.k8s.io/pause:3.10`.
    pub reference: String,
    /// Print only the image name when done.
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to pick from a multi-platform image (`os/arch[/variant]`); the host's by default.
    #[arg(long)]
    pub platform: Option<String>,
    /// Registry credentials as `USER:PASSWORD`.
    #[arg(long)]
    pub creds: Option<String>,
    /// Docker-style credentials file (default: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    #[arg(long)]
    pub authfile: Option<PathBuf>,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    pub parallel: usize,
    #[command(flatten)]
    pub limits: SizeLimits,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// How large an image may unpack to; sizes as `8GiB`, `512M` or bytes.
#[derive(Args, Debug, Clone)]
pub struct SizeLimits {
    /// Largest layer, uncompressed.
    #[arg(long, env = "SKIFF_MAX_LAYER_SIZE", default_value = "8GiB", value_parser = limits::parse_size)]
    pub max_layer_size: u64,
    /// Largest image, uncompressed (all its layers).
    #[arg(long, env = "SKIFF_MAX_IMAGE_SIZE", default_value = "16GiB", value_parser = limits::parse_size)]
    pub max_image_size: u64,
}

impl Default for SizeLimits {
    fn default() -> Self {
        Self {
            max_layer_size: limits::DEFAULT_MAX_LAYER_BYTES,
            max_image_size: limits::DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

impl PullArgs {
    /// Pulls with these settings, printing progress unless quiet; the store is opened by the caller.
    pub fn pull(&self, store: &Store) -> Result<image::store::ImageRecord> {
        let reference = Reference::parse(&self.reference)?;
        let mut opts = PullOptions {
            hosts: image::HostsConfig::load(&self.store.registries_config)?,
            credentials_file: self.authfile.clone(),
            max_parallel: self.parallel,
            max_layer_bytes: self.limits.max_layer_size,
            max_image_bytes: self.limits.max_image_size,
            ..PullOptions::default()
        };
        if let Some(p) = &self.platform {
            opts.platform = Some(Platform::parse(p)?);
        }
        if let Some(c) = &self.creds {
            let (username, password) =
                c.split_once(':').context("--creds must be USER:PASSWORD")?;
            opts.credentials = Some(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            });
        }
        if !self.quiet {
            opts.progress = Some(progress_printer(std::io::stderr().is_terminal()));
        }
        Ok(image::pull(store, &reference, &opts)?)
    }

    pub fn run(self) -> Result<i32> {
        let store = self.store.open()?;
        let rec = self.pull(&store)?;
        if self.quiet {
            println!("{}", rec.name);
        } else {
            println!("Pulled {} ({})", rec.name, rec.manifest_digest);
        }
        Ok(0)
    }
}

fn short(d: &image::Digest) -> &str {
    &d.hex()[..12]
}

/// On a terminal, one line per layer redrawn in place; otherwise a plain line per finished layer.
fn progress_printer(tty: bool) -> image::pull::ProgressFn {
    if !tty {
        return Arc::new(|p: &Progress| match p {
            Progress::Exists { digest, .. } => eprintln!("{}: already present", short(digest)),
            Progress::Done { digest, size } => {
                eprintln!("{}: pulled {}", short(digest), human(*size))
            }
            Progress::Downloading { .. } => {}
        });
    }
    let state: Mutex<(Vec<String>, HashMap<String, String>)> = Mutex::default();
    Arc::new(move |p: &Progress| {
        let (digest, line) = match p {
            Progress::Exists { digest, .. } => (digest, "already present".to_string()),
            Progress::Done { digest, size } => (digest, format!("pulled {}", human(*size))),
            Progress::Downloading {
                digest,
                done,
                total,
            } => (
                digest,
                format!("downloading {} / {}", human(*done), human(*total)),
            ),
        };
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let (order, lines) = &mut *st;
        let key = short(digest).to_string();
        let drawn = order.len();
        if !lines.contains_key(&key) {
            order.push(key.clone());
        }
        lines.insert(key, line);
        let mut err = std::io::stderr().lock();
        if drawn > 0 {
            let _ = write!(err, "\x1b[{drawn}F");
        }
        for k in order.iter() {
            let _ = writeln!(
                err,
                "\x1b[2K{k}: {}",
                lines.get(k).map_or("", |s| s.as_str())
            );
        }
    })
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ImagesArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl ImagesArgs {
    pub fn run(self) -> Result<i32> {
        let images = self.store.open()?.list()?;
        if self.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&images)?);
            return Ok(0);
        }
        println!("{:<60} {:<14} {:>10}", "NAME", "MANIFEST", "SIZE");
        for i in images {
            println!(
                "{:<60} {:<14} {:>10}",
                i.name,
                short(&i.manifest_digest),
                human(i.size)
            );
        }
        Ok(0)
    }
}

#[derive(Args, Debug, Clone)]
pub struct RmiArgs {
    /// Image reference.
    pub reference: String,
    /// Remove the name even while containers use the image (its layers stay until they
    /// are deleted).
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl RmiArgs {
    pub fn run(self) -> Result<i32> {
        let rec = self
            .store
            .open()?
            .remove_image(&self.reference, self.force)?;
        println!("Removed {}", rec.name);
        Ok(0)
    }
}

#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ImageCommand {
    /// Show an image's record, config and layer directories as JSON.
    Inspect(InspectArgs),
    /// Same as `skiff pull`.
    Pull(PullArgs),
    /// Same as `skiff images`.
    Ls(ImagesArgs),
    /// Same as `skiff rmi`.
    Rm(RmiArgs),
    /// Same as `skiff prune`.
    Prune(PruneArgs),
}

impl ImageArgs {
    pub fn run(self) -> Result<i32> {
        match self.command {
            ImageCommand::Inspect(a) => a.run(),
            ImageCommand::Pull(a) => a.run(),
            ImageCommand::Ls(a) => a.run(),
            ImageCommand::Rm(a) => a.run(),
            ImageCommand::Prune(a) => a.run(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct InspectArgs {
    /// Image reference.
    pub reference: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

impl InspectArgs {
    pub fn run(self) -> Result<i32> {
        let store = self.store.open()?;
        let rec = store.inspect(&self.reference)?;
        let config = rootfs::image_config_file(&store, &rec)?;
        let dirs = rootfs::layer_dirs(&store, &rec)?;
        let out = serde_json::json!({
            "image": rec,
            "config": config,
            "layerDirs": dirs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(0)
    }
}

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    #[command(flatten)]
    pub store: StoreArgs,
}

impl PruneArgs {
    pub fn run(self) -> Result<i32> {
        let r = self.store.open()?.prune()?;
        println!(
            "Removed {} blobs, {} layers, {} partial downloads",
            r.blobs_removed, r.layers_removed, r.partials_removed
        );
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Limits {
        #[command(flatten)]
        limits: SizeLimits,
    }

    #[test]
    fn size_limit_flags_default_to_the_library_defaults() {
        let l = Limits::try_parse_from(["t"]).unwrap().limits;
        let d = SizeLimits::default();
        assert_eq!(
            (l.max_layer_size, l.max_image_size),
            (d.max_layer_size, d.max_image_size)
        );
        let l = Limits::try_parse_from(["t", "--max-layer-size", "1M"]).unwrap();
        assert_eq!(l.limits.max_layer_size, 1 << 20);
        assert!(Limits::try_parse_from(["t", "--max-image-size", "lots"]).is_err());
    }
}
