//! kubelet's command line, as kubeadm's systemd drop-in and `kubeadm-flags.env` write it.
//!
//! Flags come as `--name=value` or `--name value`; booleans as `--name`, `--name=true|false`. A
//! flag skiffd does not know is a warning, never a failure: distributions pass flags of their own
//! and an upgrade must not stop a node from starting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Taint;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FlagError {
    #[error("--{0} needs a value")]
    MissingValue(String),
    #[error("--{flag}={value:?}: {message}")]
    Invalid {
        flag: String,
        value: String,
        message: String,
    },
}

/// The flags node mode acts on. Defaults are kubelet's.
#[derive(Debug, Clone, PartialEq)]
pub struct Flags {
    pub version: bool,
    pub help: bool,
    pub bootstrap_kubeconfig: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    /// The `KubeletConfiguration` file.
    pub config: Option<PathBuf>,
    /// skiffd's own configuration (socket, state directories, CNI): not a kubelet flag.
    pub skiffd_config: Option<PathBuf>,
    /// Where skiffd serves the CRI: the endpoint a kubelet would have dialled.
    pub container_runtime_endpoint: Option<String>,
    pub pod_infra_container_image: Option<String>,
    pub node_ip: Vec<IpAddr>,
    pub hostname_override: Option<String>,
    pub node_labels: BTreeMap<String, String>,
    pub register_with_taints: Vec<Taint>,
    pub cgroup_driver: Option<String>,
    pub cgroup_root: Option<String>,
    pub cert_dir: Option<PathBuf>,
    pub root_dir: PathBuf,
    pub healthz_port: Option<u16>,
    pub healthz_bind_address: Option<IpAddr>,
    pub max_pods: Option<u32>,
    pub rotate_certificates: Option<bool>,
    pub register_node: Option<bool>,
    pub fail_swap_on: Option<bool>,
    pub provider_id: Option<String>,
    /// `--system-reserved=cpu=100m,memory=100Mi`: over the file's `systemReserved`.
    pub system_reserved: Option<BTreeMap<String, String>>,
    pub kube_reserved: Option<BTreeMap<String, String>>,
    /// `--eviction-hard=memory.available<100Mi,nodefs.available<10%`: over the file's `evictionHard`.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// klog verbosity (`--v`).
    pub verbosity: u32,
    /// Unknown flags, as given, for the warnings the caller logs once logging is up.
    pub unknown: Vec<String>,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            version: false,
            help: false,
            bootstrap_kubeconfig: None,
            kubeconfig: None,
            config: None,
            skiffd_config: None,
            container_runtime_endpoint: None,
            pod_infra_container_image: None,
            node_ip: Vec::new(),
            hostname_override: None,
            node_labels: BTreeMap::new(),
            register_with_taints: Vec::new(),
            cgroup_driver: None,
            cgroup_root: None,
            cert_dir: None,
            root_dir: "/var/lib/kubelet".into(),
            healthz_port: None,
            healthz_bind_address: None,
            max_pods: None,
            rotate_certificates: None,
            register_node: None,
            fail_swap_on: None,
            provider_id: None,
            system_reserved: None,
            kube_reserved: None,
            eviction_hard: None,
            verbosity: 0,
            unknown: Vec::new(),
        }
    }
}

/// kubelet flags that take no value (a following word is not theirs).
const BOOLEAN: &[&str] = &[
    "version",
    "help",
    "rotate-certificates",
    "register-node",
    "register-schedulable",
    "fail-swap-on",
    "anonymous-auth",
    "authentication-token-webhook",
    "rotate-server-certificates",
    "serialize-image-pulls",
    "cgroups-per-qos",
    "kernel-memcg-notification",
    "keep-terminated-pod-volumes",
    "make-iptables-util-chains",
    "protect-kernel-defaults",
    "exit-on-lock-contention",
    "alsologtostderr",
    "logtostderr",
    "one-output",
    "skip-headers",
    "skip-log-headers",
    "add-dir-header",
    "enable-server",
    "enable-debugging-handlers",
    "enable-controller-attach-detach",
];

