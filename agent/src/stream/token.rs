//! Single-use, expiring tokens naming a pending streaming request: the CRI `Exec`/`Attach`/
//! `PortForward` calls file a request and hand back a URL with its token; the first connection to
//! that URL within the time limit takes the request, every later one is refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

/// How long a token stays valid unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Pending requests kept at most; more are refused rather than grow without bound.
pub const MAX_PENDING: usize = 4096;

/// A command to run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An attachment to a container's main process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Connections into a pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    /// Ports the client may reach; empty allows any.
    pub ports: Vec<u16>,
}

/// A pending streaming request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Request {
    /// The URL path segment of this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

/// Why a token does not open a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("streaming token is unknown or already used")]
    Unknown,
    #[error("streaming token has expired")]
    Expired,
    #[error("streaming token is for {actual}, not {wanted}")]
    WrongKind {
        wanted: &'static str,
        actual: &'static str,
    },
    #[error("too many pending streaming requests ({0})")]
    TooMany(usize),
    #[error("no randomness for a streaming token: {0}")]
    Random(String),
}

/// The table of pending requests.
pub struct Tokens {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, Request)>>,
}

impl Tokens {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Files `req` and returns its token.
    pub fn issue(&self, req: Request) -> Result<String, TokenError> {
        let mut raw = [0u8; 18];
        getrandom::getrandom(&mut raw).map_err(|e| TokenError::Random(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, (expires, _)| *expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(TokenError::TooMany(pending.len()));
        }
        pending.insert(token.clone(), (now + self.ttl, req));
        Ok(token)
    }

    /// Takes the request filed under `token` if it is still valid and of kind `wanted`. The token is
    /// spent whatever the outcome.
    pub fn redeem(&self, token: &str, wanted: &'static str) -> Result<Request, TokenError> {
        let (expires, req) = self.lock().remove(token).ok_or(TokenError::Unknown)?;
        if Instant::now() >= expires {
            return Err(TokenError::Expired);
        }
        if req.kind() != wanted {
            return Err(TokenError::WrongKind {
                wanted,
                actual: req.kind(),
            });
        }
        Ok(req)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Request)>> {
        // The map stays consistent even if a holder panicked: every update is a single call.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> Request {
        Request::Exec(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
    }

    #[test]
    fn single_use() {
        let t = Tokens::new(DEFAULT_TTL);
        let token = t.issue(exec()).unwrap();
        assert!(token.len() >= 24);
        assert_eq!(t.redeem(&token, "exec"), Ok(exec()));
        assert_eq!(t.redeem(&token, "exec"), Err(TokenError::Unknown));
    }

    #[test]
    fn expiry_and_kind() {
        let t = Tokens::new(Duration::from_millis(20));
        let token = t.issue(exec()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(t.redeem(&token, "exec"), Err(TokenError::Expired));
        let t = Tokens::new(DEFAULT_TTL);
        let token = t.issue(exec()).unwrap();
        assert!(matches!(
            t.redeem(&token, "attach"),
            Err(TokenError::WrongKind { .. })
        ));
        assert_ne!(t.issue(exec()).unwrap(), t.issue(exec()).unwrap());
    }
}
