//! `skiff exec`: flags merged over the container's own process settings, or a whole process.json.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::container::{ExecOptions, Runtime};
use crate::spec::Process;

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids (repeatable).
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// A process.json describing the whole process; replaces the command and flags.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Return once the process runs.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability (repeatable).
    #[arg(short, long = "cap")]
    pub cap: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    pub apparmor: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long, hide = true)]
    pub process_label: Option<String>,
    pub id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(rt: &Runtime, args: ExecArgs) -> Result<i32> {
    let process = match &args.process {
        Some(path) => read_process(path)?,
        None => merged(rt, &args)?,
    };
    let opts = ExecOptions {
        process,
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        detach: args.detach,
        preserve_fds: args.preserve_fds,
    };
    Ok(rt.exec(&args.id, &opts)?)
}

fn read_process(path: &std::path::Path) -> Result<Process> {
    let data = crate::spec::read_limited(path)?;
    let p: Process = crate::spec::parse_json(path, &data)?;
    if p.args.is_empty() {
        bail!("{}: args: empty: nothing to run", path.display());
    }
    if !p.cwd.starts_with('/') {
        bail!(
            "{}: cwd: {:?} is not an absolute path",
            path.display(),
            p.cwd
        );
    }
    Ok(p)
}

fn merged(rt: &Runtime, a: &ExecArgs) -> Result<Process> {
    if a.command.is_empty() {
        bail!("exec: no command given (usage: skiff exec [OPTIONS] ID COMMAND [ARGS...])");
    }
    let mut p = rt.exec_base(&a.id)?;
    p.args = a.command.clone();
    p.terminal = a.tty;
    p.console_size = None;
    if let Some(cwd) = &a.cwd {
        p.cwd = cwd.clone();
    }
    for e in &a.env {
        if !e.contains('=') {
            bail!("--env {e:?} is not KEY=VALUE");
        }
        let key = e.split('=').next().unwrap_or("");
        p.env.retain(|old| old.split('=').next() != Some(key));
        p.env.push(e.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u.as_str(), None),
        };
        p.user.uid = uid
            .parse()
            .with_context(|| format!("--user {u:?}: uid is not a number"))?;
        p.user.gid = match gid {
            Some(g) => g
                .parse()
                .with_context(|| format!("--user {u:?}: gid is not a number"))?,
            None => 0,
        };
    }
    if !a.additional_gids.is_empty() {
        p.user.additional_gids = a.additional_gids.clone();
    }
    if a.no_new_privs {
        p.no_new_privileges = true;
    }
    // Never the inheritable set: it would pass the capability on through exec of any file (CVE-2022-29162).
    if !a.cap.is_empty() {
        let caps = p.capabilities.get_or_insert_with(Default::default);
        for c in &a.cap {
            for set in [
                &mut caps.bounding,
                &mut caps.effective,
                &mut caps.permitted,
                &mut caps.ambient,
            ] {
                if !set.contains(c) {
                    set.push(c.clone());
                }
            }
        }
    }
    Ok(p)
}
