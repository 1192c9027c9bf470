//! Hostile registries and layers: each case is a clear error and leaves the store unchanged.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::json;
use skiff_runtime::image::{self, Error, PullOptions, Reference, Store};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder};
use skiff_tests::registry::server::{Route, Server};

fn opts(dir: &Path) -> PullOptions {
    PullOptions {
        credentials_file: Some(dir.join("no-docker-config.json")),
        retries: 2,
        ..PullOptions::default()
    }
}

/// Every path in the store except lock files (which are created on demand and hold no data).
fn snapshot(store: &Store) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![store.root().to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(store.root()).unwrap().to_path_buf();
            if rel.starts_with("locks") {
                continue;
            }
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

struct Case {
    _dir: tempfile::TempDir,
    work: PathBuf,
    server: Server,
    store: Store,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_path_buf();
        let store = Store::open(work.join("store")).unwrap();
        Self {
            _dir: dir,
            work,
            server: Server::start(),
            store,
        }
    }

    fn name(&self, repo: &str) -> String {
        format!("{}/{repo}:v1", self.server.host())
    }

    /// Pull and expect failure with the store as it was and nothing listed.
    fn fails(&self, repo: &str, o: &PullOptions) -> Error {
        let before = snapshot(&self.store);
        let err = image::pull(&self.store, &Reference::parse(&self.name(repo)).unwrap(), o)
            .expect_err("pull of a hostile image must fail");
        assert_eq!(
            snapshot(&self.store),
            before,
            "store changed by a failed pull ({err})"
        );
        assert!(self.store.list().unwrap().is_empty());
        err
    }
}

fn one_layer(tar: Vec<u8>) -> Image {
    Image::new(vec![Layer::new(tar, Compression::Gzip)], "amd64", json!({}))
}

#[test]
fn blob_with_wrong_digest() {
    let c = Case::new();
    let mut l = LayerBuilder::new();
    l.file("f", 0o644, b"genuine");
    let img = one_layer(l.finish());
    c.server.serve_image("bad", "v1", &img);
    let mut evil = LayerBuilder::new();
    evil.file("f", 0o644, b"evil!!!");
    let evil = Layer::new(evil.finish(), Compression::Gzip);
    assert_eq!(evil.blob.len(), img.layers[0].blob.len());
    c.server.route(
        &format!("/v2/bad/blobs/{}", img.layers[0].digest()),
        Route::ok("application/octet-stream", evil.blob.clone()),
    );
    let err = c.fails("bad", &opts(&c.work));
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&img.layers[0].digest()), "{err}");
}

#[test]
fn config_with_wrong_digest_and_manifest_digest_pinning() {
    let c = Case::new();
    let img = one_layer(LayerBuilder::new().finish());
    c.server.serve_image("cfg", "v1", &img);
    let mut cfg = img.config.clone();
    let last = cfg.len() - 1;
    cfg[last] = b' ';
    c.server.route(
        &format!(
            "/v2/cfg/blobs/{}",
            skiff_tests::registry::build::sha256(&img.config)
        ),
        Route::ok("application/octet-stream", cfg),
    );
    let err = c.fails("cfg", &opts(&c.work));
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");

    // A reference pinned by digest refuses a manifest with another digest.
    let pinned = format!("{}/cfg@sha256:{}", c.server.host(), "0".repeat(64));
    c.server.route(
        &format!("/v2/cfg/manifests/sha256:{}", "0".repeat(64)),
        Route::ok(
            "application/vnd.oci.image.manifest.v1+json",
            img.manifest.clone(),
        ),
    );
    let err = image::pull(
        &c.store,
        &Reference::parse(&pinned).unwrap(),
        &opts(&c.work),
    )
    .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[test]
fn oversized_manifest() {
    let c = Case::new();
    let mut huge = br#"{"schemaVersion":2,"layers":[],"pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 5 << 20));
    huge.extend_from_slice(b"\"}");
    c.server.route(
        "/v2/huge/manifests/v1",
        Route::ok("application/vnd.oci.image.manifest.v1+json", huge),
    );
    let err = c.fails("huge", &opts(&c.work));
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 4 << 20),
        "{err}"
    );
}

