//! The pod network of a node that has no network add-on: skiff-bridge over the pod CIDRs the
//! control plane allocates ([`conflist`]), one route per other node's pod CIDR ([`peers`],
//! [`routes`]), masquerade of what leaves the cluster ([`masq`]) and the kernel settings all of it
//! needs ([`kernel`]). An add-on's config in the CNI conf dir takes over: skiffd then removes its
//! own config, routes and rules. What it finds is reported as node conditions ([`Report`]).

pub mod conflist;
pub mod fastpath;
pub mod kernel;
pub mod local;
pub mod masq;
pub mod peers;
pub mod routes;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use skiff_cni::ipnet::IpNet;
use skiff_cni::plugin::config::Mode;
use tokio::sync::watch;

use super::status::Check;
use super::NodeContext;

/// How often the Nodes and the CNI conf dir are looked at again.
const PERIOD: Duration = Duration::from_secs(2);

/// The state of this node's own pod network.
#[derive(Debug, Clone, PartialEq)]
pub enum Own {
    /// Not looked at yet.
    Starting,
    WaitingForPodCidr,
    Managed(Vec<IpNet>),
    AddOn(PathBuf),
    Refused {
        reason: &'static str,
        message: String,
    },
}

/// What the node's conditions say about its network.
#[derive(Debug, Clone)]
pub struct Report {
    pub own: Own,
    /// What works only in part, one sentence each: the kernel's settings, other nodes.
    pub problems: Vec<String>,
}

impl Report {
    /// `NetworkUnavailable` for the node's own network, `NetworkDegraded` for the rest.
    pub fn checks(&self) -> Vec<Check> {
        let mut out = Vec::new();
        let unavailable = |status, reason, message| Check {
            type_: "NetworkUnavailable",
            status,
            reason,
            message,
        };
        match &self.own {
            Own::Starting => {}
            Own::WaitingForPodCidr => out.push(unavailable(true, "NoPodCIDR", waiting())),
            Own::Managed(c) => out.push(unavailable(
                false,
                "SkiffBridgeConfigured",
                format!("skiff-bridge serves the pod CIDRs {}", list(c)),
            )),
            Own::AddOn(f) => out.push(unavailable(
                false,
                "NetworkAddOnConfigured",
                format!("the CNI config {} configures the pod network", f.display()),
            )),
            Own::Refused { reason, message } => {
                out.push(unavailable(true, reason, message.clone()))
            }
        }
        out.push(if self.problems.is_empty() {
            Check {
                type_: "NetworkDegraded",
                status: false,
                reason: "NetworkComplete",
                message: "kernel settings and routes to every node are in place".into(),
            }
        } else {
            Check {
                type_: "NetworkDegraded",
                status: true,
                reason: "NetworkProblems",
                message: self.problems.join("; "),
            }
        });
        out
    }

    /// Why the node is not ready, where the network is the cause.
    pub fn not_ready_note(&self) -> Option<String> {
        match &self.own {
            Own::WaitingForPodCidr => Some(waiting()),
            Own::Refused { message, .. } => Some(message.clone()),
            _ => None,
        }
    }
}

fn waiting() -> String {
    "the node has no spec.podCIDR yet: skiff-bridge is configured once the control plane \
     allocates one (kube-controller-manager --allocate-node-cidrs)"
        .into()
}

fn list(c: &[IpNet]) -> String {
    c.iter()
        .map(IpNet::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The latest [`Report`], shared with the status loop.
#[derive(Debug)]
pub struct Health {
    kernel: Mutex<Vec<String>>,
    report: Mutex<Report>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            kernel: Mutex::new(Vec::new()),
            report: Mutex::new(Report {
                own: Own::Starting,
                problems: Vec::new(),
            }),
        }
    }
}

impl Health {
    pub fn report(&self) -> Report {
        let mut r = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let kernel = self.kernel.lock().unwrap_or_else(|p| p.into_inner());
        r.problems.splice(0..0, kernel.iter().cloned());
        r
    }

