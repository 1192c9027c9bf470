//! Questions about a pod as `kubectl get pod -o json` shows it.

use serde_json::Value;

/// The status ("True", "False", …) of the pod's condition `t`; empty while it has none.
pub fn condition(pod: &Value, t: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

pub fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready") == "True"
}

/// Why the `i`th container of the pod waits, while it does.
pub fn waiting_reason(pod: &Value, i: usize) -> Option<String> {
    pod["status"]["containerStatuses"][i]["state"]["waiting"]["reason"]
        .as_str()
        .map(String::from)
}
