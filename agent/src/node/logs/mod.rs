//! Container logs: what `/containerLogs/{namespace}/{pod}/{container}` serves (`kubectl logs`),
//! and the rotation that keeps each container's log files within `containerLogMaxSize` and
//! `containerLogMaxFiles`.
//!
//! Logs are read from the CRI log files the monitors write; the container is found among the
//! CRI's containers by the pod and container labels, the newest instance (or, with `previous`,
//! the one before it, which the pod worker keeps).

pub mod format;
pub mod pod_dirs;
pub mod reader;
pub mod rotate;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::cri::container::{container_status, ContainerRecord};
use crate::cri::Daemon;
use crate::node::pods::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE};
pub use reader::Options;

/// Why a log request cannot be served; [`LogsError::status`] gives the HTTP status kubelet
/// answers with.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("invalid query: {0}")]
    Query(String),
    #[error("pod \"{namespace}/{pod}\" does not exist")]
    NoPod { namespace: String, pod: String },
    #[error("container \"{container}\" in pod \"{pod}\" is not available")]
    NoContainer { pod: String, container: String },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
    #[error("container \"{container}\" in pod \"{pod}\" has no log file")]
    NoLogFile { pod: String, container: String },
    #[error("open the log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LogsError {
    pub fn status(&self) -> http::StatusCode {
        match self {
            LogsError::Query(_)
            | LogsError::NoContainer { .. }
            | LogsError::NoPrevious { .. }
            | LogsError::NoLogFile { .. } => http::StatusCode::BAD_REQUEST,
            LogsError::NoPod { .. } => http::StatusCode::NOT_FOUND,
            LogsError::Open { .. } => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A log request: the reader's options and whether the previous instance is wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub options: Options,
    pub previous: bool,
}

/// Go's `strconv.ParseBool`, which kubelet's query decoding uses.
fn parse_bool(k: &str, v: &str) -> Result<bool, LogsError> {
    match v {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(LogsError::Query(format!("{k}={v:?} is not a boolean"))),
    }
}

fn parse_positive(k: &str, v: &str, min: i64) -> Result<i64, LogsError> {
    let n: i64 = v
        .parse()
        .map_err(|_| LogsError::Query(format!("{k}={v:?} is not an integer")))?;
    if n < min {
        return Err(LogsError::Query(format!("{k} must be at least {min}")));
    }
    Ok(n)
}

impl Request {
    /// Parses the query string of `/containerLogs` (kubelet's `PodLogOptions` parameters);
    /// `now` (ns since the epoch) anchors `sinceSeconds`.
    pub fn from_query(query: &str, now: i64) -> Result<Request, LogsError> {
        let mut r = Request::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "follow" => r.options.follow = parse_bool(&k, &v)?,
                "previous" => r.previous = parse_bool(&k, &v)?,
                "timestamps" => r.options.timestamps = parse_bool(&k, &v)?,
                "tailLines" => r.options.tail_lines = Some(parse_positive(&k, &v, 0)? as u64),
                "limitBytes" => r.options.limit_bytes = Some(parse_positive(&k, &v, 1)? as u64),
                "sinceSeconds" => since_seconds = Some(parse_positive(&k, &v, 1)?),
                "sinceTime" => {
                    since_time =
                        Some(format::parse_time(&v).map_err(|e| LogsError::Query(e.to_string()))?)
                }
                _ => {}
            }
        }
        r.options.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err(LogsError::Query(
                    "at most one of sinceTime or sinceSeconds may be specified".into(),
                ))
            }
            (Some(s), None) => Some(now.saturating_sub(s.saturating_mul(1_000_000_000))),
            (None, t) => t,
        };
        Ok(r)
    }
}

fn label<'a>(c: &'a ContainerRecord, key: &str) -> &'a str {
    c.config.labels.get(key).map_or("", String::as_str)
}

