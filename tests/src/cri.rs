//! A real skiffd for the CRI tests: started on a private socket with its own state, run and image
//! directories, a real registry behind a mirror entry, and tonic clients over the unix socket.
//! Dropping it kills the daemon, force-deletes every container it left and unmounts everything under
//! its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use cri_api::v1 as cri;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::binary::workspace_dir;
use crate::registry::Registry;

pub use cri_api::v1;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The name the tests pull: a registry that does not exist, served by the test registry as its mirror,
/// as an air-gapped node serves `registry.k8s.io`.
pub const BUSYBOX: &str = "registry.skiff.test/library/busybox:latest";

/// A binary of the workspace: from `$SKIFF_BIN_DIR` when set (the benchmarks point it at a release
/// build), else from the debug build.
pub fn target_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SKIFF_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_dir().join("target"))
                .join("debug")
        });
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --workspace --bins`",
        bin.display()
    );
    bin
}

/// The plain busybox OCI layout, built once and kept for later runs (built beside, then renamed).
pub fn busybox_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = PathBuf::from("/var/tmp/skiff-test/cri-layout");
        if dir.join("index.json").is_file() {
            return dir;
        }
        let tmp = PathBuf::from(format!("{}.{}", dir.display(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let script = workspace_dir().join("tests/images/busybox-plain.sh");
        crate::registry::run(Command::new(script).arg(&tmp).arg("latest"))
            .expect("build the busybox layout");
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test binary won the race; its layout is the same.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        dir
    })
}

#[derive(Default, Clone)]
pub struct Options {
    /// A CNI network config list to install in the daemon's conf dir.
    pub cni_conflist: Option<String>,
    /// Extra lines for skiffd.toml.
    pub extra_config: String,
}

pub struct Skiffd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub registry: Registry,
    child: Option<Child>,
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
}

impl Skiffd {
    /// A daemon with the busybox image in its registry (not pulled yet) and no CNI config.
    pub async fn start() -> Skiffd {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Skiffd {
        assert!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() } == 0,
            "the CRI tests run containers and must run as root"
        );
        let registry = Registry::start().expect("start registry");
        registry
            .push(busybox_layout(), "latest", "library/busybox:latest", &[])
            .expect("push busybox");
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/cri/{}-{n}",
            std::process::id()
        ));
        if dir.exists() {
            crate::host::unmount_below(&dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        if let Some(c) = &opts.cni_conflist {
            std::fs::write(dir.join("net.d/10-test.conflist"), c).unwrap();
        }
        std::fs::write(
            dir.join("registries.toml"),
            format!(
                "[registries.\"registry.skiff.test\"]\nmirrors = [\"http://{}\"]\n",
                registry.host()
            ),
        )
        .unwrap();
        let socket = dir.join("skiff.sock");
        let config = dir.join("skiffd.toml");
        let bins = target_bin("skiffd");
        let bin_dir = bins.parent().unwrap();
        std::fs::write(
            &config,
            format!(
                "socket = \"{sock}\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
                 image_root = \"{d}/images\"\nregistries = \"{d}/registries.toml\"\n\
                 monitor = \"{bin}/skiff-monitor\"\nlog_level = \"debug\"\n{extra}\n\
                 [cni]\nconf_dir = \"{d}/net.d\"\nbin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\n\
                 cache_dir = \"{d}/cni-cache\"\n",
                sock = socket.display(),
                d = dir.display(),
                bin = bin_dir.display(),
                extra = opts.extra_config,
            ),
        )
        .unwrap();
        let child = spawn(&config, &dir).expect("start skiffd");
        let channel = connect(&socket).await.expect("connect to skiffd");
        Skiffd {
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
            dir,
            socket,
            config,
            registry,
            child: Some(child),
        }
    }

    /// The pod log directory tests should give sandboxes.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Everything skiffd wrote to stderr so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("skiffd.log")).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// SIGKILL, as a crash or an OOM kill of the daemon would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (keeping the clients' connections serviced): a graceful stop.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(st) = c.try_wait().expect("wait skiffd") {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the daemon again on the same directories and reconnects.
    pub async fn restart(&mut self) {
        self.kill9();
        self.child = Some(spawn(&self.config, &self.dir).expect("restart skiffd"));
        let channel = connect(&self.socket).await.expect("reconnect to skiffd");
        self.rt = RuntimeServiceClient::new(channel.clone());
        self.img = ImageServiceClient::new(channel);
    }

    /// Pulls the test busybox image.
    pub async fn pull_busybox(&mut self) -> String {
        self.pull_image(BUSYBOX, None).await.expect("pull busybox")
    }
}

/// The CRI calls as the tests make them. Those whose failure a test checks return the status;
/// the others panic with the daemon's log, since a failure there is a failure of the test.
impl Skiffd {
    /// PullImage of `name` with optional credentials; the image reference.
    pub async fn pull_image(
        &mut self,
        name: &str,
        auth: Option<cri::AuthConfig>,
    ) -> Result<String, Status> {
        self.img
            .pull_image(cri::PullImageRequest {
                image: image_spec(name),
                auth,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    pub async fn image_status(&mut self, name: &str, verbose: bool) -> cri::ImageStatusResponse {
        self.img
            .image_status(cri::ImageStatusRequest {
                image: image_spec(name),
                verbose,
            })
            .await
            .unwrap_or_else(|e| panic!("ImageStatus {name}: {e}"))
            .into_inner()
    }

    /// ListImages, filtered by an image name when `filter` is given.
    pub async fn list_images(&mut self, filter: Option<&str>) -> Vec<cri::Image> {
        self.img
            .list_images(cri::ListImagesRequest {
                filter: filter.map(|f| cri::ImageFilter {
                    image: image_spec(f),
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("ListImages: {e}"))
            .into_inner()
            .images
    }

    pub async fn remove_image(&mut self, name: &str) -> Result<(), Status> {
        self.img
            .remove_image(cri::RemoveImageRequest {
                image: image_spec(name),
            })
            .await
            .map(|_| ())
    }

    /// RunPodSandbox; the new sandbox's id.
    pub async fn run_pod_sandbox(
        &mut self,
        config: cri::PodSandboxConfig,
    ) -> Result<String, Status> {
        self.rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// A running pod, kept with the config its containers are created with.
    pub async fn run_pod(&mut self, config: cri::PodSandboxConfig) -> Pod {
        match self.run_pod_sandbox(config.clone()).await {
            Ok(id) => Pod { id, config },
            Err(e) => panic!("RunPodSandbox: {e}\n{}", self.daemon_log()),
        }
    }

    /// Verbose PodSandboxStatus, as kubelet asks for it.
    pub async fn pod_status(&mut self, id: &str) -> Result<cri::PodSandboxStatusResponse, Status> {
        self.rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The pod's IP, from its status.
    pub async fn pod_ip(&mut self, id: &str) -> String {
        let status = match self.pod_status(id).await {
            Ok(s) => s.status,
            Err(e) => panic!("PodSandboxStatus {id}: {e}"),
        };
        status
            .and_then(|s| s.network)
            .unwrap_or_else(|| panic!("no network status for pod {id}"))
            .ip
    }

    pub async fn stop_pod(&mut self, id: &str) -> Result<(), Status> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// RemovePodSandbox alone (skiffd stops a pod it removes).
    pub async fn remove_pod(&mut self, id: &str) -> Result<(), Status> {
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet ends a pod.
    pub async fn stop_and_remove_pod(&mut self, id: &str) {
        if let Err(e) = self.stop_pod(id).await {
            panic!("StopPodSandbox {id}: {e}\n{}", self.daemon_log());
        }
        if let Err(e) = self.remove_pod(id).await {
            panic!("RemovePodSandbox {id}: {e}\n{}", self.daemon_log());
        }
    }

    pub async fn list_pods(
        &mut self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Vec<cri::PodSandbox> {
        self.rt
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await
            .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"))
            .into_inner()
            .items
    }

    /// CreateContainer of `config` in `pod`; the new container's id.
    pub async fn create_container(
        &mut self,
        pod: &Pod,
        config: cri::ContainerConfig,
    ) -> Result<String, Status> {
        self.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) {
        let r = self
            .rt
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await;
        if let Err(e) = r {
            panic!("StartContainer {id}: {e}\n{}", self.daemon_log());
        }
    }

    /// A created and started container; its id.
    pub async fn run_container(&mut self, pod: &Pod, config: cri::ContainerConfig) -> String {
        let id = match self.create_container(pod, config).await {
            Ok(id) => id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.daemon_log()),
        };
        self.start_container(&id).await;
        id
    }

    /// The (not verbose) status of a container that exists.
    pub async fn container_status(&mut self, id: &str) -> cri::ContainerStatus {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {id} without a status"))
    }

    /// The verbose ContainerStatus, with the runtime's `info`.
    pub async fn verbose_container_status(&mut self, id: &str) -> cri::ContainerStatusResponse {
        self.rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
            .into_inner()
    }

    /// Polls the container's status until it is in `state`, for up to 30 s.
    pub async fn wait_container_state(
        &mut self,
        id: &str,
        state: cri::ContainerState,
    ) -> cri::ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.container_status(id).await;
            if s.state == state as i32 {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} never became {state:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `cmd` in the container with ExecSync until it exits 0, for up to `within`.
    pub async fn wait_exec_ok(&mut self, id: &str, cmd: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let r = self
                .rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id.into(),
                    cmd: cmd.iter().map(|c| c.to_string()).collect(),
                    timeout: 5,
                })
                .await
                .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"))
                .into_inner();
            if r.exit_code == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{cmd:?} never succeeded in {id}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_exited(&mut self, id: &str) -> cri::ContainerStatus {
        self.wait_container_state(id, cri::ContainerState::ContainerExited)
            .await
    }

    pub async fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), Status> {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<(), Status> {
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    pub async fn list_containers(
        &mut self,
        filter: Option<cri::ContainerFilter>,
    ) -> Vec<cri::Container> {
        self.rt
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .unwrap_or_else(|e| panic!("ListContainers: {e}"))
            .into_inner()
            .containers
    }

    /// A GetContainerEvents stream, subscribed from now on.
    pub async fn container_events(&mut self) -> Streaming<cri::ContainerEventResponse> {
        self.rt
            .get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("GetContainerEvents: {e}"))
            .into_inner()
    }

    /// The streaming URL an `Exec` returns.
    pub async fn exec_url(&mut self, r: cri::ExecRequest) -> String {
        let r = self.rt.exec(r).await;
        r.unwrap_or_else(|e| panic!("Exec: {e}")).into_inner().url
    }

    /// The streaming URL an `Attach` returns.
    pub async fn attach_url(&mut self, r: cri::AttachRequest) -> String {
        let r = self.rt.attach(r).await;
        r.unwrap_or_else(|e| panic!("Attach: {e}")).into_inner().url
    }
}

/// A pod sandbox the daemon runs: its id and the config it was run with.
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub config: cri::PodSandboxConfig,
}

/// The next event of a GetContainerEvents stream, or a panic once `within` has passed.
pub async fn next_event(
    events: &mut Streaming<cri::ContainerEventResponse>,
    within: Duration,
) -> cri::ContainerEventResponse {
    tokio::time::timeout(within, events.message())
        .await
        .unwrap_or_else(|_| panic!("no container event within {within:?}"))
        .expect("event stream failed")
        .expect("event stream ended")
}

fn spawn(config: &Path, dir: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("skiffd.log"))?;
    Command::new(target_bin("skiffd"))
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn skiffd")
}

/// A tonic channel over the unix socket, once the daemon answers on it.
pub async fn connect(socket: &Path) -> Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if socket.exists() {
            let path = socket.to_path_buf();
            let ch = Endpoint::try_from("http://skiffd.invalid")?
                .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await;
            if let Ok(ch) = ch {
                return Ok(ch);
            }
        }
        if Instant::now() > deadline {
            bail!("skiffd did not listen on {}", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Skiffd {
    fn drop(&mut self) {
        self.kill9();
        cleanup(&self.dir);
    }
}

/// Kills and deletes every container under `dir`'s runtime root, kills leftover monitors, unmounts.
pub fn cleanup(dir: &Path) {
    let rt = skiff_runtime::container::Runtime::new(dir.join("run/runtime"));
    if let Ok(list) = rt.list() {
        for c in list {
            let _ = rt.delete(&c.id, true);
        }
    }
    kill_processes_mentioning(dir);
    crate::host::unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Monitors and infra processes of this daemon carry its directory in their command line.
pub fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    for (pid, cmd) in processes() {
        if cmd.contains(&needle) {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Every process's pid and command line, NULs shown as spaces.
fn processes() -> Vec<(i32, String)> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            Some((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}

/// The command lines of all processes, NULs shown as spaces.
pub fn command_lines() -> Vec<String> {
    processes().into_iter().map(|(_, cmd)| cmd).collect()
}

/// A sandbox config for a pod named `name` with logs under `log_dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.join(name).to_string_lossy().into_owned(),
        labels: [("app".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// `config` on the node's network: no CNI config needed.
pub fn host_network(mut config: cri::PodSandboxConfig) -> cri::PodSandboxConfig {
    let linux = config.linux.get_or_insert_with(Default::default);
    let security = linux.security_context.get_or_insert_with(Default::default);
    security.namespace_options = Some(cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        ..Default::default()
    });
    config
}

/// The image spec naming `name`.
pub fn image_spec(name: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

/// A container config running `sh -c script` in the test busybox image.
pub fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: image_spec(BUSYBOX),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// A CNI network config list for skiff-bridge on `bridge` with host-local addresses from `subnet`,
/// kept in `ipam_dir`: each test gets its own bridge, subnet and allocation store.
pub fn bridge_conflist(bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"skiff-bridge","bridge":"{bridge}",
        "isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],
        "dataDir":"{}"}}}}]}}"#,
        ipam_dir.display()
    )
}

/// A daemon with a running host-network pod `pod` and a `sleep` container in it; returns the
/// container's id.
pub async fn sleeper(pod: &str) -> (Skiffd, String) {
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let sandbox = d.run_pod(host_network(pod_config(pod, &d.log_dir()))).await;
    let c = d
        .run_container(&sandbox, container_config("sleeper", "exec sleep 3600"))
        .await;
    (d, c)
}

/// An `Exec` request for `cmd` in container `id`, stdout always, stderr unless on a TTY.
pub fn exec_req(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> v1::ExecRequest {
    v1::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// An `Attach` request to container `id`, stdout always, stderr unless on a TTY.
pub fn attach_req(id: &str, stdin: bool, tty: bool) -> v1::AttachRequest {
    v1::AttachRequest {
        container_id: id.into(),
        stdin,
        tty,
        stdout: true,
        stderr: !tty,
    }
}
