//! Any HTTP/2 `:authority` a client sends over skiffd's socket is served: the kubelet 1.28's grpc-go sends the
//! socket path, which is no URI authority. The requests here are written frame by frame, because an HTTP/2
//! client library will not send an authority that is not one.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use skiff_tests::cri::{v1 as cri, Skiffd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const VERSION: &str = "/runtime.v1.RuntimeService/Version";

/// How a request carries its `:authority`, as HPACK lets a client choose.
enum Authority<'a> {
    /// A literal added to the dynamic table (where the next request can find it at index 62).
    Indexing(&'a [u8]),
    /// A literal that stays out of the table.
    Plain(&'a [u8]),
    /// The dynamic table's newest entry.
    Index62,
}

/// One HTTP/2 connection written by hand: requests out, frames of the answers in.
struct RawClient {
    conn: UnixStream,
    read: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
}

/// What came back on one stream.
#[derive(Debug, Default)]
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    reset: Option<u32>,
}

impl RawClient {
    async fn connect(d: &Skiffd) -> RawClient {
        let mut conn = UnixStream::connect(&d.socket).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.write_all(&hello).await.unwrap();
        RawClient {
            conn,
            read: BytesMut::new(),
            decoder: loona_hpack::Decoder::new(),
        }
    }

    /// A unary Version call on `stream`.
    async fn version(&mut self, stream: u32, authority: Authority<'_>) -> Answer {
        let mut block = Vec::new();
        for (name, value) in [(":method", "POST"), (":scheme", "http"), (":path", VERSION)] {
            literal(&mut block, 0x00, name.as_bytes(), value.as_bytes());
        }
        match authority {
            Authority::Indexing(v) => literal(&mut block, 0x40, b":authority", v),
            Authority::Plain(v) => literal(&mut block, 0x00, b":authority", v),
            Authority::Index62 => block.push(0x80 | 62),
        }
        for (name, value) in [("content-type", "application/grpc"), ("te", "trailers")] {
            literal(&mut block, 0x00, name.as_bytes(), value.as_bytes());
        }
        let msg = cri::VersionRequest {
            version: "v1".into(),
        }
        .encode_to_vec();
        let mut body = vec![0u8];
        body.extend((msg.len() as u32).to_be_bytes());
        body.extend(msg);
        let mut out = frame(HEADERS, END_HEADERS, stream, &block);
        out.extend(frame(DATA, END_STREAM, stream, &body));
        self.conn.write_all(&out).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.answer(stream))
            .await
            .expect("an answer within 10 s")
    }

    async fn answer(&mut self, stream: u32) -> Answer {
        let mut a = Answer::default();
        loop {
            let (kind, flags, id, payload) = self.next_frame().await;
            match kind {
                SETTINGS if flags & 1 == 0 => {
                    let ack = frame(SETTINGS, 1, 0, &[]);
                    self.conn.write_all(&ack).await.unwrap();
                }
                GOAWAY => panic!("GOAWAY: {payload:?}"),
                // Every block is decoded, whichever stream, to keep the table in step with the server's.
                HEADERS => {
                    let fields = self.decoder.decode(&payload).expect("HPACK from skiffd");
                    if id == stream {
                        a.headers.extend(fields.into_iter().map(|(n, v)| {
                            (
                                String::from_utf8_lossy(&n).into_owned(),
                                String::from_utf8_lossy(&v).into_owned(),
                            )
                        }));
                    }
                }
                DATA if id == stream => a.body.extend_from_slice(&payload),
                RST_STREAM if id == stream => {
                    a.reset = Some(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                    return a;
                }
                _ => {}
            }
            if id == stream && flags & END_STREAM != 0 && (kind == HEADERS || kind == DATA) {
                return a;
            }
        }
    }

    async fn next_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        loop {
            if self.read.len() >= 9 {
                let len =
                    u32::from_be_bytes([0, self.read[0], self.read[1], self.read[2]]) as usize;
                if self.read.len() >= 9 + len {
                    let (kind, flags) = (self.read[3], self.read[4]);
                    let id = u32::from_be_bytes(self.read[5..9].try_into().unwrap());
                    self.read.advance(9);
                    let payload = self.read.split_to(len).to_vec();
                    return (kind, flags, id, payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.conn.read(&mut chunk).await.unwrap();
            assert!(n > 0, "skiffd closed the connection");
            self.read.extend_from_slice(&chunk[..n]);
        }
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = BytesMut::new();
    f.put_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.put_u8(kind);
    f.put_u8(flags);
    f.put_u32(stream);
    f.put_slice(payload);
    f.to_vec()
}

/// A field with a literal name, short enough for one-byte lengths.
fn literal(block: &mut Vec<u8>, kind: u8, name: &[u8], value: &[u8]) {
    assert!(name.len() < 127 && value.len() < 127);
    block.push(kind);
    block.push(name.len() as u8);
    block.extend_from_slice(name);
    block.push(value.len() as u8);
    block.extend_from_slice(value);
}

fn assert_version(a: &Answer, what: &str) {
    assert_eq!(
        a.reset, None,
        "{what}: stream reset (error code {:?})",
        a.reset
    );
    let status = a.headers.iter().find(|(n, _)| n == "grpc-status");
    assert_eq!(
        status.map(|(_, v)| v.as_str()),
        Some("0"),
        "{what}: {:?}",
        a.headers
    );
    assert!(a.body.len() > 5, "{what}: no message");
    let v = cri::VersionResponse::decode(&a.body[5..]).unwrap();
    assert_eq!(v.runtime_name, "skiff", "{what}");
    assert_eq!(v.runtime_api_version, "v1", "{what}");
}

#[tokio::test]
async fn every_authority_a_client_sends_is_served() {
    let d = Skiffd::start().await;
    let path = d.socket.to_str().unwrap().as_bytes().to_vec();
    let unix = format!("unix://{}", d.socket.display()).into_bytes();
    let mut c = RawClient::connect(&d).await;
    let cases: [(&str, Authority); 6] = [
        (
            "the socket path (grpc-go, kubelet 1.28)",
            Authority::Indexing(&path),
        ),
        ("the socket path again, by table index", Authority::Index62),
        ("a unix: URI", Authority::Plain(&unix)),
        ("empty", Authority::Plain(b"")),
        ("localhost (crictl)", Authority::Plain(b"localhost")),
        ("host and port", Authority::Plain(b"skiffd.invalid:80")),
    ];
    for (i, (what, authority)) in cases.into_iter().enumerate() {
        let a = c.version(1 + 2 * i as u32, authority).await;
        assert_version(&a, what);
    }
}

#[tokio::test]
async fn a_socket_path_authority_on_a_fresh_connection_is_served() {
    let d = Skiffd::start().await;
    let mut c = RawClient::connect(&d).await;
    let path = d.socket.to_str().unwrap().as_bytes().to_vec();
    let a = c.version(1, Authority::Plain(&path)).await;
    assert_version(&a, "the socket path");
}

/// Python's grpcio (Debian's python3-grpcio): another client's HPACK encoder, Huffman codes and dynamic table
/// included, through the layer that rewrites header blocks.
const GRPCIO_VERSION: &str = r#"
import sys, grpc
channel = grpc.insecure_channel("unix://" + sys.argv[1])
version = channel.unary_unary("/runtime.v1.RuntimeService/Version")
# VersionRequest{version: "v1"}; the reply is printed as it came, runtime_name among its fields.
print(version(b"\x0a\x02v1", timeout=10))
"#;

#[tokio::test]
async fn python_grpcio_is_served() {
    let python = std::path::Path::new("/usr/bin/python3");
    let has_grpc = std::process::Command::new(python)
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_grpc,
        "no grpc module for /usr/bin/python3: install tests/apt-packages (python3-grpcio)"
    );
    let d = Skiffd::start().await;
    let out = tokio::process::Command::new(python)
        .args(["-c", GRPCIO_VERSION])
        .arg(&d.socket)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("skiff"),
        "grpcio: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
