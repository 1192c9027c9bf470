//! The enum fields of a request, checked against the values the CRI defines: protobuf carries
//! enums as plain integers, so a value no version of the API has must be refused, not read as
//! whatever the code compares it with (an unknown `supplemental_groups_policy` is not `Strict`,
//! so it would silently mean `Merge`).

use cri_api::v1 as cri;
use tonic::Status;

use super::bad;

/// A known value of enum `E`, or an error naming the field and the value.
fn known<E: TryFrom<i32>>(field: &str, v: i32) -> Result<E, Status> {
    E::try_from(v).map_err(|_| bad(field, &v.to_string(), "unknown value"))
}

fn profile(field: &str, p: Option<&cri::SecurityProfile>) -> Result<(), Status> {
    match p {
        Some(p) => known::<cri::security_profile::ProfileType>(field, p.profile_type).map(|_| ()),
        None => Ok(()),
    }
}

fn namespaces(ns: Option<&cri::NamespaceOption>) -> Result<(), Status> {
    let Some(ns) = ns else { return Ok(()) };
    known::<cri::NamespaceMode>("namespace_options.network", ns.network)?;
    known::<cri::NamespaceMode>("namespace_options.pid", ns.pid)?;
    known::<cri::NamespaceMode>("namespace_options.ipc", ns.ipc)?;
    if let Some(u) = &ns.userns_options {
        known::<cri::NamespaceMode>("namespace_options.userns_options.mode", u.mode)?;
    }
    Ok(())
}

/// The enums a container's and a pod's security contexts share.
fn security(
    supplemental_groups_policy: i32,
    ns: Option<&cri::NamespaceOption>,
    seccomp: Option<&cri::SecurityProfile>,
    apparmor: Option<&cri::SecurityProfile>,
) -> Result<(), Status> {
    known::<cri::SupplementalGroupsPolicy>(
        "supplemental_groups_policy",
        supplemental_groups_policy,
    )?;
    namespaces(ns)?;
    profile("seccomp.profile_type", seccomp)?;
    profile("apparmor.profile_type", apparmor)
}

/// Every enum a container config carries.
pub fn check_container(config: &cri::ContainerConfig) -> Result<(), Status> {
    known::<cri::Signal>("stop_signal", config.stop_signal)?;
    for m in &config.mounts {
        known::<cri::MountPropagation>("mounts.propagation", m.propagation)?;
    }
    match config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        Some(sc) => security(
            sc.supplemental_groups_policy,
            sc.namespace_options.as_ref(),
            sc.seccomp.as_ref(),
            sc.apparmor.as_ref(),
        ),
        None => Ok(()),
    }
}

/// Every enum a pod's security context carries (its namespace modes are checked where they are
/// read).
pub fn check_sandbox(config: &cri::PodSandboxConfig) -> Result<(), Status> {
    match config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        Some(sc) => security(
            sc.supplemental_groups_policy,
            sc.namespace_options.as_ref(),
            sc.seccomp.as_ref(),
            sc.apparmor.as_ref(),
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_are_refused_by_name() {
        let mut c = cri::ContainerConfig::default();
        assert!(check_container(&c).is_ok());
        c.stop_signal = 999;
        assert!(check_container(&c)
            .unwrap_err()
            .message()
            .contains("stop_signal"));
        c.stop_signal = 0;
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                supplemental_groups_policy: 9,
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = check_container(&c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("supplemental_groups_policy \"9\""),
            "{e:?}"
        );
        let mut p = cri::PodSandboxConfig::default();
        assert!(check_sandbox(&p).is_ok());
        p.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                apparmor: Some(cri::SecurityProfile {
                    profile_type: 7,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(check_sandbox(&p)
            .unwrap_err()
            .message()
            .contains("apparmor"));
    }
}
