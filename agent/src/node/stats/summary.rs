//! `/stats/summary` from what the CRI layer measures (`ListPodSandboxStats`, `ImageFsInfo`), plus
//! the node's own usage and the disk usage of logs and volumes, which only the node agent knows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cri_api::v1 as cri;

use super::host;
use super::types::*;
use crate::cri::image::{usage, Usage};
use crate::cri::Daemon;
use crate::node::machine::{existing_ancestor, fs_usage};
use crate::node::NodeContext;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("list pod stats: {0}")]
    Pods(String),
    #[error("measure the disks: {0}")]
    Worker(String),
}

fn v(x: &Option<cri::UInt64Value>) -> Option<u64> {
    x.as_ref().map(|x| x.value)
}

fn cpu(c: &cri::CpuUsage) -> CpuStats {
    CpuStats {
        time: time(c.timestamp),
        usage_nano_cores: v(&c.usage_nano_cores),
        usage_core_nano_seconds: v(&c.usage_core_nano_seconds),
    }
}

fn memory(m: &cri::MemoryUsage) -> MemoryStats {
    MemoryStats {
        time: time(m.timestamp),
        available_bytes: v(&m.available_bytes),
        usage_bytes: v(&m.usage_bytes),
        working_set_bytes: v(&m.working_set_bytes),
        rss_bytes: v(&m.rss_bytes),
        page_faults: v(&m.page_faults),
        major_page_faults: v(&m.major_page_faults),
    }
}

fn interface(i: &cri::NetworkInterfaceUsage) -> InterfaceStats {
    InterfaceStats {
        name: i.name.clone(),
        rx_bytes: v(&i.rx_bytes),
        rx_errors: v(&i.rx_errors),
        tx_bytes: v(&i.tx_bytes),
        tx_errors: v(&i.tx_errors),
    }
}

fn network(n: &cri::NetworkUsage) -> NetworkStats {
    NetworkStats {
        time: time(n.timestamp),
        default: n
            .default_interface
            .as_ref()
            .map(interface)
            .unwrap_or_default(),
        interfaces: n.interfaces.iter().map(interface).collect(),
    }
}

/// The file system holding `path`, with `used` as the usage of what is measured there.
fn fs_stats(now: i64, path: &Path, used: Option<&Usage>) -> FsStats {
    let fs = fs_usage(existing_ancestor(path));
    FsStats {
        time: time(now),
        available_bytes: fs.map(|f| f.bytes_available),
        capacity_bytes: fs.map(|f| f.bytes),
        used_bytes: Some(used.map_or_else(
            || fs.map_or(0, |f| f.bytes.saturating_sub(f.bytes_available)),
            |u| u.bytes,
        )),
        inodes_free: fs.map(|f| f.inodes_free),
        inodes: fs.map(|f| f.inodes),
        inodes_used: Some(used.map_or_else(
            || fs.map_or(0, |f| f.inodes.saturating_sub(f.inodes_free)),
            |u| u.inodes,
        )),
    }
}

/// One container of a pod: the CRI's numbers, its start, its rootfs and its logs directory.
fn container(d: &Daemon, now: i64, s: &cri::ContainerStats) -> Option<(ContainerStats, Usage)> {
    let id = &s.attributes.as_ref()?.id;
    let rec = d.containers.get(id)?;
    let name = rec.config.metadata.as_ref()?.name.clone();
    let layer = s.writable_layer.as_ref().map(|w| Usage {
        bytes: v(&w.used_bytes).unwrap_or(0),
        inodes: v(&w.inodes_used).unwrap_or(0),
    });
    let log_dir = rec.log_path.as_ref().and_then(|p| p.parent());
    let logs = log_dir.map(|dir| (dir, usage(dir)));
    let mut own = layer.unwrap_or_default();
    if let Some((_, u)) = &logs {
        own.add(u);
    }
    let start = if rec.started_at > 0 {
        rec.started_at
    } else {
        rec.created_at
    };
    let stats = ContainerStats {
        name,
        start_time: time(start),
        cpu: s.cpu.as_ref().map(cpu),
        memory: s.memory.as_ref().map(memory),
        rootfs: layer.map(|u| fs_stats(now, &rec.bundle, Some(&u))),
        logs: logs.map(|(dir, u)| fs_stats(now, dir, Some(&u))),
    };
    Some((stats, own))
}

