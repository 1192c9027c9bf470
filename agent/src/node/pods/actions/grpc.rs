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
