//! What the kernel must do for pods and Services on a bridge: pass bridged traffic through
//! iptables (`br_netfilter`, `net.bridge.bridge-nf-call-iptables`) so kube-proxy's rules see it,
//! and forward between interfaces (`net.ipv4.ip_forward`, and IPv6 forwarding where the node has
//! IPv6). Set once at start. Turning IPv6 forwarding on makes the kernel ignore router
//! advertisements on interfaces with `accept_ra = 1`; those are set to 2 first, so an uplink
//! configured by advertisements keeps its addresses and default route.

use std::path::Path;

const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
const BRIDGE_NF6: &str = "/proc/sys/net/bridge/bridge-nf-call-ip6tables";
const FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const FORWARD6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
const CONF6: &str = "/proc/sys/net/ipv6/conf";

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
    if Path::new(FORWARD6).exists() && !is_one(FORWARD6) {
        problems.extend(keep_router_advertisements());
    }
    // Each setting, whether it matters without IPv6, and what goes wrong without it.
    for (file, required, without) in [
        (
            BRIDGE_NF,
            true,
            "Services are not reachable from pods on the same bridge",
        ),
        (
            BRIDGE_NF6,
            false,
            "IPv6 Services are not reachable from pods on the same bridge",
        ),
        (FORWARD, true, "pods' IPv4 traffic does not leave the node"),
        (
            FORWARD6,
            false,
            "pods' IPv6 traffic does not leave the node",
        ),
    ] {
        if let Err(e) = set(file) {
            if required || Path::new(file).exists() {
                problems.push(format!(
                    "cannot set {} to 1 ({e}): {without}",
                    sysctl_name(file)
                ));
            }
        }
    }
    for p in &problems {
        tracing::error!("{p}");
    }
    problems
}

fn set(file: &str) -> std::io::Result<()> {
    if is_one(file) {
        return Ok(());
    }
    std::fs::write(file, "1")
}

fn is_one(file: &str) -> bool {
    std::fs::read_to_string(file).is_ok_and(|v| v.trim() == "1")
}

/// `accept_ra` 1 → 2 on every interface but the templates and `lo`; what failed, one sentence each.
fn keep_router_advertisements() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(CONF6) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["all", "default", "lo"].contains(&name.as_str()) {
            continue;
        }
        let file = e.path().join("accept_ra");
        if std::fs::read_to_string(&file).is_ok_and(|v| v.trim() == "1") {
            if let Err(err) = std::fs::write(&file, "2") {
                problems.push(format!(
                    "cannot set net.ipv6.conf.{name}.accept_ra to 2 ({err}): with IPv6 forwarding on, \
                     {name} ignores router advertisements"
                ));
            }
        }
    }
    problems
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
