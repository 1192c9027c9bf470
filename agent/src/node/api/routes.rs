//! The kubelet API's routing table: a path to an [`Endpoint`], an endpoint to its handler. The
//! request has been authenticated and authorized by then ([`super::server`]).

use http::{Method, Request};
use hyper::body::Incoming;

use super::context::Api;
use super::reply::{self, Reply};
use super::streaming::{self, Kind};
use super::{configz, container_logs, health, pods, spec, stats};

/// What a path names; the path segments after the endpoint's own go with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/healthz`, `/healthz/<check>`
    Healthz,
    /// `/pods`
    Pods,
    /// `/runningpods/`
    RunningPods,
    /// `/configz`
    Configz,
    /// `/exec/…`, `/attach/…`, `/portForward/…`
    Stream(Kind),
    /// `/containerLogs/{ns}/{pod}/{container}`
    ContainerLogs,
    /// `/stats/summary`
    StatsSummary,
    /// `/metrics/resource`
    MetricsResource,
    /// `/metrics/cadvisor`
    MetricsCadvisor,
    /// `/metrics`
    Metrics,
    /// `/spec/`
    Spec,
}

impl Endpoint {
    /// The methods it answers; others get 405.
    fn allows(self, m: &Method) -> bool {
        match self {
            Endpoint::Stream(_) => m == Method::GET || m == Method::POST,
            _ => m == Method::GET || m == Method::HEAD,
        }
    }
}

/// The endpoint of `path` and the segments after its name, or `None` (404).
pub fn route(path: &str) -> Option<(Endpoint, Vec<&str>)> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (first, rest) = segs.split_first()?;
    let rest = rest.to_vec();
    let bare = rest.iter().all(|s| s.is_empty()) && rest.len() <= 1;
    let e = match *first {
        "healthz" => Endpoint::Healthz,
        "pods" if bare => Endpoint::Pods,
        "runningpods" if bare => Endpoint::RunningPods,
        "configz" if rest.is_empty() => Endpoint::Configz,
        "exec" => Endpoint::Stream(Kind::Exec),
        "attach" => Endpoint::Stream(Kind::Attach),
        "portForward" => Endpoint::Stream(Kind::PortForward),
        "containerLogs" => Endpoint::ContainerLogs,
        "stats" if rest == ["summary"] => Endpoint::StatsSummary,
        "metrics" if rest == ["resource"] => Endpoint::MetricsResource,
        "metrics" if rest == ["cadvisor"] => Endpoint::MetricsCadvisor,
        "metrics" if rest.is_empty() => Endpoint::Metrics,
        "spec" if bare => Endpoint::Spec,
        _ => return None,
    };
    Some((e, rest))
}

/// Answers an authorized request.
pub async fn serve(api: &Api, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let Some((endpoint, rest)) = route(&path) else {
        return reply::not_found();
    };
    if !endpoint.allows(req.method()) {
        return reply::method_not_allowed();
    }
    match endpoint {
        Endpoint::Healthz => health::serve(&path),
        Endpoint::Pods => pods::bound(&api.pods),
        Endpoint::RunningPods => pods::running(&api.ctx.daemon),
        Endpoint::Configz => configz::serve(&api.ctx.settings.api.configz),
        Endpoint::Stream(kind) => streaming::serve(&api.ctx.daemon, kind, &rest, req),
        Endpoint::ContainerLogs => container_logs::serve(api, &rest, req.uri().query()).await,
        Endpoint::StatsSummary => stats::summary(api).await,
        Endpoint::MetricsResource => stats::resource(api).await,
        Endpoint::MetricsCadvisor => stats::cadvisor(api).await,
        Endpoint::Metrics => stats::agent(api).await,
        Endpoint::Spec => spec::serve(&api.ctx.machine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_as_kubelets_do() {
        assert_eq!(route("/pods").unwrap().0, Endpoint::Pods);
        assert_eq!(route("/pods/").unwrap().0, Endpoint::Pods);
        assert!(route("/pods/x").is_none());
        assert_eq!(route("/runningpods/").unwrap().0, Endpoint::RunningPods);
        assert_eq!(route("/healthz/ping").unwrap().0, Endpoint::Healthz);
        assert_eq!(route("/configz").unwrap().0, Endpoint::Configz);
        let (e, rest) = route("/exec/ns/pod/c").unwrap();
        assert_eq!(e, Endpoint::Stream(Kind::Exec));
        assert_eq!(rest, ["ns", "pod", "c"]);
        assert_eq!(
            route("/portForward/ns/pod").unwrap().0,
            Endpoint::Stream(Kind::PortForward)
        );
        assert!(route("/portforward/ns/pod").is_none());
        let (e, rest) = route("/containerLogs/ns/pod/c").unwrap();
        assert_eq!(e, Endpoint::ContainerLogs);
        assert_eq!(rest, ["ns", "pod", "c"]);
        assert_eq!(route("/stats/summary").unwrap().0, Endpoint::StatsSummary);
        assert_eq!(
            route("/metrics/resource").unwrap().0,
            Endpoint::MetricsResource
        );
        assert_eq!(
            route("/metrics/cadvisor").unwrap().0,
            Endpoint::MetricsCadvisor
        );
        assert_eq!(route("/metrics").unwrap().0, Endpoint::Metrics);
        assert!(route("/metrics/nothing").is_none());
        assert_eq!(route("/spec/").unwrap().0, Endpoint::Spec);
        assert_eq!(route("/spec").unwrap().0, Endpoint::Spec);
        assert!(route("/").is_none());
        assert!(route("/nothing").is_none());
    }
}
