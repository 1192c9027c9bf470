//! A pod's user namespace (`namespace_options.userns_options`): which mode and mappings are accepted,
//! and whether this kernel can give a pod one at all.
//!
//! A POD-mode pod gets one user namespace for all its containers, with exactly one uid and one gid
//! mapping that maps container id 0, as the kubelet hands them out. The pod's other namespaces are
//! created inside it, so its containers own their network, IPC, UTS and PID namespaces.

use std::sync::OnceLock;

use cri_api::v1 as cri;
use skiff_runtime::spec::IdMapping;
use tonic::Status;

use crate::cri::error::invalid;

/// The uid and gid mappings of a pod's user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUserNs {
    pub uid: IdMapping,
    pub gid: IdMapping,
}

impl PodUserNs {
    /// The host uid and gid of the pod's root.
    pub fn root_owner(&self) -> (u32, u32) {
        (self.uid.host_id, self.gid.host_id)
    }
}

/// Whether this kernel gives pods user namespaces: it has them, allows at least one, and can idmap
/// mounts (the containers' root file systems are idmapped onto the pod's namespace).
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        let allowed = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0);
        allowed
            && std::path::Path::new("/proc/self/ns/user").exists()
            && skiff_runtime::security::idmap::supported()
    })
}

/// The pod's user namespace, or none for NODE (and when the options are absent).
pub fn from_options(
    u: Option<&cri::UserNamespace>,
    host_network: bool,
    host_ipc: bool,
    host_pid: bool,
) -> Result<Option<PodUserNs>, Status> {
    use cri::NamespaceMode as M;
    let Some(u) = u else { return Ok(None) };
    let field = "namespace_options.userns_options";
    let mode = M::try_from(u.mode)
        .map_err(|_| invalid(format!("{field}.mode: unknown mode {}", u.mode)))?;
    match mode {
        M::Node if u.uids.is_empty() && u.gids.is_empty() => return Ok(None),
        M::Node => {
            return Err(invalid(format!(
                "{field}: NODE uses the node's user namespace and takes no uids or gids"
            )))
        }
        M::Container | M::Target => {
            return Err(invalid(format!(
                "{field}.mode: {}: a pod's user namespace is POD or NODE",
                mode.as_str_name()
            )))
        }
        M::Pod => {}
    }
    if !supported() {
        return Err(Status::failed_precondition(format!(
            "{field}: this kernel does not allow user namespaces with idmapped mounts"
        )));
    }
    for (shared, what) in [
        (host_network, "network"),
        (host_ipc, "IPC"),
        (host_pid, "PID"),
    ] {
        if shared {
            return Err(invalid(format!(
                "{field}: a pod in its own user namespace cannot use the node's {what} namespace"
            )));
        }
    }
    Ok(Some(PodUserNs {
        uid: mapping(&format!("{field}.uids"), &u.uids)?,
        gid: mapping(&format!("{field}.gids"), &u.gids)?,
    }))
}

/// The one mapping of a list, which must map container id 0 onto ids that are not the node's root.
fn mapping(field: &str, maps: &[cri::IdMapping]) -> Result<IdMapping, Status> {
    let m = match maps {
        [m] => m,
        [] => return Err(invalid(format!("{field}: POD mode needs a mapping"))),
        _ => {
            return Err(invalid(format!(
                "{field}: exactly one mapping is supported, got {}",
                maps.len()
            )))
        }
    };
    let bad = |why: &str| {
        invalid(format!(
            "{field}: {} {} {}: {why}",
            m.container_id, m.host_id, m.length
        ))
    };
    if m.container_id != 0 {
        return Err(bad("container id 0 must be mapped"));
    }
    if m.length == 0 {
        return Err(bad("the length is 0"));
    }
    if m.host_id == 0 {
        return Err(bad("host id 0 would make the pod's root the node's root"));
    }
    if m.host_id.checked_add(m.length).is_none() {
        return Err(bad("the host range passes the largest id"));
    }
    Ok(IdMapping {
        container_id: m.container_id,
        host_id: m.host_id,
        size: m.length,
    })
}

/// The user namespace the sandbox config asks for, after `RunPodSandbox` accepted it.
pub fn of_config(cfg: &cri::PodSandboxConfig) -> Option<PodUserNs> {
    let ns = cfg
        .linux
        .as_ref()?
        .security_context
        .as_ref()?
        .namespace_options
        .as_ref()?;
    from_options(ns.userns_options.as_ref(), false, false, false)
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: cri::NamespaceMode, maps: &[(u32, u32, u32)]) -> cri::UserNamespace {
        let m: Vec<cri::IdMapping> = maps
            .iter()
            .map(|&(c, h, l)| cri::IdMapping {
                container_id: c,
                host_id: h,
                length: l,
            })
            .collect();
        cri::UserNamespace {
            mode: mode as i32,
            uids: m.clone(),
            gids: m,
        }
    }

    fn err(u: &cri::UserNamespace) -> String {
        from_options(Some(u), false, false, false)
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn node_and_absent_mean_none() {
        use cri::NamespaceMode as M;
        assert_eq!(from_options(None, true, true, true).unwrap(), None);
        let node = opts(M::Node, &[]);
        assert_eq!(from_options(Some(&node), true, true, true).unwrap(), None);
        assert!(err(&opts(M::Node, &[(0, 1000, 10)])).contains("NODE"));
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        use cri::NamespaceMode as M;
        assert!(err(&opts(M::Container, &[])).contains("CONTAINER"));
        assert!(err(&opts(M::Target, &[])).contains("TARGET"));
        if !supported() {
            return;
        }
        let two = opts(M::Pod, &[(0, 1000, 100000), (0, 2000, 100000)]);
        assert!(err(&two).contains("exactly one mapping"));
        assert!(err(&opts(M::Pod, &[(1, 1000, 100000)])).contains("container id 0"));
        assert!(err(&opts(M::Pod, &[(0, 0, 100000)])).contains("node's root"));
        assert!(err(&opts(M::Pod, &[(0, 1000, 0)])).contains("length is 0"));
        assert!(err(&opts(M::Pod, &[(0, u32::MAX, 2)])).contains("largest id"));
        assert!(err(&opts(M::Pod, &[])).contains("needs a mapping"));
        let ok = opts(M::Pod, &[(0, 1000, 100000)]);
        let host_net = from_options(Some(&ok), true, false, false).unwrap_err();
        assert!(host_net.message().contains("node's network"));
        let u = from_options(Some(&ok), false, false, false)
            .unwrap()
            .unwrap();
        assert_eq!(u.root_owner(), (1000, 1000));
        assert_eq!(u.uid.size, 100000);
    }
}
