//! Pod sandboxes through skiffd's real socket: pinned namespaces, the pod's files, sysctls, the shared
//! PID namespace, CNI with skiff-bridge, filters, idempotence, hostile requests and restarts. Each test
//! that needs a network gets its own bridge, /24 and IPAM directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use skiff_tests::cri::{
    command_lines, container_config, next_event, pod_config, v1 as cri, Options, Skiffd,
};
use tonic::Code;

/// A private pod network for test `n`: bridge `sksb<n>`, subnet 10.88.<n>.0/24, IPAM files in its own
/// directory. Dropping it deletes the bridge and the directory.
struct Net {
    n: u8,
    ipam: PathBuf,
}

impl Net {
    fn new(n: u8) -> Net {
        let ipam = PathBuf::from(format!(
            "/var/tmp/skiff-test/sandbox-ipam-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&ipam);
        Net { n, ipam }
    }

    fn name(&self) -> String {
        format!("sksb{}", self.n)
    }

    fn conflist(&self) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{name}","plugins":[{{"type":"skiff-bridge","bridge":"{name}",
               "ipam":{{"type":"host-local","subnet":"10.88.{n}.0/24","dataDir":"{dir}"}}}}]}}"#,
            name = self.name(),
            n = self.n,
            dir = self.ipam.display()
        )
    }

    fn options(&self) -> Options {
        Options {
            cni_conflist: Some(self.conflist()),
            ..Default::default()
        }
    }

    /// IPs the IPAM store holds for this network.
    fn allocated(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.ipam.join(self.name())) else {
            return Vec::new();
        };
        rd.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name()])
            .output();
        let _ = std::fs::remove_dir_all(&self.ipam);
    }
}

fn verbose(s: &cri::PodSandboxStatusResponse) -> serde_json::Value {
    serde_json::from_str(&s.info["info"]).expect("verbose info is JSON")
}

fn ip(s: &cri::PodSandboxStatusResponse) -> String {
    s.status
        .as_ref()
        .unwrap()
        .network
        .as_ref()
        .unwrap()
        .ip
        .clone()
}

fn state(s: &cri::PodSandboxStatusResponse) -> cri::PodSandboxState {
    cri::PodSandboxState::try_from(s.status.as_ref().unwrap().state).unwrap()
}

