//! The container's `securityContext` (over the pod's) as the CRI takes it.

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::sandbox;

pub fn container(spec: &PodSpec, c: &Container) -> cri::LinuxContainerSecurityContext {
    let pod = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let user = sc.run_as_user.or(pod.run_as_user);
    let group = sc.run_as_group.or(pod.run_as_group);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let names = |v: Option<Vec<String>>| {
        v.unwrap_or_default()
            .into_iter()
            .map(|c| c.to_uppercase())
            .collect::<Vec<_>>()
    };
    let mut groups = pod.supplemental_groups.clone().unwrap_or_default();
    groups.extend(pod.fs_group);
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: names(caps.add),
            drop_capabilities: names(caps.drop),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(sandbox::namespaces(spec)),
        run_as_user: user.map(|value| cri::Int64Value { value }),
        run_as_group: group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: groups,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        ..Default::default()
    }
}
