//! Startup, liveness and readiness probes as kubelet runs them: one task per probe of each running
//! container (a future on skiffd's runtime: neither a thread nor a process of its own), first
//! `initialDelaySeconds` after the container started (liveness and startup probes not before one
//! `periodSeconds`, as kubelet's ticks), then every `periodSeconds`; its result
//! changes after `successThreshold` passes or `failureThreshold` failures in a row. A startup probe
//! holds the other two back until it passes. Every failed run is an `Unhealthy` event. The worker
//! reads the results ([`Probes::sync`]), reports readiness and kills containers whose liveness or
//! startup probe failed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::actions;
use super::containers;
use super::Shared;
use crate::node::events::Type;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    /// The name kubelet's messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }

    pub fn of(self, c: &Container) -> Option<&Probe> {
        match self {
            Kind::Startup => c.startup_probe.as_ref(),
            Kind::Readiness => c.readiness_probe.as_ref(),
            Kind::Liveness => c.liveness_probe.as_ref(),
        }
    }
}

/// A probe's settled result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure,
}

type Results = Arc<Mutex<HashMap<(String, Kind), Verdict>>>;

/// What the pod's probes say now.
#[derive(Debug, Default)]
pub struct View {
    /// Running app containers by id: ready (started, and readiness passed or not probed).
    pub ready: HashMap<String, bool>,
    /// Running app containers by id: started (startup probe passed or none).
    pub started: HashMap<String, bool>,
    /// Containers to restart: (container name, id, the probe that failed).
    pub failed: Vec<(String, String, Kind)>,
}

/// The probe tasks of one pod and their results.
pub struct Probes {
    results: Results,
    tasks: HashMap<(String, Kind), AbortHandle>,
    changed: Arc<Notify>,
}

impl Default for Probes {
    fn default() -> Self {
        Probes::new()
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

/// Everything one probe task needs.
struct Job {
    shared: Arc<Shared>,
    pod: Pod,
    container: Container,
    id: String,
    pod_ip: Option<String>,
    kind: Kind,
    probe: Probe,
    started_at: i64,
    results: Results,
    changed: Arc<Notify>,
}

impl Probes {
    pub fn new() -> Probes {
        Probes {
            results: Arc::default(),
            tasks: HashMap::new(),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever a result changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    fn verdict(&self, id: &str, kind: Kind) -> Option<Verdict> {
        let r = self.results.lock().unwrap_or_else(|e| e.into_inner());
        r.get(&(id.to_string(), kind)).copied()
    }

    /// Starts the probes the running app containers of `pod` need, stops those of containers
    /// gone, and says what the results are.
    pub async fn sync(
        &mut self,
        shared: &Arc<Shared>,
        pod: &Pod,
        pod_ip: Option<&str>,
        instances: &HashMap<String, Vec<cri::Container>>,
    ) -> View {
        let mut view = View::default();
        let mut live = HashSet::new();
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let Some(l) = instances.get(&c.name).and_then(|v| v.first()) else {
                continue;
            };
            if l.state != cri::ContainerState::ContainerRunning as i32 {
                continue;
            }
            let id = l.id.clone();
            live.insert(id.clone());
            let started = c.startup_probe.is_none()
                || self.verdict(&id, Kind::Startup) == Some(Verdict::Success);
            let wanted: &[Kind] = if started {
                &[Kind::Readiness, Kind::Liveness]
            } else {
                &[Kind::Startup]
            };
            for kind in wanted {
                if let Some(p) = kind.of(c) {
                    self.ensure(shared, pod, c, &id, pod_ip, *kind, p).await;
                }
            }
            let ready = started
                && (c.readiness_probe.is_none()
                    || self.verdict(&id, Kind::Readiness) == Some(Verdict::Success));
            view.started.insert(id.clone(), started);
            view.ready.insert(id.clone(), ready);
            for kind in [Kind::Startup, Kind::Liveness] {
                if self.verdict(&id, kind) == Some(Verdict::Failure) {
                    view.failed.push((c.name.clone(), id.clone(), kind));
                }
            }
        }
        self.forget_except(&live);
        view
    }

    #[allow(clippy::too_many_arguments)]
    async fn ensure(
        &mut self,
        shared: &Arc<Shared>,
        pod: &Pod,
        c: &Container,
        id: &str,
        pod_ip: Option<&str>,
        kind: Kind,
        probe: &Probe,
    ) {
        let key = (id.to_string(), kind);
        if self.tasks.contains_key(&key) {
            return;
        }
        let started_at = containers::status(shared.actions.daemon(), id)
            .await
            .map_or(0, |s| s.started_at);
        let job = Job {
            shared: shared.clone(),
            pod: pod.clone(),
            container: c.clone(),
            id: id.to_string(),
            pod_ip: pod_ip.map(str::to_string),
            kind,
            probe: probe.clone(),
            started_at,
            results: self.results.clone(),
            changed: self.changed.clone(),
        };
        let handle = tokio::spawn(job.run()).abort_handle();
        self.tasks.insert(key, handle);
    }

    fn forget_except(&mut self, live: &HashSet<String>) {
        self.tasks.retain(|(id, _), t| {
            let keep = live.contains(id);
            if !keep {
                t.abort();
            }
            keep
        });
        let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|(id, _), _| live.contains(id));
    }
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(0) as u64)
}

/// When, after the container's start, a probe first runs. Kubelet runs readiness at once (past
/// `initialDelaySeconds`), but liveness and startup probes only on their worker's ticks, so never
/// in a container's first moments: a restarted container is probed within a period of its start,
/// never before it had the chance to set up. Here that is one period after the start, or the
/// initial delay if longer.
fn first_run(kind: Kind, initial_delay: Duration, period: Duration) -> Duration {
    match kind {
        Kind::Readiness => initial_delay,
        Kind::Liveness | Kind::Startup => initial_delay.max(period),
    }
}

/// How long until `delay` has passed since `started_at` (ns since the epoch).
fn remaining_delay(started_at: i64, delay: Duration) -> Duration {
    let start = UNIX_EPOCH + Duration::from_nanos(started_at.max(0) as u64);
    let since = SystemTime::now().duration_since(start).unwrap_or_default();
    delay.saturating_sub(since)
}

/// Consecutive results of one kind, and whether they settle the verdict.
#[derive(Default)]
struct Streak {
    last: Option<bool>,
    run: i32,
}

impl Streak {
    /// Records a run; the verdict once `threshold` runs in a row agreed.
    fn record(&mut self, ok: bool, p: &Probe) -> Option<Verdict> {
        self.run = if self.last == Some(ok) {
            self.run + 1
        } else {
            1
        };
        self.last = Some(ok);
        let (threshold, v) = if ok {
            (p.success_threshold.unwrap_or(1), Verdict::Success)
        } else {
            (p.failure_threshold.unwrap_or(3), Verdict::Failure)
        };
        (self.run >= threshold.max(1)).then_some(v)
    }
}

impl Job {
    async fn run(self) {
        let period = secs(self.probe.period_seconds, 10).max(Duration::from_secs(1));
        let delay = first_run(self.kind, secs(self.probe.initial_delay_seconds, 0), period);
        tokio::time::sleep(remaining_delay(self.started_at, delay)).await;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streak = Streak::default();
        loop {
            ticker.tick().await;
            let ok = self.once().await;
            let Some(v) = streak.record(ok, &self.probe) else {
                continue;
            };
            self.settle(v);
            // A failed liveness or startup probe waits for the container to be replaced; a
            // passed startup probe has done its work.
            let done = match self.kind {
                Kind::Readiness => false,
                Kind::Liveness => v == Verdict::Failure,
                Kind::Startup => true,
            };
            if done {
                return;
            }
        }
    }

