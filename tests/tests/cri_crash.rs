//! skiffd killed (SIGKILL) in the middle of pod work: after a restart every IPAM reservation and every
//! host veth on the pods' bridge belongs to a sandbox skiffd knows, no sandbox whose network is gone
//! reports READY, a second StopPodSandbox finishes a stop that was cut off, and a full teardown leaves
//! no address and no veth behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::cri::{bridge_conflist, pod_config, v1 as cri, Options, Skiffd};

/// The pods' network as kubelet-era nodes configure it, at the given CNI version (1.1.0 plugins get
/// GC; older ones only DEL).
fn conflist(version: &str, bridge: &str, subnet: &str, ipam: &Path) -> String {
    let list = bridge_conflist(bridge, subnet, ipam);
    let versioned = list.replace(
        r#""cniVersion":"1.0.0""#,
        &format!(r#""cniVersion":"{version}""#),
    );
    assert!(version == "1.0.0" || versioned != list, "{list}");
    versioned
}

/// `(ip, sandbox id)` of every reservation in the host-local store of network "pods".
fn reservations(ipam: &Path) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(ipam.join("pods")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.parse::<std::net::IpAddr>().ok()?;
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let id = text.lines().next().unwrap_or_default().trim().to_string();
            Some((name, id))
        })
        .collect()
}

fn ip_json(netns: Option<&str>, args: &[&str]) -> Vec<Value> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let out = cmd.arg("-j").args(args).output().expect("run ip");
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
}

