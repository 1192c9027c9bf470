//! Checks a `RunPodSandbox` request before anything is created, and turns it into a plan: which
//! namespaces to pin, the hostname, the sysctls as `/proc/sys` paths, the port mappings for CNI.
//! Every refusal is InvalidArgument naming the field.

use std::net::IpAddr;
use std::path::{Component, Path};

use cri_api::v1 as cri;
use serde_json::{json, Value};
use tonic::Status;

use crate::cri::error::{invalid, truncate};

/// Runtime handlers (RuntimeClass handlers) this runtime serves; "" is the default one.
pub const HANDLERS: [&str; 1] = [""];
const MAX_NAME: usize = 253;
const MAX_PATH: usize = 4096;
const MAX_LABELS_BYTES: usize = 256 * 1024;
const MAX_DNS_ENTRIES: usize = 32;
/// The kernel's HOST_NAME_MAX.
const MAX_HOSTNAME: usize = 64;

/// What a valid request asks for.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub host_network: bool,
    pub host_ipc: bool,
    /// The pod's containers share one PID namespace held by an infra process.
    pub shared_pid: bool,
    /// The hostname inside the pod's UTS namespace; empty for host-network pods.
    pub hostname: String,
    /// `/proc/sys`-relative paths and values.
    pub sysctls: Vec<(String, String)>,
    pub cgroup_parent: String,
    /// The CNI `portMappings` capability argument.
    pub port_mappings: Vec<Value>,
    /// The pod's own user namespace (POD mode), which owns its other namespaces.
    pub userns: Option<super::userns::PodUserNs>,
}

pub fn check(cfg: &cri::PodSandboxConfig, handler: &str) -> Result<Plan, Status> {
    if !HANDLERS.contains(&handler) {
        return Err(invalid(format!(
            "runtime_handler {:?} is not configured (known: \"\" for the default)",
            truncate(handler)
        )));
    }
    check_metadata(cfg.metadata.as_ref())?;
    check_maps(cfg)?;
    crate::cri::spec::enums::check_sandbox(cfg)?;
    check_log_directory(&cfg.log_directory)?;
    if let Some(dns) = &cfg.dns_config {
        check_dns(dns)?;
    }
    let linux = cfg.linux.clone().unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let mut plan = namespaces(&ns)?;
    plan.hostname = if plan.host_network {
        String::new()
    } else {
        hostname(cfg)?
    };
    plan.sysctls = sysctls(&linux, &plan)?;
    plan.cgroup_parent = cgroup_parent(&linux.cgroup_parent)?;
    plan.port_mappings = port_mappings(&cfg.port_mappings)?;
    Ok(plan)
}

fn check_text(field: &str, v: &str, max: usize, required: bool) -> Result<(), Status> {
    if required && v.is_empty() {
        return Err(invalid(format!("{field} is empty")));
    }
    if v.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes long (at most {max})",
            v.len()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} {:?} has control characters",
            truncate(v)
        )));
    }
    Ok(())
}

fn check_metadata(m: Option<&cri::PodSandboxMetadata>) -> Result<(), Status> {
    let m = m.ok_or_else(|| invalid("metadata is missing"))?;
    check_text("metadata.name", &m.name, MAX_NAME, true)?;
    check_text("metadata.namespace", &m.namespace, MAX_NAME, true)?;
    check_text("metadata.uid", &m.uid, MAX_NAME, true)?;
    if m.attempt > i32::MAX as u32 {
        return Err(invalid("metadata.attempt is out of range"));
    }
    Ok(())
}

fn check_maps(cfg: &cri::PodSandboxConfig) -> Result<(), Status> {
    for (field, map) in [("labels", &cfg.labels), ("annotations", &cfg.annotations)] {
        let bytes: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_LABELS_BYTES {
            return Err(invalid(format!(
                "{field} total {bytes} bytes (at most {MAX_LABELS_BYTES})"
            )));
        }
        if map.keys().any(String::is_empty) {
            return Err(invalid(format!("{field} has an empty key")));
        }
    }
    Ok(())
}

/// An absolute path without `..`, as a directory kubelet owns.
pub fn check_log_directory(dir: &str) -> Result<(), Status> {
    if dir.is_empty() {
        return Ok(());
    }
    check_text("log_directory", dir, MAX_PATH, false)?;
    let p = Path::new(dir);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!(
            "log_directory {:?} must be an absolute path without \"..\"",
            truncate(dir)
        )));
    }
    Ok(())
}

