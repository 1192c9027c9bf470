//! The Vagrant lab's files as Vagrant and the shells read them: `vagrant validate` on the Vagrantfile
//! (provider options ignored, so neither VirtualBox nor libvirt has to be installed), the join command
//! the Vagrantfile writes before any guest boots, and every provisioning and scenario script through
//! `bash -n` and shellcheck.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| {
        panic!("run {c:?}: {e} (tests/apt-packages lists vagrant and shellcheck)")
    });
    assert!(
        out.status.success(),
        "{c:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory for Vagrant's own state and the lab's, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("skiff-lab-vagrant-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vagrant ARGS` in vagrant/, its own state kept in `scratch`.
fn vagrant(scratch: &Scratch, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut c = Command::new("vagrant");
    c.args(args)
        .current_dir(repo().join("vagrant"))
        .env("VAGRANT_HOME", scratch.0.join("home"))
        .env("VAGRANT_DOTFILE_PATH", scratch.0.join("dot"))
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("SKIFF_LAB_STATE", scratch.0.join("state"))
        .envs(env.iter().copied());
    c
}

#[test]
fn vagrantfile_validates_for_any_worker_count() {
    let scratch = Scratch::new("validate");
    for workers in ["1", "2", "3"] {
        let mut c = vagrant(
            &scratch,
            &[("SKIFF_WORKERS", workers), ("SKIFF_ON_CP", "1")],
            &["validate", "--ignore-provider"],
        );
        let out = String::from_utf8_lossy(&run(&mut c).stdout).into_owned();
        assert!(out.contains("Vagrantfile validated successfully"), "{out}");
        // One control plane and N workers, each named for the lab's /etc/hosts.
        for n in 1..=workers.parse::<u8>().unwrap() {
            assert!(out.contains(&format!("w{n}:")), "no w{n} in: {out}");
        }
        assert!(out.contains("cp:"), "{out}");
    }
    // Validation makes no credentials: only booting and provisioning do.
    assert!(!scratch.0.join("state").exists());
}

#[test]
fn vagrantfile_refuses_a_bad_worker_count() {
    let scratch = Scratch::new("bad");
    let out = vagrant(
        &scratch,
        &[("SKIFF_WORKERS", "0")],
        &["validate", "--ignore-provider"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("SKIFF_WORKERS must be between 1 and 9"),
        "{text}"
    );
}

/// The CA and token the Vagrantfile makes for `vagrant up` give a join command whose
/// `--discovery-token-ca-cert-hash` is the hash kubeadm computes of that CA (the SHA-256 of its
/// public key's DER), made once and kept.
#[test]
fn vagrantfile_writes_a_join_command_for_its_ca() {
    let scratch = Scratch::new("join");
    let state = scratch.0.join("state");
    // The Vagrantfile's top level, as `vagrant up` loads it, without booting anything.
    let load = |dir: &Path| {
        run(Command::new("ruby")
            .arg("-e")
            .arg(
                "ARGV.replace(['up']); module Vagrant; def self.configure(*); end; end; \
                 load 'Vagrantfile'",
            )
            .current_dir(repo().join("vagrant"))
            .env("SKIFF_LAB_STATE", dir));
    };
    load(&state);
    let join = std::fs::read_to_string(state.join("join.sh")).unwrap();
    let hash = run(Command::new("sh").arg("-c").arg(format!(
        "openssl x509 -pubkey -noout -in {}/pki/ca.crt | openssl pkey -pubin -outform der | sha256sum",
        state.display()
    )));
    let hash = String::from_utf8_lossy(&hash.stdout);
    let hash = hash.split_whitespace().next().unwrap();
    let token = std::fs::read_to_string(state.join("pki/token")).unwrap();
    assert!(
        join.contains(&format!(
            "kubeadm join 192.168.56.10:6443 --token {} --discovery-token-ca-cert-hash sha256:{hash}",
            token.trim()
        )),
        "{join}"
    );
    let ca = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(state.join("pki/ca.crt")));
    assert!(String::from_utf8_lossy(&ca.stdout).contains("CA:TRUE"));
    // Loaded again (a second `vagrant up`), the same CA and token.
    load(&state);
    assert_eq!(
        std::fs::read_to_string(state.join("join.sh")).unwrap(),
        join
    );
}

#[test]
fn scripts_parse_and_pass_shellcheck() {
    let repo = repo();
    let scripts = [
        "vagrant/provision/lib.sh",
        "vagrant/provision/common.sh",
        "vagrant/provision/control-plane.sh",
        "vagrant/provision/worker.sh",
        "vagrant/provision/skiff.sh",
        "vagrant/provision/kubeadm-config.sh",
        "vagrant/scenarios/run",
        "scripts/lab-images",
    ];
    for s in scripts {
        run(Command::new("bash").arg("-n").arg(repo.join(s)));
    }
    run(Command::new("shellcheck")
        .arg("--external-sources")
        .args(scripts)
        .current_dir(&repo));
}

/// Each provisioning script names what it misses instead of running half-way.
#[test]
fn provisioning_refuses_missing_settings() {
    let repo = repo();
    for (script, missing) in [
        ("common.sh", "NODE_NAME is not set"),
        ("control-plane.sh", "NODE_NAME is not set"),
        ("worker.sh", "NODE_NAME is not set"),
    ] {
        let out = Command::new("bash")
            .arg(repo.join("vagrant/provision").join(script))
            .env_remove("NODE_NAME")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{script} ran without NODE_NAME");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(missing), "{script}: {err}");
    }
    let out = Command::new("bash")
        .arg(repo.join("vagrant/provision/control-plane.sh"))
        .envs([
            ("NODE_NAME", "cp"),
            ("NODE_IP", "192.168.56.10"),
            ("REGISTRY_MIRROR", "http://x"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("REGISTRY_MIRROR=http://x: expected host:port"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration control-plane.sh gives `kubeadm init` is one the real kubeadm accepts, with
/// and without skiff on the control plane and a bootstrap token made by the Vagrantfile.
#[test]
fn kubeadm_accepts_the_control_plane_config() {
    let scratch = Scratch::new("kubeadm");
    let kubeadm = skiff_tests::k8s::bin::path("kubeadm");
    for (skiff_on_cp, token, socket) in [
        ("0", "", "unix:///run/containerd/containerd.sock"),
        (
            "1",
            "abcdef.0123456789abcdef",
            "unix:///run/skiff/skiff.sock",
        ),
    ] {
        let out = run(
            Command::new(repo().join("vagrant/provision/kubeadm-config.sh")).envs([
                ("NODE_NAME", "cp"),
                ("NODE_IP", "192.168.56.10"),
                ("SKIFF_ON_CP", skiff_on_cp),
                ("KUBEADM_TOKEN", token),
            ]),
        );
        let config = String::from_utf8_lossy(&out.stdout).into_owned();
        for want in [
            "advertiseAddress: 192.168.56.10",
            "node-ip: 192.168.56.10",
            "podSubnet: 10.244.0.0/16",
            "serviceSubnet: 10.96.0.0/12",
            "kubernetesVersion: v1.28.7",
            &format!("criSocket: {socket}"),
        ] {
            assert!(config.contains(want), "no {want} in:\n{config}");
        }
        assert_eq!(
            config.contains("bootstrapTokens"),
            !token.is_empty(),
            "{config}"
        );
        assert!(config.contains(token));
        let file = scratch.0.join("kubeadm.yaml");
        std::fs::write(&file, &config).unwrap();
        run(Command::new(&kubeadm)
            .args(["config", "validate", "--config"])
            .arg(&file));
    }
}

/// A worker's install of skiff (`skiff.sh`, as worker.sh runs it with prebuilt binaries), run for
/// real in a mount, UTS and network namespace of its own where /etc, /usr and /opt are overlays:
/// skiffd becomes the kubelet with the lab address as `--node-ip`, docker.io and registry.k8s.io
/// are mirrored, and a second run changes nothing.
#[test]
fn worker_install_in_a_mount_namespace() {
    let scratch = Scratch::new("install");
    let d = scratch.0.display();
    let repo = repo();
    let bins = skiff_tests::binary::workspace_dir().join("target/debug");
    let script = format!(
        "set -e
for t in etc usr opt; do
    mkdir -p {d}/$t {d}/w-$t
    mount -t overlay overlay -o lowerdir=/$t,upperdir={d}/$t,workdir={d}/w-$t /$t
done
run() {{
    NODE_NAME=w1 NODE_IP=192.168.56.11 SKIFF_BIN_DIR={bins} REGISTRY_MIRROR=192.168.56.1:5000 \
        {repo}/vagrant/provision/skiff.sh
    echo kubelet=$(readlink /usr/bin/kubelet)
    cat /etc/default/kubelet /etc/skiff/registries.toml
    ls /usr/local/bin/skiffd /usr/local/bin/skiff-monitor /usr/local/bin/skiff /opt/cni/bin/skiff-bridge \
        /lib/systemd/system/kubelet.service /lib/systemd/system/kubelet.service.d/10-kubeadm.conf
}}
run >{d}/first
run >{d}/second
",
        bins = bins.display(),
        repo = repo.display(),
    );
    run(Command::new("unshare").args([
        "--mount",
        "--uts",
        "--net",
        "--propagation",
        "private",
        "bash",
        "-c",
        &script,
    ]));
    let first = std::fs::read_to_string(scratch.0.join("first")).unwrap();
    for want in [
        "kubelet=../local/bin/skiffd",
        "KUBELET_EXTRA_ARGS=\"--node-ip=192.168.56.11\"",
        "[registries.\"docker.io\"]\nmirrors = [\"http://192.168.56.1:5000\"]",
        "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://192.168.56.1:5000\"]",
        "/opt/cni/bin/skiff-bridge",
        "10-kubeadm.conf",
    ] {
        assert!(first.contains(want), "no {want} in:\n{first}");
    }
    assert_eq!(
        std::fs::read_to_string(scratch.0.join("second")).unwrap(),
        first
    );
    // The host's own files were not touched.
    assert!(
        !Path::new("/etc/default/kubelet").exists()
            || !std::fs::read_to_string("/etc/default/kubelet")
                .unwrap()
                .contains("192.168.56.11")
    );
}
