//! ADD+DEL latency of skiff-bridge against the reference bridge + host-local,
//! interleaved in one run, and 100 ADDs into a warm bridge. Root only; runs
//! entirely inside network namespaces it creates.
//!
//! cargo bench -p skiff-cni --bench add_del

use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff-bridge");
const REFERENCE: &str = "/usr/lib/cni/bridge";
const ROUNDS: usize = 40;
const WARM: usize = 100;

struct Ns(String);

impl Ns {
    fn new(name: String) -> Ns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Ns(name)
    }
    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn conf(ty: &str, dir: &str, name: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"{name}","type":"{ty}","bridge":"br-{name}","isGateway":true,
        "ipam":{{"type":"host-local","dataDir":"{dir}","ranges":[[{{"subnet":"10.{}.0.0/16"}}]],
        "routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
        if ty == "bridge" { 31 } else { 32 }
    )
}

/// Runs one plugin command from the calling thread (which sits in the node netns).
fn call(plugin: &str, cmd: &str, id: &str, netns: &str, stdin: &str) -> Duration {
    let t = Instant::now();
    let mut c = Command::new(plugin)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = c.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{plugin} {cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // cargo test probes benches; nothing to run there.
    }
    let tag = std::process::id();
    let node = Ns::new(format!("skbench-node-{tag}"));
    let file = std::fs::File::open(node.path()).expect("open node netns");
    // SAFETY: the bench is single-threaded; moving its only thread into the
    // node netns keeps every plugin and its netlink traffic there.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns");
    let dir = std::env::temp_dir().join(format!("skbench-{tag}"));
    let dir_s = dir.to_str().expect("utf8").to_string();
    let (sk, rf) = (
        conf("skiff-bridge", &dir_s, "sk"),
        conf("bridge", &dir_s, "rf"),
    );

    let pod = Ns::new(format!("skbench-pod-{tag}"));
    // Warm up both (bridge creation, page cache).
    for (p, c) in [(SKIFF, &sk), (REFERENCE, &rf)] {
        call(p, "ADD", "warm", &pod.path(), c);
        call(p, "DEL", "warm", &pod.path(), c);
    }
    let (mut s_t, mut r_t) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let id = format!("c{i}");
        s_t.push(
            call(SKIFF, "ADD", &id, &pod.path(), &sk) + call(SKIFF, "DEL", &id, &pod.path(), &sk),
        );
        r_t.push(
            call(REFERENCE, "ADD", &id, &pod.path(), &rf)
                + call(REFERENCE, "DEL", &id, &pod.path(), &rf),
        );
    }
    let (s_med, r_med) = (median(s_t), median(r_t));
    println!("ADD+DEL one attachment, median of {ROUNDS} interleaved rounds:");
    println!("  skiff-bridge           {:8.2} ms", ms(s_med));
    println!("  reference bridge+h-l   {:8.2} ms", ms(r_med));
    println!(
        "  ratio                  {:8.2}",
        s_med.as_secs_f64() / r_med.as_secs_f64()
    );

    let pods: Vec<Ns> = (0..WARM)
        .map(|i| Ns::new(format!("skbench-w{i}-{tag}")))
        .collect();
    let mut totals = Vec::new();
    for (p, c) in [(SKIFF, &sk), (REFERENCE, &rf)] {
        let t = Instant::now();
        for (i, pod) in pods.iter().enumerate() {
            call(p, "ADD", &format!("w{i}"), &pod.path(), c);
        }
        totals.push(t.elapsed());
        for (i, pod) in pods.iter().enumerate() {
            call(p, "DEL", &format!("w{i}"), &pod.path(), c);
        }
    }
    println!("{WARM} ADDs into a warm bridge:");
    println!(
        "  skiff-bridge           {:8.1} ms ({:.2} ms/ADD)",
        ms(totals[0]),
        ms(totals[0]) / WARM as f64
    );
    println!(
        "  reference bridge+h-l   {:8.1} ms ({:.2} ms/ADD)",
        ms(totals[1]),
        ms(totals[1]) / WARM as f64
    );
    println!(
        "  ratio                  {:8.2}",
        totals[0].as_secs_f64() / totals[1].as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
