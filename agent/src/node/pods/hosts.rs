//! The pod's names as kubelet gives them: its hostname (`spec.hostname` or the pod's name), its
//! domain `<subdomain>.<namespace>.svc.<cluster domain>`, the FQDN as hostname with
//! `setHostnameAsFQDN`, and kubelet's managed `/etc/hosts` with the pod's IPs and `hostAliases`,
//! mounted over each container's.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::node::Settings;

/// Linux's limit on a hostname.
const MAX_HOSTNAME: usize = 64;

/// The pod's hostname and, with a subdomain, its domain.
pub fn name_and_domain(s: &Settings, pod: &Pod) -> (String, Option<String>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let hostname = match spec.hostname.filter(|h| !h.is_empty()) {
        Some(h) => h,
        None => truncate(pod.metadata.name.as_deref().unwrap_or_default()),
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain =
        spec.subdomain
            .filter(|d| !d.is_empty())
            .map(|sub| match s.cluster_domain.as_str() {
                "" => format!("{sub}.{ns}.svc"),
                d => format!("{sub}.{ns}.svc.{d}"),
            });
    (hostname, domain)
}

/// A pod name as a hostname: at most 63 characters, not ending in `-` or `.`.
fn truncate(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    name[..63].trim_end_matches(['-', '.']).to_owned()
}

/// The hostname the sandbox gets: the FQDN with `setHostnameAsFQDN` (when it fits), else the
/// short name.
pub fn sandbox_hostname(s: &Settings, pod: &Pod) -> String {
    let (host, domain) = name_and_domain(s, pod);
    let fqdn = pod.spec.as_ref().and_then(|p| p.set_hostname_as_fqdn) == Some(true);
    match domain {
        Some(d) if fqdn => {
            let full = format!("{host}.{d}");
            if full.len() <= MAX_HOSTNAME {
                return full;
            }
            tracing::warn!(pod = ?pod.metadata.name, fqdn = %full, "the FQDN is longer than 64 characters: the hostname stays short");
            host
        }
        _ => host,
    }
}

/// kubelet's managed hosts file: localhost, the pod's IPs with its names, then `hostAliases`; a
/// host-network pod gets the node's file with its aliases.
pub fn content(s: &Settings, pod: &Pod, ips: &[String]) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = if spec.host_network.unwrap_or(false) {
        let node = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        format!("# Kubernetes-managed hosts file (host network).\n{node}")
    } else {
        let (host, domain) = name_and_domain(s, pod);
        let mut out = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        for ip in ips {
            match &domain {
                Some(d) => out += &format!("{ip}\t{host}.{d}\t{host}\n"),
                None => out += &format!("{ip}\t{host}\n"),
            }
        }
        out
    };
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out += "\n# Entries added by HostAliases.\n";
        for a in aliases {
            let names = a.hostnames.unwrap_or_default().join("\t");
            out += &format!("{}\t{names}\n", a.ip);
        }
    }
    out
}

/// Writes the hosts file into the pod's directory (atomically); its path.
pub fn write(pod_dir: &Path, text: &str) -> Result<PathBuf, String> {
    let path = pod_dir.join("etc-hosts");
    let fail = |e: &dyn std::fmt::Display| format!("write {}: {e}", path.display());
    std::fs::create_dir_all(pod_dir).map_err(|e| fail(&e))?;
    skiff_runtime::state::write_atomic(&path, text.as_bytes(), 0o644).map_err(|e| fail(&e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_pod_names_are_cut_to_a_valid_hostname() {
        let name = format!("{}-x", "a".repeat(62));
        assert_eq!(truncate(&name), "a".repeat(62));
        assert_eq!(truncate("web"), "web");
    }
}
