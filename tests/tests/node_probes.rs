//! skiffd runs kubelet's probes, lifecycle hooks and events: readiness that a Service's
//! EndpointSlice follows, liveness failures that restart containers, startup probes that hold the
//! others back, httpGet (HTTP and HTTPS), tcpSocket and gRPC probes against a real gRPC health
//! server, exec and httpGet hooks with preStop before SIGTERM on deletion, a failing postStart,
//! and events aggregated as `kubectl describe` shows them. Against a real control plane,
//! joined by `kubeadm join`.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_tests::cri::BUSYBOX;
use skiff_tests::k8s::pod_cluster::PodCluster;
use skiff_tests::probe_image::{push_probe_server, PROBE_SERVER};

/// A pod of one busybox container `main` running `script`, with `extra` YAML lines in the
/// container (indented by four spaces) and `grace` as its termination grace period.
fn pod(name: &str, grace: u32, script: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: [sh, -c, '{script}']
{extra}"
    )
}

fn status<'a>(p: &'a Value, container: &str) -> &'a Value {
    p["status"]["containerStatuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == container))
        .unwrap_or(&Value::Null)
}

fn condition(p: &Value, t: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn restarts(p: &Value, container: &str) -> i64 {
    status(p, container)["restartCount"].as_i64().unwrap_or(0)
}

fn running(p: &Value, container: &str) -> bool {
    status(p, container)["state"].get("running").is_some()
}

/// The pod's readiness as its conditions and its container `main` say it (they must agree).
fn ready(p: &Value) -> Option<bool> {
    if !running(p, "main") {
        return None;
    }
    let c = status(p, "main")["ready"] == true;
    let pod = condition(p, "Ready") == "True";
    let containers = condition(p, "ContainersReady") == "True";
    (c == pod && pod == containers).then_some(c)
}

/// The readiness of the endpoints of Service `svc` by address.
fn endpoints(c: &PodCluster, svc: &str) -> Vec<(String, bool)> {
    let sel = format!("kubernetes.io/service-name={svc}");
    let slices = c
        .get(&["endpointslices", "-l", &sel])
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for s in slices {
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let ready = e["conditions"]["ready"] == true;
            for a in e["addresses"].as_array().into_iter().flatten() {
                out.push((a.as_str().unwrap_or_default().to_string(), ready));
            }
        }
    }
    out
}

