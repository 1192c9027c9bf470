//! Routed mode: each pod on a veth of its own, no bridge. Pods on one node
//! reach each other through the node's routing with their own addresses,
//! reach a remote host masqueraded, answer on hostPorts (from the node, a
//! remote host, another pod, themselves, 127.0.0.1), and CHECK, GC and DEL
//! find their host ends without a bridge. Dual-stack.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn conf(dir: &std::path::Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0", "name": "routednet", "type": "skiff-bridge", "mode": "routed",
        "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true,
        "capabilities": {"portMappings": true},
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": "10.89.0.0/24"}], [{"subnet": "fd89::/64"}]]}
    })
}

/// The host end named in an ADD result: the one interface outside the pod.
fn host_end(result: &serde_json::Value) -> String {
    let ifs = result["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 2, "host end and pod end, no bridge: {result}");
    ifs[0]["name"].as_str().unwrap().to_string()
}

#[test]
fn pods_reach_each_other_through_the_node_with_their_own_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let c = conf(dir.path());
    let ra = add(&node, &a, "ra", &c);
    let rb = add(&node, &b, "rb", &c);
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_eq!(ra["ips"][0]["address"], format!("{ipa}/32"));
    assert_eq!(ra["ips"][1]["interface"], 1);
    assert!(a
        .output(&["ip", "-4", "addr", "show", "eth0"])
        .contains(&format!("{ipa}/32")));
    let hv = host_end(&ra);
    let link = node.output(&["ip", "-d", "link", "show", &hv]);
    assert!(
        !link.contains("master"),
        "the host end is on no bridge: {link}"
    );
    let routes = node.output(&["ip", "route", "show", "dev", &hv]);
    assert!(routes.contains(&ipa), "a host route to the pod: {routes}");
    assert!(
        node.output(&["ip", "link", "show", "type", "bridge"])
            .trim()
            .is_empty(),
        "no bridge made"
    );

    let srv = b.serve_once(&format!("{ipb}:7000"));
    let seen = a.connect(&format!("{ipb}:7000")).unwrap();
    assert_eq!(
        seen,
        format!("{ipa}:{}", srv.join().unwrap().unwrap().port())
    );
    let ipb6 = rb["ips"][1]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let srv = b.serve_once(&format!("[{ipb6}]:7001"));
    a.connect(&format!("[{ipb6}]:7001"))
        .expect("pod a reaches pod b over IPv6");
    srv.join().unwrap();
    if std::path::Path::new("/usr/bin/ping").exists() || std::path::Path::new("/bin/ping").exists()
    {
        assert!(a.ping(&ipb), "ping a -> b");
    }

    let mut chk = c.clone();
    chk["prevResult"] = ra.clone();
    let out = call(&node, "CHECK", "ra", &a.path(), &chk);
    assert!(
        out.status.success(),
        "CHECK: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    del(&node, &a, "ra", &c);
    del(&node, &b, "rb", &c);
    assert!(
        !node.output(&["ip", "link"]).contains(&hv),
        "DEL removes the host end"
    );
    assert!(
        !node.output(&["ip", "route"]).contains(&ipa),
        "and its route"
    );
}

#[test]
fn masquerade_and_host_ports_without_a_bridge() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let remote = Ns::new("r");
    wire(&node, "192.168.79.1/24", &remote, "192.168.79.2/24");
    let (web, client) = (Ns::new("w"), Ns::new("c"));
    let plain = conf(dir.path());
    let mut c = plain.clone();
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}]});
    add(&node, &web, "web", &c);
    add(&node, &client, "client", &plain);

    let srv = remote.serve_once("192.168.79.2:7002");
    let seen = client
        .connect("192.168.79.2:7002")
        .expect("pod reaches remote");
    assert!(seen.starts_with("192.168.79.1:"), "remote saw {seen}");
    srv.join().unwrap();

    for (from, what) in [(&node, "node"), (&remote, "remote host")] {
        let srv = web.serve_once("0.0.0.0:80");
        from.connect("192.168.79.1:8081")
            .unwrap_or_else(|e| panic!("{what} -> hostPort: {e}"));
        srv.join().unwrap();
    }
    let srv = web.serve_once("0.0.0.0:80");
    node.connect("127.0.0.1:8081")
        .expect("node -> 127.0.0.1:hostPort");
    srv.join().unwrap();
    let srv = web.serve_once("0.0.0.0:80");
    client
        .connect("192.168.79.1:8081")
        .expect("pod -> hostPort of another pod");
    srv.join().unwrap();
    let srv = web.serve_once("0.0.0.0:80");
    web.connect("192.168.79.1:8081")
        .expect("pod -> its own hostPort");
    srv.join().unwrap();

    del(&node, &web, "web", &c);
    del(&node, &client, "client", &plain);
}

#[test]
fn gc_finds_host_ends_without_a_bridge_and_bridge_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    let c = conf(dir.path());
    let keep = host_end(&add(&node, &p1, "keep", &c));
    let stale = host_end(&add(&node, &p2, "stale", &c));
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    let out = call(&node, "GC", "", "", &gc);
    assert!(
        out.status.success(),
        "GC: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let links = node.output(&["ip", "link"]);
    assert!(links.contains(&keep) && !links.contains(&stale), "{links}");
    del(&node, &p1, "keep", &c);

    let mut bad = c.clone();
    bad["macspoofchk"] = json!(true);
    let out = call(&node, "ADD", "bad", &p2.path(), &bad);
    refused(&out, "macspoofchk: only with mode \"bridge\"");
    assert!(
        p2.output(&["ip", "link"]).lines().count() <= 2,
        "nothing made for a refused ADD"
    );
}

/// The programs on the ingress of the device named `dev` in `node`.
fn programs_on(node: &Ns, dev: &str) -> Vec<String> {
    let dev = dev.to_string();
    node.run(move || skiff_cni::fastpath::programs_on(&dev).unwrap())
        .join()
        .unwrap()
}

/// `fastPath`: the host end carries the fast path's program, pods still reach each other (the
/// connection's packets after its handshake take the short way), DEL takes the program with the
/// host end; asked for in bridge mode, refused.
#[test]
fn fast_path_on_the_host_end() {
    if skiff_cni::fastpath::probe().is_err() {
        eprintln!("skipped: this kernel cannot run the fast path");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let mut c = conf(dir.path());
    c["fastPath"] = json!(true);
    let ra = add(&node, &a, "fa", &c);
    let rb = add(&node, &b, "fb", &c);
    let hv = host_end(&ra);
    assert_eq!(programs_on(&node, &hv), [skiff_cni::fastpath::OUT_OF_POD]);
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    for port in [7100, 7101] {
        let srv = b.serve_once(&format!("{ipb}:{port}"));
        let seen = a.connect(&format!("{ipb}:{port}")).unwrap();
        assert_eq!(
            seen,
            format!("{ipa}:{}", srv.join().unwrap().unwrap().port())
        );
    }
    del(&node, &a, "fa", &c);
    assert!(!node.output(&["ip", "link"]).contains(&hv));
    del(&node, &b, "fb", &c);

    let mut bad = c.clone();
    bad["mode"] = json!("bridge");
    let out = call(&node, "ADD", "bad", &a.path(), &bad);
    refused(&out, "fastPath: only with mode \"routed\"");
}
