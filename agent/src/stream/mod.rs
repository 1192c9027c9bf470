//! The streaming server behind the CRI `Exec`/`Attach`/`PortForward` URLs: SPDY/3.1 and WebSocket
//! transports carrying the Kubernetes remotecommand and portforward sub-protocols, over TLS when
//! configured.

pub mod channel;
pub mod handler;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod sink;
pub mod spdy;
pub mod tls;
pub mod token;
pub mod tunnel;
