//! crictl's everyday commands against skiffd, one test per command. Each test makes the RPCs that
//! cri-tools' `cmd/crictl` makes for the command (named in its comment, with the request shapes the Go
//! code builds) and checks the answers the way crictl consumes them: `verbose` info values that start
//! with `{` parsed as JSON objects, ids cut to the 13 characters crictl shows and typed back, the log
//! file read at `ContainerStatus.log_path` in the CRI format, stats sampled twice.
//!
//! The configs are those users write for crictl: `docs/examples/podsandbox-config.json` and
//! `container-config.json` as crictl loads them (a `linux` section that is empty, container metadata
//! with a name only, crictl's `user_specified_image`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use skiff_tests::cri::{bridge_conflist, v1 as cri, Options, Pod, Skiffd};
use tonic::Code;

/// crictl's `truncatedIDLen`: the id length `crictl ps`, `pods`, `images` and `stats` show.
const SHOWN: usize = 13;

fn shown(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..SHOWN.min(id.len())]
}

/// `podsandbox-config.json` of crictl's docs, on the node's network unless `pod_network`.
fn crictl_pod_config(name: &str, log_dir: &Path, pod_network: bool) -> cri::PodSandboxConfig {
    let mut linux = cri::LinuxPodSandboxConfig::default();
    if !pod_network {
        linux.security_context = Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            attempt: 1,
            uid: format!("hdishd83djaidwnduwk28bcsb-{name}"),
        }),
        log_directory: log_dir.join(name).to_string_lossy().into_owned(),
        linux: Some(linux),
        ..Default::default()
    }
}

/// `container-config.json` of crictl's docs: metadata with a name only, the image as the user wrote
/// it (crictl copies it into `user_specified_image`), a log path relative to the pod's directory.
fn crictl_container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            user_specified_image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.0.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// A daemon whose registry also mirrors `docker.io`, so that `busybox` means what it means to crictl
/// users (`docker.io/library/busybox:latest`) without leaving the machine.
async fn daemon_with(opts: Options) -> Skiffd {
    let d = Skiffd::start_with(opts).await;
    let conf = d.dir.join("registries.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "[registries.\"docker.io\"]\nmirrors = [\"http://{}\"]\n",
        d.registry.host()
    ));
    std::fs::write(&conf, text).unwrap();
    d
}

async fn daemon() -> Skiffd {
    daemon_with(Options::default()).await
}

/// `crictl pull NAME`: PullImage with only the image (no auth, no pod config); the image ref.
async fn pull(d: &mut Skiffd, name: &str) -> String {
    let r = d
        .img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: name.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await;
    match r {
        Ok(r) => r.into_inner().image_ref,
        Err(e) => panic!("PullImage {name}: {e}\n{}", d.daemon_log()),
    }
}

/// `crictl runp`: RunPodSandbox with the runtime handler of `--runtime` (none).
async fn runp(d: &mut Skiffd, config: cri::PodSandboxConfig) -> Pod {
    d.run_pod(config).await
}

/// `crictl create POD-ID container.json pod.json` with the pod id as `crictl pods` shows it.
async fn create(d: &mut Skiffd, pod: &Pod, config: cri::ContainerConfig) -> String {
    let r =
        d.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: shown(&pod.id).into(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .await;
    match r {
        Ok(r) => r.into_inner().container_id,
        Err(e) => panic!("CreateContainer: {e}\n{}", d.daemon_log()),
    }
}

/// `crictl start ID` with the id as `crictl ps -a` shows it.
async fn start(d: &mut Skiffd, id: &str) {
    let r =
        d.rt.start_container(cri::StartContainerRequest {
            container_id: shown(id).into(),
        })
        .await;
    if let Err(e) = r {
        panic!("StartContainer {}: {e}\n{}", shown(id), d.daemon_log());
    }
}

/// `crictl runp` of the docs' pod config named `name`, on the node's network.
async fn runp_named(d: &mut Skiffd, name: &str) -> Pod {
    let config = crictl_pod_config(name, &d.log_dir(), false);
    runp(d, config).await
}

/// `crictl pull busybox`, `runp`, `create`, `start`: a pod and a running container in it.
async fn running(d: &mut Skiffd, name: &str, script: &str) -> (Pod, String) {
    pull(d, "busybox").await;
    let pod = runp_named(d, name).await;
    let id = create(d, &pod, crictl_container_config(name, "busybox", script)).await;
    start(d, &id).await;
    (pod, id)
}

/// What crictl's `outputStatusData` does with an `info` map: values starting with `{` must parse as
/// JSON objects (else the command fails), others are strings with their quotes trimmed.
fn crictl_status_info(info: &HashMap<String, String>) -> serde_json::Map<String, Value> {
    info.iter()
        .map(|(k, v)| {
            let value = if v.starts_with('{') {
                let parsed: serde_json::Map<String, Value> = serde_json::from_str(v)
                    .unwrap_or_else(|e| panic!("info[{k:?}] is not a JSON object: {e}: {v}"));
                Value::Object(parsed)
            } else {
                Value::String(v.trim_matches('"').to_owned())
            };
            (k.clone(), value)
        })
        .collect()
}

/// A CRI log file as kubelet's log reader (which `crictl logs` uses) parses it: every line is
/// `RFC3339Nano-time stream tag[:tag...] message`, stream `stdout` or `stderr`, tags `P` or `F`;
/// partial lines join the next. The complete lines of each stream.
fn crictl_read_log(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("crictl logs reads {}: {e}", path.display()));
    let mut out = (Vec::new(), Vec::new());
    let mut partial = (String::new(), String::new());
    for line in text.lines() {
        let mut f = line.splitn(4, ' ');
        let (time, stream, tag) = (f.next().unwrap(), f.next(), f.next());
        let msg = f.next().unwrap_or("");
        check_rfc3339_nano(time, line);
        let tags: Vec<&str> = tag.unwrap_or_default().split(':').collect();
        assert!(
            tags.iter().all(|t| *t == "P" || *t == "F"),
            "bad tag: {line:?}"
        );
        let (lines, buf) = match stream {
            Some("stdout") => (&mut out.0, &mut partial.0),
            Some("stderr") => (&mut out.1, &mut partial.1),
            _ => panic!("bad stream: {line:?}"),
        };
        buf.push_str(msg);
        if tags[0] == "F" {
            lines.push(std::mem::take(buf));
        }
    }
    out
}

