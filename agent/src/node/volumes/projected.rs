//! Projected volumes: a service-account token, configMaps, secrets and downward API fields in one
//! directory; what admission gives every pod is `token`, `ca.crt` from `kube-root-ca.crt` and
//! `namespace`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource};

use super::downward::{self, Allocatable};
use super::objects::{self, DEFAULT_MODE};
use super::token::{self, Tokens};
use super::{atomic::File, select, Error};

pub async fn files(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    src: &ProjectedVolumeSource,
    tokens: &mut Tokens,
    node: &Allocatable,
) -> Result<BTreeMap<String, File>, Error> {
    let mode = src.default_mode.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777);
    let mut out = BTreeMap::new();
    for s in src.sources.iter().flatten() {
        if let Some(t) = &s.service_account_token {
            let audience = t.audience.clone().unwrap_or_default();
            let exp = t.expiration_seconds.unwrap_or(token::DEFAULT_EXPIRATION);
            let tok = tokens.get(client, pod, volume, &audience, exp).await?;
            out.insert(
                t.path.clone(),
                File {
                    content: tok.into_bytes(),
                    mode,
                },
            );
        }
        if let Some(c) = &s.config_map {
            let optional = c.optional.unwrap_or(false);
            match objects::config_map_data(client, pod, volume, &c.name).await? {
                Some(d) => out.extend(select(volume, d, c.items.as_ref(), mode, optional)?),
                None if optional => {}
                None => {
                    return Err(Error::volume(
                        volume,
                        format!("configmap {:?} not found", c.name),
                    ))
                }
            }
        }
        if let Some(c) = &s.secret {
            let optional = c.optional.unwrap_or(false);
            match objects::secret_data(client, pod, volume, &c.name).await? {
                Some(d) => out.extend(select(volume, d, c.items.as_ref(), mode, optional)?),
                None if optional => {}
                None => {
                    return Err(Error::volume(
                        volume,
                        format!("secret {:?} not found", c.name),
                    ))
                }
            }
        }
        if let Some(d) = &s.downward_api {
            out.extend(downward::items(
                pod,
                volume,
                d.items.iter().flatten(),
                mode,
                node,
            )?);
        }
    }
    Ok(out)
}
