//! Unpack a layer tar stream into its own directory, safely: no entry may write outside it,
//! and Docker/OCI whiteouts become overlayfs whiteouts.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::error::{Error, IoContext, Result};
use super::tar::{Header, Kind, Reader, TarError};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// File data is copied in chunks this large (few write calls for large files).
const COPY_CHUNK: usize = 256 << 10;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Apply ownership and create device nodes (needs root).
    pub privileged: bool,
    /// A file that declares more bytes than this is refused before anything of it is written.
    pub max_entry_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Self {
            privileged: euid == 0,
            max_entry_bytes: u64::MAX,
        }
    }
}

/// Who new files belong to and which permission bits they keep, without asking per file.
#[derive(Clone, Copy, Debug)]
struct Ids {
    uid: u32,
    gid: u32,
    umask: u32,
}

impl Ids {
    fn current() -> Self {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Self {
            uid,
            gid,
            umask: read_umask().unwrap_or(0o777),
        }
    }
}

/// The umask from /proc (setting it to read it would race with other threads). When it
/// cannot be read every file gets an explicit chmod.
fn read_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/thread-self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).ok()
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub entries: u64,
    pub file_bytes: u64,
}

/// Unpack every entry of `reader` under `root` (which must exist and be private to us).
/// `layer` names the layer in errors. The reader is returned so the caller can drain it.
pub fn unpack<R: Read>(reader: R, root: &Path, layer: &str, opts: Options) -> Result<(Stats, R)> {
    let mut u = Unpacker {
        root,
        layer,
        opts,
        dir_times: Vec::new(),
        dirs: HashSet::new(),
        setgid_dirs: HashSet::new(),
        ids: Ids::current(),
        buf: Vec::new(),
        stats: Stats::default(),
    };
    let mut tar = Reader::new(reader);
    loop {
        let header = tar.next_header().map_err(|e| u.tar_err(e))?;
        let Some(h) = header else { break };
        u.entry(&h, &mut tar)?;
        u.stats.entries += 1;
    }
    for (path, secs, nsec) in u.dir_times.iter().rev() {
        set_mtime(path, *secs, *nsec).at(path)?;
    }
    Ok((u.stats, tar.into_inner()))
}

struct Unpacker<'a> {
    root: &'a Path,
    layer: &'a str,
    opts: Options,
    dir_times: Vec<(PathBuf, i64, u32)>,
    /// Directories already checked to be real directories of this layer, so that entries
    /// need no lstat of each parent. Cleared whenever an entry removes anything.
    dirs: HashSet<PathBuf>,
    /// Directories given the setgid bit: files created in them take the directory's group.
    setgid_dirs: HashSet<PathBuf>,
    ids: Ids,
    buf: Vec<u8>,
    stats: Stats,
}

