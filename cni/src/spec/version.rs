//! CNI versions and the VERSION command's answer.

use super::error::{CniError, ErrorCode};
use serde::Serialize;

pub use super::CURRENT;
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Serialize)]
pub struct VersionInfo {
    #[serde(rename = "cniVersion")]
    pub cni_version: &'static str,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: &'static [&'static str],
}

pub fn info() -> VersionInfo {
    VersionInfo {
        cni_version: CURRENT,
        supported_versions: SUPPORTED,
    }
}

/// Parses "MAJOR.MINOR.PATCH" into a comparable tuple.
pub fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.');
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
    if it.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

pub fn check_supported(v: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&v) {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!("incompatible CNI versions: config is {v:?}, plugin supports {SUPPORTED:?}"),
    ))
}

/// Whether a command exists in the given config version (STATUS and GC are 1.1+).
pub fn at_least(v: &str, want: (u32, u32, u32)) -> bool {
    parse(v).is_some_and(|have| have >= want)
}
