//! `GetContainerEvents`: what kubelet's evented PLEG listens to. Every lifecycle change of a container
//! is published with the pod's and its containers' statuses at that moment (taken by
//! [`Daemon::emit`], which knows both; this module only carries them).

use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1 as cri;
use tokio::sync::broadcast;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::Daemon;

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

impl Events {
    /// Whether anyone listens: a status snapshot is only worth taking then.
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn publish(&self, event: cri::ContainerEventResponse) {
        let _ = self.tx.send(event);
    }
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
