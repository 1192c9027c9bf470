//! The CRI `ImageService` over skiff's image store: pull (with kubelet's credentials and the node's
//! mirrors), list, status, remove, file-system usage.

use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::Daemon;
use skiff_runtime::image::rootfs::RunConfig;
use skiff_runtime::image::store::ImageRecord;

/// A pulled image, as containers are made from it.
pub struct ResolvedImage {
    pub record: ImageRecord,
    /// The image's run defaults.
    pub run: RunConfig,
    /// The image id: its config digest, `sha256:...`.
    pub id: String,
}

/// Finds a pulled image by any name kubelet may use for it: the name it was pulled as, an image id
/// (`sha256:...` or its hex prefix), or a repo digest. `NotFound` when it is not present.
pub fn resolve(_d: &Daemon, image: &str) -> Result<ResolvedImage, Status> {
    Err(super::error::not_found("image", image))
}

pub async fn list(
    _d: &Arc<Daemon>,
    _r: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse, Status> {
    Err(Status::unimplemented("ListImages"))
}

pub async fn status(
    _d: &Arc<Daemon>,
    _r: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse, Status> {
    Err(Status::unimplemented("ImageStatus"))
}

pub async fn pull(
    _d: &Arc<Daemon>,
    _r: cri::PullImageRequest,
) -> Result<cri::PullImageResponse, Status> {
    Err(Status::unimplemented("PullImage"))
}

pub async fn remove(
    _d: &Arc<Daemon>,
    _r: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, Status> {
    Err(Status::unimplemented("RemoveImage"))
}

pub async fn fs_info(
    _d: &Arc<Daemon>,
    _r: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse, Status> {
    Err(Status::unimplemented("ImageFsInfo"))
}
