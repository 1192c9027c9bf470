//! Running a network config list for one attachment: ADD in order with
//! prevResult chaining, DEL in reverse with the cached result, CHECK, STATUS
//! and GC, as libcni does.

use super::cache::{base64, Cache, CacheEntry, DEFAULT_CACHE_DIR};
use super::exec::{find_plugin, run_plugin, Invocation};
use crate::netns::Netns;
use crate::spec::version::at_least;
use crate::spec::{CniError, Command, ErrorCode, NetConfList, ValidAttachment};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// One container interface on one network.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// Runtime capability arguments (`portMappings`, `ips`, ...).
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// The CNI_ARGS kubelet sends for a pod sandbox.
    pub fn k8s_args(
        namespace: &str,
        name: &str,
        uid: &str,
        sandbox_id: &str,
    ) -> Vec<(String, String)> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", namespace),
            ("K8S_POD_NAME", name),
            ("K8S_POD_INFRA_CONTAINER_ID", sandbox_id),
            ("K8S_POD_UID", uid),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

pub struct Cni {
    pub plugin_dirs: Vec<String>,
    pub cache: Cache,
}

impl Cni {
    pub fn new(plugin_dirs: Vec<String>, cache_dir: Option<PathBuf>) -> Cni {
        let dir = cache_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
        Cni {
            plugin_dirs,
            cache: Cache::new(&dir),
        }
    }

    fn invocation(&self, cmd: Command, att: &Attachment) -> Invocation {
        Invocation {
            command: Some(cmd),
            container_id: att.container_id.clone(),
            netns: att.netns.clone(),
            ifname: att.ifname.clone(),
            args: att.args.clone(),
            path: self.plugin_dirs.clone(),
        }
    }

    fn exec(
        &self,
        plugin: &Map<String, Value>,
        inv: &Invocation,
        conf: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let ty = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = find_plugin(ty, &self.plugin_dirs)?;
        let stdin = serde_json::to_vec(conf).map_err(|e| CniError::internal("encode config", e))?;
        run_plugin(&path, inv, &stdin)
    }

