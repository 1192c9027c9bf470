//! The files every container of a pod shares: `hostname`, `hosts` and `resolv.conf` in the pod's
//! directory, bind-mounted into each container.

use std::path::Path;

use cri_api::v1 as cri;
use tonic::Status;

use crate::cri::error::internal;

const HOST_RESOLV: &str = "/etc/resolv.conf";
const HOST_HOSTS: &str = "/etc/hosts";

/// The pod's resolv.conf: from `dns_config`, or the host's when it gives nothing (as kubelet expects
/// for `dnsPolicy: Default`).
pub fn resolv_conf(dns: Option<&cri::DnsConfig>) -> String {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return std::fs::read_to_string(HOST_RESOLV).unwrap_or_default();
    };
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s += &format!("search {}\n", dns.searches.join(" "));
    }
    for server in &dns.servers {
        s += &format!("nameserver {server}\n");
    }
    if !dns.options.is_empty() {
        s += &format!("options {}\n", dns.options.join(" "));
    }
    s
}

/// The pod's hosts file: localhost, then the pod's IPs under its hostname. A host-network pod sees the
/// host's own file.
pub fn hosts(hostname: &str, ips: &[String], host_network: bool) -> String {
    if host_network {
        return std::fs::read_to_string(HOST_HOSTS).unwrap_or_default();
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        s += &format!("{ip}\t{hostname}\n");
    }
    s
}

pub fn write(dir: &Path, name: &str, text: &str) -> Result<(), Status> {
    skiff_runtime::state::write_atomic(&dir.join(name), text.as_bytes(), 0o644)
        .map_err(|e| internal(format!("write {}/{name}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let host = std::fs::read_to_string(HOST_RESOLV).unwrap_or_default();
        assert_eq!(resolv_conf(None), host);
        assert_eq!(resolv_conf(Some(&cri::DnsConfig::default())), host);
    }

    #[test]
    fn hosts_names_the_pod_ips() {
        let h = hosts("web", &["10.88.0.2".into()], false);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.88.0.2\tweb\n"));
    }
}