/// The instance of `container` in pod `namespace/pod` whose log is wanted.
pub fn find(
    d: &Daemon,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerRecord, LogsError> {
    let of_pod: Vec<ContainerRecord> = d
        .containers
        .list()
        .into_iter()
        .filter(|c| label(c, POD_NAMESPACE) == namespace && label(c, POD_NAME) == pod)
        .collect();
    if of_pod.is_empty() {
        return Err(LogsError::NoPod {
            namespace: namespace.into(),
            pod: pod.into(),
        });
    }
    let mut instances: Vec<ContainerRecord> = of_pod
        .into_iter()
        .filter(|c| label(c, CONTAINER_NAME) == container)
        .collect();
    instances.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    let names = || (pod.to_string(), container.to_string());
    let wanted = instances.into_iter().nth(usize::from(previous));
    wanted.ok_or_else(|| {
        let (pod, container) = names();
        if previous {
            LogsError::NoPrevious { pod, container }
        } else {
            LogsError::NoContainer { pod, container }
        }
    })
}

fn running(d: &Daemon, id: &str) -> bool {
    d.containers.get(id).is_some_and(|c| {
        container_status(d, &c).state == cri_api::v1::ContainerState::ContainerRunning as i32
    })
}

/// Starts streaming the log of one container instance: the receiver yields its bytes and ends
/// with the log (or, when following, with the container). Dropping the receiver stops the reader.
pub async fn stream(
    d: &Arc<Daemon>,
    namespace: &str,
    pod: &str,
    container: &str,
    req: Request,
) -> Result<mpsc::Receiver<Bytes>, LogsError> {
    let c = find(d, namespace, pod, container, req.previous)?;
    let path = c.log_path.clone().ok_or_else(|| LogsError::NoLogFile {
        pod: pod.into(),
        container: container.into(),
    })?;
    // Opened here so that a missing file is the request's error, not a cut-off stream.
    tokio::fs::metadata(&path)
        .await
        .map_err(|source| LogsError::Open {
            path: path.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(16);
    let d = d.clone();
    let id = c.id.clone();
    tokio::spawn(async move {
        let src = reader::Source {
            path: path.clone(),
            alive: move || running(&d, &id),
        };
        if let Err(e) = reader::copy(src, &req.options, &tx).await {
            tracing::warn!(path = %path.display(), error = %e, "read a container log");
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_like_kubelets() {
        let now = 1_000 * 1_000_000_000;
        let r = Request::from_query(
            "follow=true&previous=1&timestamps=True&tailLines=5&limitBytes=100&sinceSeconds=10",
            now,
        )
        .unwrap();
        assert!(r.previous);
        assert_eq!(
            r.options,
            Options {
                follow: true,
                tail_lines: Some(5),
                since: Some(990 * 1_000_000_000),
                timestamps: true,
                limit_bytes: Some(100),
            }
        );
        let t = Request::from_query("sinceTime=1970-01-01T00%3A00%3A01Z", now).unwrap();
        assert_eq!(t.options.since, Some(1_000_000_000));
        assert_eq!(Request::from_query("", now).unwrap(), Request::default());
        for bad in [
            "follow=yes",
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceTime=yesterday",
            "sinceSeconds=5&sinceTime=1970-01-01T00:00:01Z",
        ] {
            let e = Request::from_query(bad, now).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{bad}: {e}");
        }
    }

    fn record(id: &str, ns: &str, pod: &str, name: &str, created: i64) -> ContainerRecord {
        let mut c = crate::cri::testing::record(id, "sb");
        c.created_at = created;
        c.config.labels = [(POD_NAMESPACE, ns), (POD_NAME, pod), (CONTAINER_NAME, name)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        c
    }

    #[test]
    fn the_current_and_previous_instances_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let d = crate::cri::testing::daemon(tmp.path());
        for c in [
            record("c0", "ns", "p", "app", 1),
            record("c1", "ns", "p", "app", 2),
            record("s0", "ns", "p", "side", 1),
            record("o0", "other", "p", "app", 3),
        ] {
            d.containers.put(&c).unwrap();
        }
        assert_eq!(find(&d, "ns", "p", "app", false).unwrap().id, "c1");
        assert_eq!(find(&d, "ns", "p", "app", true).unwrap().id, "c0");
        assert!(matches!(
            find(&d, "ns", "p", "side", true),
            Err(LogsError::NoPrevious { .. })
        ));
        assert!(matches!(
            find(&d, "ns", "p", "nope", false),
            Err(LogsError::NoContainer { .. })
        ));
        let e = find(&d, "ns", "q", "app", false).unwrap_err();
        assert_eq!(e.status(), http::StatusCode::NOT_FOUND);
        assert_eq!(e.to_string(), "pod \"ns/q\" does not exist");
    }
}
