//! Whole pods through the CRI, as kubelet drives them: two pods on a skiff-bridge network reaching
//! each other, and the everyday sequence from RunPodSandbox to RemovePodSandbox leaving nothing behind.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use skiff_tests::cri::{
    bridge_conflist, command_lines, container_config, host_network, pod_config, v1 as cri, Options,
    Skiffd,
};

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
    let s = d.run_pod(server_pod).await;
    let c = d.run_pod(client_pod).await;
    let server_ip = d.pod_ip(&s.id).await;
    let client_ip = d.pod_ip(&c.id).await;
    assert!(server_ip.starts_with("10.211.7."), "{server_ip}");
    assert!(client_ip.starts_with("10.211.7."), "{client_ip}");
    assert_ne!(server_ip, client_ip);
    let serve = "mkdir -p /www && echo hello-from-the-server-pod > /www/index.html && exec httpd -f -p 8080 -h /www";
    let web = d.run_container(&s, container_config("web", serve)).await;
    let get = format!(
        "for i in $(seq 50); do printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {server_ip} 8080 | grep hello && exit 0; sleep 0.1; done; exit 1"
    );
    let fetch = d.run_container(&c, container_config("fetch", &get)).await;
    let st = d.wait_exited(&fetch).await;
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
        d.stop_container(ctr, 2).await.unwrap();
        d.remove_container(ctr).await.unwrap();
        d.stop_and_remove_pod(&pod.id).await;
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
    let pod = d
        .run_pod(host_network(pod_config("seq", &d.log_dir())))
        .await;
    let id = d
        .run_container(
            &pod,
            container_config("main", "echo started; exec sleep 300"),
        )
        .await;
    let st = d.verbose_container_status(&id).await;
    let status = st.status.unwrap();
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.image_ref, image_ref);
    assert!(status.started_at > 0);
    assert!(!st.info.is_empty(), "verbose status has info");
    let listed = d
        .list_containers(Some(cri::ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }))
        .await;
    assert_eq!(listed.len(), 1);
    let t0 = Instant::now();
    d.stop_container(&id, 10).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "sleep dies on SIGTERM"
    );
    let st = d.wait_exited(&id).await;
    assert!(st.finished_at >= st.started_at);
    d.remove_container(&id).await.unwrap();
    d.stop_and_remove_pod(&pod.id).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = d.dir.to_string_lossy().into_owned();
    let left: Vec<_> = mounts.lines().filter(|l| l.contains(&dir)).collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let runtime = skiff_runtime::container::Runtime::new(d.dir.join("run/runtime"));
    assert!(runtime.list().unwrap_or_default().is_empty());
    let monitors = command_lines().iter().filter(|c| c.contains(&dir)).count();
    // skiffd itself carries the directory in its command line.
    assert!(monitors <= 1, "{monitors} processes still mention {dir}");
}
