//! A Debian `--variant=minbase` root filesystem built with debootstrap from this machine's apt
//! mirror (cached per machine), packed by umoci in two layers, pushed to a real registry, pulled
//! and compared file by file with the debootstrapped tree, then run.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_runtime::image::{self, rootfs, PullOptions, Reference, Store};
use skiff_tests::env::TestEnv;
use skiff_tests::registry::{run, tree, Registry};

/// Built once per machine by tests/images/debian-minbase.sh.
const CACHE: &str = "/var/tmp/skiff-test/debian-minbase";

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The layers stacked read-only with overlayfs: the tree a container sees.
fn merged(dirs: &[PathBuf], at: &Path) -> Mounted {
    std::fs::create_dir_all(at).unwrap();
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("ro,lowerdir={}", rootfs::lowerdir_option(dirs)))
        .arg(at))
    .unwrap();
    Mounted(at.to_path_buf())
}

#[test]
fn debootstrap_minbase_pulls_file_by_file_and_runs() {
    let cache = PathBuf::from(CACHE);
    run(Command::new(images_dir().join("debian-minbase.sh")).arg(&cache)).unwrap();
    let source = cache.join("rootfs");
    let reg = Registry::start().unwrap();
    reg.push(&cache.join("layout"), "minbase", "debian:minbase", &[])
        .unwrap();

    let env = TestEnv::new("debian-minbase");
    let store_root = env.dir.join("images");
    let store = Store::open(&store_root).unwrap();
    let name = format!("{}/debian:minbase", reg.host());
    let opts = PullOptions {
        credentials_file: Some(env.dir.join("no-docker-config.json")),
        ..PullOptions::default()
    };
    let rec = image::pull(&store, &Reference::parse(&name).unwrap(), &opts)
        .unwrap_or_else(|e| panic!("pull {name}: {e}"));
    assert_eq!(rec.layers.len(), 2);

    // Every path, type, mode, owner, size, content, link target, device number, mtime,
    // xattr and hardlink group of the debootstrapped tree, seen through overlayfs.
    let dirs = rootfs::layer_dirs(&store, &rec).unwrap();
    let has_devices = walkdir_has_devices(&source.join("dev"));
    {
        let view = merged(&dirs, &env.dir.join("merged"));
        let differences = tree::diff(&source, &view.0);
        assert!(
            differences.is_empty(),
            "pulled tree differs from {}:\n{}",
            source.display(),
            differences.join("\n")
        );
    }
    if has_devices {
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::symlink_metadata(dirs[0].join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
    }

    // And it runs: Debian's dash reads the release file.
    let out = env.rt(&[
        "run",
        "--image-root",
        store_root.to_str().unwrap(),
        "--registries-config",
        "/dev/null",
        "--image",
        &name,
        "--rm",
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/debian_version",
    ]);
    assert!(out.success(), "skiff run --image {name}{out}");
    let want = std::fs::read_to_string(source.join("etc/debian_version")).unwrap();
    assert_eq!(out.stdout.trim(), want.trim(), "{out}");
}

fn walkdir_has_devices(dev: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(dev).is_ok_and(|rd| {
        rd.flatten().any(|e| {
            e.file_type()
                .is_ok_and(|t| t.is_char_device() || t.is_block_device())
        })
    })
}
