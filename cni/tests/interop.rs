//! Interop with the reference plugins from containernetworking-plugins
//! (/usr/lib/cni): same netconf, same observable result; shared host-local
//! store; and the library half driving reference plugins.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::{json, Value};
use skiff_cni::libcni::{load_dir, Attachment, Cni};
use std::path::Path;

fn have_reference() -> bool {
    Path::new(REF_DIR).join("bridge").exists() && Path::new(REF_DIR).join("host-local").exists()
}

fn conf(ty: &str, dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "interop", "type": ty,
        "bridge": "cni0", "isGateway": true, "isDefaultGateway": true, "mtu": 1400, "hairpinMode": true,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": "10.55.0.0/24"}], [{"subnet": "fd55::/64"}]],
                 "routes": [{"dst": "192.0.2.0/24"}]}
    })
}

fn run(plugin: &str, node: &Ns, pod: &Ns, cmd: &str, stdin: &Value) -> std::process::Output {
    let c = Call {
        plugin,
        node,
        cmd,
        id: "interop-ctr",
        netns: &pod.path(),
        ifname: "eth0",
    };
    invoke(&c, stdin.to_string().as_bytes())
}

/// The result with per-run details (MACs, veth names, netns paths) removed.
fn normalize(mut v: Value) -> Value {
    for i in v["interfaces"].as_array_mut().into_iter().flatten() {
        let o = i.as_object_mut().unwrap();
        o.remove("mac");
        if o.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("veth"))
        {
            o.insert("name".into(), json!("veth"));
        }
        if o.contains_key("sandbox") {
            o.insert("sandbox".into(), json!("<netns>"));
        }
    }
    if v["dns"] == json!({}) {
        v.as_object_mut().unwrap().remove("dns");
    }
    let mut routes: Vec<String> = v["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    routes.sort();
    v["routes"] = json!(routes);
    v
}

fn observe(node: &Ns, pod: &Ns) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        vec!["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        vec!["ip", "-4", "route"],
        vec!["ip", "-6", "route", "show", "default"],
    ] {
        out.push(pod.output(&args));
    }
    let mtu = pod.output(&["cat", "/sys/class/net/eth0/mtu"]);
    out.push(mtu);
    out.push(node.output(&["ip", "-4", "-o", "addr", "show", "dev", "cni0"]));
    out.push(node.output(&["cat", "/proc/sys/net/ipv4/ip_forward"]));
    out.iter()
        .map(|s| {
            s.split_whitespace()
                .filter(|w| {
                    !w.starts_with("valid_lft")
                        && !w.starts_with("preferred_lft")
                        && *w != "forever"
                        && *w != "\\"
                })
                .collect::<Vec<_>>()
                .join(" ")
                .replace(char::is_numeric, "#")
        })
        .collect()
}

#[test]
fn same_netconf_same_result_as_reference() {
    if !have_reference() {
        eprintln!("containernetworking-plugins not installed; skipping");
        return;
    }
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (n1, p1, n2, p2) = (Ns::new("n"), Ns::new("p"), Ns::new("n"), Ns::new("p"));
    let reference = ok_json(&run(
        &format!("{REF_DIR}/bridge"),
        &n1,
        &p1,
        "ADD",
        &conf("bridge", d1.path()),
    ));
    let ours = ok_json(&run(
        BRIDGE,
        &n2,
        &p2,
        "ADD",
        &conf("skiff-bridge", d2.path()),
    ));
    assert_eq!(normalize(ours.clone()), normalize(reference.clone()));
    assert_eq!(observe(&n2, &p2), observe(&n1, &p1));
    for d in [d1.path(), d2.path()] {
        let body = std::fs::read_to_string(d.join("interop/10.55.0.2")).unwrap();
        assert_eq!(body, "interop-ctr\r\neth0");
        assert!(d.join("interop/fd55::2").exists());
    }
    // Each plugin can CHECK and DEL what the other created.
    let mut chk = conf("skiff-bridge", d1.path());
    chk["prevResult"] = reference.clone();
    assert!(
        run(BRIDGE, &n1, &p1, "CHECK", &chk).status.success(),
        "skiff CHECKs reference ADD"
    );
    let mut rchk = conf("bridge", d2.path());
    rchk["prevResult"] = ours.clone();
    let on_ours = run(&format!("{REF_DIR}/bridge"), &n2, &p2, "CHECK", &rchk);
    let mut own = conf("bridge", d1.path());
    own["prevResult"] = reference.clone();
    let on_own = run(&format!("{REF_DIR}/bridge"), &n1, &p1, "CHECK", &own);
    // The reference CHECK judges our attachment exactly as it judges its own
    // (1.1.1 rejects gateway-less config routes even on its own ADD).
    assert_eq!(on_ours.status.success(), on_own.status.success());
    assert_eq!(
        String::from_utf8_lossy(&on_ours.stdout),
        String::from_utf8_lossy(&on_own.stdout)
    );
    assert!(
        run(BRIDGE, &n1, &p1, "DEL", &conf("skiff-bridge", d1.path()))
            .status
            .success()
    );
    assert!(run(
        &format!("{REF_DIR}/bridge"),
        &n2,
        &p2,
        "DEL",
        &conf("bridge", d2.path())
    )
    .status
    .success());
    for d in [d1.path(), d2.path()] {
        assert!(!d.join("interop/10.55.0.2").exists());
    }
    assert!(!p1.output(&["ip", "link"]).contains("eth0"));
    assert!(!p2.output(&["ip", "link"]).contains("eth0"));
}

