//! Pulls from a real local registry (Debian's docker-registry), images pushed with skopeo.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use skiff_runtime::image::{self, rootfs, Platform, PullOptions, Reference, Store};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder, Layout};
use skiff_tests::registry::{run, tree, Registry};

fn opts(dir: &Path) -> PullOptions {
    PullOptions {
        credentials_file: Some(dir.join("no-docker-config.json")),
        ..PullOptions::default()
    }
}

fn pull(store: &Store, name: &str, o: &PullOptions) -> image::ImageRecord {
    image::pull(store, &Reference::parse(name).unwrap(), o)
        .unwrap_or_else(|e| panic!("pull {name}: {e}"))
}

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

#[test]
fn busybox_built_with_umoci_matches_its_source_tree() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (layout, src) = (work.path().join("layout"), work.path().join("src"));
    run(Command::new(images_dir().join("busybox.sh"))
        .arg(&layout)
        .arg(&src)
        .arg("v1"))
    .unwrap();
    reg.push(&layout, "v1", "busybox:v1", &[]).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let rec = pull(
        &store,
        &format!("{}/busybox:v1", reg.host()),
        &opts(work.path()),
    );
    assert_eq!(rec.name, format!("{}/busybox:v1", reg.host()));
    assert_eq!(rec.layers.len(), 1);

    let dirs = rootfs::layer_dirs(&store, &rec).unwrap();
    let differences = tree::diff(&src, &dirs[0]);
    assert!(
        differences.is_empty(),
        "pulled tree differs:\n{}",
        differences.join("\n")
    );
    let m = std::fs::metadata(dirs[0].join("bin/suid-tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(
        tree::xattrs(&dirs[0].join("etc/passwd"))
            .get("user.skiff.test")
            .map(|v| &v[..]),
        Some(&b"layered"[..])
    );

    let cfg = rootfs::run_config(&store, &rec).unwrap();
    assert_eq!(cfg.entrypoint, vec!["/bin/sh"]);
    assert_eq!(cfg.cmd, vec!["-c", "echo hi"]);
    assert!(cfg.env.contains(&"PATH=/bin:/usr/sbin".to_string()));
    assert_eq!(cfg.working_dir.as_deref(), Some("/home/user"));
    assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(cfg.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(cfg.volumes, vec!["/data"]);

    // The record is found by any spelling and listed once; a second pull reuses everything.
    assert_eq!(store.inspect(&rec.name).unwrap(), rec);
    let again = pull(
        &store,
        &format!("{}/busybox:v1", reg.host()),
        &opts(work.path()),
    );
    assert_eq!(again.manifest_digest, rec.manifest_digest);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(reg.blob_gets(&rec.layers[0].digest.to_string()), 1);
}

fn whiteout_image() -> Image {
    let mut base = LayerBuilder::new();
    base.dir("etc", 0o755)
        .file("etc/a", 0o644, b"a")
        .file("etc/b", 0o644, b"b")
        .dir("data", 0o755)
        .file("data/x", 0o644, b"x")
        .dir("data/sub", 0o755)
        .file("data/sub/y", 0o644, b"y")
        .file("keep", 0o600, b"keep");
    let mut top = LayerBuilder::new();
    top.whiteout("etc", "a")
        .dir("data", 0o750)
        .opaque("data")
        .file("data/new", 0o644, b"new")
        .symlink("link", "etc/b");
    Image::new(
        vec![
            Layer::new(base.finish(), Compression::Gzip),
            Layer::new(top.finish(), Compression::Gzip),
        ],
        "amd64",
        json!({"Cmd": ["/bin/sh"]}),
    )
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &whiteout_image()).unwrap();
    reg.push(&layout.dir, "v1", "layered:v1", &[]).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let rec = pull(
        &store,
        &format!("{}/layered:v1", reg.host()),
        &opts(work.path()),
    );
    let dirs = rootfs::layer_dirs(&store, &rec).unwrap();
    assert_eq!(dirs.len(), 2);
    let wh = std::fs::symlink_metadata(dirs[1].join("etc/a")).unwrap();
    assert!(wh.file_type().is_char_device(), "whiteout is a char device");
    assert_eq!(wh.rdev(), 0);
    assert!(!dirs[1].join("etc/.wh.a").exists());
    assert!(!dirs[1].join("data/.wh..wh..opq").exists());
    assert_eq!(
        tree::xattrs(&dirs[1].join("data"))
            .get("trusted.overlay.opaque")
            .map(|v| &v[..]),
        Some(&b"y"[..])
    );

    // The kernel agrees: an overlay of the two layers hides what the top one deleted.
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", rootfs::lowerdir_option(&dirs)))
        .arg(&mnt))
    .unwrap();
    let seen = (
        mnt.join("etc/a").exists(),
        mnt.join("etc/b").exists(),
        mnt.join("data/x").exists(),
        mnt.join("data/sub").exists(),
        std::fs::read(mnt.join("data/new")).ok(),
        std::fs::read(mnt.join("link")).ok(),
        mnt.join("keep").exists(),
    );
    run(Command::new("umount").arg(&mnt)).unwrap();
    assert_eq!(
        seen,
        (
            false,
            true,
            false,
            false,
            Some(b"new".to_vec()),
            Some(b"b".to_vec()),
            true
        )
    );
}

