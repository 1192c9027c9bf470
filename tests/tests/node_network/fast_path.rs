//! The fast path (skiffd's default with routed pods, where the kernel runs it): a bulk TCP transfer
//! between pods on two nodes crosses neither node's IP forward but for its handshake, which still
//! goes through the stack on both (so FORWARD rules decide on it: `policy` checks that they do).

use skiff_tests::k8s::netns_node::NetnsNode;

use super::Cluster;

/// Bytes sent pod to pod; with 64 KiB segments over a thousand through the forward without the
/// fast path.
const BYTES: u64 = 64 << 20;

/// The fast path's programs on the ingress of the node's `eth0`.
pub fn uplink_programs(n: &NetnsNode) -> Vec<String> {
    n.ns.run(|| skiff_cni::fastpath::programs_on("eth0").unwrap())
}

/// The node's `IpForwDatagrams`.
fn forwarded(n: &NetnsNode) -> u64 {
    let out = n.ns.exec("cat").arg("/proc/net/snmp").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().unwrap(), ip.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

pub fn established_flows_skip_the_forward(c: &Cluster, srv: &str) {
    let (a, b) = (&c.a, &c.b);
    let conf = std::fs::read_to_string(a.conf_dir().join("99-skiff-bridge.conflist")).unwrap();
    assert!(conf.contains("\"fastPath\": true"), "{conf}");
    for n in [a, b] {
        assert_eq!(uplink_programs(n), [skiff_cni::fastpath::INTO_POD]);
    }
    let sink = b.exec(
        "srv",
        &["sh", "-c", "nc -l -p 9000 >/dev/null 2>&1 </dev/null &"],
    );
    assert!(sink.success(), "start a sink:{sink:?}");
    let before = [forwarded(a), forwarded(b)];
    let send = format!("head -c {BYTES} /dev/zero | nc -w 3 {srv} 9000");
    let out = a.exec("cli", &["sh", "-c", &send]);
    assert!(out.success(), "send {BYTES} bytes pod to pod:{out:?}");
    let after = [forwarded(a), forwarded(b)];
    for (i, n) in [a, b].iter().enumerate() {
        let through = after[i] - before[i];
        assert!(
            (1..100).contains(&through),
            "{}: {through} packets through the IP forward for {BYTES} bytes (the handshake only \
             with the fast path)",
            n.ns.name
        );
    }
}
