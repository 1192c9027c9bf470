//! Where the Kubernetes binaries are: the directory `scripts/k8s-bin` prints, asked once per test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding kube-apiserver, kube-controller-manager, kube-scheduler, kubeadm, kubelet,
/// kube-proxy, crictl and critest. Panics with the script's message when they cannot be had.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/k8s-bin");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The path of one of those binaries.
pub fn path(name: &str) -> PathBuf {
    dir().join(name)
}

/// Debian's etcd (package etcd-server), the control plane's datastore.
pub fn etcd() -> PathBuf {
    let p = PathBuf::from("/usr/bin/etcd");
    assert!(
        p.exists(),
        "no /usr/bin/etcd: install tests/apt-packages (etcd-server)"
    );
    p
}
