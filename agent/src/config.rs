//! `/etc/skiff/skiffd.toml`: every setting has a default that works on a fresh machine.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use skiff_runtime::image::limits;

pub const DEFAULT_PATH: &str = "/etc/skiff/skiffd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    /// `linux.cgroupsPath` for a container of a pod: a path under the pod's cgroup for cgroupfs, the
    /// `slice:prefix:name` triple for systemd.
    pub fn cgroups_path(self, parent: &str, id: &str) -> String {
        match self {
            CgroupDriver::Cgroupfs => {
                let parent = parent.trim_end_matches('/');
                let parent = if parent.is_empty() { "/skiff" } else { parent };
                if parent.starts_with('/') {
                    format!("{parent}/{id}")
                } else {
                    format!("/{parent}/{id}")
                }
            }
            CgroupDriver::Systemd => {
                let slice = parent.rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
                let slice = if slice.is_empty() {
                    "system.slice"
                } else {
                    slice
                };
                format!("{slice}:skiff:{id}")
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The CRI socket (`unix://` prefix accepted).
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// Group owning the socket, by name or number; root's when unset.
    pub socket_group: Option<String>,
    /// Persistent metadata of sandboxes and containers.
    pub state_dir: PathBuf,
    /// Volatile state: container runtime state, pinned namespaces, monitor files.
    pub run_dir: PathBuf,
    /// The image store shared with `skiff pull`.
    pub image_root: PathBuf,
    /// Mirrors, insecure registries and CAs (the same file `skiff pull` reads).
    pub registries: PathBuf,
    /// Largest layer a pull unpacks, uncompressed: bytes or a size such as `"8GiB"`.
    #[serde(deserialize_with = "size")]
    pub max_layer_size: u64,
    /// Largest image a pull unpacks, uncompressed (all its layers).
    #[serde(deserialize_with = "size")]
    pub max_image_size: u64,
    pub cgroup_driver: CgroupDriver,
    /// The `skiff-monitor` binary; beside `skiffd` when unset.
    pub monitor: Option<PathBuf>,
    pub cni: CniConfig,
    /// An image reported as pinned (kubelet's image GC never removes it), e.g. the pause image
    /// kubelet is configured with.
    pub pause_image: Option<String>,
    /// `tracing` filter, e.g. `info` or `skiff_agent=debug`.
    pub log_level: String,
    /// Where the exec/attach/port-forward streaming server listens (`host:port`; port 0 picks a
    /// free one). Loopback by default: kubelet proxies the URLs it is given.
    pub stream_address: String,
    /// PEM certificate chain (leaf first) of the streaming server: with `stream_tls_key`, it
    /// serves TLS and its URLs are `https://`.
    pub stream_tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `stream_tls_cert`.
    pub stream_tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// How the pods of a node without a network add-on are attached, in the config skiffd writes
    /// for skiff-bridge (its `mode`): `routed` (a veth per pod, routed by the node; skiffd's
    /// default) or `bridge` (one bridge).
    pub pod_network: skiff_cni::plugin::config::Mode,
    /// With routed pods: forward the packets of established connections that conntrack does not
    /// NAT below the IP stack (tc programs on the pods' host ends and the node's uplinks), where
    /// the kernel can (`skiff_cni::fastpath`).
    pub fast_path: bool,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cache_dir: "/var/lib/skiff/cni".into(),
            pod_network: skiff_cni::plugin::config::Mode::Routed,
            fast_path: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: "/run/skiff/skiff.sock".into(),
            socket_mode: 0o660,
            socket_group: None,
            state_dir: "/var/lib/skiff/cri".into(),
            run_dir: "/run/skiff/cri".into(),
            image_root: "/var/lib/skiff/image".into(),
            registries: "/etc/skiff/registries.toml".into(),
            max_layer_size: limits::DEFAULT_MAX_LAYER_BYTES,
            max_image_size: limits::DEFAULT_MAX_IMAGE_BYTES,
            cgroup_driver: CgroupDriver::default(),
            monitor: None,
            cni: CniConfig::default(),
            pause_image: None,
            log_level: "info".into(),
            stream_address: "127.0.0.1:0".into(),
            stream_tls_cert: None,
            stream_tls_key: None,
        }
    }
}

