//! The pod lifecycle beyond start and stop, against a real control plane with skiffd as the node's
//! kubelet: images pulled with the pod's `imagePullSecrets` from a registry that wants credentials,
//! restartable init containers (sidecars) in order, `activeDeadlineSeconds`, a disk emptyDir past its
//! `sizeLimit` (eviction), an OOM-killed container,
//! a Job that completes.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use skiff_tests::cri::{self, v1 as criv1, BUSYBOX};
use skiff_tests::k8s::pod_cluster::{busybox_registry, PodCluster};
use skiff_tests::k8s::pod_json::{condition, waiting_reason};
use skiff_tests::k8s::skiff_node::{get_json, wait_for, NodeDir};
use skiff_tests::registry::auth::htpasswd_line;
use skiff_tests::registry::{Registry, RegistryOptions};

/// A pod of one busybox container running `script`, with `extra` spec lines (two-space indented).
fn pod(name: &str, image: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
{extra}  containers:
  - name: main
    image: {image}
    command: [sh, -c, '{script}']
"
    )
}

/// A registry that wants Basic credentials (alice / s3cret), serving busybox as `private/busybox:v1`.
fn private_registry() -> Registry {
    let htpasswd = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    std::fs::write(&htpasswd, htpasswd_line("alice", "s3cret")).unwrap();
    let path = htpasswd.keep().unwrap();
    let reg = Registry::start_with(RegistryOptions {
        htpasswd: Some(path),
        ..Default::default()
    })
    .expect("start the authenticating registry");
    reg.push(
        cri::busybox_layout(),
        "latest",
        "private/busybox:v1",
        &["--dest-creds", "alice:s3cret"],
    )
    .expect("push busybox with credentials");
    reg
}

const SIDECAR_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: sidecar
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  initContainers:
  - name: side
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: [sh, -c, 'exec sleep 3600']
  - name: after
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'true']
  containers:
  - name: main
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'exec sleep 3600']
";

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: done
spec:
  backoffLimit: 0
  template:
    spec:
      automountServiceAccountToken: false
      restartPolicy: Never
      initContainers:
      - name: side
        image: registry.skiff.test/library/busybox:latest
        imagePullPolicy: IfNotPresent
        restartPolicy: Always
        command: [sh, -c, 'exec sleep 3600']
      containers:
      - name: work
        image: registry.skiff.test/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'echo finished']
";

