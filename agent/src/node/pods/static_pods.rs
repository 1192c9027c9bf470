//! Static pods: the pod manifests (YAML or JSON, a Pod or a PodList per file) in `staticPodPath`,
//! run by the node without the API. The directory is read again every second and the pods are
//! published when they change; a file that does not parse is reported once (until it changes) and
//! left out, its pods stopped.
//!
//! Each pod gets what kubelet gives it: the node's name appended to its name (`<name>-<node>`), the
//! `default` namespace if it names none, `spec.nodeName`, a uid hashed from the manifest, the node
//! and the file (so a changed file is a new pod), the annotations `kubernetes.io/config.hash` (that
//! uid) and `kubernetes.io/config.source: file`, and a toleration of every `NoExecute` taint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::watch as chan;

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";

/// Whether `pod` came from a manifest file.
pub fn is_static(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE))
        .is_some_and(|s| s == "file")
}

/// Static pods by uid.
pub type Pods = BTreeMap<String, Pod>;

const POLL: Duration = Duration::from_secs(1);

/// Follows `dir` (none: no static pods ever) for the node `node`.
pub fn start(dir: Option<PathBuf>, node: String) -> chan::Receiver<Pods> {
    let (tx, rx) = chan::channel(Pods::new());
    tokio::spawn(async move {
        let Some(dir) = dir else {
            // Kept open so that receivers wait rather than see a closed channel.
            return tx.closed().await;
        };
        let mut reported: HashMap<PathBuf, String> = HashMap::new();
        loop {
            let d = dir.clone();
            let n = node.clone();
            let read = tokio::task::spawn_blocking(move || read_dir(&d, &n)).await;
            if let Ok((pods, errors)) = read {
                for (file, e) in &errors {
                    if reported.get(file) != Some(e) {
                        tracing::warn!(file = %file.display(), error = %e, "static pod manifest skipped");
                    }
                }
                reported = errors;
                tx.send_if_modified(|cur| {
                    let changed = *cur != pods;
                    if changed {
                        *cur = pods;
                    }
                    changed
                });
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    rx
}

/// The pods of every manifest in `dir`, and the files that could not be read, with why.
pub fn read_dir(dir: &Path, node: &str) -> (Pods, HashMap<PathBuf, String>) {
    let mut pods = Pods::new();
    let mut errors = HashMap::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            errors.insert(dir.to_path_buf(), format!("read the directory: {e}"));
            return (pods, errors);
        }
    };
    files.sort();
    for file in files {
        // kubelet skips hidden files (editors' swap files, `..data` links).
        let hidden = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || !file.is_file() {
            continue;
        }
        let parsed = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text, &file, node));
        match parsed {
            Ok(list) => {
                for p in list {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    pods.insert(uid, p);
                }
            }
            Err(e) => {
                errors.insert(file, e);
            }
        }
    }
    (pods, errors)
}

/// The pods of one manifest, with kubelet's defaults applied.
pub fn parse(text: &str, file: &Path, node: &str) -> Result<Vec<Pod>, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML or JSON: {e}"))?;
    let items = match doc["kind"].as_str() {
        Some("Pod") => vec![doc],
        Some("PodList") | Some("List") => doc["items"].as_array().cloned().unwrap_or_default(),
        Some(k) => return Err(format!("kind {k:?} is not a Pod or a PodList")),
        None => return Err("no kind: not a Pod manifest".into()),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let pod: Pod = serde_json::from_value(v).map_err(|e| format!("pod {i}: {e}"))?;
            validate(&pod).map_err(|e| format!("pod {i}: {e}"))?;
            Ok(with_defaults(pod, file, node))
        })
        .collect()
}

fn validate(pod: &Pod) -> Result<(), String> {
    if pod.metadata.name.as_deref().unwrap_or_default().is_empty() {
        return Err("metadata.name is missing".into());
    }
    let spec = pod.spec.as_ref().ok_or("spec is missing")?;
    if spec.containers.is_empty() {
        return Err("spec.containers is empty".into());
    }
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for c in all {
        if c.name.is_empty() || c.image.as_deref().unwrap_or_default().is_empty() {
            return Err(format!("container {:?} needs a name and an image", c.name));
        }
    }
    Ok(())
}

