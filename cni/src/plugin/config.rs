//! The skiff-bridge network configuration (the reference bridge plugin's
//! options plus the `portMappings` capability).

use crate::ipnet::IpNet;
use crate::spec::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub ips: Vec<IpNetOrIp>,
}

/// The `ips` capability carries CIDRs ("10.1.0.5/24") or bare addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IpNetOrIp {
    Net(IpNet),
    Ip(IpAddr),
}

impl IpNetOrIp {
    pub fn addr(&self) -> IpAddr {
        match self {
            IpNetOrIp::Net(n) => n.addr,
            IpNetOrIp::Ip(ip) => *ip,
        }
    }
}

/// How pods are attached: ports of one bridge, or each on its own routed
/// veth (the host end holds the gateway address and a host route per pod
/// address; no bridge, no L2 between pods).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Bridge,
    Routed,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BridgeConf {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(rename = "isGateway", default)]
    pub is_gateway: bool,
    #[serde(rename = "isDefaultGateway", default)]
    pub is_default_gateway: bool,
    #[serde(rename = "forceAddress", default)]
    pub force_address: bool,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "hairpinMode", default)]
    pub hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub macspoofchk: bool,
    /// Routed mode only: the fast path's program on the pod's host end (`crate::fastpath`).
    #[serde(rename = "fastPath", default)]
    pub fast_path: bool,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
}

fn default_bridge() -> String {
    "cni0".into()
}

impl BridgeConf {
    pub fn parse(obj: &Map<String, Value>) -> Result<BridgeConf, CniError> {
        let mut conf: BridgeConf =
            serde_json::from_value(Value::Object(obj.clone())).map_err(|e| {
                CniError::new(ErrorCode::Decode, "invalid bridge configuration")
                    .with_details(e.to_string())
            })?;
        if conf.is_default_gateway {
            conf.is_gateway = true;
        }
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let name_ok = !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && !self.bridge.contains(['/', ':'])
            && !self.bridge.chars().any(char::is_whitespace);
        if !name_ok {
            return Err(CniError::config(format!(
                "bridge: invalid bridge name {:?}",
                self.bridge
            )));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(CniError::config(format!(
                    "mtu: {mtu} is out of range 68-65535"
                )));
            }
        }
        if let Some(vlan) = self.vlan {
            if !(1..=4094).contains(&vlan) {
                return Err(CniError::config(format!(
                    "vlan: {vlan} is out of range 1-4094"
                )));
            }
        }
        if self.fast_path && self.mode != Mode::Routed {
            return Err(CniError::config(
                "fastPath: only with mode \"routed\", not \"bridge\"",
            ));
        }
        if self.mode == Mode::Routed {
            let bridge_only = [
                ("macspoofchk", self.macspoofchk),
                ("vlan", self.vlan.is_some()),
            ];
            if let Some((name, _)) = bridge_only.iter().find(|(_, set)| *set) {
                return Err(CniError::config(format!(
                    "{name}: only with mode \"bridge\", not \"routed\""
                )));
            }
        }
        for pm in &self.runtime_config.port_mappings {
            if pm.host_port == 0 || pm.container_port == 0 {
                return Err(CniError::config("portMappings: ports must be 1-65535"));
            }
            if !matches!(
                pm.protocol.to_ascii_lowercase().as_str(),
                "tcp" | "udp" | "sctp"
            ) {
                return Err(CniError::config(format!(
                    "portMappings: unknown protocol {:?}",
                    pm.protocol
                )));
            }
        }
        Ok(())
    }
}