/// `2006-01-02T15:04:05.999999999Z07:00`, as Go's `time.Parse(time.RFC3339Nano, ...)` takes it.
fn check_rfc3339_nano(t: &str, line: &str) {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    let rest = &t[19.min(t.len())..];
    let rest = match rest.strip_prefix('.') {
        Some(r) => {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            assert!((1..=9).contains(&n), "bad fraction: {line:?}");
            &r[n..]
        }
        None => rest,
    };
    let zone_ok = rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':');
    assert!(shape && zone_ok, "not RFC3339Nano: {line:?}");
}

async fn container_status(
    d: &mut Skiffd,
    id: &str,
    verbose: bool,
) -> Result<cri::ContainerStatusResponse, tonic::Status> {
    d.rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose,
    })
    .await
    .map(|r| r.into_inner())
}

async fn pod_status(
    d: &mut Skiffd,
    id: &str,
    verbose: bool,
) -> Result<cri::PodSandboxStatusResponse, tonic::Status> {
    d.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose,
    })
    .await
    .map(|r| r.into_inner())
}

async fn image_status(d: &mut Skiffd, name: &str) -> Option<cri::Image> {
    d.image_status(name, false).await.image
}

/// `crictl images [NAME]`: ListImages always carries a filter, with an empty name when none is given.
async fn list_images(d: &mut Skiffd, name: &str) -> Vec<cri::Image> {
    d.img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: name.into(),
                    ..Default::default()
                }),
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("ListImages {name:?}: {e}"))
        .into_inner()
        .images
}

/// `crictl ps` and its flags: ListContainers with the filter crictl builds (a RUNNING state unless
/// `-a` or `--state`).
async fn ps(d: &mut Skiffd, filter: cri::ContainerFilter) -> Vec<cri::Container> {
    d.list_containers(Some(filter)).await
}

fn running_filter() -> cri::ContainerFilter {
    cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    }
}

/// `crictl stats`: ListContainerStats with the filter crictl always sends.
async fn list_stats(d: &mut Skiffd, id: &str) -> Vec<cri::ContainerStats> {
    d.rt.list_container_stats(cri::ListContainerStatsRequest {
        filter: Some(cri::ContainerStatsFilter {
            id: id.into(),
            pod_sandbox_id: String::new(),
            label_selector: HashMap::new(),
        }),
    })
    .await
    .unwrap_or_else(|e| panic!("ListContainerStats: {e}"))
    .into_inner()
    .stats
}

