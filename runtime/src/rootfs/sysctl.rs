//! `linux.sysctl`, written under /proc/sys.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};

use super::RootfsError;

fn err<'a>(key: &'a str, what: &'a str) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Sysctl {
        key: key.to_owned(),
        what: what.to_owned(),
        source,
    }
}

/// Writes each value to `/proc/sys/<key with dots as slashes>`; the file is opened beneath a
/// verified procfs /proc/sys without following any symlink or crossing a mount.
pub fn apply(sysctls: &BTreeMap<String, String>) -> Result<(), RootfsError> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let dir = nix::fcntl::open(
        Path::new("/proc/sys"),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("(all)", "open /proc/sys")(e.into()))?;
    let st = fstatfs(&dir).map_err(|e| err("(all)", "statfs /proc/sys")(e.into()))?;
    if st.filesystem_type() != PROC_SUPER_MAGIC {
        return Err(err("(all)", "check /proc/sys")(io::Error::new(
            io::ErrorKind::InvalidData,
            "/proc/sys is not procfs",
        )));
    }
    for (key, value) in sysctls {
        let rel = key_path(key).ok_or_else(|| {
            err(key, "parse key")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a sysctl name",
            ))
        })?;
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let fd = openat2(&dir, rel.as_str(), how).map_err(|e| err(key, "open")(e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(value.as_bytes())
            .map_err(err(key, "write"))?;
        tracing::debug!(key, value, "sysctl set");
    }
    Ok(())
}

/// `net.ipv4.ip_forward` → `net/ipv4/ip_forward`; None for a key that would not stay beneath
/// /proc/sys.
fn key_path(key: &str) -> Option<String> {
    let rel = key.replace('.', "/");
    let ok = !rel.is_empty()
        && !rel.starts_with('/')
        && rel.split('/').all(|c| !c.is_empty() && c != "..");
    ok.then_some(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_paths() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").as_deref(),
            Some("net/ipv4/ip_forward")
        );
        assert_eq!(key_path("kernel/msgmax").as_deref(), Some("kernel/msgmax"));
        assert_eq!(key_path("net..x"), None);
        assert_eq!(key_path("/etc"), None);
        assert_eq!(key_path(""), None);
    }
}
