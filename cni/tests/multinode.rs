//! Two nodes, each with its own bridge and pod CIDR, joined by a veth wire
//! with host routes to each other's pod CIDR: pods talk without NAT.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_json::json;

fn conf(dir: &std::path::Path, subnet: &str) -> serde_json::Value {
    json!({
        "cniVersion": "1.0.0", "name": "cluster", "type": "skiff-bridge",
        "bridge": "cni0", "isDefaultGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "dataDir": dir.to_str(),
                 "ranges": [[{"subnet": subnet}]]}
    })
}

#[test]
fn pod_on_node_a_reaches_pod_on_node_b_without_nat() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (na, nb) = (Ns::new("na"), Ns::new("nb"));
    wire(&na, "192.168.90.1/24", &nb, "192.168.90.2/24");
    na.ip(&["route", "add", "10.201.0.0/24", "via", "192.168.90.2"]);
    nb.ip(&["route", "add", "10.200.0.0/24", "via", "192.168.90.1"]);
    let (pa, pb) = (Ns::new("pa"), Ns::new("pb"));
    let ca = conf(da.path(), "10.200.0.0/24");
    let cb = conf(db.path(), "10.201.0.0/24");
    let ra = add(&na, &pa, "pod-a", &ca);
    let rb = add(&nb, &pb, "pod-b", &cb);
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    let srv = pb.serve_once(&format!("{ipb}:7100"));
    let seen = pa
        .connect(&format!("{ipb}:7100"))
        .expect("cross-node connect");
    srv.join().unwrap();
    assert!(
        seen.starts_with(&format!("{ipa}:")),
        "pod B must see pod A's own address, saw {seen}"
    );
    del(&na, &pa, "pod-a", &ca);
    del(&nb, &pb, "pod-b", &cb);
}