/// The newest instance per container name: exited ones a restart replaced are not reported.
fn newest_per_name<'a>(
    d: &Daemon,
    list: &'a [cri::ContainerStats],
) -> Vec<&'a cri::ContainerStats> {
    let mut newest: HashMap<String, (i64, &cri::ContainerStats)> = HashMap::new();
    for s in list {
        let Some(rec) = s.attributes.as_ref().and_then(|a| d.containers.get(&a.id)) else {
            continue;
        };
        let name = rec.config.metadata.map(|m| m.name).unwrap_or_default();
        match newest.get(&name) {
            Some((at, _)) if *at >= rec.created_at => {}
            _ => {
                newest.insert(name, (rec.created_at, s));
            }
        }
    }
    let mut out: Vec<_> = newest.into_values().map(|(_, s)| s).collect();
    out.sort_by(|a, b| {
        a.attributes
            .as_ref()
            .map(|x| &x.id)
            .cmp(&b.attributes.as_ref().map(|x| &x.id))
    });
    out
}

/// `<root>/pods/<uid>/volumes/<plugin>/<name>`: each volume's usage by name.
fn volumes(root: &Path, uid: &str, now: i64) -> Vec<(VolumeStats, Usage)> {
    let dir = crate::node::volumes::pod_dir(root, uid).join("volumes");
    let mut out = Vec::new();
    for plugin in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        for vol in std::fs::read_dir(plugin.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let u = usage(&vol.path());
            out.push((
                VolumeStats {
                    fs: fs_stats(now, &vol.path(), Some(&u)),
                    name: vol.file_name().to_string_lossy().into_owned(),
                },
                u,
            ));
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

fn pod(ctx: &NodeContext, now: i64, s: &cri::PodSandboxStats) -> Option<PodStats> {
    let attrs = s.attributes.as_ref()?;
    let meta = attrs.metadata.as_ref()?;
    let linux = s.linux.as_ref()?;
    let d = &ctx.daemon;
    let mut ephemeral = Usage::default();
    let mut containers = Vec::new();
    for c in newest_per_name(d, &linux.containers) {
        if let Some((stats, own)) = container(d, now, c) {
            ephemeral.add(&own);
            containers.push(stats);
        }
    }
    let vols = volumes(&ctx.settings.root_dir, &meta.uid, now);
    for (_, u) in &vols {
        ephemeral.add(u);
    }
    let created = d.sandboxes.get(&attrs.id).map_or(0, |sb| sb.created_at);
    Some(PodStats {
        pod_ref: PodReference {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
        },
        start_time: time(created),
        containers,
        cpu: linux.cpu.as_ref().map(cpu),
        memory: linux.memory.as_ref().map(memory),
        network: linux.network.as_ref().map(network),
        volumes: vols.into_iter().map(|(v, _)| v).collect(),
        ephemeral_storage: Some(fs_stats(now, &ctx.settings.root_dir, Some(&ephemeral))),
        process_stats: linux.process.as_ref().map(|p| ProcessStats {
            process_count: v(&p.process_count),
        }),
    })
}

fn node(ctx: &NodeContext, now: i64, image_fs: Option<&cri::FilesystemUsage>) -> NodeStats {
    let image_root = ctx.daemon.images.root();
    let image_used = image_fs.map(|f| Usage {
        bytes: v(&f.used_bytes).unwrap_or(0),
        inodes: v(&f.inodes_used).unwrap_or(0),
    });
    NodeStats {
        node_name: ctx.settings.node_name.clone(),
        system_containers: Vec::new(),
        start_time: time(host::boot_time()),
        cpu: host::cpu(&ctx.daemon.rates, now),
        memory: host::memory(now),
        network: host::network(now),
        fs: Some(fs_stats(now, &ctx.settings.root_dir, None)),
        runtime: Some(RuntimeStats {
            image_fs: Some(fs_stats(now, image_root, image_used.as_ref())),
        }),
        rlimit: Some(host::rlimit(now)),
    }
}

/// The whole summary, measured now.
pub async fn summary(ctx: &Arc<NodeContext>) -> Result<Summary, StatsError> {
    let d = &ctx.daemon;
    let pods = crate::cri::stats::list_sandboxes(d, Default::default())
        .await
        .map_err(|s| StatsError::Pods(s.message().to_string()))?
        .stats;
    let image_fs = crate::cri::image::fs_info(d, Default::default())
        .await
        .map(|r| r.image_filesystems.into_iter().next())
        .unwrap_or_default();
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let now = crate::now_ns();
        let mut pods: Vec<PodStats> = pods.iter().filter_map(|p| pod(&ctx, now, p)).collect();
        pods.sort_by(|a, b| {
            (&a.pod_ref.namespace, &a.pod_ref.name).cmp(&(&b.pod_ref.namespace, &b.pod_ref.name))
        });
        Summary {
            node: node(&ctx, now, image_fs.as_ref()),
            pods,
        }
    })
    .await
    .map_err(|e| StatsError::Worker(e.to_string()))
}
