//! Replacing a file atomically: a reader, or a crash, sees the old content or the new, never a mix.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `data` to a fresh temporary file beside `path` (created with `mode`, less the umask),
/// fsyncs it, renames it over `path` and fsyncs the directory, so the rename itself survives a crash.
/// On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = write_renamed(path, data, mode, true)?;
    File::open(dir)?.sync_all()
}

/// [`write_atomic`] without its two fsyncs: a reader still sees the old content or the new, never a
/// mix, but a crash may leave neither. For files that mean nothing after a crash (a pid file, an
/// exec's result read once by its parent): each fsync is a journal commit on the caller's path.
pub fn replace(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_renamed(path, data, mode, false).map(drop)
}

/// Writes `data` to a temporary file beside `path` (fsynced if `durable`) and renames it over
/// `path`; returns the directory.
fn write_renamed<'p>(
    path: &'p Path,
    data: &[u8],
    mode: u32,
    durable: bool,
) -> io::Result<&'p Path> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(dir, path)?;
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(dir)
}

/// `.<name>.<pid>-<seq>-<random>.tmp`: unique among the threads of this process (the sequence
/// number) and among processes, including one that reuses the pid of another that died mid-write
/// (the random part).
fn temp_path(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let random = crate::id::random_hex(4)?;
    Ok(dir.join(format!(".{name}.{}-{seq}-{random}.tmp", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_content_with_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one", 0o600).expect("first");
        write_atomic(&p, b"two", 0o600).expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn replace_swaps_content_with_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("exec.pid");
        replace(&p, b"1", 0o644).expect("first");
        replace(&p, b"22", 0o644).expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"22");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(leftovers(dir.path()).is_empty());
        let gone = dir.path().join("absent/exec.pid");
        assert!(replace(&gone, b"1", 0o644).is_err());
    }

    #[test]
    fn threads_writing_one_file_never_share_a_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("counter");
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, &[t; 4096], 0o644).expect("write");
                    }
                });
            }
        });
        let data = std::fs::read(&p).expect("read");
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|b| *b == data[0]), "a torn write");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn failure_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("target");
        std::fs::create_dir(&p).expect("a directory where the file should go");
        std::fs::write(p.join("keep"), b"x").expect("fill it");
        assert!(write_atomic(&p, b"new", 0o600).is_err());
        assert!(p.join("keep").exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("absent/file");
        let e = write_atomic(&p, b"x", 0o600).expect_err("no directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
