//! `GetContainerEvents`: what kubelet's evented PLEG listens to. Every lifecycle change of a container
//! is published with the pod's and its containers' statuses at that moment.

use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1 as cri;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::{container, sandbox, Daemon};

/// Events a slow subscriber may fall behind by before it misses some.
const BACKLOG: usize = 1024;

pub struct Events {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishes `kind` for `container_id` (a container, or a sandbox for sandbox events).
pub fn emit(d: &Daemon, container_id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
    if d.events.tx.receiver_count() == 0 {
        return;
    }
    let pod_sandbox_status = d
        .sandboxes
        .get(sandbox_id)
        .map(|sb| sandbox::sandbox_status(d, &sb));
    let containers_statuses = d
        .containers
        .list()
        .iter()
        .filter(|c| c.sandbox_id == sandbox_id)
        .map(|c| container::container_status(d, c))
        .collect();
    let _ = d.events.tx.send(cri::ContainerEventResponse {
        container_id: container_id.into(),
        container_event_type: kind as i32,
        created_at: crate::now_ns(),
        pod_sandbox_status,
        containers_statuses,
    });
}

pub fn subscribe(
    d: &Arc<Daemon>,
) -> Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>> {
    let rx = tokio_stream::wrappers::BroadcastStream::new(d.events.tx.subscribe());
    Box::pin(rx.filter_map(|e| match e {
        Ok(ev) => Some(Ok(ev)),
        Err(lagged) => {
            tracing::warn!("event subscriber fell behind: {lagged}");
            None
        }
    }))
}
