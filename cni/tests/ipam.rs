//! IPAM and lifecycle: concurrent ADDs, idempotent DEL, GC (addresses, rules
//! and host veths), CHECK, STATUS, dual-stack, and the host-local on-disk format.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;
use std::collections::HashSet;

fn conf(dir: &std::path::Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0", "name": "ipamnet", "type": "skiff-bridge",
        "bridge": "cni0", "isGateway": true,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd77::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    })
}

#[test]
fn fifty_concurrent_adds_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let c = conf(dir.path());
    let pods: Vec<Ns> = (0..50).map(|_| Ns::new("p")).collect();
    let results: Vec<serde_json::Value> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, c) = (&node, &c);
                s.spawn(move || add(node, p, &format!("ctr-{i}"), c))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let v4: HashSet<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].to_string())
        .collect();
    let v6: HashSet<String> = results
        .iter()
        .map(|r| r["ips"][1]["address"].to_string())
        .collect();
    assert_eq!(v4.len(), 50, "distinct IPv4 addresses");
    assert_eq!(v6.len(), 50, "distinct IPv6 addresses");
    let files = std::fs::read_dir(dir.path().join("ipamnet"))
        .unwrap()
        .count();
    assert_eq!(
        files,
        100 + 2 + 1,
        "100 reservations, 2 last_reserved_ip, lock"
    );
    for (i, p) in pods.iter().enumerate() {
        del(&node, p, &format!("ctr-{i}"), &c);
    }
    let left = std::fs::read_dir(dir.path().join("ipamnet"))
        .unwrap()
        .count();
    assert_eq!(left, 3);
}

#[test]
fn reservation_file_matches_host_local_format() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pod) = (Ns::new("n"), Ns::new("p"));
    let c = conf(dir.path());
    let r = add(&node, &pod, "fmt-ctr", &c);
    let ip = pod_ip(&r);
    let body = std::fs::read_to_string(dir.path().join("ipamnet").join(&ip)).unwrap();
    assert_eq!(body, "fmt-ctr\r\neth0");
    let last = std::fs::read_to_string(dir.path().join("ipamnet/last_reserved_ip.0")).unwrap();
    assert_eq!(last, ip);
    assert!(pod
        .output(&["ip", "-6", "addr", "show", "eth0"])
        .contains("fd77::"));
    del(&node, &pod, "fmt-ctr", &c);
}

#[test]
fn del_twice_and_del_without_netns() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let c = conf(dir.path());
    let pod = Ns::new("p");
    let path = pod.path();
    add(&node, &pod, "twice", &c);
    del(&node, &pod, "twice", &c);
    del(&node, &pod, "twice", &c);
    let pod2 = Ns::new("p");
    let r = add(&node, &pod2, "gone", &c);
    let path2 = pod2.path();
    drop(pod2);
    assert!(
        call(&node, "DEL", "gone", &path2, &c).status.success(),
        "DEL with vanished netns"
    );
    assert!(
        call(&node, "DEL", "gone", "", &c).status.success(),
        "DEL with empty CNI_NETNS"
    );
    assert!(!dir.path().join("ipamnet").join(pod_ip(&r)).exists());
    let _ = path;
}

#[test]
fn gc_removes_attachments_not_in_valid_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let mut c = conf(dir.path());
    c["ipMasq"] = json!(true);
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    let r1 = add(&node, &p1, "keep", &c);
    let r2 = add(&node, &p2, "stale", &c);
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = call(&node, "GC", "", "", &gc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let net = dir.path().join("ipamnet");
    assert!(net.join(pod_ip(&r1)).exists());
    assert!(!net.join(pod_ip(&r2)).exists());
    let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
    assert!(
        rules.contains("skiff:keep/eth0") && !rules.contains("skiff:stale/eth0"),
        "{rules}"
    );
}

/// `(name, alias)` of every port of `bridge` in `node`.
fn ports(node: &Ns, bridge: &str) -> Vec<(String, String)> {
    let out = node.output(&["ip", "-j", "link", "show", "master", bridge]);
    let links: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    links
        .iter()
        .map(|l| {
            let name = l["ifname"].as_str().unwrap_or_default().to_string();
            (name, l["ifalias"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn gc_removes_host_veths_not_in_valid_list() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let c = conf(dir.path());
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    add(&node, &p1, "keep", &c);
    add(&node, &p2, "stale", &c);
    let labels: Vec<String> = ports(&node, "cni0").into_iter().map(|p| p.1).collect();
    assert!(
        labels.contains(&"skiff:ipamnet:keep/eth0".into())
            && labels.contains(&"skiff:ipamnet:stale/eth0".into()),
        "{labels:?}"
    );
    // A port no skiff-bridge labelled, and one of another network on the same bridge.
    for (name, alias) in [("skforeign", ""), ("skothernet", "skiff:other:stale/eth0")] {
        node.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        node.ip(&["link", "set", name, "master", "cni0"]);
        if !alias.is_empty() {
            node.ip(&["link", "set", name, "alias", alias]);
        }
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = call(&node, "GC", "", "", &gc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut left: Vec<String> = ports(&node, "cni0").into_iter().map(|p| p.1).collect();
    left.sort();
    assert_eq!(
        left,
        ["", "skiff:ipamnet:keep/eth0", "skiff:other:stale/eth0"],
        "GC keeps the valid attachment's veth and ports that are not this network's"
    );
    assert!(p2.output(&["ip", "link", "show", "eth0"]).is_empty());
    assert!(!p1.output(&["ip", "link", "show", "eth0"]).is_empty());
}

#[test]
fn check_detects_removed_address() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pod) = (Ns::new("n"), Ns::new("p"));
    let c = conf(dir.path());
    let r = add(&node, &pod, "chk", &c);
    let mut chk = c.clone();
    chk["prevResult"] = r.clone();
    assert!(call(&node, "CHECK", "chk", &pod.path(), &chk)
        .status
        .success());
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    pod.ip(&["addr", "del", &addr, "dev", "eth0"]);
    let out = call(&node, "CHECK", "chk", &pod.path(), &chk);
    assert!(!out.status.success());
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(err["msg"].as_str().unwrap().contains(&addr), "{err}");
    del(&node, &pod, "chk", &c);
}

#[test]
fn status_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let c = conf(dir.path());
    assert!(call(&node, "STATUS", "", "", &c).status.success());
    let out = call(&node, "VERSION", "", "", &json!({"cniVersion": "1.1.0"}));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "1.1.0"));
    let mut small = c.clone();
    small["ipam"]["ranges"] = json!([[{"subnet": "10.79.0.0/30"}]]);
    let pod = Ns::new("p");
    add(&node, &pod, "only", &small);
    let out = call(&node, "STATUS", "", "", &small);
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        err["code"], 50,
        "exhausted range reports not available: {err}"
    );
}
