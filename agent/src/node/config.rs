//! The `KubeletConfiguration` file (`--config`, kubeadm's `/var/lib/kubelet/config.yaml`).
//!
//! Only the fields skiffd acts on are read; the rest are ignored, as a newer kubeadm may write
//! fields this version does not know. Zero durations mean "the default", as kubelet's defaulting
//! treats them (kubeadm writes `0s` for every duration it leaves alone).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};

use super::quantity::{self, Amount};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: does not exist yet (kubeadm writes it on join; a service manager restarts the node agent until then)")]
    Missing { path: PathBuf },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KubeletConfiguration {
    pub api_version: String,
    pub kind: String,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub static_pod_path: Option<PathBuf>,
    pub cgroup_driver: Option<String>,
    /// The cgroup below which `kubepods` lives (cgroupfs driver).
    pub cgroup_root: String,
    /// Whether pods go below `kubepods` by QoS class at all.
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    pub container_runtime_endpoint: Option<String>,
    pub authentication: Authentication,
    pub authorization: Authorization,
    pub rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    /// The kubelet API's serving certificate and key; without them the node makes its own.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub max_pods: u32,
    pub pod_pids_limit: Option<i64>,
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub eviction_soft: BTreeMap<String, String>,
    pub container_log_max_size: String,
    pub container_log_max_files: u32,
    /// How often log sizes are checked (kubelet reads this field from v1.30 on; 10 s).
    pub container_log_monitor_interval: Option<String>,
    pub fail_swap_on: bool,
    pub address: String,
    pub port: u16,
    pub healthz_bind_address: String,
    pub healthz_port: u16,
    pub resolv_conf: PathBuf,
    /// Where pod log directories go (kubelet reads this field from v1.29 on).
    pub pod_logs_dir: PathBuf,
    pub node_status_update_frequency: Option<String>,
    pub node_status_report_frequency: Option<String>,
    pub node_lease_duration_seconds: u32,
    pub register_node: bool,
    pub register_with_taints: Vec<Taint>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Authentication {
    pub anonymous: Enabled,
    pub webhook: Enabled,
    pub x509: X509,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Enabled {
    pub enabled: Option<bool>,
    /// How long a token review's answer is kept (the webhook's; 2 min when zero).
    #[serde(rename = "cacheTTL", skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct X509 {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Authorization {
    pub mode: Option<String>,
    pub webhook: AuthorizationWebhook,
}

/// How long SubjectAccessReview answers are kept (5 min allowed, 30 s denied when zero).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationWebhook {
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<String>,
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<String>,
}

impl Default for KubeletConfiguration {
    fn default() -> Self {
        KubeletConfiguration {
            api_version: "kubelet.config.k8s.io/v1beta1".into(),
            kind: "KubeletConfiguration".into(),
            cluster_dns: Vec::new(),
            cluster_domain: String::new(),
            static_pod_path: None,
            cgroup_driver: None,
            cgroup_root: "/".into(),
            cgroups_per_qos: true,
            container_runtime_endpoint: None,
            authentication: Authentication::default(),
            authorization: Authorization::default(),
            rotate_certificates: false,
            server_tls_bootstrap: false,
            tls_cert_file: None,
            tls_private_key_file: None,
            max_pods: 110,
            pod_pids_limit: None,
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            eviction_hard: None,
            eviction_soft: BTreeMap::new(),
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            container_log_monitor_interval: None,
            fail_swap_on: true,
            address: "0.0.0.0".into(),
            port: 10250,
            healthz_bind_address: "127.0.0.1".into(),
            healthz_port: 10248,
            resolv_conf: "/etc/resolv.conf".into(),
            pod_logs_dir: "/var/log/pods".into(),
            node_status_update_frequency: None,
            node_status_report_frequency: None,
            node_lease_duration_seconds: 40,
            register_node: true,
            register_with_taints: Vec::new(),
            provider_id: None,
        }
    }
}

/// kubelet's `evictionHard` when the file names none.
const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
];

