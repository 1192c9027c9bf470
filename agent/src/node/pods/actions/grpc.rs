//! gRPC probes: `grpc.health.v1.Health/Check` over plaintext HTTP/2, as kubelet does. The two
//! messages of the health protocol are one field each, declared here rather than generated.

use std::time::Duration;

use super::{host_port, Outcome};

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

const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The health protocol's serving states by number.
fn status_name(n: i32) -> &'static str {
    match n {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// Asks the server at `ip:port` whether `service` (empty: the whole server) is serving.
pub async fn check(ip: &str, port: u16, service: String, timeout: Duration) -> Outcome {
    let addr = host_port(ip, port);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("address {addr}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let exchange = async {
        let channel = endpoint.connect().await.map_err(|e| {
            format!(
                "timeout: failed to connect service {addr:?} within {}s: {e}",
                timeout.as_secs()
            )
        })?;
        let mut g = tonic::client::Grpc::new(channel);
        g.ready()
            .await
            .map_err(|e| format!("failed to connect service {addr:?}: {e}"))?;
        let path = http::uri::PathAndQuery::from_static(CHECK);
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let resp = g
            .unary(
                tonic::Request::new(HealthCheckRequest { service }),
                path,
                codec,
            )
            .await
            .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
        match resp.get_ref().status {
            1 => Ok(String::new()),
            n => Err(format!(
                "service unhealthy (responded with {:?})",
                status_name(n)
            )),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use tonic::codegen::{http as h, Body, BoxFuture, Service, StdError};
    use tonic::server::{NamedService, UnaryService};

    /// A health server answering every check with one status.
    #[derive(Clone)]
    struct Health(i32);

    impl UnaryService<HealthCheckRequest> for Health {
        type Response = HealthCheckResponse;
        type Future = BoxFuture<tonic::Response<HealthCheckResponse>, tonic::Status>;

        fn call(&mut self, req: tonic::Request<HealthCheckRequest>) -> Self::Future {
            let status = if req.get_ref().service == "missing" {
                3
            } else {
                self.0
            };
            Box::pin(async move { Ok(tonic::Response::new(HealthCheckResponse { status })) })
        }
    }

    impl<B> Service<h::Request<B>> for Health
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = h::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: h::Request<B>) -> Self::Future {
            let svc = self.clone();
            Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(svc, req).await)
            })
        }
    }

    impl NamedService for Health {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    async fn serve(status: i32) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Health(status))
                .serve_with_incoming(incoming),
        );
        port
    }

    #[tokio::test]
    async fn health_checks_pass_only_when_serving() {
        let t = Duration::from_secs(5);
        let serving = serve(1).await;
        assert_eq!(
            check("127.0.0.1", serving, String::new(), t).await,
            Ok(String::new())
        );
        assert_eq!(
            check("127.0.0.1", serving, "missing".into(), t).await,
            Err("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
        );
        let not_serving = serve(2).await;
        assert_eq!(
            check("127.0.0.1", not_serving, String::new(), t).await,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = closed.local_addr().unwrap().port();
        drop(closed);
        let e = check("127.0.0.1", gone, String::new(), t)
            .await
            .unwrap_err();
        assert!(e.contains("failed to connect service"), "{e}");
    }
}
