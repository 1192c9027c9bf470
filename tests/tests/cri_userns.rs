//! Pods in a user namespace of their own (`userns_options` mode POD): advertised by RuntimeStatus, the
//! mapping seen by the pod's containers, the image's files owned by the pod's root through idmapped
//! layers, files written to volumes owned on the host by the mapped ids (or, idmapped, by the ids the
//! mount maps back to), exec in the same namespace, and the options a runtime must refuse.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use skiff_tests::cri::{
    bridge_conflist, container_config, host_network, pod_config, v1 as cri, Options, Skiffd,
};
use skiff_tests::security::{assert_closed_to_other_users, Probe};

/// The pod's ids on the host: an unprivileged range no other test maps.
const HOST_ID: u32 = 231_000;
const LENGTH: u32 = 65_536;

fn mapping(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id,
        host_id,
        length,
    }
}

fn with_userns(
    mut config: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
    maps: Vec<cri::IdMapping>,
) -> cri::PodSandboxConfig {
    let linux = config.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    let ns = sc.namespace_options.get_or_insert_with(Default::default);
    ns.userns_options = Some(cri::UserNamespace {
        mode: mode as i32,
        uids: maps.clone(),
        gids: maps,
    });
    config
}

/// A host directory for a test, removed at the end.
struct HostDir(PathBuf);

