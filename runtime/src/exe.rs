//! Running from a copy of our own binary that nothing can write.
//!
//! A container process is, until its final execve, a copy of the runtime. If a container can make that
//! execve run `/proc/self/exe` (a `#!/proc/self/exe` script suffices), it holds the runtime's binary and
//! can overwrite it for the next user (runc CVE-2019-5736). So the commands that put processes into
//! containers first re-exec themselves through a private, detached, read-only bind mount of the binary:
//! what a container could reach is then a file on a read-only mount that exists nowhere in any mount
//! namespace, so it cannot be remounted either. No bytes are copied. Kernels without the new mount API
//! get a sealed memfd copy instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use crate::rootfs::sys;

const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Whether this process already runs from a sealed copy.
pub fn is_sealed_copy() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS takes no argument; on a regular file it fails with EINVAL.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Whether our binary already lies on a read-only mount, where no one can write it through us.
fn on_readonly_mount() -> bool {
    // SAFETY: an all-zero statvfs is a valid buffer for statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs reads a valid path and writes into st.
    let r = unsafe { libc::statvfs(c"/proc/self/exe".as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// Re-executes the process from an unwritable view of its binary unless it already runs from one.
/// Returns only if it already does, or on failure.
pub fn ensure_protected() -> io::Result<()> {
    if on_readonly_mount() || is_sealed_copy() {
        return Ok(());
    }
    let fd = match readonly_bind_of_self() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!("read-only bind of our binary failed ({e}); using a sealed copy");
            sealed_copy()?
        }
    };
    reexec(&fd)
}

/// A detached bind mount of the running binary, made read-only, as an O_PATH descriptor.
fn readonly_bind_of_self() -> io::Result<OwnedFd> {
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NOSUID: u64 = 0x2;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    let fd = sys::open_tree_clone(std::path::Path::new("/proc/self/exe"), false)?;
    let set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    sys::mount_setattr(&fd, false, set, 0)?;
    Ok(fd)
}

fn sealed_copy() -> io::Result<OwnedFd> {
    let src = std::fs::File::open("/proc/self/exe")?;
    let size = src.metadata()?.len();
    let name = c"skiff";
    // SAFETY: memfd_create reads a valid name and returns a new descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and ours.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = size as usize;
    while left > 0 {
        // SAFETY: sendfile between two descriptors we own, at their current offsets.
        let n =
            unsafe { libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n <= 0 {
            return Err(if n == 0 {
                io::Error::new(io::ErrorKind::UnexpectedEof, "short copy of /proc/self/exe")
            } else {
                io::Error::last_os_error()
            });
        }
        left -= n as usize;
    }
    // SAFETY: F_ADD_SEALS takes an int of seal flags.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(mem)
}

fn reexec(fd: &OwnedFd) -> io::Result<()> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    extern "C" {
        static environ: *const *mut libc::c_char;
    }
    // SAFETY: argv is a NUL-terminated array of valid C strings; `environ` is the process's own
    // environment; AT_EMPTY_PATH executes the descriptor itself.
    unsafe {
        libc::execveat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr() as *const *mut libc::c_char,
            environ,
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}
