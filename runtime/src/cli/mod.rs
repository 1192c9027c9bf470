//! The `skiff` command line: runc's commands, flags and exit codes over the runtime library.

mod cgroup;
mod exec;
pub mod image;
mod lifecycle;
mod log;
mod run;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
pub use clap::Parser;
use clap::{Subcommand, ValueEnum};

use crate::container::{parse_signal, CreateOptions, Runtime};

#[derive(Parser, Debug)]
#[command(
    name = "skiff",
    version,
    about = "skiff: a lightweight OCI container runtime",
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// runc's global flags, given before the command.
#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct Globals {
    /// Directory for container state.
    #[arg(long, default_value = "/run/skiff")]
    pub root: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log debug messages.
    #[arg(long)]
    pub debug: bool,
    /// Use systemd (over D-Bus) for cgroups where systemd runs.
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    pub rootless: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    pub criu: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        /// A config for running without root.
        #[arg(long)]
        rootless: bool,
    },
    /// Create a container, ready to start.
    Create(CreateArgs),
    /// Start a created container.
    Start(IdArgs),
    /// Create and start a container from a bundle or an image; in the foreground, return its exit status.
    Run(run::RunArgs),
    /// Print a container's state as JSON.
    State(IdArgs),
    /// Send a signal to a container's init (or every process with --all).
    Kill(KillArgs),
    /// Delete a container and everything it holds.
    Delete(DeleteArgs),
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a container's processes.
    Ps {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        id: String,
        /// Options passed to ps(1).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Run a new process in a container.
    Exec(exec::ExecArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Print what this runtime supports, as OCI features JSON.
    Features,
    /// Change a running container's cgroup limits.
    Update(cgroup::UpdateArgs),
    /// Print a container's resource usage and OOM events, as JSON lines.
    Events(cgroup::EventsArgs),
    #[command(flatten)]
    Image(image::Command),
}

#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct IdArgs {
    pub id: String,
}

#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct KillArgs {
    #[arg(short, long)]
    pub all: bool,
    pub id: String,
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct DeleteArgs {
    #[arg(short, long)]
    pub force: bool,
    pub id: String,
}

/// The flags `create` and `run` share with runc's.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    /// Write the container init's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Do not create a session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra descriptors, from 3 up, to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility; pivot_root is always used where it works.
    #[arg(long, hide = true)]
    pub no_pivot: bool,
}

impl LaunchArgs {
    pub(crate) fn options(&self, id: String, bundle: PathBuf, owned_bundle: bool) -> CreateOptions {
        CreateOptions {
            id,
            bundle,
            pid_file: self.pid_file.as_ref().map(absolute),
            console_socket: self.console_socket.clone(),
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            owned_bundle,
        }
    }
}

#[derive(clap::Args, Debug, PartialEq, Eq)]
pub struct CreateArgs {
    /// The bundle directory, holding config.json.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    #[command(flatten)]
    pub launch: LaunchArgs,
    pub id: String,
}

impl CreateArgs {
    fn options(&self) -> CreateOptions {
        self.launch
            .options(self.id.clone(), self.bundle.clone(), false)
    }
}

pub(crate) fn absolute(p: &PathBuf) -> PathBuf {
    if p.is_absolute() {
        p.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.clone())
    }
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    // Before parsing: the re-exec would otherwise parse every argument twice.
    if needs_protected_exe() {
        if let Err(e) = crate::exe::ensure_protected() {
            eprintln!("skiff: re-executing from a read-only view of skiff: {e}");
            return 1;
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The lifecycle commands skip clap, whose parsing costs more than the rest of their start.
    let (globals, command) = match lifecycle::parse(&args) {
        Some(inv) => (inv.globals, Parsed::Lifecycle(inv.command)),
        None => {
            let cli = Cli::parse();
            (cli.globals, Parsed::Other(Box::new(cli.command)))
        }
    };
    let _guard = log::init(globals.log.as_deref(), globals.log_format, globals.debug);
    let to_file = globals.log.is_some();
    match run(&globals, command) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            if to_file {
                tracing::error!("{msg}");
            }
            eprintln!("skiff: {msg}");
            1
        }
    }
}

enum Parsed {
    Lifecycle(lifecycle::Lifecycle),
    Other(Box<Command>),
}

