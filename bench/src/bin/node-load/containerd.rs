//! The peer node's runtime: Debian's containerd 1.6 with its CRI plugin and runc, the same CNI
//! plugin as skiff's nodes (skiff-bridge), pulling through the same local registry.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use skiff_tests::cri::{bridge_conflist, busybox_layout, target_bin};
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
    /// The pods' bridge skiff-bridge creates: left behind, its route to the pod subnet would shadow
    /// the next run's.
    bridge: String,
    daemon: Option<Daemon>,
}

impl Containerd {
    pub fn start(registry: &Registry) -> Result<Containerd> {
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-bench/containerd-{}",
            std::process::id()
        ));
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
        let bridge = format!("skb{}", std::process::id() % 100_000);
        std::fs::write(
            dir.join("net.d/10-pods.conflist"),
            bridge_conflist(&bridge, "10.217.0.0/16", &dir.join("ipam")),
        )?;
        let socket = dir.join("containerd.sock");
        std::fs::write(dir.join("config.toml"), config(&dir, &registry.host()))?;
        let daemon = Daemon::spawn(
            "containerd",
            Command::new("containerd")
                .arg("--config")
                .arg(dir.join("config.toml")),
            &dir,
        );
        crate::wait_path(&socket, Duration::from_secs(30))?;
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

fn config(dir: &std::path::Path, registry: &str) -> String {
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
"#
    )
}

impl Drop for Containerd {
    fn drop(&mut self) {
        drop(self.daemon.take());
        // Shims outlive containerd by design: end them and what they run, then the mounts.
        let dir = self.dir.to_string_lossy().into_owned();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("containerd-shim-runc-v2.*{dir}")])
            .status();
        std::thread::sleep(Duration::from_millis(500));
        skiff_tests::host::unmount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
