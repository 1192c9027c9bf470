//! The server probe and hook tests run inside pods: gRPC health (`grpc.health.v1.Health/Check`
//! over plaintext HTTP/2) on 9090, HTTPS with a self-signed certificate on 8443, plain HTTP on
//! 8080. A service is `NOT_SERVING` while `/tmp/down-<service>` exists (`/tmp/down-` for the
//! server as a whole), and HTTP(S) answers 500 while `/tmp/down-http` does. Each HTTP(S) request
//! is printed (`https GET /path`) and remembered: `GET /hits` answers the paths seen so far. On
//! SIGTERM it prints `term` and exits.

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const GRPC_PORT: u16 = 9090;
const HTTPS_PORT: u16 = 8443;
const HTTP_PORT: u16 = 8080;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `SERVING` (1) or, while its file exists, `NOT_SERVING` (2).
fn health(service: &str) -> i32 {
    if Path::new(&format!("/tmp/down-{service}")).exists() {
        2
    } else {
        1
    }
}

#[derive(Clone)]
struct Health;

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl tonic::server::UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<tonic::Response<HealthCheckResponse>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let status = health(&req.get_ref().service);
        println!("grpc check {:?} -> {status}", req.get_ref().service);
        Box::pin(async move { Ok(tonic::Response::new(HealthCheckResponse { status })) })
    }
}

impl<B> tower::Service<http::Request<B>> for Health
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(Health, req).await)
        })
    }
}

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

type Hits = Arc<Mutex<Vec<String>>>;

/// Reads one request head, prints and remembers its path, answers and closes.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, scheme: &str, hits: Hits) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    println!("{scheme} {method} {path}");
    let (code, body) = {
        let mut seen = hits.lock().unwrap_or_else(|p| p.into_inner());
        if path == "/hits" {
            ("200 OK", seen.join(","))
        } else {
            seen.push(path.to_string());
            if Path::new("/tmp/down-http").exists() {
                ("500 Internal Server Error", "down".to_string())
            } else {
                ("200 OK", "ok".to_string())
            }
        }
    };
    let reply = format!(
        "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes()).await;
    let _ = s.shutdown().await;
}

fn tls_acceptor() -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let key = rcgen::KeyPair::generate()?;
    let cert =
        rcgen::CertificateParams::new(vec!["probe-server".to_string()])?.self_signed(&key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_http(l: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, hits: Hits) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        let (tls, hits) = (tls.clone(), hits.clone());
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    if let Ok(s) = tls.accept(s).await {
                        answer(s, "https", hits).await;
                    }
                }
                None => answer(s, "http", hits).await,
            }
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Bound before anything else: a probe or hook may come at once.
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    let grpc = TcpListener::bind((any, GRPC_PORT))
        .await
        .context("bind gRPC")?;
    let https = TcpListener::bind((any, HTTPS_PORT))
        .await
        .context("bind HTTPS")?;
    let http = TcpListener::bind((any, HTTP_PORT))
        .await
        .context("bind HTTP")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let hits = Hits::default();
    tokio::spawn(serve_http(https, Some(tls_acceptor()?), hits.clone()));
    tokio::spawn(serve_http(http, None, hits));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Health)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc)),
    );
    println!("serving");
    term.recv().await;
    println!("term");
    Ok(())
}
