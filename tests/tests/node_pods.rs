//! skiffd runs the pods the scheduler binds to its node: sandbox and containers through its own CRI
//! layer, the projected service-account volume every pod gets, status as kubectl reads it, graceful
//! deletion, kubelet's restart back-off and image pull reasons, init containers in order, and pods
//! that outlive a restart of skiffd. Against a real control plane, joined by `kubeadm join`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use skiff_tests::cri::{v1 as criv1, BUSYBOX};
use skiff_tests::k8s::pod_cluster::PodCluster;
use skiff_tests::k8s::pod_json::{condition, running_and_ready};
use skiff_tests::k8s::skiff_node::wait_for;

fn plain_pod(name: &str, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
{extra}  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '{script}']
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: GREETING
      value: hello $(POD_NAME)
"
    )
}

#[test]
fn a_plain_pod_runs_with_its_status_env_volumes_and_logs() {
    // Room for the large log below without a rotation.
    let mut c = PodCluster::builder("pods-plain")
        .kubelet_config(|_| "containerLogMaxSize: 64Mi\n".into())
        .start();
    c.apply(&plain_pod("plain", "echo started; exec sleep 3600", ""));
    let p = c.until_pod("plain", "Running and Ready", Duration::from_secs(90), |p| {
        running_and_ready(p).then(|| p.clone())
    });
    let st = &p["status"];
    let ip = st["podIP"].as_str().unwrap();
    assert!(ip.starts_with("10.213."), "{st}");
    assert_eq!(st["podIPs"][0]["ip"], ip);
    assert_eq!(st["hostIP"], c.cp.ip.to_string());
    assert_eq!(st["qosClass"], "BestEffort");
    assert!(st["startTime"].is_string());
    for t in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    ] {
        assert_eq!(condition(&p, t), "True", "{t}: {st}");
    }
    let cs = &st["containerStatuses"][0];
    assert_eq!(cs["name"], "main");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["image"], BUSYBOX);
    assert!(
        cs["imageID"].as_str().unwrap().starts_with("sha256:"),
        "{cs}"
    );
    assert!(
        cs["containerID"].as_str().unwrap().starts_with("skiff://"),
        "{cs}"
    );
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    let env = c.exec_ok("plain", "main", &["env"]);
    assert!(env.contains("POD_NAME=plain\n"), "{env}");
    assert!(env.contains(&format!("POD_IP={ip}\n")), "{env}");
    assert!(env.contains("GREETING=hello plain\n"), "{env}");
    // The service variables of the API server, which in-cluster clients read.
    assert!(env.contains("KUBERNETES_SERVICE_HOST=10.96.0.1\n"), "{env}");
    assert!(env.contains("KUBERNETES_SERVICE_PORT=443\n"), "{env}");
    assert!(
        env.contains("KUBERNETES_PORT=tcp://10.96.0.1:443\n"),
        "{env}"
    );
    let host = c.exec_ok("plain", "main", &["hostname"]);
    assert_eq!(host.trim(), "plain");
    // The log where kubelet keeps it: <podLogsDir>/<ns>_<name>_<uid>/<container>/<restarts>.log.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let log = c
        .node
        .node
        .dir
        .join(format!("pod-logs/{}_plain_{uid}/main/0.log", c.ns));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("started"), "{}: {text:?}", log.display());

    // configMap and secret volumes: items, modes, an optional object that is missing, updates.
    c.kubectl_ok(&[
        "create",
        "configmap",
        "conf",
        "--from-literal=a=alpha",
        "--from-literal=b=beta",
    ]);
    c.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    c.apply(VOLUMES_POD);
    c.until_pod("vols", "Running and Ready", Duration::from_secs(60), |p| {
        running_and_ready(p).then_some(())
    });
    let sh = |c: &PodCluster, script: &str| c.exec_ok("vols", "main", &["sh", "-c", script]);
    assert_eq!(sh(&c, "cat /conf/renamed"), "alpha");
    assert_eq!(sh(&c, "ls /conf"), "renamed\n");
    assert_eq!(sh(&c, "stat -L -c %a /conf/renamed"), "600\n");
    assert_eq!(sh(&c, "cat /creds/password"), "s3cret");
    assert_eq!(sh(&c, "stat -L -c %a /creds/password"), "400\n");
    assert_eq!(
        sh(&c, "ls -A /maybe | grep -v '^\\.\\.' | wc -l").trim(),
        "0"
    );
    assert_eq!(sh(&c, "cat /scratch/mark"), "written by main\n");
    let env = sh(&c, "env");
    for v in [
        "CM_a=alpha",
        "CM_b=beta",
        "FROM_CM=beta",
        "FROM_SECRET=s3cret",
        "APP=vols-app",
    ] {
        assert!(env.contains(&format!("{v}\n")), "{v}: {env}");
    }
    assert!(!env.contains("MISSING="), "{env}");
    c.kubectl_ok(&[
        "patch",
        "configmap",
        "conf",
        "-p",
        r#"{"data":{"a":"updated"}}"#,
    ]);
    wait_for(
        "the configMap update in the pod",
        Duration::from_secs(40),
        || (sh(&c, "cat /conf/renamed") == "updated").then_some(()),
    );

    // The pod's securityContext reaches the container's process.
    let ids = "  securityContext: {runAsUser: 1234, runAsGroup: 5678}\n";
    c.apply(&plain_pod("ids", "exec sleep 3600", ids));
    c.until_pod("ids", "Running", Duration::from_secs(60), |p| {
        running_and_ready(p).then_some(())
    });
    let id = c.exec_ok("ids", "main", &["id"]);
    assert!(id.starts_with("uid=1234 gid=5678"), "{id}");

    // On the node's network, the pod has the node's address.
    c.apply(&plain_pod(
        "hostnet",
        "exec sleep 3600",
        "  hostNetwork: true\n",
    ));
    let p = c.until_pod("hostnet", "Running", Duration::from_secs(60), |p| {
        running_and_ready(p).then(|| p.clone())
    });
    assert_eq!(p["status"]["podIP"], c.cp.ip.to_string(), "{}", p["status"]);

    // A readiness probe holds Ready back until it passes.
    let probe = plain_pod("probe", "exec sleep 3600", "").replace(
        "    env:\n",
        "    readinessProbe: {exec: {command: [cat, /tmp/ready]}, periodSeconds: 1}\n    env:\n",
    );
    c.apply(&probe);
    c.until_pod("probe", "Running", Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Running").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = c.pod("probe").unwrap();
    assert_eq!(condition(&p, "Ready"), "False", "{}", p["status"]);
    assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);
    c.exec_ok("probe", "main", &["touch", "/tmp/ready"]);
    c.until_pod("probe", "Ready", Duration::from_secs(20), |p| {
        running_and_ready(p).then_some(())
    });

    let big = large_log_read_slowly(&mut c);
    // A bare pod deleted: its log directory goes with it, within kubelet's container GC period.
    c.kubectl_ok(&["delete", "pod", "biglog", "--wait=true"]);
    wait_for(
        "the deleted pod's log directory removed",
        Duration::from_secs(60),
        || (!big.exists()).then_some(()),
    );
    assert!(log.exists(), "the running pod's log went too");
}

