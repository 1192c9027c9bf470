//! Per-attachment result cache, in libcni's layout
//! (`<cacheDir>/results/<network>-<containerID>-<ifname>`), so DEL and CHECK
//! get the ADD result as prevResult.

use crate::ipam::store::write_atomic;
use crate::spec::CniError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network config, base64 as libcni writes its []byte field.
    #[serde(default)]
    pub config: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(rename = "netns", default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default)]
    pub result: Option<Value>,
}

pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(cache_dir: &Path) -> Cache {
        Cache {
            dir: cache_dir.join("results"),
        }
    }

    fn path(&self, network: &str, id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{id}-{ifname}"))
    }

    pub fn put(&self, e: &CacheEntry) -> Result<(), CniError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|err| CniError::io(format!("cannot create {}", self.dir.display()), err))?;
        let bytes = serde_json::to_vec(e).map_err(|err| CniError::internal("cache encode", err))?;
        write_atomic(
            &self.path(&e.network_name, &e.container_id, &e.if_name),
            &bytes,
        )
        .map_err(|err| CniError::io("cannot write result cache", err))
    }

    pub fn get(&self, network: &str, id: &str, ifname: &str) -> Option<CacheEntry> {
        let bytes = std::fs::read(self.path(network, id, ifname)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn remove(&self, network: &str, id: &str, ifname: &str) {
        let _ = std::fs::remove_file(self.path(network, id, ifname));
    }

    /// Every cached attachment of `network`.
    pub fn list(&self, network: &str) -> Vec<CacheEntry> {
        self.entries(&format!("{network}-"))
            .into_iter()
            .filter(|e| e.network_name == network)
            .collect()
    }

    /// Every cached attachment, of any network.
    pub fn list_all(&self) -> Vec<CacheEntry> {
        self.entries("")
    }

    fn entries(&self, file_prefix: &str) -> Vec<CacheEntry> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(file_prefix))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CacheEntry>(&b).ok())
            .collect()
    }
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
