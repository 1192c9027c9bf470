//! The file system under a container's writable layer: its device, size and inodes (one `statvfs`),
//! with the layer's usage from the last walk of the container file systems.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `major:minor` of the file system.
    pub device: String,
    /// Bytes of the writable layer.
    pub usage_bytes: u64,
    pub capacity_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

/// The file system holding `dir`; zeros where it cannot be read.
pub fn of(dir: &Path, usage_bytes: u64) -> Disk {
    let mut d = Disk {
        usage_bytes,
        ..Default::default()
    };
    if let Ok(m) = std::fs::metadata(dir) {
        let dev = m.dev();
        d.device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return d;
    };
    // SAFETY: statvfs is plain data, so all zeros is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a pointer to a statvfs the call fills in.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
        d.capacity_bytes = st.f_blocks as u64 * st.f_frsize as u64;
        d.inodes_total = st.f_files as u64;
        d.inodes_free = st.f_ffree as u64;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_file_system_and_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = of(dir.path(), 5);
        assert_eq!(d.usage_bytes, 5);
        assert!(d.device.contains(':'), "{d:?}");
        assert!(d.capacity_bytes > 0, "{d:?}");
        let gone = of(&dir.path().join("missing"), 0);
        assert_eq!(gone, Disk::default());
    }
}
