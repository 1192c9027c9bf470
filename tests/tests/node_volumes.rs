//! What every pod needs to run, as skiffd gives it on a node of a real control plane: configMap,
//! secret, downwardAPI and memory-backed emptyDir volumes, env from all of them and from resources
//! and services, the service-account token; subPath mounts that nothing in the volume can lead
//! outside of; kubelet's DNS policies and managed /etc/hosts; volumes skiff cannot set up or whose
//! object goes away under a running pod. Checked from inside the containers through the CRI.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::cri::BUSYBOX;
use skiff_tests::k8s::pod_cluster::PodCluster;
use skiff_tests::k8s::pod_json::running_and_ready;
use skiff_tests::k8s::skiff_node::{get_json, wait_for};

/// The cluster's DNS service and domain in the kubelet configuration kubeadm writes.
const CLUSTER_DNS: &str = "10.96.0.10";
const DOMAIN: &str = "cluster.local";

/// How long a pod may take to get where a test waits for it.
const WITHIN: Duration = Duration::from_secs(120);

/// A cluster whose node's resolvConf is `resolv`.
fn cluster(tag: &str, resolv: &str) -> PodCluster {
    let resolv = resolv.to_string();
    PodCluster::builder(&format!("vols-{tag}"))
        .kubelet_config(move |dir| {
            let resolv_conf = dir.join("node-resolv.conf");
            std::fs::write(&resolv_conf, resolv).unwrap();
            format!("resolvConf: {}\n", resolv_conf.display())
        })
        .start()
}

/// `sh -c script` in the main container of `pod`, which must succeed: its stdout.
fn sh(c: &PodCluster, pod: &str, script: &str) -> String {
    let (code, out) = c.sh(pod, "main", script);
    assert_eq!(code, 0, "{pod}: {script}: {out}");
    out
}

/// The waiting reason and message of container `name`, once it has some.
fn waiting(p: &Value, name: &str) -> Option<(String, String)> {
    let all = p["status"]["containerStatuses"].as_array()?;
    let w = &all.iter().find(|c| c["name"] == name)?["state"]["waiting"];
    Some((
        w["reason"].as_str()?.to_string(),
        w["message"].as_str()?.to_string(),
    ))
}

fn env_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 10
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app, tier: web}
      annotations: {note: hello}
    spec:
      terminationGracePeriodSeconds: 2
      volumes:
      - name: conf
        configMap: {name: conf}
      - name: creds
        secret: {secretName: creds}
      - name: info
        downwardAPI:
          items:
          - {path: name, fieldRef: {fieldPath: metadata.name}}
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: note, fieldRef: {fieldPath: \"metadata.annotations['note']\"}}
          - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory, divisor: 1Mi}}
      - name: mem
        emptyDir: {medium: Memory}
      - name: small
        emptyDir: {medium: Memory, sizeLimit: 16Mi}
      containers:
      - name: main
        image: registry.skiff.test/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'exec sleep 3600']
        resources: {limits: {memory: 64Mi}, requests: {cpu: 100m}}
        envFrom:
        - configMapRef: {name: conf}
          prefix: CM_
        - secretRef: {name: creds}
          prefix: S_
        env:
        - name: CONF_A
          valueFrom: {configMapKeyRef: {name: conf, key: a}}
        - name: PASSWORD
          valueFrom: {secretKeyRef: {name: creds, key: password}}
        - name: MEM_MI
          valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
        - name: CPU_LIMIT
          valueFrom: {resourceFieldRef: {resource: limits.cpu}}
        - name: CPU_REQUEST_M
          valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}
        volumeMounts:
        - {name: conf, mountPath: /conf}
        - {name: creds, mountPath: /creds}
        - {name: info, mountPath: /info}
        - {name: mem, mountPath: /mem}
        - {name: small, mountPath: /small}
";

const DB_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: db-main
spec:
  ports:
  - {name: pg, port: 5432}
  - {name: dns, port: 53, protocol: UDP}
";

