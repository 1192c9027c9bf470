//! A control plane, a registry serving busybox, and a skiff node joined to them, with the
//! questions pod tests ask: pods and events as kubectl shows them, commands in containers
//! through the node's CRI socket, the containers' log files.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::skiff_node::{self, get_json, wait_for, Joined, NodeDir};
use super::ControlPlane;
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

impl PodCluster {
    /// Starts everything; `tag` tells this test's node and namespace apart.
    pub fn start(tag: &str) -> PodCluster {
        let registry = Registry::start().expect("start registry");
        registry
            .push(
                cri::busybox_layout(),
                "latest",
                "library/busybox:latest",
                &[],
            )
            .expect("push busybox");
        let cp = ControlPlane::start();
        let dir = NodeDir::with_registry(Some(&registry.host()));
        let logs = dir.dir.join("pod-logs");
        let name = format!("skiff-{tag}-{}", std::process::id());
        let node = skiff_node::join(
            &cp,
            dir,
            &name,
            &[],
            // The disk these tests run on may be fuller than kubelet's default thresholds allow.
            &format!(
                "podLogsDir: {}\nevictionHard: {{imagefs.available: 1%, nodefs.available: 1%}}",
                logs.display()
            ),
        );
        let ns = format!("ns-{tag}");
        cp.kubectl_ok(&["create", "namespace", &ns]);
        wait_for("default service account", Duration::from_secs(30), || {
            get_json(&cp, &["-n", &ns, "serviceaccount", "default"])
        });
        PodCluster {
            node,
            cp,
            _registry: registry,
            ns,
            logs,
            rt: tokio::runtime::Runtime::new().expect("a tokio runtime"),
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

    pub fn apply(&self, manifest: &str) {
        let file = self.cp.dir.join(format!(
            "m-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::write(&file, manifest).expect("write the manifest");
        self.kubectl_ok(&["apply", "-f", &file.to_string_lossy()]);
    }

    pub fn get(&self, args: &[&str]) -> Option<Value> {
        let mut a = vec!["-n", self.ns.as_str()];
        a.extend_from_slice(args);
        get_json(&self.cp, &a)
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get(&["pod", name])
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
            (r.exit_code, String::from_utf8_lossy(&r.stdout).into_owned())
        })
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