// crictl info: Status{verbose: !quiet}; the status, runtime handlers and features are marshalled to
// JSON and every info value is parsed as `outputStatusData` does.
#[tokio::test]
async fn crictl_info() {
    let mut d = daemon().await;
    for verbose in [true, false] {
        let r =
            d.rt.status(cri::StatusRequest { verbose })
                .await
                .unwrap()
                .into_inner();
        let conditions = r.status.expect("status").conditions;
        let ready = conditions
            .iter()
            .find(|c| c.r#type == "RuntimeReady")
            .expect("RuntimeReady condition");
        assert!(ready.status);
        assert!(conditions.iter().any(|c| c.r#type == "NetworkReady"));
        let info = crictl_status_info(&r.info);
        assert_eq!(info.is_empty(), !verbose, "{info:?}");
        if verbose {
            assert!(info["config"]["socket"].is_string(), "{info:?}");
        }
        assert!(r.features.is_some());
    }
}

// crictl version: the client first checks the connection with Version{} and (for the image
// service) ImageFsInfo{}; then Version{version: "v1"}, printing the four fields.
#[tokio::test]
async fn crictl_version() {
    let mut d = daemon().await;
    d.rt.version(cri::VersionRequest::default()).await.unwrap();
    let fs = d
        .img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!fs.image_filesystems.is_empty());
    let v =
        d.rt.version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "skiff");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(
        !v.version.is_empty() && !v.runtime_version.is_empty(),
        "{v:?}"
    );
}

// crictl pull busybox: PullImage{image: {image: "busybox"}}; prints "Image is up to date for
// <image_ref>". A short name is docker.io/library/busybox:latest, and ImageStatus by the same short
// name finds it with that id. `--pod-config` adds the pod config; `--creds` an AuthConfig.
#[tokio::test]
async fn crictl_pull() {
    let mut d = daemon().await;
    let image_ref = pull(&mut d, "busybox").await;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let img = image_status(&mut d, "busybox")
        .await
        .expect("busybox present");
    assert_eq!(img.id, image_ref);
    assert_eq!(img.repo_tags, ["docker.io/library/busybox:latest"]);
    for name in ["docker.io/busybox", "docker.io/library/busybox:latest"] {
        assert_eq!(
            image_status(&mut d, name).await.map(|i| i.id),
            Some(image_ref.clone())
        );
    }
    let with_pod = d
        .img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "docker.io/busybox".into(),
                annotations: [("a".to_string(), "b".to_string())].into(),
                ..Default::default()
            }),
            auth: Some(cri::AuthConfig {
                username: "user".into(),
                password: "secret".into(),
                ..Default::default()
            }),
            sandbox_config: Some(crictl_pod_config("puller", &d.log_dir(), false)),
        })
        .await
        .unwrap_or_else(|e| panic!("pull with --pod-config and --creds: {e}"))
        .into_inner();
    assert_eq!(with_pod.image_ref, image_ref);
    let bad = list_images(&mut d, "nosuch").await;
    assert!(bad.is_empty());
}

// crictl images [NAME] [-q] [--digests]: ListImages{filter: {image: {image: NAME or ""}}}; columns
// IMAGE and TAG from each repo tag split at its last ':', DIGEST from the first repo digest split at
// '@', IMAGE ID the id without "sha256:" cut to 13, SIZE; `-q` prints ids.
#[tokio::test]
async fn crictl_images() {
    let mut d = daemon().await;
    let id = pull(&mut d, "busybox").await;
    let all = list_images(&mut d, "").await;
    assert_eq!(all.len(), 1, "{all:?}");
    let img = &all[0];
    assert_eq!(img.id, id);
    assert!(img.size > 0);
    for tag in &img.repo_tags {
        let (repo, tag) = tag.rsplit_once(':').expect("repo:tag");
        assert_eq!((repo, tag), ("docker.io/library/busybox", "latest"));
    }
    let digest = &img.repo_digests[0];
    let parts: Vec<&str> = digest.split('@').collect();
    assert_eq!(parts.len(), 2, "{digest}");
    assert_eq!(parts[0], "docker.io/library/busybox");
    assert!(
        parts[1].starts_with("sha256:") && parts[1].len() == 71,
        "{digest}"
    );
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        digest.as_str(),
        id.as_str(),
        shown(&id),
    ] {
        let found = list_images(&mut d, name).await;
        assert_eq!(found.len(), 1, "crictl images {name}");
        assert_eq!(found[0].id, id);
    }
    assert!(list_images(&mut d, "busybox:1.0").await.is_empty());
}

