//! skiffd's ImageService over the real socket, against a real registry: pulls through a mirror that
//! keep the requested name, every name kubelet resolves images by, status/list/remove semantics,
//! credentials from kubelet's AuthConfig, bad references, and the image file system's usage.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use skiff_tests::cri::{
    busybox_layout, container_config, host_network, image_spec, pod_config, v1 as cri, Options,
    Skiffd, BUSYBOX,
};
use skiff_tests::registry::auth::{htpasswd_line, make_certs};
use skiff_tests::registry::build::{Compression, Image, Layer, LayerBuilder, Layout};
use skiff_tests::registry::{Registry, RegistryOptions};
use tonic::Code;

const REPO: &str = "registry.skiff.test/library/busybox";

/// Adds `[registries."<host>"]` entries to the daemon's registries file (read at every pull).
fn add_registry_entry(d: &Skiffd, entry: &str) {
    let path = d.dir.join("registries.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(entry);
    std::fs::write(&path, text).unwrap();
}

#[tokio::test]
async fn pull_through_the_mirror_keeps_the_requested_name() {
    let mut d = Skiffd::start().await;
    let id = d.pull_busybox().await;
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let images = d.list_images(None).await;
    assert_eq!(images.len(), 1, "{images:?}");
    let img = &images[0];
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![BUSYBOX.to_string()]);
    assert_eq!(img.repo_digests.len(), 1);
    assert!(
        img.repo_digests[0].starts_with(&format!("{REPO}@sha256:")),
        "{:?}",
        img.repo_digests
    );
    assert!(img.size > 0);
    assert_eq!(img.spec.as_ref().unwrap().image, id);
    assert!(!img.pinned);
    // The test image runs as root without naming a user.
    assert!(img.uid.is_none() && img.username.is_empty(), "{img:?}");
}

#[tokio::test]
async fn status_resolves_every_name_kubelet_uses() {
    let mut d = Skiffd::start().await;
    let id = d.pull_busybox().await;
    let hex = id.trim_start_matches("sha256:").to_string();
    let repo_digest = d.list_images(None).await[0].repo_digests[0].clone();
    for name in [
        BUSYBOX.to_string(),
        REPO.to_string(), // no tag: latest
        id.clone(),
        hex.clone(),
        hex[..12].to_string(),
        format!("sha256:{}", &hex[..12]),
        repo_digest.clone(),
    ] {
        let s = d.image_status(&name, false).await;
        let img = s.image.unwrap_or_else(|| panic!("{name} not found"));
        assert_eq!(img.id, id, "{name}");
        assert_eq!(img.repo_tags, vec![BUSYBOX.to_string()], "{name}");
    }
    // A filter finds it by any of those names too, and nothing by another.
    assert_eq!(d.list_images(Some(&hex[..12])).await.len(), 1);
    assert_eq!(d.list_images(Some(REPO)).await.len(), 1);
    assert!(d
        .list_images(Some("registry.skiff.test/other:1"))
        .await
        .is_empty());
}

#[tokio::test]
async fn status_of_an_absent_image_is_empty_not_an_error() {
    let mut d = Skiffd::start().await;
    for name in [
        BUSYBOX,
        "registry.skiff.test/library/nothing:1",
        "sha256:0123456789ab",
    ] {
        let s = d.image_status(name, true).await;
        assert!(s.image.is_none(), "{name}: {s:?}");
        assert!(s.info.is_empty());
    }
    assert!(d.list_images(None).await.is_empty());
}

#[tokio::test]
async fn verbose_status_describes_the_image() {
    let mut d = Skiffd::start().await;
    let id = d.pull_busybox().await;
    let s = d.image_status(BUSYBOX, true).await;
    let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["names"][0], BUSYBOX);
    assert!(info["manifestDigest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!info["layers"].as_array().unwrap().is_empty());
    assert!(
        info["imageConfig"]["rootfs"]["diff_ids"].is_array(),
        "{info}"
    );
}

#[tokio::test]
async fn two_names_one_image_and_removal_by_id_removes_both() {
    let mut d = Skiffd::start().await;
    d.registry
        .push(busybox_layout(), "latest", "library/busybox:v2", &[])
        .unwrap();
    let id = d.pull_busybox().await;
    let v2 = format!("{REPO}:v2");
    assert_eq!(d.pull_image(&v2, None).await.unwrap(), id);
    let images = d.list_images(None).await;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].repo_tags, vec![BUSYBOX.to_string(), v2.clone()]);

    d.remove_image(&id).await.unwrap();
    assert!(d.list_images(None).await.is_empty());
    assert!(d.image_status(&v2, false).await.image.is_none());
    // Everything the image held on disk went with it.
    let blobs = std::fs::read_dir(d.dir.join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}