impl HostDir {
    fn new(name: &str, mode: u32) -> HostDir {
        let p = PathBuf::from(format!(
            "/var/tmp/skiff-test/userns-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        HostDir(p)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bind(host: &Path, container: &str, idmap: bool) -> cri::Mount {
    let maps = if idmap {
        vec![mapping(0, HOST_ID, LENGTH)]
    } else {
        Vec::new()
    };
    cri::Mount {
        container_path: container.into(),
        host_path: host.to_string_lossy().into_owned(),
        uid_mappings: maps.clone(),
        gid_mappings: maps,
        ..Default::default()
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    (m.uid(), m.gid())
}

#[tokio::test]
async fn status_advertises_user_namespaces_on_the_default_handler() {
    let mut d = Skiffd::start().await;
    let st =
        d.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let default = st
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .expect("the default handler is listed");
    assert!(
        default.features.as_ref().unwrap().user_namespaces,
        "this kernel allows user namespaces and idmapped mounts: {st:?}"
    );
}

#[tokio::test]
async fn pod_user_namespace_maps_root_and_owns_its_files() {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist("skuserns0", "10.211.122.0/24", ipam.path())),
        ..Default::default()
    })
    .await;
    d.pull_busybox().await;
    // An emptyDir is world-writable; a volume the kubelet idmaps is not, its root owns it.
    let empty_dir = HostDir::new("empty", 0o777);
    let idmapped = HostDir::new("idmapped", 0o755);
    let mut config = with_userns(
        pod_config("userns", &d.log_dir()),
        cri::NamespaceMode::Pod,
        vec![mapping(0, HOST_ID, LENGTH)],
    );
    // Set as the pod's root, in namespaces it owns.
    config.linux.as_mut().unwrap().sysctls = [
        ("net.ipv4.ip_unprivileged_port_start", "80"),
        ("kernel.shm_rmid_forced", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let pod = d.run_pod(config).await;
    let script = "cat /proc/self/uid_map /proc/self/gid_map; id -u; \
                  echo sysctls $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start \
                  /proc/sys/kernel/shm_rmid_forced); \
                  stat -c 'passwd-owner %u:%g' /etc/passwd; \
                  echo written > /etc/by-root && echo etc-writable; \
                  touch /empty/plain /idmapped/mapped && echo volumes-written";
    let mut c = container_config("c", script);
    c.mounts = vec![
        bind(&empty_dir.0, "/empty", false),
        bind(&idmapped.0, "/idmapped", true),
    ];
    let id = d.run_container(&pod, c).await;
    let st = d.wait_exited(&id).await;
    let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
    let words: Vec<&str> = log.split_whitespace().collect();
    let has = |seq: &[&str]| words.windows(seq.len()).any(|w| w == seq);
    let (host_id, length) = (HOST_ID.to_string(), LENGTH.to_string());
    assert_eq!(st.exit_code, 0, "log:\n{log}\n{}", d.daemon_log());
    assert!(has(&["0", &host_id, &length]), "uid_map: {log}");
    assert!(has(&["sysctls", "80", "1"]), "pod sysctls: {log}");
    assert!(
        has(&["passwd-owner", "0:0"]),
        "image files owned by the pod's root: {log}"
    );
    assert!(has(&["etc-writable"]) && has(&["volumes-written"]), "{log}");
    // Unmapped, the container's root writes as the host ids it maps to.
    assert_eq!(owner(&empty_dir.0.join("plain")), (HOST_ID, HOST_ID));
    // Idmapped, what it writes as its root lands as the ids its root maps back to: the host's 0.
    assert_eq!(owner(&idmapped.0.join("mapped")), (0, 0));
    // The pod's writable layer belongs to its root on the host; the image's layers are untouched.
    let upper = d.dir.join("state/containers").join(&id).join("upper");
    assert_eq!(owner(&upper), (HOST_ID, HOST_ID));
    assert_eq!(owner(&upper.join("etc/by-root")), (HOST_ID, HOST_ID));
    // The pod's root is let through the daemon's private directories to search them; every other
    // user is still refused on the way to the container's files.
    let state = d.dir.join("state");
    let rootfs = state.join("containers").join(&id).join("rootfs");
    assert_closed_to_other_users(&[
        (Probe::Open, &state),
        (Probe::Open, &d.dir.join("run")),
        (Probe::Stat, &upper.join("etc/by-root")),
        (Probe::Stat, &rootfs.join("bin/sh")),
    ]);
    // sysfs cannot be idmapped: the container is refused, saying so.
    let mut c = container_config("sysfs", "true");
    c.mounts = vec![bind(Path::new("/sys/kernel"), "/k", true)];
    let e = d
        .create_container(&pod, c)
        .await
        .expect_err("an idmapped sysfs mount must be refused");
    assert!(e.message().contains("MOUNT_ATTR_IDMAP"), "{e}");
    // A process exec'd into a running container of the pod is in the pod's user namespace too.
    let sleeper = d
        .run_container(&pod, container_config("sleeper", "exec sleep 3600"))
        .await;
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["cat".into(), "/proc/self/uid_map".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", host_id.as_str(), length.as_str()],
        "exec: {out} {}",
        String::from_utf8_lossy(&r.stderr)
    );
    d.stop_and_remove_pod(&pod.id).await;
}

#[tokio::test]
async fn bad_user_namespace_options_are_refused() {
    use cri::NamespaceMode as M;
    let mut d = Skiffd::start().await;
    let cases: Vec<(&str, cri::PodSandboxConfig, &str)> = vec![
        (
            "two mappings",
            with_userns(
                pod_config("two", &d.log_dir()),
                M::Pod,
                vec![mapping(0, 1000, 100_000), mapping(0, 2000, 100_000)],
            ),
            "exactly one mapping",
        ),
        (
            "container id 0 unmapped",
            with_userns(
                pod_config("noroot", &d.log_dir()),
                M::Pod,
                vec![mapping(1, 1000, 100_000)],
            ),
            "container id 0 must be mapped",
        ),
        (
            "the node's root mapped",
            with_userns(
                pod_config("hostroot", &d.log_dir()),
                M::Pod,
                vec![mapping(0, 0, 100_000)],
            ),
            "node's root",
        ),
        (
            "CONTAINER",
            with_userns(pod_config("ctr", &d.log_dir()), M::Container, vec![]),
            "POD or NODE",
        ),
        (
            "TARGET",
            with_userns(pod_config("tgt", &d.log_dir()), M::Target, vec![]),
            "POD or NODE",
        ),
        (
            "host network",
            with_userns(
                host_network(pod_config("hostnet", &d.log_dir())),
                M::Pod,
                vec![mapping(0, HOST_ID, LENGTH)],
            ),
            "node's network namespace",
        ),
    ];
    for (what, config, want) in cases {
        let e = d
            .run_pod_sandbox(config)
            .await
            .expect_err(&format!("{what}: RunPodSandbox must fail"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
        assert!(e.message().contains(want), "{what}: {e}");
    }
    let pods = d.list_pods(None).await;
    assert!(pods.is_empty(), "a refused pod left a sandbox: {pods:?}");
    let runs = std::fs::read_dir(d.dir.join("run/sandboxes"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(runs, 0, "a refused pod left a directory");
    // NODE is the node's own user namespace.
    let node = with_userns(
        host_network(pod_config("node", &d.log_dir())),
        M::Node,
        vec![],
    );
    let pod = d.run_pod(node).await;
    d.pull_busybox().await;
    let id = d
        .run_container(&pod, container_config("c", "cat /proc/self/uid_map"))
        .await;
    let st = d.wait_exited(&id).await;
    let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(
        log.split_whitespace().rev().take(3).collect::<Vec<_>>(),
        host.split_whitespace().rev().take(3).collect::<Vec<_>>(),
        "{log}"
    );
    d.stop_and_remove_pod(&pod.id).await;
}