/// One line of the large log: 99 characters and its newline.
const LINE: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzA";
const BIG_LOG: u64 = 24 << 20;
const BIG_LOG_DONE: &str = "log-written";

/// A 24 MiB log read slowly, through the API server (`kubectl logs`, a reader that pauses) and
/// straight from the node's `/containerLogs` (curl at a limited rate): every byte arrives, as many
/// as the log file holds. Returns the pod's log directory.
fn large_log_read_slowly(c: &mut PodCluster) -> PathBuf {
    let script =
        format!("yes {LINE} | head -c {BIG_LOG}; echo; echo {BIG_LOG_DONE}; exec sleep 3600");
    c.apply(&plain_pod("biglog", &script, ""));
    c.until("the large log written", Duration::from_secs(120), |c| {
        let out = c.kubectl(&["logs", "biglog", "--tail=1"]);
        (out.success() && out.stdout.trim() == BIG_LOG_DONE).then_some(())
    });
    let uid = c.pod("biglog").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = c.logs.join(format!("{}_biglog_{uid}", c.ns));
    let file = std::fs::read(dir.join("main/0.log")).unwrap();
    let held = messages_len(&file);
    // The newline and the marker line follow the 24 MiB.
    assert_eq!(held, BIG_LOG + 1 + BIG_LOG_DONE.len() as u64 + 1);
    let files = std::fs::read_dir(dir.join("main")).unwrap().count();
    assert_eq!(files, 1, "the log was rotated");

    let mut kubectl = Command::new("kubectl");
    kubectl
        .arg("--kubeconfig")
        .arg(c.cp.admin_kubeconfig())
        .args(["-n", &c.ns, "logs", "biglog"]);
    // Pauses long enough for every buffer on the way (the node's, the API server's) to fill.
    let pauses = [
        (1 << 20, Duration::from_secs(3)),
        (12 << 20, Duration::from_secs(3)),
    ];
    assert_eq!(read_slowly(kubectl, &pauses), held, "kubectl logs");
    let mut curl = Command::new("curl");
    curl.args(["-sSfk", "--limit-rate", "8M", "--cert"])
        .arg(c.cp.pki().join("apiserver-kubelet-client.crt"))
        .arg("--key")
        .arg(c.cp.pki().join("apiserver-kubelet-client.key"))
        .arg(format!(
            "https://{}:{}/containerLogs/{}/biglog/main",
            c.cp.ip, c.node.kubelet_port, c.ns
        ));
    assert_eq!(read_slowly(curl, &[]), held, "/containerLogs at 8 MiB/s");
    dir
}