fn with_ns(
    mut c: cri::PodSandboxConfig,
    network: i32,
    pid: i32,
    ipc: i32,
) -> cri::PodSandboxConfig {
    c.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network,
                pid,
                ipc,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

fn host_pod(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    let node = cri::NamespaceMode::Node as i32;
    with_ns(pod_config(name, log_dir), node, node, node)
}

/// Mount points at or below `dir` in skiffd's (the host's) mount namespace.
fn mounts_below(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.to_string_lossy().into_owned();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect()
}

fn pods_dir(d: &Skiffd) -> PathBuf {
    d.dir.join("run/sandboxes")
}

fn pod_dirs(d: &Skiffd) -> Vec<String> {
    std::fs::read_dir(pods_dir(d))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `args` with nsenter and returns its trimmed stdout.
fn nsenter(args: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(
        out.status.success(),
        "nsenter {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn path_of(v: &serde_json::Value) -> String {
    v.as_str().expect("a path").to_string()
}

#[tokio::test]
async fn pod_on_a_bridge_network_gets_an_ip_and_releases_it() {
    let net = Net::new(211);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let id = d.run_pod_sandbox(pod_config("web", &log)).await.unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let s = d.pod_status(&id).await.unwrap();
    assert_eq!(state(&s), cri::PodSandboxState::SandboxReady);
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.metadata.as_ref().unwrap().name, "web");
    assert_eq!(st.labels["app"], "web");
    assert!(st.created_at > 0);
    let ip = ip(&s);
    assert!(ip.starts_with("10.88.211."), "pod IP {ip:?}");
    assert_eq!(net.allocated(), vec![ip.clone()]);

    let info = verbose(&s);
    let netns = path_of(&info["pinnedNamespaces"]["network"]);
    assert!(netns.starts_with(&pods_dir(&d).to_string_lossy().into_owned()));
    assert!(mounts_below(&d.dir).contains(&netns));
    let addrs = nsenter(&[&format!("--net={netns}"), "ip", "-o", "addr"]);
    assert!(
        addrs.contains(&format!("eth0    inet {ip}/24")) || addrs.contains(&ip),
        "{addrs}"
    );
    let lo = nsenter(&[&format!("--net={netns}"), "ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP") || lo.contains("LOOPBACK,UP"), "{lo}");
    assert!(std::path::Path::new(&log.join("web")).is_dir());

    d.stop_pod(&id).await.unwrap();
    assert!(net.allocated().is_empty(), "IP still allocated after stopp");
    let s = d.pod_status(&id).await.unwrap();
    assert_eq!(state(&s), cri::PodSandboxState::SandboxNotready);
    d.stop_pod(&id).await.unwrap();

    d.remove_pod(&id).await.unwrap();
    d.remove_pod(&id).await.unwrap();
    assert_eq!(d.pod_status(&id).await.unwrap_err().code(), Code::NotFound);
    assert!(
        mounts_below(&d.dir).is_empty(),
        "{:?}",
        mounts_below(&d.dir)
    );
    assert!(pod_dirs(&d).is_empty());
    assert!(!Path::new(&netns).exists());
    let cache = d.dir.join("cni-cache/results");
    let cached = std::fs::read_dir(&cache).map(|rd| rd.count()).unwrap_or(0);
    assert_eq!(cached, 0, "CNI cache entries left in {}", cache.display());
}

#[tokio::test]
async fn host_network_pod_needs_no_cni_but_others_do() {
    let mut d = Skiffd::start().await;
    let log = d.log_dir();
    let err = d
        .run_pod_sandbox(pod_config("needsnet", &log))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("CNI"), "{}", err.message());
    assert!(pod_dirs(&d).is_empty());
    assert!(d.list_pods(None).await.is_empty());

    let id = d.run_pod_sandbox(host_pod("hostnet", &log)).await.unwrap();
    let s = d.pod_status(&id).await.unwrap();
    assert_eq!(state(&s), cri::PodSandboxState::SandboxReady);
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.network.as_ref().unwrap().ip, "");
    let opts = st
        .linux
        .as_ref()
        .unwrap()
        .namespaces
        .as_ref()
        .unwrap()
        .options
        .clone()
        .unwrap();
    assert_eq!(opts.network, cri::NamespaceMode::Node as i32);
    let info = verbose(&s);
    assert!(info["pinnedNamespaces"]["network"].is_null());
    assert!(info["pinnedNamespaces"]["ipc"].is_null());
    assert!(info["infraPid"].is_null());
    let dir = pods_dir(&d).join(&id);
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        host_name
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    );
    assert!(mounts_below(&d.dir).is_empty());
    d.stop_pod(&id).await.unwrap();
    d.remove_pod(&id).await.unwrap();
    assert!(pod_dirs(&d).is_empty());
}

#[tokio::test]
async fn pod_files_hostname_and_shm() {
    let net = Net::new(212);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let mut c = pod_config("files", &log);
    c.hostname = "files-host".into();
    c.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into(), "fd00::10".into()],
        searches: vec!["default.svc.cluster.local".into(), "cluster.local".into()],
        options: vec!["ndots:5".into(), "edns0".into()],
    });
    let id = d.run_pod_sandbox(c).await.unwrap();
    let s = d.pod_status(&id).await.unwrap();
    let ip = ip(&s);
    let dir = pods_dir(&d).join(&id);
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search default.svc.cluster.local cluster.local\nnameserver 10.96.0.10\n\
         nameserver fd00::10\noptions ndots:5 edns0\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("hostname")).unwrap(),
        "files-host\n"
    );
    let hosts = std::fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains(&format!("{ip}\tfiles-host\n")), "{hosts}");

    let info = verbose(&s);
    let uts = path_of(&info["pinnedNamespaces"]["uts"]);
    assert_eq!(
        nsenter(&[&format!("--uts={uts}"), "hostname"]),
        "files-host"
    );
    let shm = dir.join("shm").to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(shm.as_str()))
        .expect("shm is mounted");
    assert!(line.contains(" - tmpfs shm "), "{line}");
    assert!(line.contains("size=65536k"), "{line}");

    d.remove_pod(&id).await.unwrap();
    assert!(mounts_below(&d.dir).is_empty());
    assert!(net.allocated().is_empty());
}

