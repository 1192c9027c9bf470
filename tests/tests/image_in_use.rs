//! Images that containers use: `skiff rmi` refuses them (unless `--force`), and `skiff prune`
//! keeps their layers until the containers are deleted.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_runtime::image::Store;
use skiff_tests::env::TestEnv;
use skiff_tests::registry::{run, Registry};

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

#[test]
fn images_in_use_are_not_removed() {
    let reg = Registry::start().unwrap();
    let env = TestEnv::new("image-in-use");
    let (layout, src) = (env.dir.join("layout"), env.dir.join("src"));
    run(Command::new(images_dir().join("busybox.sh"))
        .arg(&layout)
        .arg(&src)
        .arg("v1"))
    .unwrap();
    reg.push(&layout, "v1", "inuse:v1", &[]).unwrap();
    let name = format!("{}/inuse:v1", reg.host());
    let store_root = env.dir.join("image");
    let store_arg = store_root.to_str().unwrap();
    let store_args = [
        "--image-root",
        store_arg,
        "--registries-config",
        "/dev/null",
    ];
    let rt = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&store_args);
        env.rt(&all)
    };

    // A container made from the image, kept after it exits (not deleted).
    let id = env.id();
    let out = rt(&["run", "--image", &name, "--entrypoint", "/bin/true", &id]);
    assert!(out.success(), "run --image{out}");
    let store = Store::open(&store_root).unwrap();
    let rec = store.inspect(&name).unwrap();
    let users = store.users().unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].container, id);
    assert_eq!(users[0].uses.config_digest, rec.config_digest);
    let layers = skiff_runtime::image::rootfs::layer_dirs(&store, &rec).unwrap();

    // rmi refuses, naming the container; the image stays.
    let out = rt(&["rmi", &name]);
    assert!(!out.success(), "rmi of an image in use{out}");
    assert!(out.stderr.contains(&id), "names the container{out}");
    assert!(out.stderr.contains("in use"), "{out}");
    assert!(store.inspect(&name).is_ok());

    // Another name for the same image can go: the image itself stays.
    let alias = format!("{}/inuse:alias", reg.host());
    reg.push(&layout, "v1", "inuse:alias", &[]).unwrap();
    assert!(rt(&["pull", "-q", &alias]).success());
    let out = rt(&["rmi", &alias]);
    assert!(out.success(), "rmi of a second name{out}");

    // --force removes the name; prune keeps the layers the container stacks.
    let out = rt(&["rmi", "--force", &name]);
    assert!(out.success(), "rmi --force{out}");
    assert!(store.inspect(&name).is_err());
    assert!(rt(&["prune"]).success());
    for l in &layers {
        assert!(l.is_dir(), "{} pruned while in use", l.display());
    }
    assert!(
        env.dir
            .join("containers")
            .join(&id)
            .join("rootfs/bin/busybox")
            .exists(),
        "the container's root still shows the image"
    );

    // Once the container is deleted, prune takes them.
    let out = env.rt(&["delete", &id]);
    assert!(out.success(), "delete{out}");
    assert!(store.users().unwrap().is_empty());
    assert!(rt(&["prune"]).success());
    for l in &layers {
        assert!(!l.exists(), "{} kept after its last user went", l.display());
    }

    // And an image nobody uses goes at once.
    assert!(rt(&["pull", "-q", &name]).success());
    assert!(rt(&["rmi", &name]).success());
}
