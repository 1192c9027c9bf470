//! What the kernel must do for pods and Services on a bridge: pass bridged traffic through
//! iptables (`br_netfilter`, `net.bridge.bridge-nf-call-iptables`) so kube-proxy's rules see it,
//! and forward between interfaces (`net.ipv4.ip_forward`). Set once at start.

use std::path::Path;

const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
const BRIDGE_NF6: &str = "/proc/sys/net/bridge/bridge-nf-call-ip6tables";
const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const FORWARD6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Loads `br_netfilter` if its settings are absent, then sets them and forwarding; returns what
/// could not be done, one sentence each (logged here too).
pub fn prepare() -> Vec<String> {
    let mut problems = Vec::new();
    if !Path::new(BRIDGE_NF).exists() {
        if let Err(e) = load_module("br_netfilter") {
            problems.push(format!(
                "cannot load the br_netfilter module ({e}): Services are not reachable from pods on the same bridge"
            ));
        }
    }
    for (file, required) in [
        (BRIDGE_NF, true),
        (BRIDGE_NF6, false),
        (FORWARD, true),
        (FORWARD6, false),
    ] {
        if let Err(e) = set(file) {
            if required || Path::new(file).exists() {
                problems.push(format!("cannot set {} to 1: {e}", sysctl_name(file)));
            }
        }
    }
    for p in &problems {
        tracing::error!("{p}");
    }
    problems
}

fn set(file: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(file)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(file, "1")
}

/// `net.ipv4.ip_forward` for `/proc/sys/net/ipv4/ip_forward`.
fn sysctl_name(file: &str) -> String {
    file.trim_start_matches("/proc/sys/").replace('/', ".")
}

fn load_module(name: &str) -> Result<(), String> {
    let out = std::process::Command::new("modprobe")
        .arg(name)
        .output()
        .map_err(|e| format!("modprobe: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sysctl_names() {
        assert_eq!(super::sysctl_name(super::FORWARD), "net.ipv4.ip_forward");
        assert_eq!(
            super::sysctl_name(super::BRIDGE_NF),
            "net.bridge.bridge-nf-call-iptables"
        );
    }
}