impl Unpacker<'_> {
    fn unsafe_entry(&self, path: &[u8], reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            reason: reason.into(),
        }
    }

    fn tar_err(&self, e: TarError) -> Error {
        Error::Tar {
            layer: self.layer.to_string(),
            reason: e.to_string(),
        }
    }

    fn entry<R: Read>(&mut self, h: &Header, tar: &mut Reader<R>) -> Result<()> {
        let comps = clean(&h.path).map_err(|r| self.unsafe_entry(&h.path, r))?;
        let Some((name, parent)) = comps.split_last() else {
            // The archive root ("./"): only its metadata applies.
            if h.kind == Kind::Dir {
                self.metadata(self.root, h)?;
            }
            return Ok(());
        };
        if *name == OPAQUE {
            let dir = self.ensure_dirs(&h.path, parent, true)?;
            return set_xattr(&dir, "trusted.overlay.opaque", b"y").at(&dir);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(h, parent, hidden);
        }
        let dir = self.ensure_dirs(&h.path, parent, false)?;
        let target = dir.join(OsStr::from_bytes(name));
        match h.kind {
            Kind::Regular => return self.regular(&target, h, tar),
            Kind::Dir => {
                match self.create_or_replace(&target, true, |t| fs::create_dir(t)) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    other => other.at(&target)?,
                }
                self.dirs.insert(target.clone());
            }
            Kind::Symlink => {
                if symlink_escapes(parent, &h.link) {
                    return Err(self.unsafe_entry(
                        &h.path,
                        format!(
                            "symlink target {:?} points outside the layer",
                            String::from_utf8_lossy(&h.link)
                        ),
                    ));
                }
                let link = OsStr::from_bytes(&h.link);
                self.create_or_replace(&target, false, |t| symlink(link, t))
                    .at(&target)?;
            }
            Kind::HardLink => return self.hardlink(&target, h),
            Kind::Char | Kind::Block | Kind::Fifo => {
                if !self.device(&target, h)? {
                    return Ok(());
                }
            }
            Kind::Other(t) => {
                return Err(
                    self.unsafe_entry(&h.path, format!("unsupported entry type {:?}", t as char))
                )
            }
        }
        self.metadata(&target, h)
    }

    /// Create with `create`; when the name exists (an earlier entry of this layer), replace
    /// that entry as tar does and try once more. Directories merge with directories.
    fn create_or_replace<T>(
        &mut self,
        target: &Path,
        is_dir: bool,
        create: impl Fn(&Path) -> io::Result<T>,
    ) -> io::Result<T> {
        match create(target) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.dirs.clear();
                replace_existing(target, is_dir)?;
                create(target)
            }
            other => other,
        }
    }

    /// A regular file: data and metadata through one descriptor (no path lookups after open).
    fn regular<R: Read>(&mut self, target: &Path, h: &Header, tar: &mut Reader<R>) -> Result<()> {
        if h.size > self.opts.max_entry_bytes {
            return Err(Error::TooLarge {
                what: format!(
                    "layer {} uncompressed: {:?} declares {} bytes",
                    self.layer,
                    String::from_utf8_lossy(&h.path),
                    h.size
                ),
                limit: self.opts.max_entry_bytes,
            });
        }
        // Created with its final permission bits when the umask keeps them all (no chmod
        // then); setuid, setgid and sticky bits always come from a chmod after the chown.
        let direct = h.mode & 0o7777 == h.mode & 0o777 & !self.ids.umask;
        let create_mode = if direct { h.mode & 0o777 } else { 0o600 };
        let open = |t: &Path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(create_mode)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(t)
        };
        let mut f = self.create_or_replace(target, false, open).at(target)?;
        let n = self.copy_data(tar, &mut f, target)?;
        self.stats.file_bytes += n;
        let parent_setgid = target
            .parent()
            .is_some_and(|p| self.setgid_dirs.contains(p));
        let owned = !self.opts.privileged
            || (h.uid == u64::from(self.ids.uid)
                && h.gid == u64::from(self.ids.gid)
                && !parent_setgid);
        self.file_metadata(&f, target, h, owned, direct)
    }

    fn copy_data<R: Read>(
        &mut self,
        tar: &mut Reader<R>,
        f: &mut File,
        target: &Path,
    ) -> Result<u64> {
        if self.buf.is_empty() {
            self.buf = vec![0; COPY_CHUNK];
        }
        let mut data = tar.data();
        let mut total = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(self.tar_err(TarError::Truncated("entry data")))
                }
                Err(e) => {
                    return Err(Error::Io {
                        path: target.to_path_buf(),
                        source: e,
                    })
                }
            };
            f.write_all(&self.buf[..n]).at(target)?;
            total += n as u64;
        }
    }

    /// `owned`: the file already has the entry's owner; `mode_set`: and its mode.
    fn file_metadata(
        &self,
        f: &File,
        path: &Path,
        h: &Header,
        owned: bool,
        mode_set: bool,
    ) -> Result<()> {
        if !owned {
            let uid = u32::try_from(h.uid).ok();
            let gid = u32::try_from(h.gid).ok();
            fchown(f, uid, gid).at(path)?;
        }
        for (name, value) in &h.xattrs {
            if let Err(e) = fset_xattr(f, name, value) {
                if e.raw_os_error() == Some(libc::ENOTSUP) {
                    warn!(path = %path.display(), xattr = name, error = %e, "xattr not kept");
                } else {
                    return Err(e).at(path);
                }
            }
        }
        if !mode_set || !owned {
            // After chown, which clears setuid/setgid.
            f.set_permissions(fs::Permissions::from_mode(h.mode))
                .at(path)?;
        }
        set_file_mtime(f, h.mtime, h.mtime_nsec).at(path)
    }

    fn hardlink(&mut self, target: &Path, h: &Header) -> Result<()> {
        let comps = clean(&h.link)
            .map_err(|r| self.unsafe_entry(&h.path, format!("hardlink target: {r}")))?;
        let Some((name, parent)) = comps.split_last() else {
            return Err(self.unsafe_entry(&h.path, "hardlink to the layer root"));
        };
        let dir = self.existing_dirs(&h.path, parent)?;
        let source = dir.join(OsStr::from_bytes(name));
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => Err(self.unsafe_entry(&h.path, "hardlink to a directory")),
            Ok(_) => self
                .create_or_replace(target, false, |t| fs::hard_link(&source, t))
                .at(target),
            Err(_) => Err(self.unsafe_entry(
                &h.path,
                format!(
                    "hardlink target {:?} is not an earlier entry of this layer",
                    String::from_utf8_lossy(&h.link)
                ),
            )),
        }
    }

    /// Returns false when the node was skipped (devices need privilege).
    fn device(&mut self, target: &Path, h: &Header) -> Result<bool> {
        let (kind, dev) = match h.kind {
            Kind::Char => (libc::S_IFCHR, libc::makedev(h.dev_major, h.dev_minor)),
            Kind::Block => (libc::S_IFBLK, libc::makedev(h.dev_major, h.dev_minor)),
            _ => (libc::S_IFIFO, 0),
        };
        if kind != libc::S_IFIFO && !self.opts.privileged {
            warn!(path = %target.display(), "skipping device node: not privileged");
            return Ok(false);
        }
        self.create_or_replace(target, false, |t| mknod(t, kind | 0o600, dev))
            .at(target)?;
        Ok(true)
    }

    fn whiteout(&mut self, h: &Header, parent: &[&[u8]], hidden: &[u8]) -> Result<()> {
        if hidden.is_empty()
            || hidden == b"."
            || hidden == b".."
            || hidden.starts_with(WHITEOUT_PREFIX)
        {
            return Err(self.unsafe_entry(&h.path, "malformed whiteout name"));
        }
        let dir = self.ensure_dirs(&h.path, parent, false)?;
        let target = dir.join(OsStr::from_bytes(hidden));
        // overlayfs marks a deleted lower entry with a 0/0 character device.
        self.create_or_replace(&target, false, |t| mknod(t, libc::S_IFCHR, 0))
            .at(&target)
    }

    /// Create missing parent directories, refusing symlinks and non-directories on the way.
    fn ensure_dirs(&mut self, entry: &[u8], comps: &[&[u8]], _opaque: bool) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        for c in comps {
            cur.push(OsStr::from_bytes(c));
        }
        if comps.is_empty() || self.dirs.contains(&cur) {
            return Ok(cur);
        }
        let mut cur = self.root.to_path_buf();
        for c in comps {
            cur.push(OsStr::from_bytes(c));
            if self.dirs.contains(&cur) {
                continue;
            }
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(
                        self.unsafe_entry(entry, format!("parent {} is a symlink", self.rel(&cur)))
                    )
                }
                Ok(m) if !m.is_dir() => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!("parent {} is not a directory", self.rel(&cur)),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).at(&cur)?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)).at(&cur)?;
                }
                Err(e) => return Err(e).at(&cur),
            }
            self.dirs.insert(cur.clone());
        }
        Ok(cur)
    }

    /// Like `ensure_dirs` but every directory must already exist.
    fn existing_dirs(&self, entry: &[u8], comps: &[&[u8]]) -> Result<PathBuf> {
        let mut cur = self.root.to_path_buf();
        for c in comps {
            cur.push(OsStr::from_bytes(c));
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    return Err(self.unsafe_entry(
                        entry,
                        format!(
                            "hardlink target parent {} is not a directory of this layer",
                            self.rel(&cur)
                        ),
                    ))
                }
            }
        }
        Ok(cur)
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(self.root).unwrap_or(p).display().to_string()
    }

    fn metadata(&mut self, path: &Path, h: &Header) -> Result<()> {
        let is_link = h.kind == Kind::Symlink;
        if self.opts.privileged {
            let uid = u32::try_from(h.uid).ok();
            let gid = u32::try_from(h.gid).ok();
            lchown(path, uid, gid).at(path)?;
        }
        for (name, value) in &h.xattrs {
            if let Err(e) = set_xattr(path, name, value) {
                if e.raw_os_error() == Some(libc::ENOTSUP) || (is_link && name.starts_with("user."))
                {
                    warn!(path = %path.display(), xattr = name, error = %e, "xattr not kept");
                } else {
                    return Err(e).at(path);
                }
            }
        }
        if !is_link {
            // After chown, which clears setuid/setgid.
            fs::set_permissions(path, fs::Permissions::from_mode(h.mode)).at(path)?;
        }
        if h.kind == Kind::Dir {
            if h.mode & libc::S_ISGID != 0 {
                self.setgid_dirs.insert(path.to_path_buf());
            } else {
                self.setgid_dirs.remove(path);
            }
            self.dir_times
                .push((path.to_path_buf(), h.mtime, h.mtime_nsec));
        } else {
            set_mtime(path, h.mtime, h.mtime_nsec).at(path)?;
        }
        Ok(())
    }
}

