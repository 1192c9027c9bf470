//! Restartable init containers (sidecars, an init container with `restartPolicy: Always`): started in
//! order with the other init containers, the next one begun once the sidecar runs; always restarted;
//! kept running beside the app containers and stopped after them: at deletion, and, in a pod that
//! does not restart its containers, once every app container has finished.

use std::collections::HashMap;

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

/// The CRI label that marks a sidecar's containers, read when the pod's containers are stopped.
pub const LABEL: &str = "io.skiff.container.sidecar";

pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether a CRI container is a sidecar's.
pub fn labelled(c: &cri::Container) -> bool {
    c.labels.get(LABEL).is_some_and(|v| v == "true")
}

/// A sidecar's status as the phase and Initialized rules read init containers: done once it has
/// started (running, or ended after running); other init containers as they are.
pub fn settled(c: &Container, status: &Value) -> Value {
    let started = status["state"].get("running").is_some()
        || status["state"].get("terminated").is_some()
        || status["lastState"].get("terminated").is_some();
    if is_sidecar(c) && started {
        json!({"state": {"terminated": {"exitCode": 0}}, "lastState": {}})
    } else {
        status.clone()
    }
}

/// In a pod whose policy does not restart them, the app containers are done when every one has
/// exited and would not be started again: then the sidecars are to be stopped.
pub fn apps_done(
    spec: &PodSpec,
    running: &HashMap<String, Vec<cri::Container>>,
    exit_code: &HashMap<String, i32>,
) -> bool {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if policy == "Always" {
        return false;
    }
    spec.containers.iter().all(|c| {
        let exited = running
            .get(&c.name)
            .and_then(|v| v.first())
            .is_some_and(|l| l.state == cri::ContainerState::ContainerExited as i32);
        let code = exit_code.get(&c.name).copied().unwrap_or(-1);
        exited && (policy == "Never" || code == 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, policy: Option<&str>) -> Container {
        Container {
            name: name.into(),
            restart_policy: policy.map(String::from),
            ..Default::default()
        }
    }

    fn cri_container(state: cri::ContainerState) -> cri::Container {
        cri::Container {
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_started_sidecar_counts_as_initialized() {
        let side = container("s", Some("Always"));
        let plain = container("p", None);
        let running = json!({"state": {"running": {}}, "lastState": {}});
        let waiting = json!({"state": {"waiting": {}}, "lastState": {}});
        assert_eq!(
            settled(&side, &running)["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(settled(&side, &waiting), waiting);
        assert_eq!(settled(&plain, &running), running);
    }

    #[test]
    fn apps_are_done_only_when_none_will_restart() {
        let mut spec = PodSpec {
            containers: vec![container("a", None)],
            restart_policy: Some("OnFailure".into()),
            ..Default::default()
        };
        let exited: HashMap<String, Vec<cri::Container>> = [(
            "a".to_string(),
            vec![cri_container(cri::ContainerState::ContainerExited)],
        )]
        .into();
        let ok: HashMap<String, i32> = [("a".to_string(), 0)].into();
        let failed: HashMap<String, i32> = [("a".to_string(), 1)].into();
        assert!(apps_done(&spec, &exited, &ok));
        assert!(!apps_done(&spec, &exited, &failed));
        assert!(!apps_done(&spec, &HashMap::new(), &ok));
        spec.restart_policy = Some("Never".into());
        assert!(apps_done(&spec, &exited, &failed));
        spec.restart_policy = None;
        assert!(!apps_done(&spec, &exited, &ok));
    }
}
