//! Whole pods through the CRI, as kubelet drives them: two pods on a skiff-bridge network reaching
//! each other, and the everyday sequence from RunPodSandbox to RemovePodSandbox leaving nothing behind.

use std::time::{Duration, Instant};

use skiff_tests::cri::{container_config, pod_config, v1 as cri, Options, Skiffd};

fn bridge_conflist(bridge: &str, subnet: &str, ipam_dir: &std::path::Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"skiff-bridge","bridge":"{bridge}",
        "isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],
        "dataDir":"{}"}}}}]}}"#,
        ipam_dir.display()
    )
}

async fn run_pod(d: &mut Skiffd, cfg: &cri::PodSandboxConfig) -> String {
    d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(cfg.clone()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", d.daemon_log()))
    .into_inner()
    .pod_sandbox_id
}

async fn run_container(
    d: &mut Skiffd,
    sid: &str,
    pod: &cri::PodSandboxConfig,
    cfg: cri::ContainerConfig,
) -> String {
    let id =
        d.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sid.into(),
            config: Some(cfg),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", d.daemon_log()))
        .into_inner()
        .container_id;
    d.rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", d.daemon_log()));
    id
}

async fn wait_exited(d: &mut Skiffd, id: &str) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st =
            d.rt.container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pod_ip(d: &mut Skiffd, sid: &str) -> String {
    d.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: sid.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
    .network
    .expect("pod network status")
    .ip
}

#[tokio::test]
async fn two_pods_reach_each_other_over_skiff_bridge() {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist("skpods0", "10.211.7.0/24", ipam.path())),
        ..Default::default()
    })
    .await;
    d.pull_busybox().await;
    let server_pod = pod_config("server", &d.log_dir());
    let client_pod = pod_config("client", &d.log_dir());
    let s = run_pod(&mut d, &server_pod).await;
    let c = run_pod(&mut d, &client_pod).await;
    let server_ip = pod_ip(&mut d, &s).await;
    let client_ip = pod_ip(&mut d, &c).await;
    assert!(server_ip.starts_with("10.211.7."), "{server_ip}");
    assert!(client_ip.starts_with("10.211.7."), "{client_ip}");
    assert_ne!(server_ip, client_ip);
    let web = run_container(
        &mut d,
        &s,
        &server_pod,
        container_config(
            "web",
            "mkdir -p /www && echo hello-from-the-server-pod > /www/index.html && exec httpd -f -p 8080 -h /www",
        ),
    )
    .await;
    let fetch = run_container(
        &mut d,
        &c,
        &client_pod,
        container_config(
            "fetch",
            &format!(
                "for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {server_ip} 8080 | grep hello && exit 0; sleep 0.1; done; exit 1"
            ),
        ),
    )
    .await;
    let st = wait_exited(&mut d, &fetch).await;
    let log = std::fs::read_to_string(&st.log_path).unwrap_or_default();
    assert_eq!(
        st.exit_code,
        0,
        "fetch failed; log:\n{log}\n{}",
        d.daemon_log()
    );
    assert!(
        log.contains("stdout F hello-from-the-server-pod"),
        "log:\n{log}"
    );
    for (pod, ctr) in [(&s, &web), (&c, &fetch)] {
        d.rt.stop_container(cri::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 2,
        })
        .await
        .unwrap();
        d.rt.remove_container(cri::RemoveContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .unwrap();
        d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    }
    // Both addresses are back in the pool.
    let left: Vec<_> = std::fs::read_dir(ipam.path().join("pods"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "IPs still allocated: {left:?}");
}

#[tokio::test]
async fn kubelet_sequence_leaves_nothing_behind() {
    let mut d = Skiffd::start().await;
    let image_ref = d.pull_busybox().await;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let mut pod = pod_config("seq", &d.log_dir());
    pod.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let sid = run_pod(&mut d, &pod).await;
    let id = run_container(
        &mut d,
        &sid,
        &pod,
        container_config("main", "echo started; exec sleep 300"),
    )
    .await;
    let st =
        d.rt.container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let status = st.status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.image_ref, image_ref);
    assert!(status.started_at > 0);
    assert!(!st.info.is_empty(), "verbose status has info");
    let listed =
        d.rt.list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sid.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    let t0 = Instant::now();
    d.rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "sleep dies on SIGTERM"
    );
    let st = wait_exited(&mut d, &id).await;
    assert!(st.finished_at >= st.started_at);
    d.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    d.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: sid.clone(),
    })
    .await
    .unwrap();
    d.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: sid.clone(),
    })
    .await
    .unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = d.dir.to_string_lossy().into_owned();
    let left: Vec<_> = mounts.lines().filter(|l| l.contains(&dir)).collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let runtime = skiff_runtime::container::Runtime::new(d.dir.join("run/runtime"));
    assert!(runtime.list().unwrap_or_default().is_empty());
    let monitors = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&dir))
                .unwrap_or(false)
        })
        .count();
    // skiffd itself carries the directory in its command line.
    assert!(monitors <= 1, "{monitors} processes still mention {dir}");
}
