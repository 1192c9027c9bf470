//! The node's client identity: its key and CSR, the validity of what the signer issued, and the
//! certificate directory kubelet keeps (`kubelet-client-<date>.pem` and the
//! `kubelet-client-current.pem` symlink to the newest).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::chrono::Utc;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

/// The signer that issues kubelets their API client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The usages the CSR approver accepts for an ECDSA kubelet client key.
pub const CLIENT_USAGES: &[&str] = &["digital signature", "client auth"];
/// The prefix of the client certificate files.
pub const CLIENT_PREFIX: &str = "kubelet-client";
/// The signer of kubelet serving certificates (`serverTLSBootstrap`).
pub const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The usages kubelet asks for with an ECDSA serving key.
pub const SERVING_USAGES: &[&str] = &["digital signature", "server auth"];
/// The prefix of the serving certificate files.
pub const SERVING_PREFIX: &str = "kubelet-server";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generate a key or CSR: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{what}: not a PEM certificate: {message}")]
    BadCertificate { what: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A fresh key and the PEM CSR asking for `system:node:<node>` in `system:nodes`.
pub struct Request {
    pub key_pem: String,
    pub csr_pem: String,
}

pub fn client_request(node: &str) -> Result<Request, PkiError> {
    node_request(node, CertificateParams::default())
}

/// The same subject, for a serving certificate valid for the node's `names` and `ips`.
pub fn serving_request(node: &str, names: &[String], ips: &[IpAddr]) -> Result<Request, PkiError> {
    let mut sans = names.to_vec();
    sans.extend(ips.iter().map(IpAddr::to_string));
    node_request(node, CertificateParams::new(sans)?)
}

fn node_request(node: &str, mut params: CertificateParams) -> Result<Request, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "system:nodes");
    dn.push(DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(Request {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// notBefore and notAfter of the first certificate in `pem`.
pub fn validity(what: &str, pem: &[u8]) -> Result<(SystemTime, SystemTime), PkiError> {
    let bad = |message: String| PkiError::BadCertificate {
        what: what.into(),
        message,
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| bad(e.to_string()))?;
    let cert = block.parse_x509().map_err(|e| bad(e.to_string()))?;
    let v = cert.validity();
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    Ok((at(v.not_before.timestamp()), at(v.not_after.timestamp())))
}

/// When to ask for the next certificate: at a random point in 70–90 % of the current one's life,
/// as kubelet does, so that a fleet issued together does not renew together.
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, random: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(0.7 + 0.2 * random.clamp(0.0, 1.0))
}

/// A number in 0..1 from the OS's random source.
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// The directory of dated certificate+key files and the `-current` link to the newest.
pub struct CertDir {
    pub dir: PathBuf,
    pub prefix: &'static str,
}

impl CertDir {
    pub fn client(dir: &Path) -> CertDir {
        CertDir {
            dir: dir.into(),
            prefix: CLIENT_PREFIX,
        }
    }

    pub fn serving(dir: &Path) -> CertDir {
        CertDir {
            dir: dir.into(),
            prefix: SERVING_PREFIX,
        }
    }

    pub fn current(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The current certificate+key PEM, if there is one and it is still valid at `now`.
    pub fn valid_current(&self, now: SystemTime) -> Option<Vec<u8>> {
        let pem = std::fs::read(self.current()).ok()?;
        let (_, not_after) = validity(&self.current().display().to_string(), &pem).ok()?;
        (now < not_after).then_some(pem)
    }

    /// Writes `cert` and `key` to a new dated file, then points `-current` at it; each step is a
    /// rename, so a reader sees the old pair or the new one.
    pub fn store(&self, cert_pem: &str, key_pem: &str) -> Result<PathBuf, PkiError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| PkiError::Io { path, source }
        };
        validity("the issued certificate", cert_pem.as_bytes())?;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let stamp = Utc::now().format("%Y-%m-%d-%H-%M-%S");
        let dated = self.dir.join(format!("{}-{stamp}.pem", self.prefix));
        let mut both = String::from(cert_pem.trim_end());
        both.push('\n');
        both.push_str(key_pem.trim_end());
        both.push('\n');
        skiff_runtime::state::write_atomic(&dated, both.as_bytes(), 0o600).map_err(|e| {
            PkiError::Io {
                path: dated.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let current = self.current();
        let link = self.dir.join(format!(
            ".{}-current.{}.tmp",
            self.prefix,
            std::process::id()
        ));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dated.file_name().unwrap_or_default(), &link)
            .map_err(io(&link))?;
        std::fs::rename(&link, &current).map_err(io(&current))?;
        Ok(dated)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn csr_names_the_node() {
        let r = client_request("worker-1").unwrap();
        assert!(r.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(r.key_pem.contains("PRIVATE KEY"));
        let (_, der) = x509_parser::pem::parse_x509_pem(r.csr_pem.as_bytes()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:worker-1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }

    #[test]
    fn serving_csr_names_the_node_and_its_addresses() {
        let ips = ["10.1.2.3".parse().unwrap()];
        let r = serving_request("worker-1", &["worker-1".into()], &ips).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(r.csr_pem.as_bytes()).unwrap();
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:worker-1"), "{subject}");
        let ext = format!(
            "{:?}",
            csr.requested_extensions().unwrap().collect::<Vec<_>>()
        );
        assert!(
            ext.contains("\"worker-1\"") && ext.contains("[10, 1, 2, 3]"),
            "{ext}"
        );
    }

    #[test]
    fn deadline_within_70_to_90_percent() {
        let start = UNIX_EPOCH + Duration::from_secs(1000);
        let end = start + Duration::from_secs(100);
        assert_eq!(
            rotation_deadline(start, end, 0.0),
            start + Duration::from_secs(70)
        );
        assert_eq!(
            rotation_deadline(start, end, 1.0),
            start + Duration::from_secs(90)
        );
        let j = jitter();
        assert!((0.0..=1.0).contains(&j));
    }

    /// A self-signed certificate stands in for the signer's answer: only its PEM and dates matter.
    pub(crate) fn issued(days: i64) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        let now = rcgen::date_time_ymd(2000, 1, 1);
        p.not_before = now;
        p.not_after = if days > 0 {
            rcgen::date_time_ymd(2999, 1, 1)
        } else {
            rcgen::date_time_ymd(2000, 1, 2)
        };
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn store_links_current_to_the_dated_file() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::client(dir.path());
        assert!(certs.valid_current(SystemTime::now()).is_none());
        let (cert, key) = issued(1);
        let dated = certs.store(&cert, &key).unwrap();
        let link = std::fs::read_link(certs.current()).unwrap();
        assert_eq!(dir.path().join(link), dated);
        let pem = certs.valid_current(SystemTime::now()).unwrap();
        let text = String::from_utf8(pem).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----") && text.contains("PRIVATE KEY"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dated).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (expired, key) = issued(-1);
        certs.store(&expired, &key).unwrap();
        assert!(certs.valid_current(SystemTime::now()).is_none());
        assert!(certs.store("not a cert", &key).is_err());
    }
}