/// Ten replicas with every kind of volume and variable; each checked from inside, each token
/// against the API server; then the downward API follows a label and a deleted configMap leaves
/// the pods running with their last data.
#[test]
fn a_deployment_sees_its_volumes_env_and_token_from_inside() {
    let mut c = cluster("app", "nameserver 192.0.2.53\n");
    c.kubectl_ok(&["create", "configmap", "conf", "--from-literal=a=alpha"]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    c.apply(DB_SERVICE);
    let db_ip = c.kubectl_ok(&["get", "svc", "db-main", "-o", "jsonpath={.spec.clusterIP}"]);
    let node = get_json(&c.cp, &["node", &c.node.name]).unwrap();
    let cpus: f64 = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let started = Instant::now();
    c.apply(APP);
    let pods = wait_for(
        "10 replicas Running and Ready",
        Duration::from_secs(240),
        || {
            c.node.skiffd.assert_running();
            let pods = c.pods("app=app");
            (pods.len() == 10 && pods.iter().all(running_and_ready)).then_some(pods)
        },
    );
    eprintln!(
        "10 replicas Ready {:?} after the Deployment was created",
        started.elapsed()
    );
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(sh(&c, name, "cat /conf/a"), "alpha");
        assert_eq!(sh(&c, name, "cat /creds/password"), "s3cret");
        assert_eq!(sh(&c, name, "cat /info/name"), name);
        assert_eq!(sh(&c, name, "cat /info/note"), "hello");
        assert_eq!(sh(&c, name, "cat /info/mem"), "64");
        let labels = sh(&c, name, "cat /info/labels");
        assert!(labels.contains("app=\"app\"\n"), "{labels}");
        assert!(labels.contains("tier=\"web\""), "{labels}");
        // Memory-backed emptyDirs: the pod's memory limit, or the smaller sizeLimit.
        let mounts = sh(&c, name, "cat /proc/mounts");
        let line = |at: &str| {
            mounts
                .lines()
                .find(|l| l.split(' ').nth(1) == Some(at))
                .unwrap_or_else(|| panic!("{at} not mounted: {mounts}"))
                .to_string()
        };
        assert!(
            line("/mem").starts_with("tmpfs /mem tmpfs "),
            "{}",
            line("/mem")
        );
        assert!(line("/mem").contains("size=65536k"), "{}", line("/mem"));
        assert!(line("/small").contains("size=16384k"), "{}", line("/small"));
        let env = env_map(&sh(&c, name, "env"));
        let want = [
            ("CONF_A", "alpha".to_string()),
            ("CM_a", "alpha".into()),
            ("PASSWORD", "s3cret".into()),
            ("S_password", "s3cret".into()),
            ("MEM_MI", "64".into()),
            ("CPU_LIMIT", format!("{}", cpus.ceil() as i64)),
            ("CPU_REQUEST_M", "100".into()),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1".into()),
            ("KUBERNETES_SERVICE_PORT", "443".into()),
            ("DB_MAIN_SERVICE_HOST", db_ip.clone()),
            ("DB_MAIN_SERVICE_PORT", "5432".into()),
            ("DB_MAIN_SERVICE_PORT_PG", "5432".into()),
            ("DB_MAIN_SERVICE_PORT_DNS", "53".into()),
            ("DB_MAIN_PORT", format!("tcp://{db_ip}:5432")),
            ("DB_MAIN_PORT_5432_TCP", format!("tcp://{db_ip}:5432")),
            ("DB_MAIN_PORT_5432_TCP_PROTO", "tcp".into()),
            ("DB_MAIN_PORT_5432_TCP_PORT", "5432".into()),
            ("DB_MAIN_PORT_5432_TCP_ADDR", db_ip.clone()),
            ("DB_MAIN_PORT_53_UDP", format!("udp://{db_ip}:53")),
            ("DB_MAIN_PORT_53_UDP_PROTO", "udp".into()),
        ];
        for (k, v) in want {
            assert_eq!(env.get(k), Some(&v), "{name}: {k}: {env:?}");
        }
        // The service-account token authenticates as the namespace's default account, bound to
        // this pod.
        let token = sh(&c, name, &format!("cat {sa}/token"));
        assert_eq!(sh(&c, name, &format!("cat {sa}/namespace")), c.ns);
        let review = c.cp.dir.join(format!("review-{name}.json"));
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.trim()},
        });
        std::fs::write(&review, body.to_string()).unwrap();
        let out =
            c.cp.kubectl_ok(&["create", "-f", review.to_str().unwrap(), "-o", "json"]);
        let r: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(r["status"]["authenticated"], true, "{r}");
        assert_eq!(
            r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"][0], name,
            "{r}"
        );
    }

    // A new label reaches the downwardAPI volume of the running pod.
    let first = pods[0]["metadata"]["name"].as_str().unwrap();
    c.kubectl_ok(&["label", "pod", first, "release=canary"]);
    wait_for(
        "the label in the downwardAPI volume",
        Duration::from_secs(30),
        || {
            sh(&c, first, "cat /info/labels")
                .contains("release=\"canary\"")
                .then_some(())
        },
    );

    // The configMap deleted under running pods: they keep running with its last data, and the
    // failure to refresh is logged as kubelet's FailedMount.
    c.kubectl_ok(&["delete", "configmap", "conf"]);
    wait_for(
        "FailedMount in skiffd's log",
        Duration::from_secs(40),
        || {
            let log = std::fs::read_to_string(&c.node.skiffd.log).unwrap_or_default();
            log.contains("FailedMount").then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    let pods = c.pods("app=app");
    assert_eq!(pods.len(), 10);
    for p in &pods {
        assert!(running_and_ready(p), "{}", p["status"]);
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(sh(&c, name, "cat /conf/a"), "alpha");
    }
}

/// subPath mounts of a configMap key and a per-pod directory; escapes by `..` and by symlink,
/// including one swapped in and out by another container while the victim restarts, never reach
/// the host's marker directory. DNS policies and the managed hosts file as kubelet writes them. A
/// volume type skiff does not have is reported on the pod, and skiffd carries on.
#[test]
fn subpaths_stay_inside_and_pods_get_kubelets_dns_and_hosts() {
    let mut c = cluster(
        "sub",
        "nameserver 192.0.2.53\nsearch corp.skiff.test\noptions edns0\n",
    );
    // The host's directory every escape aims at; removed when the test ends, however it ends.
    let marker_dir = tempfile::Builder::new()
        .prefix("skiff-subpath-marker-")
        .tempdir_in("/tmp")
        .unwrap();
    let marker = marker_dir.path().to_path_buf();
    std::fs::write(marker.join("SECRET"), "host data\n").unwrap();
    let m = marker.display();
    c.kubectl_ok(&["create", "configmap", "conf", "--from-literal=a=alpha"]);

    c.apply(
        "apiVersion: v1
kind: Pod
metadata: {name: unknown}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  volumes:
  - name: remote
    nfs: {server: 127.0.0.1, path: /exports}
  containers:
  - name: main
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sleep, '3600']
    volumeMounts: [{name: remote, mountPath: /remote}]
",
    );
    let (reason, message) = c.until_pod("unknown", "a waiting message", WITHIN, |p| {
        waiting(p, "main")
    });
    assert_eq!(reason, "ContainerCreating");
    assert!(
        message.contains("volume type \"nfs\" is not supported"),
        "{message}"
    );

    let pod = |name: &str, extra: &str, mounts: &str, script: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
{extra}  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '{script}']
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - {{name: UP, value: '..'}}
    volumeMounts:
{mounts}"
        )
    };
    let vols =
        "  volumes:\n  - {name: conf, configMap: {name: conf}}\n  - {name: work, emptyDir: {}}\n";
    c.apply(&pod(
        "sub",
        vols,
        "    - {name: conf, mountPath: /etc/a.conf, subPath: a}
    - {name: work, mountPath: /data, subPathExpr: 'per/$(POD_NAME)'}
    - {name: work, mountPath: /work}
",
        "echo hi > /data/f; exec sleep 3600",
    ));
    c.apply(&pod(
        "dotdot",
        vols,
        "    - {name: work, mountPath: /data, subPathExpr: '$(UP)/$(UP)'}\n",
        "exec sleep 3600",
    ));
    let symlink = pod(
        "symlink",
        vols,
        "    - {name: work, mountPath: /data, subPath: x}\n",
        "exec sleep 3600",
    )
    .replace(
        "  containers:\n",
        &format!(
            "  initContainers:
  - name: plant
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [ln, -s, {m}, /work/x]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:\n"
        ),
    );
    c.apply(&symlink);
    // The swapper turns x into a directory, an absolute and a relative symlink to the host's
    // marker, over and over; the victims mount x by subPath and restart.
    let up = "../".repeat(24);
    let mut race = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: race}}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
{vols}  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'cd /work; while true; do rm -rf x; mkdir x; rm -rf x; ln -s {m} x; rm -f x; ln -s {up}{m} x; rm -f x; done']
    volumeMounts: [{{name: work, mountPath: /work}}]
