//! svc-load: the rate of short TCP connections to a ClusterIP Service through kube-proxy's iptables
//! rules on a skiff node (skiffd as the kubelet) against the same on a stock node (the kubelet on
//! containerd), both joined by `kubeadm join` to one real control plane, each in a network
//! namespace of its own on one lan, with the same CNI config (skiff-bridge over the node's pod
//! CIDR, as skiffd writes it) and kubeadm's own kube-proxy DaemonSet on both.
//!
//! On each node, server pods sit behind a Service of their own; the bench's server runs on threads
//! that have entered those pods' network namespaces (found through each node's CRI) and answers
//! every connection with one byte. Its client opens connections to the Service's ClusterIP one
//! after another on THREADS threads for SECONDS, from a pod on the same node and from the node's
//! own namespace; each connection is connect, read the byte and the server's close, reset.
//! Per round, the four paths in turn, the order rotated from round to round.
//!
//! Prints one JSON object per path and round. The binaries come from `$SKIFF_BIN_DIR` and
//! `scripts/k8s-bin`.

mod cluster;
mod conn;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::json;

struct Args {
    seconds: u64,
    rounds: usize,
    threads: usize,
    servers: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        seconds: 10,
        rounds: 5,
        threads: 4,
        servers: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--servers" => a.servers = value()?.parse()?,
            other => bail!(
                "unknown argument {other} (--seconds N, --rounds N, --threads N, --servers N)"
            ),
        }
    }
    if a.seconds == 0 || a.rounds == 0 || a.threads == 0 || a.servers == 0 {
        bail!("--seconds, --rounds, --threads and --servers must be at least 1");
    }
    Ok(a)
}

/// One measured path: the node, where the client runs, its namespace, the Service.
struct Path {
    node: &'static str,
    from: &'static str,
    netns: PathBuf,
    to: SocketAddr,
}

fn main() -> Result<()> {
    let a = args()?;
    let cluster = cluster::Cluster::start()?;
    let mut paths = Vec::new();
    for side in cluster.sides() {
        let pods = cluster.pods(&side, a.servers)?;
        for s in &pods.servers {
            conn::serve(s, cluster::PORT)?;
        }
        eprintln!(
            "svc-load: {} node {}: Service {}",
            side.tag, side.node, pods.service
        );
        paths.push(Path {
            node: side.tag,
            from: "pod",
            netns: pods.client,
            to: pods.service,
        });
        paths.push(Path {
            node: side.tag,
            from: "node",
            netns: side.netns,
            to: pods.service,
        });
    }
    // Untimed: kube-proxy has the rules, and every path's first connections are behind it.
    for p in &paths {
        conn::wait_answer(&p.netns, p.to, Duration::from_secs(120))?;
        conn::rate(&p.netns, p.to, a.threads, Duration::from_secs(1))?;
    }
    let run = Duration::from_secs(a.seconds);
    for round in 0..a.rounds {
        for p in &paths {
            let mut row = measure(p, a.threads, run)?;
            row["round"] = json!(round + 1);
            println!("{row}");
        }
        eprintln!("svc-load: round {} done", round + 1);
        // No path always first, or always right after the same other one.
        paths.rotate_left(1);
    }
    drop(cluster);
    Ok(())
}

fn measure(p: &Path, threads: usize, run: Duration) -> Result<serde_json::Value> {
    let r = conn::rate(&p.netns, p.to, threads, run)?;
    if r.connections == 0 {
        bail!(
            "{} node, from the {}: no connection to {} succeeded: {}",
            p.node,
            p.from,
            p.to,
            r.first_error.unwrap_or_default()
        );
    }
    Ok(json!({
        "node": p.node,
        "from": p.from,
        "threads": threads,
        "seconds": r.seconds,
        "connections": r.connections,
        "errors": r.errors,
        "conns_per_s": r.connections as f64 / r.seconds,
        "conn_p50_us": percentile(&r.times_us, 50),
        "conn_p99_us": percentile(&r.times_us, 99),
    }))
}

/// The nearest-rank percentile `p` of `sorted` (not empty).
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}
