//! ADD+DEL latency of skiff-bridge against the reference bridge + host-local,
//! interleaved in one run, 100 ADDs into a warm bridge (also interleaved),
//! and skiff-bridge's own per-phase times. Root only; runs entirely inside
//! network namespaces it creates.
//!
//! cargo bench -p skiff-cni --bench add_del
//!
//! Both plugins get the same netconf (bridge, isGateway, host-local with one
//! range and a default route) and the same IPAM dataDir, on tmpfs
//! (/dev/shm) unless SKBENCH_DATA_DIR names another base directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SKIFF: &str = env!("CARGO_BIN_EXE_skiff-bridge");
const REFERENCE: &str = "/usr/lib/cni/bridge";
const ROUNDS: usize = 40;
const WARM: usize = 100;
const PHASE_ROUNDS: usize = 20;

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

/// Runs one plugin command from the calling thread (which sits in the node
/// netns); returns its wall time and stderr.
fn run(
    plugin: &str,
    cmd: &str,
    id: &str,
    netns: &str,
    stdin: &str,
    log: bool,
) -> (Duration, String) {
    let mut c = Command::new(plugin);
    c.env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if log {
        c.env("SKIFF_CNI_LOG", "skiff_cni=debug");
    }
    let t = Instant::now();
    let mut c = c.spawn().expect("spawn plugin");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = c.wait_with_output().expect("wait");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{plugin} {cmd}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (took, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn call(plugin: &str, cmd: &str, id: &str, netns: &str, stdin: &str) -> Duration {
    run(plugin, cmd, id, netns, stdin, false).0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// Parses a tracing duration such as `1.23ms`, `456µs` or `78.9ns`.
fn parse_duration(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let scale = match unit {
        "ns" => 1e-6,
        "µs" | "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1000.0,
        _ => return None,
    };
    Some(v * scale)
}

/// (phase name, ms) for every `phase{name=...}: close time.busy=.. time.idle=..` line.
fn phases(stderr: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.split("phase{name=").nth(1) else {
            continue;
        };
        let Some(name) = rest.split('}').next() else {
            continue;
        };
        let field = |key: &str| {
            line.split(key)
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(parse_duration)
        };
        if let (Some(busy), Some(idle)) = (field("time.busy="), field("time.idle=")) {
            out.push((name.trim_matches('"').to_string(), busy + idle));
        }
    }
    out
}

fn print_phases(pod: &Ns, sk: &str, label: &str) {
    let mut table: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for i in 0..PHASE_ROUNDS {
        let id = format!("p{i}");
        for cmd in ["ADD", "DEL"] {
            let (wall, err) = run(SKIFF, cmd, &id, &pod.path(), sk, true);
            table
                .entry(format!("{cmd} (process wall)"))
                .or_default()
                .push(wall);
            for (name, t) in phases(&err) {
                table
                    .entry(format!("{cmd} {name}"))
                    .or_default()
                    .push(Duration::from_secs_f64(t / 1000.0));
            }
        }
    }
    println!("skiff-bridge phases, {label}, median of {PHASE_ROUNDS} (SKIFF_CNI_LOG=debug):");
    for (k, v) in table {
        println!("  {k:24} {:8.2} ms", ms(median(v)));
    }
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
    let base = std::env::var("SKBENCH_DATA_DIR").unwrap_or_else(|_| "/dev/shm".into());
    let dir = std::path::Path::new(&base).join(format!("skbench-{tag}"));
    let dir_s = dir.to_str().expect("utf8").to_string();
    println!("IPAM dataDir (both plugins): {dir_s}");
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
    let mut t: [Vec<Duration>; 4] = Default::default();
    for i in 0..ROUNDS {
        let id = format!("c{i}");
        for (k, (p, c)) in [(SKIFF, &sk), (REFERENCE, &rf)].into_iter().enumerate() {
            t[2 * k].push(call(p, "ADD", &id, &pod.path(), c));
            t[2 * k + 1].push(call(p, "DEL", &id, &pod.path(), c));
        }
    }
    let sums = |a: &[Duration], d: &[Duration]| -> Vec<Duration> {
        a.iter().zip(d).map(|(a, d)| *a + *d).collect()
    };
    let (s_sum, r_sum) = (sums(&t[0], &t[1]), sums(&t[2], &t[3]));
    let [s_add, s_del, r_add, r_del] = t.map(median);
    let (s_med, r_med) = (median(s_sum), median(r_sum));
    println!("ADD+DEL one attachment, median of {ROUNDS} interleaved rounds:");
    println!("                         skiff-bridge   reference   ratio");
    for (what, s, r) in [
        ("ADD", s_add, r_add),
        ("DEL", s_del, r_del),
        ("ADD+DEL", s_med, r_med),
    ] {
        println!(
            "  {what:20} {:10.2} ms {:8.2} ms {:7.2}",
            ms(s),
            ms(r),
            ratio(s, r)
        );
    }

    let pods: Vec<[Ns; 2]> = (0..WARM)
        .map(|i| {
            [
                Ns::new(format!("skbench-s{i}-{tag}")),
                Ns::new(format!("skbench-r{i}-{tag}")),
            ]
        })
        .collect();
    let mut add = [Duration::ZERO; 2];
    let mut del = [Duration::ZERO; 2];
    for (i, pair) in pods.iter().enumerate() {
        for (k, (p, c)) in [(SKIFF, &sk), (REFERENCE, &rf)].into_iter().enumerate() {
            add[k] += call(p, "ADD", &format!("w{i}"), &pair[k].path(), c);
        }
    }
    for (i, pair) in pods.iter().enumerate() {
        for (k, (p, c)) in [(SKIFF, &sk), (REFERENCE, &rf)].into_iter().enumerate() {
            del[k] += call(p, "DEL", &format!("w{i}"), &pair[k].path(), c);
        }
    }
    println!("{WARM} ADDs into a warm bridge, then {WARM} DELs (interleaved, summed):");
    for (what, v) in [("ADDs", add), ("DELs", del)] {
        println!(
            "  {what:6} skiff-bridge {:8.1} ms ({:.2} ms each)  reference {:8.1} ms ({:.2} ms each)  ratio {:.2}",
            ms(v[0]),
            ms(v[0]) / WARM as f64,
            ms(v[1]),
            ms(v[1]) / WARM as f64,
            ratio(v[0], v[1])
        );
    }
    drop(pods);
    print_phases(&pod, &sk, "same netconf");
    // Everything skiff-bridge can put in nftables, which the comparison
    // above leaves out (the reference's ipMasq runs iptables).
    let mut full: serde_json::Value = serde_json::from_str(&sk).expect("netconf");
    full["ipMasq"] = true.into();
    full["macspoofchk"] = true.into();
    full["runtimeConfig"] =
        serde_json::json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}]});
    print_phases(
        &pod,
        &full.to_string(),
        "ipMasq + macspoofchk + one portMapping",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