    async fn once(&self) -> bool {
        let target = actions::Target {
            container: &self.container,
            id: &self.id,
            pod_ip: self.pod_ip.as_deref(),
        };
        match self.shared.actions.probe(&target, &self.probe).await {
            Ok(_) => true,
            Err(out) => {
                tracing::debug!(container = %self.container.name, kind = self.kind.name(), %out, "probe failed");
                self.shared.events.pod(
                    &self.pod,
                    Some(&self.container.name),
                    Type::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {out}", self.kind.name()),
                );
                false
            }
        }
    }

    fn settle(&self, v: Verdict) {
        let changed = {
            let mut r = self.results.lock().unwrap_or_else(|e| e.into_inner());
            r.insert((self.id.clone(), self.kind), v) != Some(v)
        };
        if changed {
            self.changed.notify_one();
        }
    }
}

/// The grace period of a container killed because `kind` failed: the probe's own
/// `terminationGracePeriodSeconds` (liveness and startup), else the pod's.
pub fn kill_grace(pod: &Pod, c: Option<&Container>, kind: Kind) -> i64 {
    c.and_then(|c| kind.of(c))
        .and_then(|p| p.termination_grace_period_seconds)
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: i32, failure: i32) -> Probe {
        Probe {
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts_need_their_threshold_in_a_row() {
        let p = probe(2, 3);
        let mut s = Streak::default();
        assert_eq!(s.record(true, &p), None);
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(true, &p), None);
        assert_eq!(s.record(true, &p), Some(Verdict::Success));
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), None);
        assert_eq!(s.record(false, &p), Some(Verdict::Failure));
        assert_eq!(s.record(false, &p), Some(Verdict::Failure));
    }

    #[test]
    fn liveness_and_startup_wait_a_period_readiness_does_not() {
        let (zero, one, five) = (
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        assert_eq!(first_run(Kind::Readiness, zero, one), zero);
        assert_eq!(first_run(Kind::Readiness, five, one), five);
        assert_eq!(first_run(Kind::Liveness, zero, one), one);
        assert_eq!(first_run(Kind::Startup, zero, five), five);
        assert_eq!(first_run(Kind::Liveness, five, one), five);
    }

    #[test]
    fn initial_delay_counts_from_the_containers_start() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ten_ago = (now - Duration::from_secs(10)).as_nanos() as i64;
        assert_eq!(
            remaining_delay(ten_ago, Duration::from_secs(5)),
            Duration::ZERO
        );
        let left = remaining_delay(ten_ago, Duration::from_secs(30));
        assert!(left > Duration::from_secs(19) && left <= Duration::from_secs(20));
    }

    #[test]
    fn a_probes_own_grace_period_wins() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"terminationGracePeriodSeconds": 20, "containers": [
                {"name": "a", "livenessProbe": {"terminationGracePeriodSeconds": 3}},
                {"name": "b", "livenessProbe": {}}
            ]}
        }))
        .unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            kill_grace(&pod, Some(&spec.containers[0]), Kind::Liveness),
            3
        );
        assert_eq!(
            kill_grace(&pod, Some(&spec.containers[1]), Kind::Liveness),
            20
        );
    }
}
