//! A CRI container (its config, its pod, its image) as an OCI runtime spec.

use std::path::PathBuf;

use cri_api::v1 as cri;
use skiff_runtime::spec::Spec;
use tonic::Status;

use super::sandbox::SandboxRecord;

/// Everything the spec is made from.
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a SandboxRecord,
    /// The image's run defaults (`config` object of the image config: Entrypoint, Cmd, Env, User,
    /// WorkingDir, ...), as JSON.
    pub image_config: &'a serde_json::Value,
    /// The container's root file system, already mounted (overlay over the image's layers).
    pub rootfs: PathBuf,
}

/// Builds the container's OCI spec; bad input is `InvalidArgument` naming the field.
pub fn build(_input: &SpecInput) -> Result<Spec, Status> {
    Err(Status::unimplemented("container spec"))
}
