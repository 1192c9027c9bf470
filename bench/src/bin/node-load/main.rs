//! node-load: a Kubernetes node as the API server sees it, skiffd as the kubelet against the stock
//! kubelet v1.28.7 on containerd, each joined by `kubeadm join` to a control plane of its own on
//! loopback, in turn (`nodes`).
//!
//! `node-load [start]` measures, for each node:
//! - the time from the agent's start (skiffd, or the kubelet) to the Node first seen Ready;
//! - the memory of the node's processes (skiffd and its monitors; kubelet, containerd and its
//!   shims), idle and with every pod running;
//! - pod start: a Deployment of PODS busybox replicas, images cached, each pod's Ready − created as
//!   one `kubectl get -w` sees both, and the wall time until all are Ready.
//!
//! `node-load api` measures, for each node, what users do through the API server (`api`) and what
//! exec probes cost (`probes`).
//!
//! `NODE_LOAD_SKIFF_LOG` sets skiffd's log filter (its `log_level`), and `NODE_LOAD_KUBELET_V`
//! the kubelet's `--v`: their logs time each kubelet API request on the node.
//!
//! Prints one JSON object per node and round. The binaries come from `$SKIFF_BIN_DIR` (a release
//! build) and `scripts/k8s-bin`.

mod api;
mod deploy;
mod nodes;
mod probes;
mod start;

use std::time::Duration;

use anyhow::{bail, Result};
use skiff_bench::containerd;
use skiff_tests::cri::busybox_layout;
use skiff_tests::registry::Registry;

use nodes::{Kind, Node, Tuning};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Start,
    Api,
}

struct Args {
    mode: Mode,
    rounds: usize,
    runtimes: Vec<Kind>,
    pods: usize,
    api: api::Args,
    probes: probes::Args,
}

const USAGE: &str = "node-load [start] [--pods N] [--rounds N] [--runtimes skiff,kubelet]\n\
    node-load api [--exec-runs N] [--log-mib MIB] [--log-reads N] [--probe-pods N] \
    [--window SECONDS] [--probes readiness[,liveness]] [--parts exec,logs,probes] [--rounds N] \
    [--runtimes skiff,kubelet]";

fn args() -> Result<Args> {
    let mut a = Args {
        mode: Mode::Start,
        rounds: 1,
        runtimes: vec![Kind::Skiff, Kind::Kubelet],
        pods: 30,
        api: api::Args::default(),
        probes: probes::Args::default(),
    };
    let mut it = std::env::args().skip(1).peekable();
    match it.peek().map(String::as_str) {
        Some("api") => a.mode = Mode::Api,
        Some("start") => {}
        _ => return flags(a, it),
    }
    it.next();
    flags(a, it)
}

fn flags(mut a: Args, mut it: impl Iterator<Item = String>) -> Result<Args> {
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match (a.mode, flag.as_str()) {
            (_, "--rounds") => a.rounds = value()?.parse()?,
            (_, "--runtimes") => {
                a.runtimes = value()?
                    .split(',')
                    .map(Kind::parse)
                    .collect::<Result<_>>()?
            }
            (Mode::Start, "--pods") => a.pods = value()?.parse()?,
            (Mode::Api, "--exec-runs") => a.api.exec_runs = value()?.parse()?,
            (Mode::Api, "--log-mib") => a.api.log_mib = value()?.parse()?,
            (Mode::Api, "--log-reads") => a.api.log_reads = value()?.parse()?,
            (Mode::Api, "--probe-pods") => a.probes.pods = value()?.parse()?,
            (Mode::Api, "--window") => {
                a.probes.window = Duration::from_secs(value()?.parse()?);
            }
            (Mode::Api, "--probes") => a.probes.kinds = probes::parse_kinds(&value()?)?,
            (Mode::Api, "--parts") => a.api.parts = api::Parts::parse(&value()?)?,
            (_, other) => bail!("unknown argument {other}; usage:\n{USAGE}"),
        }
    }
    if a.api.exec_runs == 0 || a.api.log_reads == 0 || a.api.log_mib == 0 {
        bail!("--exec-runs, --log-reads and --log-mib must be positive");
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = args()?;
    let registry = Registry::start()?;
    registry.push(busybox_layout(), "latest", "library/busybox:latest", &[])?;
    containerd::push_pause(&registry)?;
    let tuning = match a.mode {
        Mode::Start => Tuning::default(),
        Mode::Api => a.api.tuning(),
    };
    for round in 0..a.rounds {
        let mut order = a.runtimes.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for kind in order {
            let node = Node::start(kind, &registry, &tuning)?;
            let row = match a.mode {
                Mode::Start => start::measure(&node, a.pods)?,
                Mode::Api => {
                    let mut row = api::measure(&node, &a.api)?;
                    if a.api.parts.probes {
                        row["probes"] = probes::measure(&node, &a.probes)?;
                    }
                    row
                }
            };
            drop(node);
            println!("{row}");
            eprintln!("node-load: round {} {} done", round + 1, kind.label());
        }
    }
    Ok(())
}

/// The image every pod runs, as the nodes pull it.
fn image() -> String {
    format!("registry.skiff.test/{}", deploy::IMAGE)
}
