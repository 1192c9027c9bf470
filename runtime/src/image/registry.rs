//! A registry client over the distribution HTTP API: anonymous, Basic and Bearer-token auth,
//! system roots plus per-registry CA files, plain HTTP only for insecure or loopback registries.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

use serde::Deserialize;
use tracing::{debug, warn};

use super::auth::{Challenge, CredentialStore, Credentials};
use super::digest::Digest;
use super::error::{Error, Result};
use super::hosts::{is_loopback, HostsConfig};
use super::reference::Reference;
use super::tls::{self, Trust};

const MAX_ERROR_BODY: u64 = 4096;
const MAX_TOKEN_BODY: u64 = 1 << 20;

/// One place to fetch a repository from: a mirror or the registry itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` spoken to.
    pub host: String,
    /// A scheme fixed by configuration (`http://mirror`); `None` means HTTPS, with a
    /// fallback to HTTP for insecure or loopback hosts.
    pub scheme: Option<String>,
    pub is_mirror: bool,
}

/// A response body and what the registry said about it.
pub struct Fetched {
    pub body: Box<dyn Read + Send + Sync>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// The byte offset the body starts at (non-zero only when a Range was honoured).
    pub offset: u64,
}

pub struct Client {
    hosts: HostsConfig,
    creds: CredentialStore,
    trust: HashMap<String, Trust>,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    tokens: Mutex<HashMap<(String, String), String>>,
    schemes: Mutex<HashMap<String, &'static str>>,
}

impl Client {
    /// Fails when a configured CA file cannot be used.
    pub fn new(hosts: HostsConfig, creds: CredentialStore) -> Result<Self> {
        let mut trust = HashMap::new();
        for (host, cfg) in &hosts.registries {
            if cfg.insecure {
                trust.insert(host.clone(), Trust::AnyCertificate);
            } else if let Some(ca) = &cfg.ca_file {
                trust.insert(host.clone(), Trust::Roots(tls::roots_with_ca_file(ca)?));
            }
        }
        Ok(Self {
            hosts,
            creds,
            trust,
            agents: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    /// Mirrors first, in configured order, then the registry itself.
    pub fn endpoints(&self, r: &Reference) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .hosts
            .host(&r.registry)
            .mirrors
            .iter()
            .filter_map(|m| parse_mirror(m))
            .collect();
        out.push(Endpoint {
            host: r.api_host().to_string(),
            scheme: None,
            is_mirror: false,
        });
        out
    }

    /// GET `/v2/<repo>/manifests/<reference>`.
    pub fn get_manifest(
        &self,
        ep: &Endpoint,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Fetched> {
        self.get(ep, repo, &format!("manifests/{reference}"), Some(accept), 0)
    }

    /// GET `/v2/<repo>/blobs/<digest>`, from `offset` on when the registry honours Range.
    pub fn get_blob(
        &self,
        ep: &Endpoint,
        repo: &str,
        digest: &Digest,
        offset: u64,
    ) -> Result<Fetched> {
        self.get(ep, repo, &format!("blobs/{digest}"), None, offset)
    }

    fn get(
        &self,
        ep: &Endpoint,
        repo: &str,
        path: &str,
        accept: Option<&str>,
        offset: u64,
    ) -> Result<Fetched> {
        let schemes = self.schemes_for(ep);
        let mut https_err: Option<Error> = None;
        for scheme in schemes {
            let url = format!("{scheme}://{}/v2/{repo}/{path}", ep.host);
            match (
                self.get_authorised(ep, repo, &url, accept, offset),
                https_err.take(),
            ) {
                (Ok(resp), _) => {
                    self.schemes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(ep.host.clone(), scheme);
                    return Ok(into_fetched(resp, offset));
                }
                // A TLS server answers plain HTTP with 400: then the HTTPS failure (say, an
                // unknown CA) is the one to report.
                (
                    Err(e @ (Error::Transport { .. } | Error::Registry { status: 400, .. })),
                    Some(first),
                ) => return Err(with_fallback(first, &e)),
                (Err(e), Some(_)) => return Err(e),
                (Err(e @ Error::Transport { .. }), None) => {
                    debug!(%url, error = %e, "endpoint unreachable with this scheme");
                    https_err = Some(e);
                }
                (Err(e), None) => return Err(e),
            }
        }
        Err(https_err.unwrap_or_else(|| Error::Transport {
            url: ep.host.clone(),
            reason: "no usable scheme".into(),
        }))
    }

    fn schemes_for(&self, ep: &Endpoint) -> Vec<&'static str> {
        if let Some(s) = &ep.scheme {
            return vec![if s == "http" { "http" } else { "https" }];
        }
        if let Some(s) = self
            .schemes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ep.host)
        {
            return vec![s];
        }
        if self.hosts.host(&ep.host).insecure || is_loopback(&ep.host) {
            vec!["https", "http"]
        } else {
            vec!["https"]
        }
    }

    /// Send once with what we know; on a 401, answer the challenge and send once more.
    fn get_authorised(
        &self,
        ep: &Endpoint,
        repo: &str,
        url: &str,
        accept: Option<&str>,
        offset: u64,
    ) -> Result<ureq::Response> {
        let key = (ep.host.clone(), repo.to_string());
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let auth = match cached {
            Some(a) => Some(a),
            None => match self.creds.get(&ep.host)? {
                Some(Credentials::Token(t)) => Some(format!("Bearer {t}")),
                _ => None,
            },
        };
        match self
            .send(ep, url, accept, offset, auth.as_deref())
            .map_err(|e| *e)
        {
            Err(ureq::Error::Status(401, resp)) => {
                let header = self.answer_challenge(ep, repo, url, &resp)?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, header.clone());
                match self
                    .send(ep, url, accept, offset, Some(&header))
                    .map_err(|e| *e)
                {
                    Err(ureq::Error::Status(401, resp)) => Err(Error::Unauthorized {
                        url: url.to_string(),
                        reason: format!("credentials rejected: {}", error_body(resp)),
                    }),
                    other => other.map_err(|e| map_err(url, e)),
                }
            }
            other => other.map_err(|e| map_err(url, e)),
        }
    }

