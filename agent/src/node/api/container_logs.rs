//! `/containerLogs/{namespace}/{pod}/{container}`: `kubectl logs` through the API server. The
//! body streams as the log is read ([`crate::node::logs`]); a follower ends with its container or
//! when the client goes away.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::context::Api;
use super::reply::{self, Reply};
use crate::node::logs::{self, Request};

pub async fn serve(api: &Api, rest: &[&str], query: Option<&str>) -> Reply {
    let [namespace, pod, container] = rest else {
        return reply::text(
            StatusCode::BAD_REQUEST,
            "the path must be /containerLogs/{namespace}/{pod}/{container}",
        );
    };
    let req = match Request::from_query(query.unwrap_or(""), crate::now_ns()) {
        Ok(r) => r,
        Err(e) => return reply::text(e.status(), &e.to_string()),
    };
    match logs::stream(&api.ctx.daemon, namespace, pod, container, req).await {
        Ok(rx) => {
            let frames = ReceiverStream::new(rx).map(|b: Bytes| Ok(Frame::data(b)));
            let mut r = Response::new(StreamBody::new(frames).boxed());
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Err(e) => reply::text(e.status(), &e.to_string()),
    }
}
