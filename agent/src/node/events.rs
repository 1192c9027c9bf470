//! The kubelet's Events (core/v1, as kubelet 1.28 writes them): recorded without waiting, sent by
//! one task, and correlated as client-go does: an event identical to one sent before (same object,
//! type, reason, message, source) raises the existing object's `count` and `lastTimestamp` by a
//! PATCH instead of creating another object, and once an object has had many different messages
//! for one reason within ten minutes, they are combined into one aggregate event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{mpsc, watch};

/// The component kubelet's events name as their source.
pub const COMPONENT: &str = "kubelet";

/// Events waiting to be sent; past it new ones are dropped (as client-go's broadcaster does)
/// rather than memory growing while the API server is unreachable.
const QUEUE: usize = 1000;

/// How many events the correlator remembers (client-go's LRU size).
const CACHE: usize = 4096;

/// client-go's aggregation: this many distinct messages for one object and reason within
/// [`AGGREGATE_WINDOW`] turn the next ones into one combined event.
const AGGREGATE_AFTER: usize = 10;
const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
const COMBINED: &str = "(combined from similar events): ";

/// How often a condition seen at every sync (a back-off, a volume not ready) is an event again.
const REPEAT: Duration = Duration::from_secs(10);

/// Lets a recurring event through at most once per [`REPEAT`] per key, so that its count grows
/// about as fast as kubelet's, whose pod workers sync less often than skiff's.
#[derive(Default)]
pub struct Throttle(HashMap<String, Instant>);

impl Throttle {
    pub fn allow(&mut self, key: &str) -> bool {
        let now = Instant::now();
        match self.0.get(key) {
            Some(t) if now.duration_since(*t) < REPEAT => false,
            _ => {
                self.0.insert(key.to_string(), now);
                true
            }
        }
    }
}

/// Normal or Warning, as `kubectl describe` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// One event as recorded, before correlation.
#[derive(Debug, Clone)]
struct Record {
    object: ObjectReference,
    kind: Type,
    reason: String,
    message: String,
}

/// Records events for the node's objects; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
}

impl Recorder {
    /// Starts the task that sends events through the current client of `clients`, as `host`.
    pub fn start(clients: watch::Receiver<kube::Client>, host: String) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(rx, clients, host));
        Recorder { tx }
    }

    /// An event about `pod`, or about its container `container` when given (the involved
    /// object's `fieldPath` then names it, as kubelet's do).
    pub fn pod(
        &self,
        pod: &Pod,
        container: Option<&str>,
        kind: Type,
        reason: &str,
        message: impl Into<String>,
    ) {
        let record = Record {
            object: pod_ref(pod, container),
            kind,
            reason: reason.into(),
            message: message.into(),
        };
        if self.tx.try_send(record).is_err() {
            tracing::debug!(reason, "event queue full or closed: event dropped");
        }
    }
}

/// The reference kubelet puts in its events: the pod, and the container's path in its spec.
pub fn pod_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let field_path = container.map(|name| {
        let spec = pod.spec.as_ref();
        let init = spec
            .and_then(|s| s.init_containers.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.name == name));
        let list = if init { "initContainers" } else { "containers" };
        format!("spec.{list}{{{name}}}")
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// What makes two events the same one for the correlator.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: (String, String, String, String, String),
    kind: Type,
    reason: String,
    message: String,
}

/// What makes two events similar (to be aggregated): everything but the message.
type SimilarKey = ((String, String, String, String, String), Type, String);

fn object_key(o: &ObjectReference) -> (String, String, String, String, String) {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    (
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.kind),
        s(&o.field_path),
    )
}

/// An event already sent: its object's name, how often it happened and since when.
#[derive(Debug, Clone)]
struct Sent {
    name: String,
    count: i32,
    first: Time,
}

/// What to do with one recorded event.
#[derive(Debug, PartialEq)]
enum Action {
    Create { count: i32 },
    Patch { name: String, count: i32 },
}

/// client-go's correlator, without the API calls.
#[derive(Default)]
struct Correlator {
    sent: HashMap<Key, Sent>,
    similar: HashMap<SimilarKey, (Instant, Vec<String>)>,
}

impl Correlator {
    /// Rewrites `r` into its aggregate when it is one of many similar events, then decides
    /// whether it is new or a repeat.
    fn correlate(&mut self, r: &mut Record) -> (Key, Action) {
        let combined = self.aggregate(r);
        // Combined events all update one object, whose message is the latest.
        let key = Key {
            object: object_key(&r.object),
            kind: r.kind,
            reason: r.reason.clone(),
            message: if combined {
                COMBINED.into()
            } else {
                r.message.clone()
            },
        };
        let action = match self.sent.get(&key) {
            Some(s) => Action::Patch {
                name: s.name.clone(),
                count: s.count + 1,
            },
            None => Action::Create { count: 1 },
        };
        (key, action)
    }