#[tokio::test]
async fn sysctls_apply_inside_the_pod_only() {
    let net = Net::new(213);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let mut c = pod_config("sysctl", &log);
    c.linux.as_mut().unwrap().sysctls = [
        (
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "79".to_string(),
        ),
        ("kernel.shmmni".to_string(), "4000".to_string()),
    ]
    .into();
    let id = d.run_pod_sandbox(c).await.unwrap();
    let info = verbose(&d.pod_status(&id).await.unwrap());
    let netns = path_of(&info["pinnedNamespaces"]["network"]);
    let ipcns = path_of(&info["pinnedNamespaces"]["ipc"]);
    let port_start = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
    assert_eq!(
        nsenter(&[&format!("--net={netns}"), "cat", port_start]),
        "79"
    );
    assert_ne!(std::fs::read_to_string(port_start).unwrap().trim(), "79");
    let shmmni = "/proc/sys/kernel/shmmni";
    assert_eq!(nsenter(&[&format!("--ipc={ipcns}"), "cat", shmmni]), "4000");
    assert_ne!(std::fs::read_to_string(shmmni).unwrap().trim(), "4000");

    let refused = [
        ("kernel.hostname", "1"),
        ("vm.swappiness", "1"),
        ("net.ipv4.no_such_knob", "1"),
        ("net/../../etc", "1"),
        ("net.ipv4.ip_unprivileged_port_start", "not-a-number"),
    ];
    for (key, value) in refused {
        let mut c = pod_config("badsysctl", &log);
        c.linux.as_mut().unwrap().sysctls = [(key.to_string(), value.to_string())].into();
        let err = d.run_pod_sandbox(c).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}: {err:?}");
        assert!(err.message().contains("sysctls"), "{}", err.message());
    }
    assert_eq!(pod_dirs(&d), vec![id.clone()]);
    d.remove_pod(&id).await.unwrap();
}

/// Safe and unsafe sysctls (as the kubelet names them) of a pod reach its containers, which join the
/// pod's pinned network and IPC namespaces by path.
#[tokio::test]
async fn pod_sysctls_are_seen_by_its_containers() {
    let net = Net::new(220);
    let mut d = Skiffd::start_with(net.options()).await;
    d.pull_busybox().await;
    let mut c = pod_config("sysctl-ctr", &d.log_dir());
    let sysctls = [
        ("kernel.shm_rmid_forced", "1"),
        ("net.ipv4.ping_group_range", "0 2147483647"),
        ("net.ipv4.ip_unprivileged_port_start", "80"),
        ("fs.mqueue.msg_max", "100"),
    ];
    c.linux.as_mut().unwrap().sysctls = sysctls
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let pod = d.run_pod(c).await;
    let ctr = d
        .run_container(&pod, container_config("app", "exec sleep 3600"))
        .await;
    for (key, want) in sysctls {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        let r =
            d.rt.exec_sync(cri::ExecSyncRequest {
                container_id: ctr.clone(),
                cmd: vec!["cat".into(), file],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync cat {key}: {e}"))
            .into_inner();
        let seen = String::from_utf8_lossy(&r.stdout);
        let seen = seen.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!((r.exit_code, seen.as_str()), (0, want), "{key}");
    }
    d.stop_and_remove_pod(&pod.id).await;
}

#[tokio::test]
async fn shared_pid_namespace_is_held_by_an_infra_process() {
    let net = Net::new(214);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let pod = cri::NamespaceMode::Pod as i32;
    let c = with_ns(pod_config("sharedpid", &log), pod, pod, pod);
    let id = d.run_pod_sandbox(c).await.unwrap();
    let info = verbose(&d.pod_status(&id).await.unwrap());
    let pid = info["infraPid"].as_i64().expect("an infra pid");
    assert_eq!(
        path_of(&info["pinnedNamespaces"]["pid"]),
        format!("/proc/{pid}/ns/pid")
    );
    let status_text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status_text
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "infra is not PID 1: {nspid}"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );
    let netns = path_of(&info["pinnedNamespaces"]["network"]);
    let pod_net = nsenter(&[&format!("--net={netns}"), "readlink", "/proc/self/ns/net"]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        PathBuf::from(pod_net),
        "the infra process is not in the pod's network namespace"
    );
    // A process in the pod's PID namespace sees the infra as PID 1.
    let seen = nsenter(&["--pid", &format!("--target={pid}"), "sh", "-c", "echo $$"]);
    assert!(seen.parse::<i32>().unwrap() > 1);

    d.stop_pod(&id).await.unwrap();
    let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "infra {pid} still runs after stopp");
    d.remove_pod(&id).await.unwrap();

    let container = cri::NamespaceMode::Container as i32;
    let c = with_ns(pod_config("ownpid", &log), pod, container, pod);
    let id = d.run_pod_sandbox(c).await.unwrap();
    let info = verbose(&d.pod_status(&id).await.unwrap());
    assert!(info["infraPid"].is_null());
    assert!(info["pinnedNamespaces"]["pid"].is_null());
    d.remove_pod(&id).await.unwrap();
}

