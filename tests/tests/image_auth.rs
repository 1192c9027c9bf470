//! Registries that want credentials: Basic auth over TLS with a self-signed CA, and the
//! bearer-token challenge with a token server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::json;
use skiff_runtime::image::{self, Credentials, Error, HostsConfig, PullOptions, Reference, Store};
use skiff_tests::registry::auth::{htpasswd_line, make_certs, TokenServer, REFRESH_TOKEN};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder, Layout};
use skiff_tests::registry::{Registry, RegistryOptions, TokenAuth};

fn image() -> Image {
    let mut l = LayerBuilder::new();
    l.file("secret", 0o600, b"for members only");
    Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        json!({}),
    )
}

fn opts(dir: &Path) -> PullOptions {
    PullOptions {
        credentials_file: Some(dir.join("no-docker-config.json")),
        retries: 0,
        ..PullOptions::default()
    }
}

fn basic(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials::Basic {
        username: user.into(),
        password: password.into(),
    })
}

#[test]
fn basic_auth_over_tls_with_a_private_ca() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path()).unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line("alice", "s3cret")).unwrap();
    let reg = Registry::start_with(RegistryOptions {
        tls: Some((certs.cert.clone(), certs.key.clone())),
        htpasswd: Some(htpasswd),
        token: None,
        ..Default::default()
    })
    .unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &image()).unwrap();
    reg.push(
        &layout.dir,
        "v1",
        "private:v1",
        &["--dest-creds", "alice:s3cret"],
    )
    .unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let reference = Reference::parse(&format!("{}/private:v1", reg.host())).unwrap();

    // Unknown CA: refused, and the TLS reason is in the error.
    let mut o = opts(work.path());
    o.credentials = basic("alice", "s3cret");
    let err = image::pull(&store, &reference, &o).unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    let cfg = work.path().join("registries.toml");
    std::fs::write(
        &cfg,
        format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\n",
            reg.host(),
            certs.ca.display()
        ),
    )
    .unwrap();
    let hosts = HostsConfig::load(&cfg).unwrap();

    let mut o = opts(work.path());
    o.hosts = hosts.clone();
    let err = image::pull(&store, &reference, &o).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("no credentials"), "{err}");

    o.credentials = basic("alice", "wrong");
    let err = image::pull(&store, &reference, &o).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());

    // Credentials from the caller (as the CRI passes them).
    o.credentials = basic("alice", "s3cret");
    let rec = image::pull(&store, &reference, &o).unwrap();
    let dir = image::rootfs::layer_dirs(&store, &rec).unwrap().remove(0);
    assert_eq!(
        std::fs::read(dir.join("secret")).unwrap(),
        b"for members only"
    );

    // Credentials from a Docker config file.
    store.remove(&rec.name).unwrap();
    let docker_cfg = work.path().join("config.json");
    std::fs::write(
        &docker_cfg,
        json!({"auths": {reg.host(): {"auth": "YWxpY2U6czNjcmV0"}}}).to_string(),
    )
    .unwrap();
    let o = PullOptions {
        hosts,
        credentials_file: Some(docker_cfg),
        ..opts(work.path())
    };
    image::pull(&store, &reference, &o).unwrap();

    // A registry configured insecure is reached over TLS without verifying its certificate.
    store.remove(&reference.to_string()).unwrap();
    std::fs::write(
        &cfg,
        format!("[registries.\"{}\"]\ninsecure = true\n", reg.host()),
    )
    .unwrap();
    let o = PullOptions {
        hosts: HostsConfig::load(&cfg).unwrap(),
        credentials: basic("alice", "s3cret"),
        ..opts(work.path())
    };
    image::pull(&store, &reference, &o).unwrap();

    // A CA file that cannot be read is a configuration error naming it.
    std::fs::write(
        &cfg,
        format!(
            "[registries.\"{}\"]\nca_file = \"/nonexistent/ca.pem\"\n",
            reg.host()
        ),
    )
    .unwrap();
    let o = PullOptions {
        hosts: HostsConfig::load(&cfg).unwrap(),
        ..opts(work.path())
    };
    let err = image::pull(&store, &reference, &o).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn bearer_token_challenge() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path()).unwrap();
    let tokens = TokenServer::start(
        &certs,
        "skiff-test-issuer",
        "skiff-test-registry",
        "bob",
        "hunter2",
    )
    .unwrap();
    let reg = Registry::start_with(RegistryOptions {
        tls: None,
        htpasswd: None,
        token: Some(TokenAuth {
            realm: tokens.realm(),
            service: "skiff-test-registry".into(),
            issuer: "skiff-test-issuer".into(),
            root_cert_bundle: certs.ca.clone(),
        }),
        ..Default::default()
    })
    .unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &image()).unwrap();
    reg.push(
        &layout.dir,
        "v1",
        "team/app:v1",
        &["--dest-creds", "bob:hunter2"],
    )
    .unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let reference = Reference::parse(&format!("{}/team/app:v1", reg.host())).unwrap();
    let err = image::pull(&store, &reference, &opts(work.path())).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("token server answered HTTP 401"),
        "{err}"
    );

    let before = tokens.hits.load(std::sync::atomic::Ordering::SeqCst);
    let mut o = opts(work.path());
    o.credentials = basic("bob", "hunter2");
    let rec = image::pull(&store, &reference, &o).unwrap();
    assert!(tokens.hits.load(std::sync::atomic::Ordering::SeqCst) > before);
    let dir = image::rootfs::layer_dirs(&store, &rec).unwrap().remove(0);
    assert_eq!(
        std::fs::read(dir.join("secret")).unwrap(),
        b"for members only"
    );

    // An OAuth2 identity token (CRI AuthConfig.identity_token) is traded at the realm.
    store.remove(&rec.name).unwrap();
    o.credentials = Some(Credentials::IdentityToken(REFRESH_TOKEN.into()));
    image::pull(&store, &reference, &o).unwrap();
    o.credentials = Some(Credentials::IdentityToken("stale".into()));
    store.remove(&rec.name).unwrap();
    let err = image::pull(&store, &reference, &o).unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
}