#[test]
fn shared_store_with_reference_host_local() {
    if !have_reference() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let node = Ns::new("n");
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    let r1 = ok_json(&run(
        &format!("{REF_DIR}/bridge"),
        &node,
        &p1,
        "ADD",
        &conf("bridge", d.path()),
    ));
    let c = Call {
        plugin: BRIDGE,
        node: &node,
        cmd: "ADD",
        id: "second",
        netns: &p2.path(),
        ifname: "eth0",
    };
    let r2 = ok_json(&invoke(
        &c,
        conf("skiff-bridge", d.path()).to_string().as_bytes(),
    ));
    assert_eq!(pod_ip(&r1), "10.55.0.2");
    assert_eq!(
        pod_ip(&r2),
        "10.55.0.3",
        "continues after the reference's last_reserved_ip"
    );
    let srv = p1.serve_once("10.55.0.2:7200");
    p2.connect("10.55.0.2:7200")
        .expect("pods of both plugins share the bridge");
    srv.join().unwrap();
}

fn plugin_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BRIDGE, d.path().join("skiff-bridge")).unwrap();
    d
}

#[test]
fn library_drives_reference_and_skiff_plugins() {
    if !have_reference() {
        return;
    }
    let (data, cache, bin, netd) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        plugin_dir(),
        tempfile::tempdir().unwrap(),
    );
    let list = |ty: &str| {
        json!({"cniVersion": "1.0.0", "name": "libnet", "plugins": [
            {"type": ty, "bridge": "cni0", "isDefaultGateway": true,
             "ipam": {"type": "host-local", "dataDir": data.path().to_str(), "subnet": "10.44.0.0/24"}}
        ]})
    };
    std::fs::write(
        netd.path().join("10-ref.conflist"),
        list("bridge").to_string(),
    )
    .unwrap();
    std::fs::write(
        netd.path().join("20-skiff.conflist"),
        list("skiff-bridge").to_string(),
    )
    .unwrap();
    std::fs::write(netd.path().join("05-broken.conflist"), "{").unwrap();
    let (file, reference) = load_dir(netd.path()).unwrap();
    assert!(
        file.ends_with("10-ref.conflist"),
        "lowest-named valid file wins"
    );
    let node = Ns::new("n");
    let pod = Ns::new("p");
    let dirs = vec![
        bin.path().to_str().unwrap().to_string(),
        REF_DIR.to_string(),
    ];
    let cni = std::sync::Arc::new(Cni::new(dirs, Some(cache.path().to_path_buf())));
    let att = Attachment {
        container_id: "libctr".into(),
        netns: pod.path(),
        ifname: "eth0".into(),
        args: Attachment::k8s_args("default", "web", "uid-1", "libctr"),
        capability_args: Default::default(),
    };
    let (c, a, l) = (cni.clone(), att.clone(), reference.clone());
    let result = node
        .run(move || c.add(&l, &a))
        .join()
        .unwrap()
        .expect("reference ADD via library");
    assert_eq!(pod_ip(&result), "10.44.0.2");
    assert!(
        cache.path().join("results/libnet-libctr-eth0").exists(),
        "result cached"
    );
    let (c, a, l) = (cni.clone(), att.clone(), reference.clone());
    node.run(move || c.check(&l, &a))
        .join()
        .unwrap()
        .expect("reference CHECK via library");
    let (c, a, l) = (cni.clone(), att.clone(), reference.clone());
    node.run(move || c.del(&l, &a))
        .join()
        .unwrap()
        .expect("reference DEL via library");
    assert!(!cache.path().join("results/libnet-libctr-eth0").exists());

    let skiff = skiff_cni::libcni::load_file(&netd.path().join("20-skiff.conflist")).unwrap();
    let (c, a, l) = (cni.clone(), att.clone(), skiff.clone());
    let r = node
        .run(move || c.add(&l, &a))
        .join()
        .unwrap()
        .expect("skiff ADD via library");
    assert_eq!(pod_ip(&r), "10.44.0.3");
    let (c, a, l) = (cni.clone(), att.clone(), skiff);
    node.run(move || c.del(&l, &a))
        .join()
        .unwrap()
        .expect("skiff DEL via library");
    assert!(cni.version("bridge").unwrap()["supportedVersions"].is_array());
}

