//! Exec and port-forward through a real skiffd: the CRI call returns a URL on the streaming server,
//! and a client speaking the Kubernetes protocols (SPDY/3.1, WebSocket v5, port-forward tunnelled
//! over WebSocket) runs commands in a container and reaches a server in a pod.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use skiff_tests::cri::{
    attach_req, bridge_conflist, container_config, exec_req, host_network, pod_config, sleeper,
    v1 as cri, Options, Skiffd,
};
use skiff_tests::stream::{
    exit_code, spdy_session, tls_connect, tls_files, upgrade, upgrade_on, websocket, websocket_tls,
    ws_close_stdin, ws_collect, ws_send, In, Spdy, Transport, DICTIONARY, SPDY_UPGRADE,
};
use tonic::Code;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// `yes 0123456789abcdef` output.
fn is_lines(out: &[u8]) -> bool {
    let line = b"0123456789abcdef\n";
    out.iter()
        .enumerate()
        .all(|(i, b)| *b == line[i % line.len()])
}

#[tokio::test]
async fn exec_over_websocket_v5_and_spdy_with_stdin_and_exit_codes() {
    let (mut d, c) = sleeper("exec").await;
    let script = "cat; echo to-stderr >&2; exit 3";

    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", script], true, false))
        .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (mut ws, proto) = websocket(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert_eq!(proto, "v5.channel.k8s.io");
    ws_send(&mut ws, 0, b"hello over ").await;
    ws_send(&mut ws, 0, b"websocket").await;
    ws_close_stdin(&mut ws).await;
    let got = ws_collect(&mut ws).await;
    assert_eq!(got.stdout, b"hello over websocket");
    assert_eq!(got.stderr, b"to-stderr\n");
    assert_eq!(exit_code(&got.status).as_deref(), Some("3"));
    // client-go takes a close without a status code (1005) for a failed stream.
    assert_eq!(
        got.close,
        Some(1000),
        "the session must end with a normal closure"
    );

    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", script], true, false))
        .await;
    let mut sp = spdy_session(&url).await;
    let error = sp.open(&[("streamtype", "error")]).await;
    let stdin = sp.open(&[("streamtype", "stdin")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let stderr = sp.open(&[("streamtype", "stderr")]).await;
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in big.chunks(32 * 1024) {
        sp.data(stdin, false, chunk).await;
    }
    sp.data(stdin, true, b"").await;
    let got = sp.collect(&[stdout, stderr, error]).await;
    assert!(got[0] == big, "stdout: {} bytes back", got[0].len());
    assert_eq!(got[1], b"to-stderr\n");
    assert_eq!(exit_code(&got[2]).as_deref(), Some("3"));
    // The server keeps its half of stdin open while the command runs: client-go closes its stdin as
    // soon as the server's FIN arrives, cutting off input it has not sent yet.
    let order = |id| sp.fins.iter().position(|x| *x == id);
    assert!(
        order(stdin) > order(stdout),
        "stdin finished early: {:?}",
        sp.fins
    );

    // Success reports no exit code; echo needs no stdin.
    let url = d
        .exec_url(exec_req(&c, &["echo", "hi", "there"], false, false))
        .await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    let got = ws_collect(&mut ws).await;
    assert_eq!(got.stdout, b"hi there\n");
    assert_eq!(exit_code(&got.status), None);

    // 50 MiB of output arrive whole, read from the command's pipe in pipefuls, over both
    // transports.
    let total = 50usize << 20;
    let cmd = format!("yes 0123456789abcdef | head -c {total}");
    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", &cmd], false, false))
        .await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    let got = ws_collect(&mut ws).await;
    assert_eq!(got.stdout.len(), total);
    assert!(is_lines(&got.stdout));
    assert_eq!(
        exit_code(&got.status),
        None,
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", &cmd], false, false))
        .await;
    let mut sp = spdy_session(&url).await;
    let error = sp.open(&[("streamtype", "error")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let stderr = sp.open(&[("streamtype", "stderr")]).await;
    let got = sp.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0].len(), total);
    assert!(is_lines(&got[0]));
    assert_eq!(
        exit_code(&got[2]),
        None,
        "{}",
        String::from_utf8_lossy(&got[1])
    );

    // The command gets SIGPIPE as usual (it is not left ignored by the helper that started it), in
    // ExecSync too.
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: c.clone(),
            cmd: s(&["sh", "-c", "yes | head -c 4"]),
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.exit_code, &r.stdout[..]), (0, &b"y\ny\n"[..]));

    // The URL was spent by the first connection.
    let (_tcp, head) = upgrade(&url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 404"), "reused token: {head}");
}

#[tokio::test]
async fn exec_with_a_tty_follows_resizes() {
    let (mut d, c) = sleeper("exec").await;
    let script = "read line; stty size; [ -t 0 ] && echo is-a-tty; exit 4";
    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", script], true, true))
        .await;
    let mut sp = spdy_session(&url).await;
    let error = sp.open(&[("streamtype", "error")]).await;
    let stdin = sp.open(&[("streamtype", "stdin")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let resize = sp.open(&[("streamtype", "resize")]).await;
    sp.data(resize, false, br#"{"Width":123,"Height":45}"#)
        .await;
    // The size is applied before the line that lets the shell go on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sp.data(stdin, false, b"go\n").await;
    let got = sp.collect(&[stdout, error]).await;
    let out = String::from_utf8_lossy(&got[0]);
    let status = String::from_utf8_lossy(&got[1]);
    assert!(
        out.contains("45 123"),
        "{out:?} {status}\n{}",
        d.daemon_log()
    );
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert_eq!(exit_code(&got[1]).as_deref(), Some("4"));
}

#[tokio::test]
async fn exec_with_a_tty_starts_at_the_clients_first_size() {
    let (mut d, c) = sleeper("exec").await;
    // No input to wait for: the command runs at once, and must see the size sent with the streams.
    let url = d
        .exec_url(exec_req(&c, &["stty", "size"], true, true))
        .await;
    let mut sp = spdy_session(&url).await;
    let error = sp.open(&[("streamtype", "error")]).await;
    let _stdin = sp.open(&[("streamtype", "stdin")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let resize = sp.open(&[("streamtype", "resize")]).await;
    sp.data(resize, false, br#"{"Width":111,"Height":37}"#)
        .await;
    let got = sp.collect(&[stdout, error]).await;
    assert_eq!(String::from_utf8_lossy(&got[0]), "37 111\r\n");
    assert_eq!(exit_code(&got[1]), None);
}

#[tokio::test]
async fn exec_requests_are_checked_as_kubelet_does() {
    let (mut d, c) = sleeper("exec").await;
    let code = |r: Result<tonic::Response<cri::ExecResponse>, tonic::Status>| {
        r.map(|_| ()).unwrap_err().code()
    };
    let r = d.rt.exec(exec_req("nosuch", &["true"], false, false)).await;
    assert_eq!(code(r), Code::NotFound);
    let r = d.rt.exec(exec_req(&c, &[], false, false)).await;
    assert_eq!(code(r), Code::InvalidArgument);
    let mut bad = exec_req(&c, &["true"], false, true);
    bad.stderr = true;
    assert_eq!(code(d.rt.exec(bad).await), Code::InvalidArgument);
    let mut none = exec_req(&c, &["true"], false, false);
    none.stdout = false;
    none.stderr = false;
    assert_eq!(code(d.rt.exec(none).await), Code::InvalidArgument);
    let attach = d.rt.attach(attach_req(&c, true, false)).await;
    // The container was created without stdin.
    assert_eq!(attach.unwrap_err().code(), Code::InvalidArgument);

    d.stop_container(&c, 0).await.unwrap();
    let r = d.rt.exec(exec_req(&c, &["true"], false, false)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
}

/// A pod with a container created with stdin (and a TTY if asked) running `script`.
async fn interactive(d: &mut Skiffd, script: &str, tty: bool) -> String {
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("attach", &d.log_dir())))
        .await;
    let mut config = container_config("interactive", script);
    config.stdin = true;
    config.tty = tty;
    d.run_container(&pod, config).await
}

/// The next binary message of a WebSocket, whatever its channel.
async fn next_binary(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Option<Vec<u8>> {
    use futures_util::StreamExt;
    loop {
        match ws.next().await? {
            Ok(tokio_tungstenite::tungstenite::Message::Binary(b)) => return Some(b.to_vec()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn attach_over_websocket_feeds_stdin_and_ends_with_the_container() {
    let mut d = Skiffd::start().await;
    let script = "while read line; do [ \"$line\" = quit ] && exit 0; echo out:$line; echo err:$line >&2; done";
    let c = interactive(&mut d, script, false).await;
    let url = d.attach_url(attach_req(&c, true, false)).await;
    assert!(url.contains("/attach/"), "{url}");
    let (mut ws, proto) = websocket(&url, "v5.channel.k8s.io").await;
    assert_eq!(proto, "v5.channel.k8s.io");
    // Lines go in until one comes back: the attachment is live once the monitor accepted it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut n = 0;
    while !String::from_utf8_lossy(&seen).contains("out:") {
        let text = String::from_utf8_lossy(&seen).into_owned();
        assert!(Instant::now() < deadline, "no output: {text:?}");
        ws_send(&mut ws, 0, format!("line{n}\n").as_bytes()).await;
        n += 1;
        if let Ok(Some(m)) =
            tokio::time::timeout(Duration::from_millis(300), next_binary(&mut ws)).await
        {
            seen.extend_from_slice(&m);
        }
    }
    ws_send(&mut ws, 0, b"last\n").await;
    ws_send(&mut ws, 0, b"quit\n").await;
    let got = ws_collect(&mut ws).await;
    let out = String::from_utf8_lossy(&got.stdout);
    assert!(out.contains("out:last"), "{out:?}");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(err.contains("err:last"), "{err:?}");
    assert_eq!(exit_code(&got.status), None);
    let st = d.wait_exited(&c).await;
    assert_eq!(st.exit_code, 0);
}

#[tokio::test]
async fn attach_with_a_tty_over_spdy_follows_resizes() {
    let mut d = Skiffd::start().await;
    let c = interactive(&mut d, "while read line; do stty size; done", true).await;
    let url = d.attach_url(attach_req(&c, true, true)).await;
    let mut sp = spdy_session(&url).await;
    let _error = sp.open(&[("streamtype", "error")]).await;
    let stdin = sp.open(&[("streamtype", "stdin")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let resize = sp.open(&[("streamtype", "resize")]).await;
    sp.data(resize, false, br#"{"Width":77,"Height":22}"#).await;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&out).contains("22 77") {
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(Instant::now() < deadline, "{text:?}");
        sp.data(stdin, false, b"x\n").await;
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_millis(100), sp.next()).await {
                Ok(Some(In::Data { id, data, .. })) if id == stdout => out.extend_from_slice(&data),
                Ok(_) | Err(_) => {}
            }
        }
    }
}

/// Twenty concurrent forwarded fetches of the pod's page, each whole and without an error.
async fn expect_twenty_pages(sp: &mut Spdy, transport: &str) {
    for (i, (body, err)) in fetch_concurrently(sp, 8080, 20).await.iter().enumerate() {
        assert!(err.is_empty(), "{transport} connection {i}: {err}");
        assert!(
            body.contains("hello-through-port-forward"),
            "{transport} connection {i}: {body:?}"
        );
    }
}

/// Opens `n` concurrent forwarded connections to `port`, each sending an HTTP request and
/// half-closing; returns each connection's response and error-stream text.
async fn fetch_concurrently(sp: &mut Spdy, port: u16, n: usize) -> Vec<(String, String)> {
    let port = port.to_string();
    let mut pairs = Vec::new();
    for i in 0..n {
        let rid = i.to_string();
        let h = |t| {
            [
                ("streamtype", t),
                ("port", port.as_str()),
                ("requestid", rid.as_str()),
            ]
        };
        let e = sp.open(&h("error")).await;
        let dt = sp.open(&h("data")).await;
        pairs.push((e, dt));
    }
    for (i, (_, dt)) in pairs.iter().enumerate() {
        let req = format!("GET /index.html?conn={i} HTTP/1.0\r\n\r\n");
        sp.data(*dt, true, req.as_bytes()).await;
    }
    let ids: Vec<u32> = pairs.iter().flat_map(|(e, dt)| [*dt, *e]).collect();
    let got = sp.collect(&ids).await;
    got.chunks(2)
        .map(|c| {
            (
                String::from_utf8_lossy(&c[0]).into_owned(),
                String::from_utf8_lossy(&c[1]).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn port_forward_reaches_httpd_inside_a_bridge_pod() {
    let ipam = tempfile::tempdir().unwrap();
    let mut d = Skiffd::start_with(Options {
        cni_conflist: Some(bridge_conflist("skfwd0", "10.211.9.0/24", ipam.path())),
        ..Default::default()
    })
    .await;
    d.pull_busybox().await;
    let pod = d.run_pod(pod_config("web", &d.log_dir())).await;
    // Listening on the pod's loopback only: reachable solely from inside its network namespace.
    let serve = "mkdir -p /www && echo hello-through-port-forward > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www";
    let web = d
        .run_container(&pod, container_config("httpd", serve))
        .await;
    let index = "http://127.0.0.1:8080/index.html";
    d.wait_exec_ok(
        &web,
        &["wget", "-q", "-O", "-", index],
        Duration::from_secs(20),
    )
    .await;
    let forward = |d: &mut Skiffd| {
        let req = cri::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8080, 9],
        };
        let mut rt = d.rt.clone();
        async move { rt.port_forward(req).await.unwrap().into_inner().url }
    };

    let url = forward(&mut d).await;
    let mut headers = SPDY_UPGRADE.to_vec();
    headers[2] = ("X-Stream-Protocol-Version", "portforward.k8s.io");
    let (tcp, head) = upgrade(&url, &headers).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut sp = Spdy::new(tcp, &DICTIONARY);
    expect_twenty_pages(&mut sp, "spdy").await;
    // Nothing listens on 9 in the pod: the error stream says so, the session goes on.
    let got = fetch_concurrently(&mut sp, 9, 1).await;
    assert!(got[0].1.contains("localhost:9"), "{:?}", got[0]);
    drop(sp);

    // The same through the WebSocket tunnel current clients use.
    let url = forward(&mut d).await;
    let (ws, proto) = websocket(&url, "SPDY/3.1+portforward.k8s.io").await;
    assert_eq!(proto, "SPDY/3.1+portforward.k8s.io");
    let mut sp = Spdy::over(Transport::Ws(Box::new(ws)), &DICTIONARY);
    expect_twenty_pages(&mut sp, "websocket tunnel").await;
    drop(sp);

    let r =
        d.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nosuchpod".into(),
            port: vec![80],
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::NotFound);
    d.stop_container(&web, 2).await.unwrap();
    d.remove_container(&web).await.unwrap();
    d.stop_and_remove_pod(&pod.id).await;
}

/// A `cat` container created with stdin (`stdin_once` as asked) in a host-network pod; returns it
/// and the path of its log.
async fn cat_container(
    d: &mut Skiffd,
    name: &str,
    stdin_once: bool,
) -> (String, std::path::PathBuf) {
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config(name, &d.log_dir())))
        .await;
    let mut config = container_config("cat", "exec cat");
    config.stdin = true;
    config.stdin_once = stdin_once;
    let c = d.run_container(&pod, config).await;
    (c, d.log_dir().join(name).join("cat.log"))
}

/// Waits up to 30 s for the container to exit; on failure the daemon's log says why.
async fn exited_or_log(d: &mut Skiffd, c: &str) -> cri::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = d.container_status(c).await;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        if Instant::now() > deadline {
            let log = d.daemon_log();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("h2::") && !l.contains("tonic") && !l.contains("tower"))
                .rev()
                .take(40)
                .collect();
            panic!("container {c} still running: {st:?}\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends stdin lines over an attach until the container's log shows one: the attachment is live.
async fn attach_until_logged(ws: &mut skiff_tests::stream::Ws, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("hello-")
    {
        assert!(
            Instant::now() < deadline,
            "attached stdin never reached cat"
        );
        ws_send(ws, 0, format!("hello-{n}\n").as_bytes()).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn attach_stdin_close_ends_a_stdin_once_container() {
    let mut d = Skiffd::start().await;
    let (c, log) = cat_container(&mut d, "once", true).await;
    let url = d.attach_url(attach_req(&c, true, false)).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    attach_until_logged(&mut ws, &log).await;
    ws_send(&mut ws, 0, b"the-last-line\n").await;
    ws_close_stdin(&mut ws).await;
    // cat reads EOF and exits 0, which ends the attachment.
    let got = ws_collect(&mut ws).await;
    assert_eq!(exit_code(&got.status), None);
    let st = exited_or_log(&mut d, &c).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("stdout F the-last-line"), "{text}");

    // Over SPDY, a half-close of the stdin stream does the same.
    let (c, log) = cat_container(&mut d, "once-spdy", true).await;
    let url = d.attach_url(attach_req(&c, true, false)).await;
    let mut sp = spdy_session(&url).await;
    let _error = sp.open(&[("streamtype", "error")]).await;
    let stdin = sp.open(&[("streamtype", "stdin")]).await;
    let _stdout = sp.open(&[("streamtype", "stdout")]).await;
    let _stderr = sp.open(&[("streamtype", "stderr")]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("spdy-line")
    {
        assert!(
            Instant::now() < deadline,
            "attached stdin never reached cat"
        );
        sp.data(stdin, false, b"spdy-line\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sp.data(stdin, true, b"").await;
    let st = exited_or_log(&mut d, &c).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
}

#[tokio::test]
async fn attach_stdin_close_leaves_stdin_open_without_stdin_once() {
    let mut d = Skiffd::start().await;
    let (c, log) = cat_container(&mut d, "open", false).await;
    let url = d.attach_url(attach_req(&c, true, false)).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    attach_until_logged(&mut ws, &log).await;
    ws_close_stdin(&mut ws).await;
    drop(ws);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = d.container_status(&c).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    // A second attachment still reaches the same stdin.
    let url = d.attach_url(attach_req(&c, true, false)).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("second-attach")
    {
        assert!(
            Instant::now() < deadline,
            "the second attachment's stdin never reached cat"
        );
        ws_send(&mut ws, 0, b"second-attach\n").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop_container(&c, 0).await.unwrap();
}

/// Whether a `sleep 1000` runs in the container, seen by ExecSync of `ps`.
async fn sleeps(d: &mut Skiffd, c: &str) -> bool {
    let r =
        d.rt.exec_sync(cri::ExecSyncRequest {
            container_id: c.into(),
            cmd: s(&["ps", "-o", "args"]),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8_lossy(&r.stdout)
        .lines()
        .any(|l| l.trim() == "sleep 1000")
}

/// Waits up to 20 s for `sleep 1000` to be running (`true`) or gone (`false`) in the container.
async fn wait_sleeps(d: &mut Skiffd, c: &str, want: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sleeps(d, c).await != want {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn exec_is_killed_when_its_client_goes_away() {
    let (mut d, c) = sleeper("exec").await;
    let sleeper = |d: &mut Skiffd| {
        let mut rt = d.rt.clone();
        let req = exec_req(&c, &["sleep", "1000"], false, false);
        async move { rt.exec(req).await.unwrap().into_inner().url }
    };

    // WebSocket: the connection simply dropped.
    let url = sleeper(&mut d).await;
    let (ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    wait_sleeps(&mut d, &c, true, "exec over WebSocket never started").await;
    drop(ws);
    wait_sleeps(&mut d, &c, false, "exec outlived its WebSocket client").await;

    // WebSocket: a close handshake started by the client.
    let url = sleeper(&mut d).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    wait_sleeps(&mut d, &c, true, "exec over WebSocket never started").await;
    ws.close(None).await.unwrap();
    wait_sleeps(&mut d, &c, false, "exec outlived a WebSocket close").await;

    // SPDY: the TCP connection closed, then GOAWAY, then a reset stream.
    for how in ["tcp", "goaway", "rst"] {
        let url = sleeper(&mut d).await;
        let mut sp = spdy_session(&url).await;
        let error = sp.open(&[("streamtype", "error")]).await;
        let _stdout = sp.open(&[("streamtype", "stdout")]).await;
        let _stderr = sp.open(&[("streamtype", "stderr")]).await;
        wait_sleeps(&mut d, &c, true, "exec over SPDY never started").await;
        match how {
            "tcp" => drop(sp),
            // GOAWAY: control frame type 7, last good stream 0, status OK.
            "goaway" => {
                sp.write(&[0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0])
                    .await
            }
            // RST_STREAM of the error stream, status CANCEL (5).
            _ => {
                let mut f = vec![0x80, 3, 0, 3, 0, 0, 0, 8];
                f.extend_from_slice(&error.to_be_bytes());
                f.extend_from_slice(&5u32.to_be_bytes());
                sp.write(&f).await
            }
        }
        wait_sleeps(
            &mut d,
            &c,
            false,
            &format!("exec outlived its SPDY client ({how})"),
        )
        .await;
    }
}

#[tokio::test]
async fn exec_over_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let f = tls_files(dir.path());
    let mut d = Skiffd::start_with(Options {
        extra_config: format!(
            "stream_tls_cert = \"{}\"\nstream_tls_key = \"{}\"",
            f.cert.display(),
            f.key.display()
        ),
        ..Default::default()
    })
    .await;
    d.pull_busybox().await;
    let pod = d
        .run_pod(host_network(pod_config("tls", &d.log_dir())))
        .await;
    let c = d
        .run_container(&pod, container_config("sleeper", "exec sleep 3600"))
        .await;

    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", "cat; exit 2"], true, false))
        .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (mut ws, proto) = websocket_tls(&url, "v5.channel.k8s.io", &f.ca).await;
    assert_eq!(proto, "v5.channel.k8s.io");
    ws_send(&mut ws, 0, b"through tls").await;
    ws_close_stdin(&mut ws).await;
    let got = ws_collect(&mut ws).await;
    assert_eq!(got.stdout, b"through tls");
    assert_eq!(exit_code(&got.status).as_deref(), Some("2"));

    let url = d
        .exec_url(exec_req(&c, &["echo", "spdy-tls"], false, false))
        .await;
    let tls = tls_connect(&url, &f.ca).await;
    let (tls, head) = upgrade_on(tls, &url, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut sp = Spdy::over(Transport::Tls(Box::new(tls)), &DICTIONARY);
    let error = sp.open(&[("streamtype", "error")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let stderr = sp.open(&[("streamtype", "stderr")]).await;
    let got = sp.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0], b"spdy-tls\n");

    // Output too large for one read goes through TLS whole, on both transports.
    let total = 8usize << 20;
    let cmd = format!("yes 0123456789abcdef | head -c {total}");
    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", &cmd], false, false))
        .await;
    let (mut ws, _) = websocket_tls(&url, "v5.channel.k8s.io", &f.ca).await;
    let got = ws_collect(&mut ws).await;
    assert_eq!(got.stdout.len(), total);
    assert!(is_lines(&got.stdout));
    assert_eq!(exit_code(&got.status), None);
    let url = d
        .exec_url(exec_req(&c, &["sh", "-c", &cmd], false, false))
        .await;
    let tls = tls_connect(&url, &f.ca).await;
    let (tls, _) = upgrade_on(tls, &url, &SPDY_UPGRADE).await;
    let mut sp = Spdy::over(Transport::Tls(Box::new(tls)), &DICTIONARY);
    let error = sp.open(&[("streamtype", "error")]).await;
    let stdout = sp.open(&[("streamtype", "stdout")]).await;
    let stderr = sp.open(&[("streamtype", "stderr")]).await;
    let got = sp.collect(&[stdout, stderr, error]).await;
    assert_eq!(got[0].len(), total);
    assert!(is_lines(&got[0]));
    assert_eq!(exit_code(&got[2]), None);
}

/// skiffd with `extra` in a minimal config in `dir`: its exit status and stderr, or None if it is
/// still running after 20 s (then killed).
fn skiffd_once(dir: &std::path::Path, extra: &str) -> Option<(std::process::ExitStatus, String)> {
    let d = dir.display();
    let config = dir.join("skiffd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{d}/s.sock\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\n\
             image_root = \"{d}/images\"\n{extra}\n"
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(skiff_tests::cri::target_bin("skiffd"))
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Some((status, err));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn skiffd_refuses_to_start_with_a_bad_tls_certificate_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = tls_files(dir.path());
    let missing = dir.path().join("no-such-key.pem");
    let cases = [
        (f.cert.clone(), missing.clone(), "no-such-key.pem"),
        (f.key.clone(), f.key.clone(), "server-key.pem"),
        (f.cert.clone(), f.ca.clone(), "ca.pem"),
    ];
    for (cert, key, named) in cases {
        let extra = format!(
            "stream_tls_cert = \"{}\"\nstream_tls_key = \"{}\"",
            cert.display(),
            key.display()
        );
        let (status, err) = skiffd_once(dir.path(), &extra)
            .unwrap_or_else(|| panic!("skiffd started with cert {cert:?} and key {key:?}"));
        assert!(!status.success(), "{err}");
        assert!(err.contains(named), "cert {cert:?} key {key:?}: {err}");
    }
}
