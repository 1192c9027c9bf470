//! Reading and writing cgroup interface files with errors that name the file.

use std::path::Path;

use super::CgroupError;

pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `value` to `dir/file`; the error carries the file and the value the kernel refused.
pub fn write_file(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    tracing::debug!("cgroup write {} = {value}", path.display());
    std::fs::write(&path, value).map_err(|source| CgroupError::Write {
        path,
        value: value.to_owned(),
        source,
    })
}

pub fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

pub fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path).and_then(|s| s.parse().ok())
}

/// `key value` lines (memory.stat, cpu.stat, memory.events ...) as a map.
pub fn read_kv(path: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `cpus` and `mems`: the same files on v1's cpuset controller and on v2.
pub fn cpuset(dir: &Path, c: &crate::spec::Cpu) -> Result<(), CgroupError> {
    if let Some(cpus) = c.cpus.as_deref().filter(|s| !s.is_empty()) {
        write_file(dir, "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = c.mems.as_deref().filter(|s| !s.is_empty()) {
        write_file(dir, "cpuset.mems", mems)?;
    }
    Ok(())
}
