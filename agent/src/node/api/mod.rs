//! The kubelet API: HTTPS on `address:port` (10250 by default), what the API server's
//! `nodes/<name>/proxy`, `kubectl exec/attach/port-forward/logs` and metrics collectors call.
//!
//! Every request goes through the same chain, as kubelet's does:
//! 1. TLS with the node's serving certificate ([`tls`]; signed by the cluster with
//!    `serverTLSBootstrap`, [`serving`]); a client certificate, if one is offered,
//!    must chain to `authentication.x509.clientCAFile`, or the handshake fails;
//! 2. authentication ([`authn`]): that certificate, else a bearer token checked by a TokenReview,
//!    else anonymous if enabled — otherwise 401;
//! 3. authorization ([`authz`]): a SubjectAccessReview for `nodes/<subresource>` of this node, the
//!    subresource taken from the path as kubelet maps it — 403 when denied;
//! 4. the endpoint ([`routes`]), or 404.
//!
//! The endpoints, by [`routes::Endpoint`]:
//!
//! | path                                          | methods    | served by        |
//! |-----------------------------------------------|------------|------------------|
//! | `/healthz`, `/healthz/ping`, `/healthz/syncloop` | GET     | [`health`]       |
//! | `/pods`, `/pods/`                             | GET        | [`pods`]         |
//! | `/runningpods/`                               | GET        | [`pods`]         |
//! | `/configz`                                    | GET        | [`configz`]      |
//! | `/exec/{ns}/{pod}[/{uid}]/{container}`        | GET, POST  | [`streaming`]    |
//! | `/attach/{ns}/{pod}[/{uid}]/{container}`      | GET, POST  | [`streaming`]    |
//! | `/portForward/{ns}/{pod}[/{uid}]`             | GET, POST  | [`streaming`]    |
//! | `/containerLogs/{ns}/{pod}/{container}`       | GET        | [`container_logs`] |
//! | `/stats/summary`                              | GET        | [`stats`]        |
//! | `/metrics/resource`, `/metrics/cadvisor`, `/metrics` | GET | [`stats`]        |
//! | `/spec/`                                      | GET        | [`spec`]         |
//!
//! A new endpoint group is a module here with an `Endpoint` variant, a line in
//! [`routes::route`] and one in [`routes::serve`]; its authorization follows from its path
//! ([`authz::attributes`]).

pub mod authn;
pub mod authz;
pub mod cache;
pub mod configz;
pub mod container_logs;
pub mod context;
pub mod health;
pub mod lookup;
pub mod pods;
pub mod reply;
pub mod routes;
pub mod server;
pub mod serving;
pub mod spec;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::config::{duration_or, KubeletConfiguration};

/// How the API authorizes requests (`authorization.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzMode {
    /// Every authenticated request is allowed.
    AlwaysAllow,
    /// A SubjectAccessReview decides; answers are kept for these times.
    Webhook {
        allowed_ttl: Duration,
        denied_ttl: Duration,
    },
}

/// The kubelet API's settings, from the configuration file.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub addr: SocketAddr,
    /// A certificate and key given in the file (`tlsCertFile`, `tlsPrivateKeyFile`).
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Ask the cluster to sign the serving certificate (`serverTLSBootstrap`).
    pub server_tls_bootstrap: bool,
    pub client_ca_file: Option<PathBuf>,
    pub anonymous: bool,
    /// Bearer tokens are checked with a TokenReview; answers kept this long.
    pub token_webhook: Option<Duration>,
    pub authz: AuthzMode,
    /// What `/configz` answers under `kubeletconfig`.
    pub configz: serde_json::Value,
}

impl ApiSettings {
    pub fn new(c: &KubeletConfiguration) -> Result<ApiSettings, String> {
        let ip: IpAddr = c
            .address
            .parse()
            .map_err(|_| format!("address {:?} is not an IP", c.address))?;
        let tls_files = match (&c.tls_cert_file, &c.tls_private_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("tlsCertFile and tlsPrivateKeyFile go together".into()),
        };
        let a = &c.authentication;
        let token_webhook = a
            .webhook
            .enabled
            .unwrap_or(true)
            .then(|| duration_or(&a.webhook.cache_ttl, Duration::from_secs(120)))
            .transpose()
            .map_err(|e| format!("authentication.webhook.cacheTTL: {e}"))?;
        Ok(ApiSettings {
            addr: SocketAddr::new(ip, c.port),
            tls_files,
            server_tls_bootstrap: c.server_tls_bootstrap,
            client_ca_file: a.x509.client_ca_file.clone(),
            anonymous: a.anonymous.enabled.unwrap_or(false),
            token_webhook,
            authz: authz_mode(c)?,
            configz: configz::document(c),
        })
    }
}

fn authz_mode(c: &KubeletConfiguration) -> Result<AuthzMode, String> {
    let w = &c.authorization.webhook;
    match c.authorization.mode.as_deref().unwrap_or("Webhook") {
        "AlwaysAllow" => Ok(AuthzMode::AlwaysAllow),
        "Webhook" => Ok(AuthzMode::Webhook {
            allowed_ttl: duration_or(&w.cache_authorized_ttl, Duration::from_secs(300))
                .map_err(|e| format!("authorization.webhook.cacheAuthorizedTTL: {e}"))?,
            denied_ttl: duration_or(&w.cache_unauthorized_ttl, Duration::from_secs(30))
                .map_err(|e| format!("authorization.webhook.cacheUnauthorizedTTL: {e}"))?,
        }),
        other => Err(format!(
            "authorization.mode {other:?}: skiffd knows AlwaysAllow and Webhook"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn settings_follow_kubelets_defaults() {
        let c = KubeletConfiguration::parse(
            Path::new("c"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
        )
        .unwrap();
        let s = ApiSettings::new(&c).unwrap();
        assert_eq!(s.addr, "0.0.0.0:10250".parse().unwrap());
        assert!(!s.anonymous);
        assert_eq!(s.token_webhook, Some(Duration::from_secs(120)));
        assert_eq!(
            s.authz,
            AuthzMode::Webhook {
                allowed_ttl: Duration::from_secs(300),
                denied_ttl: Duration::from_secs(30)
            }
        );
        let c = KubeletConfiguration::parse(
            Path::new("c"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             address: 127.0.0.1\nport: 20250\nauthentication: {anonymous: {enabled: true}, \
             webhook: {enabled: false}}\nauthorization: {mode: AlwaysAllow}\n",
        )
        .unwrap();
        let s = ApiSettings::new(&c).unwrap();
        assert_eq!(s.addr, "127.0.0.1:20250".parse().unwrap());
        assert!(s.anonymous && s.token_webhook.is_none());
        assert_eq!(s.authz, AuthzMode::AlwaysAllow);
        let bad = KubeletConfiguration::parse(
            Path::new("c"),
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             authorization: {mode: Magic}\n",
        )
        .unwrap();
        assert!(ApiSettings::new(&bad).unwrap_err().contains("Magic"));
    }
}
