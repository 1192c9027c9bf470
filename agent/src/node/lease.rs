//! The node's heartbeat: its Lease in `kube-node-lease`, renewed every quarter of its duration,
//! which the node lifecycle controller watches to tell a live node from a lost one.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

pub const NAMESPACE: &str = "kube-node-lease";
/// A failed renewal is retried soon: the lease must not lapse for one lost request.
const RETRY: Duration = Duration::from_millis(500);

pub struct Holder {
    pub node: String,
    pub node_uid: String,
    pub duration_seconds: u32,
}

pub async fn run(holder: Holder, clients: watch::Receiver<kube::Client>) {
    let every = Duration::from_secs(u64::from(holder.duration_seconds)) / 4;
    loop {
        let client = clients.borrow().clone();
        match renew(&holder, client).await {
            Ok(()) => tokio::time::sleep(every).await,
            Err(e) => {
                tracing::warn!(error = %e, "renew the node lease");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn renew(h: &Holder, client: kube::Client) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(h.node.clone()),
        lease_duration_seconds: Some(h.duration_seconds as i32),
        renew_time: Some(MicroTime(Utc::now())),
        ..Default::default()
    };
    match api.get_opt(&h.node).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&h.node, &PostParams::default(), &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(h.node.clone()),
                    namespace: Some(NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: h.node.clone(),
                        uid: h.node_uid.clone(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await?;
            tracing::info!(node = %h.node, "node lease created");
        }
    }
    Ok(())
}
