//! A control plane, a registry serving busybox, and a skiff node joined to them, with the
//! questions pod tests ask: pods and events as kubectl shows them, commands in containers
//! through the node's CRI socket, the containers' log files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::skiff_node::{self, get_json, wait_for, Joined, NodeDir};
use super::{pod_json, ControlPlane};
use crate::cri::{self, v1 as criv1};
use crate::registry::Registry;

pub struct PodCluster {
    pub node: Joined,
    pub cp: ControlPlane,
    _registry: Registry,
    /// The namespace the test's objects live in.
    pub ns: String,
    /// Where skiffd writes the containers' logs.
    pub logs: PathBuf,
    rt: tokio::runtime::Runtime,
}

/// A registry serving busybox as `library/busybox:latest`, the image [`crate::cri::BUSYBOX`] names.
pub fn busybox_registry() -> Registry {
    let registry = Registry::start().expect("start registry");
    registry
        .push(
            cri::busybox_layout(),
            "latest",
            "library/busybox:latest",
            &[],
        )
        .expect("push busybox");
    registry
}

/// Creates the namespace `ns` and waits for what pods in it need from controllers: its default
/// service account (kube-root-ca.crt comes with it).
pub fn create_namespace(cp: &ControlPlane, ns: &str) {
    cp.kubectl_ok(&["create", "namespace", ns]);
    wait_for("default service account", Duration::from_secs(30), || {
        get_json(cp, &["-n", ns, "serviceaccount", "default"])
    });
}

/// Kubelet configuration lines a test adds, made from the node's directory (files it writes there).
type ConfigFn = Box<dyn FnOnce(&Path) -> String>;

/// Files a test writes into the node's directory before it joins, given the registry.
type PrepareFn = Box<dyn FnOnce(&Registry, &Path)>;

/// What a test changes about its cluster: more kubelet configuration, files in the node's
/// directory, its namespace's name.
pub struct PodClusterBuilder {
    tag: String,
    config: Option<ConfigFn>,
    prepare: Option<PrepareFn>,
    ns: Option<String>,
}

impl PodClusterBuilder {
    /// Runs `f` on the registry and the node's directory before the node joins.
    pub fn before_join(mut self, f: impl FnOnce(&Registry, &Path) + 'static) -> Self {
        self.prepare = Some(Box::new(f));
        self
    }

    /// The namespace the test's objects live in, when its manifests name it.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.ns = Some(ns.to_string());
        self
    }

    /// Lines added to the node's KubeletConfiguration, from `f` given the node's directory.
    pub fn kubelet_config(mut self, f: impl FnOnce(&Path) -> String + 'static) -> Self {
        self.config = Some(Box::new(f));
        self
    }

    pub fn start(self) -> PodCluster {
        let registry = busybox_registry();
        let cp = ControlPlane::start();
        let dir = NodeDir::with_registry(Some(&registry.host()));
        if let Some(f) = self.prepare {
            f(&registry, &dir.dir);
        }
        let logs = dir.pod_logs();
        let extra = self.config.map(|f| f(&dir.dir)).unwrap_or_default();
        let tag = self.tag;
        let name = format!("skiff-{tag}-{}", std::process::id());
        let node = skiff_node::join(
            &cp,
            dir,
            &name,
            &[],
            // The disk these tests run on may be fuller than kubelet's default thresholds allow.
            &format!("evictionHard: {{imagefs.available: 1%, nodefs.available: 1%}}\n{extra}"),
        );
        let ns = self.ns.unwrap_or_else(|| format!("ns-{tag}"));
        create_namespace(&cp, &ns);
        PodCluster {
            node,
            cp,
            _registry: registry,
            ns,
            logs,
            rt: tokio::runtime::Runtime::new().expect("a tokio runtime"),
        }
    }
}

impl PodCluster {
    /// Starts everything; `tag` tells this test's node and namespace apart.
    pub fn start(tag: &str) -> PodCluster {
        Self::builder(tag).start()
    }

    /// A cluster to adjust before it starts.
    pub fn builder(tag: &str) -> PodClusterBuilder {
        PodClusterBuilder {
            tag: tag.to_string(),
            config: None,
            prepare: None,
            ns: None,
        }
    }

