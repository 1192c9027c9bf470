//! The peer node's runtime: Debian's containerd 1.6 with its CRI plugin and runc, the same CNI
//! plugin as skiff's nodes (skiff-bridge), pulling through the same local registry (which also
//! mirrors `registry.k8s.io`, for the cluster's own images).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_tests::cri::{bridge_conflist, busybox_layout, target_bin};
use skiff_tests::k8s::netns_node::Netns;
use skiff_tests::k8s::Daemon;
use skiff_tests::registry::Registry;

/// containerd needs a pause image: busybox sleeping as PID 1 stands in for it.
pub const PAUSE: &str = "registry.skiff.test/library/pause:bench";

/// Pushes the stand-in pause image (busybox with `sleep` as its command) to `registry`.
pub fn push_pause(registry: &Registry) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let layout = tmp.path().join("layout");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(busybox_layout())
        .arg(&layout)
        .status()?;
    if !copied.success() {
        bail!("copy the busybox layout");
    }
    let image = format!("{}:latest", layout.display());
    let umoci = Command::new("umoci")
        .args(["config", "--image", &image, "--tag", "bench"])
        .args(["--config.cmd", "sleep", "--config.cmd", "2147483647"])
        .status()
        .context("umoci")?;
    if !umoci.success() {
        bail!("umoci config of the pause image");
    }
    registry.push(&layout, "bench", "library/pause:bench", &[])?;
    Ok(())
}

pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The pods' bridge skiff-bridge creates on the host: left behind, its route to the pod subnet
    /// would shadow the next run's. (In a namespace, the bridge goes with the namespace.)
    bridge: Option<String>,
    daemon: Option<Daemon>,
}

impl Containerd {
    /// containerd on the host, its pods on skiff-bridge over 10.217.0.0/16.
    pub fn start(registry: &Registry) -> Result<Containerd> {
        let dir = Self::dir("containerd")?;
        let bridge = format!("skb{}", std::process::id() % 100_000);
        std::fs::write(
            dir.join("net.d/10-pods.conflist"),
            bridge_conflist(&bridge, "10.217.0.0/16", &dir.join("ipam")),
        )?;
        Self::launch(dir, &registry.host(), None, Some(bridge))
    }

    /// containerd inside `netns` (so are the CNI plugin's host ends and hostNetwork pods), pulling
    /// from `registry` (host:port as seen from there), with no network config yet: see
    /// [`Containerd::conf_dir`].
    pub fn start_in(netns: &Netns, registry: &str) -> Result<Containerd> {
        let dir = Self::dir(&format!("containerd-{}", netns.name))?;
        Self::launch(dir, registry, Some(netns), None)
    }

    /// The CNI conf dir containerd watches.
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    /// A fresh directory for one containerd, with every CNI plugin (Debian's and skiff-bridge).
    fn dir(tag: &str) -> Result<PathBuf> {
        let dir = PathBuf::from(format!("/var/tmp/skiff-bench/{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["net.d", "bin"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        for p in std::fs::read_dir("/usr/lib/cni")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::os::unix::fs::symlink(p.path(), dir.join("bin").join(p.file_name()));
        }
        std::os::unix::fs::symlink(target_bin("skiff-bridge"), dir.join("bin/skiff-bridge"))?;
        Ok(dir)
    }

    fn launch(
        dir: PathBuf,
        registry: &str,
        netns: Option<&Netns>,
        bridge: Option<String>,
    ) -> Result<Containerd> {
        let socket = dir.join("containerd.sock");
        std::fs::write(dir.join("config.toml"), config(&dir, registry))?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(dir.join("config.toml"));
        if let Some(ns) = netns {
            ns.enter_on_exec(&mut cmd);
        }
        let daemon = Daemon::spawn("containerd", &mut cmd, &dir);
        wait_path(&socket, Duration::from_secs(30))?;
        Ok(Containerd {
            dir,
            socket,
            bridge,
            daemon: Some(daemon),
        })
    }

    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, Daemon::pid)
    }
}

fn config(dir: &Path, registry: &str) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/bin"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.skiff.test"]
    endpoint = ["http://{registry}"]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."registry.k8s.io"]
    endpoint = ["http://{registry}"]
"#
    )
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Pods removed through the CRI while containerd runs: the CNI plugin takes their network
        // down, and containerd unmounts their namespaces from /run/netns.
        let _ = Command::new(skiff_tests::k8s::bin::path("crictl"))
            .arg("--runtime-endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["rmp", "--force", "--all"])
            .output();
        drop(self.daemon.take());
        // Shims outlive containerd by design: end them and what they run, then the mounts.
        let dir = self.dir.to_string_lossy().into_owned();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("containerd-shim-runc-v2.*{dir}")])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        skiff_tests::host::unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip")
                .args(["link", "del", bridge])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Waits until `path` exists.
pub fn wait_path(path: &Path, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !path.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear within {within:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