impl KubeletConfiguration {
    /// Reads `path`; a missing file is its own error (kubelet exits on it, and so does skiffd).
    pub fn load(path: &Path) -> Result<KubeletConfiguration, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing { path: path.into() }
            } else {
                ConfigError::Read {
                    path: path.into(),
                    source,
                }
            }
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<KubeletConfiguration, ConfigError> {
        let err = |message: String| ConfigError::Parse {
            path: path.into(),
            message,
        };
        let mut c: KubeletConfiguration =
            serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
        if c.kind != "KubeletConfiguration" {
            return Err(err(format!(
                "kind {:?} is not KubeletConfiguration",
                c.kind
            )));
        }
        if !c.api_version.starts_with("kubelet.config.k8s.io/") {
            return Err(err(format!(
                "apiVersion {:?} is not kubelet.config.k8s.io",
                c.api_version
            )));
        }
        if c.max_pods == 0 {
            c.max_pods = 110;
        }
        if c.node_lease_duration_seconds == 0 {
            c.node_lease_duration_seconds = 40;
        }
        if c.healthz_port == 0 {
            c.healthz_port = 10248;
        }
        if c.port == 0 {
            c.port = 10250;
        }
        // Checked now, so that a typo stops the start instead of a status loop.
        c.status_update_frequency().map_err(err)?;
        c.status_report_frequency().map_err(err)?;
        c.eviction_thresholds().map_err(err)?;
        c.reserved().map_err(err)?;
        Ok(c)
    }

    /// How often the node status is computed (`nodeStatusUpdateFrequency`, 10 s by default).
    pub fn status_update_frequency(&self) -> Result<Duration, String> {
        duration_or(&self.node_status_update_frequency, Duration::from_secs(10))
    }

    /// How often an unchanged status is still posted (`nodeStatusReportFrequency`, 5 min).
    pub fn status_report_frequency(&self) -> Result<Duration, String> {
        duration_or(&self.node_status_report_frequency, Duration::from_secs(300))
    }

    /// When container logs are rotated: `containerLogMaxSize`, `containerLogMaxFiles` and
    /// `containerLogMonitorInterval`, checked as kubelet checks them.
    pub fn log_policy(&self) -> Result<crate::node::logs::rotate::Policy, String> {
        let size = quantity::parse(&self.container_log_max_size)
            .map_err(|e| format!("containerLogMaxSize: {e}"))?;
        if size < 1.0 {
            return Err("containerLogMaxSize must be positive".into());
        }
        if self.container_log_max_files < 2 {
            return Err("containerLogMaxFiles must be greater than 1".into());
        }
        Ok(crate::node::logs::rotate::Policy {
            max_size: size as u64,
            max_files: self.container_log_max_files as usize,
            interval: duration_or(
                &self.container_log_monitor_interval,
                Duration::from_secs(10),
            )?,
        })
    }

    /// The hard eviction thresholds, signal → amount.
    pub fn eviction_thresholds(&self) -> Result<BTreeMap<String, Amount>, String> {
        let given = self.eviction_hard.clone().unwrap_or_else(|| {
            DEFAULT_EVICTION_HARD
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        });
        given
            .into_iter()
            .map(|(signal, v)| {
                let amount =
                    Amount::parse(&v).map_err(|e| format!("evictionHard {signal}: {e}"))?;
                Ok((signal, amount))
            })
            .collect()
    }

    /// systemReserved + kubeReserved, resource → amount in base units.
    pub fn reserved(&self) -> Result<BTreeMap<String, f64>, String> {
        let mut total = BTreeMap::new();
        for (field, map) in [
            ("systemReserved", &self.system_reserved),
            ("kubeReserved", &self.kube_reserved),
        ] {
            for (resource, v) in map {
                let n = quantity::parse(v).map_err(|e| format!("{field} {resource}: {e}"))?;
                *total.entry(resource.clone()).or_insert(0.0) += n;
            }
        }
        Ok(total)
    }
}

pub fn duration_or(v: &Option<String>, default: Duration) -> Result<Duration, String> {
    match v.as_deref().map(go_duration).transpose()? {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Ok(default),
    }
}

