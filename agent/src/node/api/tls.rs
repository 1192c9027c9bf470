//! The kubelet API's TLS: the serving certificate (given in the configuration, or the node's own
//! self-signed `kubelet.crt`/`kubelet.key` in the certificate directory, as kubelet keeps them)
//! behind a resolver that rotation can swap, and the client-certificate check against
//! `clientCAFile`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use k8s_openapi::chrono::{Datelike, Utc};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use crate::node::pki;
use crate::stream::tls::{certificates, private_key, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("the serving certificate {cert} with key {key}: {source}")]
    Key {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("clientCAFile {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate in use; [`Serving::set`] replaces it for the next handshakes. Without
/// one (a signed certificate still awaited) handshakes fail, as kubelet's do.
#[derive(Debug, Default)]
pub struct Serving {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Serving {
    pub fn new(key: CertifiedKey) -> Arc<Serving> {
        let s = Arc::new(Serving::default());
        s.set(key);
        s
    }

    pub fn set(&self, key: CertifiedKey) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(Arc::new(key));
        }
    }
}

impl ResolvesServerCert for Serving {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|k| k.clone())
    }
}

/// The chain in `cert` with the key in `key`, checked to belong together.
pub fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, ServingError> {
    let chain = certificates(cert)?;
    let private = private_key(key)?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|source| ServingError::Key {
        cert: cert.into(),
        key: key.into(),
        source,
    })
}

/// The node's own certificate, `kubelet.crt` and `kubelet.key` in `cert_dir`: made (self-signed,
/// valid a year, for the node's names and addresses) when missing or expired.
pub fn self_signed(
    cert_dir: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<CertifiedKey, ServingError> {
    let cert = cert_dir.join("kubelet.crt");
    let key = cert_dir.join("kubelet.key");
    let valid = std::fs::read(&cert)
        .ok()
        .and_then(|pem| pki::validity(&cert.display().to_string(), &pem).ok())
        .is_some_and(|(_, not_after)| SystemTime::now() < not_after);
    if !valid {
        make_self_signed(&cert, &key, names, ips)?;
    }
    load(&cert, &key)
}

fn make_self_signed(
    cert: &Path,
    key: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(), ServingError> {
    let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(pki::PkiError::from)?;
    let mut sans: Vec<String> = names.to_vec();
    sans.extend(ips.iter().map(IpAddr::to_string));
    let mut params = CertificateParams::new(sans).map_err(pki::PkiError::from)?;
    let mut dn = DistinguishedName::new();
    let host = names.first().cloned().unwrap_or_default();
    dn.push(
        DnType::CommonName,
        format!("{host}@{}", Utc::now().timestamp()),
    );
    params.distinguished_name = dn;
    let now = Utc::now();
    let (y, m, d) = (now.year(), now.month() as u8, now.day() as u8);
    params.not_before = rcgen::date_time_ymd(y, m, d.min(28).saturating_sub(1).max(1));
    params.not_after = rcgen::date_time_ymd(y + 1, m, d.min(28));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issued = params.self_signed(&pair).map_err(pki::PkiError::from)?;
    let write = |path: &Path, data: &str, mode: u32| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| pki::PkiError::Io {
                path: dir.into(),
                source,
            })?;
        }
        skiff_runtime::state::write_atomic(path, data.as_bytes(), mode).map_err(|e| {
            pki::PkiError::Io {
                path: path.into(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    };
    write(key, &pair.serialize_pem(), 0o600)?;
    write(cert, &issued.pem(), 0o644)?;
    tracing::info!(cert = %cert.display(), "made a self-signed serving certificate");
    Ok(())
}

/// The server configuration: `serving`'s certificate; client certificates optional, and verified
/// against `client_ca` when one is given (one from another CA fails the handshake).
pub fn server_config(
    serving: Arc<Serving>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, ServingError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(path) => {
            let bad = |message: String| ServingError::ClientCa {
                path: path.into(),
                message,
            };
            let mut roots = RootCertStore::empty();
            for c in certificates(path)? {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(serving);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["node-a".to_string()];
        let ips = vec!["10.1.2.3".parse().unwrap()];
        self_signed(dir.path(), &names, &ips).unwrap();
        let first = std::fs::read(dir.path().join("kubelet.crt")).unwrap();
        self_signed(dir.path(), &names, &ips).unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join("kubelet.crt")).unwrap()
        );
        let (_, der) = x509_parser::pem::parse_x509_pem(&first).unwrap();
        let cert = der.parse_x509().unwrap();
        let sans = format!(
            "{:?}",
            cert.subject_alternative_name().unwrap().unwrap().value
        );
        assert!(
            sans.contains("\"node-a\"") && sans.contains("[10, 1, 2, 3]"),
            "{sans}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("kubelet.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let e = server_config(
            Serving::new(self_signed(dir.path(), &names, &ips).unwrap()),
            Some(&dir.path().join("missing-ca.crt")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing-ca.crt"), "{e}");
    }
}