    fn aggregate(&mut self, r: &mut Record) -> bool {
        let key = (object_key(&r.object), r.kind, r.reason.clone());
        let now = Instant::now();
        let entry = self.similar.entry(key).or_insert_with(|| (now, Vec::new()));
        if now.duration_since(entry.0) > AGGREGATE_WINDOW {
            *entry = (now, Vec::new());
        }
        if !entry.1.contains(&r.message) {
            entry.1.push(r.message.clone());
        }
        let combined = entry.1.len() > AGGREGATE_AFTER;
        if combined {
            r.message = format!("{COMBINED}{}", r.message);
        }
        if self.similar.len() > CACHE {
            self.similar.clear();
        }
        combined
    }

    fn remember(&mut self, key: Key, sent: Sent) {
        if self.sent.len() >= CACHE {
            self.sent.clear();
        }
        self.sent.insert(key, sent);
    }
}

async fn send_all(
    mut rx: mpsc::Receiver<Record>,
    clients: watch::Receiver<kube::Client>,
    host: String,
) {
    let mut c = Correlator::default();
    while let Some(mut r) = rx.recv().await {
        let (key, action) = c.correlate(&mut r);
        let client = clients.borrow().clone();
        match send(client, &host, &r, &action, c.sent.get(&key)).await {
            Ok(sent) => c.remember(key, sent),
            Err(e) => {
                tracing::warn!(reason = %r.reason, error = %e, "send an event");
            }
        }
    }
}

/// Creates or patches the event; what the correlator keeps of it.
async fn send(
    client: kube::Client,
    host: &str,
    r: &Record,
    action: &Action,
    before: Option<&Sent>,
) -> kube::Result<Sent> {
    let ns = r
        .object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Event> = Api::namespaced(client, &ns);
    let now = Time(Utc::now());
    if let (Action::Patch { name, count }, Some(before)) = (action, before) {
        let patch = json!({"count": count, "lastTimestamp": now, "message": r.message});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                return Ok(Sent {
                    count: *count,
                    ..before.clone()
                })
            }
            // Expired meanwhile: a new object carries the count on.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let count = match action {
        Action::Create { count } | Action::Patch { count, .. } => *count,
    };
    let first = before.map_or_else(|| now.clone(), |b| b.first.clone());
    let event = make(r, host, &ns, count, first, now);
    let created = api.create(&PostParams::default(), &event).await?;
    Ok(Sent {
        name: created.metadata.name.unwrap_or_default(),
        count,
        first: created.first_timestamp.unwrap_or_else(event_time_now),
    })
}

fn event_time_now() -> Time {
    Time(Utc::now())
}

/// The event object as client-go makes it: named after the object and the time in hex.
fn make(r: &Record, host: &str, ns: &str, count: i32, first: Time, now: Time) -> Event {
    let object = r.object.name.clone().unwrap_or_default();
    let nanos = now.0.timestamp_nanos_opt().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{nanos:x}")),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        involved_object: r.object.clone(),
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.kind.as_str().into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(host.into()),
        }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(host.into()),
        first_timestamp: Some(first),
        last_timestamp: Some(now),
        count: Some(count),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str) -> Record {
        Record {
            object: ObjectReference {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                kind: Some("Pod".into()),
                field_path: Some("spec.containers{c}".into()),
                ..Default::default()
            },
            kind: Type::Warning,
            reason: "Unhealthy".into(),
            message: message.into(),
        }
    }

    fn sent(name: &str, count: i32) -> Sent {
        Sent {
            name: name.into(),
            count,
            first: event_time_now(),
        }
    }

    #[test]
    fn identical_events_patch_the_first_and_count_up() {
        let mut c = Correlator::default();
        let (k, a) = c.correlate(&mut record("Liveness probe failed: "));
        assert_eq!(a, Action::Create { count: 1 });
        c.remember(k, sent("p.1", 1));
        let (k, a) = c.correlate(&mut record("Liveness probe failed: "));
        assert_eq!(
            a,
            Action::Patch {
                name: "p.1".into(),
                count: 2
            }
        );
        c.remember(k, sent("p.1", 2));
        let (_, a) = c.correlate(&mut record("Readiness probe failed: "));
        assert_eq!(a, Action::Create { count: 1 });
    }

    #[test]
    fn many_different_messages_are_combined() {
        let mut c = Correlator::default();
        for i in 0..AGGREGATE_AFTER {
            let mut r = record(&format!("failed {i}"));
            let (k, _) = c.correlate(&mut r);
            assert!(!r.message.starts_with(COMBINED));
            c.remember(k, sent(&format!("p.{i}"), 1));
        }
        let mut r = record("failed again");
        let (k, a) = c.correlate(&mut r);
        assert_eq!(a, Action::Create { count: 1 });
        assert_eq!(r.message, format!("{COMBINED}failed again"));
        c.remember(k, sent("p.c", 1));
        let (_, a) = c.correlate(&mut record("failed once more"));
        assert_eq!(
            a,
            Action::Patch {
                name: "p.c".into(),
                count: 2
            }
        );
    }

    #[test]
    fn container_events_name_the_container_in_the_spec() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "c"}]}
        }))
        .expect("a valid pod");
        assert_eq!(
            pod_ref(&pod, Some("i")).field_path.as_deref(),
            Some("spec.initContainers{i}")
        );
        assert_eq!(
            pod_ref(&pod, Some("c")).field_path.as_deref(),
            Some("spec.containers{c}")
        );
        assert_eq!(pod_ref(&pod, None).field_path, None);
    }
}
