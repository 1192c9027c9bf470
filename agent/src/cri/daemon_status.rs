//! The RuntimeService calls about skiffd itself rather than a pod or container: what it is and
//! whether it is ready (`Version`, `Status`), its configuration (`RuntimeConfig`, `UpdateRuntimeConfig`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::Daemon;
use crate::config::CgroupDriver;

pub const RUNTIME_NAME: &str = "skiff";
/// The CRI version this server speaks (kubelet checks it).
pub const API_VERSION: &str = "v1";

pub async fn version(
    _d: &Arc<Daemon>,
    _r: cri::VersionRequest,
) -> Result<cri::VersionResponse, Status> {
    Ok(cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: API_VERSION.into(),
    })
}

pub async fn status(d: &Arc<Daemon>, r: cri::StatusRequest) -> Result<cri::StatusResponse, Status> {
    let network = network_condition(&d.config.cni.conf_dir);
    let runtime = cri::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    let mut info = HashMap::new();
    if r.verbose {
        let config = serde_json::json!({
            "socket": d.config.socket,
            "stateDir": d.config.state_dir,
            "runDir": d.config.run_dir,
            "imageRoot": d.config.image_root,
            "cgroupDriver": d.cgroup_driver.as_str(),
            "cniConfDir": d.config.cni.conf_dir,
            "cniBinDirs": d.config.cni.bin_dirs,
            "podCIDR": *d.pod_cidr.read().unwrap_or_else(|p| p.into_inner()),
        });
        info.insert("config".into(), config.to_string());
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers: vec![cri::RuntimeHandler {
            name: String::new(),
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: super::pod::userns::supported(),
            }),
        }],
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
        }),
    })
}

/// `NetworkReady` holds once a CNI network configuration can be loaded, as kubelet expects.
fn network_condition(conf_dir: &Path) -> cri::RuntimeCondition {
    let (status, reason, message) = match skiff_cni::libcni::conf::load_dir(conf_dir) {
        Ok(_) => (true, String::new(), String::new()),
        Err(e) => (
            false,
            "NetworkPluginNotReady".to_owned(),
            format!("Network plugin returns error: cni plugin not initialized: {e}"),
        ),
    };
    cri::RuntimeCondition {
        r#type: "NetworkReady".into(),
        status,
        reason,
        message,
    }
}

pub async fn config(
    d: &Arc<Daemon>,
    _r: cri::RuntimeConfigRequest,
) -> Result<cri::RuntimeConfigResponse, Status> {
    let driver = match d.cgroup_driver {
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
    };
    Ok(cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    })
}

pub async fn update_config(
    d: &Arc<Daemon>,
    r: cri::UpdateRuntimeConfigRequest,
) -> Result<cri::UpdateRuntimeConfigResponse, Status> {
    let cidr = r
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    if !cidr.is_empty() {
        if cidr.parse::<skiff_cni::ipnet::IpNet>().is_err() {
            return Err(super::error::invalid(format!(
                "pod CIDR {:?} is not an IP network",
                super::error::truncate(&cidr)
            )));
        }
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        *d.pod_cidr.write().unwrap_or_else(|p| p.into_inner()) = cidr;
    }
    Ok(cri::UpdateRuntimeConfigResponse {})
}

/// The configured driver if the host can serve it; systemd needs a running systemd.
pub fn effective_cgroup_driver(wanted: CgroupDriver) -> CgroupDriver {
    if wanted == CgroupDriver::Systemd && !Path::new("/run/systemd/system").is_dir() {
        tracing::warn!("cgroup_driver = \"systemd\" but systemd is not running: using cgroupfs");
        return CgroupDriver::Cgroupfs;
    }
    wanted
}