    /// kubectl in the test's namespace.
    pub fn kubectl(&self, args: &[&str]) -> crate::Output {
        let mut a = vec!["-n", self.ns.as_str()];
        a.extend_from_slice(args);
        self.cp.kubectl(&a)
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.success(), "{out}");
        out.stdout
    }

    /// Applies `manifest` in the test's namespace.
    pub fn apply(&self, manifest: &str) {
        let file = self.manifest_file(manifest);
        self.kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
    }

    /// Applies `manifest`, whose objects name their namespaces.
    pub fn apply_as_written(&self, manifest: &str) {
        let file = self.manifest_file(manifest);
        self.cp
            .kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
    }

    fn manifest_file(&self, manifest: &str) -> PathBuf {
        let file = self.cp.dir.join(format!(
            "m-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&file, manifest).expect("write the manifest");
        file
    }

    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["-n", self.ns.as_str()];
        a.extend_from_slice(args);
        get_json(&self.cp, &a)
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get(&["pod", name])
    }

    /// The pods `selector` picks.
    pub fn pods(&self, selector: &str) -> Vec<Value> {
        self.get(&["pods", "-l", selector])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits for `f` over the cluster; on failure shows skiffd's log.
    pub fn until<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            self.node.skiffd.assert_running();
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\nskiffd:\n{}",
                self.node.skiffd.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until the pod `name` is Running and Ready; the pod then.
    pub fn running(&mut self, name: &str) -> Value {
        self.until_pod(name, "Running and Ready", Duration::from_secs(120), |p| {
            pod_json::running_and_ready(p).then(|| p.clone())
        })
    }

    /// The events about the object `name`, as `kubectl get events` lists them.
    pub fn events(&self, name: &str) -> Vec<Value> {
        let selector = format!("involvedObject.name={name}");
        self.get(&["events", "--field-selector", &selector])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Waits for `f` over the pod `name`; on failure shows the pod and skiffd's log.
    pub fn until_pod<T>(
        &mut self,
        name: &str,
        what: &str,
        within: Duration,
        f: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            self.node.skiffd.assert_running();
            if let Some(v) = self.pod(name).as_ref().and_then(&f) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name}: {what} not within {within:?}\n{}\nevents:\n{}\nskiffd:\n{}",
                serde_json::to_string_pretty(&self.pod(name)).unwrap_or_default(),
                self.events(name)
                    .iter()
                    .map(|e| format!("{} {} x{}", e["reason"], e["message"], e["count"]))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.node.skiffd.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn runtime_client(
        &self,
    ) -> criv1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
        self.rt.block_on(async {
            let ch = cri::connect(&self.node.node.socket())
                .await
                .expect("connect to skiffd");
            criv1::runtime_service_client::RuntimeServiceClient::new(ch)
        })
    }

    /// The CRI containers of `pod` (every state), by container name.
    pub fn containers(&self, pod: &str) -> HashMap<String, Vec<criv1::Container>> {
        let mut rt = self.runtime_client();
        let filter = criv1::ContainerFilter {
            label_selector: [("io.kubernetes.pod.name".to_string(), pod.to_string())].into(),
            ..Default::default()
        };
        let list = self
            .rt
            .block_on(rt.list_containers(criv1::ListContainersRequest {
                filter: Some(filter),
            }))
            .expect("list containers")
            .into_inner()
            .containers;
        let mut out: HashMap<String, Vec<criv1::Container>> = HashMap::new();
        for c in list {
            let name = c.metadata.clone().map(|m| m.name).unwrap_or_default();
            out.entry(name).or_default().push(c);
        }
        out
    }

    /// Every CRI pod sandbox on the node.
    pub fn sandboxes(&self) -> Vec<criv1::PodSandbox> {
        let mut rt = self.runtime_client();
        self.rt
            .block_on(rt.list_pod_sandbox(criv1::ListPodSandboxRequest { filter: None }))
            .expect("list pod sandboxes")
            .into_inner()
            .items
    }

    /// The id of the running container `container` of `pod`, through the CRI.
    pub fn running_container(&self, pod: &str, container: &str) -> Option<String> {
        self.rt.block_on(async {
            let ch = cri::connect(&self.node.node.socket()).await.ok()?;
            let mut rt = criv1::runtime_service_client::RuntimeServiceClient::new(ch);
            let filter = criv1::ContainerFilter {
                label_selector: [
                    ("io.kubernetes.pod.name".to_string(), pod.to_string()),
                    (
                        "io.kubernetes.container.name".to_string(),
                        container.to_string(),
                    ),
                ]
                .into(),
                ..Default::default()
            };
            let list = rt
                .list_containers(criv1::ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .ok()?
                .into_inner()
                .containers;
            list.into_iter()
                .find(|c| c.state == criv1::ContainerState::ContainerRunning as i32)
                .map(|c| c.id)
        })
    }

    /// `cmd` in the running container `container` of `pod`, through the CRI: exit code, stdout.
    pub fn exec(&self, pod: &str, container: &str, cmd: &[&str]) -> (i32, String) {
        let id = self
            .running_container(pod, container)
            .unwrap_or_else(|| panic!("{pod}/{container}: no running container"));
        self.rt.block_on(async {
            let ch = cri::connect(&self.node.node.socket())
                .await
                .expect("connect to skiffd");
            let mut rt = criv1::runtime_service_client::RuntimeServiceClient::new(ch);
            let r = rt
                .exec_sync(criv1::ExecSyncRequest {
                    container_id: id,
                    cmd: cmd.iter().map(|s| s.to_string()).collect(),
                    timeout: 10,
                })
                .await
                .expect("exec_sync")
                .into_inner();
            if r.exit_code != 0 {
                eprintln!(
                    "{cmd:?} in {pod}/{container}: exit {}: {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr)
                );
            }
            (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned())
        })
    }

    /// `cmd` in the running container `container` of `pod`, which must exit 0: its stdout.
    pub fn exec_ok(&self, pod: &str, container: &str, cmd: &[&str]) -> String {
        let (code, out) = self.exec(pod, container, cmd);
        assert_eq!(code, 0, "{pod}/{container}: {cmd:?}: {out}");
        out
    }

    /// `sh -c script` in the running container `container` of `pod`: exit code, stdout.
    pub fn sh(&self, pod: &str, container: &str, script: &str) -> (i32, String) {
        self.exec(pod, container, &["sh", "-c", script])
    }

    /// The log files of the container `container` of the pod `pod` (every restart).
    pub fn log_files(&self, pod: &str, container: &str) -> Vec<PathBuf> {
        let prefix = format!("{}_{pod}_", self.ns);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let dir = e.path().join(container);
                for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
    }
}