    fn send(
        &self,
        ep: &Endpoint,
        url: &str,
        accept: Option<&str>,
        offset: u64,
        auth: Option<&str>,
    ) -> std::result::Result<ureq::Response, Box<ureq::Error>> {
        let mut req = self.agent(&ep.host).get(url);
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        if offset > 0 {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        if let Some(a) = auth {
            req = req.set("Authorization", a);
        }
        req.call().map_err(Box::new)
    }

    fn answer_challenge(
        &self,
        ep: &Endpoint,
        repo: &str,
        url: &str,
        resp: &ureq::Response,
    ) -> Result<String> {
        let unauthorized = |reason: String| Error::Unauthorized {
            url: url.to_string(),
            reason,
        };
        let header = resp
            .header("WWW-Authenticate")
            .ok_or_else(|| unauthorized("401 without a WWW-Authenticate challenge".into()))?;
        let challenge = Challenge::parse(header)
            .ok_or_else(|| unauthorized(format!("unsupported challenge {header:?}")))?;
        let creds = self.creds.get(&ep.host)?;
        let creds = creds.as_ref();
        match challenge {
            Challenge::Basic => match creds {
                Some(Credentials::Basic { username, password }) => {
                    Ok(Credentials::basic_header(username, password))
                }
                _ => Err(unauthorized(
                    "registry wants Basic auth and no credentials are configured".into(),
                )),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{repo}:pull"));
                let token = self.fetch_token(ep, &realm, service.as_deref(), &scope, creds)?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    fn fetch_token(
        &self,
        ep: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<String> {
        let realm_host = realm
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or(&ep.host)
            .to_string();
        if realm.starts_with("http://")
            && !is_loopback(&realm_host)
            && !self.hosts.host(&realm_host).insecure
        {
            return Err(Error::Unauthorized {
                url: realm.to_string(),
                reason: "token realm is plain HTTP on a registry not configured insecure".into(),
            });
        }
        let agent = self.agent(&realm_host);
        let sent = match creds {
            // OAuth2: trade the refresh token for an access token.
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "skiff"),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                agent.post(realm).send_form(&form)
            }
            _ => {
                let mut req = agent.get(realm).query("scope", scope);
                if let Some(s) = service {
                    req = req.query("service", s);
                }
                if let Some(Credentials::Basic { username, password }) = creds {
                    req = req.set(
                        "Authorization",
                        &Credentials::basic_header(username, password),
                    );
                }
                req.call()
            }
        };
        let resp = sent.map_err(|e| match e {
            ureq::Error::Status(s, r) => Error::Unauthorized {
                url: realm.to_string(),
                reason: format!("token server answered HTTP {s}: {}", error_body(r)),
            },
            other => map_err(realm, other),
        })?;
        #[derive(Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let mut body = String::new();
        resp.into_reader()
            .take(MAX_TOKEN_BODY)
            .read_to_string(&mut body)
            .map_err(|e| Error::Transport {
                url: realm.to_string(),
                reason: e.to_string(),
            })?;
        let t: TokenResponse = serde_json::from_str(&body).map_err(|e| Error::Unauthorized {
            url: realm.to_string(),
            reason: format!("token response is not JSON: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized {
                url: realm.to_string(),
                reason: "token response has no token".into(),
            })
    }

    fn agent(&self, host: &str) -> ureq::Agent {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .entry(host.to_string())
            .or_insert_with(|| {
                let trust = self
                    .trust
                    .get(host)
                    .cloned()
                    .unwrap_or_else(|| Trust::Roots(tls::system_roots()));
                tls::agent(&trust)
            })
            .clone()
    }
}

fn parse_mirror(m: &str) -> Option<Endpoint> {
    let (scheme, rest) = match m.split_once("://") {
        Some((s, r)) if s == "http" || s == "https" => (Some(s.to_string()), r),
        Some(_) => {
            warn!(mirror = m, "ignoring mirror with an unknown scheme");
            return None;
        }
        None => (None, m),
    };
    let host = rest.split('/').next().unwrap_or(rest);
    (!host.is_empty()).then(|| Endpoint {
        host: host.to_string(),
        scheme,
        is_mirror: true,
    })
}

fn with_fallback(first: Error, fallback: &Error) -> Error {
    match first {
        Error::Transport { url, reason } => Error::Transport {
            url,
            reason: format!("{reason} (plain HTTP fallback: {fallback})"),
        },
        other => other,
    }
}

fn into_fetched(resp: ureq::Response, offset: u64) -> Fetched {
    let content_type = resp.header("Content-Type").map(|s| s.to_string());
    let content_length = resp.header("Content-Length").and_then(|s| s.parse().ok());
    let served_offset = if resp.status() == 206 { offset } else { 0 };
    Fetched {
        body: resp.into_reader(),
        content_type,
        content_length,
        offset: served_offset,
    }
}

fn map_err(url: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(status, resp) => Error::Registry {
            url: url.to_string(),
            status,
            message: error_body(resp),
        },
        ureq::Error::Transport(t) => Error::Transport {
            url: url.to_string(),
            reason: t.to_string(),
        },
    }
}

fn error_body(resp: ureq::Response) -> String {
    let mut s = String::new();
    let _ = resp
        .into_reader()
        .take(MAX_ERROR_BODY)
        .read_to_string(&mut s);
    let s = s.trim();
    if s.is_empty() {
        "(empty body)".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first() {
        let hosts: HostsConfig = toml::from_str(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000/\", \"https://m2\"]\n",
        )
        .unwrap();
        let c = Client::new(hosts, CredentialStore::default()).unwrap();
        let eps = c.endpoints(&Reference::parse("registry.k8s.io/pause:3.10").unwrap());
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert_eq!(eps[0].scheme.as_deref(), Some("http"));
        assert_eq!(eps[1].host, "m2");
        assert_eq!(eps[2].host, "registry.k8s.io");
        assert!(!eps[2].is_mirror);
        assert_eq!(c.schemes_for(&eps[2]), vec!["https"]);
        let local = Endpoint {
            host: "127.0.0.1:9".into(),
            scheme: None,
            is_mirror: false,
        };
        assert_eq!(c.schemes_for(&local), vec!["https", "http"]);
    }
}