/// A uid from the manifest's pod, the node and the file: the same file on the same node is the same
/// pod across restarts of skiffd; any change makes it another.
fn uid(pod: &Pod, file: &Path, node: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(pod).unwrap_or_default());
    h.update(format!("host:{node}"));
    h.update(format!("file:{}", file.display()));
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn with_defaults(mut pod: Pod, file: &Path, node: &str) -> Pod {
    let uid = match pod.metadata.uid.clone().filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => uid(&pod, file, node),
    };
    let m = &mut pod.metadata;
    m.uid = Some(uid.clone());
    m.name = Some(format!(
        "{}-{}",
        m.name.clone().unwrap_or_default(),
        node.to_lowercase()
    ));
    if m.namespace.as_deref().unwrap_or_default().is_empty() {
        m.namespace = Some("default".into());
    }
    let a = m.annotations.get_or_insert_with(BTreeMap::new);
    a.insert(CONFIG_HASH.into(), uid);
    a.insert(CONFIG_SOURCE.into(), "file".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    pod.status = None;
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  \
                       - name: c\n    image: busybox\n";

    #[test]
    fn a_manifest_becomes_a_pod_of_this_node() {
        let p = &parse(WEB, Path::new("/m/web.yaml"), "Node-1").unwrap()[0];
        assert_eq!(p.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        let a = p.metadata.annotations.clone().unwrap();
        assert_eq!(a[CONFIG_SOURCE], "file");
        assert!(is_static(p));
        assert_eq!(a[CONFIG_HASH], uid);
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        assert_eq!(
            spec.tolerations.as_ref().unwrap()[0].effect.as_deref(),
            Some("NoExecute")
        );
        // The same manifest on the same node and path: the same uid; anywhere else another.
        let again = &parse(WEB, Path::new("/m/web.yaml"), "Node-1").unwrap()[0];
        assert_eq!(again.metadata.uid.as_deref(), Some(uid.as_str()));
        let other = &parse(WEB, Path::new("/m/web2.yaml"), "Node-1").unwrap()[0];
        assert_ne!(other.metadata.uid.as_deref(), Some(uid.as_str()));
        let changed = WEB.replace("busybox", "busybox:1");
        let changed = &parse(&changed, Path::new("/m/web.yaml"), "Node-1").unwrap()[0];
        assert_ne!(changed.metadata.uid.as_deref(), Some(uid.as_str()));
    }

    #[test]
    fn json_lists_and_bad_manifests() {
        let list = r#"{"kind":"PodList","items":[{"kind":"Pod","metadata":{"name":"a","namespace":"x"},
            "spec":{"containers":[{"name":"c","image":"i"}]}}]}"#;
        let pods = parse(list, Path::new("/m/l.json"), "n").unwrap();
        assert_eq!(pods[0].metadata.namespace.as_deref(), Some("x"));
        for (text, want) in [
            ("kind: Deployment\n", "not a Pod"),
            ("a: [\n", "not YAML"),
            (
                "kind: Pod\nmetadata: {}\nspec: {containers: [{name: c, image: i}]}\n",
                "name",
            ),
            (
                "kind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n",
                "containers",
            ),
            (
                "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n",
                "image",
            ),
        ] {
            let e = parse(text, Path::new("/m/x"), "n").unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_directory_skips_hidden_files_and_reports_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("web.yaml"), WEB).unwrap();
        std::fs::write(d.path().join(".web.yaml.swp"), "junk").unwrap();
        std::fs::write(d.path().join("bad.yaml"), "kind: Service\n").unwrap();
        let (pods, errors) = read_dir(d.path(), "n");
        assert_eq!(pods.len(), 1);
        assert_eq!(errors.len(), 1);
        assert!(errors.contains_key(&d.path().join("bad.yaml")));
    }
}
