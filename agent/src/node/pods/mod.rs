//! The pods bound to this node, run through the in-process CRI layer: [`watch`] follows them in the
//! API, one [`worker`] per pod drives its sandbox ([`sandbox`]) and containers ([`containers`]) toward
//! the spec and reports [`status`]; [`delete`] ends them gracefully. [`probes`] and [`hooks`]
//! run their [`actions`] and record the kubelet's events ([`crate::node::events`]).

pub mod actions;
pub mod containers;
pub mod delete;
pub mod env;
pub mod hooks;
pub mod probes;
pub mod sandbox;
pub mod security;
pub mod status;
pub mod watch;
pub mod worker;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch as chan;

use super::events::Recorder;
use super::NodeContext;
use actions::Actions;

/// What every pod worker shares: the runner of probe and hook actions, the event recorder.
pub struct Shared {
    pub actions: Actions,
    pub events: Recorder,
}

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
    let shared = Arc::new(Shared {
        actions: Actions::new(ctx.daemon.clone()),
        events: Recorder::start(clients.clone(), ctx.settings.node_name.clone()),
    });
    loop {
        let snapshot = pods.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            dispatch(&ctx, &shared, &clients, &snapshot, &mut workers);
            let known: HashSet<String> = snapshot.keys().cloned().collect();
            delete::orphans(&ctx.daemon, &ctx.settings.root_dir, &known).await;
        }
        tokio::select! {
            r = pods.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC * 5) => {}
        }
    }
}

fn dispatch(
    ctx: &Arc<NodeContext>,
    shared: &Arc<Shared>,
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
                tokio::spawn(worker::run(
                    ctx.clone(),
                    shared.clone(),
                    clients.clone(),
                    rx,
                ));
                workers.insert(uid.clone(), tx);
            }
        }
    }
}