#[test]
fn layer_escapes_are_refused() {
    let c = Case::new();
    let outside = c.work.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            {
                let mut l = LayerBuilder::new();
                l.file("../../../../outside/pwned", 0o644, b"x");
                l.finish()
            },
            "'..'",
        ),
        (
            "absolute",
            {
                let mut l = LayerBuilder::new();
                l.file("/etc/skiff-pwned", 0o644, b"x");
                l.finish()
            },
            "absolute",
        ),
        (
            "symlink-out",
            {
                let mut l = LayerBuilder::new();
                l.dir("a", 0o755).symlink("a/up", "../../outside");
                l.finish()
            },
            "symlink target",
        ),
        (
            "hardlink-out",
            {
                let mut l = LayerBuilder::new();
                l.hardlink("h", "../../../../etc/passwd");
                l.finish()
            },
            "hardlink target",
        ),
        (
            "hardlink-abs",
            {
                let mut l = LayerBuilder::new();
                l.hardlink("h", "/etc/passwd");
                l.finish()
            },
            "hardlink target",
        ),
        (
            "hardlink-missing",
            {
                let mut l = LayerBuilder::new();
                l.hardlink("h", "etc/passwd");
                l.finish()
            },
            "of this layer",
        ),
        (
            "symlink-parent",
            {
                let mut l = LayerBuilder::new();
                l.symlink("esc", outside.to_str().unwrap())
                    .file("esc/pwned", 0o644, b"x");
                l.finish()
            },
            "is a symlink",
        ),
        (
            "symlink-parent-deep",
            {
                let mut l = LayerBuilder::new();
                l.dir("d", 0o755)
                    .symlink("d/l", "/")
                    .file("d/l/etc/pwned", 0o644, b"x");
                l.finish()
            },
            "is a symlink",
        ),
    ];
    for (repo, tar, why) in cases {
        c.server.serve_image(repo, "v1", &one_layer(tar));
        let err = c.fails(repo, &opts(&c.work));
        assert!(matches!(err, Error::UnsafeEntry { .. }), "{repo}: {err}");
        assert!(err.to_string().contains(why), "{repo}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!Path::new("/etc/skiff-pwned").exists());
}

#[test]
fn gzip_bomb_stops_at_the_size_limit() {
    let c = Case::new();
    let mut l = LayerBuilder::new();
    l.file("zeros", 0o644, &vec![0u8; 16 << 20]);
    let img = one_layer(l.finish());
    assert!(img.layers[0].blob.len() < 256 << 10);
    c.server.serve_image("bomb", "v1", &img);
    let mut o = opts(&c.work);
    o.max_layer_bytes = 4 << 20;
    let err = c.fails("bomb", &o);
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == 4 << 20),
        "{err}"
    );
}