#[test]
fn index_selects_the_platform() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let image_for = |arch: &str| {
        let mut l = LayerBuilder::new();
        l.file("arch", 0o644, arch.as_bytes());
        Image::new(
            vec![Layer::new(l.finish(), Compression::Gzip)],
            arch,
            json!({}),
        )
    };
    let (amd, arm) = (image_for("amd64"), image_for("arm64"));
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_index("multi", &[&amd, &arm]).unwrap();
    reg.push(&layout.dir, "multi", "multi:v1", &[]).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let name = format!("{}/multi:v1", reg.host());
    let host = pull(&store, &name, &opts(work.path()));
    assert!(host.index_digest.is_some());
    let want = Platform::host().architecture;
    assert_eq!(
        std::fs::read_to_string(rootfs::layer_dirs(&store, &host).unwrap()[0].join("arch"))
            .unwrap(),
        want
    );

    let mut o = opts(work.path());
    o.platform = Some(Platform::parse("linux/arm64").unwrap());
    let arm_rec = pull(&store, &name, &o);
    assert_eq!(arm_rec.platform.architecture, "arm64");
    assert_eq!(
        std::fs::read_to_string(rootfs::layer_dirs(&store, &arm_rec).unwrap()[0].join("arch"))
            .unwrap(),
        "arm64"
    );

    o.platform = Some(Platform::parse("linux/s390x").unwrap());
    let err = image::pull(&store, &Reference::parse(&name).unwrap(), &o).unwrap_err();
    assert!(
        matches!(err, image::Error::NoMatchingPlatform { .. }),
        "{err}"
    );
}

#[test]
fn zstd_and_uncompressed_layers() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut a = LayerBuilder::new();
    a.dir("z", 0o755)
        .file("z/zstd", 0o644, &vec![b'z'; 100_000]);
    let mut b = LayerBuilder::new();
    b.file("plain", 0o644, b"plain");
    let img = Image::new(
        vec![
            Layer::new(a.finish(), Compression::Zstd),
            Layer::new(b.finish(), Compression::None),
        ],
        "amd64",
        json!({}),
    );
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("z", &img).unwrap();
    reg.push(&layout.dir, "z", "zstd:v1", &[]).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let rec = pull(
        &store,
        &format!("{}/zstd:v1", reg.host()),
        &opts(work.path()),
    );
    assert!(rec.layers[0].media_type.ends_with("+zstd"));
    let dirs = rootfs::layer_dirs(&store, &rec).unwrap();
    assert_eq!(
        std::fs::read(dirs[0].join("z/zstd")).unwrap().len(),
        100_000
    );
    assert_eq!(std::fs::read(dirs[1].join("plain")).unwrap(), b"plain");
}

#[test]
fn shared_layers_rmi_and_prune() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let base = || {
        let mut l = LayerBuilder::new();
        l.file("base", 0o644, b"base");
        Layer::new(l.finish(), Compression::Gzip)
    };
    let top = |n: &str| {
        let mut l = LayerBuilder::new();
        l.file(n, 0o644, n.as_bytes());
        Layer::new(l.finish(), Compression::Gzip)
    };
    let one = Image::new(vec![base(), top("one")], "amd64", json!({}));
    let two = Image::new(vec![base(), top("two")], "amd64", json!({}));
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("one", &one).unwrap();
    layout.add_image("two", &two).unwrap();
    reg.push(&layout.dir, "one", "app:one", &[]).unwrap();
    reg.push(&layout.dir, "two", "app:two", &[]).unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let r1 = pull(
        &store,
        &format!("{}/app:one", reg.host()),
        &opts(work.path()),
    );
    let r2 = pull(
        &store,
        &format!("{}/app:two", reg.host()),
        &opts(work.path()),
    );
    let (d1, d2) = (
        rootfs::layer_dirs(&store, &r1).unwrap(),
        rootfs::layer_dirs(&store, &r2).unwrap(),
    );
    assert_eq!(d1[0], d2[0], "base layer unpacked once and shared");
    assert_ne!(d1[1], d2[1]);
    assert_eq!(
        reg.blob_gets(&r1.layers[0].digest.to_string()),
        1,
        "shared blob fetched once"
    );
    assert!(
        d1[0].to_string_lossy().len() < store.root().to_string_lossy().len() + 12,
        "short layer paths"
    );

    // Junk left by a crash is pruned; referenced data stays.
    std::fs::write(store.root().join("ingest").join("f".repeat(64)), b"partial").unwrap();
    let report = store.prune().unwrap();
    assert_eq!(report.partials_removed, 1);
    assert_eq!((report.blobs_removed, report.layers_removed), (0, 0));

    store.remove(&r1.name).unwrap();
    assert!(
        d1[0].exists() && !d1[1].exists(),
        "rmi frees only what no other image uses"
    );
    assert!(!store.has_blob(&r1.manifest_digest));
    assert!(store.has_blob(&r2.manifest_digest));
    assert!(matches!(
        store.inspect(&r1.name),
        Err(image::Error::ImageNotFound(_))
    ));
    store.remove(&r2.name).unwrap();
    assert!(!d2[0].exists());
    assert!(store.list().unwrap().is_empty());
    let blobs = std::fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

