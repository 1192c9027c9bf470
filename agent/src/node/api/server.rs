//! The kubelet API's listener: TLS handshakes, the client certificate's user per connection, and
//! per request authentication, authorization and routing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::authn::{Authenticator, User};
use super::authz::{self, Authorizer};
use super::context::Api;
use super::reply::{self, Reply};
use super::{routes, serving, tls};
use crate::node::pods::watch::Snapshot;
use crate::node::NodeContext;

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Binds the API's address now: a port in use stops skiffd, as it stops kubelet.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("the kubelet API: bind {addr}"))
}

/// Starts serving on `listener` with the node's serving certificate; the certificate and client
/// CA are read now, so that their errors are start-up errors.
pub fn start(
    listener: TcpListener,
    ctx: Arc<NodeContext>,
    clients: watch::Receiver<kube::Client>,
    pods: watch::Receiver<Snapshot>,
) -> anyhow::Result<Arc<tls::Serving>> {
    let s = &ctx.settings;
    let mut names = vec![s.hostname.clone()];
    if s.node_name != s.hostname {
        names.push(s.node_name.clone());
    }
    let serving = match &s.api.tls_files {
        Some((cert, key)) => tls::Serving::new(tls::load(cert, key)?),
        None if s.api.server_tls_bootstrap => {
            let serving = Arc::new(tls::Serving::default());
            let subject = serving::Subject {
                node: s.node_name.clone(),
                names,
                ips: s.node_ips.clone(),
            };
            let dir = s.cert_dir.clone();
            tokio::spawn(serving::run(serving.clone(), clients.clone(), dir, subject));
            serving
        }
        None => tls::Serving::new(tls::self_signed(&s.cert_dir, &names, &s.node_ips)?),
    };
    let config = tls::server_config(serving.clone(), s.api.client_ca_file.as_deref())?;
    let api = Arc::new(Api {
        authn: Authenticator::new(s.api.anonymous, s.api.token_webhook, clients.clone()),
        authz: Authorizer::new(s.api.authz.clone(), s.node_name.clone(), clients),
        pods,
        ctx: ctx.clone(),
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving the kubelet API");
    }
    tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), api));
    Ok(serving)
}

async fn accept_loop(listener: TcpListener, tls: TlsAcceptor, api: Arc<Api>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (tls, api) = (tls.clone(), api.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            match tokio::time::timeout(TLS_HANDSHAKE, tls.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    tracing::debug!(%peer, took = ?started.elapsed(), "kubelet API TLS handshake done");
                    let user = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(User::from_certificate);
                    serve_connection(api, stream, user, peer).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "kubelet API TLS handshake"),
                Err(_) => tracing::debug!(%peer, "kubelet API TLS handshake timed out"),
            }
        });
    }
}

async fn serve_connection<IO>(api: Arc<Api>, io: IO, user: Option<User>, peer: SocketAddr)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let user = Arc::new(user);
    let svc = hyper::service::service_fn(move |req| {
        let (api, user) = (api.clone(), user.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(&api, user.as_ref().as_ref(), req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "kubelet API connection");
    }
}

/// Authentication (401), authorization (403), then the endpoint.
async fn handle(api: &Api, peer: Option<&User>, req: Request<Incoming>) -> Reply {
    let started = Instant::now();
    let Some(user) = api.authn.authenticate(peer, req.headers()).await else {
        return reply::text(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    let checks = authz::attributes(req.method(), req.uri().path());
    if let Err(denied) = api.authz.authorize(&user, checks).await {
        tracing::debug!(user = %user.name, path = %req.uri().path(), "kubelet API request forbidden");
        return reply::text(
            StatusCode::FORBIDDEN,
            &authz::forbidden_message(&user, &denied),
        );
    }
    tracing::debug!(
        path = %req.uri().path(),
        user = %user.name,
        took = ?started.elapsed(),
        "kubelet API request admitted"
    );
    routes::serve(api, req).await
}
