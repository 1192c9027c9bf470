//! `scripts/install-node`: the files it lays out, and a `kubeadm join` driven through them — the
//! kubelet started exactly as kubeadm's systemd drop-in starts it, from the files `kubeadm join`
//! wrote — ending with a Ready node. The join runs in a private mount namespace in which the
//! install's tree is laid over /etc, /usr, /opt and /var/lib, so the host's files stay untouched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skiff_tests::cri::{self, target_bin};
use skiff_tests::k8s::skiff_node::{condition, get_json, wait_for};
use skiff_tests::k8s::{bin, ControlPlane, Daemon};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch root for the install, removed (with whatever is mounted below it) when dropped.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/install-{tag}-{}",
            std::process::id()
        ));
        cri::cleanup(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Root(dir)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        cri::cleanup(&self.0);
    }
}

/// `scripts/install-node --root <root> --from <the test build>`; its stderr.
fn install(root: &Root) -> String {
    let from = target_bin("skiffd").parent().unwrap().to_path_buf();
    // skiff-bridge is built by the cni crate into the same target directory.
    let out = Command::new(repo().join("scripts/install-node"))
        .arg("--root")
        .arg(&root.0)
        .arg("--from")
        .arg(&from)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "install-node failed:\n{err}");
    err
}

#[test]
fn install_lays_out_the_kubelet_kubeadm_expects() {
    let root = Root::new("layout");
    let said = install(&root);
    assert!(said.contains("left alone"), "{said}");
    for bin in [
        "usr/local/bin/skiffd",
        "usr/local/bin/skiff-monitor",
        "usr/local/bin/skiff",
    ] {
        assert!(root.path(bin).is_file(), "{bin}");
    }
    assert!(root.path("opt/cni/bin/skiff-bridge").is_file());
    let link = std::fs::read_link(root.path("usr/bin/kubelet")).unwrap();
    assert_eq!(link, Path::new("../local/bin/skiffd"));
    // Run under the name kubeadm runs, skiffd answers as the kubelet.
    let out = Command::new(root.path("usr/bin/kubelet"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.starts_with("Kubernetes v1.28.7-skiff."),
        "{version}"
    );

    let unit = root.read("lib/systemd/system/kubelet.service");
    assert!(unit.contains("ExecStart=/usr/bin/kubelet"), "{unit}");
    assert!(
        unit.contains("KillMode=process"),
        "containers outlive skiffd: {unit}"
    );
    let dropin = root.read("lib/systemd/system/kubelet.service.d/10-kubeadm.conf");
    for env in [
        "EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env",
        "EnvironmentFile=-/etc/default/kubelet",
    ] {
        assert!(dropin.contains(env), "{dropin}");
    }
    assert!(root
        .read("etc/crictl.yaml")
        .contains("unix:///run/skiff/skiff.sock"));
    let sysctls = root.read("etc/sysctl.d/90-skiff-node.conf");
    assert!(sysctls.contains("net.bridge.bridge-nf-call-iptables = 1"));
    assert!(sysctls.contains("net.ipv4.ip_forward = 1"));
    assert!(root
        .read("etc/modules-load.d/skiff-node.conf")
        .contains("br_netfilter"));
    verify_units(&root);

    // Run twice, it replaces what it installed and keeps the node's own crictl.yaml.
    std::fs::write(root.path("etc/crictl.yaml"), "runtime-endpoint: mine\n").unwrap();
    install(&root);
    assert_eq!(root.read("etc/crictl.yaml"), "runtime-endpoint: mine\n");
}

#[test]
fn install_refuses_a_directory_without_the_binaries() {
    let root = Root::new("missing");
    let out = Command::new(repo().join("scripts/install-node"))
        .arg("--root")
        .arg(&root.0)
        .arg("--from")
        .arg(root.path("nowhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nowhere/skiffd is missing"), "{err}");
    assert!(
        !root.path("usr/bin/kubelet").exists(),
        "nothing half-installed"
    );
}

/// systemd's own check of the unit and its drop-in, where systemd-analyze is installed.
fn verify_units(root: &Root) {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.0.display()))
        .arg("kubelet.service")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: unit syntax not verified");
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    // Only complaints about our unit count (the scratch root has no other units).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("kubelet.service") && !l.contains("not found"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify:\n{err}");
}

