//! A forked child joining the container's cgroups by itself.
//!
//! Moving another process into a cgroup (its pid into `cgroup.procs`) takes the kernel's global
//! thread-group lock for writing, which waits for an RCU grace period: several milliseconds on every
//! exec and container start of an otherwise idle host. A single-threaded child that moves only
//! itself (`0` into a v1 `tasks` file) does not take that lock, and one born into its cgroup2
//! directory (`clone3(CLONE_INTO_CGROUP)`) does not migrate at all.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::util::io_err;
use super::CgroupError;

/// What a child needs to be in the container's cgroups: opened before the fork, used in the child.
#[derive(Debug)]
pub struct SelfJoin {
    /// The cgroup2 directory, for `clone3(CLONE_INTO_CGROUP)`.
    born_into: Option<OwnedFd>,
    /// Each v1 hierarchy's `tasks` file, open for writing.
    tasks: Vec<(PathBuf, File)>,
}

impl SelfJoin {
    /// Opens the container's directories: `unified` is the cgroup2 hierarchy, every other name a v1 one.
    pub fn open<'a>(
        dirs: impl IntoIterator<Item = (&'a String, &'a PathBuf)>,
    ) -> Result<SelfJoin, CgroupError> {
        let mut join = SelfJoin {
            born_into: None,
            tasks: Vec::new(),
        };
        for (name, dir) in dirs {
            if name == "unified" {
                join.born_into = Some(open_dir(dir)?);
                tracing::debug!(
                    "the child is born into {} (CLONE_INTO_CGROUP)",
                    dir.display()
                );
            } else {
                let tasks = dir.join("tasks");
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&tasks)
                    .map_err(io_err(&tasks))?;
                join.tasks.push((tasks, file));
            }
        }
        Ok(join)
    }

    /// The directory to pass to `clone3` with `CLONE_INTO_CGROUP`, if the container has a cgroup2 one.
    pub fn clone_into(&self) -> Option<RawFd> {
        self.born_into.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Run in the child born through [`clone_into`](Self::clone_into): moves the calling thread
    /// into every v1 hierarchy. Only that thread moves, so the child must still be single-threaded;
    /// what it forks afterwards is born in the same cgroups.
    pub fn join(self) -> Result<(), CgroupError> {
        for (path, mut file) in self.tasks {
            file.write_all(b"0").map_err(|source| CgroupError::Write {
                path,
                value: "0".into(),
                source,
            })?;
        }
        Ok(())
    }
}

fn open_dir(dir: &Path) -> Result<OwnedFd, CgroupError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(io_err(dir))
}