#[test]
fn library_chains_prev_result_and_gc() {
    let (data, cache, bin) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        plugin_dir(),
    );
    let list: skiff_cni::spec::NetConfList = serde_json::from_value(json!({
    "cniVersion": "1.1.0", "name": "chain", "plugins": [
        {"type": "skiff-bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
         "capabilities": {"portMappings": true},
         "ipam": {"type": "host-local", "dataDir": data.path().to_str(), "subnet": "10.45.0.0/24"}},
        {"type": "skiff-bridge", "bridge": "cni1",
         "ipam": {"type": "host-local", "dataDir": data.path().to_str(), "subnet": "10.46.0.0/24"}}
    ]}))
    .unwrap();
    let node = Ns::new("n");
    let (p1, p2) = (Ns::new("p"), Ns::new("p"));
    let cni = std::sync::Arc::new(Cni::new(
        vec![bin.path().to_str().unwrap().into()],
        Some(cache.path().into()),
    ));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "portMappings".into(),
        json!([{"hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]),
    );
    for (id, pod) in [("one", &p1), ("two", &p2)] {
        let att = Attachment {
            container_id: id.into(),
            netns: pod.path(),
            ifname: "eth0".into(),
            args: vec![],
            capability_args: caps.clone(),
        };
        let (c, l) = (cni.clone(), list.clone());
        let err = node
            .run(move || c.add(&l, &att))
            .join()
            .unwrap()
            .unwrap_err();
        // The second plugin sees eth0 already made by the first: chaining reached it.
        assert!(err.msg.contains("already exists"), "{err}");
    }
    // The runtime cleans up a failed ADD with DEL.
    let att = Attachment {
        container_id: "one".into(),
        netns: p1.path(),
        ifname: "eth0".into(),
        args: vec![],
        capability_args: caps,
    };
    let (c, l) = (cni.clone(), list.clone());
    node.run(move || c.del(&l, &att))
        .join()
        .unwrap()
        .expect("DEL after failed ADD");
    let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
    assert!(
        !rules.contains("skiff:one/") && rules.contains("skiff:two/"),
        "{rules}"
    );
    // GC with no valid attachments removes what "two" left behind.
    let (c, l) = (cni.clone(), list.clone());
    node.run(move || c.gc(&l, &[])).join().unwrap().expect("GC");
    let rules = node.output(&["nft", "list", "table", "inet", "skiff-bridge"]);
    assert!(!rules.contains("skiff:"), "{rules}");
    let left: Vec<_> = std::fs::read_dir(data.path().join("chain"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(left.is_empty(), "GC released every reservation: {left:?}");
    let (c, l) = (cni.clone(), list.clone());
    node.run(move || c.status(&l))
        .join()
        .unwrap()
        .expect("STATUS");
}