#[tokio::test]
async fn list_pod_sandbox_filters() {
    let mut d = Skiffd::start().await;
    let log = d.log_dir();
    let mut ids = Vec::new();
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let mut c = host_pod(name, &log);
        c.labels.insert("tier".into(), tier.into());
        ids.push(d.run_pod_sandbox(c).await.unwrap());
    }
    d.stop_pod(&ids[2]).await.unwrap();
    assert_eq!(d.list_pods(None).await.len(), 3);

    let by_id = d
        .list_pods(Some(cri::PodSandboxFilter {
            id: ids[1].clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].id, ids[1]);
    assert_eq!(by_id[0].metadata.as_ref().unwrap().name, "b");

    let state = |s: cri::PodSandboxState| cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: s as i32 }),
        ..Default::default()
    };
    let ready = d
        .list_pods(Some(state(cri::PodSandboxState::SandboxReady)))
        .await;
    assert_eq!(ready.len(), 2);
    let not_ready = d
        .list_pods(Some(state(cri::PodSandboxState::SandboxNotready)))
        .await;
    assert_eq!(not_ready.len(), 1);
    assert_eq!(not_ready[0].id, ids[2]);

    let labels = |pairs: &[(&str, &str)]| cri::PodSandboxFilter {
        label_selector: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    assert_eq!(d.list_pods(Some(labels(&[("tier", "web")]))).await.len(), 2);
    let one = d
        .list_pods(Some(labels(&[("tier", "web"), ("app", "b")])))
        .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, ids[1]);
    assert!(d
        .list_pods(Some(labels(&[("tier", "cache")])))
        .await
        .is_empty());
    let mut both = state(cri::PodSandboxState::SandboxReady);
    both.label_selector = labels(&[("tier", "db")]).label_selector;
    assert!(d.list_pods(Some(both)).await.is_empty());
    let unknown = cri::PodSandboxFilter {
        id: "f".repeat(64),
        ..Default::default()
    };
    assert!(d.list_pods(Some(unknown)).await.is_empty());
    for id in &ids {
        d.remove_pod(id).await.unwrap();
    }
    assert!(d.list_pods(None).await.is_empty());
}

