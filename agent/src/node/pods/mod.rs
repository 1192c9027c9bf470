//! The pods bound to this node, run through the in-process CRI layer: [`watch`] follows them in the
//! API, one [`worker`] per pod drives its sandbox ([`sandbox`]) and containers ([`containers`]) toward
//! the spec and reports [`status`]; [`delete`] ends them gracefully.

pub mod cgroups;
pub mod containers;
pub mod deadline;
pub mod delete;
pub mod env;
pub mod probes;
pub mod pull_secrets;
pub mod sandbox;
pub mod security;
pub mod sidecar;
pub mod status;
pub mod watch;
pub mod worker;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch as chan;

use super::NodeContext;

/// The CRI labels kubelet puts on sandboxes and containers, by which a restarted agent finds them.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// How often every worker looks again without being told: containers exit on their own.
pub const RESYNC: Duration = Duration::from_secs(1);

/// Runs the pods bound to the node until skiffd stops: one worker per pod the API lists, started
/// when it appears and told when it goes; sandboxes of pods the API no longer has are torn down.
pub async fn run(ctx: Arc<NodeContext>, clients: chan::Receiver<kube::Client>) {
    let mut pods = watch::start(clients.clone(), ctx.settings.node_name.clone());
    let mut workers: BTreeMap<String, chan::Sender<Option<Pod>>> = BTreeMap::new();
    loop {
        let snapshot = pods.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            dispatch(&ctx, &clients, &snapshot, &mut workers);
            let known: HashSet<String> = snapshot.keys().cloned().collect();
            delete::orphans(&ctx.daemon, &ctx.settings.root_dir, &known).await;
            if let Some(layout) = cgroup_layout(&ctx) {
                cgroups::sweep(&layout, &known);
            }
        }
        tokio::select! {
            r = pods.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC * 5) => {}
        }
    }
}

/// Where pod cgroups go, unless `cgroupsPerQOS` is off: the CRI layer's driver (the one its
/// containers' cgroups follow) and the configured root.
pub fn cgroup_layout(ctx: &NodeContext) -> Option<cgroups::Layout> {
    ctx.settings.cgroups_per_qos.then(|| cgroups::Layout {
        driver: ctx.daemon.cgroup_driver,
        root: ctx.settings.cgroup_root.clone(),
    })
}

fn dispatch(
    ctx: &Arc<NodeContext>,
    clients: &chan::Receiver<kube::Client>,
    snapshot: &BTreeMap<String, Pod>,
    workers: &mut BTreeMap<String, chan::Sender<Option<Pod>>>,
) {
    workers.retain(|uid, tx| {
        if tx.is_closed() {
            return false;
        }
        if !snapshot.contains_key(uid) {
            let _ = tx.send(None);
        }
        true
    });
    for (uid, pod) in snapshot {
        match workers.get(uid) {
            Some(tx) => {
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref().map(|p| &p.metadata.resource_version)
                        != Some(&pod.metadata.resource_version);
                    if changed {
                        *cur = Some(pod.clone());
                    }
                    changed
                });
            }
            None => {
                let (tx, rx) = chan::channel(Some(pod.clone()));
                tokio::spawn(worker::run(ctx.clone(), clients.clone(), rx));
                workers.insert(uid.clone(), tx);
            }
        }
    }
}
