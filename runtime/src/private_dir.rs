//! Directories only their owner (root) may enter: those above container filesystems and unpacked
//! layers. A local user who could walk into them could execute an image's setuid-root binaries or
//! open its device nodes from the host (the class of CVE-2021-41103), so they are 0700, and a wider
//! mode left by an older installation is narrowed whenever they are opened.
//!
//! Containers are unaffected: their processes see the overlay mount, reached through the mount
//! table and not through these directories, and the runtime enters them as root before any
//! process of the container changes its user.
//!
//! The exception is a container in its own user namespace: its init mounts the root file system
//! as the namespace's root, which is an ordinary user on the host. That one uid is let through
//! (search only, never list or read) by a POSIX ACL entry, see [`allow_traverse`].

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use crate::security::rootless::is_rootless;

/// Group and other bits: none may be set on a private directory.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Creates `dir` (its missing parents with the default mode) as 0700, or narrows it to 0700 if it
/// exists.
pub fn ensure(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(dir),
        // The umask cannot widen 0700, so a new directory is already private.
        other => other,
    }
}

/// Narrows an existing `dir` to 0700 (keeping the owner's and the special bits); a missing one is
/// left missing.
pub fn tighten(dir: &Path) -> io::Result<()> {
    let meta = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & OPEN_TO_OTHERS == 0 || traverse_only(dir)? {
        return Ok(());
    }
    let private = mode & !OPEN_TO_OTHERS;
    match fs::set_permissions(dir, Permissions::from_mode(private)) {
        Ok(()) => {
            tracing::info!(path = %dir.display(), "closed to other users (mode {mode:04o} -> {private:04o})");
            Ok(())
        }
        // A user without root reading root's store (`skiff images`) cannot narrow it; the next
        // run as root does.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && is_rootless() => {
            tracing::warn!(path = %dir.display(), "open to other users (mode {mode:04o}): {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The extended attribute holding a file's access ACL, and its format's version.
const ACL_XATTR: &std::ffi::CStr = c"system.posix_acl_access";
const ACL_VERSION: u32 = 2;
/// Entry tags, in the order the kernel requires them.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
/// The id of the entries that name no one.
const NO_ID: u32 = u32::MAX;
const SEARCH: u16 = 0o1;

/// One ACL entry: tag, permission bits, uid or gid.
type Entry = (u16, u16, u32);

/// Lets exactly `uids` pass through the private `dir` (search only) and no one else: ACL entries
/// `user:<uid>:--x` with a `--x` mask, the owning group and others keeping no rights; uids let
/// through before and not listed are dropped. `ls -l` shows the mode as 0710.
pub fn allow_traverse(dir: &Path, uids: &[u32]) -> io::Result<()> {
    let owner = (fs::metadata(dir)?.permissions().mode() >> 6) as u16 & 0o7;
    let mut users = uids.to_vec();
    users.sort_unstable();
    users.dedup();
    let mut entries = vec![(USER_OBJ, owner, NO_ID)];
    entries.extend(users.into_iter().map(|u| (USER, SEARCH, u)));
    entries.extend([
        (GROUP_OBJ, 0, NO_ID),
        (MASK, SEARCH, NO_ID),
        (OTHER, 0, NO_ID),
    ]);
    write_acl(dir, &entries)
}

/// Whether `dir`'s group and other bits come only from an ACL that grants nothing but search to
/// named users (as [`allow_traverse`] writes it).
fn traverse_only(dir: &Path) -> io::Result<bool> {
    let acl = read_acl(dir)?;
    Ok(!acl.is_empty()
        && acl.iter().all(|&(tag, perm, _)| match tag {
            USER_OBJ => true,
            USER | GROUP | MASK => perm & !SEARCH == 0,
            _ => perm == 0,
        }))
}

/// The entries of `path`'s access ACL; none when it has only its mode.
fn read_acl(path: &Path) -> io::Result<Vec<Entry>> {
    let c = c_path(path)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: c is NUL-terminated and buf is writable for buf.len() bytes.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            ACL_XATTR.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    decode(&buf[..n as usize]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: malformed access ACL", path.display()),
        )
    })
}

fn write_acl(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let c = c_path(path)?;
    let value = encode(entries);
    // SAFETY: c is NUL-terminated and value is readable for value.len() bytes.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            ACL_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut v = ACL_VERSION.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

fn decode(value: &[u8]) -> Option<Vec<Entry>> {
    let (version, rest) = value.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*version) != ACL_VERSION || rest.len() % 8 != 0 {
        return None;
    }
    let entries = rest.chunks_exact(8).map(|e| {
        let u16_at = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
        (
            u16_at(0),
            u16_at(2),
            u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        )
    });
    Some(entries.collect())
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_narrows_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b/fresh");
        ensure(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let old = tmp.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o2755)).unwrap();
        ensure(&old).unwrap();
        assert_eq!(mode(&old), 0o2700);
        tighten(&tmp.path().join("missing")).unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(ensure(&file).is_err());
    }

    #[test]
    fn lets_exactly_the_given_uids_traverse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("private");
        ensure(&dir).unwrap();
        allow_traverse(&dir, &[7, 231_000]).unwrap();
        allow_traverse(&dir, &[231_000, 100_000, 231_000]).unwrap();
        let want = vec![
            (USER_OBJ, 0o7, NO_ID),
            (USER, SEARCH, 100_000),
            (USER, SEARCH, 231_000),
            (GROUP_OBJ, 0, NO_ID),
            (MASK, SEARCH, NO_ID),
            (OTHER, 0, NO_ID),
        ];
        assert_eq!(read_acl(&dir).unwrap(), want);
        // The mask shows as the group's bits; reopening keeps the entries working.
        assert_eq!(mode(&dir), 0o710);
        ensure(&dir).unwrap();
        assert_eq!(read_acl(&dir).unwrap(), want);
        // A wider mode is still closed, and with it the entries' mask.
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        ensure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
