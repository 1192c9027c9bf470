//! `/healthz` on the kubelet API, as on the read-only healthz port.

use http::{header, HeaderValue, Response};

use super::reply::{self, Reply};

/// The sub-checks kubelet answers for; each is `ok` while skiffd serves.
pub fn serve(path: &str) -> Reply {
    match path {
        "/healthz" | "/healthz/ping" | "/healthz/syncloop" | "/healthz/log" => {
            let mut r = Response::new(reply::full("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        _ => reply::not_found(),
    }
}
