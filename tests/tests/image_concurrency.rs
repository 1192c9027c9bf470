//! Parallel pulls of overlapping images, in threads and in separate processes, into one store.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;

use serde_json::json;
use skiff_runtime::image::{self, rootfs, PullOptions, Reference, Store};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder, Layout};
use skiff_tests::registry::Registry;

fn layer(name: &str, size: usize) -> Layer {
    let mut l = LayerBuilder::new();
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ name.as_bytes()[0])
        .collect();
    l.dir(name, 0o755)
        .file(&format!("{name}/data"), 0o644, &data);
    Layer::new(l.finish(), Compression::Gzip)
}

#[test]
fn ten_parallel_pulls_fetch_each_blob_once() {
    let reg = Registry::start().unwrap();
    let work = tempfile::tempdir().unwrap();
    let images = [
        (
            "a",
            Image::new(
                vec![layer("base", 2 << 20), layer("a", 300_000)],
                "amd64",
                json!({}),
            ),
        ),
        (
            "b",
            Image::new(
                vec![layer("base", 2 << 20), layer("b", 300_000)],
                "amd64",
                json!({}),
            ),
        ),
        (
            "c",
            Image::new(
                vec![
                    layer("base", 2 << 20),
                    layer("a", 300_000),
                    layer("c", 100_000),
                ],
                "amd64",
                json!({}),
            ),
        ),
        (
            "d",
            Image::new(
                vec![layer("other", 1 << 20), layer("a", 300_000)],
                "amd64",
                json!({}),
            ),
        ),
    ];
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    for (tag, img) in &images {
        layout.add_image(tag, img).unwrap();
        reg.push(&layout.dir, tag, &format!("app:{tag}"), &[])
            .unwrap();
    }
    let root = work.path().join("store");
    let names: Vec<String> = ["a", "b", "c", "d", "a", "c", "b", "d", "c", "a"]
        .iter()
        .map(|t| format!("{}/app:{t}", reg.host()))
        .collect();

    // Six pulls in threads of this process, four in separate processes.
    let children: Vec<_> = names[6..]
        .iter()
        .map(|n| {
            Command::new(env!("CARGO_BIN_EXE_skiff-image"))
                .args(["pull", "--quiet", n, "--image-root"])
                .arg(&root)
                .env("DOCKER_CONFIG", work.path())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for n in &names[..6] {
            let root = root.clone();
            let cfg = work.path().join("none.json");
            s.spawn(move || {
                let store = Store::open(&root).unwrap();
                let o = PullOptions {
                    credentials_file: Some(cfg),
                    ..PullOptions::default()
                };
                image::pull(&store, &Reference::parse(n).unwrap(), &o)
                    .unwrap_or_else(|e| panic!("{n}: {e}"));
            });
        }
    });
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }

    let store = Store::open(&root).unwrap();
    let list = store.list().unwrap();
    assert_eq!(list.len(), 4);
    let mut blobs = HashSet::new();
    let mut chains = HashSet::new();
    for rec in &list {
        let dirs = rootfs::layer_dirs(&store, rec).unwrap();
        for (l, d) in rec.layers.iter().zip(&dirs) {
            assert!(d.is_dir());
            blobs.insert(l.digest.to_string());
            chains.insert(l.chain_id.clone());
        }
        blobs.insert(rec.config_digest.to_string());
        rootfs::run_config(&store, rec).unwrap();
    }
    for b in &blobs {
        assert_eq!(reg.blob_gets(b), 1, "blob {b} fetched once");
    }
    let layer_dirs = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert_eq!(layer_dirs, chains.len(), "one directory per chain");
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.join("ingest")).unwrap().count(), 0);
    assert_eq!(store.prune().unwrap().blobs_removed, 0);
}