// crictl runp pod.json: RunPodSandbox{config, runtime_handler: ""}; prints the id. The docs' config
// (empty `linux`, attempt 1) on a CNI network, and `--runtime` naming an unknown handler.
#[tokio::test]
async fn crictl_runp() {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = daemon_with(Options {
        cni_conflist: Some(bridge_conflist("skcrictl0", "10.211.11.0/24", ipam.path())),
        ..Default::default()
    })
    .await;
    let config = crictl_pod_config("nginx-sandbox", &d.log_dir(), true);
    let pod = runp(&mut d, config.clone()).await;
    assert_eq!(pod.id.len(), 64);
    assert!(pod.id.bytes().all(|b| b.is_ascii_hexdigit()));
    let st = pod_status(&mut d, &pod.id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata.as_ref().map(|m| m.attempt), Some(1));
    let ip = st.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with("10.211.11."), "{ip}");
    // The least a pod.json can say: metadata (crictl adds a random uid when none is given), no
    // `linux` section, no log directory.
    let bare = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "bare".into(),
            namespace: "default".into(),
            uid: "6f1d1f5e-3c52-4b0a-9d7e-2a8f5c1b9e40".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let bare = runp(&mut d, bare).await;
    let st = pod_status(&mut d, shown(&bare.id), true).await.unwrap();
    crictl_status_info(&st.info);
    let ip = st
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(ip.starts_with("10.211.11."), "{ip}");
    d.stop_and_remove_pod(&bare.id).await;
    let e =
        d.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(crictl_pod_config("other", &d.log_dir(), false)),
            runtime_handler: "runsc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("runsc"), "{e:?}");
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl create POD container.json pod.json: CreateContainer{pod_sandbox_id as typed (the 13
// characters `crictl pods` shows), config with user_specified_image, sandbox_config from pod.json}.
// With --with-pull it first pulls with PullImage{image, sandbox_config: pod.json}.
#[tokio::test]
async fn crictl_create() {
    let mut d = daemon().await;
    let pod = runp_named(&mut d, "busybox-sandbox").await;
    let config = crictl_container_config("busybox", "docker.io/busybox", "sleep 1000");
    // Without a pull the image is missing: the error says so.
    let e =
        d.rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: shown(&pod.id).into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // --with-pull
    d.img
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: "docker.io/busybox".into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: Some(pod.config.clone()),
        })
        .await
        .unwrap();
    let id = create(&mut d, &pod, config).await;
    assert_eq!(id.len(), 64);
    let st = container_status(&mut d, &id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    assert_eq!(
        st.metadata.as_ref().map(|m| m.name.as_str()),
        Some("busybox")
    );
    assert_eq!(
        Path::new(&st.log_path),
        Path::new(&pod.config.log_directory).join("busybox.0.log")
    );
    // A container config without `linux` and without `log_path`, in a pod run without a log
    // directory: crictl's minimal configs. The container has no log then, as with containerd.
    let mut bare_pod_config = crictl_pod_config("bare", &d.log_dir(), false);
    bare_pod_config.log_directory.clear();
    let bare_pod = runp(&mut d, bare_pod_config).await;
    let mut bare = crictl_container_config("bare", "busybox", "true");
    bare.linux = None;
    bare.log_path.clear();
    let bare_id = create(&mut d, &bare_pod, bare).await;
    let st = container_status(&mut d, &bare_id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.log_path, "");
    // A pod run without a log directory whose create request carries one (crictl sends pod.json
    // again): the log goes there, as containerd puts it.
    let mut with_dir = bare_pod.clone();
    with_dir.config.log_directory = d.log_dir().join("late").to_string_lossy().into_owned();
    let late = create(
        &mut d,
        &with_dir,
        crictl_container_config("late", "busybox", "echo late"),
    )
    .await;
    let st = container_status(&mut d, &late, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(Path::new(&st.log_path), d.log_dir().join("late/late.0.log"));
    d.stop_and_remove_pod(&pod.id).await;
    d.stop_and_remove_pod(&bare_pod.id).await;
}

// crictl start ID...: StartContainer{container_id as typed}; prints the id.
#[tokio::test]
async fn crictl_start() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "start", "sleep 1000").await;
    let st = container_status(&mut d, &id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert!(st.started_at > 0);
    // Starting it again is an error crictl shows.
    let e =
        d.rt.start_container(cri::StartContainerRequest {
            container_id: shown(&id).into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // crictl exec and attach take the id as shown too: Exec/Attach answer with a streaming URL.
    let exec =
        d.rt.exec(cri::ExecRequest {
            container_id: shown(&id).into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}"))
        .into_inner();
    assert!(exec.url.starts_with("http"), "{}", exec.url);
    let attach =
        d.rt.attach(cri::AttachRequest {
            container_id: shown(&id).into(),
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Attach: {e}"))
        .into_inner();
    assert!(attach.url.starts_with("http"), "{}", attach.url);
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl ps [-a] [-q] [--id] [--pod] [--state] [--label] [--name] [--image]: ListContainers with
// the filter crictl builds; the name regex and image match are crictl's own, from metadata and from
// ImageStatus of both the `--image` value and each container's image.image.
#[tokio::test]
async fn crictl_ps() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "ps", "sleep 1000").await;
    let done = create(
        &mut d,
        &pod,
        crictl_container_config("done", "busybox", "true"),
    )
    .await;
    start(&mut d, &done).await;
    d.wait_exited(&done).await;
    let listed = ps(&mut d, running_filter()).await;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let c = &listed[0];
    assert_eq!(c.metadata.as_ref().map(|m| m.name.as_str()), Some("ps"));
    assert_eq!(c.pod_sandbox_id, pod.id);
    assert!(c.created_at > 0);
    assert_eq!(listed.len(), 1);
    // -a
    let all = ps(&mut d, cri::ContainerFilter::default()).await;
    assert_eq!(all.len(), 2);
    // --id and --pod as crictl shows them, -a
    for f in [
        cri::ContainerFilter {
            id: shown(&done).into(),
            ..Default::default()
        },
        cri::ContainerFilter {
            pod_sandbox_id: shown(&pod.id).into(),
            id: shown(&done).into(),
            ..Default::default()
        },
    ] {
        let found = ps(&mut d, f).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, done);
    }
    // --state exited
    let exited = ps(
        &mut d,
        cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerExited as i32,
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(exited.len(), 1);
    assert_eq!(exited[0].id, done);
    // --label: none of these containers has one
    let labelled = ps(
        &mut d,
        cri::ContainerFilter {
            label_selector: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert!(labelled.is_empty());
    // --image busybox: both ImageStatus calls find an image with the same id.
    let want = image_status(&mut d, "busybox").await.expect("image").id;
    for c in &all {
        let image = c.image.as_ref().expect("image spec").image.clone();
        assert_eq!(
            image_status(&mut d, &image).await.map(|i| i.id),
            Some(want.clone())
        );
        assert_eq!(c.image_id, want);
    }
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl pods [-q] [--id] [--state] [--label] [--name] [--namespace]: ListPodSandbox with a filter
// (its label selector always set); crictl drops items without metadata and prints Ready/NotReady.
#[tokio::test]
async fn crictl_pods() {
    let mut d = daemon().await;
    let a = runp_named(&mut d, "pod-a").await;
    let b = runp_named(&mut d, "pod-b").await;
    d.stop_pod(&b.id).await.unwrap();
    let all = d.list_pods(Some(cri::PodSandboxFilter::default())).await;
    assert_eq!(all.len(), 2);
    for p in &all {
        let m = p.metadata.as_ref().expect("metadata");
        assert_eq!((m.namespace.as_str(), m.attempt), ("default", 1));
        assert!(p.created_at > 0);
        assert_eq!(p.runtime_handler, "");
    }
    let ready = d
        .list_pods(Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        }))
        .await;
    assert_eq!(ready.iter().map(|p| &p.id).collect::<Vec<_>>(), [&a.id]);
    let by_id = d
        .list_pods(Some(cri::PodSandboxFilter {
            id: shown(&b.id).into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].state, cri::PodSandboxState::SandboxNotready as i32);
    d.stop_and_remove_pod(&a.id).await;
    d.stop_and_remove_pod(&b.id).await;
}

// crictl inspect ID: ContainerStatus{container_id as typed, verbose: !quiet}; the status is
// marshalled with its timestamps and the info map parsed as JSON objects.
#[tokio::test]
async fn crictl_inspect() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "inspect", "sleep 1000").await;
    let r = container_status(&mut d, shown(&id), true).await.unwrap();
    let st = r.status.expect("status");
    assert_eq!(st.id, id);
    assert!(st.created_at > 0 && st.started_at > 0 && st.finished_at == 0);
    assert!(st.image.is_some() && !st.image_ref.is_empty());
    let info = crictl_status_info(&r.info);
    assert!(!info.is_empty());
    for v in info.values() {
        assert!(v.is_object(), "{v}");
    }
    let quiet = container_status(&mut d, shown(&id), false).await.unwrap();
    assert!(quiet.info.is_empty());
    let e = container_status(&mut d, &"f".repeat(64), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl inspectp ID: PodSandboxStatus{pod_sandbox_id as typed, verbose: !quiet}; info parsed as
// JSON objects.
#[tokio::test]
async fn crictl_inspectp() {
    let mut d = daemon().await;
    let pod = runp_named(&mut d, "inspectp").await;
    let r = pod_status(&mut d, shown(&pod.id), true).await.unwrap();
    let st = r.status.expect("status");
    assert_eq!(st.id, pod.id);
    assert!(st.metadata.is_some() && st.network.is_some());
    let info = crictl_status_info(&r.info);
    assert!(!info.is_empty());
    for v in info.values() {
        assert!(v.is_object(), "{v}");
    }
    assert!(pod_status(&mut d, shown(&pod.id), false)
        .await
        .unwrap()
        .info
        .is_empty());
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl logs ID: ContainerStatus{container_id as typed, verbose: false}; an empty log_path is an
// error ("the container has not set log path"); crictl then reads that file itself in the CRI format
// (and with -f follows it while ContainerStatus says running).
#[tokio::test]
async fn crictl_logs() {
    let mut d = daemon().await;
    let long = "x".repeat(20000);
    let script = format!("echo out-1; echo err-1 >&2; echo {long}; printf no-newline");
    let (pod, id) = running(&mut d, "logs", &script).await;
    d.wait_exited(&id).await;
    let st = container_status(&mut d, shown(&id), false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(Path::new(&st.log_path).is_absolute(), "{}", st.log_path);
    let (out, err) = crictl_read_log(Path::new(&st.log_path));
    assert_eq!(out, ["out-1".to_string(), long, "no-newline".to_string()]);
    assert_eq!(err, ["err-1"]);
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl stats [ID]: ListContainerStats{filter: {id, pod_sandbox_id, label_selector}} twice, a
// second apart; for a running container the CPU timestamps must differ ("cpu stat is not updated
// during sample" otherwise), and CPU, memory and writable layer values are read through nil-safe
// getters (a missing one shows as 0).
#[tokio::test]
async fn crictl_stats() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "stats", "while :; do :; done").await;
    let first = list_stats(&mut d, "").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = list_stats(&mut d, shown(&id)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 1);
    let (a, b) = (&first[0], &second[0]);
    let attrs = b.attributes.as_ref().expect("attributes");
    assert_eq!(attrs.id, id);
    assert_eq!(
        attrs.metadata.as_ref().map(|m| m.name.as_str()),
        Some("stats")
    );
    let cpu = |s: &cri::ContainerStats| {
        let c = s.cpu.as_ref().expect("cpu");
        (
            c.timestamp,
            c.usage_core_nano_seconds.as_ref().expect("usage").value,
        )
    };
    let (t0, u0) = cpu(a);
    let (t1, u1) = cpu(b);
    assert!(t1 > t0, "cpu stat is not updated during sample");
    assert!(u1 > u0 && u1 > 0, "{u0} {u1}");
    let mem = b.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref());
    assert!(mem.is_some_and(|m| m.value > 0));
    let layer = b.writable_layer.as_ref().expect("writable layer");
    assert!(layer.used_bytes.is_some() && layer.inodes_used.is_some());
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl stop [-t N] ID... and stop -a: StopContainer{container_id as typed, timeout: N (0 by
// default)}; -a lists RUNNING containers first.
#[tokio::test]
async fn crictl_stop() {
    let mut d = daemon().await;
    let (pod, id) = running(
        &mut d,
        "stop",
        "trap 'exit 3' TERM; while :; do sleep 0.1; done",
    )
    .await;
    let other = create(
        &mut d,
        &pod,
        crictl_container_config("other", "busybox", "sleep 1000"),
    )
    .await;
    start(&mut d, &other).await;
    d.stop_container(shown(&id), 10).await.unwrap();
    let st = container_status(&mut d, &id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 3);
    // stop -a
    for c in ps(&mut d, running_filter()).await {
        d.stop_container(&c.id, 0).await.unwrap();
    }
    assert!(ps(&mut d, running_filter()).await.is_empty());
    // Stopping again, or what does not exist, is not an error.
    d.stop_container(shown(&other), 0).await.unwrap();
    d.stop_container(&"e".repeat(64), 0).await.unwrap();
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl rm [-f] [-a] ID...: ContainerStatus{id as typed, verbose: false} (running → "please stop it
// first", or StopContainer{timeout 0} with -f), RemoveContainer{id as typed}, then crictl removes the
// log file itself; -a lists with ListContainers(nil).
#[tokio::test]
async fn crictl_rm() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "rm", "echo bye; sleep 1000").await;
    let st = container_status(&mut d, shown(&id), false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    // rm -f
    d.stop_container(shown(&id), 0).await.unwrap();
    d.remove_container(shown(&id)).await.unwrap();
    let e = container_status(&mut d, &id, false).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        Path::new(&st.log_path).is_file(),
        "the log file is crictl's to remove"
    );
    std::fs::remove_file(&st.log_path).unwrap();
    // rm -a
    let c2 = create(
        &mut d,
        &pod,
        crictl_container_config("c2", "busybox", "true"),
    )
    .await;
    let all = d.list_containers(None).await;
    assert_eq!(all.iter().map(|c| &c.id).collect::<Vec<_>>(), [&c2]);
    for c in all {
        d.remove_container(&c.id).await.unwrap();
    }
    assert!(d.list_containers(None).await.is_empty());
    d.remove_container(shown(&c2)).await.unwrap();
    d.stop_and_remove_pod(&pod.id).await;
}

// crictl stopp ID...: StopPodSandbox{pod_sandbox_id as typed}; prints "Stopped sandbox ID".
#[tokio::test]
async fn crictl_stopp() {
    let mut d = daemon().await;
    let (pod, id) = running(&mut d, "stopp", "sleep 1000").await;
    d.stop_pod(shown(&pod.id)).await.unwrap();
    let st = pod_status(&mut d, &pod.id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    let c = container_status(&mut d, &id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(c.state, cri::ContainerState::ContainerExited as i32);
    d.stop_pod(shown(&pod.id)).await.unwrap();
    d.remove_pod(&pod.id).await.unwrap();
}

// crictl rmp [-f] [-a] ID...: ListPodSandbox(nil) for -a, PodSandboxStatus{id, verbose: false} (a
// READY pod is "running, please stop it first" unless -f stops it), RemovePodSandbox{id as typed}.
#[tokio::test]
async fn crictl_rmp() {
    let mut d = daemon().await;
    let (pod, _) = running(&mut d, "rmp", "sleep 1000").await;
    let other = runp_named(&mut d, "other").await;
    let st = pod_status(&mut d, shown(&pod.id), false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    // rmp -f ID
    d.stop_pod(shown(&pod.id)).await.unwrap();
    d.remove_pod(shown(&pod.id)).await.unwrap();
    let e = pod_status(&mut d, &pod.id, false).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(d.list_containers(None).await.is_empty());
    // rmp -a -f
    for p in d.list_pods(None).await {
        let st = pod_status(&mut d, &p.id, false)
            .await
            .unwrap()
            .status
            .unwrap();
        if st.state == cri::PodSandboxState::SandboxReady as i32 {
            d.stop_pod(&p.id).await.unwrap();
        }
        d.remove_pod(&p.id).await.unwrap();
    }
    assert!(d.list_pods(None).await.is_empty());
    d.remove_pod(shown(&other.id)).await.unwrap();
}

// crictl rmi NAME|ID...: ImageStatus{image as typed} ("no such image" when absent), then
// RemoveImage{image as typed}; prints "Deleted: <repo tag>" for each repo tag of the status.
// rmi -a: ListImages(nil) and each id.
#[tokio::test]
async fn crictl_rmi() {
    let mut d = daemon().await;
    let id = pull(&mut d, "busybox").await;
    for name in ["busybox", shown(&id)] {
        let img = image_status(&mut d, name)
            .await
            .unwrap_or_else(|| panic!("{name} present"));
        assert_eq!(img.repo_tags, ["docker.io/library/busybox:latest"]);
        d.remove_image(name).await.unwrap();
        assert!(image_status(&mut d, name).await.is_none(), "{name} removed");
        assert!(list_images(&mut d, "").await.is_empty());
        pull(&mut d, "busybox").await;
    }
    // rmi -a
    let listed = d
        .img
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    for img in listed {
        d.remove_image(&img.id).await.unwrap();
    }
    assert!(list_images(&mut d, "").await.is_empty());
    assert!(image_status(&mut d, "busybox").await.is_none());
}

// critest "Idempotence": StopPodSandbox, RemovePodSandbox, StopContainer and RemoveContainer of a
// random UUID, and RemoveImage of 64 zeros (twice), all succeed. An id prefix that names two objects
// is refused rather than guessed.
#[tokio::test]
async fn critest_idempotence_and_ambiguous_prefixes() {
    let mut d = daemon().await;
    let uuid = "3f1c5e8a-7b2d-4c9e-a0f1-5d6e7f8a9b0c";
    d.stop_pod(uuid).await.unwrap();
    d.remove_pod(uuid).await.unwrap();
    d.stop_container(uuid, 0).await.unwrap();
    d.remove_container(uuid).await.unwrap();
    let zeros = "0".repeat(64);
    d.remove_image(&zeros).await.unwrap();
    d.remove_image(&zeros).await.unwrap();
    // Seventeen pods: two of them share a first hex digit, which then names both.
    let mut pods = Vec::new();
    for i in 0..17 {
        let p = runp_named(&mut d, &format!("amb-{i}")).await;
        pods.push(p.id);
    }
    let twins = (0..16)
        .map(|n| format!("{n:x}"))
        .find(|digit| {
            pods.iter()
                .filter(|id| id.starts_with(digit.as_str()))
                .count()
                > 1
        })
        .expect("pigeonhole");
    let e = pod_status(&mut d, &twins, false).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = d.stop_pod(&twins).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for id in &pods {
        d.stop_and_remove_pod(shown(id)).await;
    }
    assert!(d.list_pods(None).await.is_empty());
}

/// The host processes whose command line is exactly `cmd` (NULs as spaces, trailing one dropped).
fn processes_running(cmd: &str) -> usize {
    skiff_tests::cri::command_lines()
        .iter()
        .filter(|c| c.trim_end() == cmd)
        .count()
}

// critest "Container": a hostPath volume whose host path is a symlink, mounted with
// `selinux_relabel` (critest always sets it; a host without SELinux ignores it), seen through
// ExecSync; ExecSync past its timeout fails and leaves no process behind; stats of created and
// started containers with a nil filter and a label selector.
#[tokio::test]
async fn critest_volume_exec_timeout_and_stats() {
    let mut d = daemon().await;
    pull(&mut d, "busybox").await;
    let pod = runp_named(&mut d, "critest").await;
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("testVolume.file"), b"").unwrap();
    let link = host.path().with_extension("symlink");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(host.path(), &link).unwrap();
    let target = link.to_string_lossy().into_owned();
    let mut config = crictl_container_config("volume", "busybox", "sleep 1000");
    config.labels = [("foo".to_string(), "bar".to_string())].into();
    config.mounts = vec![cri::Mount {
        host_path: target.clone(),
        container_path: target.clone(),
        selinux_relabel: true,
        ..Default::default()
    }];
    let id = create(&mut d, &pod, config).await;
    let idle = create(
        &mut d,
        &pod,
        crictl_container_config("idle", "busybox", "sleep 1000"),
    )
    .await;
    start(&mut d, &id).await;
    let ls =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["ls".into(), target.clone()],
            timeout: 30,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ls.exit_code, 0, "{}", String::from_utf8_lossy(&ls.stderr));
    assert_eq!(
        String::from_utf8_lossy(&ls.stdout).trim(),
        "testVolume.file"
    );
    let slow =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sleep".into(), "4321".into()],
            timeout: 1,
        })
        .await;
    assert!(slow.is_err(), "{slow:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_running("sleep 4321") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out exec lives on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all =
        d.rt.list_container_stats(cri::ListContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    let ids: Vec<&str> = all
        .iter()
        .filter_map(|s| s.attributes.as_ref().map(|a| a.id.as_str()))
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&idle.as_str()),
        "{ids:?}"
    );
    let started = all
        .iter()
        .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == id))
        .unwrap();
    assert!(started.cpu.as_ref().is_some_and(|c| c.timestamp > 0));
    assert!(started.memory.as_ref().is_some_and(|m| m.timestamp > 0));
    for (value, found) in [("bar", true), ("baz", false)] {
        let stats =
            d.rt.list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(cri::ContainerStatsFilter {
                    label_selector: [("foo".to_string(), value.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        let hit = stats
            .iter()
            .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == id));
        assert_eq!(hit, found, "foo={value}");
    }
    let one =
        d.rt.container_stats(cri::ContainerStatsRequest {
            container_id: shown(&id).into(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .expect("stats");
    assert_eq!(one.attributes.map(|a| a.id), Some(id.clone()));
    d.stop_and_remove_pod(&pod.id).await;
    let _ = std::fs::remove_file(&link);
}

// critest "Image Manager": an image pulled by digest has no repo tag and that digest as its only repo
// digest; ImageStatus answers the same image for its id, each repo tag and each repo digest; one
// image pulled under three tags is one image with three repo tags; RemoveImage by id leaves
// ImageStatus empty.
#[tokio::test]
async fn critest_image_references() {
    let mut d = daemon().await;
    for tag in ["1.0", "2.0"] {
        d.registry
            .push(
                skiff_tests::cri::busybox_layout(),
                "latest",
                &format!("library/busybox:{tag}"),
                &[],
            )
            .expect("push another tag");
    }
    let id = pull(&mut d, "busybox").await;
    let digest = image_status(&mut d, "busybox").await.unwrap().repo_digests[0].clone();
    let by_digest_name = digest.replace("docker.io/library/busybox@", "busybox@");
    d.remove_image(&id).await.unwrap();
    assert!(image_status(&mut d, "busybox").await.is_none());
    // By digest only.
    assert_eq!(pull(&mut d, &by_digest_name).await, id);
    let img = image_status(&mut d, &by_digest_name).await.unwrap();
    assert!(img.repo_tags.is_empty(), "{img:?}");
    assert_eq!(img.repo_digests, std::slice::from_ref(&digest));
    // Every reference answers the same status.
    for tag in ["busybox", "busybox:1.0", "busybox:2.0"] {
        assert_eq!(pull(&mut d, tag).await, id);
    }
    let status = image_status(&mut d, "busybox").await.unwrap();
    let mut tags = status.repo_tags.clone();
    tags.sort();
    assert_eq!(
        tags,
        [
            "docker.io/library/busybox:1.0",
            "docker.io/library/busybox:2.0",
            "docker.io/library/busybox:latest"
        ]
    );
    let mut names = vec![status.id.clone()];
    names.extend(status.repo_tags.iter().cloned());
    names.extend(status.repo_digests.iter().cloned());
    for name in names {
        assert_eq!(
            image_status(&mut d, &name).await.as_ref(),
            Some(&status),
            "{name}"
        );
    }
    let listed = d
        .img
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter::default()),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed, std::slice::from_ref(&status));
    d.remove_image(&status.id).await.unwrap();
    assert!(image_status(&mut d, "busybox:1.0").await.is_none());
    assert!(list_images(&mut d, "").await.is_empty());
}
