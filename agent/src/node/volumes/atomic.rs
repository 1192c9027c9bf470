//! Kubelet's atomic writer: a volume's files live in a timestamped directory that the `..data`
//! symlink points at; each visible name is a symlink through `..data`. An update writes a new
//! directory and swaps `..data` with one rename, so a reader never sees half of an update.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume: its content and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path {0:?} must be relative, without '..'")]
    Path(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io(what.display().to_string(), e)
}

/// Rejects absolute paths, `..` and names starting with `..` (kubelet's reserved ones).
fn check(rel: &str) -> Result<(), Error> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(()).ok_or_else(|| Error::Path(rel.into()))
}

/// Whether `dir` already shows exactly `files`.
fn unchanged(dir: &Path, files: &BTreeMap<String, File>) -> bool {
    let data = dir.join(DATA);
    files.iter().all(|(rel, f)| {
        let p = data.join(rel);
        std::fs::read(&p).ok().as_ref() == Some(&f.content)
            && std::fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o7777 == f.mode)
    }) && count_files(&data) == files.len()
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return usize::MAX;
    };
    rd.flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Makes `dir` show `files`; returns whether anything changed.
pub fn write(dir: &Path, files: &BTreeMap<String, File>) -> Result<bool, Error> {
    for rel in files.keys() {
        check(rel)?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if unchanged(dir, files) {
        return Ok(false);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("..{stamp}");
    let new = dir.join(&name);
    std::fs::create_dir(&new).map_err(io(&new))?;
    for (rel, f) in files {
        let p = new.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut out = std::fs::File::create(&p).map_err(io(&p))?;
        out.write_all(&f.content).map_err(io(&p))?;
        out.set_permissions(std::fs::Permissions::from_mode(f.mode))
            .map_err(io(&p))?;
        out.sync_all().map_err(io(&p))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(DATA)).map_err(io(dir))?;
    link_top_level(dir, files)?;
    if let Some(old) = old.filter(|o| o.as_os_str() != name.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// A `name -> ..data/name` link per top-level entry; links of entries gone are removed.
fn link_top_level(dir: &Path, files: &BTreeMap<String, File>) -> Result<(), Error> {
    let tops: std::collections::BTreeSet<&str> =
        files.keys().filter_map(|k| k.split('/').next()).collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(top), &link).map_err(io(&link))?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !tops.contains(n.as_str()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, File> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    File {
                        content: v.as_bytes().to_vec(),
                        mode: 0o644,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn updates_swap_data_and_drop_old_names() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("v");
        assert!(write(&d, &files(&[("token", "a"), ("sub/ns", "x")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("token")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(d.join("sub/ns")).unwrap(), "x");
        let first = std::fs::read_link(d.join(DATA)).unwrap();
        assert!(!write(&d, &files(&[("token", "a"), ("sub/ns", "x")])).unwrap());
        assert!(write(&d, &files(&[("token", "b")])).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("token")).unwrap(), "b");
        assert!(!d.join("sub").exists());
        assert!(!d.join(first).exists());
    }

    #[test]
    fn escaping_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "a/../../x", "..data"] {
            assert!(
                matches!(write(t.path(), &files(&[(bad, "")])), Err(Error::Path(_))),
                "{bad}"
            );
        }
    }
}
