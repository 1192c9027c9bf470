//! `failSwapOn`: with swap on, skiffd as the kubelet refuses to start, as kubelet does, unless
//! the configuration or `--fail-swap-on=false` allows it. The swap is a small file of the test's,
//! turned off again when the test ends; this file holds no other test, so no node of another test
//! sees it (test binaries run one after the other).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use skiff_tests::k8s::control_plane::free_port;
use skiff_tests::k8s::skiff_node::NodeDir;

struct Swap(PathBuf);

impl Swap {
    fn on() -> Swap {
        let path = PathBuf::from(format!("/var/tmp/skiff-test/swap-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sh = format!(
            "dd if=/dev/zero of={p} bs=1M count=16 status=none && chmod 600 {p} && \
             mkswap {p} >/dev/null && swapon {p}",
            p = path.display()
        );
        let swap = Swap(path);
        let ok = Command::new("sh").args(["-c", &sh]).status().unwrap();
        assert!(ok.success(), "swapon of a test file failed");
        swap
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).status();
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn swap_on_stops_the_kubelet_unless_allowed() {
    let node = NodeDir::new();
    node.write_config(free_port(std::net::Ipv4Addr::LOCALHOST));
    let swap = Swap::on();

    let (ok, _, err) = node.run_kubelet(&[]);
    assert!(!ok, "started with swap on:\n{err}");
    assert!(
        err.contains("swap") && err.contains(&swap.0.display().to_string()),
        "{err}"
    );

    // Allowed by the flag, it starts (and goes on to look for its credentials).
    let _allowed = node.spawn(&["--fail-swap-on=false".to_string()]);
    std::thread::sleep(Duration::from_secs(3));
    let log = node.log();
    drop(swap);
    assert!(!log.contains("swap is not supported"), "{log}");
}