#[tokio::test]
async fn stop_and_remove_are_idempotent_and_check_ids() {
    let mut d = Skiffd::start().await;
    let log = d.log_dir();
    let unknown = "0123456789abcdef".repeat(4);
    d.stop_pod(&unknown).await.unwrap();
    d.remove_pod(&unknown).await.unwrap();
    assert_eq!(
        d.pod_status(&unknown).await.unwrap_err().code(),
        Code::NotFound
    );
    for bad in ["", "../../etc", "a/b", &"x".repeat(300)] {
        assert_eq!(
            d.stop_pod(bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            d.remove_pod(bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
        assert_eq!(
            d.pod_status(bad).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }

    let id = d.run_pod_sandbox(host_pod("twice", &log)).await.unwrap();
    let dup = d
        .run_pod_sandbox(host_pod("twice", &log))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    // Remove without stop stops first.
    d.remove_pod(&id).await.unwrap();
    d.remove_pod(&id).await.unwrap();
    d.stop_pod(&id).await.unwrap();
    assert!(d.list_pods(None).await.is_empty());
    // The same pod can be made again once the old sandbox is gone.
    let again = d.run_pod_sandbox(host_pod("twice", &log)).await.unwrap();
    assert_ne!(again, id);
    d.remove_pod(&again).await.unwrap();
}

#[tokio::test]
async fn hostile_requests_are_refused_and_leave_nothing() {
    let net = Net::new(215);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let mut cases: Vec<(&str, cri::PodSandboxConfig, String)> = Vec::new();
    let mut c = pod_config("x", &log);
    c.metadata = None;
    cases.push(("metadata", c, String::new()));
    let mut c = pod_config("x", &log);
    c.metadata.as_mut().unwrap().name.clear();
    cases.push(("metadata.name", c, String::new()));
    let mut c = pod_config("x", &log);
    c.metadata.as_mut().unwrap().namespace.clear();
    cases.push(("metadata.namespace", c, String::new()));
    let mut c = pod_config("x", &log);
    c.metadata.as_mut().unwrap().name = "n".repeat(100_000);
    cases.push(("metadata.name", c, String::new()));
    let mut c = pod_config("x", &log);
    c.log_directory = format!("{}/../../../etc", log.display());
    cases.push(("log_directory", c, String::new()));
    let mut c = pod_config("x", &log);
    c.log_directory = "relative/logs".into();
    cases.push(("log_directory", c, String::new()));
    let mut c = pod_config("x", &log);
    c.hostname = "../../etc/passwd".into();
    cases.push(("hostname", c, String::new()));
    let mut c = pod_config("x", &log);
    c.hostname = "h".repeat(65);
    cases.push(("hostname", c, String::new()));
    let mut c = pod_config("x", &log);
    c.dns_config = Some(cri::DnsConfig {
        servers: vec!["not-an-ip".into()],
        ..Default::default()
    });
    cases.push(("dns_config.servers", c, String::new()));
    let mut c = pod_config("x", &log);
    c.dns_config = Some(cri::DnsConfig {
        searches: vec!["a\nnameserver 1.2.3.4".into()],
        ..Default::default()
    });
    cases.push(("dns_config.searches", c, String::new()));
    let mut c = pod_config("x", &log);
    c.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../../".into();
    cases.push(("cgroup_parent", c, String::new()));
    let c = with_ns(pod_config("x", &log), 17, 0, 0);
    cases.push(("namespace_options.network", c, String::new()));
    let mut c = pod_config("x", &log);
    c.port_mappings = vec![cri::PortMapping {
        protocol: 0,
        container_port: 70000,
        host_port: 80,
        host_ip: String::new(),
    }];
    cases.push(("port_mappings", c, String::new()));
    cases.push(("runtime_handler", pod_config("x", &log), "kata".into()));
    cases.push((
        "runtime_handler",
        pod_config("x", &log),
        "../../bin/sh".into(),
    ));

    for (field, config, handler) in cases {
        let err =
            d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: handler,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    let err =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest::default())
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(d.list_pods(None).await.is_empty());
    assert!(pod_dirs(&d).is_empty());
    assert!(mounts_below(&d.dir).is_empty());
    assert!(net.allocated().is_empty());
    assert!(!Path::new("/etc/x").exists());
}

#[tokio::test]
async fn failed_network_setup_undoes_everything() {
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(
            r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"skiff-no-such-plugin"}]}"#
                .into(),
        ),
        ..Default::default()
    })
    .await;
    let log = d.log_dir();
    let pod = cri::NamespaceMode::Pod as i32;
    let c = with_ns(pod_config("broken", &log), pod, pod, pod);
    let err = d.run_pod_sandbox(c).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().contains("CNI ADD"), "{}", err.message());
    assert!(d.list_pods(None).await.is_empty());
    assert!(pod_dirs(&d).is_empty(), "{:?}", pod_dirs(&d));
    assert!(
        mounts_below(&d.dir).is_empty(),
        "{:?}",
        mounts_below(&d.dir)
    );
    let infra_left: Vec<String> = command_lines()
        .into_iter()
        .filter(|c| c.contains(" infra ") && c.contains(&*d.dir.to_string_lossy()))
        .collect();
    assert!(
        infra_left.is_empty(),
        "infra processes outlived the failed RunPodSandbox: {infra_left:?}"
    );
}

