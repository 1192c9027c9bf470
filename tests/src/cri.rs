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

use crate::binary::workspace_dir;
use crate::registry::Registry;

pub use cri_api::v1;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The name the tests pull: a registry that does not exist, served by the test registry as its mirror,
/// as an air-gapped node serves `registry.k8s.io`.
pub const BUSYBOX: &str = "registry.skiff.test/library/busybox:latest";

pub fn target_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"));
    let bin = target.join("debug").join(name);
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
        self.img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("pull busybox")
            .into_inner()
            .image_ref
    }
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
fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
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

/// A container config running `sh -c script` in the test busybox image.
pub fn container_config(name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}
