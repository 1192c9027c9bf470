//! kube-proxy and Services on both skiff nodes: kubeadm's own kube-proxy DaemonSet (privileged,
//! hostNetwork, hostPath `/run/xtables.lock` and `/lib/modules`, a configMap, the service-account
//! token), with the image `scripts/cluster-images` builds, runs unchanged on each node in iptables
//! mode; a Deployment spread over both nodes answers its ClusterIP and NodePort Services from a pod
//! on each node and from each node, the answers coming from the replicas on both nodes and
//! following scaling; session affinity; `externalTrafficPolicy: Local`; hostPort.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_tests::binary::workspace_dir;
use skiff_tests::cri::BUSYBOX;
use skiff_tests::k8s::netns_node::NetnsNode;
use skiff_tests::k8s::pod_json::condition;
use skiff_tests::k8s::skiff_node::{get_json, wait_for};
use skiff_tests::registry::Registry;

use super::{apply, pod, Cluster, NS};

/// Builds kube-proxy's image and pushes it to `registry` under the path a `registry.k8s.io` mirror
/// serves (the nodes mirror it there, see `netns_node::join`).
pub fn push_cluster_images(registry: &Registry) {
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
}

/// kubeadm's kube-proxy DaemonSet on both nodes, then Services through it: ClusterIP and NodePort
/// from a pod on each node and from each node, answered by the replicas on both nodes and following
/// the Deployment's scaling; ClientIP affinity; Local traffic policy keeping the client's address;
/// hostPort.
pub fn services(c: &Cluster) {
    kube_proxy_on_every_node(c);
    let (a, b) = (&c.a, &c.b);
    apply(&c.cp, &web_deployment(2));
    apply(&c.cp, SERVICES);
    pod(&c.cp, "client-a", &a.joined.name, "exec sleep 3600");
    pod(&c.cp, "client-b", &b.joined.name, "exec sleep 3600");
    let two = web_scaled(c, 2);
    let cluster_url = format!("http://{}/", service_ip(c, "web"));
    let np = node_port(c, "web-np");
    let np_url = |n: &NetnsNode| format!("http://{}:{np}/", n.ip);
    for (n, client) in [(a, "client-a"), (b, "client-b")] {
        answers_become(&format!("ClusterIP from {client}"), &two, || {
            ask_pod(n, client, &cluster_url)
        });
        answers_become(&format!("ClusterIP from {}", n.joined.name), &two, || {
            ask_node(n, &cluster_url)
        });
        answers_become(
            &format!("NodePort of {} from itself", n.joined.name),
            &two,
            || ask_node(n, &np_url(n)),
        );
    }
    answers_become("NodePort of node b from a pod on node a", &two, || {
        ask_pod(a, "client-a", &np_url(b))
    });
    answers_become("NodePort of node a from a pod on node b", &two, || {
        ask_pod(b, "client-b", &np_url(a))
    });

    let three = web_scaled(c, 3);
    answers_become("ClusterIP after scaling up", &three, || {
        ask_pod(a, "client-a", &cluster_url)
    });
    answers_become("NodePort after scaling up", &three, || {
        ask_node(b, &np_url(b))
    });

    affinity(c);
    traffic_policy(c, np);

    let one = web_scaled(c, 1);
    answers_become("ClusterIP after scaling down", &one, || {
        ask_pod(b, "client-b", &cluster_url)
    });
    answers_become("NodePort after scaling down", &one, || {
        ask_node(a, &np_url(a))
    });
    local_needs_a_local_endpoint(c);
    host_port(c);
}