/// The one event about `object` with `reason` whose message contains `text`, once it exists.
fn event(c: &PodCluster, object: &str, reason: &str, text: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let all = c.events(object);
        let matching: Vec<&Value> = all
            .iter()
            .filter(|e| e["reason"] == reason && e["message"].as_str().unwrap_or("").contains(text))
            .collect();
        assert!(
            matching.len() <= 1,
            "{object}: identical {reason} events not aggregated into one: {matching:#?}"
        );
        if let Some(e) = matching.first() {
            return (*e).clone();
        }
        assert!(
            Instant::now() < deadline,
            "{object}: no {reason} event with {text:?} within {within:?}; events: {:#?}",
            all.iter()
                .map(|e| format!("{} {} x{}", e["reason"], e["message"], e["count"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the event (as [`event`] finds it) has happened at least `n` times.
fn event_count(c: &PodCluster, object: &str, reason: &str, text: &str, n: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = event(c, object, reason, text, Duration::from_secs(60));
        if e["count"].as_i64().unwrap_or(0) >= n {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{object}: {reason} {text:?} not counted {n} times: {e:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

const SLEEP: &str = "exec sleep 3600";

/// A pod running `probe-server` as container `main`, with `extra` YAML lines in the container.
fn server_pod(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {PROBE_SERVER}
    imagePullPolicy: IfNotPresent
    command: [/probe-server]
{extra}"
    )
}

/// The gRPC server's pod: readiness and liveness by gRPC health checks of two services, each
/// failing while its `/tmp/down-<service>` exists.
const GRPC_PROBES: &str = "    readinessProbe:
      grpc: {port: 9090, service: ready}
      periodSeconds: 1
      timeoutSeconds: 5
      failureThreshold: 1
    livenessProbe:
      grpc: {port: 9090, service: live}
      initialDelaySeconds: 2
      periodSeconds: 1
      timeoutSeconds: 5
      failureThreshold: 2
";

/// Readiness by `GET /ready` over HTTPS to a self-signed certificate, which kubelet accepts.
const HTTPS_PROBE: &str = "    readinessProbe:
      httpGet: {scheme: HTTPS, port: 8443, path: /ready}
      periodSeconds: 1
      timeoutSeconds: 5
      failureThreshold: 1
";

#[test]
fn probes_drive_readiness_endpoints_and_restarts() {
    let mut c = PodCluster::start("probes");
    c.apply(
        "apiVersion: v1
kind: Service
metadata: {name: flip}
spec:
  selector: {app: flip}
  ports: [{port: 80, targetPort: 8080}]
",
    );
    let exec_probe = |kind: &str, cmd: &str, more: &str| {
        format!("    {kind}:\n      exec: {{command: [sh, -c, '{cmd}']}}\n      periodSeconds: 1\n{more}")
    };
    c.apply(&pod(
        "flip",
        1,
        SLEEP,
        &exec_probe(
            "readinessProbe",
            "cat /tmp/ready",
            "      failureThreshold: 1\n",
        ),
    ));
    // The pod's grace period is long: the probe's own one must be the one used.
    c.apply(&pod(
        "live",
        60,
        "touch /tmp/alive; exec sleep 3600",
        &exec_probe(
            "livenessProbe",
            "cat /tmp/alive",
            "      failureThreshold: 2\n      terminationGracePeriodSeconds: 1\n",
        ),
    ));
    let startup = [
        exec_probe(
            "startupProbe",
            "cat /tmp/started",
            "      failureThreshold: 100\n",
        ),
        exec_probe("readinessProbe", "true", ""),
        exec_probe(
            "livenessProbe",
            "cat /tmp/started",
            "      failureThreshold: 1\n",
        ),
    ]
    .concat();
    c.apply(&pod("startup", 1, SLEEP, &startup));
    // httpd listens only after 6 s; the probe names its port and sends a header.
    c.apply(&pod(
        "web",
        1,
        "mkdir -p /www && echo ok > /www/healthz && sleep 6 && exec httpd -f -p 8080 -h /www",
        "    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: http, httpHeaders: [{name: X-Probe, value: skiff}]}
      periodSeconds: 1
",
    ));
    // Ready through a tcpSocket probe on an open port, restarted through one on a closed port.
    c.apply(&pod(
        "tcp",
        1,
        "exec httpd -f -p 9000 -h /tmp",
        "    readinessProbe: {tcpSocket: {port: 9000}, periodSeconds: 1}
    livenessProbe:
      tcpSocket: {port: 9001}
      initialDelaySeconds: 4
      periodSeconds: 1
      failureThreshold: 1
",
    ));

    // Readiness follows the probe, and the Service's EndpointSlice follows readiness.
    let up = Duration::from_secs(120);
    assert!(!c.until_pod("flip", "running", up, ready));
    let ip = c.until_pod("flip", "an IP", up, |p| {
        p["status"]["podIP"].as_str().map(str::to_string)
    });
    let slice = |c: &PodCluster, want: bool| {
        skiff_tests::k8s::skiff_node::wait_for(
            &format!("endpoint {ip} ready={want}"),
            Duration::from_secs(30),
            || {
                endpoints(c, "flip")
                    .contains(&(ip.clone(), want))
                    .then_some(())
            },
        )
    };
    slice(&c, false);
    c.exec("flip", "main", &["touch", "/tmp/ready"]);
    let t = Duration::from_secs(20);
    c.until_pod("flip", "ready", t, |p| ready(p).filter(|r| *r));
    slice(&c, true);
    c.exec("flip", "main", &["rm", "/tmp/ready"]);
    c.until_pod("flip", "not ready again", t, |p| ready(p).filter(|r| !*r));
    slice(&c, false);
    let failed = event_count(
        &c,
        "flip",
        "Unhealthy",
        "Readiness probe failed: cat: can't open",
        3,
    );
    assert_eq!(failed["type"], "Warning");
    assert_eq!(failed["source"]["component"], "kubelet");
    assert_eq!(failed["source"]["host"], c.node.name.as_str());
    assert_eq!(
        failed["involvedObject"]["fieldPath"],
        "spec.containers{main}"
    );
    for (reason, text) in [
        (
            "Pulled",
            "image \"registry.skiff.test/library/busybox:latest\"",
        ),
        ("Created", "Created container main"),
        ("Started", "Started container main"),
    ] {
        event(&c, "flip", reason, text, t);
    }

    // The startup probe holds liveness (which would fail) and readiness (which would pass) back.
    c.until_pod("startup", "running", up, |p| {
        running(p, "main").then_some(())
    });
    std::thread::sleep(Duration::from_secs(5));
    let p = c.pod("startup").expect("the startup pod");
    assert_eq!(status(&p, "main")["started"], false, "{p:#}");
    assert_eq!(ready(&p), Some(false), "{p:#}");
    assert_eq!(restarts(&p, "main"), 0, "{p:#}");
    c.exec("startup", "main", &["touch", "/tmp/started"]);
    c.until_pod("startup", "started and ready", t, |p| {
        (status(p, "main")["started"] == true && ready(p) == Some(true)).then_some(())
    });
    assert_eq!(restarts(&c.pod("startup").expect("the pod"), "main"), 0);

    // A liveness failure restarts the container, within the probe's grace period.
    c.until_pod("live", "running", up, |p| running(p, "main").then_some(()));
    c.exec("live", "main", &["rm", "/tmp/alive"]);
    let killed = Instant::now();
    c.until_pod("live", "restarted", Duration::from_secs(30), |p| {
        (restarts(p, "main") >= 1 && running(p, "main")).then_some(())
    });
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "the probe's terminationGracePeriodSeconds was not used: {:?}",
        killed.elapsed()
    );
    event(
        &c,
        "live",
        "Killing",
        "Container main failed liveness probe, will be restarted",
        t,
    );
    let unhealthy = event_count(
        &c,
        "live",
        "Unhealthy",
        "Liveness probe failed: cat: can't open '/tmp/alive'",
        2,
    );
    assert_eq!(unhealthy["type"], "Warning");
    let describe = c.kubectl_ok(&["describe", "pod", "live"]);
    assert!(
        describe.contains("Container main failed liveness probe, will be restarted"),
        "{describe}"
    );
    assert!(
        describe.contains("(x2 over") || describe.contains("(x3 over"),
        "{describe}"
    );

    // An httpGet probe on a port the container opens late: failing, then passing.
    c.until_pod("web", "ready", up, |p| ready(p).filter(|r| *r));
    let refused = event(
        &c,
        "web",
        "Unhealthy",
        "Readiness probe failed: Get \"http://",
        t,
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains(":8080/healthz"),
        "{refused:#}"
    );

    // tcpSocket: ready through the open port, restarted through the closed one.
    c.until_pod("tcp", "ready", up, |p| ready(p).filter(|r| *r));
    c.until_pod("tcp", "restarted", Duration::from_secs(60), |p| {
        (restarts(p, "main") >= 1).then_some(())
    });
    let e = event(&c, "tcp", "Unhealthy", "Liveness probe failed: dial tcp", t);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains(":9001: connect: connection refused"),
        "{e:#}"
    );
    c.node.skiffd.assert_running();
}

#[test]
fn hooks_run_around_the_containers_life() {
    let mut c = PodCluster::builder("hooks")
        .before_join(|reg, dir| {
            push_probe_server(reg, env!("CARGO_BIN_EXE_probe-server").as_ref(), dir)
        })
        .start();
    c.apply(&server_pod("grpc", GRPC_PROBES));
    c.apply(&server_pod("https", HTTPS_PROBE));
    c.apply(&pod(
        "stopper",
        10,
        "trap \"echo term prestop=\\$(cat /tmp/prestop); sleep 2; exit 0\" TERM; echo up; while true; do sleep 0.2; done",
        "    lifecycle:
      preStop: {exec: {command: [sh, -c, 'echo yes > /tmp/prestop; sleep 1']}}
",
    ));
    c.apply(&pod(
        "poststart-ok",
        1,
        SLEEP,
        "    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo hooked > /tmp/hook']}}
",
    ));
    c.apply(&pod(
        "poststart-fail",
        1,
        SLEEP,
        "    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo hook-failed; exit 3']}}
",
    ));
    // preStop runs on a liveness restart too; what it writes outlives the container.
    c.apply(&pod(
        "restarted",
        1,
        "touch /tmp/alive; exec sleep 3600",
        "    volumeMounts: [{name: data, mountPath: /data}]
    lifecycle:
      preStop: {exec: {command: [sh, -c, 'echo ran >> /data/prestop']}}
    livenessProbe:
      exec: {command: [cat, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 1
  volumes: [{name: data, emptyDir: {}}]
",
    ));
    let up = Duration::from_secs(120);
    let t = Duration::from_secs(30);

    c.until_pod("restarted", "ready", up, |p| ready(p).filter(|r| *r));
    c.exec("restarted", "main", &["rm", "/tmp/alive"]);
    c.until_pod("restarted", "restarted", Duration::from_secs(30), |p| {
        (restarts(p, "main") >= 1 && running(p, "main")).then_some(())
    });
    assert_eq!(
        c.exec("restarted", "main", &["cat", "/data/prestop"]).1,
        "ran\n"
    );

    // postStart runs before the container counts as running.
    c.until_pod("poststart-ok", "ready", up, |p| ready(p).filter(|r| *r));
    assert_eq!(
        c.exec("poststart-ok", "main", &["cat", "/tmp/hook"]).1,
        "hooked\n"
    );

    // A failing postStart kills the container, which restarts with back-off.
    let hook = event(
        &c,
        "poststart-fail",
        "FailedPostStartHook",
        "exited with 3",
        up,
    );
    let msg = hook["message"].as_str().unwrap_or("");
    assert!(
        msg.starts_with(
            "Exec lifecycle hook ([sh -c echo hook-failed; exit 3]) for Container \"main\""
        ),
        "{msg}"
    );
    assert!(msg.contains("hook-failed"), "{msg}");
    event(&c, "poststart-fail", "Killing", "FailedPostStartHook", t);
    c.until_pod(
        "poststart-fail",
        "restarted",
        Duration::from_secs(60),
        |p| (restarts(p, "main") >= 1).then_some(()),
    );
    // The same failure again: the event's count grows, no new object.
    event_count(
        &c,
        "poststart-fail",
        "FailedPostStartHook",
        "exited with 3",
        2,
    );
    event_count(
        &c,
        "poststart-fail",
        "Pulled",
        "already present on machine",
        2,
    );

    // preStop runs before SIGTERM: the container's TERM handler sees what the hook wrote.
    c.until_pod("stopper", "ready", up, |p| ready(p).filter(|r| *r));
    c.kubectl_ok(&["delete", "pod", "stopper", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = String::new();
    while c.pod("stopper").is_some() {
        for f in c.log_files("stopper", "main") {
            if let Ok(text) = std::fs::read_to_string(f) {
                if text.len() > seen.len() {
                    seen = text;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "stopper not deleted; skiffd:\n{}",
            c.node.skiffd.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.contains("up"), "{seen}");
    assert!(
        seen.contains("term prestop=yes"),
        "preStop did not run before SIGTERM:\n{seen}"
    );
    event(&c, "stopper", "Killing", "Stopping container main", t);
    assert!(c
        .events("stopper")
        .iter()
        .all(|e| e["reason"] != "FailedPreStopHook"));

    grpc_probes(&mut c);
    https_probe_and_http_hooks(&mut c);
    c.node.skiffd.assert_running();
}

/// Readiness follows a gRPC health check; a failing gRPC liveness check restarts the container.
fn grpc_probes(c: &mut PodCluster) {
    let t = Duration::from_secs(30);
    c.until_pod("grpc", "ready", Duration::from_secs(120), |p| {
        ready(p).filter(|r| *r)
    });
    c.exec_ok("grpc", "main", &["touch", "/tmp/down-ready"]);
    c.until_pod("grpc", "unready", t, |p| ready(p).filter(|r| !*r));
    event(
        c,
        "grpc",
        "Unhealthy",
        "Readiness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        t,
    );
    c.exec_ok("grpc", "main", &["rm", "/tmp/down-ready"]);
    c.until_pod("grpc", "ready again", t, |p| ready(p).filter(|r| *r));
    let p = c.pod("grpc").unwrap();
    assert_eq!(
        restarts(&p, "main"),
        0,
        "{:#}\n{:#?}",
        p["status"],
        c.events("grpc")
            .iter()
            .map(|e| format!("{} {} x{}", e["reason"], e["message"], e["count"]))
            .collect::<Vec<_>>()
    );

    c.exec_ok("grpc", "main", &["touch", "/tmp/down-live"]);
    event(
        c,
        "grpc",
        "Unhealthy",
        "Liveness probe failed: service unhealthy (responded with \"NOT_SERVING\")",
        t,
    );
    event(
        c,
        "grpc",
        "Killing",
        "failed liveness probe, will be restarted",
        t,
    );
    // The new container has a fresh /tmp: it serves, and is ready again.
    c.until_pod(
        "grpc",
        "restarted and ready",
        Duration::from_secs(60),
        |p| {
            (restarts(p, "main") >= 1)
                .then_some(())
                .and(ready(p).filter(|r| *r))
        },
    );
}

/// An HTTPS readiness probe to a self-signed server; httpGet postStart and preStop hooks to a
/// server in another pod, preStop seen by the container before its SIGTERM.
fn https_probe_and_http_hooks(c: &mut PodCluster) {
    let t = Duration::from_secs(30);
    let server = c.until_pod("https", "ready", Duration::from_secs(120), |p| {
        ready(p).filter(|r| *r).map(|_| p.clone())
    });
    let ip = server["status"]["podIP"].as_str().unwrap().to_string();
    let hooks = format!(
        "    lifecycle:
      postStart: {{httpGet: {{host: {ip}, port: 8080, path: /poststart}}}}
      preStop: {{httpGet: {{host: {ip}, port: 8080, path: /prestop}}}}
"
    );
    let script = format!(
        "trap \"wget -qO- http://{ip}:8080/term; exit 0\" TERM; echo up; while true; do sleep 0.2; done"
    );
    c.apply(&pod("hooked", 10, &script, &hooks));
    c.until_pod("hooked", "running", Duration::from_secs(60), |p| {
        running(p, "main").then_some(())
    });
    let served = c.kubectl_ok(&["logs", "https"]);
    assert!(served.contains("https GET /ready\n"), "{served}");
    assert!(served.contains("http GET /poststart\n"), "{served}");

    c.kubectl_ok(&["delete", "pod", "hooked", "--wait=false"]);
    // The container tells the server when its SIGTERM came: the server's log (it outlives the
    // hooked pod, whose own log goes with it) holds the order of the hook's and the trap's requests.
    let deadline = Instant::now() + Duration::from_secs(40);
    while c.pod("hooked").is_some() {
        assert!(Instant::now() < deadline, "hooked not deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = c.kubectl_ok(&["logs", "https"]);
    let at = |path: &str| served.find(&format!("http GET {path}\n"));
    let term = at("/term").unwrap_or_else(|| panic!("no SIGTERM seen by hooked:\n{served}"));
    let prestop = at("/prestop").unwrap_or_else(|| panic!("no preStop request:\n{served}"));
    assert!(
        prestop < term,
        "preStop had not reached the server before SIGTERM:\n{served}"
    );
    assert!(c
        .events("hooked")
        .iter()
        .all(|e| e["reason"] != "FailedPreStopHook" && e["reason"] != "FailedPostStartHook"));

    // The HTTPS probe judges the answer: a 500 makes the pod unready.
    c.exec_ok("https", "main", &["touch", "/tmp/down-http"]);
    c.until_pod("https", "unready", t, |p| ready(p).filter(|r| !*r));
    event(
        c,
        "https",
        "Unhealthy",
        "HTTP probe failed with statuscode: 500",
        t,
    );
}
