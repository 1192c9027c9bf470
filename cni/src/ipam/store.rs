//! The host-local on-disk store: `<dataDir>/<network>/<ip>` holds
//! "<containerID>\r\n<ifname>", `last_reserved_ip.<set>` the last address
//! handed out per range set, and `lock` serialises concurrent plugins.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.";

#[derive(Debug, thiserror::Error)]
#[error("ipam store {path}: {err}")]
pub struct StoreError {
    pub path: PathBuf,
    pub err: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |err| StoreError {
        path: path.to_path_buf(),
        err,
    }
}

/// An open, exclusively locked store. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// The store lives on a disk (not tmpfs): reservations are fsynced.
    durable: bool,
}

/// Whether `f` lives on a filesystem that survives a reboot. On tmpfs and
/// ramfs an fsync buys nothing (and the state vanishes with the netns it
/// names, which is the point of keeping it there).
fn on_disk(f: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    // SAFETY: statfs is plain data; zeroed is valid and fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: f is an open file for the whole call and st is writable.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut st) } != 0 {
        return true;
    }
    let magic = st.f_type as i64;
    magic != TMPFS_MAGIC && magic != RAMFS_MAGIC
}

impl Store {
    pub fn open(data_dir: &str, network: &str) -> Result<Store, StoreError> {
        let dir = Path::new(data_dir).join(network);
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(at(&lock_path))?;
        loop {
            // SAFETY: flock on a file descriptor we own for the Store's lifetime.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(at(&lock_path)(err));
            }
        }
        let durable = on_disk(&lock);
        Ok(Store {
            dir,
            _lock: lock,
            durable,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: &IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    pub fn is_reserved(&self, ip: &IpAddr) -> bool {
        self.ip_path(ip).exists()
    }

    /// Reserves `ip` for the attachment. Returns false if it was taken.
    /// The file appears atomically with its full content (link of a temp
    /// file, synced first when the store is on disk), so a crash never
    /// leaves a half-written reservation.
    pub fn reserve(
        &self,
        ip: &IpAddr,
        id: &str,
        ifname: &str,
        set: usize,
    ) -> Result<bool, StoreError> {
        let target = self.ip_path(ip);
        let tmp = self.dir.join(format!(".tmp-{}-{}", std::process::id(), ip));
        write_file(
            &tmp,
            format!("{id}{LINE_BREAK}{ifname}").as_bytes(),
            self.durable,
        )?;
        let linked = fs::hard_link(&tmp, &target);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(at(&target)(e)),
        }
        // last_reserved_ip is only a hint for where to continue the search:
        // renamed into place (never torn) but not fsynced, since losing it
        // merely restarts the search at the range start.
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        let tmp = last.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, ip.to_string()).map_err(at(&tmp))?;
        fs::rename(&tmp, &last).map_err(at(&last))?;
        Ok(true)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let s = fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?;
        s.trim().parse().ok()
    }

    /// Every reservation: (ip, containerID, ifname).
    pub fn entries(&self) -> Result<Vec<(IpAddr, String, String)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(at(&self.dir))? {
            let entry = entry.map_err(at(&self.dir))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let Ok(data) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let data = data.trim();
            let (id, ifname) = data.split_once(LINE_BREAK).unwrap_or((data, ""));
            out.push((ip, id.trim().to_string(), ifname.trim().to_string()));
        }
        Ok(out)
    }

    pub fn by_id(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(_, i, f)| i == id && (f == ifname || f.is_empty()))
            .map(|(ip, _, _)| ip)
            .collect())
    }

    pub fn release(&self, ip: &IpAddr) -> Result<(), StoreError> {
        let p = self.ip_path(ip);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(&p)(e)),
            _ => Ok(()),
        }
    }
}

fn write_file(path: &Path, data: &[u8], sync: bool) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(at(path))?;
    f.write_all(data).map_err(at(path))?;
    if sync {
        f.sync_all().map_err(at(path))?;
    }
    Ok(())
}

/// Replaced atomically (see `skiff_sys::fs::write_atomic`): a crash leaves the old or the new file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    skiff_sys::fs::write_atomic(path, data, 0o666).map_err(at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_store_is_not_durable_disk_store_is() {
        let shm = tempfile::tempdir_in("/dev/shm").expect("tmpdir in /dev/shm");
        let s = Store::open(shm.path().to_str().expect("utf8"), "net").expect("open");
        assert!(!s.durable, "/dev/shm is tmpfs");
        assert!(s
            .reserve(&"10.0.0.2".parse().expect("ip"), "id", "eth0", 0)
            .expect("reserve"));
        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("tmpdir on disk");
        let s = Store::open(disk.path().to_str().expect("utf8"), "net").expect("open");
        assert!(s.durable, "the source tree is on disk");
    }
}