/// kube-proxy Ready on each node, its rules in each node's namespace, in iptables mode.
fn kube_proxy_on_every_node(c: &Cluster) {
    c.cp.init_phase(&["addon", "kube-proxy"]);
    for n in [&c.a, &c.b] {
        let name = n.joined.name.as_str();
        let proxy = wait_for(
            &format!("kube-proxy Ready on {name}"),
            Duration::from_secs(180),
            || {
                let pods = get_json(
                    &c.cp,
                    &["-n", "kube-system", "pods", "-l", "k8s-app=kube-proxy"],
                )?;
                pods["items"]
                    .as_array()?
                    .iter()
                    .find(|p| p["spec"]["nodeName"] == name && ready(p))
                    .and_then(|p| p["metadata"]["name"].as_str().map(String::from))
            },
        );
        // The rules are in the node's namespace, written by the image's own iptables.
        wait_for(
            &format!("KUBE-SERVICES in {name}'s nat table"),
            Duration::from_secs(60),
            || {
                let out =
                    n.ns.exec("iptables-save")
                        .args(["-t", "nat"])
                        .output()
                        .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .contains(":KUBE-SERVICES")
                    .then_some(())
            },
        );
        let logs = proxy_log(&super::pod_logs(&c.cp, n), &proxy);
        assert!(logs.contains("Using iptables Proxier"), "{logs}");
    }
    let ds = get_json(&c.cp, &["-n", "kube-system", "daemonset", "kube-proxy"]).unwrap();
    assert_eq!(ds["status"]["numberReady"], 2, "{ds}");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["containers"][0]["securityContext"]["privileged"], true);
}

/// ClientIP affinity: one client, one backend, every time, from each node's client.
fn affinity(c: &Cluster) {
    let sticky = format!("http://{}/", service_ip(c, "web-sticky"));
    for (n, client) in [(&c.a, "client-a"), (&c.b, "client-b")] {
        let first = wait_for(
            "the sticky Service answers",
            Duration::from_secs(60),
            || ask_pod(n, client, &sticky),
        );
        for _ in 0..10 {
            assert_eq!(ask_pod(n, client, &sticky).as_deref(), Some(first.as_str()));
        }
    }
}

/// From outside the nodes (the lan's own address): Cluster policy masquerades the client, Local
/// keeps its address.
fn traffic_policy(c: &Cluster, np: u64) {
    let local = node_port(c, "web-local");
    let outside = c.lan.gateway.to_string();
    let node_ip = c.a.ip;
    let seen = |port: u64| {
        curl(
            c.lan.ns.exec("curl"),
            &format!("http://{node_ip}:{port}/cgi-bin/ip"),
        )
    };
    let via_local = wait_for(
        "Local NodePort from the lan",
        Duration::from_secs(60),
        || seen(local),
    );
    // httpd shows IPv4 clients as IPv4-mapped IPv6: "[::ffff:10.227.3.1]".
    assert!(
        via_local.contains(&format!(":{outside}]")),
        "externalTrafficPolicy: Local keeps the client's address {outside}: {via_local}"
    );
    let via_cluster = wait_for("NodePort from the lan", Duration::from_secs(60), || {
        seen(np)
    });
    assert!(
        !via_cluster.contains(&format!(":{outside}]")) && via_cluster.contains('.'),
        "Cluster policy masquerades the client {outside}: {via_cluster}"
    );
}

/// With one replica left, the Local NodePort answers on its node only: the other node has no
/// endpoint of its own to send the client to.
fn local_needs_a_local_endpoint(c: &Cluster) {
    let local = node_port(c, "web-local");
    let web = get(c, &["pods", "-l", "app=web"]).expect("the web pods");
    let nodes: BTreeSet<&str> = web["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    for n in [&c.a, &c.b] {
        let url = format!("http://{}:{local}/", n.ip);
        let has_web = nodes.contains(n.joined.name.as_str());
        wait_for(
            &format!("Local NodePort of {} answering: {has_web}", n.joined.name),
            Duration::from_secs(60),
            || (curl(c.lan.ns.exec("curl"), &url).is_some() == has_web).then_some(()),
        );
    }
}

/// A container's hostPort reaches it on its node's address, through skiff-bridge's portMappings:
/// from outside the nodes, from a pod on the same node and from one on the other.
fn host_port(c: &Cluster) {
    apply(
        &c.cp,
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hp, namespace: {NS}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {BUSYBOX}
    command: [sh, -c, "mkdir /www && echo hostport > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports: [{{containerPort: 8080, hostPort: 18080}}]
"#,
            node = c.a.joined.name
        ),
    );
    let url = format!("http://{}:18080/", c.a.ip);
    let from_lan = wait_for("hostPort from the lan", Duration::from_secs(120), || {
        curl(c.lan.ns.exec("curl"), &url)
    });
    assert_eq!(from_lan, "hostport");
    for (n, client) in [(&c.a, "client-a"), (&c.b, "client-b")] {
        let got = wait_for(
            &format!("hostPort from {client}"),
            Duration::from_secs(30),
            || ask_pod(n, client, &url),
        );
        assert_eq!(got, "hostport");
    }
}

