//! A CRI container (its config, its pod, its image) as an OCI runtime spec.

use std::path::PathBuf;

use cri_api::v1 as cri;
use skiff_runtime::spec::Spec;
use tonic::Status;

use super::sandbox::SandboxRecord;

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

/// Builds the container's OCI spec; bad input is `InvalidArgument` naming the field.
pub fn build(_input: &SpecInput) -> Result<Spec, Status> {
    Err(Status::unimplemented("container spec"))
}