fn check_dns(dns: &cri::DnsConfig) -> Result<(), Status> {
    for (field, list) in [
        ("dns_config.servers", &dns.servers),
        ("dns_config.searches", &dns.searches),
        ("dns_config.options", &dns.options),
    ] {
        if list.len() > MAX_DNS_ENTRIES {
            return Err(invalid(format!(
                "{field} has {} entries (at most {MAX_DNS_ENTRIES})",
                list.len()
            )));
        }
        for v in list {
            check_text(field, v, MAX_NAME, true)?;
            if v.chars().any(char::is_whitespace) || v.contains('/') {
                return Err(invalid(format!(
                    "{field} entry {:?} is not a single word",
                    truncate(v)
                )));
            }
        }
    }
    if let Some(bad) = dns.servers.iter().find(|s| s.parse::<IpAddr>().is_err()) {
        return Err(invalid(format!(
            "dns_config.servers: {:?} is not an IP address",
            truncate(bad)
        )));
    }
    Ok(())
}

fn mode(field: &str, v: i32) -> Result<cri::NamespaceMode, Status> {
    cri::NamespaceMode::try_from(v)
        .map_err(|_| invalid(format!("namespace_options.{field}: unknown mode {v}")))
}

fn namespaces(ns: &cri::NamespaceOption) -> Result<Plan, Status> {
    use cri::NamespaceMode::{Container, Node, Pod, Target};
    let network = mode("network", ns.network)?;
    let ipc = mode("ipc", ns.ipc)?;
    let pid = mode("pid", ns.pid)?;
    for (field, m) in [("network", network), ("ipc", ipc)] {
        if matches!(m, Container | Target) {
            return Err(invalid(format!(
                "namespace_options.{field}: a pod's namespace is POD or NODE"
            )));
        }
    }
    if pid == Target {
        return Err(invalid(
            "namespace_options.pid: TARGET is for containers, not pods",
        ));
    }
    if !ns.target_id.is_empty() {
        return Err(invalid(
            "namespace_options.target_id is for containers, not pods",
        ));
    }
    let userns = super::userns::from_options(
        ns.userns_options.as_ref(),
        network == Node,
        ipc == Node,
        pid == Node,
    )?;
    Ok(Plan {
        host_network: network == Node,
        host_ipc: ipc == Node,
        shared_pid: pid == Pod,
        userns,
        ..Plan::default()
    })
}

/// The configured hostname, or the node's when none is given (as containerd does), as an RFC 1123 name
/// the kernel takes.
fn hostname(cfg: &cri::PodSandboxConfig) -> Result<String, Status> {
    if cfg.hostname.is_empty() {
        return Ok(super::host_hostname());
    }
    let h = cfg.hostname.as_str();
    let ok_chars = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if h.len() > MAX_HOSTNAME || !ok_chars || h.starts_with(['-', '.']) || h.contains("..") {
        return Err(invalid(format!(
            "hostname {:?} is not a valid hostname (letters, digits, '-' and '.', at most {MAX_HOSTNAME})",
            truncate(h)
        )));
    }
    Ok(h.to_string())
}

/// Which namespace a sysctl belongs to; only namespaced ones may be set for a pod.
#[derive(Debug, PartialEq)]
enum SysctlNs {
    Net,
    Ipc,
}

fn sysctl_ns(path: &str) -> Option<SysctlNs> {
    if path.starts_with("net/") {
        return Some(SysctlNs::Net);
    }
    let ipc = ["kernel/shm", "kernel/msg", "kernel/sem"]
        .iter()
        .any(|p| path.starts_with(p))
        || path.starts_with("fs/mqueue/");
    ipc.then_some(SysctlNs::Ipc)
}

/// `net.ipv4.ip_forward` or `net/ipv4/ip_forward` → `net/ipv4/ip_forward`.
pub fn sysctl_path(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if !ok {
        return None;
    }
    let path = if key.contains('/') {
        key.to_string()
    } else {
        key.replace('.', "/")
    };
    let parts_ok = path
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..");
    parts_ok.then_some(path)
}

fn sysctls(
    linux: &cri::LinuxPodSandboxConfig,
    plan: &Plan,
) -> Result<Vec<(String, String)>, Status> {
    let mut out = Vec::new();
    for (key, value) in &linux.sysctls {
        let bad = |why: &str| invalid(format!("sysctls: {:?}: {why}", truncate(key)));
        let path = sysctl_path(key).ok_or_else(|| bad("not a sysctl name"))?;
        match sysctl_ns(&path) {
            None => {
                return Err(bad(
                    "not a namespaced sysctl (net.*, kernel.shm*/msg*/sem, fs.mqueue.*)",
                ))
            }
            Some(SysctlNs::Net) if plan.host_network => {
                return Err(bad("a host-network pod cannot set network sysctls"))
            }
            Some(SysctlNs::Ipc) if plan.host_ipc => {
                return Err(bad("a host-IPC pod cannot set IPC sysctls"))
            }
            Some(_) => {}
        }
        if !Path::new("/proc/sys").join(&path).exists() {
            return Err(bad("no such sysctl on this kernel"));
        }
        if value.is_empty() || value.len() > MAX_PATH || value.contains(['\n', '\0']) {
            return Err(bad("the value is empty, too long or has a newline"));
        }
        out.push((path, value.clone()));
    }
    Ok(out)
}

