//! `skiff run`: runc's `run` over a bundle, or, with `--image`, over an image pulled on demand.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::image::{PullArgs, SizeLimits, StoreArgs};
use super::lifecycle::BundleRun;
use super::LaunchArgs;
use crate::container::Runtime;
use crate::image::bundle::{self, Overrides};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The bundle directory, holding config.json (not with --image).
    #[arg(short, long)]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub launch: LaunchArgs,
    /// Return once the container runs.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container after it exits (the default for --image runs without --rm).
    #[arg(long)]
    pub keep: bool,
    /// Run this image (pulled if missing) instead of a bundle.
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// With --image: delete the container and its files when it exits.
    #[arg(long)]
    pub rm: bool,
    /// With --image: set an environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// With --image: replace the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// With --image: run as USER[:GROUP] (names from the image, or numbers).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// With --image: allocate a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// With --image: size limits of a pull.
    #[command(flatten)]
    pub limits: SizeLimits,
    /// Container id (generated when omitted with --image).
    pub id: Option<String>,
    /// With --image: the command and arguments, replacing the image's Cmd.
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(rt: &Runtime, a: RunArgs) -> Result<i32> {
    let Some(reference) = a.image.clone() else {
        return run_image_less(rt, a);
    };
    if a.bundle.is_some() {
        bail!("--bundle and --image exclude each other");
    }
    let id = a.id.clone().unwrap_or_else(new_id);
    crate::state::validate_id(&id)?;
    let store = a.store.open()?;
    let record = match store.inspect(&reference) {
        Ok(r) => r,
        Err(_) => PullArgs {
            reference: reference.clone(),
            quiet: true,
            platform: None,
            creds: None,
            authfile: None,
            parallel: 3,
            limits: a.limits.clone(),
            store: a.store.clone(),
        }
        .pull(&store)
        .with_context(|| format!("pulling {reference}"))?,
    };
    let dir = bundle::bundles_root(&a.store.image_root).join(&id);
    if dir.exists() {
        bail!(
            "container {id:?} already exists (bundle {} is present)",
            dir.display()
        );
    }
    let overrides = Overrides {
        entrypoint: a.entrypoint.clone(),
        args: a.args.clone(),
        env: a.env.clone(),
        user: a.user.clone(),
        tty: a.tty,
        hostname: id.chars().take(63).collect(),
    };
    bundle::make_bundle(&store, &record, &dir, &overrides)?;
    let opts = a.launch.options(id.clone(), dir.clone(), true);
    if a.detach {
        println!("{id}");
    }
    match rt.run(&opts, a.detach, !a.rm) {
        Ok(code) => Ok(code),
        Err(e) => {
            // Nothing took ownership of the bundle if the container never came to be.
            if rt.state(&id).is_err() {
                bundle::remove_bundle(&dir);
            }
            Err(e.into())
        }
    }
}

fn run_image_less(rt: &Runtime, a: RunArgs) -> Result<i32> {
    let with_image_only = a.rm
        || !a.env.is_empty()
        || a.entrypoint.is_some()
        || a.user.is_some()
        || a.tty
        || !a.args.is_empty();
    if with_image_only {
        bail!("--rm, --env, --entrypoint, --user, --tty and trailing arguments go with --image");
    }
    let Some(id) = a.id else {
        bail!("a container id is required");
    };
    run_bundle(
        rt,
        BundleRun {
            bundle: a.bundle,
            launch: a.launch,
            detach: a.detach,
            keep: a.keep,
            id,
        },
    )
}

/// `run` of a bundle directory (`.` when none is named).
pub(super) fn run_bundle(rt: &Runtime, r: BundleRun) -> Result<i32> {
    let bundle = r.bundle.unwrap_or_else(|| PathBuf::from("."));
    let opts = r.launch.options(r.id, bundle, false);
    Ok(rt.run(&opts, r.detach, r.keep)?)
}

/// 12 hex digits from the kernel's random pool, like the short ids users know from other tools.
fn new_id() -> String {
    // getrandom fails only before the pool is seeded or under seccomp; zeros were the answer then.
    skiff_sys::id::random_hex(6).unwrap_or_else(|_| "0".repeat(12))
}
