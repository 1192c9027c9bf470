//! skiff-bridge's nftables state: macspoofchk drops frames whose source MAC
//! is not the pod's own, and the last DEL and GC leave no empty table behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn conf(dir: &std::path::Path, subnet: &str) -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0", "name": "spoofnet", "type": "skiff-bridge",
        "bridge": "cni0", "isGateway": true, "macspoofchk": true,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": subnet}]]}
    })
}

fn tables(node: &Ns) -> String {
    node.output(&["nft", "list", "tables"])
}

/// The attachment tables (`inet skiff-bridge`, `bridge skiff-bridge`) in
/// `nft list tables` output; the route_localnet guard's own table is not one.
fn has(t: &str, table: &str) -> bool {
    t.lines().any(|l| l.trim() == format!("table {table}"))
}

fn has_any(t: &str) -> bool {
    has(t, "inet skiff-bridge") || has(t, "bridge skiff-bridge")
}

/// One TCP exchange from `from` to `to`; true when it completed.
fn reaches(from: &Ns, to: &Ns, ip: &str, port: u16) -> bool {
    let srv = to.serve_once(&format!("0.0.0.0:{port}"));
    let ok = from.connect(&format!("{ip}:{port}")).is_ok();
    if !ok {
        // Release the listener so its thread ends.
        let _ = to.connect(&format!("127.0.0.1:{port}"));
    }
    let _ = srv.join();
    ok
}

#[test]
fn macspoofchk_drops_frames_with_another_source_mac() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (a, b) = (Ns::new("a"), Ns::new("b"));
    let c = conf(dir.path(), "10.91.0.0/24");
    let ra = add(&node, &a, "spoof-a", &c);
    let rb = add(&node, &b, "spoof-b", &c);
    let ipb = pod_ip(&rb);
    let mac_a = ra["interfaces"][2]["mac"]
        .as_str()
        .expect("mac")
        .to_string();
    let host_a = ra["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();
    let rules = node.output(&["nft", "list", "table", "bridge", "skiff-bridge"]);
    assert!(
        rules.contains(&host_a) && rules.contains(&mac_a) && rules.contains("drop"),
        "one rule keyed on the host veth: {rules}"
    );
    assert!(
        reaches(&a, &b, &ipb, 7100),
        "pod a reaches b with its own MAC"
    );

    // Spoofed source: the same pod, another MAC. Its frames (ARP included)
    // must no longer reach b.
    a.ip(&["neigh", "flush", "all"]);
    b.ip(&["neigh", "flush", "all"]);
    a.ip(&["link", "set", "eth0", "address", "02:11:22:33:44:55"]);
    assert!(
        !reaches(&a, &b, &ipb, 7101),
        "frames with a spoofed source MAC are dropped"
    );
    // Back to its own MAC it works again.
    a.ip(&["neigh", "flush", "all"]);
    a.ip(&["link", "set", "eth0", "address", &mac_a]);
    assert!(reaches(&a, &b, &ipb, 7102), "own MAC works again");

    // Control: a pod attached without macspoofchk still gets through after
    // the same MAC change, so the drop above is the rule's doing.
    let free = Ns::new("f");
    let mut plain = c.clone();
    plain["macspoofchk"] = json!(false);
    add(&node, &free, "spoof-free", &plain);
    b.ip(&["neigh", "flush", "all"]);
    free.ip(&["link", "set", "eth0", "address", "02:11:22:33:44:66"]);
    assert!(
        reaches(&free, &b, &ipb, 7103),
        "without macspoofchk a changed MAC still reaches b"
    );
    del(&node, &free, "spoof-free", &plain);

    del(&node, &a, "spoof-a", &c);
    let rules = node.output(&["nft", "list", "table", "bridge", "skiff-bridge"]);
    assert!(!rules.contains(&host_a), "DEL removed a's rule: {rules}");
    del(&node, &b, "spoof-b", &c);
    assert!(
        !has_any(&tables(&node)),
        "the last DEL removed the bridge table: {}",
        tables(&node)
    );
}

#[test]
fn last_del_and_gc_leave_no_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    let mut c = conf(dir.path(), "10.92.0.0/24");
    c["ipMasq"] = json!(true);
    c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8088, "containerPort": 80}]});
    add(&node, &p1, "t-one", &c);
    add(&node, &p2, "t-two", &c);
    let t = tables(&node);
    assert!(
        has(&t, "inet skiff-bridge") && has(&t, "bridge skiff-bridge"),
        "{t}"
    );

    // DEL of one attachment keeps the tables the other still uses.
    del(&node, &p1, "t-one", &c);
    let t = tables(&node);
    assert!(
        has(&t, "inet skiff-bridge") && has(&t, "bridge skiff-bridge"),
        "{t}"
    );
    let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
    assert!(
        !rules.contains("skiff:t-one/") && rules.contains("skiff:t-two/"),
        "{rules}"
    );

    // GC with nothing valid removes the rest, tables included.
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let call = Call {
        plugin: BRIDGE,
        node: &node,
        cmd: "GC",
        id: "",
        netns: "",
        ifname: "",
    };
    ok_json(&invoke(&call, gc.to_string().as_bytes()));
    let t = tables(&node);
    assert!(!has_any(&t), "GC left a table: {t}");
    assert!(
        has(&t, "inet skiff-bridge-localnet"),
        "the route_localnet guard stays, as route_localnet does: {t}"
    );

    // The last DEL does the same.
    add(&node, &p1, "t-three", &c);
    assert!(has(&tables(&node), "inet skiff-bridge"));
    del(&node, &p1, "t-three", &c);
    let t = tables(&node);
    assert!(!has_any(&t), "the last DEL left a table: {t}");

    // An empty table (left by an older version, say) is removed by GC too.
    node.output(&["nft", "add", "table", "inet", "skiff-bridge"]);
    ok_json(&invoke(&call, gc.to_string().as_bytes()));
    let t = tables(&node);
    assert!(!has_any(&t), "GC left an empty table: {t}");
}

/// A DEL that empties the table races ADDs that put rules into it: every
/// attachment still present afterwards keeps its rules, and the DELs of
/// all of them, concurrent again, leave no table.
#[test]
fn concurrent_del_and_add_keep_every_live_rule() {
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let mut c = conf(dir.path(), "10.93.0.0/24");
    c["ipMasq"] = json!(true);
    for round in 0..3 {
        let first = Ns::new("p");
        let first_id = format!("r{round}-first");
        add(&node, &first, &first_id, &c);
        let pods: Vec<Ns> = (0..6).map(|_| Ns::new("p")).collect();
        let ids: Vec<String> = (0..pods.len()).map(|i| format!("r{round}-{i}")).collect();
        std::thread::scope(|s| {
            s.spawn(|| del(&node, &first, &first_id, &c));
            for (p, id) in pods.iter().zip(&ids) {
                let (node, c) = (&node, &c);
                s.spawn(move || add(node, p, id, c));
            }
        });
        let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
        for id in &ids {
            assert!(
                rules.contains(&format!("skiff:{id}/eth0")),
                "round {round}: {id} lost its rule: {rules}"
            );
        }
        assert!(!rules.contains(&format!("skiff:{first_id}/")), "{rules}");
        std::thread::scope(|s| {
            for (p, id) in pods.iter().zip(&ids) {
                let (node, c) = (&node, &c);
                s.spawn(move || del(node, p, id, c));
            }
        });
        let t = tables(&node);
        assert!(!has_any(&t), "round {round}: {t}");
    }
}
