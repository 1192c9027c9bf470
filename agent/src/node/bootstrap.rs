//! The node's API credentials: kubelet's TLS bootstrap (a CSR made with the bootstrap token,
//! approved and signed by the controller-manager) and the rotation of the client certificate
//! before it expires.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use tokio::sync::watch;

use super::kubeconfig::{self, Loaded};
use super::pki::{self, CertDir};

/// How long a CSR may wait for approval and signing before a new one is made (kubelet's 15 min).
const CSR_WAIT: Duration = Duration::from_secs(15 * 60);
/// Retries after a failure start at 1 s and double up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Paths {
    /// The node's kubeconfig (`--kubeconfig`), written here after a bootstrap.
    pub kubeconfig: PathBuf,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub cert_dir: PathBuf,
}

/// What start-up found: the node's credentials, or what is needed to get them.
pub enum Start {
    Ready(Identity),
    Bootstrap(Loaded),
}

/// The node's kubeconfig and the validity of its client certificate (none for token users).
pub struct Identity {
    pub kubeconfig: Loaded,
    pub validity: Option<(SystemTime, SystemTime)>,
}

impl Identity {
    async fn load(path: &std::path::Path) -> Result<Identity> {
        let kubeconfig = kubeconfig::load(path).await?;
        let validity = match kubeconfig.client_certificate() {
            Ok(pem) => Some(pki::validity(&path.display().to_string(), &pem)?),
            Err(_) => None,
        };
        Ok(Identity {
            kubeconfig,
            validity,
        })
    }

    fn expired(&self, now: SystemTime) -> bool {
        self.validity.is_some_and(|(_, not_after)| now >= not_after)
    }
}

/// Everything decided from files alone; an error here is the operator's to fix, not a retry.
pub async fn prepare(paths: &Paths) -> Result<Start> {
    let now = SystemTime::now();
    if paths.kubeconfig.exists() {
        let id = Identity::load(&paths.kubeconfig).await?;
        if !id.expired(now) {
            return Ok(Start::Ready(id));
        }
        if paths.bootstrap_kubeconfig.is_none() {
            bail!(
                "{}: the client certificate has expired and there is no --bootstrap-kubeconfig to get a new one",
                paths.kubeconfig.display()
            );
        }
        tracing::warn!(kubeconfig = %paths.kubeconfig.display(), "client certificate expired: bootstrapping again");
    }
    let Some(bootstrap) = &paths.bootstrap_kubeconfig else {
        bail!(
            "{} does not exist and no --bootstrap-kubeconfig was given",
            paths.kubeconfig.display()
        );
    };
    let bootstrap = kubeconfig::load(bootstrap).await?;
    let certs = CertDir::client(&paths.cert_dir);
    if certs.valid_current(now).is_some() {
        // A certificate from an earlier bootstrap survives a lost kubeconfig: no new CSR for it.
        kubeconfig::write_node(&paths.kubeconfig, &bootstrap.cluster()?, &certs.current())?;
        return Ok(Start::Ready(Identity::load(&paths.kubeconfig).await?));
    }
    Ok(Start::Bootstrap(bootstrap))
}

/// The node's identity, bootstrapping it if needed; transient failures (an API server not up
/// yet, a CSR denied or never signed) are retried until it succeeds.
pub async fn obtain(start: Start, paths: &Paths, node: &str) -> Identity {
    let bootstrap = match start {
        Start::Ready(id) => return id,
        Start::Bootstrap(b) => b,
    };
    let mut backoff = Backoff::default();
    loop {
        match bootstrap_once(&bootstrap, paths, node).await {
            Ok(id) => return id,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "TLS bootstrap failed; retrying");
                backoff.wait().await;
            }
        }
    }
}

async fn bootstrap_once(bootstrap: &Loaded, paths: &Paths, node: &str) -> Result<Identity> {
    tracing::info!(server = %bootstrap.config.cluster_url, "TLS bootstrap: requesting a client certificate");
    let client = bootstrap.client()?;
    let certs = CertDir::client(&paths.cert_dir);
    request_certificate(client, node, &certs).await?;
    kubeconfig::write_node(&paths.kubeconfig, &bootstrap.cluster()?, &certs.current())?;
    tracing::info!(kubeconfig = %paths.kubeconfig.display(), "TLS bootstrap done");
    Identity::load(&paths.kubeconfig).await
}

/// A new key and CSR; waits for the signed certificate and stores it as the current one.
pub async fn request_certificate(client: kube::Client, node: &str, certs: &CertDir) -> Result<()> {
    let req = pki::client_request(node)?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(req.csr_pem.into_bytes()),
            signer_name: pki::CLIENT_SIGNER.into(),
            usages: Some(pki::CLIENT_USAGES.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .context("create the CertificateSigningRequest")?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, "waiting for the CSR to be approved and signed");
    let cert = wait_issued(&api, &name).await?;
    let cert = String::from_utf8(cert).context("the issued certificate is not text")?;
    let stored = certs.store(&cert, &req.key_pem)?;
    tracing::info!(csr = %name, file = %stored.display(), "client certificate issued");
    Ok(())
}

