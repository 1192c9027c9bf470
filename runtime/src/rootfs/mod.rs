//! The container's root filesystem: mounts, devices, pivot_root, masked and read-only paths.

/// Maps `linux.rootfsPropagation` to mount flags.
pub fn propagation_flag(name: &str) -> Option<libc::c_ulong> {
    let flag = match name {
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    };
    Some(flag)
}
