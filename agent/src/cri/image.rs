//! The CRI `ImageService` over skiff's image store: pull (with kubelet's credentials and the node's
//! mirrors), list, status, remove, file-system usage.

use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::Daemon;

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
