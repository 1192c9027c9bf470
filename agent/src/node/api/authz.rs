//! What a user may do: a SubjectAccessReview for `nodes/<subresource>` of this node, the
//! subresource taken from the path as kubelet maps it, the verb from the method. `/pods`,
//! `/runningpods/`, `/healthz` and `/configz` have their own subresource and fall back to
//! `nodes/proxy` when it is denied; everything without one of its own is `nodes/proxy`.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::authn::User;
use super::cache::TtlCache;
use super::AuthzMode;

/// What one access check asks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The API verb of an HTTP method, as kubelet maps them (others have none, and are denied).
pub fn verb(m: &Method) -> &'static str {
    match *m {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// The checks for a request, in order: any allowing it lets it through.
pub fn attributes(method: &Method, path: &str) -> Vec<Attributes> {
    let verb = verb(method);
    let one = |subresource| Attributes { verb, subresource };
    let own = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/spec", "spec"),
        ("/checkpoint", "checkpoint"),
    ];
    if let Some((_, sub)) = own.iter().find(|(p, _)| under(path, p)) {
        return vec![one(sub)];
    }
    let with_fallback = [
        ("/pods", "pods"),
        ("/runningpods", "pods"),
        ("/healthz", "healthz"),
        ("/configz", "configz"),
    ];
    match with_fallback.iter().find(|(p, _)| under(path, p)) {
        Some((_, sub)) => vec![one(sub), one("proxy")],
        None => vec![one("proxy")],
    }
}

/// Why a request was refused, as kubelet words it.
pub fn forbidden_message(user: &User, a: &Attributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
        user.name, a.verb, a.subresource
    )
}

type Key = (String, String, Vec<String>, Attributes);

pub struct Authorizer {
    mode: AuthzMode,
    node: String,
    clients: watch::Receiver<kube::Client>,
    decided: TtlCache<Key, bool>,
}

impl Authorizer {
    pub fn new(mode: AuthzMode, node: String, clients: watch::Receiver<kube::Client>) -> Self {
        Authorizer {
            mode,
            node,
            clients,
            decided: TtlCache::default(),
        }
    }

    /// `Ok(())` when one of `checks` is allowed; else the last check, denied.
    pub async fn authorize(&self, user: &User, checks: Vec<Attributes>) -> Result<(), Attributes> {
        let AuthzMode::Webhook {
            allowed_ttl,
            denied_ttl,
        } = self.mode
        else {
            return Ok(());
        };
        let mut last = None;
        for a in checks {
            if !a.verb.is_empty() && self.allowed(user, &a, allowed_ttl, denied_ttl).await {
                return Ok(());
            }
            last = Some(a);
        }
        Err(last.unwrap_or(Attributes {
            verb: "",
            subresource: "proxy",
        }))
    }

    async fn allowed(&self, user: &User, a: &Attributes, yes: Duration, no: Duration) -> bool {
        let key = (
            user.name.clone(),
            user.uid.clone(),
            user.groups.clone(),
            a.clone(),
        );
        let client = self.clients.borrow().clone();
        let ask = review(client, user, &self.node, a);
        decide(&self.decided, key, (yes, no), ask).await
    }
}

/// The decision kept for `key`, else `ask`'s, kept for `ttl.0` when allowed and `ttl.1` when
/// denied (kubelet's cacheAuthorizedTTL and cacheUnauthorizedTTL): a permission revoked in the
/// cluster still holds here until its allowance expires. A review that failed is a denial not kept.
async fn decide<F>(cache: &TtlCache<Key, bool>, key: Key, ttl: (Duration, Duration), ask: F) -> bool
where
    F: std::future::Future<Output = kube::Result<bool>>,
{
    if let Some(d) = cache.get(&key) {
        return d;
    }
    match ask.await {
        Ok(d) => {
            cache.put(key, d, if d { ttl.0 } else { ttl.1 });
            d
        }
        Err(e) => {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            false
        }
    }
}

async fn review(
    client: kube::Client,
    user: &User,
    node: &str,
    a: &Attributes,
) -> kube::Result<bool> {
    let api: Api<SubjectAccessReview> = Api::all(client);
    let asked = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                version: Some("v1".into()),
                resource: Some("nodes".into()),
                subresource: Some(a.subresource.into()),
                name: Some(node.into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = api.create(&PostParams::default(), &asked).await?;
    Ok(answer
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(m: Method, p: &str) -> Vec<(&'static str, &'static str)> {
        attributes(&m, p)
            .into_iter()
            .map(|a| (a.verb, a.subresource))
            .collect()
    }

    #[test]
    fn paths_map_as_kubelets_do() {
        assert_eq!(subs(Method::GET, "/stats/summary"), [("get", "stats")]);
        assert_eq!(subs(Method::GET, "/stats"), [("get", "stats")]);
        assert_eq!(subs(Method::GET, "/statsfoo"), [("get", "proxy")]);
        assert_eq!(subs(Method::GET, "/metrics/cadvisor"), [("get", "metrics")]);
        assert_eq!(subs(Method::GET, "/logs/"), [("get", "log")]);
        assert_eq!(
            subs(Method::GET, "/pods"),
            [("get", "pods"), ("get", "proxy")]
        );
        assert_eq!(
            subs(Method::GET, "/runningpods/"),
            [("get", "pods"), ("get", "proxy")]
        );
        assert_eq!(
            subs(Method::GET, "/configz"),
            [("get", "configz"), ("get", "proxy")]
        );
        assert_eq!(subs(Method::POST, "/exec/ns/pod/c"), [("create", "proxy")]);
        assert_eq!(
            subs(Method::GET, "/containerLogs/ns/pod/c"),
            [("get", "proxy")]
        );
        assert_eq!(subs(Method::HEAD, "/healthz")[0], ("", "healthz"));
    }

    /// A permission revoked in the cluster is refused once its allowance expires, and one granted
    /// again is allowed once the denial expires; until then the cached answer stands.
    #[tokio::test]
    async fn decisions_are_kept_for_kubelets_ttls() {
        let t = crate::node::api::cache::test_clock::Manual::default();
        let cache = TtlCache::with_clock(t.clock());
        let key: Key = (
            "system:serviceaccount:a:b".into(),
            String::new(),
            vec!["system:authenticated".into()],
            Attributes {
                verb: "create",
                subresource: "proxy",
            },
        );
        let ttl = (Duration::from_secs(300), Duration::from_secs(30));
        let granted = || std::future::ready(Ok(true));
        let revoked = || std::future::ready(Ok(false));
        let decide = |ask| decide(&cache, key.clone(), ttl, ask);
        assert!(decide(granted()).await);
        t.advance(Duration::from_secs(299));
        assert!(decide(revoked()).await, "the allowance holds for 300 s");
        t.advance(Duration::from_secs(1));
        assert!(
            !decide(revoked()).await,
            "refused once the allowance expired"
        );
        t.advance(Duration::from_secs(29));
        assert!(!decide(granted()).await, "the denial holds for 30 s");
        t.advance(Duration::from_secs(1));
        assert!(decide(granted()).await, "allowed once the denial expired");
        let failed = std::future::ready(Err(kube::Error::LinesCodecMaxLineLengthExceeded));
        let other = (key.0.clone(), key.1.clone(), vec![], key.3.clone());
        assert!(!super::decide(&cache, other.clone(), ttl, failed).await);
        assert!(
            super::decide(&cache, other, ttl, granted()).await,
            "a failure is not kept"
        );
    }
}