/// Name and ifindex of every port of `bridge` (none when it does not exist).
fn bridge_ports(bridge: &str) -> Vec<(String, u64)> {
    ip_json(None, &["link", "show", "master", bridge])
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["ifindex"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// What a pod's netns holds: the host-side ifindex of its eth0 and eth0's IPv4 addresses.
fn pod_interface(netns: &str) -> Option<(u64, Vec<String>)> {
    let addrs = ip_json(Some(netns), &["addr", "show", "eth0"]);
    let eth0 = addrs.first()?;
    let peer = eth0["link_index"].as_u64()?;
    let ips = eth0["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str().map(str::to_string))
        .collect();
    Some((peer, ips))
}

struct PodView {
    id: String,
    ready: bool,
    ip: String,
    netns: Option<String>,
}

async fn pods(d: &mut Skiffd) -> Vec<PodView> {
    let mut out = Vec::new();
    let list =
        d.rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await;
    let list = match list {
        Ok(l) => l.into_inner().items,
        Err(e) => panic!(
            "ListPodSandbox: {e}\n--- skiffd log (tail) ---\n{}",
            tail(&d.daemon_log(), 80)
        ),
    };
    for p in list {
        let st = d
            .pod_status(&p.id)
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {}: {e}", p.id));
        let info: Value = serde_json::from_str(st.info.get("info").map_or("{}", |s| s)).unwrap();
        let status = st.status.unwrap_or_default();
        out.push(PodView {
            id: p.id,
            ready: status.state == cri::PodSandboxState::SandboxReady as i32,
            ip: status.network.map(|n| n.ip).unwrap_or_default(),
            netns: info["pinnedNamespaces"]["network"]
                .as_str()
                .map(str::to_string),
        });
    }
    out
}

/// Everything that breaks the invariants: reservations and veths of unknown sandboxes, READY
/// sandboxes without their interface, address or reservation.
async fn problems(d: &mut Skiffd, bridge: &str, ipam: &Path) -> Vec<String> {
    let pods = pods(d).await;
    let known: HashSet<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    let mut bad = Vec::new();
    let reserved: HashMap<String, String> = reservations(ipam).into_iter().collect();
    for (ip, id) in &reserved {
        if !known.contains(id.as_str()) {
            bad.push(format!(
                "{ip} is reserved for {id}, which skiffd does not know"
            ));
        }
    }
    let mut peers = HashSet::new();
    for p in &pods {
        let iface = p.netns.as_deref().and_then(pod_interface);
        if let Some((peer, _)) = &iface {
            peers.insert(*peer);
        }
        if !p.ready {
            continue;
        }
        match iface {
            None => bad.push(format!("{} is READY without eth0", p.id)),
            Some((_, ips)) if !ips.contains(&p.ip) => bad.push(format!(
                "{} is READY but eth0 lacks {} ({ips:?})",
                p.id, p.ip
            )),
            _ => {}
        }
        if reserved.get(&p.ip) != Some(&p.id) {
            bad.push(format!(
                "{} is READY but {} is not reserved for it",
                p.id, p.ip
            ));
        }
    }
    for (name, index) in bridge_ports(bridge) {
        if !peers.contains(&index) {
            bad.push(format!(
                "host veth {name} on {bridge} belongs to no known sandbox"
            ));
        }
    }
    bad
}

/// The invariants hold, allowing the kernel a moment: it deletes the veths of a network namespace
/// whose last reference went (an unknown pod's pin, unmounted at start-up) asynchronously.
async fn assert_consistent(d: &mut Skiffd, bridge: &str, ipam: &Path, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut bad = problems(d, bridge, ipam).await;
    while !bad.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bad = problems(d, bridge, ipam).await;
    }
    assert!(
        bad.is_empty(),
        "{when}:\n{}\n--- skiffd log (tail) ---\n{}",
        bad.join("\n"),
        tail(&d.daemon_log(), 60)
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Restarts skiffd and waits until the new daemon answers. A child the killed daemon had forked but
/// not yet exec'd still holds its listening socket for a moment, and may take the first connection.
async fn restart(d: &mut Skiffd) {
    d.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let request = cri::VersionRequest::default();
    while let Err(e) = d.rt.version(request.clone()).await {
        assert!(Instant::now() < deadline, "skiffd did not come back: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RunPodSandbox of `creates` and Stop+Remove of `removes`, all at once, each on its own connection
/// clone; results are ignored (the daemon dies under them).
fn burst(
    d: &Skiffd,
    creates: Vec<cri::PodSandboxConfig>,
    removes: Vec<String>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for config in creates {
        let mut rt = d.rt.clone();
        tasks.push(tokio::spawn(async move {
            let _ = rt
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: String::new(),
                })
                .await;
        }));
    }
    for id in removes {
        let mut rt = d.rt.clone();
        tasks.push(tokio::spawn(async move {
            let id = cri::StopPodSandboxRequest { pod_sandbox_id: id };
            if rt.stop_pod_sandbox(id.clone()).await.is_ok() {
                let _ = rt
                    .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: id.pod_sandbox_id,
                    })
                    .await;
            }
        }));
    }
    tasks
}

/// Stops and removes every pod (finishing stops that a crash cut off), then checks that nothing of
/// the network is left.
async fn teardown(d: &mut Skiffd, bridge: &str, ipam: &Path) {
    for p in d.list_pods(None).await {
        d.stop_and_remove_pod(&p.id).await;
    }
    assert!(d.list_pods(None).await.is_empty());
    assert_eq!(
        reservations(ipam),
        Vec::new(),
        "addresses left after teardown"
    );
    assert_eq!(
        bridge_ports(bridge),
        Vec::new(),
        "veths left after teardown"
    );
}

/// Bursts of 20 creations and 10 removals, skiffd killed after a different delay each round, until
/// the rounds or the time budget run out.
async fn kill_during_bursts(version: &str, bridge: &str, subnet: &str) {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(conflist(version, bridge, subnet, ipam.path())),
        ..Default::default()
    })
    .await;
    for i in 0..10 {
        d.run_pod(pod_config(&format!("warm-{i}"), &d.log_dir()))
            .await;
    }
    let started = Instant::now();
    for (round, delay) in [350u64, 150, 600, 250, 900, 450].into_iter().enumerate() {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let creates = (0..20)
            .map(|i| pod_config(&format!("r{round}-p{i}"), &d.log_dir()))
            .collect();
        let removes = pods(&mut d)
            .await
            .into_iter()
            .filter(|p| p.ready)
            .take(10)
            .map(|p| p.id)
            .collect();
        let tasks = burst(&d, creates, removes);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        d.kill9();
        for t in tasks {
            let _ = t.await;
        }
        restart(&mut d).await;
        let when = format!("after a kill {delay} ms into round {round} ({version})");
        assert_consistent(&mut d, bridge, ipam.path(), &when).await;
        // Interrupted stops finish with a second StopPodSandbox; the rest stay for the next round.
        for p in pods(&mut d).await.into_iter().filter(|p| !p.ready) {
            d.stop_and_remove_pod(&p.id).await;
        }
        assert_consistent(&mut d, bridge, ipam.path(), &format!("{when}, cleaned")).await;
    }
    teardown(&mut d, bridge, ipam.path()).await;
    restart(&mut d).await;
    assert_consistent(&mut d, bridge, ipam.path(), "restart after teardown").await;
    assert_eq!(reservations(ipam.path()), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pod_bursts_leaks_nothing_with_cni_gc() {
    kill_during_bursts("1.1.0", "skcrash0", "10.211.23.0/24").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_pod_bursts_leaks_nothing_with_cni_1_0_plugins() {
    kill_during_bursts("1.0.0", "skcrash1", "10.211.24.0/24").await;
}

/// A CNI plugin chained with skiff-bridge that announces `cmd` by creating `<dir>/<cmd>` and then
/// hangs in it, so skiffd can be killed at a known point; every other command succeeds.
fn hanging_plugin(dir: &Path, cmd: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\ncase \"$CNI_COMMAND\" in\n\
         {cmd}) touch {mark}; exec sleep 60 ;;\n\
         VERSION) echo '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}}' ;;\n\
         ADD) echo '{{\"cniVersion\":\"1.1.0\"}}' ;;\nesac\nexit 0\n",
        mark = dir.join(cmd).display()
    );
    let path = bin.join("sk-hang");
    std::fs::write(&path, script).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    bin
}

/// The conflist with `sk-hang` before (`first`) or after skiff-bridge.
fn with_hanging_plugin(list: &str, first: bool) -> String {
    let mut v: Value = serde_json::from_str(list).unwrap();
    let plugins = v["plugins"].as_array_mut().unwrap();
    let hang = serde_json::json!({"type": "sk-hang"});
    if first {
        plugins.insert(0, hang);
    } else {
        plugins.push(hang);
    }
    v.to_string()
}

/// A daemon whose CNI plugin path also holds `sk-hang` (the harness's config names its own dirs).
async fn daemon_with_plugin_dir(conflist: String, bin: &Path) -> Skiffd {
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(conflist),
        ..Default::default()
    })
    .await;
    let toml = std::fs::read_to_string(&d.config).unwrap();
    let toml = toml.replacen(
        "bin_dirs = [",
        &format!("bin_dirs = [\"{}\", ", bin.display()),
        1,
    );
    std::fs::write(&d.config, toml).unwrap();
    restart(&mut d).await;
    d
}

async fn wait_for(mark: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mark.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            mark.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_cut_off_after_the_network_is_gone_reports_notready() {
    let (ipam, hang) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bin = hanging_plugin(hang.path(), "DEL");
    // DEL runs the list backwards: skiff-bridge releases the pod's network, then sk-hang hangs.
    let list = with_hanging_plugin(
        &conflist("1.1.0", "skcrash2", "10.211.25.0/24", ipam.path()),
        true,
    );
    let mut d = daemon_with_plugin_dir(list, &bin).await;
    let pod = d.run_pod(pod_config("cut", &d.log_dir())).await;
    assert_consistent(&mut d, "skcrash2", ipam.path(), "before the stop").await;
    let stop = burst(&d, Vec::new(), vec![pod.id.clone()]);
    wait_for(&hang.path().join("DEL")).await;
    d.kill9();
    for t in stop {
        let _ = t.await;
    }
    // From now on sk-hang lets every command through.
    std::fs::remove_file(hang.path().join("bin/sk-hang")).unwrap();
    hanging_plugin(hang.path(), "NONE");
    restart(&mut d).await;
    let st = d.pod_status(&pod.id).await.unwrap().status.unwrap();
    assert_eq!(
        st.state,
        cri::PodSandboxState::SandboxNotready as i32,
        "a pod whose stop was cut off after its network went reports READY\n{}",
        tail(&d.daemon_log(), 40)
    );
    assert_consistent(&mut d, "skcrash2", ipam.path(), "after the restart").await;
    d.stop_pod(&pod.id)
        .await
        .expect("a second StopPodSandbox finishes the stop");
    teardown(&mut d, "skcrash2", ipam.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_cut_off_after_the_address_is_reserved_leaks_nothing() {
    let (ipam, hang) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bin = hanging_plugin(hang.path(), "ADD");
    // ADD runs the list in order: skiff-bridge reserves the address and makes the veth, then
    // sk-hang hangs, before skiffd has any record of the sandbox.
    let list = with_hanging_plugin(
        &conflist("1.0.0", "skcrash3", "10.211.26.0/24", ipam.path()),
        false,
    );
    let mut d = daemon_with_plugin_dir(list, &bin).await;
    let create = burst(&d, vec![pod_config("cut", &d.log_dir())], Vec::new());
    wait_for(&hang.path().join("ADD")).await;
    assert_eq!(reservations(ipam.path()).len(), 1);
    d.kill9();
    for t in create {
        let _ = t.await;
    }
    restart(&mut d).await;
    assert!(d.list_pods(None).await.is_empty());
    assert_consistent(&mut d, "skcrash3", ipam.path(), "after the restart").await;
    assert_eq!(
        reservations(ipam.path()),
        Vec::new(),
        "address of a sandbox that never got a record"
    );
}