#[tokio::test]
async fn restart_keeps_running_pods_and_cleans_leftovers() {
    let net = Net::new(216);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let pod = cri::NamespaceMode::Pod as i32;
    let id = d
        .run_pod_sandbox(with_ns(pod_config("survivor", &log), pod, pod, pod))
        .await
        .unwrap();
    let before = d.pod_status(&id).await.unwrap();
    let ip = ip(&before);
    let infra = verbose(&before)["infraPid"].as_i64().unwrap();

    // A pod directory with a mount and no record, as a crash in the middle of RunPodSandbox leaves.
    let stray = pods_dir(&d).join("f".repeat(64));
    skiff_tests::host::mount_tmpfs(&stray.join("shm"));
    d.restart().await;

    let after = d.pod_status(&id).await.unwrap();
    assert_eq!(state(&after), cri::PodSandboxState::SandboxReady);
    assert_eq!(self::ip(&after), ip);
    assert_eq!(verbose(&after)["infraPid"].as_i64(), Some(infra));
    assert!(!stray.exists(), "leftover pod directory kept");
    assert!(mounts_below(&stray).is_empty());
    assert_eq!(net.allocated(), vec![ip]);

    d.remove_pod(&id).await.unwrap();
    assert!(net.allocated().is_empty());
    assert!(mounts_below(&d.dir).is_empty());
}

#[tokio::test]
async fn update_pod_sandbox_resources_is_recorded_and_applied() {
    let mut d = Skiffd::start().await;
    let log = d.log_dir();
    // The pod cgroup, made beforehand as kubelet makes it.
    let parent = format!("/skiff-sbtest-{}", std::process::id());
    let cg = PodCgroup::new(&parent);
    let mut c = host_pod("res", &log);
    c.linux.as_mut().unwrap().cgroup_parent = parent.clone();
    let id = d.run_pod_sandbox(c).await.unwrap();
    let res = cri::LinuxContainerResources {
        cpu_shares: 512,
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    };
    d.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.clone(),
        overhead: None,
        resources: Some(res),
    })
    .await
    .unwrap();
    let err =
        d.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: id.clone(),
            overhead: Some(cri::LinuxContainerResources {
                cpu_shares: -1,
                ..Default::default()
            }),
            resources: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("overhead.cpu_shares"));
    let err =
        d.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "e".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let info = verbose(&d.pod_status(&id).await.unwrap());
    assert!(info["record"]["config"].is_string());
    assert_eq!(info["resources"]["cpuShares"], 512);
    assert_eq!(info["resources"]["memoryLimitInBytes"], 128 << 20);
    assert_eq!(info["cgroupParent"], parent.as_str());
    assert_eq!(cg.read("cpu", "cpu.shares"), "512");
    assert_eq!(
        cg.read("memory", "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    d.remove_pod(&id).await.unwrap();
}

#[tokio::test]
async fn restart_after_kill9_releases_orphans_and_flags_broken_pods() {
    let net = Net::new(217);
    let mut d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let orphan = d.run_pod_sandbox(pod_config("orphan", &log)).await.unwrap();
    let broken = d.run_pod_sandbox(pod_config("broken", &log)).await.unwrap();
    let broken_ip = d.pod_ip(&broken).await;
    assert_eq!(net.allocated().len(), 2);

    // A crash right after CNI ADD, before the record was saved, leaves an attachment and pins of a pod
    // skiffd does not know; a pin unmounted behind skiffd's back breaks a pod it knows.
    d.kill9();
    std::fs::remove_file(d.dir.join(format!("state/sandboxes/{orphan}.json"))).unwrap();
    let pin = pods_dir(&d).join(&broken).join("ns/net");
    let c = std::ffi::CString::new(pin.to_string_lossy().into_owned()).unwrap();
    // SAFETY: c is a valid NUL-terminated path under the test's own directory.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) }, 0);
    d.restart().await;

    assert_eq!(
        d.pod_status(&orphan).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!pods_dir(&d).join(&orphan).exists());
    let orphan_infra = command_lines().iter().any(|c| c.contains(&orphan));
    assert!(!orphan_infra, "the unknown pod's infra process still runs");
    assert!(mounts_below(&pods_dir(&d).join(&orphan)).is_empty());
    assert_eq!(net.allocated(), vec![broken_ip]);
    let s = d.pod_status(&broken).await.unwrap();
    assert_eq!(state(&s), cri::PodSandboxState::SandboxNotready);

    d.stop_pod(&broken).await.unwrap();
    assert!(net.allocated().is_empty());
    d.remove_pod(&broken).await.unwrap();
    assert!(pod_dirs(&d).is_empty());
    assert!(mounts_below(&d.dir).is_empty());
}

#[tokio::test]
async fn cni_gets_kubelet_args_and_port_mappings() {
    let net = Net::new(218);
    let conflist = net.conflist().replacen(
        r#""type":"skiff-bridge","#,
        r#""type":"skiff-bridge","capabilities":{"portMappings":true},"#,
        1,
    );
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(conflist),
        ..Default::default()
    })
    .await;
    let log = d.log_dir();
    let mut c = pod_config("ports", &log);
    c.port_mappings = vec![
        cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 80,
            host_port: 18080,
            host_ip: "127.0.0.1".into(),
        },
        // No host port: nothing to publish, as kubelet leaves it out.
        cri::PortMapping {
            protocol: cri::Protocol::Udp as i32,
            container_port: 53,
            host_port: 0,
            host_ip: String::new(),
        },
    ];
    let id = d.run_pod_sandbox(c).await.unwrap();
    let cached = d
        .dir
        .join(format!("cni-cache/results/{}-{id}-eth0", net.name()));
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cached).unwrap()).unwrap();
    assert_eq!(
        entry["capabilityArgs"]["portMappings"],
        serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
    );
    let args: Vec<(String, String)> = entry["cniArgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            (
                kv[0].as_str().unwrap().into(),
                kv[1].as_str().unwrap().into(),
            )
        })
        .collect();
    for (k, v) in [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", "default"),
        ("K8S_POD_NAME", "ports"),
        ("K8S_POD_INFRA_CONTAINER_ID", id.as_str()),
        ("K8S_POD_UID", "uid-ports"),
    ] {
        assert!(
            args.contains(&(k.to_string(), v.to_string())),
            "{k} in {args:?}"
        );
    }
    d.remove_pod(&id).await.unwrap();
    assert!(!cached.exists());
    assert!(net.allocated().is_empty());
}