/// kubelet flags that take a value and change nothing in skiffd today; known, so no warning.
const ACCEPTED: &[&str] = &[
    "pod-manifest-path",
    "cluster-dns",
    "cluster-domain",
    "resolv-conf",
    "address",
    "port",
    "read-only-port",
    "tls-cert-file",
    "tls-private-key-file",
    "tls-cipher-suites",
    "tls-min-version",
    "client-ca-file",
    "authorization-mode",
    "runtime-cgroups",
    "kubelet-cgroups",
    "system-cgroups",
    "eviction-soft",
    "eviction-soft-grace-period",
    "image-gc-high-threshold",
    "image-gc-low-threshold",
    "runtime-request-timeout",
    "node-status-update-frequency",
    "container-log-max-size",
    "container-log-max-files",
    "cloud-provider",
    "cloud-config",
    "feature-gates",
    "volume-plugin-dir",
    "image-service-endpoint",
    "log-file",
    "log-dir",
    "log-flush-frequency",
    "logging-format",
    "vmodule",
    "stderrthreshold",
    "pod-cidr",
    "seccomp-default",
    "max-open-files",
    "lock-file",
    "network-plugin",
    "cni-bin-dir",
    "cni-conf-dir",
];

impl Flags {
    /// Parses `args` (without the program name).
    pub fn parse<I, S>(args: I) -> Result<Flags, FlagError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut flags = Flags::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                flags.unknown.push(arg.clone());
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (body.to_owned(), None),
            };
            let name = short_name(&name);
            let known = BOOLEAN.contains(&name.as_str()) || is_valued(&name);
            let value = if BOOLEAN.contains(&name.as_str()) {
                inline.unwrap_or_else(|| "true".into())
            } else if let Some(v) = inline {
                v
            } else if i < args.len() && (known || !args[i].starts_with('-')) {
                i += 1;
                args[i - 1].clone()
            } else if known {
                return Err(FlagError::MissingValue(name));
            } else {
                String::new()
            };
            if !known {
                flags.unknown.push(arg.clone());
                continue;
            }
            flags.set(&name, &value)?;
        }
        Ok(flags)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), FlagError> {
        let invalid = |message: String| FlagError::Invalid {
            flag: name.into(),
            value: value.into(),
            message,
        };
        let path = || Some(PathBuf::from(value));
        match name {
            "version" => self.version = value != "false",
            "help" => self.help = value != "false",
            "bootstrap-kubeconfig" => self.bootstrap_kubeconfig = path(),
            "kubeconfig" => self.kubeconfig = path(),
            "config" => self.config = path(),
            "skiffd-config" => self.skiffd_config = path(),
            "container-runtime-endpoint" => self.container_runtime_endpoint = Some(value.into()),
            "pod-infra-container-image" => self.pod_infra_container_image = Some(value.into()),
            "node-ip" => self.node_ip = parse_node_ips(value).map_err(invalid)?,
            "hostname-override" => self.hostname_override = Some(value.into()),
            "node-labels" => self.node_labels = parse_labels(value).map_err(invalid)?,
            "register-with-taints" => {
                self.register_with_taints = parse_taints(value).map_err(invalid)?
            }
            "cgroup-driver" => self.cgroup_driver = Some(value.into()),
            "cgroup-root" => self.cgroup_root = Some(value.into()),
            "cert-dir" => self.cert_dir = path(),
            "root-dir" => self.root_dir = value.into(),
            "healthz-port" => self.healthz_port = Some(number(value).map_err(invalid)?),
            "healthz-bind-address" => {
                self.healthz_bind_address = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("not an IP address".into()))?,
                )
            }
            "max-pods" => self.max_pods = Some(number(value).map_err(invalid)?),
            "rotate-certificates" => {
                self.rotate_certificates = Some(boolean(value).map_err(invalid)?)
            }
            "register-node" => self.register_node = Some(boolean(value).map_err(invalid)?),
            "fail-swap-on" => self.fail_swap_on = Some(boolean(value).map_err(invalid)?),
            "provider-id" => self.provider_id = Some(value.into()),
            "system-reserved" => self.system_reserved = Some(pairs(value, '=').map_err(invalid)?),
            "kube-reserved" => self.kube_reserved = Some(pairs(value, '=').map_err(invalid)?),
            "eviction-hard" => self.eviction_hard = Some(pairs(value, '<').map_err(invalid)?),
            "v" => self.verbosity = number(value).map_err(invalid)?,
            _ if BOOLEAN.contains(&name) => {
                boolean(value).map_err(invalid)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// Flags skiffd acts on that take a value.
const VALUED: &[&str] = &[
    "bootstrap-kubeconfig",
    "kubeconfig",
    "config",
    "skiffd-config",
    "container-runtime-endpoint",
    "pod-infra-container-image",
    "node-ip",
    "hostname-override",
    "node-labels",
    "register-with-taints",
    "cgroup-driver",
    "cgroup-root",
    "cert-dir",
    "root-dir",
    "healthz-port",
    "healthz-bind-address",
    "max-pods",
    "provider-id",
    "system-reserved",
    "kube-reserved",
    "eviction-hard",
    "v",
];

fn is_valued(name: &str) -> bool {
    VALUED.contains(&name) || ACCEPTED.contains(&name)
}

/// pflag's one-letter shorthands kubelet defines.
fn short_name(name: &str) -> String {
    match name {
        "h" => "help".into(),
        n => n.into(),
    }
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| "not a number".into())
}

