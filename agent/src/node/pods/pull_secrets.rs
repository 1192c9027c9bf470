//! `imagePullSecrets`: the pod's docker config secrets (`kubernetes.io/dockerconfigjson` and the older
//! `kubernetes.io/dockercfg`) as a keyring, matched against an image as kubelet's credential keyring
//! does: the registry host part by part (globs allowed), the port exactly, the key's path as a prefix
//! of the image's repository; the most specific keys first.

use std::collections::BTreeMap;

use base64::Engine;
use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use serde::Deserialize;

const DOCKER_HUB: &str = "docker.io";

/// One entry of a docker config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// Registry keys and their credentials, in the order they are tried.
#[derive(Debug, Default)]
pub struct Keyring {
    entries: Vec<(String, cri::AuthConfig)>,
}

impl Keyring {
    /// Adds a secret's entries; a secret of another type, or one that does not parse, is named in
    /// the error.
    pub fn add_secret(&mut self, s: &Secret) -> Result<(), String> {
        let name = s.metadata.name.as_deref().unwrap_or_default();
        let data = s.data.clone().unwrap_or_default();
        let parsed: Result<BTreeMap<String, Entry>, serde_json::Error> =
            match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
                (Some(j), _) => serde_json::from_slice::<DockerConfigJson>(&j.0).map(|c| c.auths),
                (None, Some(c)) => serde_json::from_slice(&c.0),
                (None, None) => {
                    return Err(format!(
                        "secret {name:?} has neither .dockerconfigjson nor .dockercfg"
                    ))
                }
            };
        let auths = parsed.map_err(|e| format!("secret {name:?}: {e}"))?;
        for (key, e) in auths {
            self.entries
                .push((normalize_key(&key), auth_config(&key, e)));
        }
        Ok(())
    }

    /// The credentials whose key matches `image`, the most specific first.
    pub fn lookup(&self, image: &str) -> Vec<cri::AuthConfig> {
        let target = repository(image);
        let mut hits: Vec<&(String, cri::AuthConfig)> = self
            .entries
            .iter()
            .filter(|(k, _)| matches(k, &target))
            .collect();
        // Longer (more specific) keys first; the sort is stable, so secrets keep their order.
        hits.sort_by(|a, b| b.0.cmp(&a.0));
        hits.into_iter().map(|(_, a)| a.clone()).collect()
    }
}

fn auth_config(key: &str, e: Entry) -> cri::AuthConfig {
    let (mut username, mut password) = (e.username, e.password);
    if username.is_empty() && !e.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(e.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            (username, password) = (u.to_string(), p.to_string());
        }
    }
    cri::AuthConfig {
        username,
        password,
        server_address: key.to_string(),
        ..Default::default()
    }
}

/// A key without its scheme and trailing slash; Docker Hub's many names as one.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
        h => h,
    };
    // Docker Hub's legacy key `index.docker.io/v1/` names the whole registry.
    if host == DOCKER_HUB && (path == "v1" || path == "v2") {
        return DOCKER_HUB.to_string();
    }
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// The image's registry and repository, tag and digest dropped, Docker Hub's implied parts added.
fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let is_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let (registry, path) = if is_registry {
        (first.to_string(), rest.to_string())
    } else if first.is_empty() {
        (DOCKER_HUB.to_string(), format!("library/{rest}"))
    } else {
        (DOCKER_HUB.to_string(), name.to_string())
    };
    let path = match path.rsplit_once(':') {
        Some((p, tag)) if !tag.contains('/') => p.to_string(),
        _ => path,
    };
    format!("{registry}/{path}")
}

