//! Per-registry settings: mirrors, insecure (plain HTTP) registries and extra CA files.
//!
//! ```toml
//! [registries."registry.k8s.io"]
//! mirrors = ["http://127.0.0.1:5000"]
//!
//! [registries."myreg.example:5443"]
//! ca_file = "/etc/skiff/certs/myreg.pem"
//! insecure = false
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{Error, IoContext, Result};

pub const DEFAULT_PATH: &str = "/etc/skiff/registries.toml";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    #[serde(default)]
    pub registries: BTreeMap<String, HostConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Endpoints tried in order before the registry itself; `http://` or `https://` URLs,
    /// or bare hosts (HTTPS). The repository path is kept.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Allow plain HTTP for this registry.
    #[serde(default)]
    pub insecure: bool,
    /// PEM file with extra CA certificates trusted for this registry.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl HostsConfig {
    /// Load a config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).at(path),
        };
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub fn host(&self, host: &str) -> HostConfig {
        self.registries.get(host).cloned().unwrap_or_default()
    }

    pub fn ca_files(&self) -> impl Iterator<Item = &Path> {
        self.registries
            .values()
            .filter_map(|h| h.ca_file.as_deref())
    }
}

/// Registries on loopback may speak plain HTTP without configuration, as Docker allows.
pub fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    if name == "localhost" {
        return true;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn parses_config() {
        let c: HostsConfig = toml::from_str(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.host("registry.k8s.io").mirrors,
            vec!["http://127.0.0.1:5000"]
        );
        assert!(!c.host("other").insecure);
        assert!(toml::from_str::<HostsConfig>("[registries.x]\nbogus = 1\n").is_err());
    }
}
