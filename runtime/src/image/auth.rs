//! Registry credentials: from the caller, or from a `~/.docker/config.json`-style file:
//! its per-registry `credHelpers`, then its `credsStore`, then its `auths`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use base64::Engine as _;
use serde::Deserialize;
use tracing::debug;

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
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
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

/// Credentials by registry host: the caller's, a Docker config file's `credHelpers` and
/// `credsStore` (external `docker-credential-<name>` programs, run once per registry) and its
/// `auths`, looked up in that order.
#[derive(Debug, Default)]
pub struct CredentialStore {
    /// Given by the caller: win over everything in the file.
    given: HashMap<String, Credentials>,
    by_host: HashMap<String, Credentials>,
    helpers: HashMap<String, String>,
    store: Option<String>,
    /// Answers of helpers already run (`None`: the helper has none for that registry).
    asked: Mutex<HashMap<String, Option<Credentials>>>,
}

impl Clone for CredentialStore {
    fn clone(&self) -> Self {
        Self {
            given: self.given.clone(),
            by_host: self.by_host.clone(),
            helpers: self.helpers.clone(),
            store: self.store.clone(),
            asked: Mutex::new(self.asked.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        }
    }
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
        let bad = |reason: String| Error::Credentials {
            path: path.to_path_buf(),
            reason,
        };
        let file: DockerConfigFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
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
                        return Err(bad(format!(
                            "auths.{key:?}.auth is not base64 of user:password"
                        )));
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
        let mut helpers = HashMap::new();
        for (key, name) in file.cred_helpers {
            check_helper_name(&name)
                .map_err(|r| bad(format!("credHelpers.{key:?}: helper name {name:?} {r}")))?;
            helpers.insert(normalise_key(&key), name);
        }
        let store = file.creds_store.filter(|s| !s.is_empty());
        if let Some(name) = &store {
            check_helper_name(name).map_err(|r| bad(format!("credsStore {name:?} {r}")))?;
        }
        Ok(Self {
            by_host,
            helpers,
            store,
            ..Self::default()
        })
    }

    /// Credentials for `host` given by the caller; they win over the file's.
    pub fn insert(&mut self, host: &str, creds: Credentials) {
        self.given.insert(normalise_key(host), creds);
    }

    /// The credentials for `registry`, running its helper the first time it is asked for.
    /// A helper that has none for the registry falls through to the next source.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>> {
        let key = normalise_key(registry);
        if let Some(c) = self.given.get(&key) {
            return Ok(Some(c.clone()));
        }
        let helpers = self.helpers.get(&key).into_iter().chain(&self.store);
        for helper in helpers {
            if let Some(c) = self.ask_cached(helper, registry, &key)? {
                return Ok(Some(c));
            }
        }
        Ok(self.by_host.get(&key).cloned())
    }

    fn ask_cached(&self, helper: &str, registry: &str, key: &str) -> Result<Option<Credentials>> {
        let cache_key = format!("{helper}\0{key}");
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = asked.get(&cache_key) {
            return Ok(c.clone());
        }
        let c = ask_helper(helper, &server_url(registry, key))?;
        asked.insert(cache_key, c.clone());
        Ok(c)
    }
}

/// Helper names become part of a program name looked up on PATH: no paths.
fn check_helper_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.contains('/') || name.contains('\0') {
        return Err("is not a plain program name suffix");
    }
    Ok(())
}

/// What Docker hands a helper as the server: Docker Hub's legacy URL, else the host.
fn server_url(registry: &str, key: &str) -> String {
    if key == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }
}

/// Helpers answer this (Docker's credentials-helper protocol) when they have nothing.
const NOT_FOUND: &str = "credentials not found in native keychain";

/// Run `docker-credential-<helper> get` with the server URL on stdin.
fn ask_helper(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let fail = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        server: server.to_string(),
        reason,
    };
    debug!(helper = %program, server, "asking credential helper");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("not found on PATH".into()),
            _ => fail(format!("cannot run it: {e}")),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is judged by its exit status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("reading its answer: {e}")))?;
    let (status, out, err) = (output.status, output.stdout, output.stderr);
    let stdout = String::from_utf8_lossy(&out);
    if !status.success() {
        if stdout.trim() == NOT_FOUND {
            return Ok(None);
        }
        let msg = [stdout.trim(), String::from_utf8_lossy(&err).trim()]
            .iter()
            .filter(|m| !m.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(fail(format!("{status}: {msg}")));
    }
    parse_helper_answer(&out).map(Some).map_err(fail)
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `{"ServerURL","Username","Secret"}`; the username `<token>` marks an identity token.
fn parse_helper_answer(out: &[u8]) -> std::result::Result<Credentials, String> {
    let a: HelperAnswer = serde_json::from_slice(out)
        .map_err(|e| format!("answer is not the helper protocol's JSON: {e}"))?;
    if a.username == "<token>" {
        return Ok(Credentials::IdentityToken(a.secret));
    }
    Ok(Credentials::Basic {
        username: a.username,
        password: a.secret,
    })
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
            s.get("docker.io").unwrap(),
            Some(Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            })
        );
        assert!(s.get("127.0.0.1:5000").unwrap().is_some());
        assert!(s.get("other").unwrap().is_none());
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(CredentialStore::load(&p).is_err());
        std::fs::write(&p, r#"{"credHelpers":{"x":"../evil"}}"#).unwrap();
        assert!(CredentialStore::load(&p).is_err());
    }

    #[test]
    fn helper_answers() {
        assert_eq!(
            parse_helper_answer(br#"{"ServerURL":"r","Username":"u","Secret":"s"}"#),
            Ok(Credentials::Basic {
                username: "u".into(),
                password: "s".into()
            })
        );
        assert_eq!(
            parse_helper_answer(br#"{"ServerURL":"r","Username":"<token>","Secret":"t"}"#),
            Ok(Credentials::IdentityToken("t".into()))
        );
        assert!(parse_helper_answer(b"not json").is_err());
        assert_eq!(
            server_url("docker.io", "docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(
            server_url("127.0.0.1:5000", "127.0.0.1:5000"),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn missing_helper_is_named() {
        let e = ask_helper("skiff-test-no-such-helper", "r.example").unwrap_err();
        assert!(
            e.to_string()
                .contains("docker-credential-skiff-test-no-such-helper"),
            "{e}"
        );
    }
}
