//! Resource usage from cgroups: container and pod stats, and the metrics kubelet can list.

use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::Daemon;

pub async fn container(
    _d: &Arc<Daemon>,
    _r: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    Err(Status::unimplemented("ContainerStats"))
}

pub async fn list_containers(
    _d: &Arc<Daemon>,
    _r: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, Status> {
    Err(Status::unimplemented("ListContainerStats"))
}

pub async fn sandbox(
    _d: &Arc<Daemon>,
    _r: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    Err(Status::unimplemented("PodSandboxStats"))
}

pub async fn list_sandboxes(
    _d: &Arc<Daemon>,
    _r: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    Err(Status::unimplemented("ListPodSandboxStats"))
}

pub async fn metric_descriptors(
    _d: &Arc<Daemon>,
    _r: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, Status> {
    Ok(cri::ListMetricDescriptorsResponse::default())
}

pub async fn sandbox_metrics(
    _d: &Arc<Daemon>,
    _r: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    Ok(cri::ListPodSandboxMetricsResponse::default())
}
