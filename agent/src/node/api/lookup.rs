//! From the names in a kubelet API path to skiffd's objects: a pod (namespace, name, and uid when
//! the path has one) to its newest ready sandbox, a container name to the newest container of that
//! name in it.

use crate::cri::container::ContainerRecord;
use crate::cri::pod::SandboxRecord;
use crate::cri::Daemon;

/// The pod's sandbox that is ready, newest first; `uid` empty matches any.
pub fn sandbox(d: &Daemon, namespace: &str, pod: &str, uid: &str) -> Option<SandboxRecord> {
    d.sandboxes
        .list()
        .into_iter()
        .filter(|sb| sb.ready)
        .filter(|sb| {
            sb.config.metadata.as_ref().is_some_and(|m| {
                m.namespace == namespace && m.name == pod && (uid.is_empty() || m.uid == uid)
            })
        })
        .max_by_key(|sb| sb.created_at)
}

/// The newest container named `name` in `sandbox`.
pub fn container(d: &Daemon, sandbox: &str, name: &str) -> Option<ContainerRecord> {
    d.containers
        .list()
        .into_iter()
        .filter(|c| {
            c.sandbox_id == sandbox && c.config.metadata.as_ref().is_some_and(|m| m.name == name)
        })
        .max_by_key(|c| c.created_at)
}