/// The signed certificate of CSR `name`, followed by a watch (as kubelet's informer does) so it is
/// taken the moment the signer writes it.
async fn wait_issued(api: &Api<CertificateSigningRequest>, name: &str) -> Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + CSR_WAIT;
    let fields = format!("metadata.name={name}");
    loop {
        let csr = api
            .get(name)
            .await
            .with_context(|| format!("get CSR {name}"))?;
        let version = csr.metadata.resource_version.clone().unwrap_or_default();
        if let Some(cert) = issued(csr, name)? {
            return Ok(cert);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            bail!("CSR {name} was not signed within {CSR_WAIT:?}");
        }
        let params = WatchParams::default()
            .fields(&fields)
            .timeout(left.as_secs().clamp(1, 290) as u32);
        let mut events = api
            .watch(&params, &version)
            .await
            .with_context(|| format!("watch CSR {name}"))?
            .boxed();
        // A watch that ends or fails is followed by a fresh get.
        while let Ok(Some(Ok(ev))) = tokio::time::timeout_at(deadline, events.next()).await {
            match ev {
                WatchEvent::Added(csr) | WatchEvent::Modified(csr) => {
                    if let Some(cert) = issued(csr, name)? {
                        return Ok(cert);
                    }
                }
                WatchEvent::Deleted(_) => bail!("CSR {name} was deleted before it was signed"),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(_) => break,
            }
        }
    }
}

/// The certificate once signed; an error once denied or failed.
fn issued(csr: CertificateSigningRequest, name: &str) -> Result<Option<Vec<u8>>> {
    let status = csr.status.unwrap_or_default();
    for c in status.conditions.unwrap_or_default() {
        if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
            bail!(
                "CSR {name} {}: {} {}",
                c.type_.to_lowercase(),
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default()
            );
        }
    }
    Ok(status.certificate.filter(|c| !c.0.is_empty()).map(|c| c.0))
}

/// Renews the client certificate at 70–90 % of its life, for as long as skiffd runs, and hands
/// every new client to `clients`.
pub async fn rotate(
    mut id: Identity,
    kubeconfig: PathBuf,
    cert_dir: PathBuf,
    node: String,
    clients: watch::Sender<kube::Client>,
) {
    let certs = CertDir::client(&cert_dir);
    loop {
        let Some((not_before, not_after)) = id.validity else {
            return;
        };
        let deadline = pki::rotation_deadline(not_before, not_after, pki::jitter());
        let wait = deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let at = |t: SystemTime| k8s_openapi::chrono::DateTime::<k8s_openapi::chrono::Utc>::from(t);
        tracing::info!(expires = %at(not_after), rotation = %at(deadline), "client certificate rotation scheduled");
        tokio::time::sleep(wait).await;
        let mut backoff = Backoff::default();
        id = loop {
            let client = clients.borrow().clone();
            let renewed = async {
                request_certificate(client, &node, &certs).await?;
                Identity::load(&kubeconfig).await
            };
            match renewed.await {
                Ok(new) => break new,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "certificate rotation failed; retrying");
                    backoff.wait().await;
                }
            }
        };
        match id.kubeconfig.client() {
            Ok(c) => {
                let _ = clients.send(c);
            }
            Err(e) => tracing::error!(error = %e, "client from the rotated certificate"),
        }
    }
}

/// Doubling waits from 1 s up to 30 s.
#[derive(Default)]
pub struct Backoff(Duration);

impl Backoff {
    pub async fn wait(&mut self) {
        self.0 = (self.0 * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
        tokio::time::sleep(self.0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::kubeconfig::tests::bootstrap;
    use crate::node::pki::tests::issued;

    fn paths(dir: &std::path::Path, with_bootstrap: bool) -> Paths {
        Paths {
            kubeconfig: dir.join("kubelet.conf"),
            bootstrap_kubeconfig: with_bootstrap.then(|| bootstrap(dir)),
            cert_dir: dir.join("pki"),
        }
    }

    fn err(r: Result<Start>) -> String {
        match r {
            Ok(_) => panic!("prepared"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn nothing_to_authenticate_with_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = err(prepare(&paths(dir.path(), false)).await);
        assert!(
            e.contains("kubelet.conf does not exist") && e.contains("--bootstrap-kubeconfig"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn without_credentials_a_bootstrap_is_planned() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path(), true);
        assert!(matches!(prepare(&p).await.unwrap(), Start::Bootstrap(_)));
        assert!(!p.kubeconfig.exists());
    }

    #[tokio::test]
    async fn a_valid_certificate_is_reused_for_a_lost_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path(), true);
        let (cert, key) = issued(1);
        CertDir::client(&p.cert_dir).store(&cert, &key).unwrap();
        let Start::Ready(id) = prepare(&p).await.unwrap() else {
            panic!("bootstrapped again");
        };
        assert!(p.kubeconfig.exists());
        assert!(id.validity.is_some());
        // The kubeconfig written is then what a restart uses.
        assert!(matches!(prepare(&p).await.unwrap(), Start::Ready(_)));
    }

    #[tokio::test]
    async fn an_expired_certificate_needs_the_bootstrap_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path(), true);
        let (cert, key) = issued(1);
        CertDir::client(&p.cert_dir).store(&cert, &key).unwrap();
        prepare(&p).await.unwrap();
        let (old, key) = issued(-1);
        CertDir::client(&p.cert_dir).store(&old, &key).unwrap();
        assert!(matches!(prepare(&p).await.unwrap(), Start::Bootstrap(_)));
        let e = err(prepare(&paths(dir.path(), false)).await);
        assert!(e.contains("expired"), "{e}");
    }
}
