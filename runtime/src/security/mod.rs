//! The last steps before a container process runs user code: identity, capabilities, no_new_privs.

pub mod caps;

use std::io;

use crate::spec::Process;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{what}: {source}")]
    Sys { what: String, source: io::Error },
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

/// Switches to the process's user and applies its capabilities, in the order the kernel needs: the
/// bounding set shrinks while we still hold CAP_SETPCAP, capabilities survive the uid change through
/// keep-caps, then the final sets are installed.
pub fn apply_identity(p: &Process) -> Result<(), SecurityError> {
    let wanted = p.capabilities.as_ref().map(caps::CapSets::from_spec);
    if let Some(w) = &wanted {
        caps::drop_bounding(&w.bounding)?;
    }
    // SAFETY: prctl with integer arguments only.
    sys(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
        "keep capabilities",
    )?;
    set_user(p)?;
    // SAFETY: prctl with integer arguments only.
    sys(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) },
        "clear keep-caps",
    )?;
    if let Some(w) = &wanted {
        caps::set(w)?;
    }
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments only.
        sys(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "set no_new_privs",
        )?;
    }
    Ok(())
}

fn set_user(p: &Process) -> Result<(), SecurityError> {
    let u = &p.user;
    let groups: Vec<libc::gid_t> = u.additional_gids.clone();
    // setgroups is refused in a user namespace whose setgroups file says deny; only try when asked.
    if !groups.is_empty() || !in_restricted_userns() {
        // SAFETY: groups points at len valid gids.
        let r = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        if r < 0 && !groups.is_empty() {
            sys(r, format!("setgroups {groups:?}"))?;
        }
    }
    // SAFETY: setresgid/setresuid take ids by value.
    sys(
        unsafe { libc::setresgid(u.gid, u.gid, u.gid) },
        format!("setgid {}", u.gid),
    )?;
    // SAFETY: as above.
    sys(
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
