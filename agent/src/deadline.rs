//! gRPC deadlines on the CRI socket. A call whose `grpc-timeout` passes ends with DEADLINE_EXCEEDED,
//! as the gRPC spec says and kubelet's and critest's clients check; a malformed timeout is refused
//! with INTERNAL naming it, as grpc-go's servers do. (tonic's own transport server answers an
//! expired call with CANCELLED, so skiffd serves the routes itself with this layer in front.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::Status;

const HEADER: &str = "grpc-timeout";

/// Wraps the gRPC routes: each call runs at most as long as its client allows.
#[derive(Clone)]
pub struct Deadlines<S> {
    inner: S,
}

impl<S> Deadlines<S> {
    pub fn new(inner: S) -> Deadlines<S> {
        Deadlines { inner }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl<S, B> Service<Request<B>> for Deadlines<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Answer {
        let limit = match timeout(req.headers()) {
            Ok(limit) => limit,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let Some(limit) = limit else {
                return call.await;
            };
            match tokio::time::timeout(limit, call).await {
                Ok(answer) => answer,
                Err(_) => Ok(
                    Status::deadline_exceeded(format!("deadline of {limit:?} exceeded"))
                        .into_http(),
                ),
            }
        })
    }
}

/// The call's time limit: none without the header, an INTERNAL status when it is malformed.
fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get(HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default();
    parse(text)
        .map(Some)
        .ok_or_else(|| Status::internal(format!("malformed grpc-timeout {value:?}")))
}

/// `TimeoutValue TimeoutUnit`: at most 8 ASCII digits, then H, M, S, m, u or n.
fn parse(text: &str) -> Option<Duration> {
    let split = text.len().checked_sub(1)?;
    let (digits, unit) = text.split_at_checked(split)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("7n"), Some(Duration::from_nanos(7)));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "123456789S",
            "-1S",
            "1.5S",
            "5 S",
            "5Sé",
            "é",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
