//! `activeDeadlineSeconds` and the rule that a terminal phase is final: a pod active on the node for
//! longer than its deadline is Failed with reason `DeadlineExceeded` and its containers are killed;
//! a pod once Succeeded or Failed never goes back to Running, whatever its containers do later.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::chrono::{DateTime, Utc};
use serde_json::{json, Value};

pub const REASON: &str = "DeadlineExceeded";
pub const MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why the node ended the pod, overriding the phase its containers would give.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub phase: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The deadline verdict once the pod has been active (since its status' startTime) for longer than
/// `activeDeadlineSeconds`.
pub fn check(pod: &Pod, now: DateTime<Utc>) -> Option<Verdict> {
    let limit = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = pod.status.as_ref()?.start_time.as_ref()?.0;
    (now.signed_duration_since(start).num_seconds() >= limit).then_some(Verdict {
        phase: "Failed",
        reason: REASON,
        message: MESSAGE.into(),
    })
}

/// The computed status `st` with the verdict, or the terminal phase the API already has, kept.
pub fn hold(pod: &Pod, verdict: Option<&Verdict>, st: &mut Value) {
    if let Some(v) = verdict {
        st["phase"] = json!(v.phase);
        st["reason"] = json!(v.reason);
        st["message"] = json!(v.message);
        return;
    }
    let Some(old) = pod.status.as_ref() else {
        return;
    };
    if matches!(old.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        st["phase"] = json!(old.phase);
        if let Some(r) = &old.reason {
            st["reason"] = json!(r);
        }
        if let Some(m) = &old.message {
            st["message"] = json!(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(deadline: Option<i64>, started: Option<DateTime<Utc>>, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                active_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(PodStatus {
                start_time: started.map(Time),
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn deadline_counts_from_the_start_time() {
        let t0 = Utc::now();
        let later = t0 + k8s_openapi::chrono::Duration::seconds(5);
        assert!(check(&pod(Some(5), Some(t0), "Running"), later).is_some());
        assert!(check(&pod(Some(6), Some(t0), "Running"), later).is_none());
        assert!(check(&pod(None, Some(t0), "Running"), later).is_none());
        assert!(check(&pod(Some(1), None, "Pending"), later).is_none());
    }

    #[test]
    fn terminal_phases_stay() {
        let mut st = json!({"phase": "Running"});
        hold(&pod(None, None, "Succeeded"), None, &mut st);
        assert_eq!(st["phase"], "Succeeded");
        let mut st = json!({"phase": "Running"});
        hold(&pod(None, None, "Running"), None, &mut st);
        assert_eq!(st["phase"], "Running");
        let v = check(&pod(Some(0), Some(Utc::now()), "Running"), Utc::now()).unwrap();
        hold(&pod(None, None, "Running"), Some(&v), &mut st);
        assert_eq!(
            (st["phase"].as_str(), st["reason"].as_str()),
            (Some("Failed"), Some(REASON))
        );
    }
}
