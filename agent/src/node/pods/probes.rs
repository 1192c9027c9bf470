//! Readiness and liveness probes (exec, tcpSocket, httpGet) on kubelet's schedule: first after
//! `initialDelaySeconds`, then every `periodSeconds`; passing after `successThreshold` successes in
//! a row, failing after `failureThreshold` failures. A container without a readiness probe is ready
//! when it runs; one whose liveness probe fails is killed and restarted per `restartPolicy`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::{container, Daemon};

struct State {
    next: Instant,
    successes: i32,
    failures: i32,
    ready: bool,
}

/// Which probe of the container a [`Prober`] runs.
#[derive(Default, Clone, Copy, PartialEq)]
pub enum Kind {
    #[default]
    Readiness,
    Liveness,
}

/// The results of one kind of probe for a pod's containers, by container id.
#[derive(Default)]
pub struct Prober {
    kind: Kind,
    states: HashMap<String, State>,
}

impl Prober {
    pub fn new(kind: Kind) -> Prober {
        Prober {
            kind,
            states: HashMap::new(),
        }
    }

    /// Runs the probe if it is due; whether the container `id` of `c` passes (a readiness probe
    /// fails until it first passes, a liveness probe passes until it fails).
    pub async fn check(
        &mut self,
        d: &Arc<Daemon>,
        pod_ip: Option<&str>,
        c: &Container,
        id: &str,
    ) -> bool {
        let probe = match self.kind {
            Kind::Readiness => &c.readiness_probe,
            Kind::Liveness => &c.liveness_probe,
        };
        let Some(p) = probe else {
            return true;
        };
        let initial = self.kind == Kind::Liveness;
        let st = self.states.entry(id.to_string()).or_insert_with(|| State {
            next: Instant::now() + secs(p.initial_delay_seconds, 0),
            successes: 0,
            failures: 0,
            ready: initial,
        });
        if Instant::now() < st.next {
            return st.ready;
        }
        let ok = run(d, pod_ip, c, p, id).await;
        st.next = Instant::now() + secs(p.period_seconds, 10);
        if ok {
            st.successes += 1;
            st.failures = 0;
            if st.successes >= p.success_threshold.unwrap_or(1) {
                st.ready = true;
            }
        } else {
            st.failures += 1;
            st.successes = 0;
            if st.failures >= p.failure_threshold.unwrap_or(3) {
                st.ready = false;
            }
        }
        st.ready
    }

    /// Forgets containers that are gone.
    pub fn retain(&mut self, ids: &[String]) {
        self.states.retain(|k, _| ids.contains(k));
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

async fn run(d: &Arc<Daemon>, pod_ip: Option<&str>, c: &Container, p: &Probe, id: &str) -> bool {
    let timeout = secs(p.timeout_seconds, 1).max(Duration::from_secs(1));
    if let Some(e) = &p.exec {
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: e.command.clone().unwrap_or_default(),
            timeout: timeout.as_secs() as i64,
        };
        return matches!(container::exec_sync(d, req).await, Ok(r) if r.exit_code == 0);
    }
    let Some(ip) = pod_ip else {
        return false;
    };
    let port = |port: &IntOrString| match port {
        IntOrString::Int(n) => Some(*n as u16),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port as u16),
    };
    let attempt = async {
        if let Some(t) = &p.tcp_socket {
            let port = port(&t.port)?;
            tokio::net::TcpStream::connect((ip, port)).await.ok()?;
            return Some(true);
        }
        let h = p.http_get.as_ref()?;
        let mut s = tokio::net::TcpStream::connect((ip, port(&h.port)?))
            .await
            .ok()?;
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: kube-probe/1.28\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// The ready flag of each running app container of `pod`, by container id.
pub async fn ready_map(
    r: &mut Prober,
    d: &Arc<Daemon>,
    pod: &Pod,
    pod_ip: Option<&str>,
    instances: &HashMap<String, Vec<cri::Container>>,
) -> HashMap<String, bool> {
    let mut out = HashMap::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let Some(l) = instances.get(&c.name).and_then(|v| v.first()) else {
            continue;
        };
        if l.state == cri::ContainerState::ContainerRunning as i32 {
            out.insert(l.id.clone(), r.check(d, pod_ip, c, &l.id).await);
        }
    }
    let ids: Vec<String> = out.keys().cloned().collect();
    r.retain(&ids);
    out
}
