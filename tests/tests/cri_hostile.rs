//! Hostile CRI requests: empty, unknown and malformed ids, path traversal, huge strings, wrong enum
//! values. Each gets a gRPC error with the right code (or the idempotent OK kubelet relies on), the
//! daemon stays up, and nothing is left behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use skiff_tests::cri::{container_config, host_network, pod_config, v1 as cri, Pod, Skiffd};
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => {
            assert!(!s.message().is_empty(), "error without a message: {s:?}");
            s.code()
        }
    }
}

async fn assert_empty(d: &mut Skiffd) {
    let pods = d.list_pods(None).await;
    assert!(pods.is_empty(), "left pods: {pods:?}");
    let cs = d.list_containers(None).await;
    assert!(cs.is_empty(), "left containers: {cs:?}");
}

#[tokio::test]
async fn ids_empty_unknown_and_malformed() {
    let mut d = Skiffd::start().await;
    let unknown = "f".repeat(64);
    for bad in ["", "../../etc", "a/b", &"x".repeat(100_000)] {
        let r =
            d.rt.container_status(cri::ContainerStatusRequest {
                container_id: bad.into(),
                verbose: false,
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "container id {:.20}", bad);
        let r =
            d.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: bad.into(),
                verbose: false,
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "sandbox id {:.20}", bad);
    }
    let r =
        d.rt.container_status(cri::ContainerStatusRequest {
            container_id: unknown.clone(),
            verbose: true,
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = d.pod_status(&unknown).await;
    assert_eq!(code(r), Code::NotFound);
    let r =
        d.rt.start_container(cri::StartContainerRequest {
            container_id: unknown.clone(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    // kubelet retries these after a crash: they must succeed on what is already gone.
    d.stop_pod(&unknown)
        .await
        .expect("StopPodSandbox of an unknown pod is OK");
    d.remove_pod(&unknown)
        .await
        .expect("RemovePodSandbox of an unknown pod is OK");
    d.remove_container(&unknown)
        .await
        .expect("RemoveContainer of an unknown container is OK");
    assert_empty(&mut d).await;
}

#[tokio::test]
async fn sandbox_configs_that_are_missing_or_malformed() {
    let mut d = Skiffd::start().await;
    let r =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest::default())
            .await;
    assert_eq!(code(r), Code::InvalidArgument, "no config");
    let mut no_meta = pod_config("p", &d.log_dir());
    no_meta.metadata = None;
    let r = d.run_pod_sandbox(no_meta).await;
    assert_eq!(code(r), Code::InvalidArgument, "no metadata");
    let mut huge = pod_config("p", &d.log_dir());
    huge.hostname = "h".repeat(1 << 20);
    let r = d.run_pod_sandbox(huge).await;
    assert_eq!(code(r), Code::InvalidArgument, "1 MiB hostname");
    let mut bad_ns = pod_config("p", &d.log_dir());
    bad_ns.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: 42,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = d.run_pod_sandbox(bad_ns).await;
    assert_eq!(code(r), Code::InvalidArgument, "namespace mode 42");
    let r =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("p", &d.log_dir())),
            runtime_handler: "no-such-handler".into(),
        })
        .await;
    assert!(
        matches!(code(r), Code::InvalidArgument | Code::NotFound),
        "unknown runtime handler"
    );
    assert_empty(&mut d).await;
}

#[tokio::test]
async fn container_configs_that_escape_or_lie() {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("hostile", &d.log_dir())))
        .await;
    let mut cases: Vec<(&str, cri::ContainerConfig)> = Vec::new();
    let mut c = container_config("c", "true");
    c.log_path = "../../../../etc/evil.log".into();
    cases.push(("log path traversal", c));
    let mut c = container_config("c", "true");
    c.log_path = "/etc/evil.log".into();
    cases.push(("absolute log path", c));
    let mut c = container_config("c", "true");
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "relative/dir".into(),
        ..Default::default()
    }];
    cases.push(("relative host path", c));
    let mut c = container_config("c", "true");
    c.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/var/tmp/skiff-test/does-not-exist-anywhere".into(),
        ..Default::default()
    }];
    cases.push(("missing host path", c));
    let mut c = container_config("c", "true");
    c.mounts = vec![cri::Mount {
        container_path: "/tmp".into(),
        host_path: "/tmp".into(),
        propagation: 77,
        ..Default::default()
    }];
    cases.push(("propagation 77", c));
    let mut c = container_config("c", "true");
    c.metadata = None;
    cases.push(("no metadata", c));
    let mut c = container_config("c", "true");
    c.envs = vec![cri::KeyValue {
        key: "A=B".into(),
        value: "x".into(),
    }];
    cases.push(("env key with =", c));
    for (what, cfg) in cases {
        let r = d.create_container(&pod, cfg).await;
        assert_eq!(code(r), Code::InvalidArgument, "{what}");
    }
    let mut c = container_config("c", "true");
    c.image = Some(cri::ImageSpec {
        image: "registry.skiff.test/library/never-pulled:1".into(),
        ..Default::default()
    });
    let r = d.create_container(&pod, c).await;
    assert_eq!(code(r), Code::NotFound, "image not present");
    let unknown = Pod {
        id: "e".repeat(64),
        ..pod.clone()
    };
    let r = d
        .create_container(&unknown, container_config("c", "true"))
        .await;
    assert_eq!(code(r), Code::NotFound, "unknown sandbox");
    assert!(!std::path::Path::new("/etc/evil.log").exists());
    let cs = d.list_containers(None).await;
    assert!(cs.is_empty(), "refused creates left containers: {cs:?}");
    d.stop_and_remove_pod(&pod.id).await;
    assert_empty(&mut d).await;
}

#[tokio::test]
async fn image_requests_that_are_malformed() {
    let mut d = Skiffd::start().await;
    for bad in [
        "",
        "UPPER/Case:tag",
        "a b c",
        "busybox@sha256:xyz",
        &"n".repeat(10_000),
    ] {
        let r = d.pull_image(bad, None).await;
        assert_eq!(code(r), Code::InvalidArgument, "pull {:.20}", bad);
    }
    let r = d.img.pull_image(cri::PullImageRequest::default()).await;
    assert_eq!(code(r), Code::InvalidArgument, "pull without an image");
    let absent = "registry.skiff.test/library/absent:1";
    // ImageStatus panics on an error: an absent image is not one.
    let st = d.image_status(absent, false).await;
    assert!(st.image.is_none());
    d.remove_image(absent)
        .await
        .expect("removing an absent image is OK");
}
