//! Registry credentials: from the caller, or from a `~/.docker/config.json`-style file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::error::{Error, IoContext, Result};

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry token sent as-is as `Authorization: Bearer` (CRI `AuthConfig.registry_token`).
    Token(String),
    /// An OAuth2 refresh token traded at the token realm for access tokens
    /// (CRI `AuthConfig.identity_token`, Docker's `identitytoken`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, ****)"),
            Self::Token(_) => write!(f, "Token(****)"),
            Self::IdentityToken(_) => write!(f, "IdentityToken(****)"),
        }
    }
}

impl Credentials {
    /// Decode Docker's `auth` field: base64 of `user:password`.
    pub fn from_auth_field(auth: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some(Self::Basic {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    pub fn basic_header(username: &str, password: &str) -> String {
        let enc =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        format!("Basic {enc}")
    }
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// The `auths` of a Docker config file, keyed by registry host.
#[derive(Clone, Debug, Default)]
pub struct CredentialStore {
    by_host: HashMap<String, Credentials>,
}

impl CredentialStore {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    /// Load a config file; a missing file has no credentials.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).at(path),
        };
        let file: DockerConfigFile =
            serde_json::from_str(&text).map_err(|e| Error::Credentials {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut by_host = HashMap::new();
        for (key, a) in file.auths {
            if let Some(t) = a.identity_token.as_ref().filter(|t| !t.is_empty()) {
                by_host.insert(normalise_key(&key), Credentials::IdentityToken(t.clone()));
                continue;
            }
            let creds = match (&a.username, &a.password, &a.auth, &a.registry_token) {
                (Some(u), Some(p), _, _) => Some(Credentials::Basic {
                    username: u.clone(),
                    password: p.clone(),
                }),
                (_, _, Some(auth), _) if !auth.is_empty() => {
                    let c = Credentials::from_auth_field(auth);
                    if c.is_none() {
                        return Err(Error::Credentials {
                            path: path.to_path_buf(),
                            reason: format!("auths.{key:?}.auth is not base64 of user:password"),
                        });
                    }
                    c
                }
                (_, _, _, Some(t)) => Some(Credentials::Token(t.clone())),
                _ => None,
            };
            if let Some(c) = creds {
                by_host.insert(normalise_key(&key), c);
            }
        }
        Ok(Self { by_host })
    }

    pub fn insert(&mut self, host: &str, creds: Credentials) {
        self.by_host.insert(normalise_key(host), creds);
    }

    pub fn get(&self, registry: &str) -> Option<&Credentials> {
        self.by_host.get(&normalise_key(registry))
    }
}

/// Keys may be URLs (`https://index.docker.io/v1/`) or hosts; Docker Hub has several names.
fn normalise_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Self::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let p = parse_params(params);
        Some(Self::Bearer {
            realm: p.get("realm")?.clone(),
            service: p.get("service").cloned(),
            scope: p.get("scope").cloned(),
        })
    }
}

/// `key="value", key=value` pairs; quoted values may contain commas (scopes do).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_string());
        rest = remaining.trim_start_matches([',', ' ']);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"127.0.0.1:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let s = CredentialStore::load(&p).unwrap();
        assert_eq!(
            s.get("docker.io"),
            Some(&Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert!(s.get("127.0.0.1:5000").is_some());
        assert!(s.get("other").is_none());
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(CredentialStore::load(&p).is_err());
    }
}