/// The bytes `kubectl logs` shows for a CRI log file: each record's message, a newline after
/// each full line.
fn messages_len(file: &[u8]) -> u64 {
    file.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f = l.splitn(4, |&b| b == b' ');
            let (_, _, tag) = (f.next(), f.next(), f.next());
            let msg = f.next().unwrap_or_default().len() as u64;
            msg + u64::from(tag != Some(b"P".as_slice()))
        })
        .sum()
}

/// Runs `cmd` and reads its output, stopping for each (offset, pause) once past the offset; the
/// bytes read. The command must succeed.
fn read_slowly(mut cmd: Command, pauses: &[(u64, Duration)]) -> u64 {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut next) = (0u64, pauses.iter().peekable());
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        if let Some((_, pause)) = next.next_if(|(at, _)| total >= *at) {
            std::thread::sleep(*pause);
        }
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{cmd:?}: {status}: {err}");
    total
}

const VOLUMES_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {app: vols-app}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  volumes:
  - name: conf
    configMap:
      name: conf
      items: [{key: a, path: renamed, mode: 0600}]
  - name: creds
    secret: {secretName: creds, defaultMode: 0400}
  - name: maybe
    configMap: {name: does-not-exist, optional: true}
  - name: scratch
    emptyDir: {}
  containers:
  - name: main
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo written by main > /scratch/mark; exec sleep 3600']
    envFrom:
    - configMapRef: {name: conf}
      prefix: CM_
    env:
    - name: FROM_CM
      valueFrom: {configMapKeyRef: {name: conf, key: b}}
    - name: FROM_SECRET
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: conf, key: nope, optional: true}}
    - name: APP
      valueFrom: {fieldRef: {fieldPath: \"metadata.labels['app']\"}}
    volumeMounts:
    - {name: conf, mountPath: /conf}
    - {name: creds, mountPath: /creds, readOnly: true}
    - {name: maybe, mountPath: /maybe}
    - {name: scratch, mountPath: /scratch}
";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: registry.skiff.test/library/busybox:latest
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'trap \"echo TERM > /tmp/term; exit 0\" TERM; while true; do sleep 1; done']
";

const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// `n` pods of the deployment, all Running and Ready with an IP.
fn wait_replicas(c: &mut PodCluster, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        c.node.skiffd.assert_running();
        let pods = c.pods("app=web");
        let live: Vec<Value> = pods
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .cloned()
            .collect();
        if pods.len() == n
            && live.len() == n
            && live
                .iter()
                .all(|p| running_and_ready(p) && p["status"]["podIP"].is_string())
        {
            return live;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} replicas not Running and Ready:\n{}\nskiffd:\n{}",
            c.kubectl(&["get", "pods", "-o", "wide"]),
            c.node.skiffd.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_deployment_gets_service_account_tokens_and_scales_gracefully() {
    let mut c = PodCluster::start("pods-deploy");
    let created = std::time::Instant::now();
    c.apply(DEPLOYMENT);
    let pods = wait_replicas(&mut c, 3);
    eprintln!(
        "3 replicas Running and Ready {:?} after the Deployment was created",
        created.elapsed()
    );
    let mut ips: Vec<&str> = pods
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap())
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "{ips:?}");
    let name = pods[0]["metadata"]["name"].as_str().unwrap().to_string();

    // The projected volume admission added: a bound token, the cluster CA, the namespace.
    let token = c.exec_ok(&name, "main", &["cat", &format!("{SA}/token")]);
    let ca = c.exec_ok(&name, "main", &["cat", &format!("{SA}/ca.crt")]);
    let ns = c.exec_ok(&name, "main", &["cat", &format!("{SA}/namespace")]);
    assert_eq!(ns, c.ns);
    let cluster_ca = std::fs::read_to_string(c.cp.pki().join("ca.crt")).unwrap();
    assert_eq!(ca.trim(), cluster_ca.trim());
    let listing = c.exec_ok(&name, "main", &["ls", "-la", SA]);
    assert!(listing.contains("..data ->"), "{listing}");
    // The token authenticates, as the namespace's default service account, bound to this pod.
    let review = c.cp.dir.join("review.json");
    std::fs::write(
        &review,
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.trim()},
        })
        .to_string(),
    )
    .unwrap();
    let out =
        c.cp.kubectl_ok(&["create", "-f", review.to_str().unwrap(), "-o", "json"]);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(
        r["status"]["user"]["username"],
        format!("system:serviceaccount:{}:default", c.ns)
    );
    assert_eq!(
        r["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        name.as_str(),
        "{r}"
    );

    // Scale to 0: SIGTERM first (the trap runs), the pods leave the API, nothing stays in the CRI.
    let out = c.kubectl(&["scale", "deployment/web", "--replicas=0"]);
    assert!(out.success(), "{out}");
    let started = std::time::Instant::now();
    wait_for(
        "pods gone after scaling to 0",
        Duration::from_secs(60),
        || c.pods("app=web").is_empty().then_some(()),
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    wait_for("sandboxes removed", Duration::from_secs(20), || {
        c.sandboxes().is_empty().then_some(())
    });
    let log = std::fs::read_to_string(&c.node.skiffd.log).unwrap();
    assert!(log.contains("container started"), "{log}");

    let out = c.kubectl(&["scale", "deployment/web", "--replicas=2"]);
    assert!(out.success(), "{out}");
    wait_replicas(&mut c, 2);
}

/// Watches pod `name` with `kubectl get -w` until `done` holds for the states seen so far (or
/// `within` passes); every status the API published, in order.
fn watch_pod(
    c: &PodCluster,
    name: &str,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(c.cp.admin_kubeconfig())
        .args([
            "-n",
            &c.ns,
            "get",
            "pod",
            name,
            "-w",
            "-o",
            "json",
            "--output-watch-events=false",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // kubectl prints one pretty JSON object per event: split at the closing brace of column 0.
        let mut buf = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            buf.push_str(&line);
            buf.push('\n');
            if line == "}" {
                if let Ok(v) = serde_json::from_str::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        }
    });
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline && !done(&seen) {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(v);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

fn waiting_reason(p: &Value) -> &str {
    p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
        .as_str()
        .unwrap_or("")
}

#[test]
fn failing_commands_and_missing_images_report_kubelets_reasons() {
    let mut c = PodCluster::start("pods-fail");
    c.apply(&plain_pod("crash", "echo failing; exit 3", ""));
    let missing =
        plain_pod("noimage", "true", "").replace(BUSYBOX, "registry.skiff.test/library/absent:1.0");
    c.apply(&missing);

    // ErrImagePull, then ImagePullBackOff while the back-off runs.
    let seen = watch_pod(&c, "noimage", Duration::from_secs(60), |s| {
        let reasons: Vec<&str> = s.iter().map(waiting_reason).collect();
        reasons
            .iter()
            .position(|r| *r == "ErrImagePull")
            .is_some_and(|i| reasons[i..].contains(&"ImagePullBackOff"))
    });
    let reasons: Vec<&str> = seen.iter().map(waiting_reason).collect();
    let first = reasons.iter().position(|r| *r == "ErrImagePull");
    assert!(
        first.is_some_and(|i| reasons[i..].contains(&"ImagePullBackOff")),
        "{reasons:?}\n{}",
        c.node.skiffd.log_tail(30)
    );
    let err = seen
        .iter()
        .find(|p| waiting_reason(p) == "ErrImagePull")
        .unwrap();
    let msg = err["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(msg.contains("absent"), "{msg}");
    assert_eq!(err["status"]["phase"], "Pending");

    // A command that fails: restarted with a growing back-off, CrashLoopBackOff in between.
    let first = c.until_pod("crash", "CrashLoopBackOff", Duration::from_secs(60), |p| {
        let cs = &p["status"]["containerStatuses"][0];
        (waiting_reason(p) == "CrashLoopBackOff").then(|| cs.clone())
    });
    assert_eq!(first["lastState"]["terminated"]["exitCode"], 3, "{first}");
    assert_eq!(
        first["lastState"]["terminated"]["reason"], "Error",
        "{first}"
    );
    assert_eq!(first["ready"], false);
    let n = first["restartCount"].as_i64().unwrap();
    assert!(n >= 1, "{first}");
    let later = c.until_pod("crash", "more restarts", Duration::from_secs(60), |p| {
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_i64().unwrap_or(0) > n && waiting_reason(p) == "CrashLoopBackOff")
            .then(|| cs.clone())
    });
    let msg = later["state"]["waiting"]["message"].as_str().unwrap();
    assert!(msg.contains("back-off") && msg.contains("crash"), "{msg}");
    // Only the newest exited instance is kept, for lastState.
    let kept = c.containers("crash")["main"].len();
    assert!(kept <= 2, "{kept} instances kept");
    let p = c.pod("crash").unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(condition(&p, "Ready"), "False");

    // restartPolicy Never: the pod ends Succeeded or Failed, as its container did.
    let never = "  restartPolicy: Never\n";
    c.apply(&plain_pod("done", "exit 0", never));
    c.apply(&plain_pod("failed", "exit 7", never));
    let done = c.until_pod("done", "Succeeded", Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Succeeded").then(|| p.clone())
    });
    let t = &done["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "Completed", "{t}");
    let failed = c.until_pod("failed", "Failed", Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Failed").then(|| p.clone())
    });
    let cs = &failed["status"]["containerStatuses"][0];
    assert_eq!(cs["state"]["terminated"]["exitCode"], 7, "{cs}");
    assert_eq!(cs["restartCount"], 0, "{cs}");

    // Limits reach the container's cgroup: past its memory limit it is OOM-killed, and says so.
    c.apply(OOM_POD);
    let oom = c.until_pod("oom", "Failed", Duration::from_secs(60), |p| {
        (p["status"]["phase"] == "Failed").then(|| p.clone())
    });
    assert_eq!(oom["status"]["qosClass"], "Guaranteed");
    let t = &oom["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");

    // A liveness probe that fails: the container is killed and started again.
    let live = plain_pod("live", "touch /tmp/alive; exec sleep 3600", "").replace(
        "    env:\n",
        "    livenessProbe: {exec: {command: [cat, /tmp/alive]}, periodSeconds: 1, failureThreshold: 2}\n    env:\n",
    );
    c.apply(&live);
    c.until_pod("live", "Running and Ready", Duration::from_secs(60), |p| {
        running_and_ready(p).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let p = c.pod("live").unwrap();
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{}",
        p["status"]
    );
    c.exec_ok("live", "main", &["rm", "/tmp/alive"]);
    let cs = c.until_pod("live", "restarted", Duration::from_secs(40), |p| {
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"] == 1 && cs["state"]["running"].is_object()).then(|| cs.clone())
    });
    assert!(cs["lastState"]["terminated"].is_object(), "{cs}");
}

const INIT_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: init
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  volumes:
  - name: work
    emptyDir: {}
  initContainers:
  - name: first
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'sleep 1; echo one >> /work/order']
    volumeMounts: [{name: work, mountPath: /work}]
  - name: second
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo two >> /work/order']
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: main
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'echo three >> /work/order; exec sleep 3600']
    volumeMounts: [{name: work, mountPath: /work}]
";

#[test]
fn init_containers_run_in_order_and_pods_outlive_a_restart_of_skiffd() {
    let mut c = PodCluster::start("pods-init");
    c.apply(INIT_POD);
    let p = c.until_pod("init", "Running and Ready", Duration::from_secs(90), |p| {
        running_and_ready(p).then(|| p.clone())
    });
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed", "{i}");
        assert_eq!(i["state"]["terminated"]["exitCode"], 0, "{i}");
    }
    assert_eq!(condition(&p, "Initialized"), "True");
    assert_eq!(
        c.exec_ok("init", "main", &["cat", "/work/order"]),
        "one\ntwo\nthree\n"
    );

    // skiffd stops and starts again: the same containers keep running, nothing restarts.
    let before = c.containers("init");
    let main_id = before["main"][0].id.clone();
    c.node.stop();
    std::thread::sleep(Duration::from_secs(2));
    c.node.restart();
    wait_for("skiffd serving again", Duration::from_secs(30), || {
        c.node.node.socket().exists().then_some(())
    });
    // Several syncs of the adopted pod.
    std::thread::sleep(Duration::from_secs(5));
    c.node.skiffd.assert_running();
    let after = c.containers("init");
    assert_eq!(after["main"].len(), 1, "{after:?}");
    assert_eq!(after["main"][0].id, main_id);
    assert_eq!(
        after["main"][0].state,
        criv1::ContainerState::ContainerRunning as i32
    );
    assert_eq!(after["first"].len(), 1);
    assert_eq!(after["second"].len(), 1);
    let p = c.pod("init").unwrap();
    assert!(running_and_ready(&p), "{}", p["status"]);
    let cs = &p["status"]["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(cs["containerID"], format!("skiff://{main_id}"));
    let log = std::fs::read_to_string(&c.node.skiffd.log).unwrap();
    assert!(!log.contains("container started"), "{log}");
    assert_eq!(
        c.exec_ok("init", "main", &["cat", "/work/order"]),
        "one\ntwo\nthree\n"
    );

    // Force-deleted while skiffd is down: the pod's sandbox and log directory go when skiffd is
    // back.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let logs = c.logs.join(format!("{}_init_{uid}", c.ns));
    assert!(logs.join("main/0.log").exists(), "{}", logs.display());
    c.node.stop();
    c.kubectl_ok(&["delete", "pod", "init", "--grace-period=0", "--force"]);
    c.node.restart();
    wait_for(
        "the orphaned sandbox removed",
        Duration::from_secs(40),
        || c.sandboxes().is_empty().then_some(()),
    );
    assert!(c.containers("init").is_empty());
    assert!(!logs.exists(), "{} left", logs.display());
}

const OOM_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: oom
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: main
    image: registry.skiff.test/library/busybox:latest
    imagePullPolicy: IfNotPresent
    command: [sh, -c, 'tail /dev/zero']
    resources:
      limits: {cpu: 200m, memory: 32Mi}
";
