//! Container filesystems and unpacked layers are root's alone: another local user can walk neither
//! into a running container's root (to execute its setuid-root files or open its device nodes) nor
//! into the layer store, under the `skiff` CLI and under skiffd; directories an older version left
//! open are closed when skiff next opens them. A container whose user is not root still runs and
//! reads its own files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use skiff_tests::cri::{self, host_network, image_spec, pod_config, Skiffd};
use skiff_tests::host::wait_for_file;
use skiff_tests::registry::Registry;
use skiff_tests::security::{
    assert_closed_to_other_users, assert_reachable_by_other_users, busybox_image, mode_of,
    push_images, Probe,
};
use skiff_tests::TestEnv;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\n";
/// Run as uid 1000: who it is and what it read land in the container's writable layer.
const READER: &str =
    "{ id -u; cat /home/user/notes; } >/tmp/out 2>&1; touch /tmp/done; exec sleep 1000";

/// The unpacked layers of a store (read directly: opening the store would repair its modes).
fn layer_dirs(store: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(store.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no layer in {}", store.display());
    dirs
}

/// What the reader wrote, once it is done.
fn reader_output(upper: &Path) -> String {
    assert!(
        wait_for_file(&upper.join("tmp/done"), Duration::from_secs(30)),
        "the container did not finish reading ({})",
        upper.display()
    );
    fs::read_to_string(upper.join("tmp/out")).unwrap()
}

/// Probes of everything below a store's layer directory that another user must not reach.
fn layer_probes(store: &Path) -> Vec<(Probe, PathBuf)> {
    let mut probes = vec![
        (Probe::Open, store.to_path_buf()),
        (Probe::Open, store.join("layers")),
    ];
    for l in layer_dirs(store) {
        probes.extend([
            (Probe::Stat, l.clone()),
            (Probe::Exec, l.join("bin/suid")),
            (Probe::Open, l.join("dev/probe-null")),
            (Probe::Open, l.join("etc/passwd")),
        ]);
    }
    probes
}

/// Probes of a container's bundle directory: its root (setuid file, device node), writable layer
/// and config.
fn bundle_probes(bundle: &Path) -> Vec<(Probe, PathBuf)> {
    let rootfs = bundle.join("rootfs");
    vec![
        (Probe::Open, bundle.parent().unwrap().to_path_buf()),
        (Probe::Stat, bundle.to_path_buf()),
        (Probe::Stat, rootfs.clone()),
        (Probe::Exec, rootfs.join("bin/suid")),
        (Probe::Open, rootfs.join("dev/probe-null")),
        (Probe::Open, rootfs.join("etc/passwd")),
        (Probe::Open, bundle.join("upper/tmp/out")),
        (Probe::Open, bundle.join("config.json")),
    ]
}

fn check(probes: &[(Probe, PathBuf)]) {
    let probes: Vec<(Probe, &Path)> = probes
        .iter()
        .map(|(p, path)| (*p, path.as_path()))
        .collect();
    assert_closed_to_other_users(&probes);
}

fn make_open_dir(path: &Path) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn cli_container_and_layer_dirs_are_closed_to_other_users() {
    let reg = Registry::start().unwrap();
    let env = TestEnv::new("perms-cli");
    let img = busybox_image(PASSWD, GROUP, json!({"User": "1000", "Env": ["PATH=/bin"]}));
    push_images(&reg, &env.dir, "perms", &[("v1", &img)]);
    let store = env.dir.join("image");
    let id = env.id();
    let out = env.rt(&[
        "run",
        "-d",
        "--image",
        &format!("{}/perms:v1", reg.host()),
        "--image-root",
        store.to_str().unwrap(),
        "--registries-config",
        "/dev/null",
        &id,
        "--",
        "sh",
        "-c",
        READER,
    ]);
    assert!(out.success(), "run -d --image{out}");
    let bundle = env.dir.join("containers").join(&id);
    // The image's user 1000 runs and reads its own files through the overlay.
    assert_eq!(reader_output(&bundle.join("upper")), "1000\nhello\n");

    for dir in [&store, &env.dir.join("containers"), &bundle] {
        assert_eq!(mode_of(dir), 0o700, "{}", dir.display());
    }
    assert_reachable_by_other_users(&env.dir);
    let mut probes = layer_probes(&store);
    probes.extend(bundle_probes(&bundle));
    probes.extend([
        (Probe::Open, env.root.join(&id)),
        (Probe::Stat, env.root.join(&id).join("state.json")),
    ]);
    check(&probes);
}

#[test]
fn cli_closes_directories_an_older_version_left_open() {
    let env = TestEnv::new("perms-cli-upgrade");
    let store = env.dir.join("image");
    let containers = env.dir.join("containers");
    let subdirs = ["layers", "blobs/sha256", "tmp", "chains", "images"];
    for d in subdirs {
        make_open_dir(&store.join(d));
    }
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
    make_open_dir(&containers.join("old/rootfs/bin"));
    fs::write(containers.join("old/rootfs/bin/tool"), "").unwrap();
    make_open_dir(&store.join("layers/1/bin"));
    fs::write(store.join("layers/1/bin/tool"), "").unwrap();

    let out = env.rt(&[
        "images",
        "--image-root",
        store.to_str().unwrap(),
        "--registries-config",
        "/dev/null",
    ]);
    assert!(out.success(), "images{out}");
    assert_eq!(mode_of(&store), 0o700);
    assert_eq!(mode_of(&containers), 0o700);
    for d in subdirs {
        assert_eq!(mode_of(&store.join(d)), 0o700, "{d}");
    }
    assert_reachable_by_other_users(&env.dir);
    check(&[
        (Probe::Stat, containers.join("old/rootfs/bin/tool")),
        (Probe::Stat, store.join("layers/1/bin/tool")),
    ]);
}

#[tokio::test]
async fn skiffd_container_and_layer_dirs_are_closed_to_other_users() {
    let mut d = Skiffd::start().await;
    let img = busybox_image(PASSWD, GROUP, json!({"Env": ["PATH=/bin"]}));
    push_images(&d.registry, &d.dir, "library/perms", &[("v1", &img)]);
    let name = "registry.skiff.test/library/perms:v1";
    d.pull_image(name, None).await.expect("pull");
    let pod = d
        .run_pod(host_network(pod_config("perms", &d.log_dir())))
        .await;
    let mut config = cri::container_config("reader", READER);
    config.image = image_spec(name);
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.security_context = Some(cri::v1::LinuxContainerSecurityContext {
        run_as_user: Some(cri::v1::Int64Value { value: 1000 }),
        ..Default::default()
    });
    let id = d.run_container(&pod, config).await;
    let (state, run, images) = (d.dir.join("state"), d.dir.join("run"), d.dir.join("images"));
    let bundle = state.join("containers").join(&id);
    // runAsUser 1000 runs and reads its own files through the overlay.
    assert_eq!(reader_output(&bundle.join("upper")), "1000\nhello\n");

    let containers = state.join("containers");
    let private = [&state, &containers, &run, &images];
    for dir in private.into_iter().chain([&bundle]) {
        assert_eq!(mode_of(dir), 0o700, "{}", dir.display());
    }
    assert_reachable_by_other_users(&d.dir);
    let pod_dir = run.join("sandboxes").join(&pod.id);
    let mut probes = layer_probes(&images);
    probes.extend(bundle_probes(&bundle));
    probes.extend([
        (Probe::Open, state.clone()),
        (Probe::Open, run.clone()),
        (Probe::Stat, pod_dir.join("shm")),
        (Probe::Stat, pod_dir.join("hosts")),
        (Probe::Stat, run.join("runtime").join(&id)),
    ]);
    check(&probes);

    // An older version's modes: skiffd closes them again when it starts.
    for dir in private.into_iter().chain([&bundle]) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(images.join("layers"), fs::Permissions::from_mode(0o755)).unwrap();
    d.restart().await;
    for dir in private.into_iter().chain([&images.join("layers")]) {
        assert_eq!(mode_of(dir), 0o700, "after a restart: {}", dir.display());
    }
    check(&probes);
}
