//! Hostile CRI requests: empty, unknown and malformed ids, path traversal, huge strings, wrong enum
//! values. Each gets a gRPC error with the right code (or the idempotent OK kubelet relies on), the
//! daemon stays up, and nothing is left behind.

use skiff_tests::cri::{container_config, pod_config, v1 as cri, Skiffd};
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
    let pods =
        d.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .expect("daemon still answers")
            .into_inner()
            .items;
    assert!(pods.is_empty(), "left pods: {pods:?}");
    let cs =
        d.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
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
    let r =
        d.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: unknown.clone(),
            verbose: true,
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r =
        d.rt.start_container(cri::StartContainerRequest {
            container_id: unknown.clone(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    // kubelet retries these after a crash: they must succeed on what is already gone.
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .expect("StopPodSandbox of an unknown pod is OK");
    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: unknown.clone(),
    })
    .await
    .expect("RemovePodSandbox of an unknown pod is OK");
    d.rt.remove_container(cri::RemoveContainerRequest {
        container_id: unknown.clone(),
    })
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
    let r =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(no_meta),
            runtime_handler: String::new(),
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument, "no metadata");
    let mut huge = pod_config("p", &d.log_dir());
    huge.hostname = "h".repeat(1 << 20);
    let r =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(huge),
            runtime_handler: String::new(),
        })
        .await;
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
    let r =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(bad_ns),
            runtime_handler: String::new(),
        })
        .await;
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
    let mut host = pod_config("hostile", &d.log_dir());
    host.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let sid =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(host.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("host-network pod")
        .into_inner()
        .pod_sandbox_id;
    let create = |cfg: cri::ContainerConfig| cri::CreateContainerRequest {
        pod_sandbox_id: sid.clone(),
        config: Some(cfg),
        sandbox_config: Some(host.clone()),
    };
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
        let r = d.rt.create_container(create(cfg)).await;
        assert_eq!(code(r), Code::InvalidArgument, "{what}");
    }
    let mut c = container_config("c", "true");
    c.image = Some(cri::ImageSpec {
        image: "registry.skiff.test/library/never-pulled:1".into(),
        ..Default::default()
    });
    let r = d.rt.create_container(create(c)).await;
    assert_eq!(code(r), Code::NotFound, "image not present");
    let r =
        d.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: "e".repeat(64),
            config: Some(container_config("c", "true")),
            sandbox_config: Some(host.clone()),
        })
        .await;
    assert_eq!(code(r), Code::NotFound, "unknown sandbox");
    assert!(!std::path::Path::new("/etc/evil.log").exists());
    let cs =
        d.rt.list_containers(cri::ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
    assert!(cs.is_empty(), "refused creates left containers: {cs:?}");
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sid.clone(),
    })
    .await
    .unwrap();
    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sid,
    })
    .await
    .unwrap();
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
        let r = d
            .img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: bad.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "pull {:.20}", bad);
    }
    let r = d.img.pull_image(cri::PullImageRequest::default()).await;
    assert_eq!(code(r), Code::InvalidArgument, "pull without an image");
    let st = d
        .img
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "registry.skiff.test/library/absent:1".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("status of an absent image is not an error")
        .into_inner();
    assert!(st.image.is_none());
    d.img
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: "registry.skiff.test/library/absent:1".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("removing an absent image is OK");
}