/// What `url` answers to `wget` in pod `pod` on `n`, or `None` when it fails.
fn ask_pod(n: &NetnsNode, pod: &str, url: &str) -> Option<String> {
    // This busybox's `wget -T` crashes; `timeout` bounds it instead.
    let out = n.exec(pod, &["timeout", "5", "wget", "-q", "-O", "-", url]);
    out.success().then(|| out.stdout.trim().to_string())
}

/// What `url` answers to `curl` in `n`'s network namespace.
fn ask_node(n: &NetnsNode, url: &str) -> Option<String> {
    curl(n.ns.exec("curl"), url)
}

fn curl(mut c: Command, url: &str) -> Option<String> {
    let out = c.args(["-s", "-m", "3", url]).output().expect("run curl");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn get(c: &Cluster, args: &[&str]) -> Option<Value> {
    let mut a = vec!["-n", NS];
    a.extend_from_slice(args);
    get_json(&c.cp, &a)
}

fn service_ip(c: &Cluster, svc: &str) -> String {
    get(c, &["service", svc]).expect("service")["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string()
}

fn node_port(c: &Cluster, svc: &str) -> u64 {
    get(c, &["service", svc]).expect("service")["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap()
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready") == "True"
}

/// Scales the web Deployment to `replicas` and waits until that many web pods are Ready, spread over
/// both nodes when there are two or more, and the Service's EndpointSlice lists exactly their
/// addresses as ready; their names.
fn web_scaled(c: &Cluster, replicas: usize) -> BTreeSet<String> {
    c.cp.kubectl_ok(&[
        "-n",
        NS,
        "scale",
        "deployment/web",
        &format!("--replicas={replicas}"),
    ]);
    let nodes_wanted = replicas.min(2);
    wait_for(
        &format!("{replicas} web pods on {nodes_wanted} nodes in the EndpointSlice"),
        Duration::from_secs(120),
        || {
            let items = get(c, &["pods", "-l", "app=web"])?["items"]
                .as_array()?
                .clone();
            let live: Vec<&Value> = items
                .iter()
                .filter(|p| ready(p) && p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let field = |p: &&Value, f: &str| p["status"][f].as_str().map(String::from);
            let names: BTreeSet<String> = live
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
                .collect();
            let ips: BTreeSet<String> = live.iter().filter_map(|p| field(p, "podIP")).collect();
            let nodes: BTreeSet<&str> = live
                .iter()
                .filter_map(|p| p["spec"]["nodeName"].as_str())
                .collect();
            let slices = get(
                c,
                &["endpointslices", "-l", "kubernetes.io/service-name=web"],
            )?;
            let listed: BTreeSet<String> = slices["items"]
                .as_array()?
                .iter()
                .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
                .filter(|e| e["conditions"]["ready"] == true)
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            let all_pods = items.len() == replicas;
            (all_pods
                && names.len() == replicas
                && ips.len() == replicas
                && nodes.len() == nodes_wanted
                && listed == ips)
                .then_some(names)
        },
    )
}

/// Asks `ask` until the answers are exactly `want` (every one seen, no other), within 90 s:
/// kube-proxy follows the EndpointSlice a moment later.
fn answers_become(what: &str, want: &BTreeSet<String>, ask: impl Fn() -> Option<String>) {
    let mut seen = BTreeSet::new();
    let mut last = String::new();
    wait_for(
        &format!("{what} answered by {want:?}"),
        Duration::from_secs(90),
        || {
            for _ in 0..8 {
                match ask() {
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

/// A web server that answers `/` with its pod's name and `/cgi-bin/ip` with the client's address,
/// its replicas spread evenly over the nodes.
fn web_deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: web}}}}
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
metadata: {name: web, namespace: net}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: net}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: net}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-sticky, namespace: net}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080}]
"#;
