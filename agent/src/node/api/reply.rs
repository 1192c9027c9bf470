//! Answers of the kubelet API: one boxed body type, so that endpoints may send a whole document
//! or stream (logs that follow, an upgraded connection's empty body).

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// A response body; errors end the response early.
pub type Body = BoxBody<Bytes, std::io::Error>;
pub type Reply = Response<Body>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text answer, as Go's `http.Error` writes it.
pub fn text(status: StatusCode, msg: &str) -> Reply {
    let mut r = Response::new(full(format!("{msg}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A JSON document.
pub fn json(value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(full(body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The streaming server's answer (a short text or the switch to the upgraded protocol).
pub fn boxed(r: Response<Full<Bytes>>) -> Reply {
    r.map(|b| b.map_err(|never| match never {}).boxed())
}

pub fn not_found() -> Reply {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

pub fn method_not_allowed() -> Reply {
    text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed")
}
