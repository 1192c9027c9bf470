//! Registries that want credentials: Basic auth over TLS with a self-signed CA, and the
//! bearer-token challenge with a token server.

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
