//! serde accepts a JSON array wherever it expects a struct (filling fields by position), so
//! `"process": {"user": []}` would parse as a default user. The spec's objects must be objects: this
//! walks the raw document first and names the first field that is not.

use serde_json::Value;

/// Paths whose values must be JSON objects. `[]` means every element of an array, `{}` every value of
/// a map.
const OBJECTS: &[&str] = &[
    "root",
    "process",
    "process.user",
    "process.capabilities",
    "process.consoleSize",
    "process.rlimits[]",
    "mounts[]",
    "mounts[].uidMappings[]",
    "mounts[].gidMappings[]",
    "hooks",
    "hooks.prestart[]",
    "hooks.createRuntime[]",
    "hooks.createContainer[]",
    "hooks.startContainer[]",
    "hooks.poststart[]",
    "hooks.poststop[]",
    "linux",
    "linux.uidMappings[]",
    "linux.gidMappings[]",
    "linux.namespaces[]",
    "linux.devices[]",
    "linux.timeOffsets{}",
    "linux.resources",
    "linux.resources.devices[]",
    "linux.resources.memory",
    "linux.resources.cpu",
    "linux.resources.pids",
    "linux.resources.blockIO",
    "linux.resources.blockIO.weightDevice[]",
    "linux.resources.blockIO.throttleReadBpsDevice[]",
    "linux.resources.blockIO.throttleWriteBpsDevice[]",
    "linux.resources.blockIO.throttleReadIOPSDevice[]",
    "linux.resources.blockIO.throttleWriteIOPSDevice[]",
    "linux.resources.hugepageLimits[]",
    "linux.resources.network",
    "linux.resources.network.priorities[]",
    "linux.resources.rdma{}",
    "linux.seccomp",
    "linux.seccomp.syscalls[]",
    "linux.seccomp.syscalls[].args[]",
];

/// The document itself must be an object, and so must every value at [`OBJECTS`] that is present
/// (and not null, which the typed parse judges).
pub fn check(doc: &Value) -> Result<(), (String, String)> {
    if !doc.is_object() {
        return Err((
            "(document)".into(),
            format!("expected an object, found {}", kind(doc)),
        ));
    }
    for path in OBJECTS {
        let steps: Vec<&str> = path.split('.').collect();
        walk(doc, &steps, String::new())?;
    }
    Ok(())
}

fn walk(v: &Value, steps: &[&str], at: String) -> Result<(), (String, String)> {
    let Some((step, rest)) = steps.split_first() else {
        return match v {
            Value::Object(_) | Value::Null => Ok(()),
            other => Err((at, format!("expected an object, found {}", kind(other)))),
        };
    };
    let (key, each) = match step.strip_suffix("[]") {
        Some(k) => (k, Some('[')),
        None => match step.strip_suffix("{}") {
            Some(k) => (k, Some('{')),
            None => (*step, None),
        },
    };
    let Some(child) = v.get(key) else {
        return Ok(());
    };
    let here = if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    };
    match (each, child) {
        (None, c) => walk(c, rest, here),
        (Some('['), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, rest, format!("{here}[{i}]"))),
        (Some(_), Value::Object(map)) if each == Some('{') => map
            .iter()
            .try_for_each(|(k, item)| walk(item, rest, format!("{here}.{k}"))),
        // A wrong container type is for the typed parse to report.
        _ => Ok(()),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arrays_for_objects_are_named() {
        let bad = json!({"process": {"user": []}});
        assert_eq!(check(&bad).unwrap_err().0, "process.user");
        let bad = json!({"mounts": [{}, [1]]});
        assert_eq!(check(&bad).unwrap_err().0, "mounts[1]");
        let bad = json!({"linux": {"timeOffsets": {"boottime": 5}}});
        assert_eq!(check(&bad).unwrap_err().0, "linux.timeOffsets.boottime");
        assert!(check(&json!([])).is_err());
        assert!(check(&json!({"hooks": null, "mounts": "x"})).is_ok());
    }
}
