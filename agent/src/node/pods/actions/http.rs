//! The one HTTP client of the node's probes and hooks: plain HTTP or HTTPS without checking the
//! server's certificate (as kubelet's probes do), a new connection per request (kubelet disables
//! keep-alive, so a probe sees a server that stopped accepting), the body read up to 10 KiB.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use skiff_runtime::image::tls::{client_config, Trust};

use super::Outcome;

/// What kubelet reads of a probe's response body.
const MAX_BODY: usize = 10 << 10;

/// The User-Agent kubelet's probes send.
const USER_AGENT: &str = "kube-probe/1.28";

/// Shared by every pod's probes and hooks: requests are futures on skiffd's runtime.
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config(&Trust::AnyCertificate))
            .https_or_http()
            .enable_http1()
            .build();
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(https);
        Client { inner }
    }

    /// GET `url` with `headers` (which may replace Host, User-Agent and Accept); passes on a
    /// 2xx or 3xx status with the start of the body.
    pub async fn get(&self, url: &str, headers: &[(String, String)], timeout: Duration) -> Outcome {
        let failed = |e: String| format!("Get {url:?}: {e}");
        let authority = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| Some(u.authority()?.to_string()))
            .unwrap_or_default();
        let mut req = http::Request::get(url)
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::ACCEPT, "*/*");
        for (name, value) in headers {
            let Some(h) = req.headers_mut() else { break };
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| failed(format!("header {name:?}: {e}")))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| failed(format!("header {name:?}: {e}")))?;
            h.insert(name, value);
        }
        let req = req.body(Empty::new()).map_err(|e| failed(e.to_string()))?;
        let exchange = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| failed(describe(&e, &authority)))?;
            let status = resp.status();
            let body = read_body(resp.into_body()).await;
            if status.is_success() || status.is_redirection() {
                Ok(body)
            } else {
                Err(format!(
                    "HTTP probe failed with statuscode: {}",
                    status.as_u16()
                ))
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(failed(
                "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
            )),
        }
    }
}

async fn read_body(mut body: hyper::body::Incoming) -> String {
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    out.extend_from_slice(d);
                }
            }
            _ => break,
        }
    }
    out.truncate(MAX_BODY);
    String::from_utf8_lossy(&out).into_owned()
}

/// A failed request as Go's client says it: a refused or unreachable connection as
/// `dial tcp ADDR: connect: REASON`, anything else as the error and its causes.
fn describe(e: &(dyn std::error::Error + 'static), authority: &str) -> String {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return format!("dial tcp {authority}: connect: {}", super::io_reason(io));
        }
        cur = c.source();
    }
    error_chain(e)
}

/// The error and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
