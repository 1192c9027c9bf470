//! Service-account tokens for projected volumes: a TokenRequest bound to the pod, kept and asked
//! again once 80 % of its life has passed (or after 24 h), as kubelet's token manager does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

use super::Error;

/// kubelet's default when the projection gives none.
pub const DEFAULT_EXPIRATION: i64 = 3600;
const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

struct Held {
    token: String,
    refresh_at: Instant,
}

/// The tokens of one pod, by audience and lifetime.
#[derive(Default)]
pub struct Tokens {
    held: HashMap<(String, i64), Held>,
}

impl Tokens {
    /// A token for the pod's service account, fresh enough.
    pub async fn get(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        volume: &str,
        audience: &str,
        expiration: i64,
    ) -> Result<String, Error> {
        let key = (audience.to_string(), expiration);
        if let Some(h) = self.held.get(&key) {
            if Instant::now() < h.refresh_at {
                return Ok(h.token.clone());
            }
        }
        let (token, ttl) = request(client, pod, volume, audience, expiration).await?;
        let refresh = refresh_after(ttl);
        tracing::debug!(pod = ?pod.metadata.name, volume, refresh_in = ?refresh, "service-account token issued");
        self.held.insert(
            key,
            Held {
                token: token.clone(),
                refresh_at: Instant::now() + refresh,
            },
        );
        Ok(token)
    }
}

/// When a token that lives `ttl` more is asked for again: at 80 % of its life, at most a day on.
pub fn refresh_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8).min(MAX_AGE)
}

async fn request(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    audience: &str,
    expiration: i64,
) -> Result<(String, Duration), Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if audience.is_empty() {
                Vec::new()
            } else {
                vec![audience.to_string()]
            },
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let issued = api
        .create_token_request(&sa, &PostParams::default(), &req)
        .await
        .map_err(|source| Error::Api {
            volume: volume.into(),
            source: Box::new(source),
        })?;
    let status = issued
        .status
        .ok_or_else(|| Error::volume(volume, "the TokenRequest came back without a token"))?;
    let left = (status.expiration_timestamp.0 - k8s_openapi::chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::from_secs(expiration.max(60) as u64));
    Ok((status.token, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_at_four_fifths_of_their_life() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(2880)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(600)),
            Duration::from_secs(480)
        );
        assert_eq!(refresh_after(Duration::from_secs(7 * 24 * 3600)), MAX_AGE);
    }
}
