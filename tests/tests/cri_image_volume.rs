//! Image volumes (`Mount.image`) over the real socket: a pulled image mounted read-only into a
//! running container, whole (an overlay of two layers, a bind of one) or one path of it, the image
//! id reported in the status, the image kept while mounted, and bad mounts refused by name.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use skiff_tests::cri::{
    busybox_layout, container_config, host_network, pod_config, v1 as cri, Pod, Skiffd, BUSYBOX,
};
use tonic::Code;

const VOLUME_IMAGE: &str = "registry.skiff.test/library/vol:latest";
const IMAGE_PASSWD: &str = "user:x:1000:1000::/home/user:/bin/sh";

/// The test busybox with a second layer: `/data/hello.txt` and two symlinks that point out of the
/// image if followed on the host (`/data/abs` to `/etc`, `/data/up` to `/data/abs` through `..`).
fn two_layer_layout(work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let status = Command::new("cp")
        .arg("-a")
        .arg(busybox_layout())
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let extra = work.join("extra");
    std::fs::create_dir_all(extra.join("data")).unwrap();
    std::fs::write(extra.join("data/hello.txt"), "hello from the image\n").unwrap();
    std::os::unix::fs::symlink("../data/abs", extra.join("data/up")).unwrap();
    std::os::unix::fs::symlink("/etc", extra.join("data/abs")).unwrap();
    let out = Command::new("umoci")
        .args(["insert", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&extra)
        .arg("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    layout
}

/// A daemon with a host-network pod, busybox and the two-layer image pulled; their image refs.
async fn setup() -> (Skiffd, Pod, String, String, tempfile::TempDir) {
    let mut d = Skiffd::start().await;
    let work = tempfile::tempdir().unwrap();
    let layout = two_layer_layout(work.path());
    d.registry
        .push(&layout, "latest", "library/vol:latest", &[])
        .expect("push the volume image");
    let busybox = d.pull_busybox().await;
    let vol = d.pull_image(VOLUME_IMAGE, None).await.expect("pull vol");
    let pod = d
        .run_pod(host_network(pod_config("iv", &d.log_dir())))
        .await;
    (d, pod, busybox, vol, work)
}

fn image_mount(path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

fn with_mounts(name: &str, mounts: Vec<cri::Mount>) -> cri::ContainerConfig {
    let mut c = container_config(name, "exec sleep 1000");
    c.mounts = mounts;
    c
}

/// ExecSync of `cmd`: exit code and stdout.
async fn exec(d: &mut Skiffd, id: &str, cmd: &[&str]) -> (i32, String) {
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await
        .unwrap()
        .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned())
}

/// Mount points of this machine below `dir`.
fn mounts_below(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = format!("{}/", dir.display());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn images_mounted_read_only_with_their_ids_reported() {
    let (mut d, pod, busybox, vol, _work) = setup().await;
    let id = d
        .run_container(
            &pod,
            with_mounts(
                "reader",
                vec![
                    image_mount("/mnt/vol", &vol, ""),
                    image_mount("/mnt/bb", BUSYBOX, ""),
                ],
            ),
        )
        .await;

    // Both layers of the two-layer image, and the one layer of busybox.
    let (code, out) = exec(&mut d, &id, &["cat", "/mnt/vol/data/hello.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from the image\n"));
    assert_eq!(
        exec(&mut d, &id, &["/mnt/vol/bin/busybox", "true"]).await.0,
        0
    );
    assert_eq!(
        exec(&mut d, &id, &["/mnt/bb/bin/busybox", "true"]).await.0,
        0
    );
    for path in ["/mnt/vol/x", "/mnt/vol/data/hello.txt", "/mnt/bb/x"] {
        let (code, _) = exec(&mut d, &id, &["touch", path]).await;
        assert_ne!(code, 0, "{path} is writable");
    }

    let status = d.container_status(&id).await;
    let refs: Vec<(String, String)> = status
        .mounts
        .iter()
        .map(|m| {
            let image = m.image.clone().unwrap_or_default();
            (m.container_path.clone(), image.image_ref)
        })
        .collect();
    assert_eq!(
        refs,
        vec![
            ("/mnt/vol".into(), vol.clone()),
            ("/mnt/bb".into(), busybox)
        ]
    );

    // The image stays while a container mounts it.
    let e = d.remove_image(VOLUME_IMAGE).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let bundle = d.dir.join("state/containers").join(&id);
    assert_eq!(mounts_below(&bundle.join("image-volumes")).len(), 2);

    d.stop_container(&id, 0).await.unwrap();
    d.remove_container(&id).await.unwrap();
    assert_eq!(mounts_below(&bundle), Vec::<String>::new());
    assert!(!bundle.exists());
    d.remove_image(VOLUME_IMAGE).await.unwrap();
    // The layers the volume showed are intact for the image that still has them.
    let again = d
        .run_container(
            &pod,
            with_mounts("again", vec![image_mount("/mnt/bb", BUSYBOX, "")]),
        )
        .await;
    assert_eq!(
        exec(&mut d, &again, &["/mnt/bb/bin/busybox", "true"])
            .await
            .0,
        0
    );
}

#[tokio::test]
async fn sub_paths_are_resolved_inside_the_image() {
    let (mut d, pod, _busybox, vol, _work) = setup().await;
    let id = d
        .run_container(
            &pod,
            with_mounts(
                "sub",
                vec![
                    image_mount("/mnt/data", &vol, "data"),
                    image_mount("/mnt/up", &vol, "data/up"),
                    image_mount("/mnt/abs", &vol, "data/abs"),
                    image_mount("/mnt/etc", BUSYBOX, "etc"),
                ],
            ),
        )
        .await;
    let (code, out) = exec(&mut d, &id, &["cat", "/mnt/data/hello.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "hello from the image\n"));
    assert_ne!(exec(&mut d, &id, &["ls", "/mnt/data/data"]).await.0, 0);
    // Symlinks that leave the image on the host stay in it: both show the image's /etc.
    for dir in ["/mnt/up", "/mnt/abs", "/mnt/etc"] {
        let (code, out) = exec(&mut d, &id, &["cat", &format!("{dir}/passwd")]).await;
        assert_eq!(code, 0, "{dir}");
        assert!(out.contains(IMAGE_PASSWD), "{dir} shows {out:?}");
    }
}

#[tokio::test]
async fn bad_image_mounts_are_refused_by_name() {
    let (mut d, pod, _busybox, vol, _work) = setup().await;
    let writable = cri::Mount {
        readonly: false,
        ..image_mount("/mnt/v", &vol, "")
    };
    let both = cri::Mount {
        host_path: "/tmp".into(),
        ..image_mount("/mnt/v", &vol, "")
    };
    let cases: Vec<(cri::Mount, Code, &str)> = vec![
        (writable, Code::InvalidArgument, "mounts.readonly"),
        (both, Code::InvalidArgument, "mounts.host_path"),
        (
            image_mount("/mnt/v", &vol, "missing"),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/mnt/v", &vol, "../etc"),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/mnt/v", &vol, "/etc"),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/mnt/v", "registry.skiff.test/library/absent:1", ""),
            Code::NotFound,
            "absent",
        ),
    ];
    for (i, (m, code, word)) in cases.into_iter().enumerate() {
        let e = d
            .create_container(&pod, with_mounts(&format!("bad{i}"), vec![m]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "case {i}: {e:?}");
        assert!(e.message().contains(word), "case {i}: {e:?}");
    }
    // Nothing was left behind: no container, no mount.
    assert!(d.list_containers(None).await.is_empty());
    assert_eq!(
        mounts_below(&d.dir.join("state/containers")),
        Vec::<String>::new()
    );
}
