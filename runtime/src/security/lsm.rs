//! `process.apparmorProfile` and `process.selinuxLabel`: applied at the next `execve` when the host runs
//! that LSM; on a host without it the setting is accepted with a warning (`skiff features` says which
//! are enabled).

use std::path::Path;

use super::SecurityError;

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false)
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Asks the kernel to switch to the given AppArmor profile (or SELinux label) at exec.
pub fn apply(apparmor: Option<&str>, selinux: Option<&str>) -> Result<(), SecurityError> {
    if let Some(profile) = apparmor.filter(|p| !p.is_empty()) {
        if apparmor_enabled() {
            let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
                "/proc/self/attr/apparmor/exec"
            } else {
                "/proc/self/attr/exec"
            };
            write_attr(attr, &format!("exec {profile}"), "process.apparmorProfile")?;
        } else {
            tracing::warn!("process.apparmorProfile {profile:?}: AppArmor is not enabled on this host; ignored");
        }
    }
    if let Some(label) = selinux.filter(|l| !l.is_empty()) {
        if selinux_enabled() {
            write_attr("/proc/self/attr/exec", label, "process.selinuxLabel")?;
        } else {
            tracing::warn!(
                "process.selinuxLabel {label:?}: SELinux is not enabled on this host; ignored"
            );
        }
    }
    Ok(())
}

fn write_attr(path: &str, value: &str, field: &str) -> Result<(), SecurityError> {
    std::fs::write(path, value).map_err(|source| SecurityError::Sys {
        what: format!("{field} {value:?} ({path})"),
        source,
    })
}