#[tokio::test]
async fn sandbox_lifecycle_is_published_as_container_events() {
    use cri::ContainerEventType as E;
    let mut d = Skiffd::start().await;
    let log = d.log_dir();
    let mut events = d.container_events().await;
    let id = d.run_pod_sandbox(host_pod("events", &log)).await.unwrap();
    d.stop_pod(&id).await.unwrap();
    d.stop_pod(&id).await.unwrap();
    d.remove_pod(&id).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = next_event(&mut events, Duration::from_secs(10)).await;
        assert_eq!(ev.container_id, id);
        let pod = ev.pod_sandbox_status.expect("the pod's status");
        assert_eq!(pod.id, id);
        seen.push((E::try_from(ev.container_event_type).unwrap(), pod.state));
    }
    let ready = cri::PodSandboxState::SandboxReady as i32;
    let not_ready = cri::PodSandboxState::SandboxNotready as i32;
    assert_eq!(
        seen,
        vec![
            (E::ContainerCreatedEvent, ready),
            (E::ContainerStartedEvent, ready),
            (E::ContainerStoppedEvent, not_ready),
            (E::ContainerDeletedEvent, not_ready),
        ]
    );
}

/// A v1 cpu + memory cgroup at `/sys/fs/cgroup/<ctrl><path>`, removed on drop.
struct PodCgroup {
    dirs: Vec<PathBuf>,
}

impl PodCgroup {
    fn new(path: &str) -> PodCgroup {
        let dirs: Vec<PathBuf> = ["cpu", "memory"]
            .iter()
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}{path}")))
            .collect();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        PodCgroup { dirs }
    }

    fn read(&self, ctrl: &str, file: &str) -> String {
        let dir = self
            .dirs
            .iter()
            .find(|d| d.starts_with(format!("/sys/fs/cgroup/{ctrl}")))
            .unwrap();
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[tokio::test]
async fn concurrent_pods_get_distinct_ips_and_concurrent_removal_is_safe() {
    let net = Net::new(219);
    let d = Skiffd::start_with(net.options()).await;
    let log = d.log_dir();
    let runs = (0..8).map(|i| {
        let mut rt = d.rt.clone();
        let config = pod_config(&format!("par{i}"), &log);
        tokio::spawn(async move {
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
        })
    });
    let mut ids = Vec::new();
    for r in runs.collect::<Vec<_>>() {
        ids.push(r.await.unwrap().unwrap());
    }
    let mut ips = net.allocated();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");

    // Each pod stopped and removed by two callers at once, as kubelet's workers may do.
    let mut tasks = Vec::new();
    for id in &ids {
        for _ in 0..2 {
            let mut rt = d.rt.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await
            }));
        }
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(net.allocated().is_empty());
    assert!(pod_dirs(&d).is_empty());
    assert!(mounts_below(&d.dir).is_empty());
}
