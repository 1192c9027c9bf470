//! Directories only their owner (root) may enter: those above container filesystems and unpacked
//! layers. A local user who could walk into them could execute an image's setuid-root binaries or
//! open its device nodes from the host (the class of CVE-2021-41103), so they are 0700, and a wider
//! mode left by an older installation is narrowed whenever they are opened.
//!
//! Containers are unaffected: their processes see the overlay mount, reached through the mount
//! table and not through these directories, and the runtime enters them as root before any
//! process of the container changes its user.

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
    if mode & OPEN_TO_OTHERS == 0 {
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
}
