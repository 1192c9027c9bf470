//! The gRPC surface: each RPC hands its request to the module that owns the object it is about.

use std::pin::Pin;
use std::sync::Arc;

use cri::image_service_server::ImageService;
use cri::runtime_service_server::RuntimeService;
use cri_api::v1 as cri;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::error::full_id;
use super::{container, daemon_status, events, image, sandbox, stats, streaming, Daemon};

/// The tonic service object; cheap to clone.
#[derive(Clone)]
pub struct Cri {
    pub daemon: Arc<Daemon>,
}

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How many items one message of a `Stream*` RPC carries, to stay far below gRPC's message limit.
const CHUNK: usize = 256;

/// A `Stream*` answer from a `List*` answer: the same items, in bounded chunks.
fn chunked<I: Send + 'static, T: Send + 'static>(
    items: Vec<I>,
    wrap: fn(Vec<I>) -> T,
) -> Response<Streamed<T>> {
    let mut items = items.into_iter().peekable();
    let mut msgs = Vec::new();
    while items.peek().is_some() {
        msgs.push(Ok(wrap(items.by_ref().take(CHUNK).collect())));
    }
    Response::new(Box::pin(tokio_stream::iter(msgs)))
}

/// One RPC handed to `$f`. Written out in the form `async_trait` expands to, because that attribute
/// cannot see `async fn`s produced by a macro.
macro_rules! delegate {
    ($name:ident, $req:ty, $resp:ty, $f:path) => {
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            r: Request<$req>,
        ) -> Pin<
            Box<
                dyn std::future::Future<Output = Result<Response<$resp>, Status>>
                    + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async move { $f(&self.daemon, r.into_inner()).await.map(Response::new) })
        }
    };
}

#[tonic::async_trait]
impl RuntimeService for Cri {
    type StreamPodSandboxesStream = Streamed<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = Streamed<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = Streamed<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = Streamed<cri::StreamPodSandboxStatsResponse>;
    type GetContainerEventsStream = Streamed<cri::ContainerEventResponse>;
    type StreamPodSandboxMetricsStream = Streamed<cri::StreamPodSandboxMetricsResponse>;

    delegate!(
        version,
        cri::VersionRequest,
        cri::VersionResponse,
        daemon_status::version
    );
    delegate!(
        status,
        cri::StatusRequest,
        cri::StatusResponse,
        daemon_status::status
    );
    delegate!(
        runtime_config,
        cri::RuntimeConfigRequest,
        cri::RuntimeConfigResponse,
        daemon_status::config
    );
    delegate!(
        update_runtime_config,
        cri::UpdateRuntimeConfigRequest,
        cri::UpdateRuntimeConfigResponse,
        daemon_status::update_config
    );

    delegate!(
        run_pod_sandbox,
        cri::RunPodSandboxRequest,
        cri::RunPodSandboxResponse,
        sandbox::run
    );
    delegate!(
        stop_pod_sandbox,
        cri::StopPodSandboxRequest,
        cri::StopPodSandboxResponse,
        sandbox::stop
    );
    delegate!(
        remove_pod_sandbox,
        cri::RemovePodSandboxRequest,
        cri::RemovePodSandboxResponse,
        sandbox::remove
    );
    delegate!(
        pod_sandbox_status,
        cri::PodSandboxStatusRequest,
        cri::PodSandboxStatusResponse,
        sandbox::status
    );
    delegate!(
        list_pod_sandbox,
        cri::ListPodSandboxRequest,
        cri::ListPodSandboxResponse,
        sandbox::list
    );
    delegate!(
        update_pod_sandbox_resources,
        cri::UpdatePodSandboxResourcesRequest,
        cri::UpdatePodSandboxResourcesResponse,
        sandbox::update_resources
    );

    async fn stream_pod_sandboxes(
        &self,
        r: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let req = cri::ListPodSandboxRequest {
            filter: r.into_inner().filter,
        };
        let items = sandbox::list(&self.daemon, req).await?.items;
        Ok(chunked(items, |pod_sandboxes| {
            cri::StreamPodSandboxesResponse { pod_sandboxes }
        }))
    }

    delegate!(
        create_container,
        cri::CreateContainerRequest,
        cri::CreateContainerResponse,
        container::create
    );
    delegate!(
        start_container,
        cri::StartContainerRequest,
        cri::StartContainerResponse,
        container::start
    );
    delegate!(
        stop_container,
        cri::StopContainerRequest,
        cri::StopContainerResponse,
        container::stop
    );
    delegate!(
        remove_container,
        cri::RemoveContainerRequest,
        cri::RemoveContainerResponse,
        container::remove
    );
    delegate!(
        list_containers,
        cri::ListContainersRequest,
        cri::ListContainersResponse,
        container::list
    );
    delegate!(
        container_status,
        cri::ContainerStatusRequest,
        cri::ContainerStatusResponse,
        container::status
    );
    delegate!(
        update_container_resources,
        cri::UpdateContainerResourcesRequest,
        cri::UpdateContainerResourcesResponse,
        container::update_resources
    );
    delegate!(
        reopen_container_log,
        cri::ReopenContainerLogRequest,
        cri::ReopenContainerLogResponse,
        container::reopen_log
    );
    delegate!(
        exec_sync,
        cri::ExecSyncRequest,
        cri::ExecSyncResponse,
        container::exec_sync
    );