#[test]
fn pod_lifecycle_on_a_skiff_node() {
    let private = private_registry();
    let mut c = PodCluster::builder("life-main")
        .kubelet_config(|dir| {
            let manifests = dir.join("manifests");
            std::fs::create_dir_all(&manifests).unwrap();
            format!("staticPodPath: {}\n", manifests.display())
        })
        .start();
    let image = format!("{}/private/busybox:v1", private.host());
    c.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", private.host()),
        "--docker-username=alice",
        "--docker-password=s3cret",
    ]);
    let always = "  imagePullSecrets: [{name: regcred}]\n";
    c.apply(&pod("with-secret", &image, "exec sleep 3600", always));
    // Always pulled: the image the first pod pulled must not serve this one.
    let no_secret = pod("without-secret", &image, "exec sleep 3600", "")
        .replace("    command:", "    imagePullPolicy: Always\n    command:");
    c.apply(&no_secret);
    c.apply(SIDECAR_POD);
    c.apply(&pod(
        "deadline",
        BUSYBOX,
        "exec sleep 3600",
        "  activeDeadlineSeconds: 8\n",
    ));
    // A disk emptyDir filled past its sizeLimit: the pod is evicted.
    c.apply(
        &pod(
            "hoarder",
            BUSYBOX,
            "dd if=/dev/zero of=/scratch/fill bs=1M count=4; exec sleep 3600",
            "  volumes: [{name: scratch, emptyDir: {sizeLimit: 1Mi}}]\n",
        )
        .replace(
            "    command:",
            "    volumeMounts: [{name: scratch, mountPath: /scratch}]\n    command:",
        ),
    );
    c.apply(
        &pod(
            "oom",
            BUSYBOX,
            "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
            "  restartPolicy: Never\n",
        )
        .replace(
            "    command:",
            "    resources: {limits: {memory: 24Mi}}\n    command:",
        ),
    );
    c.apply(JOB);
    c.apply(&pod("guaranteed", BUSYBOX, "exec sleep 3600", "").replace(
        "    command:",
        "    resources: {limits: {cpu: 500m, memory: 64Mi}}\n    command:",
    ));
    c.apply(&pod("burstable", BUSYBOX, "exec sleep 3600", "").replace(
        "    command:",
        "    resources: {requests: {cpu: 100m}}\n    command:",
    ));

    // imagePullSecrets: the secret's credentials reach the registry; without them, ErrImagePull.
    c.until_pod("with-secret", "Running", Duration::from_secs(90), |p| {
        (p["status"]["phase"] == "Running").then_some(())
    });
    let reason = c.until_pod(
        "without-secret",
        "a pull error",
        Duration::from_secs(60),
        |p| waiting_reason(p, 0).filter(|r| r == "ErrImagePull" || r == "ImagePullBackOff"),
    );
    let p = c.get(&["pod", "without-secret"]).unwrap();
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason == "ImagePullBackOff" || message.contains("401") || message.contains("nauthorized"),
        "{reason}: {message}"
    );

    // A sidecar: started first, `after` only once it runs, and still running beside `main`.
    let p = c.until_pod(
        "sidecar",
        "Running and Ready",
        Duration::from_secs(60),
        |p| {
            (p["status"]["phase"] == "Running" && condition(p, "Ready") == "True")
                .then(|| p.clone())
        },
    );
    assert_eq!(condition(&p, "Initialized"), "True");
    let side = &p["status"]["initContainerStatuses"][0];
    assert_eq!(side["name"], "side");
    assert!(side["state"]["running"].is_object(), "{side}");
    let after = &p["status"]["initContainerStatuses"][1];
    assert_eq!(after["state"]["terminated"]["exitCode"], 0, "{after}");
    let ctrs = c.containers("sidecar");
    let created = |n: &str| ctrs[n][0].created_at;
    assert!(created("side") < created("after"), "{ctrs:?}");
    assert!(created("after") < created("main"), "{ctrs:?}");
    for n in ["side", "main"] {
        assert_eq!(
            ctrs[n][0].state,
            criv1::ContainerState::ContainerRunning as i32,
            "{n}"
        );
    }

    // Deleted: `main` stops first, the sidecar after it (each waits out the 2 s grace: sleep as
    // its namespace's init ignores SIGTERM).
    c.kubectl_ok(&["delete", "pod", "sidecar", "--wait=false"]);
    let (mut side_outlived_main, mut main_outlived_side) = (false, false);
    let running = criv1::ContainerState::ContainerRunning as i32;
    wait_for(
        "the sidecar pod's containers gone",
        Duration::from_secs(60),
        || {
            let now = c.containers("sidecar");
            let up = |n: &str| {
                now.get(n)
                    .is_some_and(|v| v.iter().any(|x| x.state == running))
            };
            side_outlived_main |= up("side") && !up("main") && now.contains_key("main");
            main_outlived_side |= up("main") && !up("side") && now.contains_key("side");
            now.is_empty().then_some(())
        },
    );
    assert!(side_outlived_main && !main_outlived_side);

    // activeDeadlineSeconds: Failed, DeadlineExceeded, its container killed.
    let p = c.until_pod(
        "deadline",
        "DeadlineExceeded",
        Duration::from_secs(60),
        |p| (p["status"]["reason"] == "DeadlineExceeded").then(|| p.clone()),
    );
    assert_eq!(p["status"]["phase"], "Failed");
    let p = c.until_pod(
        "deadline",
        "its container killed",
        Duration::from_secs(30),
        |p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]
                .is_object()
                .then(|| p.clone())
        },
    );
    assert_eq!(p["status"]["phase"], "Failed", "the phase stays Failed");

    // The emptyDir past its sizeLimit: Evicted with kubelet's message, its container killed.
    let p = c.until_pod("hoarder", "Evicted", Duration::from_secs(60), |p| {
        (p["status"]["reason"] == "Evicted").then(|| p.clone())
    });
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(
        p["status"]["message"],
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". "
    );
    c.until_pod(
        "hoarder",
        "its container killed",
        Duration::from_secs(30),
        |p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]
                .is_object()
                .then_some(())
        },
    );

    // The OOM killer's victim is reported as such.
    let p = c.until_pod("oom", "terminated", Duration::from_secs(60), |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"]
            .is_object()
            .then(|| p.clone())
    });
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(p["status"]["phase"], "Failed");

    pod_cgroups(&mut c);

    // A Job (with a sidecar, stopped once the work is done) completes.
    let job = wait_for("the Job Complete", Duration::from_secs(90), || {
        let j = c.get(&["job", "done"])?;
        let complete = j["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True");
        complete.then_some(j)
    });
    assert_eq!(job["status"]["succeeded"], 1, "{job}");
    let pods = get_json(&c.cp, &["-n", &c.ns, "pods", "-l", "job-name=done"]).unwrap();
    assert_eq!(pods["items"][0]["status"]["phase"], "Succeeded");

    static_pod(&mut c);
}