/// Both drivers' forms: a cgroupfs path (`/kubepods/pod1`) or a systemd slice (`kubepods-pod1.slice`).
fn cgroup_parent(p: &str) -> Result<String, Status> {
    if p.is_empty() {
        return Ok(String::new());
    }
    check_text("linux.cgroup_parent", p, MAX_PATH, false)?;
    let bad = |why: &str| invalid(format!("linux.cgroup_parent {:?}: {why}", truncate(p)));
    if p.split('/').any(|c| c == "..") {
        return Err(bad("must not contain \"..\""));
    }
    if p.ends_with(".slice") && !p.contains('/') {
        return Ok(p.to_string());
    }
    if !p.starts_with('/') {
        return Err(bad(
            "must be an absolute cgroupfs path or a systemd slice name",
        ));
    }
    Ok(p.to_string())
}

fn port_mappings(pms: &[cri::PortMapping]) -> Result<Vec<Value>, Status> {
    let mut out = Vec::new();
    for (i, pm) in pms.iter().enumerate() {
        let bad = |why: String| invalid(format!("port_mappings[{i}]: {why}"));
        let proto = match cri::Protocol::try_from(pm.protocol) {
            Ok(cri::Protocol::Tcp) => "tcp",
            Ok(cri::Protocol::Udp) => "udp",
            Ok(cri::Protocol::Sctp) => "sctp",
            Err(_) => return Err(bad(format!("unknown protocol {}", pm.protocol))),
        };
        if !(1..=65535).contains(&pm.container_port) {
            return Err(bad(format!(
                "container_port {} out of range",
                pm.container_port
            )));
        }
        if !(0..=65535).contains(&pm.host_port) {
            return Err(bad(format!("host_port {} out of range", pm.host_port)));
        }
        if !pm.host_ip.is_empty() && pm.host_ip.parse::<IpAddr>().is_err() {
            return Err(bad(format!(
                "host_ip {:?} is not an IP",
                truncate(&pm.host_ip)
            )));
        }
        // As kubelet does: a mapping without a host port publishes nothing.
        if pm.host_port == 0 {
            continue;
        }
        let mut m = json!({"hostPort": pm.host_port, "containerPort": pm.container_port, "protocol": proto});
        if !pm.host_ip.is_empty() {
            m["hostIP"] = Value::String(pm.host_ip.clone());
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    fn err(c: &cri::PodSandboxConfig, handler: &str) -> String {
        let e = check(c, handler).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        e.message().to_string()
    }

    #[test]
    fn defaults_give_pod_namespaces_and_the_node_hostname() {
        let p = check(&cfg(), "").unwrap();
        assert!(!p.host_network && !p.host_ipc && p.shared_pid);
        assert_eq!(p.hostname, super::super::host_hostname());
        let mut c = cfg();
        c.hostname = "web-0.web".into();
        assert_eq!(check(&c, "").unwrap().hostname, "web-0.web");
    }

    #[test]
    fn refusals_name_the_field() {
        assert!(err(&cfg(), "kata").contains("runtime_handler"));
        let mut c = cfg();
        c.metadata.as_mut().unwrap().uid.clear();
        assert!(err(&c, "").contains("metadata.uid"));
        let mut c = cfg();
        c.hostname = "../../etc".into();
        assert!(err(&c, "").contains("hostname"));
        let mut c = cfg();
        c.log_directory = "/var/log/../../etc".into();
        assert!(err(&c, "").contains("log_directory"));
        let mut c = cfg();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: [("kernel.hostname".to_string(), "x".to_string())].into(),
            ..Default::default()
        });
        assert!(err(&c, "").contains("kernel.hostname"));
        let mut c = cfg();
        c.linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "kubepods/../../x".into(),
            ..Default::default()
        });
        assert!(err(&c, "").contains("cgroup_parent"));
        let mut c = cfg();
        c.port_mappings = vec![cri::PortMapping {
            protocol: 7,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }];
        assert!(err(&c, "").contains("port_mappings[0]"));
    }

    #[test]
    fn sysctl_names() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            "net/ipv4/ip_forward"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            "net/ipv4/conf/eth0.100/forwarding"
        );
        assert!(sysctl_path("net/../../etc").is_none());
        assert!(sysctl_path("/net/x").is_none());
        assert_eq!(sysctl_ns("kernel/shmmax"), Some(SysctlNs::Ipc));
        assert_eq!(sysctl_ns("kernel/hostname"), None);
    }

    #[test]
    fn host_port_zero_is_dropped() {
        let pm = |h| cri::PortMapping {
            protocol: cri::Protocol::Udp as i32,
            container_port: 53,
            host_port: h,
            host_ip: String::new(),
        };
        let v = port_mappings(&[pm(0), pm(5353)]).unwrap();
        assert_eq!(
            v,
            vec![json!({"hostPort": 5353, "containerPort": 53, "protocol": "udp"})]
        );
    }
}
