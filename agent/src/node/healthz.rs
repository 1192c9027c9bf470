//! The kubelet's health endpoint (`127.0.0.1:10248/healthz` by default): kubeadm polls it while
//! it waits for the node agent after a join.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Binds `addr` now (a port in use is a start-up error), then serves in the background.
pub async fn start(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("healthz: bind {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|r| async move { Ok::<_, Infallible>(answer(&r)) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    tracing::info!(address = %local, "serving healthz");
    Ok(local)
}

fn answer<B>(r: &Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = match r.uri().path() {
        "/healthz" | "/healthz/ping" | "/healthz/syncloop" => (StatusCode::OK, "ok"),
        _ => (StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn healthz_answers_ok() {
        let addr = start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let ok = get(addr, "/healthz").await;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\nok"),
            "{ok}"
        );
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        let taken = start(addr).await.unwrap_err();
        assert!(format!("{taken:#}").contains(&addr.to_string()));
    }
}
