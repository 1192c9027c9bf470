//! `linux.seccomp`: the profile is compiled to BPF in-process (no C library) before the container waits
//! for `start`, so that a bad profile fails `create`; it is installed as the last step before `execve`.

pub mod bpf;
pub mod syscalls;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::spec::Seccomp;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{field}: invalid value {value:?}")]
    Invalid { field: String, value: String },
    #[error("linux.seccomp: the filter needs {0} instructions; the kernel takes at most 4096 (or a jump spans too far)")]
    TooLarge(usize),
    #[error("linux.seccomp.listenerPath: required when a rule uses SCMP_ACT_NOTIFY")]
    NoListener,
    #[error("install seccomp filter: {0}")]
    Install(io::Error),
    #[error("seccomp listener {path:?}: {source}")]
    Listener { path: String, source: io::Error },
}

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
pub const FLAG_TSYNC: u32 = 1;
pub const FLAG_LOG: u32 = 2;
pub const FLAG_SPEC_ALLOW: u32 = 4;
pub const FLAG_NEW_LISTENER: u32 = 8;
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

/// The flags of `linux.seccomp.flags` this build understands, for `skiff features`.
pub const KNOWN_FLAGS: [&str; 4] = [
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

pub const KNOWN_ACTIONS: [&str; 9] = [
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
];

pub const KNOWN_OPS: [&str; 7] = [
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

pub const KNOWN_ARCHES: [&str; 3] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

/// A compiled filter, ready for `seccomp(2)`.
#[derive(Debug, Clone)]
pub struct Filter {
    pub insns: Vec<bpf::Insn>,
    pub flags: u32,
    /// A user-notification listener fd is to be handed to `listenerPath`.
    pub listener: bool,
}

/// Checks and compiles the profile. Syscalls unknown to an architecture are skipped.
pub fn compile(s: &Seccomp) -> Result<Filter, SeccompError> {
    let plan = bpf::plan(s)?;
    let insns = bpf::emit(&plan)?;
    let mut flags = 0;
    for (i, f) in s.flags.iter().enumerate() {
        flags |= match f.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => FLAG_TSYNC,
            "SECCOMP_FILTER_FLAG_LOG" => FLAG_LOG,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => FLAG_SPEC_ALLOW,
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => FLAG_WAIT_KILLABLE_RECV,
            _ => {
                return Err(SeccompError::Invalid {
                    field: format!("linux.seccomp.flags[{i}]"),
                    value: f.clone(),
                })
            }
        };
    }
    let has_path = s.listener_path.as_deref().is_some_and(|p| !p.is_empty());
    if plan.uses_notify && !has_path {
        return Err(SeccompError::NoListener);
    }
    if plan.uses_notify {
        flags |= FLAG_NEW_LISTENER;
    } else if flags & FLAG_WAIT_KILLABLE_RECV != 0 {
        // The kernel only takes this flag together with a listener; without one it means nothing.
        flags &= !FLAG_WAIT_KILLABLE_RECV;
    }
    if let Some(p) = s.listener_path.as_deref().filter(|p| !p.is_empty()) {
        if !Path::new(p).is_absolute() {
            return Err(SeccompError::Invalid {
                field: "linux.seccomp.listenerPath (must be absolute)".into(),
                value: p.into(),
            });
        }
    }
    Ok(Filter {
        insns,
        flags,
        listener: plan.uses_notify,
    })
}

/// Installs the filter on the calling thread; returns the listener when the filter has one.
pub fn install(f: &Filter) -> Result<Option<OwnedFd>, SeccompError> {
    let insns: Vec<libc::sock_filter> = f
        .insns
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: insns.len() as libc::c_ushort,
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `insns`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            f.flags as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(SeccompError::Install(io::Error::last_os_error()));
    }
    if f.flags & FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the kernel returns a fresh descriptor that nobody else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(r as RawFd) }));
    }
    Ok(None)
}

/// Hands the notify descriptor to the seccomp agent listening on `listenerPath`, with the state
/// document the runtime-spec defines (`fds` names the descriptor sent along; `pid` is the filtered
/// process, `state` the container's).
pub fn send_to_listener(
    path: &str,
    metadata: &str,
    pid: i32,
    state: &crate::state::OciState,
    fd: &OwnedFd,
) -> Result<(), SeccompError> {
    let err = |source: io::Error| SeccompError::Listener {
        path: path.into(),
        source,
    };
    let doc = serde_json::json!({
        "ociVersion": crate::spec::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata,
        "state": state,
    });
    let data = serde_json::to_vec(&doc).map_err(|e| err(io::Error::other(e)))?;
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(err)?;
    send_fd(sock.as_raw_fd(), &data, fd.as_raw_fd()).map_err(err)
}

fn send_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let iov = [io::IoSlice::new(data)];
    let fds = [fd];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    let n = nix::sys::socket::sendmsg::<()>(
        sock,
        &iov,
        &cmsg,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )?;
    if n != data.len() {
        return Err(io::Error::other("short write of the seccomp state"));
    }
    Ok(())
}

/// The container-default profile known to containerd and Docker users as `RuntimeDefault`.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../profiles/default.json");

/// Syscalls `RuntimeDefault` also allows when the container holds a capability, by capability.
pub const DEFAULT_PROFILE_CAPS_JSON: &str = include_str!("../profiles/default-caps.json");

/// `RuntimeDefault` as a `linux.seccomp` object, for a container without extra capabilities.
pub fn default_profile() -> Result<Seccomp, serde_json::Error> {
    serde_json::from_str(DEFAULT_PROFILE_JSON)
}

/// `RuntimeDefault` for a container with the given (bounding) capabilities: the syscalls those
/// capabilities are about are allowed unconditionally, e.g. `chroot` with CAP_SYS_CHROOT and
/// namespace-creating `clone` flags, `mount` and `unshare` with CAP_SYS_ADMIN.
pub fn default_profile_for(caps: &[String]) -> Result<Seccomp, serde_json::Error> {
    let mut p = default_profile()?;
    let gated: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(DEFAULT_PROFILE_CAPS_JSON)?;
    let mut names: Vec<String> = Vec::new();
    for cap in caps {
        let full = if cap.to_ascii_uppercase().starts_with("CAP_") {
            cap.to_ascii_uppercase()
        } else {
            format!("CAP_{}", cap.to_ascii_uppercase())
        };
        for n in gated.get(&full).into_iter().flatten() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    if !names.is_empty() {
        // First, so that these win over the default's narrower rules for the same syscall.
        p.syscalls.insert(
            0,
            crate::spec::SeccompSyscall {
                names,
                action: "SCMP_ACT_ALLOW".into(),
                ..Default::default()
            },
        );
    }
    Ok(p)
}

#[cfg(test)]
mod tests;