/// `docker-credential-<name>` helpers as shell scripts in their own PATH directory: each
/// checks the server URL it is given on stdin and answers with the protocol's JSON, or says it
/// has nothing, or fails.
struct Helpers {
    dir: tempfile::TempDir,
}

impl Helpers {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn answer(&self, name: &str, server: &str, username: &str, secret: &str) -> &Self {
        let body = format!(
            "[ \"$1\" = get ] || exit 3\nread -r url\n[ \"$url\" = '{server}' ] || {{ echo \"unexpected server $url\" >&2; exit 4; }}\nprintf '%s' '{}'\n",
            json!({"ServerURL": server, "Username": username, "Secret": secret})
        );
        self.script(name, &body)
    }

    fn script(&self, name: &str, body: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

/// `skiff pull` with `$DOCKER_CONFIG/config.json` set to `config` and the helpers on PATH.
fn cli_pull(
    work: &Path,
    helpers: &Helpers,
    config: serde_json::Value,
    registries: &Path,
    name: &str,
) -> std::process::Output {
    let docker = work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    let store = work.join("cli-store");
    let _ = std::fs::remove_dir_all(&store);
    std::process::Command::new(env!("CARGO_BIN_EXE_skiff-image"))
        .args(["pull", "--quiet", name, "--image-root"])
        .arg(&store)
        .arg("--registries-config")
        .arg(registries)
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", helpers.path_var())
        .output()
        .expect("run skiff-image")
}

fn assert_pulled(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn assert_refused(out: &std::process::Output, what: &str, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: pulled");
    for n in needles {
        assert!(err.contains(n), "{what}: {n:?} not in {err}");
    }
}

#[test]
fn credential_helpers_over_creds_store_over_auths() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path()).unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line("carol", "pa55")).unwrap();
    let reg = Registry::start_with(RegistryOptions {
        tls: Some((certs.cert.clone(), certs.key.clone())),
        htpasswd: Some(htpasswd),
        ..Default::default()
    })
    .unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &image()).unwrap();
    reg.push(
        &layout.dir,
        "v1",
        "helped:v1",
        &["--dest-creds", "carol:pa55"],
    )
    .unwrap();
    let registries = work.path().join("registries.toml");
    std::fs::write(
        &registries,
        format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\n",
            reg.host(),
            certs.ca.display()
        ),
    )
    .unwrap();
    let host = reg.host();
    let name = format!("{host}/helped:v1");
    let wrong_auths = json!({host.clone(): {"auth": "Y2Fyb2w6d3Jvbmc="}}); // carol:wrong
    let right_auths = json!({host.clone(): {"auth": "Y2Fyb2w6cGE1NQ=="}}); // carol:pa55
    let h = Helpers::new();
    h.answer("skiff-right", &host, "carol", "pa55")
        .answer("skiff-wrong", &host, "carol", "nope")
        .script(
            "skiff-none",
            "read -r url\necho 'credentials not found in native keychain'\nexit 1\n",
        )
        .script("skiff-broken", "echo 'keyring is locked' >&2\nexit 1\n");
    let pull = |config: serde_json::Value| cli_pull(work.path(), &h, config, &registries, &name);

    // The per-registry helper wins over the store and the file.
    let out = pull(json!({
        "credHelpers": {host.clone(): "skiff-right"},
        "credsStore": "skiff-wrong",
        "auths": wrong_auths,
    }));
    assert_pulled(&out, "credHelpers");
    // The store wins over `auths`.
    let out = pull(json!({"credsStore": "skiff-right", "auths": wrong_auths}));
    assert_pulled(&out, "credsStore");
    let out = pull(json!({"credsStore": "skiff-wrong", "auths": right_auths}));
    assert_refused(
        &out,
        "credsStore with wrong credentials",
        &["authentication failed"],
    );
    // A helper with nothing for the registry falls through to `auths`.
    let out = pull(json!({"credsStore": "skiff-none", "auths": right_auths}));
    assert_pulled(&out, "credsStore without an entry");
    // A helper for another registry is not asked.
    let out = pull(json!({"credHelpers": {"other.example": "skiff-broken"}, "auths": right_auths}));
    assert_pulled(&out, "helper of another registry");
    // A failing or missing helper is an error naming it.
    let out = pull(json!({"credHelpers": {host.clone(): "skiff-broken"}, "auths": right_auths}));
    assert_refused(
        &out,
        "failing helper",
        &["docker-credential-skiff-broken", "keyring is locked"],
    );
    let out = pull(json!({"credsStore": "skiff-absent"}));
    assert_refused(
        &out,
        "missing helper",
        &["docker-credential-skiff-absent", "not found on PATH"],
    );
}

#[test]
fn credential_helper_identity_token_for_a_bearer_realm() {
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path()).unwrap();
    let tokens = TokenServer::start(
        &certs,
        "skiff-test-issuer",
        "skiff-test-registry",
        "bob",
        "hunter2",
    )
    .unwrap();
    let reg = Registry::start_with(RegistryOptions {
        token: Some(TokenAuth {
            realm: tokens.realm(),
            service: "skiff-test-registry".into(),
            issuer: "skiff-test-issuer".into(),
            root_cert_bundle: certs.ca.clone(),
        }),
        ..Default::default()
    })
    .unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &image()).unwrap();
    reg.push(
        &layout.dir,
        "v1",
        "team/app:v1",
        &["--dest-creds", "bob:hunter2"],
    )
    .unwrap();
    let host = reg.host();
    let h = Helpers::new();
    // `<token>` as the username: the secret is an OAuth2 refresh token.
    h.answer("skiff-oauth", &host, "<token>", REFRESH_TOKEN);
    let out = cli_pull(
        work.path(),
        &h,
        json!({"credHelpers": {host.clone(): "skiff-oauth"}}),
        Path::new("/dev/null"),
        &format!("{host}/team/app:v1"),
    );
    assert_pulled(&out, "identity token from a helper");
}
