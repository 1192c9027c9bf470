//! The last steps before a container process runs user code: identity, capabilities, no_new_privs,
//! LSM labels and the seccomp filter.

pub mod caps;
pub mod idmap;
pub mod lsm;
pub mod rootless;
pub mod seccomp;

use std::io;
use std::os::fd::OwnedFd;

use crate::spec::{Process, Seccomp};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("process.user.{field}: {}", crate::spec::UNCHANGED_ID_REASON)]
    UnchangedId { field: String },
}

pub(crate) fn sys(r: libc::c_int, what: impl Into<String>) -> Result<(), SecurityError> {
    if r < 0 {
        return Err(SecurityError::Sys {
            what: what.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// What `apply` leaves for the moment right before `execve`.
#[derive(Debug, Default)]
pub struct Applied {
    /// The seccomp filter, to install as the very last step.
    pub filter: Option<seccomp::Filter>,
    /// The user-notification descriptor of a filter already installed, for `listenerPath`.
    pub listener: Option<OwnedFd>,
}

/// LSM labels, identity and capabilities; compiles the seccomp profile and decides when it goes in.
///
/// Installing a filter needs no_new_privs or CAP_SYS_ADMIN. With either at exec time the filter waits
/// until right before `execve`, so that it never sees the runtime's own syscalls; otherwise it must go in
/// before the uid change and capability drop take CAP_SYS_ADMIN away. A filter with a listener goes in
/// now, while the runtime can still pass its descriptor on.
pub fn apply(p: &Process, profile: Option<&Seccomp>) -> Result<Applied, SecurityError> {
    lsm::apply(p.apparmor_profile.as_deref(), p.selinux_label.as_deref())?;
    let filter = profile.map(seccomp::compile).transpose()?;
    let late = p.no_new_privileges || keeps_sys_admin(p);
    let mut out = Applied::default();
    if let Some(f) = filter.as_ref().filter(|_| !late) {
        out.listener = seccomp::install(f)?;
    }
    apply_identity(p)?;
    match filter {
        Some(f) if late && f.listener => out.listener = seccomp::install(&f)?,
        Some(f) if late => out.filter = Some(f),
        _ => {}
    }
    Ok(out)
}

/// Whether the process will still hold CAP_SYS_ADMIN in its effective set after `apply_identity`.
fn keeps_sys_admin(p: &Process) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    match &p.capabilities {
        Some(c) => caps::CapSets::from_spec(c).effective.has(CAP_SYS_ADMIN),
        None => p.user.uid == 0,
    }
}

/// The last step before `execve`.
pub fn install_last(filter: Option<&seccomp::Filter>) -> Result<(), SecurityError> {
    if let Some(f) = filter {
        seccomp::install(f)?;
    }
    Ok(())
}

/// Switches to the process's user and applies its capabilities, in the order the kernel needs: the
/// bounding set shrinks while we still hold CAP_SETPCAP, capabilities survive the uid change through
/// keep-caps, then the final sets are installed.
pub fn apply_identity(p: &Process) -> Result<(), SecurityError> {
    let wanted = p.capabilities.as_ref().map(caps::CapSets::from_spec);
    if let Some(w) = &wanted {
        caps::drop_bounding(&w.bounding)?;
    }
    sys(
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
        "keep capabilities",
    )?;
    set_user(p)?;
    sys(
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) },
        "clear keep-caps",
    )?;
    if let Some(w) = &wanted {
        caps::set(w)?;
    }
    if p.no_new_privileges {
        sys(
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "set no_new_privs",
        )?;
    }
    Ok(())
}

fn set_user(p: &Process) -> Result<(), SecurityError> {
    let u = &p.user;
    // Checked again here, the last step before the ids change, for every path that leads here.
    if let Some(field) = crate::spec::unchanged_id_field(u) {
        return Err(SecurityError::UnchangedId { field });
    }
    let groups: Vec<libc::gid_t> = u.additional_gids.clone();
    // setgroups is refused in a user namespace whose setgroups file says deny; only try when asked.
    if !groups.is_empty() || !in_restricted_userns() {
        // SAFETY: groups points at len valid gids.
        let r = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        if r < 0 && !groups.is_empty() {
            sys(r, format!("setgroups {groups:?}"))?;
        }
    }
    sys(
        // SAFETY: setresgid/setresuid take ids by value.
        unsafe { libc::setresgid(u.gid, u.gid, u.gid) },
        format!("setgid {}", u.gid),
    )?;
    sys(
        // SAFETY: as above.
        unsafe { libc::setresuid(u.uid, u.uid, u.uid) },
        format!("setuid {}", u.uid),
    )?;
    Ok(())
}

fn in_restricted_userns() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "deny")
        .unwrap_or(false)
}
