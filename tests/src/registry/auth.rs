//! Test credentials: a self-signed CA and a server certificate for 127.0.0.1 (openssl),
//! htpasswd lines (bcrypt), and a token server for the registry's bearer-token auth.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::json;

use super::run;

pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and a certificate for `127.0.0.1`/`localhost` signed by it, in `dir`.
pub fn make_certs(dir: &Path) -> Result<Certs> {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=skiff test CA",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")))?;
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))?;
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")))?;
    Ok(Certs {
        ca: p("ca.pem"),
        cert: p("server.pem"),
        key: p("server.key"),
    })
}

/// One htpasswd line with a bcrypt hash (the only kind distribution accepts).
pub fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 5).expect("bcrypt"))
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// The refresh token the token server accepts in OAuth2 `refresh_token` grants.
pub const REFRESH_TOKEN: &str = "skiff-test-refresh-token";

/// A token server: `GET /token?service=..&scope=..` with Basic `user:password` answers a
/// JWT (RS256, signed by openssl with the CA key, the CA certificate in `x5c`) granting what
/// was asked for. Anything else gets 401.
pub struct TokenServer {
    pub port: u16,
    pub hits: Arc<AtomicUsize>,
}

impl TokenServer {
    pub fn start(
        certs: &Certs,
        issuer: &str,
        service: &str,
        user: &str,
        password: &str,
    ) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let pem = std::fs::read_to_string(&certs.ca)?;
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let hits = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(TokenState {
            key: certs.key_for_tokens(),
            x5c: der_b64,
            issuer: issuer.to_string(),
            service: service.to_string(),
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
        });
        let h = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let st = state.clone();
                std::thread::spawn(move || {
                    let _ = st.serve(conn);
                });
            }
        });
        Ok(Self { port, hits })
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Certs {
    fn key_for_tokens(&self) -> PathBuf {
        self.ca.with_file_name("ca.key")
    }
}

struct TokenState {
    key: PathBuf,
    x5c: String,
    issuer: String,
    service: String,
    basic: String,
}

impl TokenState {
    fn serve(&self, conn: std::net::TcpStream) -> Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut authorized = false;
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") && v.trim() == self.basic {
                    authorized = true;
                }
                if k.eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        // OAuth2 refresh-token grants arrive as a POSTed form.
        let mut form = vec![0u8; content_length.min(1 << 16)];
        std::io::Read::read_exact(&mut reader, &mut form)?;
        let form = String::from_utf8_lossy(&form).into_owned();
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let params: Vec<(String, String)> = query
            .split('&')
            .chain(form.split('&'))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), percent_decode(v)))
            .collect();
        let has = |key: &str, value: &str| params.iter().any(|(k, v)| k == key && v == value);
        if line.starts_with("POST") {
            authorized = has("grant_type", "refresh_token") && has("refresh_token", REFRESH_TOKEN);
        }
        let mut out = conn;
        if !authorized {
            let body = r#"{"details":"bad credentials"}"#;
            write!(out, "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
            return Ok(());
        }
        let mut access = Vec::new();
        for (k, scope) in &params {
            if k == "scope" {
                let parts: Vec<&str> = scope.split(':').collect();
                if parts.len() == 3 {
                    access.push(json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                }
            }
        }
        let token = self.sign(access)?;
        let body = if line.starts_with("POST") {
            json!({"access_token": token, "expires_in": 300})
        } else {
            json!({"token": token, "expires_in": 300})
        }
        .to_string();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        Ok(())
    }

    fn sign(&self, access: Vec<serde_json::Value>) -> Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": self.issuer, "sub": "skiff", "aud": self.service,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", rand_id()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("openssl dgst")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(signing_input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("openssl dgst failed");
        }
        Ok(format!("{signing_input}.{}", b64url(&out.stdout)))
    }
}

fn rand_id() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