/// Whether this invocation may put a process into a container. Decided from the raw arguments so
/// that it can run before anything else; it errs on the side of protecting (a container id that
/// happens to be `run` costs one needless re-exec, never a missing one).
fn needs_protected_exe() -> bool {
    std::env::args_os()
        .skip(1)
        .any(|a| a == "create" || a == "run" || a == "exec")
}

fn run(globals: &Globals, command: Parsed) -> Result<i32> {
    use lifecycle::Lifecycle;
    let rt = Runtime::new(&globals.root).with_systemd_cgroup(globals.systemd_cgroup);
    let command = match command {
        Parsed::Lifecycle(cmd) => return run_lifecycle(&rt, cmd),
        Parsed::Other(command) => command,
    };
    match *command {
        Command::Spec { bundle, rootless } => write_spec(&bundle, rootless),
        Command::Create(args) => run_lifecycle(&rt, Lifecycle::Create(args)),
        Command::Start(a) => run_lifecycle(&rt, Lifecycle::Start(a)),
        Command::Run(args) => run::run(&rt, args),
        Command::State(a) => run_lifecycle(&rt, Lifecycle::State(a)),
        Command::Kill(a) => run_lifecycle(&rt, Lifecycle::Kill(a)),
        Command::Delete(a) => run_lifecycle(&rt, Lifecycle::Delete(a)),
        Command::List { format, quiet } => list(&rt, format, quiet),
        Command::Ps {
            format,
            id,
            ps_args,
        } => ps(&rt, &id, format, &ps_args),
        Command::Exec(args) => exec::run(&rt, args),
        Command::Pause { id } => rt.pause(&id, true).map(|_| 0).map_err(Into::into),
        Command::Resume { id } => rt.pause(&id, false).map(|_| 0).map_err(Into::into),
        Command::Features => print_json(&crate::features::features()),
        Command::Update(args) => cgroup::update(&rt, args),
        Command::Events(args) => cgroup::events(&globals.root, args),
        Command::Image(cmd) => image::run(cmd),
    }
}

fn run_lifecycle(rt: &Runtime, command: lifecycle::Lifecycle) -> Result<i32> {
    use lifecycle::Lifecycle;
    match command {
        Lifecycle::Create(args) => rt.create(&args.options()).map(|_| 0).map_err(Into::into),
        Lifecycle::Start(a) => rt.start(&a.id).map(|_| 0).map_err(Into::into),
        Lifecycle::Run(r) => run::run_bundle(rt, r),
        Lifecycle::State(a) => print_json(&rt.state(&a.id)?),
        Lifecycle::Kill(a) => {
            rt.kill(&a.id, parse_signal(&a.signal)?, a.all)?;
            Ok(0)
        }
        Lifecycle::Delete(a) => rt.delete(&a.id, a.force).map(|_| 0).map_err(Into::into),
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(0)
}

fn write_spec(bundle: &std::path::Path, rootless: bool) -> Result<i32> {
    let path = bundle.join("config.json");
    if path.exists() {
        anyhow::bail!("{} already exists; remove it first", path.display());
    }
    let spec = crate::spec::default_spec(rootless);
    let data = serde_json::to_vec_pretty(&spec)?;
    crate::state::write_atomic(&path, &data, 0o666)?;
    Ok(0)
}

fn list(rt: &Runtime, format: ListFormat, quiet: bool) -> Result<i32> {
    let all = rt.list()?;
    let mut out = std::io::stdout().lock();
    if quiet {
        for c in &all {
            writeln!(out, "{}", c.id)?;
        }
        return Ok(0);
    }
    if format == ListFormat::Json {
        serde_json::to_writer(&mut out, &all)?;
        writeln!(out)?;
        return Ok(0);
    }
    writeln!(out, "ID          PID         STATUS      BUNDLE                     CREATED                          OWNER")?;
    for c in &all {
        writeln!(
            out,
            "{:<11} {:<11} {:<11} {:<26} {:<32} {}",
            c.id,
            c.pid,
            c.status,
            c.bundle.display(),
            c.created,
            if c.owner.is_empty() { "root" } else { &c.owner }
        )?;
    }
    Ok(0)
}

fn ps(rt: &Runtime, id: &str, format: ListFormat, ps_args: &[String]) -> Result<i32> {
    let pids = rt.ps(id)?;
    if format == ListFormat::Json {
        return print_json(&pids);
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let output = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{header}")?;
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(0)
}
