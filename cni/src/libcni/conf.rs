//! Loading network configurations from a directory such as /etc/cni/net.d.

use crate::spec::{CniError, ErrorCode, NetConfList};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Loads one `.conflist`, or a single-plugin `.conf`/`.json` wrapped into a
/// list of one, as libcni does.
pub fn load_file(path: &Path) -> Result<NetConfList, CniError> {
    let bytes = std::fs::read(path)
        .map_err(|e| CniError::io(format!("cannot read {}", path.display()), e))?;
    let is_list = path.extension().is_some_and(|e| e == "conflist");
    let bad = |e: serde_json::Error| {
        CniError::new(
            ErrorCode::Decode,
            format!("invalid network config {}", path.display()),
        )
        .with_details(e.to_string())
    };
    let list = if is_list {
        serde_json::from_slice::<NetConfList>(&bytes).map_err(bad)?
    } else {
        let obj: Map<String, Value> = serde_json::from_slice(&bytes).map_err(bad)?;
        let s = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        NetConfList {
            cni_version: s("cniVersion"),
            cni_versions: Vec::new(),
            name: s("name"),
            disable_check: false,
            disable_gc: false,
            plugins: vec![obj],
        }
    };
    validate(path, list)
}

fn validate(path: &Path, mut list: NetConfList) -> Result<NetConfList, CniError> {
    if list.name.is_empty() {
        return Err(CniError::config(format!(
            "{}: network has no name",
            path.display()
        )));
    }
    if list.plugins.is_empty() {
        return Err(CniError::config(format!(
            "{}: no plugins in list",
            path.display()
        )));
    }
    if let Some(v) = best_version(&list.cni_versions) {
        list.cni_version = v;
    }
    crate::spec::version::check_supported(&list.cni_version)?;
    for p in &list.plugins {
        if p.get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            return Err(CniError::config(format!(
                "{}: a plugin has no type",
                path.display()
            )));
        }
    }
    Ok(list)
}

/// With `cniVersions`, the highest version both sides support wins.
fn best_version(versions: &[String]) -> Option<String> {
    versions
        .iter()
        .filter(|v| crate::spec::version::SUPPORTED.contains(&v.as_str()))
        .max_by_key(|v| crate::spec::version::parse(v))
        .cloned()
}

/// The lowest-named valid config in `dir` wins.
pub fn load_dir(dir: &Path) -> Result<(PathBuf, NetConfList), CniError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| CniError::io(format!("cannot read {}", dir.display()), e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    let mut last_err = None;
    for f in files {
        match load_file(&f) {
            Ok(list) => return Ok((f, list)),
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "skipping invalid CNI config");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| {
        CniError::config(format!("no network config found in {}", dir.display()))
    }))
}