/// A static pod from a manifest file runs and has a mirror pod; a deleted mirror comes back while
/// the pod keeps running; the file removed, the pod and its mirror go.
fn static_pod(c: &mut PodCluster) {
    let file = c.node.node.dir.join("manifests/web.yaml");
    // Written beside (hidden: skipped) and renamed, so that skiffd never reads half a manifest.
    let tmp = c.node.node.dir.join("manifests/.web.yaml.tmp");
    std::fs::write(
        &tmp,
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: {}
  labels: {{app: web}}
spec:
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'exec sleep 3600']
",
            c.ns
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let name = format!("web-{}", c.node.name);
    let first = c.until_pod(&name, "a Running mirror", Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Running").then(|| p.clone())
    });
    let a = &first["metadata"]["annotations"];
    assert_eq!(a["kubernetes.io/config.source"], "file", "{a}");
    assert!(a["kubernetes.io/config.mirror"].is_string(), "{a}");
    assert_eq!(
        a["kubernetes.io/config.mirror"],
        a["kubernetes.io/config.hash"]
    );
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(first["spec"]["nodeName"], c.node.name.as_str());
    let running = c.containers(&name)["main"][0].id.clone();

    c.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    let old_uid = first["metadata"]["uid"].clone();
    c.until_pod(&name, "the mirror back", Duration::from_secs(60), |p| {
        (p["metadata"]["uid"] != old_uid
            && p["metadata"]["deletionTimestamp"].is_null()
            && p["status"]["phase"] == "Running")
            .then_some(())
    });
    let now = c.containers(&name);
    assert_eq!(now["main"].len(), 1, "{now:?}");
    assert_eq!(
        now["main"][0].id, running,
        "the static pod was not restarted"
    );

    std::fs::remove_file(&file).unwrap();
    wait_for("the mirror gone", Duration::from_secs(60), || {
        c.get(&["pod", &name]).is_none().then_some(())
    });
    wait_for(
        "the static pod's containers gone",
        Duration::from_secs(60),
        || c.containers(&name).is_empty().then_some(()),
    );
}