    async fn stream_containers(
        &self,
        r: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let req = cri::ListContainersRequest {
            filter: r.into_inner().filter,
        };
        let items = container::list(&self.daemon, req).await?.containers;
        Ok(chunked(items, |containers| cri::StreamContainersResponse {
            containers,
        }))
    }

    // The streaming handlers take full ids; crictl users type the prefixes `crictl ps` shows.
    async fn exec(
        &self,
        r: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        let mut r = r.into_inner();
        r.container_id = full_id(&self.daemon.containers, "container", &r.container_id)?;
        streaming::exec(&self.daemon, r).await.map(Response::new)
    }

    async fn attach(
        &self,
        r: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        let mut r = r.into_inner();
        r.container_id = full_id(&self.daemon.containers, "container", &r.container_id)?;
        streaming::attach(&self.daemon, r).await.map(Response::new)
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let mut r = r.into_inner();
        r.pod_sandbox_id = full_id(&self.daemon.sandboxes, "pod sandbox", &r.pod_sandbox_id)?;
        streaming::port_forward(&self.daemon, r)
            .await
            .map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "skiff does not checkpoint containers",
        ))
    }

    delegate!(
        container_stats,
        cri::ContainerStatsRequest,
        cri::ContainerStatsResponse,
        stats::container
    );
    delegate!(
        list_container_stats,
        cri::ListContainerStatsRequest,
        cri::ListContainerStatsResponse,
        stats::list_containers
    );
    delegate!(
        pod_sandbox_stats,
        cri::PodSandboxStatsRequest,
        cri::PodSandboxStatsResponse,
        stats::sandbox
    );
    delegate!(
        list_pod_sandbox_stats,
        cri::ListPodSandboxStatsRequest,
        cri::ListPodSandboxStatsResponse,
        stats::list_sandboxes
    );
    delegate!(
        list_metric_descriptors,
        cri::ListMetricDescriptorsRequest,
        cri::ListMetricDescriptorsResponse,
        stats::metric_descriptors
    );
    delegate!(
        list_pod_sandbox_metrics,
        cri::ListPodSandboxMetricsRequest,
        cri::ListPodSandboxMetricsResponse,
        stats::sandbox_metrics
    );

    async fn stream_container_stats(
        &self,
        r: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let req = cri::ListContainerStatsRequest {
            filter: r.into_inner().filter,
        };
        let items = stats::list_containers(&self.daemon, req).await?.stats;
        Ok(chunked(items, |container_stats| {
            cri::StreamContainerStatsResponse { container_stats }
        }))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        r: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let req = cri::ListPodSandboxStatsRequest {
            filter: r.into_inner().filter,
        };
        let items = stats::list_sandboxes(&self.daemon, req).await?.stats;
        Ok(chunked(items, |pod_sandbox_stats| {
            cri::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        }))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _r: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = stats::sandbox_metrics(&self.daemon, cri::ListPodSandboxMetricsRequest {})
            .await?
            .pod_metrics;
        Ok(chunked(items, |pod_sandbox_metrics| {
            cri::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        }))
    }

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(events::subscribe(&self.daemon)))
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    type StreamImagesStream = Streamed<cri::StreamImagesResponse>;

    delegate!(
        list_images,
        cri::ListImagesRequest,
        cri::ListImagesResponse,
        image::list
    );
    delegate!(
        image_status,
        cri::ImageStatusRequest,
        cri::ImageStatusResponse,
        image::status
    );
    delegate!(
        pull_image,
        cri::PullImageRequest,
        cri::PullImageResponse,
        image::pull
    );
    delegate!(
        remove_image,
        cri::RemoveImageRequest,
        cri::RemoveImageResponse,
        image::remove
    );
    delegate!(
        image_fs_info,
        cri::ImageFsInfoRequest,
        cri::ImageFsInfoResponse,
        image::fs_info
    );

    async fn stream_images(
        &self,
        r: Request<cri::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let req = cri::ListImagesRequest {
            filter: r.into_inner().filter,
        };
        let items = image::list(&self.daemon, req).await?.images;
        Ok(chunked(items, |images| cri::StreamImagesResponse {
            images,
        }))
    }
}