#[tokio::test]
async fn remove_is_idempotent() {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    d.remove_image(BUSYBOX).await.unwrap();
    assert!(d.image_status(BUSYBOX, false).await.image.is_none());
    d.remove_image(BUSYBOX).await.unwrap();
    d.remove_image("registry.skiff.test/never/pulled:1")
        .await
        .unwrap();
    // Pulling again after a removal works.
    d.pull_busybox().await;
    assert_eq!(d.list_images(None).await.len(), 1);
}

#[tokio::test]
async fn short_names_are_normalised() {
    let mut d = Skiffd::start().await;
    d.registry
        .push(busybox_layout(), "latest", "library/shortbox:latest", &[])
        .unwrap();
    let host = d.registry.host();
    add_registry_entry(
        &d,
        &format!("[registries.\"docker.io\"]\nmirrors = [\"http://{host}\"]\n"),
    );
    let id = d.pull_image("shortbox", None).await.unwrap();
    let images = d.list_images(None).await;
    assert_eq!(
        images[0].repo_tags,
        vec!["docker.io/library/shortbox:latest"]
    );
    for name in [
        "shortbox",
        "shortbox:latest",
        "library/shortbox",
        "docker.io/shortbox",
        "docker.io/library/shortbox:latest",
    ] {
        let img = d.image_status(name, false).await.image;
        assert_eq!(img.map(|i| i.id).as_deref(), Some(id.as_str()), "{name}");
    }
    assert!(d
        .image_status("shortbox:other", false)
        .await
        .image
        .is_none());
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_agree() {
    let d = Skiffd::start().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut img = d.img.clone();
        tasks.push(tokio::spawn(async move {
            img.pull_image(cri::PullImageRequest {
                image: image_spec(BUSYBOX),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().expect("pull"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[tokio::test]
async fn bad_references_are_invalid_arguments() {
    let mut d = Skiffd::start().await;
    for name in [
        "",
        "   ",
        "UPPER/case:tag",
        "busybox:bad tag",
        "busybox@sha256:xyz",
        "registry.skiff.test/a/../b:1",
    ] {
        let e = d.pull_image(name, None).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {e}");
    }
    let e = d
        .img
        .pull_image(cri::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = d
        .img
        .remove_image(cri::RemoveImageRequest { image: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(d.list_images(None).await.is_empty());
}

#[tokio::test]
async fn missing_images_and_registries_say_why() {
    let mut d = Skiffd::start().await;
    let e = d
        .pull_image("registry.skiff.test/library/nothing:1", None)
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::NotFound | Code::Unavailable),
        "{e}"
    );
    assert!(e.message().contains("nothing"), "{e}");
    // A loopback port nobody listens on.
    let port = skiff_tests::registry::free_port();
    let e = d
        .pull_image(&format!("127.0.0.1:{port}/x/y:1"), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(d.list_images(None).await.is_empty());
}

#[tokio::test]
async fn credentials_come_from_the_auth_config() {
    let mut d = Skiffd::start().await;
    let work = tempfile::tempdir().unwrap();
    let certs = make_certs(work.path()).unwrap();
    let htpasswd = work.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_line("alice", "s3cret")).unwrap();
    let reg = Registry::start_with(RegistryOptions {
        tls: Some((certs.cert.clone(), certs.key.clone())),
        htpasswd: Some(htpasswd),
        ..Default::default()
    })
    .unwrap();
    reg.push(
        busybox_layout(),
        "latest",
        "private/box:1",
        &["--dest-creds", "alice:s3cret"],
    )
    .unwrap();
    add_registry_entry(
        &d,
        &format!(
            "[registries.\"{}\"]\nca_file = \"{}\"\n",
            reg.host(),
            certs.ca.display()
        ),
    );
    let name = format!("{}/private/box:1", reg.host());

    let e = d.pull_image(&name, None).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let wrong = cri::AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let e = d.pull_image(&name, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(d.image_status(&name, false).await.image.is_none());

    let good = cri::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        server_address: reg.host(),
        ..Default::default()
    };
    let id = d.pull_image(&name, Some(good)).await.unwrap();
    assert_eq!(d.image_status(&name, false).await.image.unwrap().id, id);

    // Docker's `auth` form: base64 of user:password.
    d.remove_image(&name).await.unwrap();
    let auth = cri::AuthConfig {
        auth: "YWxpY2U6czNjcmV0".into(),
        ..Default::default()
    };
    assert_eq!(d.pull_image(&name, Some(auth)).await.unwrap(), id);
    let junk = cri::AuthConfig {
        auth: "not base64!".into(),
        ..Default::default()
    };
    let e = d.pull_image(&name, Some(junk)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
}

#[tokio::test]
async fn image_fs_info_counts_the_store() {
    let mut d = Skiffd::start().await;
    let before = d
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    d.pull_busybox().await;
    let after = d
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let fs = &after.image_filesystems[0];
    assert_eq!(
        fs.fs_id.as_ref().unwrap().mountpoint,
        d.dir.join("images").to_string_lossy()
    );
    assert!(fs.timestamp > 0);
    let used = |f: &cri::FilesystemUsage| f.used_bytes.as_ref().unwrap().value;
    let inodes = |f: &cri::FilesystemUsage| f.inodes_used.as_ref().unwrap().value;
    let b = &before.image_filesystems[0];
    // busybox unpacked is a few hundred applet links and about a megabyte.
    assert!(used(fs) > used(b) + 500_000, "{} vs {}", used(fs), used(b));
    assert!(
        inodes(fs) > inodes(b) + 5,
        "{} vs {}",
        inodes(fs),
        inodes(b)
    );
    assert_eq!(after.container_filesystems.len(), 1);
}

#[tokio::test]
async fn the_configured_pause_image_is_pinned() {
    let mut d = Skiffd::start_with(Options {
        extra_config: "pause_image = \"registry.skiff.test/library/pause:3.10\"".into(),
        ..Default::default()
    })
    .await;
    d.registry
        .push(busybox_layout(), "latest", "library/pause:3.10", &[])
        .unwrap();
    let pause = "registry.skiff.test/library/pause:3.10";
    d.pull_image(pause, None).await.unwrap();
    let img = d.image_status(pause, false).await.image.unwrap();
    assert!(img.pinned);
    // Another image stays unpinned.
    let work = tempfile::tempdir().unwrap();
    let mut layer = LayerBuilder::new();
    layer.file("hello", 0o644, b"not the pause image");
    let other = Image::new(
        vec![Layer::new(layer.finish(), Compression::Gzip)],
        "amd64",
        serde_json::json!({"User": "1000:1000"}),
    );
    let mut layout = Layout::create(&work.path().join("layout")).unwrap();
    layout.add_image("v1", &other).unwrap();
    d.registry
        .push(&layout.dir, "v1", "library/other:1", &[])
        .unwrap();
    let other = "registry.skiff.test/library/other:1";
    d.pull_image(other, None).await.unwrap();
    let img = d.image_status(other, false).await.image.unwrap();
    assert!(!img.pinned);
    // Its numeric User is reported as a uid.
    assert_eq!(img.uid.map(|u| u.value), Some(1000));
}

#[tokio::test]
async fn an_image_in_use_is_not_removed() {
    let mut d = Skiffd::start().await;
    let id = d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("inuse", &d.log_dir())))
        .await;
    let container = d
        .create_container(&pod, container_config("user", "true"))
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", d.daemon_log()));
    let e = d.remove_image(&id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains(&container), "{e}");
    assert!(d.image_status(BUSYBOX, false).await.image.is_some());
    // The writable layer is counted once a container exists.
    let fs = d
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs.container_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(used > 0);
    d.remove_container(&container).await.unwrap();
    d.remove_image(&id).await.unwrap();
    assert!(d.list_images(None).await.is_empty());
}
