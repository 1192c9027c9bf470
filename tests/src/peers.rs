//! Other container tools driving skiff (podman, containerd and its runc shim, crictl): finding their
//! binaries, and the private CNI network each test gives them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The path of `bin` on PATH; a missing peer fails the test with how to get it, never skips it.
pub fn require(bin: &str, how: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{bin} is not on PATH: {how}"))
}

/// A CNI bridge network of the reference plugins (bridge, host-local, portmap) on bridge `bridge` with
/// addresses from `subnet`, allocated in `ipam_dir`. Dropping it deletes the bridge.
pub struct RefBridge {
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    ipam_dir: PathBuf,
}

impl RefBridge {
    pub fn new(name: &str, bridge: &str, subnet: &str, ipam_dir: &Path) -> RefBridge {
        RefBridge {
            name: name.into(),
            bridge: bridge.into(),
            subnet: subnet.into(),
            ipam_dir: ipam_dir.into(),
        }
    }

    /// The network config list, as podman and containerd read it from their CNI conf dir.
    pub fn conflist(&self) -> String {
        format!(
            r#"{{"cniVersion":"0.4.0","name":"{name}","plugins":[
  {{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"hairpinMode":true,
    "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],
             "dataDir":"{ipam}"}}}},
  {{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            name = self.name,
            bridge = self.bridge,
            subnet = self.subnet,
            ipam = self.ipam_dir.display(),
        )
    }
}

impl Drop for RefBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
    }
}

/// The body of `http://addr/`, retried until it answers or `within` passes.
pub fn http_get(addr: &str, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &format!("http://{addr}/")])
            .output()
            .map_err(|e| format!("running curl: {e}"))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() >= deadline {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
