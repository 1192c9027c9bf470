//! The pods bound to this node as the API has them: listed, then watched from the list's
//! resourceVersion, listed again whenever the watch ends or fails.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use tokio::sync::watch as chan;

/// Pods by uid; `None` until the first list has answered.
pub type Snapshot = Option<BTreeMap<String, Pod>>;

/// Starts following the pods whose `spec.nodeName` is `node`.
pub fn start(clients: chan::Receiver<kube::Client>, node: String) -> chan::Receiver<Snapshot> {
    let (tx, rx) = chan::channel(None);
    tokio::spawn(async move {
        loop {
            let client = clients.borrow().clone();
            if let Err(e) = follow(client, &node, &tx).await {
                tracing::warn!(error = %e, "watch pods bound to the node; listing again");
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    rx
}

fn uid(p: &Pod) -> Option<String> {
    p.metadata.uid.clone()
}

async fn follow(client: kube::Client, node: &str, tx: &chan::Sender<Snapshot>) -> kube::Result<()> {
    let api: Api<Pod> = Api::all(client);
    let field = format!("spec.nodeName={node}");
    let list = api.list(&ListParams::default().fields(&field)).await?;
    let mut pods: BTreeMap<String, Pod> = list
        .items
        .into_iter()
        .filter_map(|p| Some((uid(&p)?, p)))
        .collect();
    let version = list.metadata.resource_version.unwrap_or_default();
    tx.send_replace(Some(pods.clone()));
    let params = WatchParams::default().fields(&field).timeout(290);
    let mut events = api.watch(&params, &version).await?.boxed();
    while let Some(ev) = events.next().await {
        match ev? {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                if let Some(u) = uid(&p) {
                    pods.insert(u, p);
                }
            }
            WatchEvent::Deleted(p) => {
                if let Some(u) = uid(&p) {
                    pods.remove(&u);
                }
            }
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => return Err(kube::Error::Api(e)),
        }
        tx.send_replace(Some(pods.clone()));
    }
    Ok(())
}
