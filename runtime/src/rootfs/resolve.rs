//! Path resolution inside the container's root that can never leave it.
//!
//! Every lookup goes through openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) from an O_PATH fd of
//! the root, so a symlink (absolute or `..`-laden) is followed as if the root were `/`. Missing
//! components are created with mkdirat/openat on the fd of the already-resolved parent, never by a
//! string path, and callers mount onto the returned fd through `/proc/self/fd/N`, so the kernel
//! acts on exactly the inode that was resolved.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// How many symlinks may be expanded while creating a path (the kernel's own limit is 40).
const MAX_SYMLINKS: usize = 40;

/// What to create at the end of a path that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// A directory used as the root of every lookup.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
}

impl RootDir {
    pub fn open(path: &Path) -> io::Result<RootDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(RootDir { fd })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens `path` (O_PATH) inside the root, following symlinks only within it.
    pub fn resolve(&self, path: &str) -> io::Result<OwnedFd> {
        open_in_root(&self.fd, &relative(path))
    }

    /// Like `resolve`, creating missing directories and, at the end, a `kind`.
    pub fn create(&self, path: &str, kind: Kind) -> io::Result<OwnedFd> {
        self.walk(path, Some(kind)).map(|(fd, _)| fd)
    }

    /// Creates the parent directories of `path`; returns the parent's fd and the final name, for
    /// the *at() calls that make device nodes and symlinks.
    pub fn create_parent(&self, path: &str) -> io::Result<(OwnedFd, String)> {
        let rel = relative(path);
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p.to_owned(), n.to_owned()),
            None => (String::new(), rel.clone()),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} does not name a file"),
            ));
        }
        let dir = if parent.is_empty() {
            self.fd.try_clone()?
        } else {
            self.walk(&parent, Some(Kind::Dir))?.0
        };
        Ok((dir, name))
    }

    /// Walks `path` one component at a time, creating what is missing. Returns the final fd and
    /// whether it was created.
    fn walk(&self, path: &str, last: Option<Kind>) -> io::Result<(OwnedFd, bool)> {
        let mut pending: Vec<String> = components(&relative(path));
        let mut expansions = 0;
        'restart: loop {
            let mut done = String::new();
            let mut parent = self.fd.try_clone()?;
            let mut created = false;
            for (i, comp) in pending.iter().enumerate() {
                let is_last = i + 1 == pending.len();
                let here = join(&done, comp);
                let fd = match open_in_root(&self.fd, &here) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) && comp != ".." => {
                        let kind = if is_last { last } else { Some(Kind::Dir) };
                        let Some(kind) = kind else { return Err(e) };
                        match create_at(&parent, comp, kind) {
                            Ok(()) => created = true,
                            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                            Err(_) => {
                                // EEXIST after ENOENT: a dangling symlink. Follow it by hand,
                                // inside the root, so its target gets created.
                                if let Some(target) = readlink_at(&parent, comp)? {
                                    expansions += 1;
                                    if expansions > MAX_SYMLINKS {
                                        return Err(Errno::ELOOP.into());
                                    }
                                    pending = expand(&done, &target, &pending[i + 1..]);
                                    continue 'restart;
                                }
                            }
                        }
                        open_in_root(&self.fd, &here)?
                    }
                    Err(e) => return Err(e),
                };
                if !is_last && !is_dir(&fd)? {
                    return Err(Errno::ENOTDIR.into());
                }
                done = here;
                parent = fd;
            }
            return Ok((parent, created));
        }
    }
}

/// openat2 with the root-confining resolve flags; retried on EAGAIN, which the kernel returns
/// when a rename or mount raced with the lookup.
pub fn open_in_root(root: &impl AsFd, rel: &str) -> io::Result<OwnedFd> {
    let path = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), path, how) {
            Err(Errno::EAGAIN) if tries < 16 => tries += 1,
            other => return other.map_err(io::Error::from),
        }
    }
}

fn create_at(parent: &OwnedFd, name: &str, kind: Kind) -> io::Result<()> {
    match kind {
        Kind::Dir => mkdirat(parent, name, Mode::from_bits_truncate(0o755))?,
        Kind::File => {
            let flags = OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_WRONLY
                | OFlag::O_CLOEXEC;
            drop(nix::fcntl::openat(
                parent,
                name,
                flags,
                Mode::from_bits_truncate(0o644),
            )?);
        }
    }
    Ok(())
}

fn readlink_at(parent: &OwnedFd, name: &str) -> io::Result<Option<String>> {
    match nix::fcntl::readlinkat(parent, name) {
        Ok(t) => Ok(Some(String::from_utf8_lossy(t.as_bytes()).into_owned())),
        Err(Errno::EINVAL) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn is_dir(fd: &impl AsFd) -> io::Result<bool> {
    let st = fstat(fd.as_fd())?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// The components of a symlink target followed by what was left after the link; a relative
/// target is relative to the link's directory, an absolute one to the root.
fn expand(dir: &str, target: &str, rest: &[String]) -> Vec<String> {
    let mut out = if target.starts_with('/') {
        Vec::new()
    } else {
        components(dir)
    };
    out.extend(components(target));
    out.extend(rest.iter().cloned());
    out
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect()
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// A container path as a root-relative one (`/etc/hosts` → `etc/hosts`).
pub fn relative(path: &str) -> String {
    components(path).join("/")
}

/// True when two container paths name the same place lexically (`/dev/` and `/dev`).
pub fn same_path(a: &str, b: &str) -> bool {
    relative(a) == relative(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative("/etc//hosts/"), "etc/hosts");
        assert_eq!(relative("/"), "");
        assert_eq!(relative("./a/./b"), "a/b");
        assert!(same_path("/dev/", "dev"));
    }

    #[test]
    fn symlink_expansion() {
        let rest = vec!["c".to_string()];
        assert_eq!(expand("a/b", "/x/y", &rest), vec!["x", "y", "c"]);
        assert_eq!(expand("a/b", "../z", &rest), vec!["a", "b", "..", "z", "c"]);
    }
}
