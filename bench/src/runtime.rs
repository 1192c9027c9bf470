//! An OCI runtime driven through the runc command line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::Result;
use crate::fail;
use crate::proc::{self, StderrLog, Timed};

/// How long a started `/bin/true` container may take to exit before it is an error.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Runtime {
    pub name: String,
    pub binary: PathBuf,
    /// This runtime's own `--root` state directory.
    pub root: PathBuf,
    pub bundle: PathBuf,
}

/// The timed steps of one create/start/delete lifecycle.
pub struct Lifecycle {
    pub create: Timed,
    pub start: Timed,
    pub delete: Timed,
}

impl Runtime {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root).args(args);
        cmd
    }

    fn bundle_args<'a>(&'a self, verb: &'a str, id: &'a str) -> Result<[&'a str; 4]> {
        let bundle = self
            .bundle
            .to_str()
            .ok_or_else(|| fail!("bundle path {} is not UTF-8", self.bundle.display()))?;
        Ok([verb, "--bundle", bundle, id])
    }

    /// `run` in the foreground: returns once the container has exited.
    pub fn run(&self, id: &str, log: &StderrLog) -> Result<Timed> {
        let mut cmd = self.command(&self.bundle_args("run", id)?);
        proc::run_timed(&mut cmd, log)
    }

    /// create (timed), start (timed), wait for the container's exit (untimed),
    /// delete (timed).
    pub fn lifecycle(&self, id: &str, log: &StderrLog) -> Result<Lifecycle> {
        self.lifecycle_checked(id, log, false)
    }

    /// One lifecycle that also checks the created process is in a mount namespace
    /// of its own, so a runtime that merely exits 0 is not mistaken for a fast one.
    pub fn probe(&self, id: &str, log: &StderrLog) -> Result<()> {
        self.lifecycle_checked(id, log, true).map(|_| ())
    }

    fn lifecycle_checked(&self, id: &str, log: &StderrLog, check: bool) -> Result<Lifecycle> {
        let create = proc::run_timed(&mut self.command(&self.bundle_args("create", id)?), log)?;
        let pid = self.init_pid(id, log)?;
        if check {
            check_contained(pid)?;
        }
        let start = proc::run_timed(&mut self.command(&["start", id]), log)?;
        proc::wait_gone(pid, EXIT_TIMEOUT)?;
        let delete = proc::run_timed(&mut self.command(&["delete", id]), log)?;
        Ok(Lifecycle {
            create,
            start,
            delete,
        })
    }

    /// The container's init pid, from `state`.
    fn init_pid(&self, id: &str, log: &StderrLog) -> Result<libc::pid_t> {
        let text = proc::output(&mut self.command(&["state", id]), log)?;
        let state: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| fail!("{} state {id}: invalid JSON: {e}", self.name))?;
        state
            .get("pid")
            .and_then(serde_json::Value::as_i64)
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .ok_or_else(|| fail!("{} state {id}: no positive \"pid\" in {text:?}", self.name))
    }

    /// Best-effort removal of a container left behind by a failed step.
    pub fn force_delete(&self, id: &str, log: &StderrLog) {
        let _ = proc::run_timed(&mut self.command(&["delete", "--force", id]), log);
    }

    /// First line of `--version`, or a note that there is none.
    pub fn version(&self, log: &StderrLog) -> String {
        version_of(&self.binary, log)
    }
}

fn check_contained(pid: libc::pid_t) -> Result<()> {
    let ours = std::fs::read_link("/proc/self/ns/mnt");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) if a != b => Ok(()),
        (Ok(_), Ok(_)) => Err(fail!("created process {pid} shares our mount namespace")),
        (_, Err(e)) | (Err(e), _) => Err(fail!("reading mount namespace of {pid}: {e}")),
    }
}

pub fn version_of(binary: &Path, log: &StderrLog) -> String {
    let mut cmd = Command::new(binary);
    cmd.arg("--version");
    match proc::output(&mut cmd, log) {
        Ok(text) if !text.trim().is_empty() => text.lines().next().unwrap_or("").trim().to_string(),
        _ => String::from("version unknown"),
    }
}

/// Resolves `binary` the way exec would: a path with a slash as is, a bare name
/// through PATH. `None` when there is no executable file.
pub fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return is_executable(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The floor: exec of the container's own /bin/true, without any container.
pub struct Floor {
    pub program: PathBuf,
    pub argv0: String,
}

impl Floor {
    /// Prefers the bundle's busybox (the very binary the containers run).
    pub fn for_bundle(bundle: &Path) -> Floor {
        let busybox = bundle.join("rootfs/bin/busybox");
        if is_executable(&busybox) {
            return Floor {
                program: busybox,
                argv0: String::from("true"),
            };
        }
        Floor {
            program: PathBuf::from("/bin/true"),
            argv0: String::from("true"),
        }
    }

    pub fn run(&self, log: &StderrLog) -> Result<Timed> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.program);
        cmd.arg0(&self.argv0);
        proc::run_timed(&mut cmd, log)
    }
}
