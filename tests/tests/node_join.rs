//! skiffd as the kubelet: started under the name `kubelet` with the command line kubeadm's systemd
//! drop-in gives it, it joins a real control plane through `kubeadm join` (TLS bootstrap, Node,
//! Lease, healthz), and it refuses or survives what a broken node setup hands it.
//!
//! `kubeadm join` writes to /etc/kubernetes and /var/lib/kubelet: it runs in a private mount
//! namespace where both are bind mounts of the test's own directories (over overlays of /etc and
//! /var/lib, so that the host gets no new directories). skiffd runs outside it and is pointed at
//! those directories by its flags, as a kubelet can be.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use skiff_tests::cri;
use skiff_tests::k8s::control_plane::free_port;
use skiff_tests::k8s::skiff_node::{
    self, condition, get_json, kubeadm_flags, spawn_join, wait_for, NodeDir,
};
use skiff_tests::k8s::ControlPlane;

fn free_local_port() -> u16 {
    free_port(Ipv4Addr::LOCALHOST)
}

/// `^Kubernetes vX.Y.Z[-\w.+]*$`, the pattern kubeadm's kubelet version check parses.
fn kubeadm_accepts(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("Kubernetes v") else {
        return false;
    };
    let core_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (core, suffix) = rest.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty())
        && (suffix.is_empty() || suffix.starts_with('-') || suffix.starts_with('+'))
        && suffix
            .chars()
            .all(|c| c.is_alphanumeric() || "_-.+".contains(c))
}

