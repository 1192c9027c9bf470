//! Hostile streaming clients against a real skiffd: clients that stop reading an endless output,
//! malformed and oversized SPDY frames, frames for streams that do not exist, and WebSocket frames
//! that break RFC 6455. Each client loses only its own connection; the daemon's memory stays
//! bounded and it goes on serving. URLs that expired unused, are forged or name the wrong
//! endpoint are refused.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use skiff_tests::cri::{attach_req, exec_req, sleeper, v1 as cri, Skiffd};
use skiff_tests::stream::{
    exit_code, spdy_session, upgrade, websocket, ws_collect, In, Spdy, SPDY_UPGRADE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Control frame types of SPDY/3 (draft section 2.6).
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

async fn exec_url(d: &mut Skiffd, c: &str, cmd: &[&str]) -> String {
    d.exec_url(exec_req(c, cmd, false, false)).await
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The daemon still answers the CRI and runs a command to its end through a new SPDY session.
async fn still_serving(d: &mut Skiffd, c: &str) {
    d.rt.version(cri::VersionRequest::default())
        .await
        .expect("Version after the abuse");
    let (mut sp, streams) = spdy_exec(d, c, &["echo", "still here"]).await;
    let got = sp.collect(&streams).await;
    assert_eq!(got[1], b"still here\n");
    assert_eq!(exit_code(&got[0]), None);
}

/// A SPDY session on a fresh exec URL for `cmd`, with its error, stdout and stderr streams
/// opened; their ids, in that order.
async fn spdy_exec(d: &mut Skiffd, c: &str, cmd: &[&str]) -> (Spdy, [u32; 3]) {
    let url = exec_url(d, c, cmd).await;
    let mut sp = spdy_session(&url).await;
    let mut ids = [0; 3];
    for (id, kind) in ids.iter_mut().zip(["error", "stdout", "stderr"]) {
        *id = sp.open(&[("streamtype", kind)]).await;
    }
    (sp, ids)
}

/// Waits for the control frame `kind`, skipping data; false if the session ends first.
async fn control(sp: &mut Spdy, kind: u16) -> bool {
    loop {
        match sp.next().await {
            Some(In::Control { kind: k }) if k == kind => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

#[tokio::test]
async fn clients_that_stop_reading_hold_memory_bounded() {
    let (mut d, c) = sleeper("abuse").await;
    let pid = d.pid();
    let endless = ["cat", "/dev/zero"];
    let before = rss_kib(pid);

    // Four of each transport, each reading its upgrade response and then nothing more, while
    // `cat /dev/zero` writes as fast as the pipe takes it.
    let mut stalled_ws = Vec::new();
    let mut stalled_spdy = Vec::new();
    for _ in 0..4 {
        let url = exec_url(&mut d, &c, &endless).await;
        stalled_ws.push(websocket(&url, "v5.channel.k8s.io").await.0);
        stalled_spdy.push(spdy_exec(&mut d, &c, &endless).await.0);
    }
    // Long enough for gigabytes at the rate an exec streams, were nothing holding it back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = rss_kib(pid);

    // Each output may hold one pipe's worth (1 MiB) in skiffd, plus the writers' batches; the
    // rest waits in the kernel's socket buffers and the full pipes, which block `cat`.
    let grown = later.saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "skiffd grew {grown} KiB with 8 stalled clients ({before} -> {stalled} -> {later} KiB)"
    );
    assert!(
        later.saturating_sub(stalled) < 16 * 1024,
        "skiffd kept growing while its clients were stalled: {stalled} -> {later} KiB"
    );
    still_serving(&mut d, &c).await;
    drop(stalled_ws);
    drop(stalled_spdy);
    still_serving(&mut d, &c).await;
}

#[tokio::test]
async fn hostile_spdy_frames_end_only_their_own_session() {
    let (mut d, c) = sleeper("abuse").await;
    let sleeper = ["sleep", "1000"];

    // DATA and WINDOW_UPDATE for streams never opened: the first is reset as INVALID_STREAM, and
    // the session lives on (it answers a PING).
    let (mut sp, _) = spdy_exec(&mut d, &c, &sleeper).await;
    sp.data(41, false, b"nobody's").await;
    assert!(
        control(&mut sp, RST_STREAM).await,
        "no RST_STREAM for stream 41"
    );
    sp.write(&[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 77, 0, 0, 0, 5])
        .await;
    sp.write(&[0x80, 3, 0, PING as u8, 0, 0, 0, 4, 0, 0, 0, 1])
        .await;
    assert!(
        control(&mut sp, PING).await,
        "the session died after unknown ids"
    );
    drop(sp);

    // Each of these ends its session with GOAWAY, then the connection closes.
    // A control frame of SPDY version 2.
    let (mut sp, _) = spdy_exec(&mut d, &c, &sleeper).await;
    sp.write(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]).await;
    ends_with_goaway(sp, "a version 2 frame").await;

    // A SYN_STREAM whose headers inflate past the limit (64 KiB): a few hundred bytes on the wire.
    let (mut sp, _) = spdy_exec(&mut d, &c, &sleeper).await;
    let huge = "z".repeat(1 << 20);
    sp.open(&[("streamtype", "stdin"), ("x-pad", &huge)]).await;
    ends_with_goaway(sp, "1 MiB of headers").await;

    // A DATA frame that claims 16 MiB, over the 1 MiB frame limit: refused from its header alone,
    // nothing is buffered waiting for the rest.
    let (mut sp, _) = spdy_exec(&mut d, &c, &sleeper).await;
    sp.write(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    ends_with_goaway(sp, "a 16 MiB DATA frame").await;

    // A client that speaks HTTP on the upgraded connection: its text read as frames is refused.
    let (mut sp, _) = spdy_exec(&mut d, &c, &sleeper).await;
    sp.write(b"GET /exec HTTP/1.1\r\nHost: skiff\r\n\r\n").await;
    ends_with_goaway(sp, "HTTP text").await;

    still_serving(&mut d, &c).await;
}

/// The server answers GOAWAY (after whatever it had queued) and then ends the session.
async fn ends_with_goaway(mut sp: Spdy, what: &str) {
    assert!(control(&mut sp, GOAWAY).await, "no GOAWAY for {what}");
    assert!(
        sp.next().await.is_none(),
        "the session outlived its GOAWAY for {what}"
    );
}

/// Sends raw bytes on an upgraded WebSocket connection and reads until the server closes it.
async fn ws_raw(url: &str, bytes: &[u8]) {
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let (mut tcp, head) = upgrade(url, &headers).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The server may close before it has read everything; that is what is being tested.
    let _ = tcp.write_all(bytes).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut got)).await;
    // A reset (the server closed with our bytes unread) ends the connection as well.
    let _ = read.expect("the server closed the connection within 20 s");
}

#[tokio::test]
async fn hostile_websocket_frames_end_only_their_own_connection() {
    let (mut d, c) = sleeper("abuse").await;
    let sleeper = ["sleep", "1000"];

    // An unmasked client frame (RFC 6455 5.1: the server must close the connection).
    let url = exec_url(&mut d, &c, &sleeper).await;
    ws_raw(&url, &[0x82, 0x02, 0x00, b'x']).await;

    // A frame announcing 2^62 bytes, far over the message limit.
    let url = exec_url(&mut d, &c, &sleeper).await;
    let mut huge = vec![0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&[1, 2, 3, 4]);
    ws_raw(&url, &huge).await;

    // A 4 MiB message in frames of 64 KiB, over the 2 MiB limit: refused as it grows.
    let url = exec_url(&mut d, &c, &sleeper).await;
    let mut frames = Vec::new();
    for i in 0..64 {
        let opcode = if i == 0 { 0x02 } else { 0x00 };
        frames.extend_from_slice(&[opcode, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]);
        frames.extend_from_slice(&[0, 0, 0, 0]);
        frames.extend(std::iter::repeat_n(0u8, 64 << 10));
    }
    ws_raw(&url, &frames).await;

    // Reserved bits and an unknown opcode.
    let url = exec_url(&mut d, &c, &sleeper).await;
    ws_raw(&url, &[0xf3, 0x80, 0, 0, 0, 0]).await;

    // A well-behaved client right after still runs its command to the end.
    let url = exec_url(&mut d, &c, &["echo", "fine"]).await;
    let (mut ws, _) = websocket(&url, "v5.channel.k8s.io").await;
    let ch = ws_collect(&mut ws).await;
    assert_eq!(ch.stdout, b"fine\n");
    still_serving(&mut d, &c).await;
}

#[tokio::test]
async fn urls_expire_unused_after_a_minute_and_forged_ones_are_refused() {
    let (mut d, c) = sleeper("expiry").await;
    let exec = exec_url(&mut d, &c, &["true"]).await;
    let attach = d.attach_url(attach_req(&c, false, false)).await;
    // A token of the right shape that skiffd never issued, and a real one for the wrong kind.
    let (base, token) = exec.rsplit_once('/').unwrap();
    let forged = format!("{base}/{}", "A".repeat(token.len()));
    let (_, head) = upgrade(&forged, &SPDY_UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 404"), "forged token: {head}");
    let fresh = exec_url(&mut d, &c, &["true"]).await;
    let wrong_kind = fresh.replace("/exec/", "/attach/");
    let (_, head) = upgrade(&wrong_kind, &SPDY_UPGRADE).await;
    assert!(
        head.starts_with("HTTP/1.1 404"),
        "exec token on /attach: {head}"
    );

    // Unused for longer than the one minute an URL lives (kubelet's streaming cache keeps them as
    // long), both are gone.
    tokio::time::sleep(Duration::from_secs(62)).await;
    for url in [&exec, &attach] {
        let (_, head) = upgrade(url, &SPDY_UPGRADE).await;
        assert!(
            head.starts_with("HTTP/1.1 404"),
            "expired token {url}: {head}"
        );
    }
    still_serving(&mut d, &c).await;
}