/// Split an archive path into components, refusing absolute paths and `..`.
fn clean(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    // umoci names the layer root "/"; any other absolute name is refused.
    if raw.iter().all(|&b| b == b'/') {
        return Ok(Vec::new());
    }
    if raw.starts_with(b"/") {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("NUL in path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' path component".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Does a relative symlink climb above the layer root? Absolute targets resolve inside the
/// container's root at run time, and the unpacker never follows links, so they are allowed.
fn symlink_escapes(parent: &[&[u8]], target: &[u8]) -> bool {
    if target.starts_with(b"/") {
        return false;
    }
    let mut depth = parent.len() as i64;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// A later entry replaces an earlier one of the same name (directories merge).
fn replace_existing(path: &Path, new_is_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && new_is_dir => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated and live across the call; value/len describe a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn fset_xattr(f: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is open for the call; `n` is NUL-terminated and value/len describe a valid slice.
    let rc = unsafe {
        libc::fsetxattr(
            f.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_file_mtime(f: &File, secs: i64, nsec: u32) -> io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: the descriptor is open for the call and `times` points at two initialised timespecs.
    let rc = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(path: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid path and `times` points at two initialised timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean(b"./a//b/./c").unwrap(), vec![&b"a"[..], b"b", b"c"]);
        assert!(clean(b"/etc/passwd").is_err());
        assert!(clean(b"a/../../b").is_err());
        assert!(clean(b"./").unwrap().is_empty());
        assert!(clean(b"/").unwrap().is_empty());
    }

    fn header(name: &str, flag: u8, size: usize, link: &str) -> Vec<u8> {
        header_mode(name, flag, size, link, 0o755)
    }

    fn header_mode(name: &str, flag: u8, size: usize, link: &str, mode: u32) -> Vec<u8> {
        {
            let mut b = vec![0u8; 512];
            b[..name.len()].copy_from_slice(name.as_bytes());
            b[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
            b[108..115].copy_from_slice(b"0000000");
            b[116..123].copy_from_slice(b"0000000");
            b[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
            b[136..147].copy_from_slice(b"14000000000");
            b[156] = flag;
            b[157..157 + link.len()].copy_from_slice(link.as_bytes());
            b[257..263].copy_from_slice(b"ustar\0");
            b[148..156].copy_from_slice(b"        ");
            let sum: u32 = b.iter().map(|&x| x as u32).sum();
            b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            b
        }
    }

    /// A small archive with every entry kind, built by hand.
    fn sample_archive() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(header("d/", b'5', 0, ""));
        v.extend(header("d/f", b'0', 5, ""));
        v.extend(b"hello");
        v.extend(std::iter::repeat_n(0, 507));
        v.extend(header("d/s", b'2', 0, "f"));
        v.extend(header("d/h", b'1', 0, "d/f"));
        v.extend(header("d/.wh.gone", b'0', 0, ""));
        v.extend(header("d/.wh..wh..opq", b'0', 0, ""));
        v.extend(header("p", b'6', 0, ""));
        v.extend(std::iter::repeat_n(0, 1024));
        v
    }

    #[test]
    fn unpacks_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("l");
        fs::create_dir(&root).unwrap();
        let (stats, _) = unpack(&sample_archive()[..], &root, "test", Options::default()).unwrap();
        assert_eq!(stats.entries, 7);
        assert_eq!(fs::read(root.join("d/h")).unwrap(), b"hello");
        assert_eq!(fs::read_link(root.join("d/s")).unwrap(), Path::new("f"));
    }

    fn file_entry(v: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        v.extend(header_mode(name, b'0', data.len(), "", mode));
        v.extend(data);
        v.extend(std::iter::repeat_n(0, (512 - data.len() % 512) % 512));
    }

    /// Later entries replace earlier ones of the same name; a directory that became a
    /// symlink is no longer a parent to write through; modes survive the umask.
    #[test]
    fn replacements_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("l");
        fs::create_dir(&root).unwrap();
        let mut v = Vec::new();
        v.extend(header("a/", b'5', 0, ""));
        file_entry(&mut v, "a/f", 0o644, b"one");
        file_entry(&mut v, "a/f", 0o666, b"two");
        file_entry(&mut v, "a/s", 0o4755, b"suid");
        v.extend(header("a/f/", b'5', 0, ""));
        v.extend(header("a/g", b'5', 0, ""));
        file_entry(&mut v, "a/g", 0o600, b"file over dir");
        v.extend(std::iter::repeat_n(0, 1024));
        let opts = Options {
            privileged: false,
            max_entry_bytes: u64::MAX,
        };
        unpack(&v[..], &root, "test", opts).unwrap();
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert!(root.join("a/f").is_dir());
        assert_eq!(mode("a/s"), 0o4755);
        assert_eq!(fs::read(root.join("a/g")).unwrap(), b"file over dir");
        assert_eq!(mode("a/g"), 0o600);

        let root = dir.path().join("m");
        fs::create_dir(&root).unwrap();
        let mut v = Vec::new();
        v.extend(header("d/", b'5', 0, ""));
        file_entry(&mut v, "d/x", 0o666, b"x");
        v.extend(header("d", b'2', 0, "/etc"));
        file_entry(&mut v, "d/y", 0o644, b"y");
        let err = unpack(&v[..], &root, "test", opts).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(!Path::new("/etc/y").exists());
        let root = dir.path().join("n");
        fs::create_dir(&root).unwrap();
        let mut v = Vec::new();
        file_entry(&mut v, "w", 0o666, b"w");
        unpack(&v[..], &root, "test", opts).unwrap();
        assert_eq!(mode_of(&root.join("w")), 0o666);
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// Mutated archives give errors or partial trees, never a panic or a write outside.
    #[test]
    fn mutated_archives_never_panic() {
        let base = sample_archive();
        let dir = tempfile::tempdir().unwrap();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..400 {
            let mut a = base.clone();
            for _ in 0..(1 + next() % 8) {
                let pos = (next() % a.len() as u64) as usize;
                a[pos] = match next() % 4 {
                    0 => b'/',
                    1 => b'.',
                    2 => 0,
                    _ => next() as u8,
                };
            }
            if next() % 5 == 0 {
                a.truncate((next() % a.len() as u64) as usize);
            }
            let root = dir.path().join(format!("l{i}"));
            fs::create_dir(&root).unwrap();
            let _ = unpack(
                &a[..],
                &root,
                "fuzz",
                Options {
                    privileged: false,
                    max_entry_bytes: u64::MAX,
                },
            );
        }
        let outside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('l'))
            .collect();
        assert!(outside.is_empty(), "{outside:?}");
    }

    #[test]
    fn symlink_escape() {
        let p: Vec<&[u8]> = vec![b"usr", b"bin"];
        assert!(!symlink_escapes(&p, b"../lib/x"));
        assert!(!symlink_escapes(&p, b"../../etc"));
        assert!(symlink_escapes(&p, b"../../../etc"));
        assert!(symlink_escapes(&p, b"a/../../../../x"));
        assert!(!symlink_escapes(&p, b"/bin/busybox"));
        assert!(symlink_escapes(&[], b".."));
    }
}
