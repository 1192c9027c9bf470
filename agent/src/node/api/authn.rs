//! Who is asking: the subject of a verified client certificate, else the user a TokenReview gives
//! a bearer token, else `system:anonymous` when anonymous requests are enabled. Anything else is
//! 401, also an invalid token while anonymous requests are enabled (as kubelet answers).

use std::collections::BTreeMap;
use std::time::Duration;

use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use super::cache::TtlCache;

/// An authenticated user, as a SubjectAccessReview names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..User::default()
        }
    }

    /// The subject of a client certificate the TLS layer has verified: CN the name, each O a group.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Option<User> {
        let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let subject = x.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        groups.push("system:authenticated".into());
        Some(User {
            name,
            groups,
            ..User::default()
        })
    }
}

pub struct Authenticator {
    anonymous: bool,
    /// TokenReview answers are kept this long; `None`: bearer tokens are not accepted.
    webhook: Option<Duration>,
    clients: watch::Receiver<kube::Client>,
    reviewed: TtlCache<String, Option<User>>,
}

impl Authenticator {
    pub fn new(
        anonymous: bool,
        webhook: Option<Duration>,
        clients: watch::Receiver<kube::Client>,
    ) -> Authenticator {
        Authenticator {
            anonymous,
            webhook,
            clients,
            reviewed: TtlCache::default(),
        }
    }

    /// The user of a request on a connection whose client presented `peer` (verified already).
    pub async fn authenticate(&self, peer: Option<&User>, headers: &HeaderMap) -> Option<User> {
        if let Some(u) = peer {
            return Some(u.clone());
        }
        match bearer(headers) {
            Some(token) => self.token(token).await,
            None => self.anonymous.then(User::anonymous),
        }
    }

    async fn token(&self, token: &str) -> Option<User> {
        let ttl = self.webhook?;
        if let Some(known) = self.reviewed.get(&token.to_string()) {
            return known;
        }
        let client = self.clients.borrow().clone();
        match review(client, token).await {
            Ok(user) => {
                self.reviewed.put(token.to_string(), user.clone(), ttl);
                user
            }
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                None
            }
        }
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn review(client: kube::Client, token: &str) -> kube::Result<Option<User>> {
    let api: Api<TokenReview> = Api::all(client);
    let asked = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.into()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let answer = api.create(&PostParams::default(), &asked).await?;
    let Some(status) = answer.status else {
        return Ok(None);
    };
    if status.authenticated != Some(true) {
        return Ok(None);
    }
    let u = status.user.unwrap_or_default();
    Ok(Some(User {
        name: u.username.unwrap_or_default(),
        uid: u.uid.unwrap_or_default(),
        groups: u.groups.unwrap_or_default(),
        extra: u.extra.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_read_loosely() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def"));
        h.insert("authorization", "bearer  xyz ".parse().unwrap());
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert("authorization", "Basic dTpw".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn certificate_subject_names_the_user() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        dn.push(rcgen::DnType::OrganizationName, "system:masters");
        p.distinguished_name = dn;
        let cert = p.self_signed(&key).unwrap();
        let u = User::from_certificate(cert.der()).unwrap();
        assert_eq!(u.name, "kube-apiserver-kubelet-client");
        assert_eq!(u.groups, ["system:masters", "system:authenticated"]);
    }
}