fn boolean(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err("not a boolean".into()),
    }
}

/// `a<sep>b,c<sep>d` as a map; the values are checked where they are used.
fn pairs(v: &str, sep: char) -> Result<BTreeMap<String, String>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (k, val) = item
                .split_once(sep)
                .ok_or_else(|| format!("{item:?} is not name{sep}value"))?;
            Ok((k.trim().to_owned(), val.trim().to_owned()))
        })
        .collect()
}

fn parse_ips(v: &str) -> Result<Vec<IpAddr>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("{s:?} is not an IP address"))
        })
        .collect()
}

/// One address, or one of each family (a dual-stack node), as the kubelet takes them.
fn parse_node_ips(v: &str) -> Result<Vec<IpAddr>, String> {
    let ips = parse_ips(v)?;
    match &ips[..] {
        [_, _, _, ..] => Err("at most two addresses, one of each family".into()),
        [a, b] if a.is_ipv4() == b.is_ipv4() => {
            Err("two addresses must be one IPv4 and one IPv6 address".into())
        }
        _ => Ok(ips),
    }
}

/// `key=value,key2=value2`, each key and value checked as the API server would.
pub fn parse_labels(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for item in v.split(',').filter(|s| !s.is_empty()) {
        let (k, val) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not key=value"))?;
        check_key(k)?;
        check_value(val)?;
        labels.insert(k.to_owned(), val.to_owned());
    }
    Ok(labels)
}

/// `key=value:Effect` or `key:Effect`, comma-separated.
pub fn parse_taints(v: &str) -> Result<Vec<Taint>, String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(parse_taint)
        .collect()
}

fn parse_taint(item: &str) -> Result<Taint, String> {
    let (kv, effect) = item
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {item:?} has no :Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("taint {item:?}: unknown effect {effect:?}"));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_owned())),
        None => (kv, None),
    };
    check_key(key)?;
    if let Some(v) = &value {
        check_value(v)?;
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

/// A qualified name with an optional DNS-subdomain prefix, as labels and taints use.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("key {key:?}: prefix is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_word(name) {
        return Err(format!("key {key:?} is not a qualified name"));
    }
    Ok(())
}

fn check_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_label_word(v) {
        Ok(())
    } else {
        Err(format!("value {v:?} is not a valid label value"))
    }
}

/// At most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_label_word(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && edge(s.chars().next())
        && edge(s.chars().last())
}

