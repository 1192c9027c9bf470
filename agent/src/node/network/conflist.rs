//! The network config skiffd writes for skiff-bridge over the node's pod CIDRs, and the configs of
//! add-ons that take over from it. skiffd's own file sorts last, so an add-on's config wins the
//! lookup the moment it appears, before skiffd removes its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use skiff_cni::ipnet::IpNet;
use skiff_cni::plugin::config::Mode;

/// skiffd's generated config in the CNI conf dir.
pub const FILE: &str = "99-skiff-bridge.conflist";
/// The bridge the pods of a node without an add-on hang off.
pub const BRIDGE: &str = "skiff0";

/// The conflist: skiff-bridge in `mode` (routed or bridge) as the pods' default gateway, host-local
/// IPAM over `cidrs` (one range per family), no masquerade of its own (skiffd's rule spares the
/// cluster's pod ranges), hairpin for Services that lead back to the pod, and hostPorts; the fast
/// path's program on each routed pod's host end when `fast_path`.
pub fn render(cidrs: &[IpNet], ipam_dir: &Path, mode: Mode, fast_path: bool) -> String {
    let ranges: Vec<serde_json::Value> = cidrs
        .iter()
        .map(|c| serde_json::json!([{ "subnet": c.network().to_string() }]))
        .collect();
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [{
            "type": "skiff-bridge",
            "mode": mode,
            "bridge": BRIDGE,
            "isDefaultGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "capabilities": { "portMappings": true },
            "ipam": {
                "type": "host-local",
                "ranges": ranges,
                "dataDir": ipam_dir,
            },
        }],
    });
    if fast_path && mode == Mode::Routed {
        conf["plugins"][0]["fastPath"] = true.into();
    }
    serde_json::to_string_pretty(&conf).unwrap_or_default()
}

/// The lowest-named loadable config in `dir` that is not skiffd's own: an add-on's.
pub fn foreign(dir: &Path) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n != FILE))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .find(|f| skiff_cni::libcni::conf::load_file(f).is_ok())
}

/// Writes `text` as skiffd's config unless it is there already: temp file, fsync, rename.
pub fn write(dir: &Path, text: &str) -> std::io::Result<bool> {
    let path = dir.join(FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// Removes skiffd's config; true when there was one.
pub fn remove(dir: &Path) -> bool {
    std::fs::remove_file(dir.join(FILE)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_loadable_dual_stack_list() {
        let dir = std::env::temp_dir().join(format!("skiff-conflist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cidrs = [
            "10.244.1.0/24".parse().unwrap(),
            "fd00:1::/64".parse().unwrap(),
        ];
        assert!(write(
            &dir,
            &render(&cidrs, Path::new("/var/lib/x"), Mode::Routed, false)
        )
        .unwrap());
        assert!(!write(
            &dir,
            &render(&cidrs, Path::new("/var/lib/x"), Mode::Routed, false)
        )
        .unwrap());
        let list = skiff_cni::libcni::conf::load_file(&dir.join(FILE)).unwrap();
        assert_eq!(list.plugins[0]["type"], "skiff-bridge");
        assert_eq!(list.plugins[0]["mode"], "routed");
        assert!(list.plugins[0].get("fastPath").is_none());
        let fast = render(&cidrs, Path::new("/var/lib/x"), Mode::Routed, true);
        assert!(fast.contains("\"fastPath\": true"), "{fast}");
        let bridge = render(&cidrs, Path::new("/var/lib/x"), Mode::Bridge, true);
        assert!(!bridge.contains("fastPath"), "{bridge}");
        assert_eq!(
            list.plugins[0]["ipam"]["ranges"][1][0]["subnet"],
            "fd00:1::/64"
        );
        assert_eq!(foreign(&dir), None);
        std::fs::write(dir.join("10-flannel.conflist"), "not json").unwrap();
        assert_eq!(foreign(&dir), None, "an unloadable file is no add-on");
        std::fs::write(
            dir.join("10-flannel.conflist"),
            r#"{"cniVersion":"1.0.0","name":"cbr0","plugins":[{"type":"flannel"}]}"#,
        )
        .unwrap();
        assert_eq!(foreign(&dir), Some(dir.join("10-flannel.conflist")));
        assert!(remove(&dir));
        assert!(!remove(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
