//! `skiff features`: what this build supports, in the OCI runtime features format.

use serde_json::{json, Value};

use crate::security::{caps, idmap, lsm, seccomp};

pub fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": crate::spec::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": crate::rootfs::mount_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps::known(),
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false, "rdma": true },
            "seccomp": {
                "enabled": true,
                "actions": seccomp::KNOWN_ACTIONS,
                "operators": seccomp::KNOWN_OPS,
                "archs": seccomp::KNOWN_ARCHES,
                "knownFlags": seccomp::KNOWN_FLAGS,
                "supportedFlags": supported_seccomp_flags(),
            },
            "apparmor": { "enabled": lsm::apparmor_enabled() },
            "selinux": { "enabled": lsm::selinux_enabled() },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": idmap::supported() } }
        },
        "annotations": {
            "run.skiff.version": env!("CARGO_PKG_VERSION")
        }
    })
}

/// The known flags the running kernel accepts. The kernel rejects an unknown filter flag with EINVAL
/// before it reads the program, so a NULL program tells them apart: EFAULT means the flag is known.
fn supported_seccomp_flags() -> Vec<&'static str> {
    let probe = |flag: u32| {
        // SAFETY: a NULL program makes the kernel fail the call after the flag check; nothing is installed.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, 1, flag as libc::c_ulong, 0usize) };
        r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
    };
    let flags = [
        ("SECCOMP_FILTER_FLAG_TSYNC", seccomp::FLAG_TSYNC),
        ("SECCOMP_FILTER_FLAG_LOG", seccomp::FLAG_LOG),
        ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", seccomp::FLAG_SPEC_ALLOW),
        (
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
            seccomp::FLAG_WAIT_KILLABLE_RECV | seccomp::FLAG_NEW_LISTENER,
        ),
    ];
    flags
        .into_iter()
        .filter(|(_, f)| probe(*f))
        .map(|(n, _)| n)
        .collect()
}