/// Whether skiffd was started as the kubelet: under that name, or with a kubelet flag that only
/// node mode has.
pub fn is_node_mode(argv0: &str, args: &[String]) -> bool {
    let name = std::path::Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name == "kubelet"
        || args.iter().any(|a| {
            let a = a.split('=').next().unwrap_or_default();
            a == "--kubeconfig" || a == "--bootstrap-kubeconfig"
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        Flags::parse(args.iter().copied()).unwrap()
    }

    #[test]
    fn kubeadm_command_line() {
        let f = parse(&[
            "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf",
            "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///run/skiff/skiff.sock",
            "--pod-infra-container-image=registry.k8s.io/pause:3.9",
            "--node-ip",
            "10.0.0.5",
            "--hostname-override=worker-1",
            "--node-labels=role=worker,example.com/zone=a",
            "--register-with-taints=dedicated=infra:NoSchedule,gpu:NoExecute",
            "--cgroup-driver=systemd",
            "--v=4",
        ]);
        assert_eq!(
            f.bootstrap_kubeconfig.unwrap(),
            PathBuf::from("/etc/kubernetes/bootstrap-kubelet.conf")
        );
        assert_eq!(
            f.kubeconfig.unwrap(),
            PathBuf::from("/etc/kubernetes/kubelet.conf")
        );
        assert_eq!(
            f.config.unwrap(),
            PathBuf::from("/var/lib/kubelet/config.yaml")
        );
        assert_eq!(
            f.container_runtime_endpoint.unwrap(),
            "unix:///run/skiff/skiff.sock"
        );
        assert_eq!(f.node_ip, vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(f.hostname_override.unwrap(), "worker-1");
        assert_eq!(f.node_labels["example.com/zone"], "a");
        assert_eq!(f.node_labels["role"], "worker");
        assert_eq!(f.register_with_taints.len(), 2);
        assert_eq!(f.register_with_taints[0].value.as_deref(), Some("infra"));
        assert_eq!(f.register_with_taints[1].key, "gpu");
        assert_eq!(f.register_with_taints[1].effect, "NoExecute");
        assert_eq!(f.cgroup_driver.unwrap(), "systemd");
        assert_eq!(f.verbosity, 4);
        assert!(f.unknown.is_empty());
    }

    #[test]
    fn unknown_flags_are_collected_not_fatal() {
        let f = parse(&[
            "--made-up-flag=1",
            "--other-made-up",
            "value",
            "--also-unknown",
            "--fail-swap-on=false",
            "--version",
        ]);
        assert_eq!(
            f.unknown,
            vec!["--made-up-flag=1", "--other-made-up", "--also-unknown"]
        );
        assert!(f.version);
    }

    #[test]
    fn booleans_do_not_swallow_the_next_flag() {
        let f = parse(&["--rotate-certificates", "--max-pods", "50"]);
        assert_eq!(f.rotate_certificates, Some(true));
        assert_eq!(f.max_pods, Some(50));
        let f = parse(&["--register-node=false"]);
        assert_eq!(f.register_node, Some(false));
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = Flags::parse(["--max-pods=many"]).unwrap_err();
        assert!(e.to_string().contains("--max-pods"), "{e}");
        let e = Flags::parse(["--node-ip=not-an-ip"]).unwrap_err();
        assert!(e.to_string().contains("--node-ip"), "{e}");
        let e = Flags::parse(["--node-ip=10.0.0.1,10.0.0.2"]).unwrap_err();
        assert!(e.to_string().contains("one IPv4 and one IPv6"), "{e}");
        let f = Flags::parse(["--node-ip=10.0.0.1,fd00::1"]).unwrap();
        assert_eq!(f.node_ip.len(), 2);
        let e = Flags::parse(["--register-with-taints=a=b:Sometimes"]).unwrap_err();
        assert!(e.to_string().contains("unknown effect"), "{e}");
        let e = Flags::parse(["--node-labels=-bad=x"]).unwrap_err();
        assert!(e.to_string().contains("--node-labels"), "{e}");
        assert_eq!(
            Flags::parse(["--kubeconfig"]).unwrap_err(),
            FlagError::MissingValue("kubeconfig".into())
        );
    }

    #[test]
    fn reservations_and_thresholds() {
        let f = parse(&[
            "--system-reserved=cpu=100m,memory=100Mi",
            "--eviction-hard=memory.available<50Mi,nodefs.available<1%",
        ]);
        assert_eq!(f.system_reserved.unwrap()["memory"], "100Mi");
        let e = f.eviction_hard.unwrap();
        assert_eq!(e["nodefs.available"], "1%");
        assert_eq!(e.len(), 2);
        assert!(Flags::parse(["--eviction-hard=memory.available=1Mi"]).is_err());
    }

    #[test]
    fn node_mode_by_name_or_flag() {
        let none: Vec<String> = Vec::new();
        assert!(is_node_mode("/usr/bin/kubelet", &none));
        assert!(!is_node_mode("/usr/bin/skiffd", &none));
        assert!(is_node_mode("skiffd", &["--kubeconfig=/k".into()]));
        assert!(is_node_mode(
            "skiffd",
            &["--bootstrap-kubeconfig".into(), "/b".into()]
        ));
        assert!(!is_node_mode(
            "skiffd",
            &["--config=/etc/skiff/skiffd.toml".into()]
        ));
    }
}
