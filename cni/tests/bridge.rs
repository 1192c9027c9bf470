//! One node: pods on one bridge reach each other, reach a remote host through
//! masquerade, and are reachable through hostPort (from the host, from a
//! remote host, and hairpinned from a pod on the same node).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn conf(dir: &std::path::Path, masq: bool) -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0", "name": "podnet", "type": "skiff-bridge",
        "bridge": "cni0", "isDefaultGateway": true, "ipMasq": masq, "hairpinMode": true,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": "10.88.0.0/24"}]]}
    })
}

#[test]
fn pods_on_one_bridge_reach_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let c = conf(dir.path(), false);
    let ra = add(&node, &a, "pod-a", &c);
    let rb = add(&node, &b, "pod-b", &c);
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ipa, ipb);
    let srv = b.serve_once(&format!("{ipb}:7000"));
    assert_eq!(
        a.connect(&format!("{ipb}:7000")).unwrap(),
        format!("{ipa}:{}", srv.join().unwrap().unwrap().port())
    );
    if std::path::Path::new("/usr/bin/ping").exists() || std::path::Path::new("/bin/ping").exists()
    {
        assert!(a.ping(&ipb), "ping a -> b");
        assert!(b.ping(&ipa), "ping b -> a");
    }
    del(&node, &a, "pod-a", &c);
    del(&node, &b, "pod-b", &c);
}

#[test]
fn masquerade_to_remote_host_shows_node_address() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let remote = Ns::new("r");
    wire(&node, "192.168.77.1/24", &remote, "192.168.77.2/24");
    let pod = Ns::new("p");
    let c = conf(dir.path(), true);
    add(&node, &pod, "pod-m", &c);
    let srv = remote.serve_once("192.168.77.2:7001");
    let seen = pod
        .connect("192.168.77.2:7001")
        .expect("pod reaches remote");
    assert!(seen.starts_with("192.168.77.1:"), "remote saw {seen}");
    srv.join().unwrap();
    del(&node, &pod, "pod-m", &c);
    assert!(
        !node.output(&["nft", "list", "ruleset"]).contains("pod-m"),
        "rules removed on DEL"
    );
}

#[test]
fn host_port_from_host_remote_and_hairpin() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let remote = Ns::new("r");
    wire(&node, "192.168.78.1/24", &remote, "192.168.78.2/24");
    let (web, client) = (Ns::new("w"), Ns::new("c"));
    let mut c = conf(dir.path(), true);
    c["capabilities"] = json!({"portMappings": true});
    let plain = c.clone();
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
    let rw = add(&node, &web, "web", &c);
    let rc = add(&node, &client, "client", &plain);
    let web_ip = pod_ip(&rw);

    let srv = web.serve_once("0.0.0.0:80");
    let seen = node.connect("192.168.78.1:8080").expect("host -> hostPort");
    assert!(seen.starts_with("192.168.78.1:"), "pod saw {seen}");
    srv.join().unwrap();

    let srv = web.serve_once("0.0.0.0:80");
    remote
        .connect("192.168.78.1:8080")
        .expect("remote -> hostPort");
    srv.join().unwrap();

    let srv = web.serve_once("0.0.0.0:80");
    let seen = client
        .connect("192.168.78.1:8080")
        .expect("pod -> hostPort hairpin");
    assert!(
        !seen.starts_with(&pod_ip(&rc)),
        "hairpin traffic is masqueraded, pod saw {seen}"
    );
    srv.join().unwrap();

    let srv = web.serve_once("0.0.0.0:80");
    web.connect("192.168.78.1:8080")
        .expect("pod -> its own hostPort");
    srv.join().unwrap();

    del(&node, &web, "web", &c);
    del(&node, &client, "client", &plain);
    let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
    assert!(!rules.contains(&web_ip), "DNAT rules removed: {rules}");
}

/// Net sysctls are per netns and resolved by the opening thread's netns.
fn get_sysctl(ns: &Ns, key: &str) -> String {
    let path = format!("/proc/sys/{key}");
    ns.run(move || std::fs::read_to_string(path).expect("read sysctl"))
        .join()
        .expect("sysctl thread")
}

fn set_sysctl(ns: &Ns, key: &str, value: &'static str) {
    let path = format!("/proc/sys/{key}");
    ns.run(move || std::fs::write(path, value).expect("write sysctl"))
        .join()
        .expect("sysctl thread");
}

