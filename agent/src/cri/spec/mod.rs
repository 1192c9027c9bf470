//! A CRI container (its config, its pod, its image) as an OCI runtime spec, built the way
//! Kubernetes' other runtimes build it: the image's defaults under the config's overrides, the pod's
//! namespaces and files, and the security context turned into capabilities, seccomp and mounts.

pub mod enums;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod resources;
pub mod security;
pub mod user;

use std::collections::BTreeMap;
use std::path::PathBuf;

use cri_api::v1 as cri;
use skiff_runtime::spec::{Linux, Root, Spec};
use tonic::Status;

use super::error::{invalid, truncate};
use super::pod::SandboxRecord;

/// Everything the spec is made from.
pub struct SpecInput<'a> {
    /// For what the spec depends on beyond this container: the cgroup driver, other containers (a
    /// TARGET PID namespace), the configuration.
    pub daemon: &'a super::Daemon,
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a SandboxRecord,
    /// The image's run defaults (Entrypoint, Cmd, Env, User, WorkingDir, ...).
    pub image: &'a skiff_runtime::image::rootfs::RunConfig,
    /// The container's root file system, already mounted (overlay over the image's layers).
    pub rootfs: PathBuf,
}

impl SpecInput<'_> {
    fn security(&self) -> Option<&cri::LinuxContainerSecurityContext> {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
    }

    fn privileged(&self) -> bool {
        self.security().is_some_and(|s| s.privileged)
    }

    fn readonly_rootfs(&self) -> bool {
        self.security().is_some_and(|s| s.readonly_rootfs)
    }

    fn resources(&self) -> Option<&cri::LinuxContainerResources> {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
    }
}

/// Builds the container's OCI spec; bad input is `InvalidArgument` naming the field.
pub fn build(input: &SpecInput) -> Result<Spec, Status> {
    enums::check_container(input.config)?;
    if !input.rootfs.is_absolute() {
        return Err(Status::internal(format!(
            "rootfs {} is not absolute",
            input.rootfs.display()
        )));
    }
    let mut process = process::build(input)?;
    let caps = security::capabilities(input)?;
    let seccomp = security::seccomp(input, &caps.bounding)?;
    process.capabilities = Some(caps);
    let (devices, device_rules) = security::devices(input)?;
    let mut res = resources::from_cri(input.resources())?;
    res.devices = device_rules;
    let mounts = mounts::build(input)?;
    let (masked, readonly) = security::paths(input);
    // Joining the pod's user namespace by path; the maps tell the runtime who the container's root is.
    let userns = input
        .sandbox
        .userns
        .as_ref()
        .and_then(|_| super::pod::userns::of_config(&input.sandbox.config));
    let linux = Linux {
        uid_mappings: userns.map(|u| vec![u.uid]).unwrap_or_default(),
        gid_mappings: userns.map(|u| vec![u.gid]).unwrap_or_default(),
        sysctl: sysctls(input.sandbox),
        resources: Some(res),
        cgroups_path: Some(
            input
                .daemon
                .cgroup_driver
                .cgroups_path(&input.sandbox.cgroup_parent, input.id),
        ),
        namespaces: namespaces::build(input)?,
        devices,
        seccomp,
        rootfs_propagation: mounts::rootfs_propagation(input.config),
        masked_paths: masked,
        readonly_paths: readonly,
        ..Default::default()
    };
    Ok(Spec {
        oci_version: skiff_runtime::spec::OCI_VERSION.into(),
        root: Some(Root {
            path: input.rootfs.to_string_lossy().into_owned(),
            readonly: input.readonly_rootfs(),
        }),
        mounts,
        process: Some(process),
        annotations: annotations(input),
        linux: Some(linux),
        ..Default::default()
    })
}

/// The config's annotations plus the keys by which tools recognise a CRI container.
fn annotations(input: &SpecInput) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let md = input.sandbox.config.metadata.clone().unwrap_or_default();
    let image = input
        .config
        .image
        .as_ref()
        .map(|i| {
            if i.user_specified_image.is_empty() {
                i.image.clone()
            } else {
                i.user_specified_image.clone()
            }
        })
        .unwrap_or_default();
    let name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    for (k, v) in [
        ("container-type", "container".to_string()),
        ("sandbox-id", input.sandbox.id.clone()),
        ("container-name", name),
        ("image-name", image),
        ("sandbox-name", md.name),
        ("sandbox-namespace", md.namespace),
        ("sandbox-uid", md.uid),
    ] {
        a.insert(format!("io.kubernetes.cri.{k}"), v);
    }
    a
}

/// The pod's sysctls that live in a namespace the container shares with the pod: network ones when
/// the pod has its own network namespace, IPC ones when it has its own IPC namespace.
fn sysctls(sb: &SandboxRecord) -> BTreeMap<String, String> {
    let all = sb
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone())
        .unwrap_or_default();
    all.into_iter()
        .filter(|(k, _)| {
            let ipc = k.starts_with("kernel.shm")
                || k.starts_with("kernel.msg")
                || k == "kernel.sem"
                || k.starts_with("fs.mqueue.");
            (k.starts_with("net.") && sb.netns.is_some()) || (ipc && sb.ipcns.is_some())
        })
        .collect()
}

/// `field value: why`, with the value truncated, as every validation error reads.
pub(crate) fn bad(field: &str, value: &str, why: &str) -> Status {
    invalid(format!("{field} {:?}: {why}", truncate(value)))
}

#[cfg(test)]
mod tests;