"
    );
    for i in 0..6 {
        race += &format!(
            "  - name: victim{i}
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'if [ -e /sub/SECRET ]; then echo escaped > /work/escaped; fi; touch /sub/victim-was-here; sleep 1; exit 1']
    volumeMounts: [{{name: work, mountPath: /sub, subPath: x}}, {{name: work, mountPath: /work}}]
"
        );
    }
    c.apply(&race);

    let dns_pod = |name: &str, extra: &str| pod(name, extra, "      []\n", "exec sleep 3600");
    c.apply(&dns_pod(
        "dns-cluster",
        "  dnsConfig:
    searches: [extra.example]
    options: [{name: ndots, value: '2'}, {name: edns0}]
",
    ));
    c.apply(&dns_pod("dns-default", "  dnsPolicy: Default\n"));
    c.apply(&dns_pod(
        "dns-none",
        "  enableServiceLinks: false
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.1]
    searches: [a.example]
    options: [{name: ndots, value: '1'}]
",
    ));
    c.apply(&dns_pod(
        "dns-hostnet",
        "  hostNetwork: true\n  dnsPolicy: ClusterFirstWithHostNet\n",
    ));
    c.apply(&dns_pod("dns-hostnet-cf", "  hostNetwork: true\n"));
    c.apply(&dns_pod(
        "named",
        "  hostname: web
  subdomain: sub
  setHostnameAsFQDN: true
  hostAliases:
  - {ip: 192.0.2.10, hostnames: [foo.example, bar.example]}
",
    ));

    // subPath: the configMap's key as a file, a per-pod directory made in the volume.
    c.running("sub");
    assert_eq!(sh(&c, "sub", "cat /etc/a.conf"), "alpha");
    assert_eq!(sh(&c, "sub", "cat /work/per/sub/f"), "hi\n");
    // Directories made for a subPath take the volume's mode, as kubelet makes them.
    assert_eq!(
        sh(&c, "sub", "stat -c %a /work/per /work/per/sub"),
        "777\n777\n"
    );
    // `..` (by subPathExpr, which the API cannot check) and a planted symlink are refused.
    let refused = |p: &Value| waiting(p, "main").filter(|(r, _)| r == "CreateContainerConfigError");
    let (reason, message) = c.until_pod("dotdot", "a refused subPath", WITHIN, refused);
    assert_eq!(reason, "CreateContainerConfigError", "{message}");
    assert!(message.contains("without '..'"), "{message}");
    let (reason, message) = c.until_pod("symlink", "a refused subPath", WITHIN, refused);
    assert_eq!(reason, "CreateContainerConfigError", "{message}");
    assert!(message.contains("leads outside the volume"), "{message}");

    // DNS as kubelet writes it.
    let search = format!(
        "search {ns}.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN} corp.skiff.test",
        ns = c.ns
    );
    c.running("dns-cluster");
    let r = sh(&c, "dns-cluster", "cat /etc/resolv.conf");
    assert!(r.contains(&format!("{search} extra.example\n")), "{r}");
    assert!(r.contains(&format!("nameserver {CLUSTER_DNS}\n")), "{r}");
    let opts = r
        .lines()
        .find(|l| l.starts_with("options "))
        .unwrap_or_default();
    let mut opts: Vec<&str> = opts.split(' ').skip(1).collect();
    opts.sort();
    assert_eq!(opts, ["edns0", "ndots:2"], "{r}");
    c.running("dns-default");
    assert_eq!(
        sh(&c, "dns-default", "cat /etc/resolv.conf"),
        "search corp.skiff.test\nnameserver 192.0.2.53\noptions edns0\n"
    );
    c.running("dns-none");
    assert_eq!(
        sh(&c, "dns-none", "cat /etc/resolv.conf"),
        "search a.example\nnameserver 192.0.2.1\noptions ndots:1\n"
    );
    let env = env_map(&sh(&c, "dns-none", "env"));
    assert_eq!(
        env.get("KUBERNETES_SERVICE_HOST").map(String::as_str),
        Some("10.96.0.1")
    );
    c.running("dns-hostnet");
    let r = sh(&c, "dns-hostnet", "cat /etc/resolv.conf");
    assert!(r.contains(&format!("nameserver {CLUSTER_DNS}\n")), "{r}");
    assert!(r.contains(&format!("{search}\n")), "{r}");
    c.running("dns-hostnet-cf");
    assert!(sh(&c, "dns-hostnet-cf", "cat /etc/resolv.conf").contains("nameserver 192.0.2.53\n"));

    // Hostname, subdomain, FQDN as hostname and hostAliases in kubelet's hosts file.
    let p = c.running("named");
    let ip = p["status"]["podIP"].as_str().unwrap();
    let fqdn = format!("web.sub.{}.svc.{DOMAIN}", c.ns);
    assert_eq!(sh(&c, "named", "hostname").trim(), fqdn);
    let hosts = sh(&c, "named", "cat /etc/hosts");
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(hosts.contains(&format!("\n{ip}\t{fqdn}\tweb\n")), "{hosts}");
    assert!(
        hosts
            .ends_with("\n# Entries added by HostAliases.\n192.0.2.10\tfoo.example\tbar.example\n"),
        "{hosts}"
    );

    // The race: give the victims time to restart through the swaps, then look.
    container_running(&mut c, "race", "main");
    std::thread::sleep(Duration::from_secs(35));
    let log = std::fs::read_to_string(&c.node.skiffd.log).unwrap_or_default();
    let victim = |l: &&str| l.contains("pod=race") && l.contains("container=victim");
    let started = log
        .lines()
        .filter(victim)
        .filter(|l| l.contains("container started"))
        .count();
    // A try that found x missing or a file at that moment is refused for that reason instead;
    // every try counts, each victim being tried again at least every 10 s.
    let refused = log
        .lines()
        .filter(victim)
        .filter(|l| l.contains("container not started"))
        .count();
    let outside = log
        .lines()
        .filter(victim)
        .filter(|l| l.contains("leads outside the volume"))
        .count();
    eprintln!(
        "race: victims started {started} times, refused {refused} times ({outside} as outside)"
    );
    assert!(
        started + refused >= 12,
        "{started} starts, {refused} refusals"
    );
    let (code, out) = c.sh("race", "main", "test ! -e /work/escaped");
    assert_eq!(code, 0, "a victim reached the host's marker: {out}");
    let mut seen: Vec<String> = std::fs::read_dir(&marker)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["SECRET"], "a victim wrote into the host's marker");
    c.node.skiffd.assert_running();
}

/// Waits until the container `container` of `pod` runs.
fn container_running(c: &mut PodCluster, pod: &str, container: &str) {
    wait_for("the container running", WITHIN, || {
        c.node.skiffd.assert_running();
        let p = c.pod(pod)?;
        let all = p["status"]["containerStatuses"].as_array()?.clone();
        all.iter()
            .any(|s| s["name"] == container && s["state"]["running"].is_object())
            .then_some(())
    });
}
