//! OCI and Docker schema2 manifests, indexes / manifest lists, image configs, and platform choice.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What we send as `Accept` for manifests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    #[serde(default)]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// A manifest document, classified by media type (from the HTTP Content-Type when the
/// document itself has no `mediaType`, as umoci's do).
#[derive(Clone, Debug)]
pub enum Document {
    Manifest(ImageManifest),
    Index(ImageIndex),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default, rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

impl Document {
    pub fn parse(what: &str, bytes: &[u8], content_type: Option<&str>) -> Result<Self> {
        let malformed = |reason: String| Error::Malformed {
            what: what.to_string(),
            reason,
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if probe.schema_version != Some(2) {
            return Err(malformed(format!(
                "schemaVersion {:?} (only 2 is supported)",
                probe.schema_version
            )));
        }
        let header_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
            .filter(|c| {
                c != "application/json" && c != "application/octet-stream" && !c.is_empty()
            });
        let media_type = probe.media_type.or(header_type).unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_string()
            } else if probe.layers.is_some() {
                OCI_MANIFEST.to_string()
            } else {
                String::new()
            }
        });
        match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => serde_json::from_slice(bytes)
                .map(Document::Manifest)
                .map_err(|e| malformed(e.to_string())),
            OCI_INDEX | DOCKER_LIST => serde_json::from_slice(bytes)
                .map(Document::Index)
                .map_err(|e| malformed(e.to_string())),
            other => Err(Error::UnsupportedMediaType {
                what: what.to_string(),
                media_type: other.to_string(),
            }),
        }
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(what: &str, mt: &str) -> Result<Self> {
        let unsupported = || Error::UnsupportedMediaType {
            what: what.to_string(),
            media_type: mt.to_string(),
        };
        let is_layer = mt.starts_with("application/vnd.oci.image.layer.")
            || mt.starts_with("application/vnd.docker.image.rootfs.");
        if !is_layer {
            return Err(unsupported());
        }
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
            Ok(Self::Gzip)
        } else if mt.ends_with("+zstd") {
            Ok(Self::Zstd)
        } else if mt.ends_with(".tar") {
            Ok(Self::None)
        } else {
            Err(unsupported())
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on, in OCI/Go names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Self {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// `os/arch[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidPlatform {
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad("expected os/architecture[/variant]"));
        }
        Ok(Self {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Does a descriptor's platform satisfy this wanted one? A wanted variant must match;
    /// arm64's implied `v8` matches no variant.
    pub fn matches(&self, offered: &Platform) -> bool {
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        self.os == offered.os
            && self.architecture == offered.architecture
            && (self.variant.is_none() || norm(self) == norm(offered))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Pick the manifest for `wanted` from an index: exact variant first, then any variant.
pub fn select<'a>(index: &'a ImageIndex, wanted: &Platform) -> Result<&'a Descriptor> {
    let candidates = || {
        index
            .manifests
            .iter()
            .filter(|d| d.media_type != OCI_INDEX && d.media_type != DOCKER_LIST)
    };
    let by = |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| wanted.matches(p));
    let exact = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.variant == wanted.variant)
    };
    candidates()
        .filter(by)
        .find(exact)
        .or_else(|| candidates().find(by))
        .ok_or_else(|| Error::NoMatchingPlatform {
            wanted: wanted.to_string(),
            available: index
                .manifests
                .iter()
                .map(|d| {
                    d.platform
                        .as_ref()
                        .map_or("unknown".to_string(), |p| p.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The image config blob (OCI image spec, config.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

/// The runtime defaults an image carries.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(p: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(p.as_bytes()),
            size: 1,
            platform: Some(Platform::parse(p).unwrap()),
        }
    }

    #[test]
    fn selects_platform() {
        let idx = ImageIndex {
            media_type: None,
            manifests: vec![
                desc("linux/amd64"),
                desc("linux/arm64/v8"),
                desc("linux/arm/v6"),
                desc("linux/arm/v7"),
            ],
        };
        let pick = |s: &str| select(&idx, &Platform::parse(s).unwrap()).map(|d| d.digest.clone());
        assert_eq!(pick("linux/amd64").unwrap(), Digest::of(b"linux/amd64"));
        assert_eq!(pick("linux/arm64").unwrap(), Digest::of(b"linux/arm64/v8"));
        assert_eq!(pick("linux/arm/v7").unwrap(), Digest::of(b"linux/arm/v7"));
        assert!(matches!(
            pick("linux/s390x"),
            Err(Error::NoMatchingPlatform { .. })
        ));
    }

    #[test]
    fn classifies_by_content_type() {
        let d = Digest::of(b"x");
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            Document::parse("m", m.as_bytes(), Some(OCI_MANIFEST)),
            Ok(Document::Manifest(_))
        ));
        assert!(matches!(
            Document::parse("m", m.as_bytes(), None),
            Ok(Document::Manifest(_))
        ));
        assert!(Document::parse("m", m.as_bytes(), Some("text/html")).is_err());
        assert!(Document::parse("m", b"{\"schemaVersion\":1}", None).is_err());
    }

    #[test]
    fn compression() {
        assert_eq!(
            Compression::from_media_type("l", "application/vnd.oci.image.layer.v1.tar+zstd")
                .unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("l", "application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        assert!(Compression::from_media_type("l", "application/vnd.in-toto+json").is_err());
    }
}