#[test]
fn truncated_layer_is_refused_and_missing_end_blocks_are_not() {
    let c = Case::new();
    let mut l = LayerBuilder::new();
    l.file("a", 0o644, &[b'a'; 3000]).file("b", 0o644, b"b");
    let tar = l.finish();
    // Cut inside the data of "a": a truncated entry.
    let truncated = tar[..512 + 1000].to_vec();
    c.server.serve_image("trunc", "v1", &one_layer(truncated));
    let err = c.fails("trunc", &opts(&c.work));
    assert!(matches!(err, Error::Tar { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");

    // Clean end after the last entry, without the two zero blocks (umoci 0.4.7 does this).
    let no_eoa = tar[..tar.len() - 1024].to_vec();
    c.server.serve_image("noeoa", "v1", &one_layer(no_eoa));
    let rec = image::pull(
        &c.store,
        &Reference::parse(&c.name("noeoa")).unwrap(),
        &opts(&c.work),
    )
    .unwrap();
    let dir = image::rootfs::layer_dirs(&c.store, &rec).unwrap().remove(0);
    assert_eq!(std::fs::read(dir.join("b")).unwrap(), b"b");
}

#[test]
fn dropped_connection_resumes_with_range() {
    let c = Case::new();
    let mut l = LayerBuilder::new();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    l.file("big", 0o644, &data);
    let img = one_layer(l.finish());
    c.server.serve_image("drop", "v1", &img);
    let path = format!("/v2/drop/blobs/{}", img.layers[0].digest());
    let blob = img.layers[0].blob.clone();
    let mut r = Route::ok("application/octet-stream", blob.clone());
    r.drops = 2;
    r.drop_after = blob.len() / 3;
    c.server.route(&path, r);
    let rec = image::pull(
        &c.store,
        &Reference::parse(&c.name("drop")).unwrap(),
        &opts(&c.work),
    )
    .unwrap();
    let ranges = c.server.ranges(&path);
    assert_eq!(
        ranges,
        vec![0, blob.len() / 3, 2 * (blob.len() / 3)],
        "resumed where it broke"
    );
    let dir = image::rootfs::layer_dirs(&c.store, &rec).unwrap().remove(0);
    assert_eq!(std::fs::read(dir.join("big")).unwrap(), data);
}

#[test]
fn interrupted_pull_resumes_in_the_next_pull() {
    let c = Case::new();
    let mut l = LayerBuilder::new();
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 13 % 241) as u8).collect();
    l.file("big", 0o644, &data);
    let img = one_layer(l.finish());
    c.server.serve_image("resume", "v1", &img);
    let path = format!("/v2/resume/blobs/{}", img.layers[0].digest());
    let blob = img.layers[0].blob.clone();
    let mut r = Route::ok("application/octet-stream", blob.clone());
    r.drops = 1;
    r.drop_after = blob.len() / 2;
    c.server.route(&path, r);
    let mut o = opts(&c.work);
    o.retries = 0;
    let err = image::pull(&c.store, &Reference::parse(&c.name("resume")).unwrap(), &o).unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(
        c.store.list().unwrap().is_empty(),
        "a half-pulled image is never listed"
    );
    image::pull(&c.store, &Reference::parse(&c.name("resume")).unwrap(), &o).unwrap();
    assert_eq!(c.server.ranges(&path), vec![0, blob.len() / 2]);
    assert_eq!(c.store.list().unwrap().len(), 1);
}

#[test]
fn error_statuses_are_clear() {
    let c = Case::new();
    let err = c.fails("missing", &opts(&c.work));
    assert!(matches!(err, Error::Registry { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("NOT_FOUND"), "{err}");

    c.server.route(
        "/v2/private/manifests/v1",
        Route::status(401, &[], "go away"),
    );
    let err = c.fails("private", &opts(&c.work));
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(err.to_string().contains("WWW-Authenticate"), "{err}");

    c.server.route(
        "/v2/basic/manifests/v1",
        Route::status(
            401,
            &[("WWW-Authenticate", "Basic realm=\"x\"")],
            "who are you",
        ),
    );
    let err = c.fails("basic", &opts(&c.work));
    assert!(err.to_string().contains("no credentials"), "{err}");

    c.server.route(
        "/v2/broken/manifests/v1",
        Route::status(500, &[], "internal trouble"),
    );
    let err = c.fails("broken", &opts(&c.work));
    assert!(matches!(err, Error::Registry { status: 500, .. }), "{err}");
    assert!(err.to_string().contains("internal trouble"), "{err}");

    // A layer blob that 404s, after manifest and config succeeded.
    let img = one_layer(LayerBuilder::new().finish());
    c.server.serve_image("noblob", "v1", &img);
    c.server.route(
        &format!("/v2/noblob/blobs/{}", img.layers[0].digest()),
        Route::status(404, &[], "gone"),
    );
    let err = c.fails("noblob", &opts(&c.work));
    assert!(matches!(err, Error::Registry { status: 404, .. }), "{err}");
}