    /// ADD through the list; caches and returns the final result. The
    /// attachment is cached (without a result) before the first plugin runs,
    /// so a runtime that dies mid-ADD finds it again for DEL or GC, also
    /// where the plugins are too old for GC.
    pub fn add(&self, list: &NetConfList, att: &Attachment) -> Result<Value, CniError> {
        self.cache.put(&cache_entry(list, att, None))?;
        let inv = self.invocation(Command::Add, att);
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let conf = build_config(list, plugin, prev.take(), &att.capability_args);
            let out = self.exec(plugin, &inv, &conf)?;
            let result: Value = serde_json::from_slice(&out).map_err(|e| {
                CniError::new(ErrorCode::Decode, "plugin returned an invalid result")
                    .with_details(e.to_string())
            })?;
            prev = Some(result);
        }
        let result = prev.unwrap_or(Value::Null);
        self.cache
            .put(&cache_entry(list, att, Some(result.clone())))?;
        Ok(result)
    }

    /// DEL through the list in reverse, with the cached ADD result.
    pub fn del(&self, list: &NetConfList, att: &Attachment) -> Result<(), CniError> {
        let inv = self.invocation(Command::Del, att);
        let cached = self.cache.get(&list.name, &att.container_id, &att.ifname);
        let prev = cached.as_ref().and_then(|c| c.result.clone());
        let caps = cached.map_or_else(|| att.capability_args.clone(), |c| c.capability_args);
        for plugin in list.plugins.iter().rev() {
            let conf = build_config(list, plugin, prev.clone(), &caps);
            self.exec(plugin, &inv, &conf)?;
        }
        self.cache
            .remove(&list.name, &att.container_id, &att.ifname);
        Ok(())
    }

    /// CHECK (0.4.0+): every plugin verifies the cached result.
    pub fn check(&self, list: &NetConfList, att: &Attachment) -> Result<(), CniError> {
        if list.disable_check || !at_least(&list.cni_version, (0, 4, 0)) {
            return Ok(());
        }
        let cached = self.cache.get(&list.name, &att.container_id, &att.ifname);
        let Some(prev) = cached.as_ref().and_then(|c| c.result.clone()) else {
            return Err(CniError::new(
                ErrorCode::UnknownContainer,
                format!("no cached result for {} on {}", att.container_id, list.name),
            ));
        };
        let inv = self.invocation(Command::Check, att);
        for plugin in &list.plugins {
            let conf = build_config(list, plugin, Some(prev.clone()), &att.capability_args);
            self.exec(plugin, &inv, &conf)?;
        }
        Ok(())
    }

    /// STATUS (1.1.0+): the first plugin that is not ready fails the list.
    pub fn status(&self, list: &NetConfList) -> Result<(), CniError> {
        if !at_least(&list.cni_version, (1, 1, 0)) {
            return Ok(());
        }
        let inv = Invocation {
            command: Some(Command::Status),
            path: self.plugin_dirs.clone(),
            ..Invocation::default()
        };
        for plugin in &list.plugins {
            let conf = build_config(list, plugin, None, &Map::new());
            self.exec(plugin, &inv, &conf)?;
        }
        Ok(())
    }

    /// GC (1.1.0+): plugins drop everything not in `valid`, and stale cache
    /// entries are removed.
    pub fn gc(&self, list: &NetConfList, valid: &[ValidAttachment]) -> Result<(), CniError> {
        let keep = |c: &CacheEntry| {
            valid
                .iter()
                .any(|v| v.container_id == c.container_id && v.ifname == c.if_name)
        };
        let stale: Vec<CacheEntry> = self
            .cache
            .list(&list.name)
            .into_iter()
            .filter(|c| !keep(c))
            .collect();
        if list.disable_gc || !at_least(&list.cni_version, (1, 1, 0)) {
            return self.gc_by_del(list, &stale);
        }
        let inv = Invocation {
            command: Some(Command::Gc),
            path: self.plugin_dirs.clone(),
            ..Invocation::default()
        };
        let attachments = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
        for plugin in &list.plugins {
            let mut conf = build_config(list, plugin, None, &Map::new());
            if let Value::Object(o) = &mut conf {
                o.insert("cni.dev/valid-attachments".into(), attachments.clone());
            }
            self.exec(plugin, &inv, &conf)?;
        }
        for c in stale {
            self.cache.remove(&list.name, &c.container_id, &c.if_name);
        }
        Ok(())
    }

    /// GC for plugins older than 1.1.0, which learn about stale attachments only through DEL: each
    /// gets one, with its netns while that still is one (the interface goes with the DEL). A failed
    /// DEL keeps its cache entry for the next GC; the first error is returned after the rest.
    fn gc_by_del(&self, list: &NetConfList, stale: &[CacheEntry]) -> Result<(), CniError> {
        let mut result = Ok(());
        for c in stale {
            let netns = Some(c.netns.clone()).filter(|p| Netns::open(p).is_ok());
            let att = Attachment {
                container_id: c.container_id.clone(),
                netns: netns.unwrap_or_default(),
                ifname: c.if_name.clone(),
                args: c
                    .cni_args
                    .iter()
                    .map(|[k, v]| (k.clone(), v.clone()))
                    .collect(),
                capability_args: c.capability_args.clone(),
            };
            if let Err(e) = self.del(list, &att) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// VERSION of a plugin, as its raw answer.
    pub fn version(&self, plugin_type: &str) -> Result<Value, CniError> {
        let path = find_plugin(plugin_type, &self.plugin_dirs)?;
        let inv = Invocation {
            command: Some(Command::Version),
            path: self.plugin_dirs.clone(),
            ..Invocation::default()
        };
        let out = run_plugin(&path, &inv, br#"{"cniVersion":"1.1.0"}"#)?;
        serde_json::from_slice(&out).map_err(|e| {
            CniError::new(ErrorCode::Decode, "invalid VERSION answer").with_details(e.to_string())
        })
    }
}

fn cache_entry(list: &NetConfList, att: &Attachment, result: Option<Value>) -> CacheEntry {
    CacheEntry {
        kind: "cniCacheV1".into(),
        container_id: att.container_id.clone(),
        config: base64(&serde_json::to_vec(list).unwrap_or_default()),
        if_name: att.ifname.clone(),
        network_name: list.name.clone(),
        netns: att.netns.clone(),
        cni_args: att
            .args
            .iter()
            .map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        capability_args: att.capability_args.clone(),
        result,
    }
}

/// The stdin of one plugin in a list: its own object plus the list's name and
/// version, the previous result and the runtime config for the capabilities
/// it declares.
pub fn build_config(
    list: &NetConfList,
    plugin: &Map<String, Value>,
    prev: Option<Value>,
    caps: &Map<String, Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev);
    }
    let declared = plugin.get("capabilities").and_then(Value::as_object);
    let mut rc = Map::new();
    for (cap, on) in declared.into_iter().flatten() {
        if on.as_bool() == Some(true) {
            if let Some(v) = caps.get(cap) {
                rc.insert(cap.clone(), v.clone());
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}
