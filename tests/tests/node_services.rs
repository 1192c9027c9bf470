//! kube-proxy and Services on a skiff node: kubeadm's own kube-proxy DaemonSet (privileged,
//! hostNetwork, hostPath `/run/xtables.lock` and `/lib/modules`, a configMap, the service-account
//! token), with the image `scripts/cluster-images` builds, runs unchanged on skiffd in iptables mode;
//! ClusterIP and NodePort Services answer from pods and from the node and follow scaling; session
//! affinity and `externalTrafficPolicy: Local`; hostPort; hostPath volumes of every type.
//!
//! The node lives in a network namespace of its own ([`NodeNetns`]) so that kube-proxy's rules stay
//! out of the host's, with the cluster's ranges routed into a port-less bridge.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_tests::binary::workspace_dir;
use skiff_tests::cri::v1 as criv1;
use skiff_tests::k8s::control_plane::{POD_CIDR, SERVICE_CIDR};
use skiff_tests::k8s::node_netns::NodeNetns;
use skiff_tests::k8s::pod_cluster::PodCluster;
use skiff_tests::k8s::pod_json::condition;
use skiff_tests::k8s::skiff_node::get_json;

/// The node's pods take their addresses from the first /24 the controller-manager hands out.
const NODE_POD_SUBNET: &str = "10.244.0.0/24";
const BUSYBOX: &str = "registry.skiff.test/library/busybox:latest";

fn cluster(tag: &str) -> PodCluster {
    PodCluster::builder(&format!("svc-{tag}"))
        .in_netns("px", &[SERVICE_CIDR, POD_CIDR])
        .before_join(|registry, dir| {
            let script = workspace_dir().join("scripts/cluster-images");
            let out = Command::new(&script)
                .arg(registry.host())
                .output()
                .expect("run scripts/cluster-images");
            assert!(
                out.status.success(),
                "cluster-images: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            // kubeadm's kube-proxy image comes from registry.k8s.io: the test registry mirrors it.
            std::fs::write(
                dir.join("registries.toml"),
                format!(
                    "[registries.\"registry.skiff.test\"]\nmirrors = [\"http://{r}\"]\n\
                     [registries.\"registry.k8s.io\"]\nmirrors = [\"http://{r}\"]\n",
                    r = registry.host()
                ),
            )
            .unwrap();
            std::fs::write(
                dir.join("net.d/10-pods.conflist"),
                conflist(&dir.join("ipam")),
            )
            .unwrap();
        })
        .start()
}

/// skiff-bridge on the node's pod range, with the hostPort capability and a default route to the
/// node (by which pods reach Service addresses).
fn conflist(ipam: &Path) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"pods","plugins":[{{"type":"skiff-bridge","bridge":"skpods",
        "isGateway":true,"ipMasq":true,"capabilities":{{"portMappings":true}},
        "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{NODE_POD_SUBNET}"}}]],
        "routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"{}"}}}}]}}"#,
        ipam.display()
    )
}

/// What the service checks ask of the cluster.
trait Services {
    fn netns(&self) -> &NodeNetns;
    fn exec_first(&self, pod: &str, cmd: &[&str]) -> (i32, String);
    fn ask_pod(&self, pod: &str, url: &str) -> Option<String>;
    fn ask_node(&self, url: &str) -> Option<String>;
    fn service_ip(&self, svc: &str) -> String;
    fn node_port(&self, svc: &str) -> u64;
    fn web_pods(&self) -> BTreeSet<String>;
    fn web_scaled(&mut self, replicas: usize) -> BTreeSet<String>;
    fn answers_become(
        &mut self,
        what: &str,
        want: &BTreeSet<String>,
        ask: impl Fn(&Self) -> Option<String>,
    );
}

impl Services for PodCluster {
    fn netns(&self) -> &NodeNetns {
        self.net.as_ref().expect("the node's network namespace")
    }

    /// `cmd` in the first running container of pod `pod`, through the CRI: (exit code, stdout).
    fn exec_first(&self, pod: &str, cmd: &[&str]) -> (i32, String) {
        let running = criv1::ContainerState::ContainerRunning as i32;
        let container = self
            .containers(pod)
            .into_iter()
            .find(|(_, cs)| cs.iter().any(|c| c.state == running))
            .map(|(name, _)| name)
            .expect("a running container");
        self.exec(pod, &container, cmd)
    }

    /// What `url` answers to a pod's `wget`, or `None` when it fails.
    fn ask_pod(&self, pod: &str, url: &str) -> Option<String> {
        // This busybox's `wget -T` crashes; `timeout` bounds it instead.
        let (code, out) = self.exec_first(pod, &["timeout", "5", "wget", "-q", "-O", "-", url]);
        (code == 0).then(|| out.trim().to_string())
    }

