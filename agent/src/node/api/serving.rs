//! `serverTLSBootstrap`: the serving certificate signed by the cluster (signer
//! `kubernetes.io/kubelet-serving`, approved by an administrator or an approver), kept in the
//! certificate directory as `kubelet-server-<date>.pem` and `kubelet-server-current.pem`, and
//! renewed at 70–90 % of its life like the client certificate.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::tls::{self, Serving};
use crate::node::bootstrap::{self, Backoff};
use crate::node::pki::{self, CertDir};

/// What the certificate is for.
pub struct Subject {
    pub node: String,
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Keeps `serving` supplied for as long as skiffd runs.
pub async fn run(
    serving: Arc<Serving>,
    clients: watch::Receiver<kube::Client>,
    cert_dir: PathBuf,
    subject: Subject,
) {
    let certs = CertDir::serving(&cert_dir);
    loop {
        let deadline = match install(&serving, &certs) {
            Some(d) => d,
            None => SystemTime::now(),
        };
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = Backoff::default();
        loop {
            let client = clients.borrow().clone();
            let asked = async {
                let req = pki::serving_request(&subject.node, &subject.names, &subject.ips)?;
                bootstrap::request_signed(
                    client,
                    req,
                    pki::SERVING_SIGNER,
                    pki::SERVING_USAGES,
                    &certs,
                )
                .await
            };
            match asked.await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "serving certificate request failed; retrying");
                    backoff.wait().await;
                }
            }
        }
    }
}

/// Serves the current certificate if it is valid; when to renew it.
fn install(serving: &Serving, certs: &CertDir) -> Option<SystemTime> {
    let pem = certs.valid_current(SystemTime::now())?;
    let current = certs.current();
    let (not_before, not_after) = pki::validity(&current.display().to_string(), &pem).ok()?;
    match tls::load(&current, &current) {
        Ok(key) => serving.set(key),
        Err(e) => {
            tracing::warn!(error = %e, "the signed serving certificate");
            return None;
        }
    }
    tracing::info!(file = %current.display(), "serving the cluster-signed certificate");
    Some(pki::rotation_deadline(not_before, not_after, pki::jitter()))
}
