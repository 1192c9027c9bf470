//! gRPC deadlines on skiffd's socket: a call that outlives its client's `grpc-timeout` ends with
//! DEADLINE_EXCEEDED (what kubelet and critest check), every time, and a malformed timeout is
//! refused by name.

use std::time::{Duration, Instant};

use prost::Message;
use skiff_tests::cri::{image_spec, v1 as cri, Skiffd};
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::Code;

const PULL: &str = "/runtime.v1.ImageService/PullImage";
const VERSION: &str = "/runtime.v1.RuntimeService/Version";

/// A registry that accepts connections and never answers: a pull from it waits until cancelled.
fn silent_registry() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, format!("{addr}/silent/image:latest"))
}

/// One unary call with `grpc-timeout: <timeout>` sent straight over HTTP/2, so that only the
/// server's answer decides the outcome (a gRPC client library races it with a timer of its own);
/// the grpc-status the server sent.
async fn call_with_timeout(d: &Skiffd, path: &str, msg: impl Message, timeout: &str) -> String {
    let conn = UnixStream::connect(&d.socket).await.unwrap();
    let (mut client, conn) = h2::client::handshake(conn).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (answer, mut body) = client.send_request(req, false).unwrap();
    let payload = msg.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((payload.len() as u32).to_be_bytes());
    frame.extend(payload);
    body.send_data(frame.into(), true).unwrap();
    let answer = answer.await.unwrap();
    if let Some(status) = answer.headers().get("grpc-status") {
        return status.to_str().unwrap().to_string();
    }
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        chunk.unwrap();
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    trailers["grpc-status"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_call_past_its_deadline_ends_with_deadline_exceeded() {
    let mut d = Skiffd::start().await;
    let (_registry, image) = silent_registry();
    let pull = cri::PullImageRequest {
        image: image_spec(&image),
        ..Default::default()
    };
    for _ in 0..10 {
        let started = Instant::now();
        let status = call_with_timeout(&d, PULL, pull.clone(), "200m").await;
        assert_eq!(status, "4", "DEADLINE_EXCEEDED expected");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            started.elapsed()
        );
    }
    // A client library's own timer agrees.
    let mut req = tonic::Request::new(pull);
    req.set_timeout(Duration::from_millis(200));
    let err = d.img.pull_image(req).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The daemon serves on, within and without deadlines.
    let status = call_with_timeout(&d, VERSION, cri::VersionRequest::default(), "10S").await;
    assert_eq!(status, "0");
    d.rt.version(cri::VersionRequest::default()).await.unwrap();
}

#[tokio::test]
async fn a_malformed_timeout_is_refused_by_name() {
    let mut d = Skiffd::start().await;
    let mut req = tonic::Request::new(cri::VersionRequest::default());
    req.metadata_mut()
        .insert("grpc-timeout", MetadataValue::from_static("soon"));
    let err = d.rt.version(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("grpc-timeout"), "{err:?}");
}