/// kubelet's rule: equal part counts, each host part glob-matched, ports equal, path a prefix.
fn matches(key: &str, target: &str) -> bool {
    let split = |s: &str| -> (String, String, String) {
        let (hostport, path) = s.split_once('/').unwrap_or((s, ""));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, p),
            _ => (hostport, ""),
        };
        (host.to_string(), port.to_string(), path.to_string())
    };
    let (kh, kp, kpath) = split(key);
    let (th, tp, tpath) = split(target);
    let (kparts, tparts): (Vec<&str>, Vec<&str>) =
        (kh.split('.').collect(), th.split('.').collect());
    if kparts.len() != tparts.len() || kp != tp {
        return false;
    }
    if !kparts.iter().zip(&tparts).all(|(k, t)| glob(k, t)) {
        return false;
    }
    kpath.is_empty() || tpath == kpath || tpath.starts_with(&format!("{kpath}/"))
}

/// `*` for any run of characters within one host part, `?` for one.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(&p, &s)
}

/// The keyring of the pod's `imagePullSecrets`. A secret that is missing or malformed is skipped
/// with a warning, as kubelet does: the pull may still succeed without it.
pub async fn keyring(client: &kube::Client, pod: &Pod) -> Keyring {
    let mut ring = Keyring::default();
    let refs = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    if refs.is_empty() {
        return ring;
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for r in refs {
        let name = r.name;
        match api.get_opt(&name).await {
            Ok(Some(s)) => {
                if let Err(e) = ring.add_secret(&s) {
                    tracing::warn!(pod = ?pod.metadata.name, error = %e, "image pull secret skipped");
                }
            }
            Ok(None) => {
                tracing::warn!(pod = ?pod.metadata.name, secret = %name, "image pull secret not found")
            }
            Err(e) => {
                tracing::warn!(pod = ?pod.metadata.name, secret = %name, error = %e, "read an image pull secret")
            }
        }
    }
    ring
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("s".into()),
                ..Default::default()
            },
            data: Some([(key.to_string(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn images_name_their_registry_and_repository() {
        assert_eq!(repository("busybox"), "docker.io/library/busybox");
        assert_eq!(repository("me/app:1"), "docker.io/me/app");
        assert_eq!(repository("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("r.io/x@sha256:00"), "r.io/x");
        assert_eq!(repository("localhost/x"), "localhost/x");
    }

    #[test]
    fn keys_match_as_kubelets_keyring() {
        assert!(matches("127.0.0.1:5000", "127.0.0.1:5000/a/b"));
        assert!(!matches("127.0.0.1:5001", "127.0.0.1:5000/a/b"));
        assert!(!matches("127.0.0.1", "127.0.0.1:5000/a/b"));
        assert!(matches("*.r.io", "eu.r.io/x"));
        assert!(!matches("*.r.io", "r.io/x"));
        assert!(!matches("*.r.io", "a.eu.r.io/x"));
        assert!(matches("r.io/team", "r.io/team/app"));
        assert!(!matches("r.io/team", "r.io/teamx/app"));
        assert!(matches(
            &normalize_key("https://index.docker.io/v1/"),
            "docker.io/library/busybox"
        ));
    }

    #[test]
    fn both_secret_types_and_the_auth_field() {
        let mut ring = Keyring::default();
        ring.add_secret(&secret(
            ".dockerconfigjson",
            r#"{"auths":{"r.io":{"auth":"YWxpY2U6czNjcmV0"},"r.io/team":{"username":"bob","password":"pw"}}}"#,
        ))
        .unwrap();
        ring.add_secret(&secret(
            ".dockercfg",
            r#"{"https://other.io":{"username":"c","password":"d"}}"#,
        ))
        .unwrap();
        let found = ring.lookup("r.io/team/app:1");
        let users: Vec<&str> = found.iter().map(|a| a.username.as_str()).collect();
        assert_eq!(users, ["bob", "alice"]);
        assert_eq!(found[1].password, "s3cret");
        assert_eq!(ring.lookup("other.io/x")[0].username, "c");
        assert!(ring.lookup("third.io/x").is_empty());
        let e = ring.add_secret(&secret("token", "{}")).unwrap_err();
        assert!(e.contains("neither"), "{e}");
        let e = ring
            .add_secret(&secret(".dockerconfigjson", "{"))
            .unwrap_err();
        assert!(e.contains("\"s\""), "{e}");
    }
}