#[test]
fn host_port_on_localhost_from_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let web = Ns::new("w");
    let mut c = conf(dir.path(), false);
    c["ipam"]["ranges"] = json!([[{"subnet": "10.89.0.0/24"}]]);
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]});
    add(&node, &web, "web-lo", &c);
    let localnet = get_sysctl(&node, "net/ipv4/conf/cni0/route_localnet");
    assert_eq!(localnet.trim(), "1", "route_localnet on the bridge");

    let srv = web.serve_once("0.0.0.0:80");
    let seen = node
        .connect("127.0.0.1:8081")
        .expect("node -> 127.0.0.1:hostPort");
    // The loopback source is masqueraded to the bridge (gateway) address.
    assert!(seen.starts_with("10.89.0.1:"), "pod saw {seen}");
    srv.join().unwrap();

    // Control: without route_localnet the same connection is dropped.
    set_sysctl(&node, "net/ipv4/conf/cni0/route_localnet", "0");
    let srv = web.serve_once("0.0.0.0:80");
    assert!(
        node.connect("127.0.0.1:8081").is_err(),
        "a loopback source is martian on the bridge without route_localnet"
    );
    set_sysctl(&node, "net/ipv4/conf/cni0/route_localnet", "1");
    node.connect("127.0.0.1:8081")
        .expect("works again with route_localnet");
    srv.join().unwrap();

    del(&node, &web, "web-lo", &c);
    assert!(
        node.connect("127.0.0.1:8081").is_err(),
        "nothing answers on 127.0.0.1:8081 after DEL"
    );
}

/// Whether a UDP datagram the pod `from` sends to 127.0.0.1:`port` through
/// its gateway reaches a socket the node bound to 127.0.0.1 only.
fn udp_to_node_loopback(node: &Ns, from: &Ns, port: u16) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let listener = node.run(move || {
        let s = std::net::UdpSocket::bind(("127.0.0.1", port)).expect("bind");
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .ok();
        tx.send(()).ok();
        let mut buf = [0u8; 16];
        s.recv(&mut buf).is_ok()
    });
    rx.recv().expect("listener up");
    from.run(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..3 {
            let _ = s.send_to(b"hello", ("127.0.0.1", port));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
    .join()
    .expect("sender");
    listener.join().expect("listener")
}

/// route_localnet on the bridge must not let a pod reach what the node
/// binds to 127.0.0.1 (CVE-2020-8558): the guard skiff-bridge installs with
/// it drops such packets; without the guard the same packets get through.
#[test]
fn pods_cannot_reach_node_loopback_through_route_localnet() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (web, evil) = (Ns::new("w"), Ns::new("e"));
    let mut c = conf(dir.path(), false);
    c["ipam"]["ranges"] = json!([[{"subnet": "10.87.0.0/24"}]]);
    let plain = c.clone();
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8082, "containerPort": 80, "protocol": "tcp"}]});
    add(&node, &web, "web-g", &c);
    add(&node, &evil, "evil", &plain);
    let guard = node.output(&["nft", "list", "table", "inet", "skiff-bridge-localnet"]);
    assert!(
        guard.contains("127.0.0.0/8") && guard.contains("drop"),
        "{guard}"
    );

    // The pod sends to 127.0.0.1 through its gateway, as a pod with raw
    // sockets could.
    evil.ip(&[
        "route",
        "del",
        "local",
        "127.0.0.0/8",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    evil.ip(&[
        "route",
        "del",
        "local",
        "127.0.0.1",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    evil.ip(&[
        "route",
        "add",
        "127.0.0.1/32",
        "via",
        "10.87.0.1",
        "dev",
        "eth0",
    ]);
    set_sysctl(&evil, "net/ipv4/conf/eth0/route_localnet", "1");

    node.output(&["nft", "delete", "table", "inet", "skiff-bridge-localnet"]);
    assert!(
        udp_to_node_loopback(&node, &evil, 9099),
        "control: without the guard the pod reaches the node's loopback"
    );
    // Another ADD with a portMapping puts the guard back.
    let web2 = Ns::new("w");
    add(&node, &web2, "web-g2", &c);
    assert!(
        !udp_to_node_loopback(&node, &evil, 9098),
        "with the guard the pod's packets to 127.0.0.1 are dropped"
    );
    // The node's own traffic to 127.0.0.1 is not affected.
    let srv = node.serve_once("127.0.0.1:9097");
    node.connect("127.0.0.1:9097").expect("node loopback");
    srv.join().unwrap();
    del(&node, &web, "web-g", &c);
    del(&node, &web2, "web-g2", &c);
    del(&node, &evil, "evil", &plain);
}