    pub fn set_kernel(&self, problems: Vec<String>) {
        *self.kernel.lock().unwrap_or_else(|p| p.into_inner()) = problems;
    }

    fn set(&self, r: Report) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }
}

/// Keeps the node's pod network in line with the Nodes the API lists, for as long as skiffd runs.
pub async fn run(ctx: Arc<NodeContext>, clients: watch::Receiver<kube::Client>) {
    let mut plane = Some(Dataplane::default());
    loop {
        let api: Api<Node> = Api::all(clients.borrow().clone());
        match api.list(&ListParams::default()).await {
            Ok(nodes) => {
                let mut p = plane.take().unwrap_or_default();
                let c = ctx.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let r = p.reconcile(&c, &nodes.items);
                    (p, r)
                })
                .await;
                if let Ok((p, r)) = done {
                    ctx.network.set(r);
                    plane = Some(p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "list the nodes for the pod network"),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// What skiffd has put in place, so that unchanged rules are not rewritten.
#[derive(Default)]
struct Dataplane {
    masq: Option<(Vec<IpNet>, Vec<IpNet>)>,
    /// Routes and rules of a previous run are gone, or in use.
    settled: bool,
    /// The problems last reported, logged once each.
    problems: Vec<String>,
    uplinks: fastpath::Uplinks,
    /// Whether the fast path was last wanted (None: not decided since skiffd started).
    fast_path: Option<bool>,
}

impl Dataplane {
    fn reconcile(&mut self, ctx: &NodeContext, nodes: &[Node]) -> Report {
        let conf_dir = &ctx.daemon.config.cni.conf_dir;
        if let Some(file) = conflist::foreign(conf_dir) {
            self.stand_down(conf_dir, &file);
            return Report {
                own: Own::AddOn(file),
                problems: Vec::new(),
            };
        }
        let plan = peers::plan(&ctx.settings.node_name, nodes);
        let mut problems = plan.problems.clone();
        let own = self.own_network(ctx, &plan, &mut problems);
        let managed = match &own {
            Own::Managed(c) => c.as_slice(),
            _ => &[],
        };
        match routes::sync(&plan.routes, managed) {
            Ok(p) => problems.extend(p),
            Err(e) => problems.push(format!("cannot change the pod network's routes: {e}")),
        }
        self.settled = true;
        if problems != self.problems {
            for p in problems.iter().filter(|p| !self.problems.contains(p)) {
                tracing::warn!("pod network: {p}");
            }
            self.problems = problems.clone();
        }
        Report { own, problems }
    }

    fn own_network(
        &mut self,
        ctx: &NodeContext,
        plan: &peers::Plan,
        problems: &mut Vec<String>,
    ) -> Own {
        let conf_dir = &ctx.daemon.config.cni.conf_dir;
        let own = match &plan.own {
            Err(e) => Own::Refused {
                reason: "InvalidPodCIDR",
                message: e.clone(),
            },
            Ok(c) if c.is_empty() => Own::WaitingForPodCidr,
            Ok(c) => self.configure(ctx, c),
        };
        if matches!(own, Own::Refused { .. }) && conflist::remove(conf_dir) {
            tracing::warn!("removed skiffd's CNI config: {:?}", own);
        }
        if let Own::Managed(c) = &own {
            problems.extend(self.fast_path_uplinks(ctx, c));
            let want = (c.clone(), plan.cluster.clone());
            if self.masq.as_ref() != Some(&want) {
                match masq::sync(c, &plan.cluster) {
                    Ok(()) => self.masq = Some(want),
                    Err(e) => problems.push(format!("cannot set the masquerade rules: {e}")),
                }
            }
        }
        own
    }

    /// skiff-bridge's config for `cidrs`, unless they overlap the node's own networks.
    fn configure(&mut self, ctx: &NodeContext, cidrs: &[IpNet]) -> Own {
        let nets = match local::networks() {
            Ok(n) => n,
            Err(e) => {
                return Own::Refused {
                    reason: "NodeNetworkUnknown",
                    message: format!("cannot list the node's addresses: {e}"),
                }
            }
        };
        if let Some(message) = local::overlap(cidrs, &nets) {
            return Own::Refused {
                reason: "PodCIDROverlapsNodeNetwork",
                message,
            };
        }
        let dir = &ctx.daemon.config.cni.conf_dir;
        let ipam = ctx.daemon.config.state_dir.join("cni-ipam");
        let mode = ctx.daemon.config.cni.pod_network;
        let fast = self.fast_path_wanted(ctx);
        match conflist::write(dir, &conflist::render(cidrs, &ipam, mode, fast)) {
            Ok(true) => tracing::info!(pod_cidrs = %list(cidrs), "wrote skiff-bridge's CNI config"),
            Ok(false) => {}
            Err(e) => {
                return Own::Refused {
                    reason: "CNIConfigNotWritten",
                    message: format!("cannot write {}: {e}", dir.join(conflist::FILE).display()),
                }
            }
        }
        Own::Managed(cidrs.to_vec())
    }

    /// Whether skiff-bridge's pods and the node's uplinks get the fast path: routed pods, asked for,
    /// and a kernel that runs it.
    fn fast_path_wanted(&mut self, ctx: &NodeContext) -> bool {
        let cni = &ctx.daemon.config.cni;
        cni.fast_path && cni.pod_network == Mode::Routed && self.uplinks.available()
    }

    /// The fast path's program on the node's uplinks, or off them when it is not wanted (once).
    fn fast_path_uplinks(&mut self, ctx: &NodeContext, cidrs: &[IpNet]) -> Vec<String> {
        let want = self.fast_path_wanted(ctx);
        let was = self.fast_path.replace(want);
        if want {
            return self.uplinks.sync(cidrs);
        }
        if was != Some(false) {
            self.uplinks.clear();
        }
        Vec::new()
    }

    /// An add-on's config is there: skiffd's config, routes and rules go.
    fn stand_down(&mut self, conf_dir: &Path, file: &Path) {
        if conflist::remove(conf_dir) {
            tracing::info!(config = %file.display(), "a network add-on's CNI config is there: removed skiffd's own");
        }
        if self.settled && self.masq.is_none() {
            return;
        }
        if let Err(e) = routes::sync(&[], &[]) {
            tracing::warn!(error = %e, "remove skiffd's routes");
        }
        if let Err(e) = masq::clear() {
            tracing::warn!(error = %e, "remove skiffd's masquerade rules");
        }
        self.uplinks.clear();
        self.fast_path = None;
        self.masq = None;
        self.settled = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_why() {
        let r = Report {
            own: Own::WaitingForPodCidr,
            problems: vec!["node b has no InternalIP: no route to its pod CIDR 10.0.0.0/24".into()],
        };
        let c = r.checks();
        assert_eq!(c[0].type_, "NetworkUnavailable");
        assert!(c[0].status);
        assert_eq!(c[0].reason, "NoPodCIDR");
        assert!(r.not_ready_note().unwrap().contains("spec.podCIDR"));
        assert_eq!(c[1].type_, "NetworkDegraded");
        assert!(c[1].status);
        assert!(c[1].message.contains("node b has no InternalIP"));
        let ok = Report {
            own: Own::Managed(vec!["10.244.1.0/24".parse().unwrap()]),
            problems: Vec::new(),
        };
        assert!(!ok.checks()[0].status);
        assert!(!ok.checks()[1].status);
        assert_eq!(ok.not_ready_note(), None);
        let starting = Report {
            own: Own::Starting,
            problems: Vec::new(),
        };
        assert_eq!(starting.checks().len(), 1);
    }
}
