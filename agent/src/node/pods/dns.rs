//! The pod's DNS as kubelet sets it, for the sandbox's resolv.conf: `dnsPolicy` picks the cluster's
//! resolver (ClusterFirst, and ClusterFirstWithHostNet for host-network pods), the node's own
//! (`Default`, and ClusterFirst without a cluster DNS or on the host network) or nothing (`None`);
//! `dnsConfig` is merged on top; kubelet's limits apply.

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::Pod;

use crate::node::Settings;

/// kubelet's limits: the resolver reads three nameservers, 32 search domains of 2048 characters.
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;
const MAX_SEARCH_CHARS: usize = 2048;

/// The sandbox's DNS configuration; `None` when the pod has nothing (the runtime's default).
pub fn config(s: &Settings, pod: &Pod) -> Option<cri::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let host = || host_config(&std::fs::read_to_string(&s.resolv_conf).unwrap_or_default());
    let host_net = spec.host_network.unwrap_or(false);
    let mut out = match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "None" => cri::DnsConfig::default(),
        "Default" => host(),
        "ClusterFirst" if host_net => host(),
        _ if s.cluster_dns.is_empty() => {
            tracing::warn!(pod = ?pod.metadata.name, "no clusterDNS configured: the pod gets the node's DNS (dnsPolicy Default)");
            host()
        }
        _ => cluster(s, pod, host().searches),
    };
    if let Some(extra) = &spec.dns_config {
        out.servers
            .extend(extra.nameservers.iter().flatten().cloned());
        out.searches
            .extend(extra.searches.iter().flatten().cloned());
        for o in extra.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            merge_option(&mut out.options, opt);
        }
    }
    dedup(&mut out.servers);
    dedup(&mut out.searches);
    limit(&mut out);
    let empty = out.servers.is_empty() && out.searches.is_empty() && out.options.is_empty();
    (!empty).then_some(out)
}

/// The cluster's resolver: its search path first, then the node's.
fn cluster(s: &Settings, pod: &Pod, host_searches: Vec<String>) -> cri::DnsConfig {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let d = &s.cluster_domain;
    let mut searches = Vec::new();
    if !d.is_empty() {
        searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
    }
    searches.extend(host_searches);
    cri::DnsConfig {
        servers: s.cluster_dns.clone(),
        searches,
        options: vec!["ndots:5".into()],
    }
}

/// The nameservers, search domains and options of a resolv.conf.
pub fn host_config(text: &str) -> cri::DnsConfig {
    let mut out = cri::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => out.servers.extend(words.next().map(str::to_owned)),
            // The last search or domain line wins, as in the resolver.
            Some("search") | Some("domain") => {
                out.searches = words.map(|w| w.trim_end_matches('.').to_owned()).collect()
            }
            Some("options") => out.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    out
}

/// An option replaces one of the same name (`ndots:2` replaces `ndots:5`).
fn merge_option(options: &mut Vec<String>, opt: String) {
    let name = |o: &str| o.split(':').next().unwrap_or_default().to_owned();
    let n = name(&opt);
    options.retain(|o| name(o) != n);
    options.push(opt);
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
}

fn limit(c: &mut cri::DnsConfig) {
    if c.servers.len() > MAX_NAMESERVERS {
        tracing::warn!(dropped = ?&c.servers[MAX_NAMESERVERS..], "nameserver limit exceeded: some were left out");
        c.servers.truncate(MAX_NAMESERVERS);
    }
    c.searches.truncate(MAX_SEARCHES);
    while c.searches.join(" ").len() > MAX_SEARCH_CHARS {
        c.searches.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_parsed_as_the_resolver_does() {
        let c = host_config(
            "# comment\nnameserver 10.0.0.2\nsearch a.example b.example.\nnameserver 10.0.0.3 ; x\noptions edns0 ndots:2\n",
        );
        assert_eq!(c.servers, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(c.searches, ["a.example", "b.example"]);
        assert_eq!(c.options, ["edns0", "ndots:2"]);
    }

    #[test]
    fn options_merge_by_name_and_limits_apply() {
        let mut o = vec!["ndots:5".to_string(), "edns0".into()];
        merge_option(&mut o, "ndots:1".into());
        assert_eq!(o, ["edns0", "ndots:1"]);
        let mut c = cri::DnsConfig {
            servers: (1..=5).map(|i| format!("10.0.0.{i}")).collect(),
            searches: (0..40).map(|i| format!("s{i}.example")).collect(),
            options: vec![],
        };
        limit(&mut c);
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.searches.len(), 32);
    }
}
