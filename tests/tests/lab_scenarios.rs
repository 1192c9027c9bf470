//! The lab's scenarios (`vagrant/scenarios/run`, 1–6) against a real cluster here: a control plane
//! and two skiff nodes, each in a network namespace of its own on one lan, with kubeadm's kube-proxy
//! on both and the lab's images (`scripts/lab-images`: busybox, nginx) served as docker.io's. The
//! script's hooks are this harness's: a node is stopped by stopping its skiffd and started by
//! starting it again in its namespace; "the host" is the lan's namespace. Ignored by default: the
//! scenarios take several minutes (scenario 6 waits out the node controller's grace period).
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_tests::binary::workspace_dir;
use skiff_tests::k8s::netns_node::{self, Lan, NetnsNode};
use skiff_tests::k8s::skiff_node::{get_json, wait_for};
use skiff_tests::k8s::ControlPlane;
use skiff_tests::registry::Registry;

/// Runs one of the repository's scripts with `args`, which must succeed.
fn script(name: &str, args: &[&str]) {
    let out = Command::new(workspace_dir().join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kubeadm's kube-proxy DaemonSet, Ready on every node.
fn kube_proxy(cp: &ControlPlane, nodes: &[&NetnsNode]) {
    cp.init_phase(&["addon", "kube-proxy"]);
    for n in nodes {
        let name = n.joined.name.as_str();
        wait_for(
            &format!("kube-proxy Ready on {name}"),
            Duration::from_secs(180),
            || {
                let pods = get_json(
                    cp,
                    &["-n", "kube-system", "pods", "-l", "k8s-app=kube-proxy"],
                )?;
                pods["items"]
                    .as_array()?
                    .iter()
                    .any(|p| {
                        p["spec"]["nodeName"] == name
                            && p["status"]["conditions"].as_array().is_some_and(|c| {
                                c.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                    })
                    .then_some(())
            },
        );
    }
}

/// The hooks' side: `hook stop|start NODE` leaves a request file in `dir` and waits until the
/// test has acted on it and removed it.
fn hook_script(dir: &Path) -> String {
    let hook = dir.join("node-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -eu\nreq={d}/$2.$1\ntouch \"$req\"\nwhile [ -e \"$req\" ]; do sleep 0.2; done\n",
            d = dir.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    hook.display().to_string()
}

/// Acts on the requests the hooks left: stops or starts the named node's skiffd.
fn serve_hooks(dir: &Path, nodes: &mut [NetnsNode]) {
    for n in nodes.iter_mut() {
        let stop = dir.join(format!("{}.stop", n.joined.name));
        if stop.exists() {
            n.joined.stop();
            std::fs::remove_file(&stop).unwrap();
        }
        let start = dir.join(format!("{}.start", n.joined.name));
        if start.exists() {
            n.restart();
            std::fs::remove_file(&start).unwrap();
        }
    }
}

#[test]
#[ignore = "the lab's six scenarios take several minutes; run with --ignored"]
fn lab_scenarios_pass_on_two_netns_skiff_nodes() {
    let registry = Registry::start().expect("a registry");
    script("scripts/cluster-images", &[&registry.host()]);
    script("scripts/lab-images", &[&registry.host()]);
    let cp = ControlPlane::start();
    let lan = Lan::create(&cp);
    let mirror = lan.forward(registry.port).to_string();
    let pid = std::process::id();
    let config = "evictionHard: {imagefs.available: 1%, nodefs.available: 1%}";
    let mut nodes = vec![
        netns_node::join(&cp, &lan, 0, &format!("lab-a-{pid}"), Some(&mirror), config),
        netns_node::join(&cp, &lan, 1, &format!("lab-b-{pid}"), Some(&mirror), config),
    ];
    kube_proxy(&cp, &[&nodes[0], &nodes[1]]);

    let hooks = cp.dir.join("lab-hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hook_script(&hooks);
    let workers: Vec<&str> = nodes.iter().map(|n| n.joined.name.as_str()).collect();
    let log = cp.dir.join("scenarios.log");
    let mut run = Command::new(workspace_dir().join("vagrant/scenarios/run"))
        .env(
            "KUBECTL",
            format!("kubectl --kubeconfig {}", cp.admin_kubeconfig().display()),
        )
        .env("LAB_WORKERS", workers.join(" "))
        .env("LAB_HOST_RUN", format!("ip netns exec {}", lan.ns.name))
        .env("LAB_NODE_STOP", format!("{hook} stop"))
        .env("LAB_NODE_START", format!("{hook} start"))
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run vagrant/scenarios/run");
    let deadline = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the scenarios ran past 30 min");
        serve_hooks(&hooks, &mut nodes);
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap();
    println!("{out}");
    assert!(status.success(), "vagrant/scenarios/run: {status}\n{out}");
    for n in 1..=6 {
        assert!(
            out.contains(&format!("scenario {n}: ok (")),
            "scenario {n} not ok:\n{out}"
        );
    }
}
