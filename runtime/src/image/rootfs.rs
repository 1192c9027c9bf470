//! What a container needs from a pulled image: its layer directories and its run defaults.

use std::path::PathBuf;

use serde::Serialize;

use super::error::{Error, Result};
use super::manifest::ImageConfigFile;
use super::store::{ImageRecord, Store};

/// The unpacked directories of an image's layers, lowest first.
pub fn layer_dirs(store: &Store, image: &ImageRecord) -> Result<Vec<PathBuf>> {
    image
        .layers
        .iter()
        .map(|l| {
            let chain = store.chain(&l.chain_id)?.ok_or_else(|| Error::Store {
                path: store.root().to_path_buf(),
                reason: format!(
                    "image {} needs layer {} which is not unpacked",
                    image.name, l.chain_id
                ),
            })?;
            Ok(store.layer_dir(chain.id))
        })
        .collect()
}

/// overlayfs wants the topmost lower directory first.
pub fn lowerdir_option(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// An image's run defaults, flattened for building a runtime spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub volumes: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

pub fn image_config_file(store: &Store, image: &ImageRecord) -> Result<ImageConfigFile> {
    let bytes = store.read_blob(&image.config_digest, 64 << 20)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
        what: format!("image config {}", image.config_digest),
        reason: e.to_string(),
    })
}

pub fn run_config(store: &Store, image: &ImageRecord) -> Result<RunConfig> {
    let c = image_config_file(store, image)?.config.unwrap_or_default();
    Ok(RunConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
        exposed_ports: c
            .exposed_ports
            .map(|m| m.into_keys().collect())
            .unwrap_or_default(),
        volumes: c
            .volumes
            .map(|m| m.into_keys().collect())
            .unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        stop_signal: c.stop_signal,
    })
}
