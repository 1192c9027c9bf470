//! TLS for registry connections: the system's roots, per-registry CA files, and (for
//! registries configured insecure only) a verifier that accepts any certificate, as Docker does.

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::{debug, warn};

use super::error::{Error, Result};

/// How a connection to one host checks the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    Roots(Arc<RootCertStore>),
    /// Registries configured insecure: encrypted, but unauthenticated.
    AnyCertificate,
}

/// The system's CA certificates, read once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                warn!(error = %e, "loading system CA certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            debug!(added, ignored, "system CA certificates");
            Arc::new(roots)
        })
        .clone()
}

/// The system roots plus the certificates of a PEM file.
pub fn roots_with_ca_file(path: &Path) -> Result<Arc<RootCertStore>> {
    let bad = |reason: String| Error::Config {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read CA file: {e}")))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<io::Result<_>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificates in CA file".into()));
    }
    let mut roots = (*system_roots()).clone();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that checks the server's certificate per `trust`.
pub fn client_config(trust: &Trust) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    match trust {
        Trust::Roots(roots) => builder.with_root_certificates(roots.clone()),
        Trust::AnyCertificate => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider()))),
    }
    .with_no_client_auth()
}

pub fn agent(trust: &Trust) -> ureq::Agent {
    let tls = client_config(trust);
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(tls))
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .redirect_auth_headers(ureq::RedirectAuthHeaders::Never)
        .build()
}

/// Accepts any certificate but still checks that the handshake is signed by its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
