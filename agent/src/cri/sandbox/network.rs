//! The pod network: CNI ADD/DEL through `skiff_cni::libcni` with kubelet's CNI_ARGS and the
//! `portMappings` capability, and the cleanup of attachments that belong to no sandbox.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value};
use skiff_cni::libcni::cache::CacheEntry;
use skiff_cni::libcni::{self, Attachment, Cni};
use skiff_cni::netlink::{link, Socket};
use skiff_cni::netns::Netns;
use skiff_cni::spec::{NetConfList, ValidAttachment};
use tonic::Status;

use super::SandboxRecord;
use crate::cri::error::internal;
use crate::cri::Daemon;

/// The pod's interface name, as kubelet names it.
pub const IFNAME: &str = "eth0";

fn cni(d: &Daemon) -> Cni {
    let dirs = d
        .config
        .cni
        .bin_dirs
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Cni::new(dirs, Some(d.config.cni.cache_dir.clone()))
}

/// The network config in use; its absence is a precondition failure that says so.
pub fn load_conf(d: &Daemon) -> Result<NetConfList, Status> {
    let dir = &d.config.cni.conf_dir;
    libcni::load_dir(dir).map(|(_, l)| l).map_err(|e| {
        Status::failed_precondition(format!(
            "no usable CNI network config in {} ({e}); only hostNetwork pods can run without one",
            dir.display()
        ))
    })
}

fn attachment(rec: &SandboxRecord, netns: &str, ports: &[Value]) -> Attachment {
    let m = rec.config.metadata.clone().unwrap_or_default();
    let mut caps = Map::new();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), Value::Array(ports.to_vec()));
    }
    Attachment {
        container_id: rec.id.clone(),
        netns: netns.into(),
        ifname: IFNAME.into(),
        args: Attachment::k8s_args(&m.namespace, &m.name, &m.uid, &rec.id),
        capability_args: caps,
    }
}

/// CNI ADD of the pod's netns on `list`; a failed ADD is rolled back with DEL before returning.
pub fn attach(
    d: &Daemon,
    list: &NetConfList,
    rec: &SandboxRecord,
    netns: &Path,
    ports: &[Value],
) -> Result<Value, Status> {
    let att = attachment(rec, &netns.to_string_lossy(), ports);
    let c = cni(d);
    c.add(list, &att).map_err(|e| {
        if let Err(del) = c.del(list, &att) {
            tracing::warn!(sandbox = %rec.id, "DEL after a failed ADD: {del}");
        }
        internal(format!("CNI ADD on network {:?}: {e}", list.name))
    })
}

/// The network config the ADD used (from the CNI cache), else the current one.
fn conf_for(d: &Daemon, c: &Cni, network: &str, id: &str) -> Option<NetConfList> {
    let cached = c.cache.get(network, id, IFNAME).and_then(cached_conf);
    cached.or_else(|| load_conf(d).ok().filter(|l| l.name == network))
}

/// The network config list a cache entry was written with.
fn cached_conf(e: CacheEntry) -> Option<NetConfList> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(e.config)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// CNI DEL, which releases the pod's IP. Without any config for the network there is nothing to ask.
pub fn detach(d: &Daemon, rec: &SandboxRecord, network: &str) -> Result<(), Status> {
    let c = cni(d);
    let Some(list) = conf_for(d, &c, network, &rec.id) else {
        tracing::warn!(sandbox = %rec.id, network, "no CNI config left for DEL");
        return Ok(());
    };
    // A pin that lost its mount is a plain file: DEL then runs without a netns, as the spec allows.
    let netns = rec
        .netns
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| Netns::open(p).is_ok())
        .unwrap_or_default();
    c.del(&list, &attachment(rec, &netns, &[]))
        .map_err(|e| internal(format!("CNI DEL on network {network:?}: {e}")))
}

/// Start-up garbage collection of every network skiffd may have attached pods to (the current config
/// and each one the CNI cache names): CNI GC with the attachments of `records` as the valid ones, so
/// the plugins release the addresses, host veths and rules of every other attachment (left by a crash
/// between ADD and saving the record, or by a removed record). For plugins older than CNI 1.1.0,
/// libcni falls back to DEL of each cached attachment not in the list.
pub fn collect_garbage(d: &Daemon, records: &[SandboxRecord]) {
    let c = cni(d);
    let mut networks: BTreeMap<String, NetConfList> = BTreeMap::new();
    for e in c.cache.list_all() {
        let name = e.network_name.clone();
        if let Some(list) = cached_conf(e).filter(|l| l.name == name) {
            networks.entry(name).or_insert(list);
        }
    }
    if let Ok(current) = load_conf(d) {
        networks.insert(current.name.clone(), current);
    }
    for (name, list) in networks {
        let valid: Vec<ValidAttachment> = records
            .iter()
            .filter(|r| r.cni_network.as_deref() == Some(name.as_str()))
            .map(|r| ValidAttachment {
                container_id: r.id.clone(),
                ifname: IFNAME.into(),
            })
            .collect();
        match c.gc(&list, &valid) {
            Ok(()) => tracing::info!(network = %name, kept = valid.len(), "CNI garbage collected"),
            Err(e) => tracing::warn!(network = %name, "CNI GC: {e}"),
        }
    }
}

/// Why a pod attached to a network has lost it: its interface is gone from its netns (a DEL that
/// ran without the record learning of it). `None` when it is there, or the netns cannot be looked at
/// (the pin checks report that).
pub fn interface_lost(rec: &SandboxRecord) -> Option<String> {
    let path = rec.netns.as_ref()?.to_string_lossy().into_owned();
    let netns = Netns::open(&path).ok()?;
    let found = netns
        .run(|| Socket::route().and_then(|mut s| link::by_name(&mut s, IFNAME)))
        .ok()?;
    match found {
        Ok(None) => Some(format!("{IFNAME} is gone from {path}")),
        _ => None,
    }
}

/// The pod IPs in a CNI result (any version), IPv4 first, as kubelet takes the first as primary.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = Vec::new();
    let strip = |s: &str| s.split('/').next().unwrap_or_default().to_string();
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        for ip in list {
            if let Some(a) = ip.get("address").and_then(Value::as_str) {
                ips.push(strip(a));
            }
        }
    }
    for key in ["ip4", "ip6"] {
        if let Some(a) = result
            .get(key)
            .and_then(|v| v.get("ip"))
            .and_then(Value::as_str)
        {
            ips.push(strip(a));
        }
    }
    ips.retain(|s| !s.is_empty());
    ips.sort_by_key(|s| s.contains(':'));
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ips_from_results() {
        let r = json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.88.0.5/24","gateway":"10.88.0.1"}]});
        assert_eq!(result_ips(&r), vec!["10.88.0.5", "fd00::5"]);
        let old = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.2/16"}});
        assert_eq!(result_ips(&old), vec!["10.1.0.2"]);
        assert!(result_ips(&Value::Null).is_empty());
    }
}
