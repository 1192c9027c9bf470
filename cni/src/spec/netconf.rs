//! Network configuration: single configs and configuration lists.

use super::error::{CniError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The fields every plugin config shares. Plugin-specific fields stay in the
/// raw JSON object and are parsed by the plugin itself.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub capabilities: Map<String, Value>,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A `.conflist` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetConfList {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    pub name: String,
    #[serde(rename = "disableCheck", default)]
    pub disable_check: bool,
    #[serde(rename = "disableGC", default)]
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
}

impl NetConf {
    /// Parses stdin, mapping serde failures to the spec's decode error.
    pub fn parse(bytes: &[u8]) -> Result<(NetConf, Map<String, Value>), CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(ErrorCode::Decode, "network configuration is not valid JSON")
                .with_details(e.to_string())
        })?;
        let Value::Object(obj) = raw else {
            return Err(CniError::new(
                ErrorCode::Decode,
                "network configuration must be a JSON object",
            ));
        };
        let conf: NetConf = serde_json::from_value(Value::Object(obj.clone())).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                "network configuration has a malformed field",
            )
            .with_details(e.to_string())
        })?;
        if conf.cni_version.is_empty() {
            return Err(CniError::config("network configuration lacks cniVersion"));
        }
        Ok((conf, obj))
    }
}