/// The drop-in's command line and Environment= lines, as the shell lines that run it the way
/// systemd does: environment files read, `$VAR`s split on white space.
fn exec_start(dropin: &str) -> String {
    let mut lines = vec!["set -a".to_string()];
    for l in dropin.lines() {
        if let Some(env) = l.strip_prefix("Environment=") {
            lines.push(env.trim_matches('"').replacen('=', "=\"", 1) + "\"");
        } else if let Some(file) = l.strip_prefix("EnvironmentFile=-") {
            lines.push(format!("[ -f {file} ] && . {file}"));
        }
    }
    let cmd = dropin
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .rfind(|c| !c.is_empty())
        .expect("an ExecStart line");
    lines.push("set +a".into());
    lines.push(format!("exec {cmd}"));
    lines.join("\n")
}

#[test]
fn kubeadm_join_runs_the_installed_kubelet_through_its_unit() {
    let cp = ControlPlane::start();
    let root = Root::new("join");
    install(&root);
    let name = format!("skiff-install-{}", std::process::id());
    let r = root.0.display();
    // The node's own settings, where kubeadm's drop-in reads them.
    std::fs::create_dir_all(root.path("etc/default")).unwrap();
    std::fs::write(
        root.path("etc/default/kubelet"),
        format!("KUBELET_EXTRA_ARGS=\"--node-ip={}\"\n", cp.ip),
    )
    .unwrap();
    let subnet = format!("10.214.{}.0/24", std::process::id() % 250);
    let bridge = format!("ski{}", std::process::id() % 100_000);
    std::fs::create_dir_all(root.path("etc/cni/net.d")).unwrap();
    std::fs::write(
        root.path("etc/cni/net.d/10-pods.conflist"),
        cri::bridge_conflist(&bridge, &subnet, &root.path("ipam")),
    )
    .unwrap();
    for d in ["w/etc", "w/usr", "w/opt", "w/lib", "var/lib"] {
        std::fs::create_dir_all(root.path(d)).unwrap();
    }
    let join: Vec<String> = cp
        .join_args(&name, Path::new("/run/skiff/skiff.sock"))
        .into_iter()
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir={r}/etc,workdir={r}/w/etc /etc
mount -t overlay overlay -o lowerdir=/usr,upperdir={r}/usr,workdir={r}/w/usr /usr
mkdir -p /opt && mount -t overlay overlay -o lowerdir=/opt,upperdir={r}/opt,workdir={r}/w/opt /opt
mount -t overlay overlay -o lowerdir=/var/lib,upperdir={r}/var/lib,workdir={r}/w/lib /var/lib
mkdir -p /run/skiff && mount -t tmpfs tmpfs /run/skiff
# The host's other CNI networks are not this node's.
find /etc/cni/net.d -name '*.conf*' ! -name 10-pods.conflist -delete
echo '{ip} {name}' >> /etc/hosts
{kubeadm} {join} > {r}/kubeadm-join.log 2>&1 &
while [ ! -s /var/lib/kubelet/kubeadm-flags.env ]; do sleep 0.2; done
{start}",
        ip = cp.ip,
        kubeadm = bin::path("kubeadm").display(),
        join = join.join(" "),
        start = exec_start(&root.read("lib/systemd/system/kubelet.service.d/10-kubeadm.conf")),
    );
    let mut kubelet = Daemon::spawn(
        "kubelet",
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]),
        &root.0,
    );
    let joined = || std::fs::read_to_string(root.path("kubeadm-join.log")).unwrap_or_default();
    wait_for("kubeadm join", Duration::from_secs(240), || {
        kubelet.assert_running();
        joined()
            .contains("This node has joined the cluster")
            .then_some(())
    });
    wait_for("node Ready", Duration::from_secs(60), || {
        let n = get_json(&cp, &["node", &name])?;
        (condition(&n, "Ready")["status"] == "True").then_some(n)
    });
    // The kubelet kubeadm started is skiffd from the install, and it wrote kubelet.conf where
    // kubeadm's unit points it.
    let node = get_json(&cp, &["node", &name]).unwrap();
    let info = &node["status"]["nodeInfo"];
    assert!(info["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.28.7-skiff."));
    assert!(info["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with("skiff://"));
    assert!(root.path("etc/kubernetes/kubelet.conf").is_file());
    assert!(root
        .path("var/lib/kubelet/pki/kubelet-client-current.pem")
        .exists());
    let _ = cp.kubectl(&["delete", "node", &name]);
    drop(kubelet);
}
