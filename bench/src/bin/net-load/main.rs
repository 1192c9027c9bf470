//! net-load: pod-to-pod TCP across two skiff nodes against the same between two network namespaces
//! on one veth pair (the floor). Two skiff nodes, each in a network namespace of its own on one lan
//! (skiff-bridge over the pod CIDR the controller-manager gives it, host-gw routes between them),
//! are joined by `kubeadm join` to a real control plane; a busybox pod runs on each. The tool is the
//! bench's own, run on threads that have entered the pods' network namespaces (found through the
//! CRI), and the floor's: no image needs one. Between the two, the nodes' own namespaces across the
//! lan show what the link itself costs: the two nodes reach each other over one veth pair of their
//! own, as two NICs on one link would (`Lan::create_cabled`); the bare pod path (`bare`) shows what
//! the kernel alone charges for the pods' shape, and the same shape forwarded by tc BPF programs
//! instead of the IP stack (`redirect`) what a BPF dataplane on veths could reach; `tracked` is
//! that dataplane as a Kubernetes node could run it, taking the short way only for TCP connections
//! conntrack has seen established and does not NAT. Per round, the six paths in turn (with
//! `--reference-only`, no cluster: the four reference paths alone), the order rotated from round to
//! round:
//! - throughput: MIB MiB sent one way over one connection, MiB/s, and the CPU time the sending
//!   and receiving threads used per MiB (softirqs included);
//! - latency: TRIPS round trips of 64 bytes each way over one connection, µs per round trip.
//!
//! Prints one JSON object per path and round, and on stderr whether the kernel can make a netkit
//! pair. The binaries come from `$SKIFF_BIN_DIR` (a release
//! build) and `scripts/k8s-bin`.

mod bare;
mod cluster;
mod floor;
mod netkit;
mod netns;
mod redirect;
mod tcp;

use anyhow::{bail, Result};
use serde_json::json;
use skiff_tests::k8s::netns_node;

use tcp::End;

struct Args {
    mib: u64,
    trips: usize,
    rounds: usize,
    /// A shell command run before each round, to compare a setting of the path on and off in the
    /// same minutes.
    before_round: Option<String>,
    /// TCP congestion controls the bulk sender uses, one per round in turn (empty: each
    /// namespace's default, which a new namespace takes from the host's).
    congestion: Vec<String>,
    /// No cluster: only the paths built by hand.
    reference_only: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        mib: 1024,
        trips: 10_000,
        rounds: 3,
        before_round: None,
        congestion: Vec::new(),
        reference_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--mib" => a.mib = value()?.parse()?,
            "--round-trips" => a.trips = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--before-round" => a.before_round = Some(value()?),
            "--congestion" => {
                a.congestion = value()?.split(',').map(str::to_owned).collect();
            }
            "--reference-only" => a.reference_only = true,
            other => bail!(
                "unknown argument {other} (--mib N, --round-trips N, --rounds N, --before-round CMD, \
                 --congestion CC[,CC...], --reference-only: no cluster, only floor, bare, redirect and tracked)"
            ),
        }
    }
    if a.mib == 0 || a.trips == 0 || a.rounds == 0 {
        bail!("--mib, --round-trips and --rounds must be at least 1");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let floor = floor::Floor::create()?;
    let bare = bare::Bare::create("sknbb")?;
    let redirect = redirect::create("sknbr", false)?;
    let tracked = redirect::create("sknbt", true)?;
    eprintln!("net-load: netkit {}", netkit::probe(&bare.node_netns(0))?);
    let cluster = if a.reference_only {
        None
    } else {
        Some(cluster::Cluster::start()?)
    };
    let ends = match &cluster {
        Some(cluster) => Some(cluster_ends(cluster)?),
        None => None,
    };
    let mut paths = Vec::new();
    if let Some([client, server, node_a, node_b]) = &ends {
        paths.push(("pods", client, server));
        paths.push(("nodes", node_a, node_b));
    }
    paths.extend([
        ("floor", &floor.ends[0], &floor.ends[1]),
        ("bare", &bare.ends[0], &bare.ends[1]),
        ("redirect", &redirect.ends[0], &redirect.ends[1]),
        ("tracked", &tracked.ends[0], &tracked.ends[1]),
    ]);
    // A first short exchange on each path, untimed: ARP, routes and conntrack settled.
    for &(_, c, s) in &paths {
        tcp::round_trips(c, s, 10)?;
    }
    for round in 0..a.rounds {
        let setting = match &a.before_round {
            Some(cmd) => Some(before_round(cmd, round + 1, cluster.as_ref())?),
            None => None,
        };
        let cc =
            (!a.congestion.is_empty()).then(|| a.congestion[round % a.congestion.len()].as_str());
        for &(name, c, s) in &paths {
            let mut row = measure(name, c, s, cc, &a)?;
            row["round"] = json!(round + 1);
            if let Some(s) = &setting {
                row["setting"] = json!(s);
            }
            println!("{row}");
        }
        eprintln!("net-load: round {} done", round + 1);
        // No path always first, or always right after the same other one.
        paths.rotate_left(1);
    }
    drop(cluster);
    Ok(())
}

/// The pods' path and the nodes' path: client, server, node a, node b.
fn cluster_ends(cluster: &cluster::Cluster) -> Result<[End; 4]> {
    let server = cluster.pod("nb-server", &cluster.b)?;
    let client = cluster.pod("nb-client", &cluster.a)?;
    eprintln!(
        "net-load: pods {} ({}) -> {} ({})",
        client.ip, cluster.a.joined.name, server.ip, cluster.b.joined.name
    );
    let node = |n: &netns_node::NetnsNode| End {
        netns: n.ns.path(),
        ip: n.ip,
    };
    Ok([client, server, node(&cluster.a), node(&cluster.b)])
}

/// Runs `cmd` with `sh -c`, the round's number in `$ROUND` and the skiff nodes' network namespaces
/// (when there is a cluster) in `$NODE_A` and `$NODE_B`; what it prints goes to the round's rows as
/// `"setting"`.
fn before_round(cmd: &str, round: usize, cluster: Option<&cluster::Cluster>) -> Result<String> {
    let mut sh = std::process::Command::new("sh");
    sh.args(["-c", cmd]).env("ROUND", round.to_string());
    if let Some(c) = cluster {
        sh.env("NODE_A", &c.a.ns.name).env("NODE_B", &c.b.ns.name);
    }
    let out = sh.output()?;
    if !out.status.success() {
        bail!(
            "--before-round {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn measure(
    path: &str,
    client: &End,
    server: &End,
    cc: Option<&str>,
    a: &Args,
) -> Result<serde_json::Value> {
    let t = tcp::throughput(client, server, a.mib * 1024 * 1024, cc)?;
    let mut trips = tcp::round_trips(client, server, a.trips)?;
    trips.sort_by(f64::total_cmp);
    Ok(json!({
        "path": path,
        "mib": a.mib,
        "congestion": t.congestion,
        "throughput_mib_s": t.mib_s,
        "cpu_us_per_mib": t.cpu_us_per_mib,
        "round_trips": trips.len(),
        "rtt_p50_us": percentile(&trips, 50),
        "rtt_p99_us": percentile(&trips, 99),
    }))
}

/// The nearest-rank percentile `p` of `sorted` (not empty).
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}
