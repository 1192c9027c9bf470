//! A real registry for the image tests: Debian's `docker-registry` (CNCF distribution 2.8)
//! on a free loopback port with its storage in a temp dir, plus image builders and a small
//! test-local HTTP server for the hostile cases.

pub mod auth;
pub mod build;
pub mod server;
pub mod tree;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Optional registry features.
#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// PEM certificate and key: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// An htpasswd file (bcrypt): require Basic auth.
    pub htpasswd: Option<PathBuf>,
    /// Bearer-token auth: realm URL, service, issuer, and the CA bundle that signs tokens.
    pub token: Option<TokenAuth>,
    /// Listen on `[::1]` instead of 127.0.0.1.
    pub ipv6: bool,
    /// Serve the storage of another registry (skopeo cannot push to IPv6 literals).
    pub storage_of: Option<PathBuf>,
}

#[derive(Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_cert_bundle: PathBuf,
}

pub struct Registry {
    child: Child,
    pub port: u16,
    ipv6: bool,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Registry {
    pub fn start() -> Result<Self> {
        Self::start_with(RegistryOptions::default())
    }

    pub fn start_with(opts: RegistryOptions) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: \"{}:{port}\"\n",
            opts.storage_of.clone().unwrap_or_else(|| dir.path().join("data")).display(),
            if opts.ipv6 { "[::1]" } else { "127.0.0.1" }
        );
        if let Some((cert, key)) = &opts.tls {
            cfg += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some(h) = &opts.htpasswd {
            cfg += &format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                h.display()
            );
        }
        if let Some(t) = &opts.token {
            cfg += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.root_cert_bundle.display()
            );
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg)?;
        let log = dir.path().join("registry.log");
        let logf = std::fs::File::create(&log)?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .stdin(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        let reg = Self {
            child,
            port,
            ipv6: opts.ipv6,
            dir,
            log,
        };
        reg.wait_ready()?;
        Ok(reg)
    }

    /// Where the registry keeps its data.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:PORT` (or `[::1]:PORT`)
    pub fn host(&self) -> String {
        if self.ipv6 {
            format!("[::1]:{}", self.port)
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }

    /// The registry's log (with one access-log line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many GET requests the registry answered for a blob.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(self.host()) {
                // Any answer (even a TLS alert to plain HTTP) means it is listening.
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut b = [0u8; 1];
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                if s.read(&mut b).is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("registry did not start; log:\n{}", self.log())
    }

    /// Push an OCI layout tag with skopeo (`--all` copies whole indexes).
    pub fn push(&self, layout: &Path, tag: &str, dest: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["--preserve-digests"];
        args.extend_from_slice(extra);
        self.push_converted(layout, tag, dest, &args)
    }

    /// Push letting skopeo convert (e.g. `--format v2s2` for Docker schema2 manifests).
    pub fn push_converted(
        &self,
        layout: &Path,
        tag: &str,
        dest: &str,
        extra: &[&str],
    ) -> Result<()> {
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .args(extra)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{dest}", self.host()))
            .output()
            .context("running skopeo (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a command, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
