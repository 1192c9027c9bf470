//! skiffd's routes in the main table: one per other node's pod CIDR via its InternalIP (host-gw),
//! and an `unreachable` route per pod CIDR of this node's own, under the routes to its pods (a host
//! route per pod, or the bridge's subnet), so that an address of the range no pod holds is answered
//! as unreachable instead of following the default route out of the node. skiffd's routes carry
//! their own metric, by which a restarted skiffd tells them from everyone else's.

use skiff_cni::ipnet::IpNet;
use skiff_cni::netlink::route::{self, RouteSpec};
use skiff_cni::netlink::{NlError, Socket};

use super::peers::Route;

/// The metric of skiffd's routes.
pub const METRIC: u32 = 2627;

fn via(r: &Route) -> RouteSpec {
    RouteSpec {
        dst: r.dst.network(),
        gw: Some(r.gw),
        oif: None,
        priority: Some(METRIC),
        table: None,
        scope: None,
        unreachable: false,
    }
}

fn unreachable(cidr: &IpNet) -> RouteSpec {
    RouteSpec {
        dst: cidr.network(),
        gw: None,
        oif: None,
        priority: Some(METRIC),
        table: None,
        scope: None,
        unreachable: true,
    }
}

/// Adds the routes to other nodes (`want`) and the unreachable routes over this node's `own` pod
/// CIDRs, and removes skiffd's others; returns the routes that could not be added, one sentence
/// each.
pub fn sync(want: &[Route], own: &[IpNet]) -> Result<Vec<String>, NlError> {
    let mut s = Socket::route()?;
    let ours: Vec<RouteSpec> = route::list(&mut s)?
        .into_iter()
        .filter(|r| r.priority == Some(METRIC) && (r.gw.is_some() || r.unreachable))
        .collect();
    let wanted: Vec<(String, RouteSpec)> = want
        .iter()
        .map(|r| {
            let what = format!(
                "the route to node {}'s pod CIDR {} via {}",
                r.node, r.dst, r.gw
            );
            (what, via(r))
        })
        .chain(own.iter().map(|c| {
            let what = format!("the unreachable route over this node's pod CIDR {c}");
            (what, unreachable(c))
        }))
        .collect();
    for old in ours
        .iter()
        .filter(|o| !wanted.iter().any(|(_, w)| same(w, o)))
    {
        match route::delete(&mut s, &spec_of(old)) {
            Ok(()) => tracing::info!(dst = %old.dst, "removed a route skiffd no longer keeps"),
            Err(e) => tracing::warn!(dst = %old.dst, error = %e, "remove a stale route"),
        }
    }
    let mut problems = Vec::new();
    for (what, w) in &wanted {
        if ours.iter().any(|o| same(w, o)) {
            continue;
        }
        match route::add(&mut s, w) {
            Ok(()) => tracing::info!(dst = %w.dst, gw = ?w.gw, "route added"),
            Err(e) => problems.push(format!("{what} cannot be added: {e}")),
        }
    }
    Ok(problems)
}

fn same(a: &RouteSpec, b: &RouteSpec) -> bool {
    a.dst.network() == b.dst.network() && a.gw == b.gw && a.unreachable == b.unreachable
}

/// A listed route as a request that deletes exactly it.
fn spec_of(r: &RouteSpec) -> RouteSpec {
    RouteSpec {
        scope: None,
        ..r.clone()
    }
}
