//! User and group id 4294967295 is -1 as a uid_t/gid_t, which setresuid and setresgid read as
//! "leave unchanged": a process asked to run as it would stay root. It is refused wherever an id
//! comes in (config.json, `exec --user`, an image's `User`, CRI requests), with an error naming the
//! field, and ImageStatus does not report it as a uid kubelet could take for non-root.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use skiff_tests::cri::{self, container_config, host_network, image_spec, pod_config, Skiffd};
use skiff_tests::env::path_str;
use skiff_tests::registry::Registry;
use skiff_tests::security::{busybox_image, push_images};
use skiff_tests::{assert_failed_mentioning, skip_on_runc, TestEnv};
use tonic::Code;

const MAX: u32 = u32::MAX;
const MAX_ID: Option<cri::v1::Int64Value> = Some(cri::v1::Int64Value { value: MAX as i64 });
/// Accounts whose ids resolve to 4294967295 by name.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nmax:x:4294967295:0::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\nhuge:x:4294967295:\n";

#[test]
fn bundle_ids_of_minus_one_are_refused() {
    if skip_on_runc("skiff's own error messages") {
        return;
    }
    let env = TestEnv::new("ids-bundle");
    let cases = [
        ("/process/user/uid", json!(MAX), "process.user.uid"),
        ("/process/user/gid", json!(MAX), "process.user.gid"),
        (
            "/process/user/additionalGids",
            json!([5, MAX]),
            "process.user.additionalGids[1]",
        ),
    ];
    for (pointer, value, field) in cases {
        for command in ["create", "run"] {
            let mut b = env.bundle_light();
            b.sh("id -u");
            b.set(pointer, value.clone());
            b.save();
            let id = env.id();
            let out = env.rt(&[command, "--bundle", path_str(&b.dir), &id]);
            assert_failed_mentioning(
                &out,
                &format!("{command} with {field}"),
                &[&[field], &["4294967295"]],
            );
            env.assert_clean(&id, &b.dir, None);
        }
    }
}

#[test]
fn exec_as_minus_one_is_refused() {
    if skip_on_runc("skiff's own error messages") {
        return;
    }
    let env = TestEnv::new("ids-exec");
    let mut b = env.bundle_light();
    b.args(&["sleep", "1000"]);
    let id = env.id();
    env.must_create(&b, &id);
    env.must_start(&id);
    for (user, field) in [
        ("4294967295", "process.user.uid"),
        ("0:4294967295", "process.user.gid"),
    ] {
        let out = env.rt(&["exec", "--user", user, &id, "id", "-u"]);
        assert_failed_mentioning(&out, &format!("exec --user {user}"), &[&[field]]);
    }
    assert_eq!(env.status(&id), "running");
}

#[test]
fn image_users_of_minus_one_are_refused_by_run() {
    let reg = Registry::start().unwrap();
    let env = TestEnv::new("ids-image");
    let images: Vec<(&str, serde_json::Value)> = vec![
        ("uid", json!({"User": "4294967295"})),
        ("name", json!({"User": "max"})),
        ("gid", json!({"User": "0:4294967295"})),
        ("group", json!({"User": "root:huge"})),
        ("root", json!({})),
    ];
    let built: Vec<_> = images
        .iter()
        .map(|(tag, config)| (*tag, busybox_image(PASSWD, GROUP, config.clone())))
        .collect();
    let refs: Vec<_> = built.iter().map(|(t, i)| (*t, i)).collect();
    push_images(&reg, &env.dir, "ids", &refs);
    let store = env.dir.join("image");
    let run = |tag: &str, extra: &[&str]| {
        let id = env.id();
        let image = format!("{}/ids:{tag}", reg.host());
        let mut args = vec![
            "run",
            "--rm",
            "--image",
            &image,
            "--image-root",
            store.to_str().unwrap(),
            "--registries-config",
            "/dev/null",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&id, "--", "id", "-u"]);
        let out = env.rt(&args);
        assert!(
            !env.dir.join("containers").join(&id).exists(),
            "bundle of {id} left behind"
        );
        out
    };
    for (tag, what) in [
        ("uid", "uid"),
        ("name", "uid"),
        ("gid", "gid"),
        ("group", "gid"),
    ] {
        let out = run(tag, &[]);
        assert_failed_mentioning(
            &out,
            &format!("run --image ids:{tag}"),
            &[&["the image's User"], &[&format!("{what}: 4294967295")]],
        );
    }
    let out = run("root", &["--user", "4294967295"]);
    assert_failed_mentioning(
        &out,
        "run --user 4294967295",
        &[&["--user"], &["uid: 4294967295"]],
    );
}

#[tokio::test]
async fn cri_refuses_ids_of_minus_one() {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let uid = busybox_image(PASSWD, GROUP, json!({"User": "4294967295"}));
    let name = busybox_image(PASSWD, GROUP, json!({"User": "max"}));
    push_images(
        &d.registry,
        &d.dir,
        "library/ids",
        &[("uid", &uid), ("name", &name)],
    );
    let (by_uid, by_name) = (
        "registry.skiff.test/library/ids:uid",
        "registry.skiff.test/library/ids:name",
    );
    for image in [by_uid, by_name] {
        d.pull_image(image, None).await.expect("pull");
    }

    // Not a uid kubelet's runAsNonRoot check could take for a non-root user.
    let status = d.image_status(by_uid, false).await.image.expect("image");
    assert_eq!(status.uid, None, "{status:?}");
    assert_eq!(status.username, "4294967295");

    let pod = d
        .run_pod(host_network(pod_config("ids", &d.log_dir())))
        .await;
    for image in [by_uid, by_name] {
        let mut config = container_config("c", "id -u");
        config.image = image_spec(image);
        let e = d.create_container(&pod, config).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{image}: {e}");
        assert!(e.message().contains("image User"), "{image}: {e}");
        assert!(e.message().contains("process.user.uid"), "{image}: {e}");
    }

    type Set = fn(&mut cri::v1::LinuxContainerSecurityContext);
    let requests: [(&str, Set); 3] = [
        ("run_as_user", |s| s.run_as_user = MAX_ID),
        ("run_as_group", |s| {
            s.run_as_user = Some(cri::v1::Int64Value { value: 1000 });
            s.run_as_group = MAX_ID;
        }),
        ("supplemental_groups", |s| {
            s.supplemental_groups = vec![MAX as i64]
        }),
    ];
    for (field, set) in requests {
        let mut config = container_config(field, "id -u");
        let mut sc = cri::v1::LinuxContainerSecurityContext::default();
        set(&mut sc);
        config
            .linux
            .get_or_insert_with(Default::default)
            .security_context = Some(sc);
        let e = d.create_container(&pod, config).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e}");
        assert!(e.message().contains(field), "{field}: {e}");
        assert!(e.message().contains("4294967295"), "{field}: {e}");
    }
    assert!(
        d.list_containers(None).await.is_empty(),
        "a refused container was recorded"
    );
}
