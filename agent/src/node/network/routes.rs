//! The host-gw routes in the main table: one per other node's pod CIDR via its InternalIP. skiffd's
//! routes carry their own metric, by which a restarted skiffd tells them from everyone else's.

use skiff_cni::netlink::route::{self, RouteSpec};
use skiff_cni::netlink::{NlError, Socket};

use super::peers::Route;

/// The metric of skiffd's routes.
pub const METRIC: u32 = 2627;

fn spec(r: &Route) -> RouteSpec {
    RouteSpec {
        dst: r.dst.network(),
        gw: Some(r.gw),
        oif: None,
        priority: Some(METRIC),
        table: None,
        scope: None,
    }
}

/// Adds the routes `want` has and removes skiffd's others; returns the routes that could not be
/// added, one sentence each.
pub fn sync(want: &[Route]) -> Result<Vec<String>, NlError> {
    let mut s = Socket::route()?;
    let ours: Vec<RouteSpec> = route::list(&mut s)?
        .into_iter()
        .filter(|r| r.priority == Some(METRIC) && r.gw.is_some())
        .collect();
    let wanted: Vec<RouteSpec> = want.iter().map(spec).collect();
    for old in ours.iter().filter(|o| !wanted.iter().any(|w| same(w, o))) {
        match route::delete(&mut s, &spec_of(old)) {
            Ok(()) => tracing::info!(dst = %old.dst, "removed the route to a node that is gone"),
            Err(e) => tracing::warn!(dst = %old.dst, error = %e, "remove a stale route"),
        }
    }
    let mut problems = Vec::new();
    for (r, w) in want.iter().zip(&wanted) {
        if ours.iter().any(|o| same(w, o)) {
            continue;
        }
        match route::add(&mut s, w) {
            Ok(()) => tracing::info!(node = %r.node, dst = %r.dst, gw = %r.gw, "route added"),
            Err(e) => problems.push(format!(
                "the route to node {}'s pod CIDR {} via {} cannot be added: {e}",
                r.node, r.dst, r.gw
            )),
        }
    }
    Ok(problems)
}

fn same(a: &RouteSpec, b: &RouteSpec) -> bool {
    a.dst.network() == b.dst.network() && a.gw == b.gw
}

/// A listed route as a request that deletes exactly it.
fn spec_of(r: &RouteSpec) -> RouteSpec {
    RouteSpec {
        scope: None,
        ..r.clone()
    }
}