impl Config {
    /// Reads `path`; a missing file at the default path means all defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        cfg.socket = strip_unix(&cfg.socket);
        let invalid = |field, message: &str| ConfigError::Invalid {
            path: path.into(),
            field,
            message: message.into(),
        };
        if cfg.stream_address.parse::<std::net::SocketAddr>().is_err() {
            let msg = format!("{:?} is not an ip:port address", cfg.stream_address);
            return Err(invalid("stream_address", &msg));
        }
        match (&cfg.stream_tls_cert, &cfg.stream_tls_key) {
            (Some(_), None) => {
                return Err(invalid("stream_tls_key", "stream_tls_cert needs a key"));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "stream_tls_cert",
                    "stream_tls_key needs a certificate",
                ));
            }
            _ => {}
        }
        if cfg.socket_mode > 0o777 {
            return Err(invalid("socket_mode", "must be at most 0o777"));
        }
        for (field, p) in [
            ("socket", &cfg.socket),
            ("state_dir", &cfg.state_dir),
            ("run_dir", &cfg.run_dir),
            ("image_root", &cfg.image_root),
        ] {
            if !p.is_absolute() {
                return Err(invalid(field, "must be an absolute path"));
            }
        }
        Ok(cfg)
    }

    /// The streaming server's address, checked by [`Config::parse`].
    pub fn stream_addr(&self) -> std::net::SocketAddr {
        self.stream_address
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The runtime state root (`skiff --root`) of containers made by skiffd.
    pub fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runtime")
    }

    pub fn monitor_path(&self) -> PathBuf {
        if let Some(p) = &self.monitor {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("skiff-monitor")))
            .unwrap_or_else(|| "/usr/local/bin/skiff-monitor".into())
    }
}

/// A size in the config: an integer (bytes) or a string such as `"8GiB"`.
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(0) => Err(serde::de::Error::custom("a size must be greater than 0")),
        Size::Bytes(n) => Ok(n),
        Size::Text(t) => limits::parse_size(&t).map_err(serde::de::Error::custom),
    }
}

/// `unix:///run/x.sock` → `/run/x.sock`, as kubelet and crictl write endpoints.
pub fn strip_unix(p: &Path) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_prefix("unix://")) {
        Some(rest) => rest.into(),
        None => p.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file() {
        let c = Config::load(Path::new("/nonexistent/skiffd.toml"), false).unwrap();
        assert_eq!(c.socket, Path::new("/run/skiff/skiff.sock"));
        assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
    }

    #[test]
    fn parses_and_names_bad_fields() {
        let p = Path::new("t.toml");
        let c = Config::parse(
            p,
            "socket = \"unix:///tmp/s.sock\"\ncgroup_driver = \"systemd\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, Path::new("/tmp/s.sock"));
        assert_eq!(c.cgroup_driver, CgroupDriver::Systemd);
        let e = Config::parse(p, "state_dir = \"rel\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("state_dir"), "{e}");
        let e = Config::parse(p, "bogus = 1").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse(p, "cgroup_driver = \"cgroupv3\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroupv3"), "{e}");
        let e = Config::parse(p, "stream_address = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream_address"), "{e}");
        let c = Config::parse(p, "stream_address = \"[::1]:10010\"").unwrap();
        assert_eq!(c.stream_addr().port(), 10010);
        let e = Config::parse(p, "stream_tls_cert = \"/c.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream_tls_key"), "{e}");
        let e = Config::parse(p, "stream_tls_key = \"/k.pem\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream_tls_cert"), "{e}");
        let c = Config::parse(
            p,
            "stream_tls_cert = \"/c.pem\"\nstream_tls_key = \"/k.pem\"",
        )
        .unwrap();
        assert_eq!(c.stream_tls_key.as_deref(), Some(Path::new("/k.pem")));
    }

    #[test]
    fn size_limits_take_bytes_or_units() {
        let p = Path::new("t.toml");
        let d = Config::default();
        assert_eq!((d.max_layer_size, d.max_image_size), (8 << 30, 16 << 30));
        let c = Config::parse(p, "max_layer_size = \"512MiB\"\nmax_image_size = 1048576").unwrap();
        assert_eq!((c.max_layer_size, c.max_image_size), (512 << 20, 1 << 20));
        for bad in [
            "max_layer_size = \"big\"",
            "max_image_size = 0",
            "max_image_size = -1",
        ] {
            let e = Config::parse(p, bad).unwrap_err().to_string();
            assert!(e.contains("max_"), "{bad}: {e}");
        }
    }
}
