//! The image store's limits: what a killed pull leaves in `tmp/` goes the next time the store is
//! opened (`skiff`, skiffd), while what a live pull holds stays; layers and images are refused past
//! their uncompressed size limits, the defaults and configured ones (library, CLI, skiffd.toml).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use skiff_runtime::image::limits::{DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_LAYER_BYTES};
use skiff_runtime::image::{self, Error, PullOptions, Reference, Store};
use skiff_tests::cri::{target_bin, Options, Skiffd, BUSYBOX};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder};
use skiff_tests::registry::server::{Route, Server};

fn opts(dir: &Path) -> PullOptions {
    PullOptions {
        credentials_file: Some(dir.join("no-docker-config.json")),
        retries: 1,
        ..PullOptions::default()
    }
}

fn pull(server: &Server, store: &Store, repo: &str, o: &PullOptions) -> image::Result<()> {
    let r = Reference::parse(&format!("{}/{repo}:v1", server.host())).unwrap();
    image::pull(store, &r, o).map(|_| ())
}

/// Bytes that gzip cannot shrink, so a stalled download stops mid-layer.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn one_layer(tar: Vec<u8>) -> Image {
    Image::new(vec![Layer::new(tar, Compression::Gzip)], "amd64", json!({}))
}

fn tmp_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("tmp"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Waits for a tmp entry not in `known` that holds some unpacked data; returns its name.
fn wait_half_unpacked(root: &Path, known: &[String]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for name in tmp_entries(root) {
            let has_data = std::fs::read_dir(root.join("tmp").join(&name))
                .into_iter()
                .flatten()
                .flatten()
                .any(|f| f.metadata().is_ok_and(|m| m.len() > 0));
            if has_data && !known.contains(&name) {
                return name;
            }
        }
        assert!(Instant::now() < deadline, "no half-unpacked layer in tmp");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `skiff images` on the store at `root`.
fn skiff_images(root: &Path) -> Command {
    let mut c = Command::new(target_bin("skiff"));
    c.args(["images", "--image-root"]).arg(root);
    c
}

fn skiff_pull(root: &Path, work: &Path, name: &str) -> Command {
    let mut c = Command::new(target_bin("skiff"));
    c.args(["pull", "--quiet", name, "--image-root"])
        .arg(root)
        .arg("--registries-config")
        .arg(work.join("no-registries.toml"))
        .arg("--authfile")
        .arg(work.join("no-docker-config.json"));
    c
}

fn kill9(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn a_killed_pull_leaves_nothing_in_tmp_once_the_store_is_opened_again() {
    let work = tempfile::tempdir().unwrap();
    let (work, root) = (work.path(), work.path().join("store"));
    let server = Server::start();
    let mut images = Vec::new();
    for (n, repo) in ["killed", "live"].iter().enumerate() {
        let mut l = LayerBuilder::new();
        l.file("big", 0o644, &noise(n as u64 + 7, 6 << 20));
        let img = one_layer(l.finish());
        server.serve_image(repo, "v1", &img);
        let blob = &img.layers[0].blob;
        server.route(
            &format!("/v2/{repo}/blobs/{}", img.layers[0].digest()),
            Route::ok("application/octet-stream", blob.clone()).stalling_after(blob.len() / 2),
        );
        images.push(img);
    }
    let spawn = |repo: &str| {
        skiff_pull(&root, work, &format!("{}/{repo}:v1", server.host()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("skiff pull")
    };
    // kill -9 in the middle of a layer: its half stays in tmp.
    let killed = spawn("killed");
    let stale = wait_half_unpacked(&root, &[]);
    kill9(killed);
    assert_eq!(tmp_entries(&root), vec![stale.clone()]);
    // Another pull, alive, holds its own tmp entry while a third process opens the store.
    let live = spawn("live");
    let held = wait_half_unpacked(&root, std::slice::from_ref(&stale));
    let out = skiff_images(&root).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tmp_entries(&root),
        vec![held],
        "the killed pull's entry must go, the live one's stay"
    );
    kill9(live);
    Store::open(&root).unwrap();
    assert!(tmp_entries(&root).is_empty(), "{:?}", tmp_entries(&root));
    // And the image pulls once the registry answers.
    let img = &images[0];
    server.route(
        &format!("/v2/killed/blobs/{}", img.layers[0].digest()),
        Route::ok("application/octet-stream", img.layers[0].blob.clone()),
    );
    let store = Store::open(&root).unwrap();
    pull(&server, &store, "killed", &opts(work)).expect("pull after the kill");
    assert!(tmp_entries(&root).is_empty());
}

/// A gzip layer of one file of `size` zero bytes, made as concatenated gzip members (one per MiB
/// of zeros, the same few bytes each) so that gigabytes cost megabytes and no time. Its diffID is
/// not the real one: computing that would mean hashing it all, and a pull that honours the limit
/// never gets that far.
fn zeros_layer(size: u64) -> Layer {
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut h = tar::Header::new_ustar();
    h.set_path("zeros").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let mut blob = gz(h.as_bytes());
    let mib = gz(&vec![0u8; 1 << 20]);
    for _ in 0..size >> 20 {
        blob.extend_from_slice(&mib);
    }
    let rest = (size % (1 << 20)) as usize;
    let padding = (512 - (size % 512) as usize) % 512;
    blob.extend(gz(&vec![0u8; rest + padding + 1024]));
    Layer {
        tar: b"not the real tar".to_vec(),
        blob,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
    }
}

/// A small tmpfs at `dir`, unmounted when dropped: a store there cannot hold the layer it is
/// offered, so a pull that wrote the layer out would fail of ENOSPC instead of filling the disk.
struct SmallFs(PathBuf);

impl SmallFs {
    fn mount(dir: PathBuf) -> SmallFs {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        skiff_tests::host::unmount_below(&self.0);
    }
}

#[test]
fn a_layer_past_the_default_limit_is_refused_before_it_is_written() {
    // The documented defaults.
    assert_eq!(DEFAULT_MAX_LAYER_BYTES, 8 << 30);
    assert_eq!(DEFAULT_MAX_IMAGE_BYTES, 16 << 30);
    let o = PullOptions::default();
    assert_eq!(
        (o.max_layer_bytes, o.max_image_bytes),
        (DEFAULT_MAX_LAYER_BYTES, DEFAULT_MAX_IMAGE_BYTES)
    );
    let work = tempfile::tempdir().unwrap();
    let server = Server::start();
    let layer = zeros_layer(DEFAULT_MAX_LAYER_BYTES + 1);
    assert!(layer.blob.len() < 16 << 20, "{}", layer.blob.len());
    let img = Image::new(vec![layer], "amd64", json!({}));
    server.serve_image("zeros", "v1", &img);
    let fs = SmallFs::mount(work.path().join("store"));
    let store = Store::open(&fs.0).unwrap();
    let t = Instant::now();
    let err = pull(&server, &store, "zeros", &opts(work.path())).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == DEFAULT_MAX_LAYER_BYTES),
        "{err}"
    );
    assert!(err.to_string().contains("zeros"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(tmp_entries(store.root()).is_empty());
    let layers = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 0, "a layer directory was kept");
    assert!(store.list().unwrap().is_empty());
}

/// A layer of `files` files of `each` bytes of noise.
fn files_layer(seed: u64, files: usize, each: usize) -> Layer {
    let mut l = LayerBuilder::new();
    for i in 0..files {
        l.file(&format!("f{i}"), 0o644, &noise(seed + i as u64, each));
    }
    Layer::new(l.finish(), Compression::Gzip)
}

#[test]
fn configured_limits_override_the_defaults() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let server = Server::start();
    // Four files of 400 KiB: each fits in 1 MiB, the layer does not.
    server.serve_image("wide", "v1", &one_layer(files_layer(1, 4, 400 << 10).tar));
    // Two images sharing a 600 KiB layer; the second adds another.
    let base = || files_layer(10, 1, 600 << 10);
    let one = Image::new(vec![base()], "amd64", json!({}));
    let two = Image::new(
        vec![base(), files_layer(20, 1, 600 << 10)],
        "amd64",
        json!({}),
    );
    server.serve_image("one", "v1", &one);
    server.serve_image("two", "v1", &two);

    let store = Store::open(work.join("store")).unwrap();
    let small = PullOptions {
        max_layer_bytes: 1 << 20,
        max_image_bytes: 1 << 20,
        ..opts(work)
    };
    let err = pull(&server, &store, "wide", &small).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { limit, what } if *limit == 1 << 20 && what.contains("layer")),
        "{err}"
    );
    pull(&server, &store, "one", &small).expect("600 KiB fits");
    // The layer already in the store counts toward the second image.
    let err = pull(&server, &store, "two", &small).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { limit, what } if *limit == 1 << 20 && what.contains("image")),
        "{err}"
    );
    assert!(tmp_entries(store.root()).is_empty());
    // Under the defaults both are fine.
    pull(&server, &store, "wide", &opts(work)).expect("default limits");
    pull(&server, &store, "two", &opts(work)).expect("default limits");

    // The CLI: a flag sets the limit.
    let root = work.join("cli-store");
    let name = format!("{}/wide:v1", server.host());
    let out = skiff_pull(&root, work, &name)
        .args(["--max-layer-size", "1MiB"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "pulled past --max-layer-size");
    assert!(stderr.contains("limit of 1048576 bytes"), "{stderr}");
    let out = skiff_pull(&root, work, &name)
        .args(["--max-image-size", "1M"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "pulled past --max-image-size");
    let out = skiff_pull(&root, work, &name)
        .args(["--max-layer-size", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bad size was taken");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lots"));
    let out = skiff_pull(&root, work, &name).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn skiffd_takes_its_limits_from_its_config_and_cleans_tmp_at_start() {
    let mut d = Skiffd::start_with(Options {
        extra_config: "max_layer_size = \"1MiB\"\n".into(),
        ..Default::default()
    })
    .await;
    // The test busybox has a layer of about 2 MB.
    let e = d.pull_image(BUSYBOX, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("limit of 1048576 bytes"), "{e}");
    // What a pull killed with an earlier skiffd left behind goes when skiffd starts.
    let tmp: PathBuf = d.dir.join("images/tmp");
    let stale = tmp.join("4194304-0");
    std::fs::create_dir_all(stale.join("usr/bin")).unwrap();
    std::fs::write(stale.join("usr/bin/half"), b"half a layer").unwrap();
    let config = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        config.replace("max_layer_size = \"1MiB\"", "max_layer_size = 4194304"),
    )
    .unwrap();
    d.restart().await;
    assert!(!stale.exists(), "skiffd kept a half-unpacked layer");
    d.pull_image(BUSYBOX, None).await.expect("4 MiB is enough");
}
