//! The pods bound to this node, run through the in-process CRI layer: [`watch`] follows them in the
//! API, one [`worker`] per pod drives its sandbox ([`sandbox`]) and containers ([`containers`]) toward
//! the spec and reports [`status`]; [`delete`] ends them gracefully. [`probes`] and [`hooks`]
//! run their [`actions`] and record the kubelet's events ([`crate::node::events`]).

pub mod actions;
pub mod cgroups;
pub mod containers;
pub mod deadline;
pub mod delete;
pub mod dns;
pub mod env;
pub mod eviction;
pub mod hooks;
pub mod hosts;
pub mod mirror;
pub mod probes;
pub mod pull_secrets;
pub mod sandbox;
pub mod security;
pub mod sidecar;
pub mod static_pods;
pub mod status;
pub mod target;
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

/// Runs the node's pods until skiffd stops: one worker per pod, those the API binds to the node
/// (`pods`, followed by [`watch::start`]) and the static pods of `staticPodPath`, started when it
/// appears and told when it goes. Static pods run before the API has answered; once it has,
/// sandboxes and cgroups of pods no longer wanted are torn down and the static pods' mirrors kept
/// in line.
pub async fn run(
    ctx: Arc<NodeContext>,
    clients: chan::Receiver<kube::Client>,
    mut pods: chan::Receiver<watch::Snapshot>,
) {
    let node = ctx.settings.node_name.clone();
    let mut statics = static_pods::start(ctx.settings.static_pod_path.clone(), node.clone());
    let mut workers: BTreeMap<String, chan::Sender<Option<Pod>>> = BTreeMap::new();
    let shared = Arc::new(Shared {
        actions: Actions::new(ctx.daemon.clone()),
        events: Recorder::start(clients.clone(), ctx.settings.node_name.clone()),
    });
    loop {
        let api = pods.borrow_and_update().clone();
        let files = statics.borrow_and_update().clone();
        let (mirrors, mut wanted): (Vec<Pod>, BTreeMap<String, Pod>) = match &api {
            Some(api) => {
                let (m, other): (BTreeMap<_, _>, BTreeMap<_, _>) = api
                    .clone()
                    .into_iter()
                    .partition(|(_, p)| mirror::is_mirror(p));
                (m.into_values().collect(), other)
            }
            None => (Vec::new(), BTreeMap::new()),
        };
        wanted.extend(mirror::with_status(&files, &mirrors));
        dispatch(&ctx, &shared, &clients, &wanted, &mut workers);
        if api.is_some() {
            let known: HashSet<String> = wanted.keys().cloned().collect();
            delete::orphans(&ctx.daemon, &ctx.settings, &known).await;
            if let Some(layout) = cgroup_layout(&ctx) {
                cgroups::sweep(&layout, &known);
            }
            let client = clients.borrow().clone();
            mirror::sync(&client, &node, &files, &mirrors).await;
        }
        tokio::select! {
            r = pods.changed() => if r.is_err() { return },
            r = statics.changed() => if r.is_err() { return },
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