/// The pod's cgroup directory in the v1 hierarchy `controller`.
fn pod_cgroup(c: &PodCluster, controller: &str, class: &str, uid: &str) -> PathBuf {
    let mut d = PathBuf::from("/sys/fs/cgroup").join(controller);
    d.push(c.node.node.cgroup_root());
    d.push("kubepods");
    if !class.is_empty() {
        d.push(class);
    }
    d.join(format!("pod{uid}"))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

/// Each QoS class's pods below `kubepods` with the pod-level figures, the containers below their
/// pod's cgroup, and the pod cgroup gone with the pod.
fn pod_cgroups(c: &mut PodCluster) {
    let mut uids = HashMap::new();
    for (name, class, qos) in [
        ("guaranteed", "", "Guaranteed"),
        ("burstable", "burstable", "Burstable"),
        ("with-secret", "besteffort", "BestEffort"),
    ] {
        let p = c.until_pod(name, "Running", Duration::from_secs(60), |p| {
            (p["status"]["phase"] == "Running").then(|| p.clone())
        });
        assert_eq!(p["status"]["qosClass"], qos, "{name}");
        let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
        let id = c.containers(name)["main"][0].id.clone();
        for controller in ["cpu", "memory", "pids"] {
            let dir = pod_cgroup(c, controller, class, &uid);
            assert!(
                dir.join(&id).is_dir(),
                "{name}: container {id} not below {}",
                dir.display()
            );
        }
        uids.insert(name, (class, uid));
    }
    let (class, uid) = &uids["guaranteed"];
    let cpu = pod_cgroup(c, "cpu", class, uid);
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    let mem = pod_cgroup(c, "memory", class, uid);
    assert_eq!(
        read(&mem, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    let (class, uid) = &uids["burstable"];
    let cpu = pod_cgroup(c, "cpu", class, uid);
    assert_eq!(read(&cpu, "cpu.shares"), "102");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "-1");
    let (class, uid) = &uids["with-secret"];
    assert_eq!(read(&pod_cgroup(c, "cpu", class, uid), "cpu.shares"), "2");
    c.kubectl_ok(&["delete", "pod", "guaranteed", "--wait=true"]);
    let (class, uid) = &uids["guaranteed"];
    let gone = pod_cgroup(c, "memory", class, uid);
    wait_for("the pod cgroup removed", Duration::from_secs(30), || {
        (!gone.exists()).then_some(())
    });
}

/// Static pods need no API server: with the one its kubeconfig names unreachable, skiffd runs the
/// manifest's pod, and stops it when the file goes.
#[test]
fn static_pods_run_without_the_api_server() {
    let registry = busybox_registry();
    let node = NodeDir::with_registry(Some(&registry.host()));
    let healthz = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (healthz_port, dead_port) = (
        healthz.local_addr().unwrap().port(),
        dead.local_addr().unwrap().port(),
    );
    drop((healthz, dead));
    node.write_config(healthz_port);
    let manifests = node.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let config = node.var("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "{text}staticPodPath: {}\ncgroupRoot: /{}\npodLogsDir: {}\n",
            manifests.display(),
            node.cgroup_root(),
            node.dir.join("pod-logs").display()
        ),
    )
    .unwrap();
    std::fs::write(
        node.etc("kubelet.conf"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: https://127.0.0.1:{dead_port}\n    \
             insecure-skip-tls-verify: true\ncontexts:\n- name: n\n  context: {{cluster: k, user: n}}\n\
             current-context: n\nusers:\n- name: n\n  user: {{token: abcdef.0123456789abcdef}}\n"
        ),
    )
    .unwrap();
    let tmp = manifests.join(".web.json.tmp");
    std::fs::write(
        &tmp,
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web"}},
               "spec": {{"containers": [{{"name": "main", "image": "{BUSYBOX}",
               "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", "exec sleep 3600"]}}]}}}}"#
        ),
    )
    .unwrap();
    let file = manifests.join("web.json");
    std::fs::rename(&tmp, &file).unwrap();
    let mut d = node.spawn(&["--hostname-override=skiff-offline".into()]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let list = || -> Vec<criv1::Container> {
        rt.block_on(async {
            let ch = cri::connect(&node.socket()).await.unwrap();
            let mut rt = criv1::runtime_service_client::RuntimeServiceClient::new(ch);
            let filter = criv1::ContainerFilter {
                label_selector: [(
                    "io.kubernetes.pod.name".to_string(),
                    "web-skiff-offline".to_string(),
                )]
                .into(),
                ..Default::default()
            };
            rt.list_containers(criv1::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .map(|r| r.into_inner().containers)
            .unwrap_or_default()
        })
    };
    let running = criv1::ContainerState::ContainerRunning as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !list().iter().any(|c| c.state == running) {
        d.assert_running();
        assert!(
            Instant::now() < deadline,
            "no static pod:\n{}",
            d.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        node.log().contains("watch pods bound to the node"),
        "the API server is down"
    );
    std::fs::remove_file(&file).unwrap();
    wait_for("the static pod gone", Duration::from_secs(60), || {
        list().is_empty().then_some(())
    });
    d.assert_running();
}
