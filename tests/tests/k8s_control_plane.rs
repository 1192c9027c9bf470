//! The control plane the Kubernetes tests run against: it comes up on loopback, is ready for `kubeadm join`,
//! and leaves nothing behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use skiff_tests::k8s::ControlPlane;

#[test]
fn a_control_plane_serves_kubectl_and_is_ready_for_joins() {
    let cp = ControlPlane::start();
    let ns = cp.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    for n in ["default", "kube-system", "kube-public"] {
        assert!(ns.contains(&format!("namespace/{n}")), "{ns}");
    }
    // What `kubeadm join` reads: the signed cluster-info, the kubeadm and kubelet configs, the token.
    cp.kubectl_until(
        &[
            "-n",
            "kube-public",
            "get",
            "configmap",
            "cluster-info",
            "-o",
            "yaml",
        ],
        Duration::from_secs(30),
        |o| o.success() && o.stdout.contains("jws-kubeconfig-"),
    );
    for cm in ["kubeadm-config", "kubelet-config"] {
        cp.kubectl_ok(&["-n", "kube-system", "get", "configmap", cm]);
    }
    cp.kubectl_ok(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        "bootstrap-token-skifft",
    ]);
    // The scheduler and the controller-manager hold their leases on the apiserver.
    let sa = cp.kubectl_until(
        &[
            "-n",
            "default",
            "get",
            "serviceaccount",
            "default",
            "-o",
            "name",
        ],
        Duration::from_secs(30),
        |o| o.success(),
    );
    assert!(sa.stdout.contains("serviceaccount/default"));

    let (ip, dir) = (cp.ip, cp.dir.clone());
    drop(cp);
    let lo = std::process::Command::new("ip")
        .args(["-4", "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&lo.stdout).contains(&ip.to_string()));
    assert!(!dir.exists());
}