#[test]
fn kubelet_version_is_what_kubeadm_checks() {
    let node = NodeDir::new();
    let out = Command::new(node.dir.join("bin/kubelet"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(kubeadm_accepts(&v), "{v:?}");
    // Within the skew of the control plane the tests run: the same minor release.
    assert!(v.starts_with("Kubernetes v1.28."), "{v}");
    assert!(v.contains("skiff"), "{v}");
}

#[test]
fn a_missing_config_file_is_a_non_zero_exit() {
    let node = NodeDir::new();
    let (ok, _, err) = node.run_kubelet(&[]);
    assert!(!ok, "kubelet started without its config.yaml");
    assert!(
        err.contains("config.yaml") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !node.socket().exists(),
        "the CRI was served before the configuration was read"
    );
}

#[test]
fn a_bad_kubeconfig_is_a_clear_error() {
    let node = NodeDir::new();
    node.write_config(free_local_port());
    std::fs::write(
        node.etc("kubelet.conf"),
        "clusters: [this is: not a kubeconfig",
    )
    .unwrap();
    let (ok, _, err) = node.run_kubelet(&[]);
    assert!(!ok);
    assert!(
        err.contains(&node.etc("kubelet.conf").display().to_string()),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_file(node.etc("kubelet.conf")).unwrap();
    let (ok, _, err) = node.run_kubelet(&[]);
    assert!(!ok);
    assert!(err.contains("bootstrap-kubelet.conf"), "{err}");
    let (ok, _, err) = node.run_kubelet(&["--max-pods=lots".into()]);
    assert!(!ok);
    assert!(err.contains("--max-pods"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_retried_while_the_cri_serves() {
    let node = NodeDir::new();
    let healthz = free_local_port();
    node.write_config(healthz);
    let dead = free_local_port();
    std::fs::write(
        node.etc("bootstrap-kubelet.conf"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{dead}\n    \
             insecure-skip-tls-verify: true\ncontexts:\n- name: b\n  context: {{cluster: k, user: b}}\n\
             current-context: b\nusers:\n- name: b\n  user: {{token: abcdef.0123456789abcdef}}\n"
        ),
    )
    .unwrap();
    let mut d = node.spawn(&[
        "--hostname-override=skiff-unreachable".into(),
        "--made-up-flag=1".into(),
    ]);
    let channel = cri::connect(&node.socket())
        .await
        .expect("the CRI is served");
    let mut rt = cri::v1::runtime_service_client::RuntimeServiceClient::new(channel);
    let v = rt
        .version(cri::v1::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    let body = http_get(healthz, "/healthz").await;
    assert!(body.ends_with("\r\n\r\nok"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.log().matches("TLS bootstrap failed; retrying").count() < 2 {
        assert!(Instant::now() < deadline, "no retries:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.assert_running();
    let log = node.log();
    assert!(
        log.contains("unknown kubelet flag") && log.contains("--made-up-flag=1"),
        "{log}"
    );
    assert!(!node.etc("kubelet.conf").exists());
    rt.version(cri::v1::VersionRequest::default())
        .await
        .unwrap();
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Whether the file system at `p` has less than `share` of its space available.
fn below(p: &Path, share: f64) -> bool {
    let s = nix_statvfs(p);
    (s.0 as f64) < share * s.1 as f64
}

fn nix_statvfs(p: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statvfs is plain old data; zeroed is valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    (
        s.f_bavail as u64 * s.f_frsize as u64,
        s.f_blocks as u64 * s.f_frsize as u64,
    )
}

#[test]
fn kubeadm_join_makes_a_ready_node_with_a_lease_and_rotating_certificates() {
    let cp = ControlPlane::start();
    let node = NodeDir::new();
    let name = format!("skiff-node-{}", std::process::id());
    let mut join = spawn_join(&cp, &node, &name);
    let flags_env = node.var("kubeadm-flags.env");
    let env = wait_for("kubeadm-flags.env", Duration::from_secs(120), || {
        assert!(
            join.exited().is_none(),
            "kubeadm join exited:\n{}",
            join.log()
        );
        std::fs::read_to_string(&flags_env)
            .ok()
            .filter(|t| t.contains("KUBELET_KUBEADM_ARGS"))
    });
    // What /etc/default/kubelet would add: the node IP and a healthz port of its own.
    let healthz = free_local_port();
    let mut args = kubeadm_flags(&env);
    assert!(
        args.iter()
            .any(|a| a.starts_with("--container-runtime-endpoint=")),
        "{args:?}"
    );
    args.push(format!("--node-ip={}", cp.ip));
    args.push(format!("--healthz-port={healthz}"));
    args.push("--node-labels=skiff.dev/test=join".into());
    args.push("--register-with-taints=skiff.dev/test=join:PreferNoSchedule".into());
    let kubelet_port = skiff_node::localize_config(&node, "");
    let started = Instant::now();
    let mut skiffd = node.spawn(&args);

    // TLS bootstrap: kubelet.conf written, kubeadm sees it and the Node, and exits 0.
    let joined = wait_for("kubeadm join to finish", Duration::from_secs(180), || {
        skiffd.assert_running();
        join.exited()
    });
    assert!(
        joined,
        "kubeadm join failed:\n{}\n{}",
        join.log(),
        node.log()
    );
    let ready = wait_for("node Ready", Duration::from_secs(60), || {
        let n = get_json(&cp, &["node", &name])?;
        (condition(&n, "Ready")["status"] == "True").then(|| (started.elapsed(), n))
    });
    let (ready_after, n) = ready;
    eprintln!("node Ready {ready_after:?} after skiffd started");
    // kubeadm's join waited on us, so Ready is measured from the bootstrap being done.
    let bootstrapped = node.log();
    assert!(
        bootstrapped.contains("TLS bootstrap done"),
        "{bootstrapped}"
    );

    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], name.as_str());
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["skiff.dev/test"], "join");
    let taints = n["spec"]["taints"].to_string();
    assert!(
        taints.contains(r#""effect":"PreferNoSchedule","key":"skiff.dev/test","value":"join""#),
        "{taints}"
    );
    let st = &n["status"];
    assert_eq!(
        st["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .split("://")
            .next(),
        Some("skiff")
    );
    assert!(st["nodeInfo"]["kubeletVersion"]
        .as_str()
        .unwrap()
        .starts_with("v1.28.7-skiff"));
    assert!(!st["nodeInfo"]["bootID"].as_str().unwrap().is_empty());
    assert_eq!(st["capacity"]["pods"], "110");
    assert!(st["allocatable"]["memory"].is_string() && st["capacity"]["cpu"].is_string());
    let addrs = st["addresses"].to_string();
    assert!(
        addrs.contains(&cp.ip.to_string()) && addrs.contains("InternalIP"),
        "{addrs}"
    );
    assert_eq!(
        st["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        kubelet_port
    );
    assert_eq!(condition(&n, "Ready")["reason"], "KubeletReady");
    assert_eq!(condition(&n, "MemoryPressure")["status"], "False");
    // DiskPressure is measured: imagefs (the image store's disk) below 15 % free is pressure.
    let disk_low = below(&node.dir, 0.15);
    assert_eq!(
        condition(&n, "DiskPressure")["status"],
        if disk_low { "True" } else { "False" }
    );

    // The client certificate: CN system:node:<name>, the dated file behind the -current link.
    let current = node.var("pki/kubelet-client-current.pem");
    let target = std::fs::read_link(&current).unwrap();
    assert!(
        target.to_string_lossy().starts_with("kubelet-client-2"),
        "{target:?}"
    );
    let conf = std::fs::read_to_string(node.etc("kubelet.conf")).unwrap();
    assert!(conf.contains(&current.display().to_string()), "{conf}");
    let csrs = get_json(&cp, &["csr"]).unwrap();
    let csr = csrs["items"].as_array().unwrap().iter().find(|c| {
        c["spec"]["username"]
            .as_str()
            .unwrap_or("")
            .starts_with("system:bootstrap:")
            && c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
    });
    assert!(csr.is_some(), "no bootstrap CSR: {csrs}");
    // The node's own credentials work for what a node may do.
    let mut whoami = Command::new("kubectl");
    whoami
        .arg("--kubeconfig")
        .arg(node.etc("kubelet.conf"))
        .args(["get", "node", &name, "-o", "name"]);
    let out = whoami.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // healthz where kubeadm looks for it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = rt.block_on(http_get(healthz, "/healthz"));
    assert!(body.ends_with("\r\n\r\nok"), "{body}");

    // The Lease: 40 s, held by the node, renewed every 10 s.
    let lease = |cp: &ControlPlane| get_json(cp, &["lease", "-n", "kube-node-lease", &name]);
    let first = wait_for("lease", Duration::from_secs(15), || lease(&cp));
    assert_eq!(first["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(first["spec"]["holderIdentity"], name.as_str());
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    let renewed = wait_for("lease renewal", Duration::from_secs(25), || {
        let l = lease(&cp)?;
        (l["spec"]["renewTime"] != first["spec"]["renewTime"]).then_some(l)
    });
    assert_eq!(renewed["spec"]["holderIdentity"], name.as_str());
    eprintln!("skiffd in node mode, idle: {}", vm_rss(skiffd.pid()));

    // Ready follows the runtime's network: no CNI configuration (and none skiffd could write in its
    // place: the conf dir is a file), not ready, with the runtime's reason and skiffd's.
    let conf_dir = node.dir.join("net.d");
    let aside = node.dir.join("net.d.aside");
    std::fs::rename(&conf_dir, &aside).unwrap();
    std::fs::write(&conf_dir, "").unwrap();
    let not_ready = wait_for(
        "NotReady without a network",
        Duration::from_secs(30),
        || {
            let ready = condition(&get_json(&cp, &["node", &name])?, "Ready");
            (ready["status"] == "False").then_some(ready)
        },
    );
    assert_eq!(not_ready["reason"], "KubeletNotReady");
    let msg = not_ready["message"].as_str().unwrap();
    assert!(
        msg.contains("NetworkReady=false reason:NetworkPluginNotReady"),
        "{msg}"
    );
    wait_for(
        "NetworkUnavailable: skiffd cannot configure the network either",
        Duration::from_secs(30),
        || {
            let u = condition(&get_json(&cp, &["node", &name])?, "NetworkUnavailable");
            (u["status"] == "True").then_some(())
        },
    );
    std::fs::remove_file(&conf_dir).unwrap();
    std::fs::rename(&aside, &conf_dir).unwrap();
    wait_for(
        "Ready with the network back",
        Duration::from_secs(30),
        || {
            let ready = condition(&get_json(&cp, &["node", &name])?, "Ready");
            (ready["status"] == "True").then_some(())
        },
    );

    // Stopped, the node is declared lost by the node lifecycle controller (40 s grace by default).
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(skiffd.pid() as i32, libc::SIGTERM) };
    let lost = wait_for(
        "node not ready after skiffd stopped",
        Duration::from_secs(120),
        || {
            let n = get_json(&cp, &["node", &name])?;
            let ready = condition(&n, "Ready");
            (ready["status"] != "True").then_some(ready)
        },
    );
    assert_eq!(lost["status"], "Unknown", "{lost}");
    assert_eq!(lost["reason"], "NodeStatusUnknown", "{lost}");
    drop(skiffd);

    // Started again, it uses the certificate it has (no new CSR) and the Node it registered.
    let csrs_before = get_json(&cp, &["csr"]).unwrap()["items"]
        .as_array()
        .unwrap()
        .len();
    let restarted = Instant::now();
    let skiffd = node.spawn(&args);
    wait_for(
        "Ready again after a restart",
        Duration::from_secs(30),
        || {
            let ready = condition(&get_json(&cp, &["node", &name])?, "Ready");
            (ready["status"] == "True").then_some(())
        },
    );
    eprintln!(
        "node Ready again {:?} after skiffd restarted",
        restarted.elapsed()
    );
    let csrs_after = get_json(&cp, &["csr"]).unwrap()["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        csrs_before, csrs_after,
        "a restart asked for a new certificate"
    );
    assert!(
        !node.log().contains("requesting a client certificate"),
        "{}",
        node.log()
    );
    drop(skiffd);

    // Rotation: given a certificate that lives 45 s (signed by the cluster CA), skiffd asks for the
    // next one at 70-90 % of that life, with its own credentials, and goes on past the old expiry.
    let current = node.var("pki/kubelet-client-current.pem");
    let expires = install_short_cert(&cp, &node, &name, Duration::from_secs(45));
    let short = std::fs::read_link(&current).unwrap();
    let _skiffd = node.spawn(&args);
    let rotated = wait_for("certificate rotation", Duration::from_secs(90), || {
        let t = std::fs::read_link(&current).ok()?;
        (t != short).then_some(t)
    });
    let log = node.log();
    assert!(log.contains("client certificate issued"), "{log}");
    let csrs = get_json(&cp, &["csr"]).unwrap();
    let own = format!("system:node:{name}");
    assert!(
        csrs["items"].as_array().unwrap().iter().any(
            |c| c["spec"]["username"] == own.as_str() && c["status"]["certificate"].is_string()
        ),
        "no CSR issued to {own}: {csrs}"
    );
    eprintln!("rotated to {rotated:?}");
    let past = expires + Duration::from_secs(3);
    while std::time::SystemTime::now() < past {
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = lease(&cp).unwrap();
    let after = wait_for(
        "lease renewed after the old certificate expired",
        Duration::from_secs(25),
        || {
            let l = lease(&cp)?;
            (l["spec"]["renewTime"] != before["spec"]["renewTime"]).then_some(l)
        },
    );
    assert_eq!(after["spec"]["holderIdentity"], name.as_str());
    assert!(
        ready_after < Duration::from_secs(10),
        "Ready only {ready_after:?} after skiffd started"
    );
}

/// Makes the node's current certificate one for `system:node:<name>` signed by the cluster CA that
/// expires `life` from now (rcgen sets the dates, openssl signs keeping them); returns its expiry.
fn install_short_cert(
    cp: &ControlPlane,
    node: &NodeDir,
    name: &str,
    life: Duration,
) -> std::time::SystemTime {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{name}"));
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::seconds(5);
    p.not_after = now + time::Duration::seconds(life.as_secs() as i64);
    let unsigned = node.dir.join("short-self.pem");
    std::fs::write(&unsigned, p.self_signed(&key).unwrap().pem()).unwrap();
    let signed = node.dir.join("short-signed.pem");
    let out = Command::new("openssl")
        .args(["x509", "-preserve_dates", "-set_serial", "4242", "-in"])
        .arg(&unsigned)
        .arg("-CA")
        .arg(cp.pki().join("ca.crt"))
        .arg("-CAkey")
        .arg(cp.pki().join("ca.key"))
        .arg("-out")
        .arg(&signed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(&signed).unwrap() + &key.serialize_pem();
    let pki = node.var("pki");
    std::fs::write(pki.join("kubelet-client-short.pem"), pem).unwrap();
    let link = pki.join("short-link");
    std::os::unix::fs::symlink("kubelet-client-short.pem", &link).unwrap();
    std::fs::rename(&link, pki.join("kubelet-client-current.pem")).unwrap();
    std::time::SystemTime::now() + life
}

/// The resident set of `pid`, as /proc reports it.
fn vm_rss(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}