#[test]
fn mirror_serves_under_the_requested_name() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut l = LayerBuilder::new();
    l.file("pause", 0o755, b"#!/bin/true\n");
    let img = Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        json!({"Entrypoint": ["/pause"]}),
    );
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("p", &img).unwrap();
    reg.push(&layout.dir, "p", "pause:3.10", &[]).unwrap();

    let cfg = work.path().join("registries.toml");
    std::fs::write(
        &cfg,
        format!(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:1\", \"http://{}\"]\n",
            reg.host()
        ),
    )
    .unwrap();
    let mut o = opts(work.path());
    o.hosts = image::HostsConfig::load(&cfg).unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let rec = pull(&store, "registry.k8s.io/pause:3.10", &o);
    assert_eq!(rec.name, "registry.k8s.io/pause:3.10");
    assert_eq!(
        store
            .inspect("registry.k8s.io/pause:3.10")
            .unwrap()
            .manifest_digest,
        rec.manifest_digest
    );
    assert_eq!(
        rootfs::run_config(&store, &rec).unwrap().entrypoint,
        vec!["/pause"]
    );
}

#[test]
fn cli_pull_images_inspect_rmi() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &whiteout_image()).unwrap();
    reg.push(&layout.dir, "v1", "cli:v1", &[]).unwrap();
    let root = work.path().join("store");
    let name = format!("{}/cli:v1", reg.host());
    let skiff = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff-image"))
            .args(args)
            .arg("--image-root")
            .arg(&root)
            .env("DOCKER_CONFIG", work.path())
            .output()
            .expect("run skiff-image");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (out, err) = skiff(&["pull", &name]);
    assert!(out.contains(&name), "{out}");
    assert_eq!(
        err.lines().filter(|l| l.contains("pulled")).count(),
        2,
        "one line per layer: {err}"
    );
    let (out, _) = skiff(&["images", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["name"], name.as_str());
    let (out, _) = skiff(&["image", "inspect", &name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layerDirs"].as_array().unwrap().len(), 2);
    skiff(&["rmi", &name]);
    let (out, _) = skiff(&["images"]);
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
    skiff(&["prune"]);
}

#[test]
fn docker_schema2_manifest_list_and_device_nodes() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut l = LayerBuilder::new();
    l.dir("dev", 0o755)
        .char_dev("dev/null", 1, 3)
        .fifo("dev/pipe")
        .file_owned("owned", 0o2755, 1234, 5678, b"sgid");
    let amd = Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        json!({"Env": ["A=1"]}),
    );
    let mut l = LayerBuilder::new();
    l.file("arm", 0o644, b"arm");
    let arm = Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "arm64",
        json!({}),
    );
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_index("multi", &[&amd, &arm]).unwrap();
    reg.push_converted(&layout.dir, "multi", "docker:v1", &["--format", "v2s2"])
        .unwrap();

    let store = Store::open(work.path().join("store")).unwrap();
    let mut o = opts(work.path());
    o.platform = Some(Platform::parse("linux/amd64").unwrap());
    let rec = pull(&store, &format!("{}/docker:v1", reg.host()), &o);
    assert_eq!(
        rec.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert!(rec.index_digest.is_some(), "came through a manifest list");
    assert!(rec.layers[0]
        .media_type
        .starts_with("application/vnd.docker.image.rootfs."));
    let dir = rootfs::layer_dirs(&store, &rec).unwrap().remove(0);
    let null = std::fs::symlink_metadata(dir.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert!(std::fs::symlink_metadata(dir.join("dev/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    let owned = std::fs::metadata(dir.join("owned")).unwrap();
    assert_eq!(
        (owned.uid(), owned.gid(), owned.mode() & 0o7777),
        (1234, 5678, 0o2755)
    );
    assert_eq!(rootfs::run_config(&store, &rec).unwrap().env, vec!["A=1"]);
}

#[test]
fn ipv6_loopback_registry_over_plain_http() {
    let reg4 = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut l = LayerBuilder::new();
    l.file("six", 0o644, b"v6");
    let img = Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        json!({}),
    );
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &img).unwrap();
    reg4.push(&layout.dir, "v1", "six:v1", &[]).unwrap();
    let reg = Registry::start_with(skiff_tests::registry::RegistryOptions {
        ipv6: true,
        storage_of: Some(reg4.storage()),
        ..Default::default()
    })
    .unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let rec = pull(
        &store,
        &format!("{}/six:v1", reg.host()),
        &opts(work.path()),
    );
    assert!(rec.name.starts_with("[::1]:"));
    let dir = rootfs::layer_dirs(&store, &rec).unwrap().remove(0);
    assert_eq!(std::fs::read(dir.join("six")).unwrap(), b"v6");
}
