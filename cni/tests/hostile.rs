//! Hostile stdin and environment: every case yields a spec-shaped error, a
//! non-zero exit, and leaves nothing behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn base(dir: &std::path::Path) -> serde_json::Value {
    json!({
        "cniVersion": "1.1.0", "name": "hostile", "type": "skiff-bridge", "bridge": "cni0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(), "subnet": "10.66.0.0/24"}
    })
}

fn expect_error(node: &Ns, pod: &Ns, dir: &std::path::Path, stdin: &[u8], want_code: Option<u64>) {
    let c = Call {
        plugin: BRIDGE,
        node,
        cmd: "ADD",
        id: "evil",
        netns: &pod.path(),
        ifname: "eth0",
    };
    let out = invoke(&c, stdin);
    assert!(!out.status.success(), "must fail");
    let err: serde_json::Value = serde_json::from_slice(&out.stdout).expect("error object is JSON");
    let code = err["code"].as_u64().expect("numeric code");
    assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
    assert!(err["cniVersion"].is_string(), "{err}");
    if let Some(w) = want_code {
        assert_eq!(code, w, "{err}");
    }
    assert!(
        !pod.output(&["ip", "link"]).contains("eth0"),
        "no interface created"
    );
    assert!(
        !node.output(&["ip", "link"]).contains("veth"),
        "no veth left"
    );
    let net = dir.join("hostile");
    let leftovers = std::fs::read_dir(&net)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "no reservation left");
}

#[test]
fn hostile_stdin_is_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pod) = (Ns::new("n"), Ns::new("p"));
    let b = base(dir.path());
    let mut cases: Vec<(Vec<u8>, Option<u64>)> = Vec::new();
    let mut with = |f: &dyn Fn(&mut serde_json::Value), code: Option<u64>| {
        let mut v = b.clone();
        f(&mut v);
        cases.push((v.to_string().into_bytes(), code));
    };
    with(&|v| v["cniVersion"] = json!("99.0.0"), Some(1));
    with(&|v| v["cniVersion"] = json!(1.0), Some(6));
    with(&|v| v["mtu"] = json!("large"), Some(6));
    with(&|v| v["mtu"] = json!(10), Some(7));
    with(&|v| v["vlan"] = json!(5000), Some(7));
    with(&|v| v["isGateway"] = json!("yes"), Some(6));
    with(&|v| v["bridge"] = json!("a/b"), Some(7));
    with(
        &|v| v["bridge"] = json!("averyveryverylongbridgename"),
        Some(7),
    );
    with(
        &|v| {
            v.as_object_mut().unwrap().remove("ipam");
        },
        Some(7),
    );
    with(
        &|v| {
            v.as_object_mut().unwrap().remove("cniVersion");
        },
        Some(7),
    );
    with(&|v| v["ipam"]["subnet"] = json!("10.0.0.0/99"), Some(7));
    with(&|v| v["ipam"]["subnet"] = json!(42), Some(7));
    with(&|v| v["ipam"]["rangeStart"] = json!("192.168.1.1"), Some(7));
    with(&|v| v["ipam"]["type"] = json!("../../bin/sh"), None);
    with(
        &|v| v["runtimeConfig"] = json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}),
        Some(7),
    );
    with(
        &|v| {
            v["runtimeConfig"] = json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]})
        },
        Some(6),
    );
    cases.push((b"not json at all".to_vec(), Some(6)));
    cases.push((b"[1,2,3]".to_vec(), Some(6)));
    cases.push((b"".to_vec(), Some(6)));
    cases.push((
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        Some(6),
    ));
    let mut huge = b.clone();
    huge["junk"] = json!("x".repeat(3 << 20));
    cases.push((huge.to_string().into_bytes(), Some(6)));
    for (stdin, code) in cases {
        expect_error(&node, &pod, dir.path(), &stdin, code);
    }
}

#[test]
fn hostile_environment_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pod) = (Ns::new("n"), Ns::new("p"));
    let b = base(dir.path()).to_string();
    for (cmd, ifname, netns, code) in [
        ("FROB", "eth0", pod.path(), 4),
        ("ADD", "", pod.path(), 4),
        ("ADD", "eth0/../x", pod.path(), 4),
        ("ADD", "a-name-far-too-long", pod.path(), 4),
        ("ADD", "eth0", "/nonexistent/netns".to_string(), 3),
        ("ADD", "eth0", "/etc/hostname".to_string(), 4),
    ] {
        let c = Call {
            plugin: BRIDGE,
            node: &node,
            cmd,
            id: "evil",
            netns: &netns,
            ifname,
        };
        let out = invoke(&c, b.as_bytes());
        assert!(!out.status.success());
        let err: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(err["code"], code, "{cmd} {ifname} {netns}: {err}");
    }
    assert!(!pod.output(&["ip", "link"]).contains("eth0"));
}
