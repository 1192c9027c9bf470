//! Kubeconfig files: the bootstrap one kubeadm writes, and the node's own (`kubelet.conf`) that
//! points at the certificate the TLS bootstrap obtained.

use std::path::{Path, PathBuf};

use base64::Engine;
use kube::config::{Cluster, KubeConfigOptions, Kubeconfig};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// A kubeconfig read and checked: its client can be built without touching the network.
pub struct Loaded {
    pub path: PathBuf,
    pub file: Kubeconfig,
    pub config: kube::Config,
}

impl Loaded {
    pub fn client(&self) -> Result<kube::Client, KubeconfigError> {
        kube::Client::try_from(self.config.clone()).map_err(|e| self.invalid(e))
    }

    /// The client certificate's PEM, for its validity.
    pub fn client_certificate(&self) -> Result<Vec<u8>, KubeconfigError> {
        let auth = &self.config.auth_info;
        if let Some(data) = &auth.client_certificate_data {
            return base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| self.invalid(format!("client-certificate-data: {e}")));
        }
        let file = auth
            .client_certificate
            .as_ref()
            .ok_or_else(|| self.invalid("the user has no client certificate"))?;
        std::fs::read(file).map_err(|e| self.invalid(format!("client-certificate {file}: {e}")))
    }

    /// The cluster of the current context: where the node's own kubeconfig must point too.
    pub fn cluster(&self) -> Result<Cluster, KubeconfigError> {
        let context = self
            .file
            .current_context
            .as_ref()
            .and_then(|name| self.file.contexts.iter().find(|c| &c.name == name))
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone());
        self.file
            .clusters
            .iter()
            .find(|c| context.as_ref().is_none_or(|name| &c.name == name))
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| self.invalid("no cluster for the current context"))
    }

    fn invalid(&self, message: impl std::fmt::Display) -> KubeconfigError {
        KubeconfigError::Invalid {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }
}

/// Reads and checks `path`: it parses, names a server, and its CA and credentials load.
pub async fn load(path: &Path) -> Result<Loaded, KubeconfigError> {
    let invalid = |message: String| KubeconfigError::Invalid {
        path: path.into(),
        message,
    };
    let file = Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file.clone(), &KubeConfigOptions::default())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    let loaded = Loaded {
        path: path.into(),
        file,
        config,
    };
    loaded.client()?;
    Ok(loaded)
}

/// Writes the node's kubeconfig: `cluster` as the bootstrap kubeconfig named it, and the client
/// certificate and key both read from `cert` (the `-current` link), as kubelet writes it.
pub fn write_node(path: &Path, cluster: &Cluster, cert: &Path) -> Result<(), KubeconfigError> {
    let err = |message: String| KubeconfigError::Write {
        path: path.into(),
        message,
    };
    let cert = cert.display().to_string();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster", "namespace": "default", "user": "default-auth"}}],
        "current-context": "default-context",
        "preferences": {},
        "users": [{"name": "default-auth", "user": {"client-certificate": cert, "client-key": cert}}],
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| err(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    }
    skiff_runtime::state::write_atomic(path, text.as_bytes(), 0o600).map_err(|e| err(e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const BOOTSTRAP: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    \
        certificate-authority-data: {CA}\n    server: https://10.1.2.3:6443\n  name: kubernetes\n\
        contexts:\n- context:\n    cluster: kubernetes\n    user: tls-bootstrap-token-user\n  \
        name: tls-bootstrap-token-user@kubernetes\ncurrent-context: tls-bootstrap-token-user@kubernetes\n\
        users:\n- name: tls-bootstrap-token-user\n  user:\n    token: abcdef.0123456789abcdef\n";

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    /// A bootstrap kubeconfig as kubeadm writes it (CA embedded, a token user) in `dir`.
    pub(crate) fn bootstrap(dir: &Path) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem());
        let path = dir.join("bootstrap-kubelet.conf");
        std::fs::write(&path, BOOTSTRAP.replace("{CA}", &ca)).unwrap();
        path
    }

    #[tokio::test]
    async fn bootstrap_file_loads_and_names_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let b = load(&bootstrap(dir.path())).await.unwrap();
        let cluster = b.cluster().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.1.2.3:6443"));
        assert!(cluster.certificate_authority_data.is_some());
    }

    #[tokio::test]
    async fn node_kubeconfig_points_at_the_current_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let b = load(&bootstrap(dir.path())).await.unwrap();
        let cert = dir.path().join("pki/kubelet-client-current.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let pem = format!(
            "{}{}",
            p.self_signed(&key).unwrap().pem(),
            key.serialize_pem()
        );
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        std::fs::write(&cert, &pem).unwrap();
        let conf = dir.path().join("kubelet.conf");
        write_node(&conf, &b.cluster().unwrap(), &cert).unwrap();
        let node = load(&conf).await.unwrap();
        assert_eq!(
            node.config.cluster_url.to_string(),
            "https://10.1.2.3:6443/"
        );
        assert_eq!(
            node.config.auth_info.client_key.as_deref(),
            Some(cert.to_str().unwrap())
        );
        assert!(node
            .client_certificate()
            .unwrap()
            .starts_with(b"-----BEGIN CERTIFICATE"));
    }

    #[tokio::test]
    async fn garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet.conf");
        for bad in [
            "{{{ not yaml",
            "apiVersion: v1\nkind: Config\n",
            "- a\n- b\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = load(&path).await.err().unwrap().to_string();
            assert!(e.contains("kubelet.conf"), "{bad}: {e}");
        }
    }
}