    /// What `url` answers to `curl` in the node's network namespace.
    fn ask_node(&self, url: &str) -> Option<String> {
        curl(self.netns().command("curl"), url)
    }

    fn service_ip(&self, svc: &str) -> String {
        self.get(&["service", svc]).expect("service")["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn node_port(&self, svc: &str) -> u64 {
        self.get(&["service", svc]).expect("service")["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .unwrap()
    }

    /// The web pods' names.
    fn web_pods(&self) -> BTreeSet<String> {
        self.get(&["pods", "-l", "app=web"])
            .and_then(|v| v["items"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits until `replicas` web pods are Ready and the Service's EndpointSlice lists exactly their
    /// addresses as ready.
    fn web_scaled(&mut self, replicas: usize) -> BTreeSet<String> {
        self.kubectl_ok(&["scale", "deployment/web", &format!("--replicas={replicas}")]);
        self.until(
            &format!("{replicas} web pods in the EndpointSlice"),
            Duration::from_secs(120),
            |c| {
                let pods = c.web_pods();
                let ips: BTreeSet<String> = c.get(&["pods", "-l", "app=web"])?["items"]
                    .as_array()?
                    .iter()
                    .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                    .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
                    .collect();
                let slices = c.get(&["endpointslices", "-l", "kubernetes.io/service-name=web"])?;
                let listed: BTreeSet<String> = slices["items"]
                    .as_array()?
                    .iter()
                    .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                    .filter(|e| e["conditions"]["ready"] == true)
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect();
                (pods.len() == replicas && ips.len() == replicas && listed == ips).then_some(pods)
            },
        )
    }

    /// Asks `ask` until the answers are exactly `want` (every one seen, no other), within a minute:
    /// kube-proxy follows the EndpointSlice a moment later.
    fn answers_become(
        &mut self,
        what: &str,
        want: &BTreeSet<String>,
        ask: impl Fn(&Self) -> Option<String>,
    ) {
        let mut seen = BTreeSet::new();
        let mut last = String::new();
        self.until(
            &format!("{what} answered by {want:?}"),
            Duration::from_secs(90),
            |c| {
                for _ in 0..8 {
                    match ask(c) {
                        Some(a) if want.contains(&a) => {
                            seen.insert(a);
                        }
                        Some(a) => {
                            // An answer from a pod that should be gone: start over.
                            last = a;
                            seen.clear();
                        }
                        None => last = "no answer".into(),
                    }
                    if &seen == want {
                        return Some(());
                    }
                }
                eprintln!("{what}: seen {seen:?}, last {last:?}");
                None
            },
        );
    }
}

/// kube-proxy's log, from the CRI log files under the node's pod log directory.
fn proxy_log(pod_logs: &Path, pod: &str) -> String {
    let dirs = std::fs::read_dir(pod_logs).expect("pod log directory");
    dirs.flatten()
        .filter(|d| d.file_name().to_string_lossy().contains(pod))
        .flat_map(|d| {
            std::fs::read_dir(d.path().join("kube-proxy"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect()
}

fn curl(mut c: Command, url: &str) -> Option<String> {
    let out = c.args(["-s", "-m", "3", url]).output().expect("run curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready") == "True"
}

/// A web server that answers `/` with its pod's name and `/cgi-bin/ip` with the client's address.
fn web_deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {BUSYBOX}
        command: [sh, -c]
        args:
        - |
          mkdir -p /www/cgi-bin
          hostname > /www/index.html
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          exec httpd -f -p 8080 -h /www
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
"#
    )
}

const SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-sticky}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
"#;

fn client_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
"#
    )
}

/// One cluster for every check (a control plane costs a minute): hostPath volumes, kube-proxy and
/// Services, hostPort.
#[test]
fn kube_proxy_services_host_ports_and_host_paths_on_a_skiff_node() {
    let mut c = cluster("kp");
    host_paths(&mut c);
    services(&mut c);
    host_port(&mut c);
}

/// kubeadm's kube-proxy DaemonSet on the node, then Services through it: ClusterIP and NodePort from
/// a pod and from the node, following the Deployment's scaling; ClientIP affinity; Local traffic
/// policy keeping the client's address.
fn services(c: &mut PodCluster) {
    c.cp.init_phase(&["addon", "kube-proxy"]);
    let node = c.node.name.clone();
    let proxy = c.until(
        "kube-proxy Ready on the node",
        Duration::from_secs(180),
        |c| {
            let pods = get_json(
                &c.cp,
                &["-n", "kube-system", "pods", "-l", "k8s-app=kube-proxy"],
            )?;
            pods["items"]
                .as_array()?
                .iter()
                .find(|p| p["spec"]["nodeName"] == node.as_str() && ready(p))
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
        },
    );
    let ds = get_json(&c.cp, &["-n", "kube-system", "daemonset", "kube-proxy"]).unwrap();
    assert_eq!(ds["status"]["numberReady"], 1, "{ds}");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
    // The rules are in the node's namespace, written by the image's own iptables.
    c.until(
        "KUBE-SERVICES in the node's nat table",
        Duration::from_secs(60),
        |c| {
            let out = c
                .netns()
                .command("iptables-save")
                .args(["-t", "nat"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .contains(":KUBE-SERVICES")
                .then_some(())
        },
    );
    let logs = proxy_log(&c.node.node.dir.join("pod-logs"), &proxy);
    assert!(logs.contains("Using iptables Proxier"), "{logs}");

    c.apply(&web_deployment(2));
    c.apply(SERVICES);
    c.apply(&client_pod("client"));
    c.running("client");
    let two = c.web_scaled(2);
    let ip = c.service_ip("web");
    let np = c.node_port("web-np");
    let node_ip = c.netns().node_ip;
    let cluster_url = format!("http://{ip}/");
    let np_url = format!("http://{node_ip}:{np}/");
    c.answers_become("ClusterIP from a pod", &two, |c| {
        c.ask_pod("client", &cluster_url)
    });
    c.answers_become("ClusterIP from the node", &two, |c| {
        c.ask_node(&cluster_url)
    });
    c.answers_become("NodePort from a pod", &two, |c| {
        c.ask_pod("client", &np_url)
    });
    c.answers_become("NodePort from the node", &two, |c| c.ask_node(&np_url));

    let three = c.web_scaled(3);
    c.answers_become("ClusterIP after scaling up", &three, |c| {
        c.ask_pod("client", &cluster_url)
    });
    c.answers_become("NodePort after scaling up", &three, |c| c.ask_node(&np_url));

    // ClientIP affinity: one client, one backend, every time.
    let sticky = format!("http://{}/", c.service_ip("web-sticky"));
    let first = c.until("the sticky Service answers", Duration::from_secs(60), |c| {
        c.ask_pod("client", &sticky)
    });
    for _ in 0..10 {
        assert_eq!(
            c.ask_pod("client", &sticky).as_deref(),
            Some(first.as_str())
        );
    }

    // From outside the node (the host's end of its link): Cluster policy masquerades the client,
    // Local keeps its address.
    let local = c.node_port("web-local");
    let host_ip = c.netns().host_ip.to_string();
    let seen = |port: u64| {
        curl(
            Command::new("curl"),
            &format!("http://{node_ip}:{port}/cgi-bin/ip"),
        )
    };
    let via_local = c.until(
        "Local NodePort from the host",
        Duration::from_secs(60),
        |_| seen(local),
    );
    // httpd shows IPv4 clients as IPv4-mapped IPv6: "[::ffff:10.219.0.1]".
    assert!(
        via_local.contains(&format!(":{host_ip}]")),
        "externalTrafficPolicy: Local keeps the client's address {host_ip}: {via_local}"
    );
    let via_cluster = c.until("NodePort from the host", Duration::from_secs(60), |_| {
        seen(np)
    });
    assert!(
        !via_cluster.contains(&host_ip) && via_cluster.contains("."),
        "Cluster policy masquerades the client {host_ip}: {via_cluster}"
    );

    let one = c.web_scaled(1);
    c.answers_become("ClusterIP after scaling down", &one, |c| {
        c.ask_pod("client", &cluster_url)
    });
    c.answers_become("NodePort after scaling down", &one, |c| c.ask_node(&np_url));
}

/// A container's hostPort reaches it on the node's address, through skiff-bridge's portMappings.
fn host_port(c: &mut PodCluster) {
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hp}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: [sh, -c, "mkdir /www && echo hostport > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, hostPort: 18080}}]
"#
    ));
    c.running("hp");
    let url = format!("http://{}:18080/", c.netns().node_ip);
    let from_host = c.until("hostPort from the host", Duration::from_secs(30), |_| {
        curl(Command::new("curl"), &url)
    });
    assert_eq!(from_host, "hostport");
    let ask_pod = c.until("hostPort from a pod", Duration::from_secs(30), |c| {
        c.ask_pod("client", &url)
    });
    assert_eq!(ask_pod, "hostport");
}

/// hostPath volumes of every type: what is there is checked against the type, the …OrCreate types
/// create what is missing with kubelet's modes, a mismatch keeps the pod from starting with the
/// reason in skiffd's log.
fn host_paths(c: &mut PodCluster) {
    let base = c.node.node.dir.join("host-paths");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("dir")).unwrap();
    std::fs::write(base.join("file"), "host file\n").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(base.join("sock")).unwrap();
    let block = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
        })
        .expect("a block device in /dev");
    let b = base.display();
    let vols: Vec<(&str, String, &str)> = vec![
        ("none", format!("{b}/untyped"), ""),
        ("dir", format!("{b}/dir"), "Directory"),
        ("mkdir", format!("{b}/made/dir"), "DirectoryOrCreate"),
        ("file", format!("{b}/file"), "File"),
        ("mkfile", format!("{b}/dir/made"), "FileOrCreate"),
        ("sock", format!("{b}/sock"), "Socket"),
        ("chr", "/dev/null".into(), "CharDevice"),
        ("blk", block.display().to_string(), "BlockDevice"),
    ];
    let mounts: String = vols
        .iter()
        .map(|(n, _, _)| {
            format!(
                "    - {{name: {n}, mountPath: /m/{n}, readOnly: {}}}\n",
                *n == "blk"
            )
        })
        .collect();
    let volumes: String = vols
        .iter()
        .map(|(n, p, t)| format!("  - {{name: {n}, hostPath: {{path: \"{p}\", type: \"{t}\"}}}}\n"))
        .collect();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: hostpaths}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts:
{mounts}  volumes:
{volumes}"#
    ));
    c.running("hostpaths");
    let (code, out) = c.exec_first(
        "hostpaths",
        &[
            "sh",
            "-c",
            "test -d /m/none && test -d /m/dir && test -d /m/mkdir && test -f /m/file && \
             test -f /m/mkfile && test -S /m/sock && test -c /m/chr && test -b /m/blk && \
             cat /m/file && echo from-pod > /m/mkdir/x && echo from-pod > /m/mkfile",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "host file\n");
    // The pod wrote into the node's paths.
    assert_eq!(
        std::fs::read_to_string(base.join("made/dir/x")).unwrap(),
        "from-pod\n"
    );
    assert_eq!(
        std::fs::read_to_string(base.join("dir/made")).unwrap(),
        "from-pod\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(base.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("made/dir") & !0o755, 0);
    assert_eq!(mode("dir/made") & !0o644, 0);
    assert!(base.join("untyped").is_dir());

    // A type that does not match: the pod does not start, and skiffd says why.
    let cases: HashMap<&str, (String, &str, &str)> = [
        (
            "not-dir",
            (format!("{b}/file"), "Directory", "is not a directory"),
        ),
        ("not-file", (format!("{b}/dir"), "File", "is not a file")),
        (
            "not-sock",
            (format!("{b}/file"), "Socket", "is not a socket file"),
        ),
        (
            "not-chr",
            (
                format!("{b}/file"),
                "CharDevice",
                "is not a character device",
            ),
        ),
        (
            "not-blk",
            ("/dev/null".into(), "BlockDevice", "is not a block device"),
        ),
        (
            "missing",
            (format!("{b}/nothing"), "Directory", "does not exist"),
        ),
    ]
    .into_iter()
    .collect();
    for (name, (path, t, _)) in &cases {
        c.apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: c
    image: {BUSYBOX}
    command: [sleep, "3600"]
    volumeMounts: [{{name: v, mountPath: /v}}]
  volumes: [{{name: v, hostPath: {{path: "{path}", type: {t}}}}}]
"#
        ));
    }
    for (name, (_, _, why)) in &cases {
        c.until(
            &format!("{name}: {why} in skiffd's log"),
            Duration::from_secs(60),
            |c| {
                let log = c.node.node.log();
                log.lines()
                    .any(|l| {
                        l.contains(name)
                            && l.contains("hostPath type check failed")
                            && l.contains(why)
                    })
                    .then_some(())
            },
        );
        let p = c.get(&["pod", name]).unwrap();
        assert!(!ready(&p), "{name} started: {p}");
        assert!(
            p["status"]["containerStatuses"][0]["state"]["running"].is_null(),
            "{p}"
        );
    }
    assert!(!base.join("nothing").exists());
    // Checked once, when first mounted: the running pod keeps its volumes when a path goes away.
    std::fs::remove_file(base.join("file")).unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let p = c.get(&["pod", "hostpaths"]).unwrap();
    assert!(ready(&p), "{p}");
    for name in cases.keys().copied().chain(["hostpaths"]) {
        c.kubectl_ok(&["delete", "pod", name, "--wait=false"]);
    }
}