/// A Go `time.Duration` string: `10s`, `5m0s`, `1h30m`, `1.5s`, `300ms`.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotation_policy_is_checked() {
        let c = |extra: &str| {
            KubeletConfiguration::parse(
                Path::new("c"),
                &format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{extra}"),
            )
            .unwrap()
        };
        let p = c("").log_policy().unwrap();
        assert_eq!(
            (p.max_size, p.max_files, p.interval),
            (10 << 20, 5, Duration::from_secs(10))
        );
        let p = c(
            "containerLogMaxSize: 16Ki\ncontainerLogMaxFiles: 2\ncontainerLogMonitorInterval: 1s\n",
        )
        .log_policy()
        .unwrap();
        assert_eq!(
            (p.max_size, p.max_files, p.interval),
            (16 << 10, 2, Duration::from_secs(1))
        );
        let e = c("containerLogMaxFiles: 1\n").log_policy().unwrap_err();
        assert!(e.contains("containerLogMaxFiles"), "{e}");
        let e = c("containerLogMaxSize: lots\n").log_policy().unwrap_err();
        assert!(e.contains("containerLogMaxSize"), "{e}");
    }

    /// What `kubeadm join` writes from the cluster's kubelet-config ConfigMap (v1.28).
    const KUBEADM: &str = r#"apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
  webhook:
    cacheAuthorizedTTL: 0s
    cacheUnauthorizedTTL: 0s
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
cpuManagerReconcilePeriod: 0s
evictionPressureTransitionPeriod: 0s
fileCheckFrequency: 0s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
httpCheckFrequency: 0s
imageMinimumGCAge: 0s
kind: KubeletConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
memorySwap: {}
nodeStatusReportFrequency: 0s
nodeStatusUpdateFrequency: 0s
resolvConf: /run/systemd/resolve/resolv.conf
rotateCertificates: true
runtimeRequestTimeout: 0s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: /etc/kubernetes/manifests
streamingConnectionIdleTimeout: 0s
syncFrequency: 0s
volumeStatsAggregatePeriod: 0s
"#;

    #[test]
    fn kubeadm_file() {
        let c = KubeletConfiguration::parse(Path::new("config.yaml"), KUBEADM).unwrap();
        assert_eq!(c.cluster_dns, vec!["10.96.0.10"]);
        assert_eq!(c.cluster_domain, "cluster.local");
        assert_eq!(
            c.static_pod_path.clone().unwrap(),
            PathBuf::from("/etc/kubernetes/manifests")
        );
        assert_eq!(c.cgroup_driver.as_deref(), Some("systemd"));
        assert!(c.rotate_certificates);
        assert_eq!(c.authentication.anonymous.enabled, Some(false));
        assert_eq!(
            c.authentication.x509.client_ca_file.clone().unwrap(),
            PathBuf::from("/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(c.authorization.mode.as_deref(), Some("Webhook"));
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.healthz_port, 10248);
        assert_eq!(
            c.status_update_frequency().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            c.status_report_frequency().unwrap(),
            Duration::from_secs(300)
        );
        assert_eq!(
            c.eviction_thresholds().unwrap()["nodefs.available"],
            Amount::Share(0.1)
        );
        assert!(c.fail_swap_on);
        assert_eq!(c.port, 10250);
    }

    #[test]
    fn reservations_and_thresholds() {
        let text = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                    maxPods: 20\nsystemReserved: {cpu: 100m, memory: 100Mi}\n\
                    kubeReserved: {memory: 50Mi}\nevictionHard: {memory.available: 200Mi}\n\
                    nodeStatusReportFrequency: 1m30s\nserverTLSBootstrap: true\n";
        let c = KubeletConfiguration::parse(Path::new("c"), text).unwrap();
        assert_eq!(c.max_pods, 20);
        assert!(c.server_tls_bootstrap);
        let r = c.reserved().unwrap();
        assert_eq!(r["memory"], 150.0 * 1024.0 * 1024.0);
        assert_eq!(r["cpu"], 0.1);
        let t = c.eviction_thresholds().unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(
            t["memory.available"],
            Amount::Absolute(200.0 * 1024.0 * 1024.0)
        );
        assert_eq!(
            c.status_report_frequency().unwrap(),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let p = Path::new("/x/config.yaml");
        let e = KubeletConfiguration::parse(p, "kind: Pod\napiVersion: v1\n").unwrap_err();
        assert!(e.to_string().contains("not KubeletConfiguration"), "{e}");
        let e = KubeletConfiguration::parse(
            p,
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nmaxPods: lots\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/x/config.yaml"), "{e}");
        let e = KubeletConfiguration::parse(
            p,
            "kind: KubeletConfiguration\napiVersion: kubelet.config.k8s.io/v1beta1\nsystemReserved: {memory: lots}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("systemReserved memory"), "{e}");
        let e = KubeletConfiguration::load(Path::new("/nonexistent/config.yaml")).unwrap_err();
        assert!(matches!(e, ConfigError::Missing { .. }));
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(go_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(go_duration("0s").unwrap(), Duration::ZERO);
        assert!(go_duration("10").is_err());
        assert!(go_duration("5x").is_err());
        assert!(go_duration("").is_err());
    }
}
