//! configMap and secret volumes (and projections): the object's data as files, `items` choosing
//! keys and paths, `defaultMode`/`mode`, `optional` allowing the object or a key to be missing.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Pod, Secret, SecretVolumeSource,
};
use kube::Api;

use super::{atomic::File, select, Error};

/// kubelet's default mode for configMap, secret and projected files.
pub const DEFAULT_MODE: u32 = 0o644;

fn ns(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The configMap's data and binaryData; `None` when it does not exist.
pub async fn config_map_data(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns(pod));
    let cm = api.get_opt(name).await.map_err(|source| Error::Api {
        volume: volume.into(),
        source: Box::new(source),
    })?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// The secret's data; `None` when it does not exist.
pub async fn secret_data(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns(pod));
    let s = api.get_opt(name).await.map_err(|source| Error::Api {
        volume: volume.into(),
        source: Box::new(source),
    })?;
    Ok(s.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            s.string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    }))
}

fn missing(volume: &str, kind: &str, name: &str) -> Error {
    Error::volume(volume, format!("{kind} {name:?} not found"))
}

pub async fn config_map(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    src: &ConfigMapVolumeSource,
) -> Result<BTreeMap<String, File>, Error> {
    let optional = src.optional.unwrap_or(false);
    let mode = src.default_mode.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777);
    match config_map_data(client, pod, volume, &src.name).await? {
        Some(data) => select(volume, data, src.items.as_ref(), mode, optional),
        None if optional => Ok(BTreeMap::new()),
        None => Err(missing(volume, "configmap", &src.name)),
    }
}

pub async fn secret(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    src: &SecretVolumeSource,
) -> Result<BTreeMap<String, File>, Error> {
    let optional = src.optional.unwrap_or(false);
    let mode = src.default_mode.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777);
    let name = src.secret_name.clone().unwrap_or_default();
    match secret_data(client, pod, volume, &name).await? {
        Some(data) => select(volume, data, src.items.as_ref(), mode, optional),
        None if optional => Ok(BTreeMap::new()),
        None => Err(missing(volume, "secret", &name)),
    }
}
