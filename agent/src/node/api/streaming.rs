//! `/exec`, `/attach` and `/portForward`: the API server's proxy connects here with the upgrade
//! the client asked for (SPDY/3.1 or WebSocket), and skiffd's streaming server serves it on this
//! very connection, without the redirect to a token URL the CRI calls hand out.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use super::lookup;
use super::reply::{self, Reply};
use crate::cri::Daemon;
use crate::stream::token::{self, AttachRequest, ExecRequest, PortForwardRequest};

/// Which stream endpoint, with the path segments after its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// The query's values of `name`, in order.
fn query_values(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| decode(v))
        })
        .collect()
}

/// Percent-decoding, `+` as space (form encoding, which Go's `FormValue` reads).
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn flag(query: &str, name: &str) -> bool {
    query_values(query, name)
        .first()
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The streams the query asks for: (stdin, stdout, stderr, tty).
fn streams(query: &str) -> (bool, bool, bool, bool) {
    (
        flag(query, "input"),
        flag(query, "output"),
        flag(query, "error"),
        flag(query, "tty"),
    )
}

/// Serves `req`, whose path after the endpoint's name is `rest` (`ns/pod[/uid]/container`, or
/// `ns/pod[/uid]` for a port-forward).
pub fn serve(d: &Daemon, kind: Kind, rest: &[&str], req: Request<Incoming>) -> Reply {
    let Some(server) = d.stream.get() else {
        return reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the streaming server is not running",
        );
    };
    let pending = match pending(d, kind, rest, req.uri().query().unwrap_or_default()) {
        Ok(p) => p,
        Err((status, msg)) => return reply::text(status, &msg),
    };
    let transport = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_ascii_lowercase();
    tracing::info!(kind = ?kind, path = %req.uri().path(), %transport, "kubelet API stream");
    reply::boxed(crate::stream::server::upgrade(server, req, pending))
}

/// A refusal: its status and text.
type Refusal = (StatusCode, String);

fn pending(d: &Daemon, kind: Kind, rest: &[&str], query: &str) -> Result<token::Request, Refusal> {
    let (ns, pod, uid, container) = match (kind, rest) {
        (Kind::PortForward, [ns, pod]) => (*ns, *pod, "", ""),
        (Kind::PortForward, [ns, pod, uid]) => (*ns, *pod, *uid, ""),
        (_, [ns, pod, c]) => (*ns, *pod, "", *c),
        (_, [ns, pod, uid, c]) => (*ns, *pod, *uid, *c),
        _ => return Err((StatusCode::NOT_FOUND, "404 page not found".into())),
    };
    let not_found = |what: String| (StatusCode::NOT_FOUND, what);
    let sb = lookup::sandbox(d, ns, pod, uid)
        .ok_or_else(|| not_found(format!("pod {ns}/{pod} does not exist on this node")))?;
    if kind == Kind::PortForward {
        let ports = query_values(query, "port")
            .iter()
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    "port: must be within 1-65535".to_string(),
                )
            })?;
        return Ok(token::Request::PortForward(PortForwardRequest {
            pod_sandbox_id: sb.id,
            ports,
        }));
    }
    let c = lookup::container(d, &sb.id, container)
        .ok_or_else(|| not_found(format!("container not found ({container:?})")))?;
    let (stdin, stdout, stderr, tty) = streams(query);
    let bad = |s: tonic::Status| (StatusCode::BAD_REQUEST, s.message().to_string());
    crate::cri::streaming::check_streams(tty, stdin, stdout, stderr).map_err(bad)?;
    crate::cri::streaming::check_running(d, &c.id).map_err(bad)?;
    Ok(match kind {
        Kind::Exec => {
            let cmd = query_values(query, "command");
            if cmd.first().is_none_or(String::is_empty) {
                return Err((StatusCode::BAD_REQUEST, "command: none given".into()));
            }
            token::Request::Exec(ExecRequest {
                container_id: c.id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            })
        }
        _ => token::Request::Attach(AttachRequest {
            container_id: c.id,
            tty,
            stdin,
            stdout,
            stderr,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_read_as_the_api_server_writes_it() {
        let q = "command=sh&command=-c&command=echo+a%20b%3B&input=1&output=1&tty=true&error=0";
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo a b;"]);
        assert_eq!(streams(q), (true, true, false, true));
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(query_values("port=80&port=8080", "port"), ["80", "8080"]);
    }
}
