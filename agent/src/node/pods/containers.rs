//! The pod's containers toward its spec: images by `imagePullPolicy`, init containers one at a time
//! in order, then the app containers, each restarted per `restartPolicy` with kubelet's back-off.
//! What the CRI cannot say (why a container is not running yet) is kept in [`Waiting`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::sandbox::PodRef;
use super::target::{instances, Target};
use super::{env, hooks, sidecar, CONTAINER_NAME};
use crate::cri::{container, image, Daemon};
use crate::node::events::{Throttle, Type};
use crate::node::quantity;
use crate::node::volumes::subpath;

/// The annotation that carries a container's restart count across skiffd restarts.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Kubelet's back-off: 10 s, doubling, at most 5 min, per key.
#[derive(Default)]
pub struct Backoff {
    entries: HashMap<String, (Instant, Duration)>,
}

impl Backoff {
    /// Whether `key` may be tried now.
    pub fn ready(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_none_or(|(until, _)| Instant::now() >= *until)
    }

    /// Records a try of `key`: the next one waits twice as long as the last wait.
    pub fn bump(&mut self, key: &str) -> Duration {
        let delay = match self.entries.get(key) {
            Some((_, last)) => (*last * 2).min(BACKOFF_MAX),
            None => BACKOFF_START,
        };
        self.entries
            .insert(key.to_string(), (Instant::now() + delay, delay));
        delay
    }

    pub fn current(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(BACKOFF_START, |e| e.1)
    }
}

/// Why a container is not running, as the pod status says it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// What a worker keeps about its pod's containers between syncs.
#[derive(Default)]
pub struct State {
    pub waiting: HashMap<String, Waiting>,
    crash: Backoff,
    pull: Backoff,
    /// When a container that could not be created may be tried again.
    retry: HashMap<String, Instant>,
    noted: Throttle,
}

/// How long a container that could not be created waits before the next try: kubelet requeues
/// a pod whose sync failed after its worker back-off (10 s), without doubling, so a fixed cause
/// (a configMap created, a name freed) is picked up within seconds.
const CREATE_RETRY: Duration = Duration::from_secs(10);

/// Whether a start is a container's first or a restart after it exited.
#[derive(Clone, Copy, PartialEq)]
enum Attempt {
    First,
    Restart,
}

/// How a start went: an image that is not there yet has its own pull back-off.
#[derive(PartialEq)]
enum Outcome {
    Started,
    NoImage,
    Failed,
}

impl State {
    /// Whether `name` may be started now, else how long it still waits. As kubelet does, a
    /// restart counts toward the crash back-off as it begins, whatever comes of it.
    fn admit(&mut self, name: &str, attempt: Attempt) -> Result<(), Duration> {
        if !self.crash.ready(name) {
            return Err(self.crash.current(name));
        }
        if let Some(wait) = self
            .retry
            .get(name)
            .and_then(|at| at.checked_duration_since(Instant::now()))
        {
            return Err(wait);
        }
        if attempt == Attempt::Restart {
            self.crash.bump(name);
        }
        Ok(())
    }

    /// After a start: a container that never got created or started is tried again after
    /// `CREATE_RETRY`, not on every sync (a restart has counted toward the crash back-off).
    fn settle(&mut self, name: &str, attempt: Attempt, outcome: &Outcome) {
        if attempt == Attempt::First && *outcome == Outcome::Failed {
            self.retry
                .insert(name.to_string(), Instant::now() + CREATE_RETRY);
        } else {
            self.retry.remove(name);
        }
    }
}

pub fn restart_count(c: &cri::Container) -> i32 {
    c.annotations
        .get(RESTART_COUNT)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The container's full CRI status.
pub async fn status(d: &Arc<Daemon>, id: &str) -> Option<cri::ContainerStatus> {
    let req = cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    };
    container::status(d, req).await.ok()?.status
}

async fn exit_code(d: &Arc<Daemon>, id: &str) -> i32 {
    status(d, id).await.map_or(-1, |s| s.exit_code)
}

fn is_exited(c: &cri::Container) -> bool {
    c.state == cri::ContainerState::ContainerExited as i32
}

/// Whether restartPolicy restarts a container that exited with `code`.
fn restarts(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// One step toward the spec: starts or restarts what may be, waits for the rest.
pub async fn step(t: &Target<'_>, st: &mut State) {
    let spec = t.pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let running = instances(t.d, t.sandbox_id).await;
    for c in spec.init_containers.iter().flatten() {
        let latest = running.get(&c.name).and_then(|v| v.first());
        if sidecar::is_sidecar(c) {
            match latest {
                // The next init container waits until this one runs.
                None => return first_start(t, st, c).await,
                Some(l) if l.state == cri::ContainerState::ContainerCreated as i32 => return,
                Some(l) if is_exited(l) && !apps_finished(t, &spec, &running).await => {
                    restart(t, st, c, l).await
                }
                Some(_) => {}
            }
            continue;
        }
        match latest {
            None => return first_start(t, st, c).await,
            Some(l) if !is_exited(l) => return,
            Some(l) => match exit_code(t.d, &l.id).await {
                0 => continue,
                code if !restarts(policy, code) => return,
                _ => return restart(t, st, c, l).await,
            },
        }
    }
    for c in &spec.containers {
        match running.get(&c.name).and_then(|v| v.first()) {
            None => first_start(t, st, c).await,
            Some(l) if is_exited(l) => {
                if restarts(policy, exit_code(t.d, &l.id).await) {
                    restart(t, st, c, l).await;
                }
            }
            Some(_) => {}
        }
    }
    if apps_finished(t, &spec, &running).await {
        stop_sidecars(t, &running).await;
    }
}

/// Whether every app container has finished for good (a pod that does not restart them).
async fn apps_finished(
    t: &Target<'_>,
    spec: &PodSpec,
    running: &HashMap<String, Vec<cri::Container>>,
) -> bool {
    if spec.restart_policy.as_deref().unwrap_or("Always") == "Always" {
        return false;
    }
    let mut codes = HashMap::new();
    for c in &spec.containers {
        if let Some(l) = running.get(&c.name).and_then(|v| v.first()) {
            if is_exited(l) {
                codes.insert(c.name.clone(), exit_code(t.d, &l.id).await);
            }
        }
    }
    sidecar::apps_done(spec, running, &codes)
}

/// The sidecars still running once the app containers are done: stopped, the pod can complete.
async fn stop_sidecars(t: &Target<'_>, running: &HashMap<String, Vec<cri::Container>>) {
    let sidecars = running
        .values()
        .filter_map(|v| v.first())
        .filter(|c| sidecar::labelled(c) && !is_exited(c));
    for c in sidecars {
        let req = cri::StopContainerRequest {
            container_id: c.id.clone(),
            timeout: super::delete::grace(t.pod),
        };
        if let Err(e) = container::stop(t.d, req).await {
            tracing::warn!(container = %c.id, error = %e.message(), "stop a sidecar");
        }
    }
}

/// Records an event about container `c` unless the same one was recorded moments ago.
fn note(t: &Target<'_>, st: &mut State, c: &Container, kind: Type, reason: &str, msg: String) {
    if st.noted.allow(&format!("{}/{reason}/{msg}", c.name)) {
        t.shared.events.pod(t.pod, Some(&c.name), kind, reason, msg);
    }
}

/// Starts `c`, which has no instance yet, unless an earlier try failed moments ago: the status
/// keeps saying why until the back-off lets it try again.
async fn first_start(t: &Target<'_>, st: &mut State, c: &Container) {
    if st.admit(&c.name, Attempt::First).is_err() {
        return;
    }
    let outcome = start(t, st, c, None).await;
    st.settle(&c.name, Attempt::First, &outcome);
}

async fn restart(t: &Target<'_>, st: &mut State, c: &Container, previous: &cri::Container) {
    if let Err(wait) = st.admit(&c.name, Attempt::Restart) {
        let msg = format!(
            "Back-off restarting failed container {} in pod {}",
            c.name,
            hooks::pod_name(t.pod)
        );
        note(t, st, c, Type::Warning, "BackOff", msg);
        st.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {}s restarting failed container={} pod={}_{}({})",
                    wait.as_secs(),
                    c.name,
                    PodRef::of(t.pod).name,
                    PodRef::of(t.pod).namespace,
                    PodRef::of(t.pod).uid
                ),
            },
        );
        return;
    }
    let outcome = start(t, st, c, Some(previous)).await;
    st.settle(&c.name, Attempt::Restart, &outcome);
}

/// Pulls if the policy says so, then creates and starts one instance of `c`; older exited
/// instances than `previous` (which the status shows as lastState) are removed.
async fn start(
    t: &Target<'_>,
    st: &mut State,
    c: &Container,
    previous: Option<&cri::Container>,
) -> Outcome {
    if let Err(w) = ensure_image(t, st, c).await {
        st.waiting.insert(c.name.clone(), w);
        return Outcome::NoImage;
    }
    let count = previous.map_or(0, |p| restart_count(p) + 1);
    match create_and_start(t, c, count).await {
        Ok(id) => {
            tracing::info!(pod = %PodRef::of(t.pod).name, container = %c.name, %id, restarts = count, "container started");
            st.waiting.remove(&c.name);
            prune(t.d, t.sandbox_id, &c.name, previous, &id).await;
            Outcome::Started
        }
        Err(w) => {
            tracing::warn!(pod = %PodRef::of(t.pod).name, container = %c.name, reason = %w.reason, message = %w.message, "container not started");
            if w.reason != "PostStartHookError" {
                let msg = format!("Error: {}", w.message);
                t.shared
                    .events
                    .pod(t.pod, Some(&c.name), Type::Warning, "Failed", msg);
            }
            st.waiting.insert(c.name.clone(), w);
            Outcome::Failed
        }
    }
}

async fn prune(
    d: &Arc<Daemon>,
    sandbox: &str,
    name: &str,
    keep: Option<&cri::Container>,
    new: &str,
) {
    let all = instances(d, sandbox).await;
    for old in all.get(name).into_iter().flatten() {
        if old.id != new && Some(&old.id) != keep.map(|k| &k.id) && is_exited(old) {
            let _ = container::remove(
                d,
                cri::RemoveContainerRequest {
                    container_id: old.id.clone(),
                },
            )
            .await;
        }
    }
}

fn image_spec(name: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: name.into(),
        ..Default::default()
    })
}

/// The image per `imagePullPolicy` (`Always` for `:latest` or no tag unless said otherwise), with
/// kubelet's events.
async fn ensure_image(t: &Target<'_>, st: &mut State, c: &Container) -> Result<(), Waiting> {
    let r = pull_by_policy(t, st, c).await;
    if let Err(w) = &r {
        note(
            t,
            st,
            c,
            Type::Warning,
            "Failed",
            format!("Error: {}", w.reason),
        );
    }
    r
}

async fn pull_by_policy(t: &Target<'_>, st: &mut State, c: &Container) -> Result<(), Waiting> {
    let d = t.d;
    let name = c.image.clone().unwrap_or_default();
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| default_policy(&name));
    let present = image::status(
        d,
        cri::ImageStatusRequest {
            image: image_spec(&name),
            verbose: false,
        },
    )
    .await
    .map(|r| r.image.is_some())
    .unwrap_or(false);
    if policy == "Never" {
        if present {
            return Ok(());
        }
        let message = format!("Container image {name:?} is not present with pull policy of Never");
        note(
            t,
            st,
            c,
            Type::Warning,
            "ErrImageNeverPull",
            message.clone(),
        );
        return Err(Waiting {
            reason: "ErrImageNeverPull".into(),
            message,
        });
    }
    if present && policy != "Always" {
        let msg = format!("Container image {name:?} already present on machine");
        t.shared
            .events
            .pod(t.pod, Some(&c.name), Type::Normal, "Pulled", msg);
        return Ok(());
    }
    let key = format!("pull/{}", c.name);
    if !st.pull.ready(&key) {
        let msg = format!("Back-off pulling image {name:?}");
        note(t, st, c, Type::Normal, "BackOff", msg);
        return Err(Waiting {
            reason: "ImagePullBackOff".into(),
            message: format!("Back-off pulling image {name:?}"),
        });
    }
    let events = &t.shared.events;
    events.pod(
        t.pod,
        Some(&c.name),
        Type::Normal,
        "Pulling",
        format!("Pulling image {name:?}"),
    );
    let begun = Instant::now();
    match pull(t, &name).await {
        Ok(()) => {
            let took = begun.elapsed();
            let msg = format!(
                "Successfully pulled image {name:?} in {took:.3?} ({took:.3?} including waiting)"
            );
            events.pod(t.pod, Some(&c.name), Type::Normal, "Pulled", msg);
            Ok(())
        }
        Err(e) => {
            let msg = format!("Failed to pull image {name:?}: {}", e.message());
            events.pod(t.pod, Some(&c.name), Type::Warning, "Failed", msg);
            st.pull.bump(&key);
            Err(Waiting {
                reason: "ErrImagePull".into(),
                message: e.message().to_string(),
            })
        }
    }
}

/// Pulls `name` with each matching credential of the pod's `imagePullSecrets` until one works
/// (anonymously when none match), as kubelet does; the last failure otherwise.
async fn pull(t: &Target<'_>, name: &str) -> Result<(), tonic::Status> {
    let ring = super::pull_secrets::keyring(t.client, t.pod).await;
    let auths = ring.lookup(name);
    let tries: Vec<Option<cri::AuthConfig>> = if auths.is_empty() {
        vec![None]
    } else {
        auths.into_iter().map(Some).collect()
    };
    let mut last = tonic::Status::unknown("no pull was tried");
    for auth in tries {
        let req = cri::PullImageRequest {
            image: image_spec(name),
            auth,
            ..Default::default()
        };
        match image::pull(t.d, req).await {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn default_policy(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let tag = last.split('@').next().unwrap_or(last);
    if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

async fn create_and_start(t: &Target<'_>, c: &Container, count: i32) -> Result<String, Waiting> {
    let envs = env::resolve(t, c).await.map_err(|message| Waiting {
        reason: "CreateContainerConfigError".into(),
        message,
    })?;
    let config = config(t, c, count, envs).map_err(|message| Waiting {
        reason: "CreateContainerConfigError".into(),
        message,
    })?;
    let created = container::create(
        t.d,
        cri::CreateContainerRequest {
            pod_sandbox_id: t.sandbox_id.into(),
            config: Some(config),
            sandbox_config: Some(t.sandbox.clone()),
        },
    )
    .await
    .map_err(|e| Waiting {
        reason: "CreateContainerError".into(),
        message: e.message().to_string(),
    })?;
    let id = created.container_id;
    let events = &t.shared.events;
    let name = &c.name;
    events.pod(
        t.pod,
        Some(name),
        Type::Normal,
        "Created",
        format!("Created container {name}"),
    );
    container::start(
        t.d,
        cri::StartContainerRequest {
            container_id: id.clone(),
        },
    )
    .await
    .map_err(|e| Waiting {
        reason: "RunContainerError".into(),
        message: e.message().to_string(),
    })?;
    events.pod(
        t.pod,
        Some(name),
        Type::Normal,
        "Started",
        format!("Started container {name}"),
    );
    let ip = t.pod_ips.first().map(String::as_str);
    if let Err(message) = hooks::post_start(t.shared, t.pod, c, &id, ip).await {
        let grace = super::delete::grace(t.pod);
        hooks::kill(
            t.shared,
            t.pod,
            Some(c),
            &id,
            ip,
            grace,
            "FailedPostStartHook",
        )
        .await;
        return Err(Waiting {
            reason: "PostStartHookError".into(),
            message,
        });
    }
    Ok(id)
}

fn config(
    t: &Target<'_>,
    c: &Container,
    count: i32,
    envs: Vec<(String, String)>,
) -> Result<cri::ContainerConfig, String> {
    let r = PodRef::of(t.pod);
    let vars: HashMap<&str, &str> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter().flatten().map(|s| env::expand(s, &vars)).collect()
    };
    let log_dir = PathBuf::from(&t.sandbox.log_directory).join(&c.name);
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("create the log directory {}: {e}", log_dir.display()))?;
    let mut labels = r.labels();
    labels.insert(CONTAINER_NAME.into(), c.name.clone());
    if sidecar::is_sidecar(c) {
        labels.insert(sidecar::LABEL.into(), "true".into());
    }
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: count as u32,
        }),
        image: image_spec(c.image.as_deref().unwrap_or_default()),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        mounts: mounts(t, c, &vars)?,
        log_path: format!("{}/{count}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        labels,
        annotations: [(RESTART_COUNT.to_string(), count.to_string())].into(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(resources(c)?),
            security_context: Some(super::security::container(
                t.pod.spec.as_ref().ok_or("the pod has no spec")?,
                c,
            )),
        }),
        envs: envs
            .iter()
            .map(|(k, v)| cri::KeyValue {
                key: k.clone(),
                value: v.clone().into(),
            })
            .collect(),
        ..Default::default()
    })
}

/// kubelet's cgroup values for the container: shares from the CPU request, quota from the CPU
/// limit over a 100 ms period, the memory limit in bytes.
fn resources(c: &Container) -> Result<cri::LinuxContainerResources, String> {
    let r = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<BTreeMap<String, Quantity>>, k: &str| -> Result<Option<f64>, String> {
        m.as_ref()
            .and_then(|m| m.get(k))
            .map(|q| quantity::parse(&q.0).map_err(|e| format!("resources {k}: {e}")))
            .transpose()
    };
    let (requests, limits) = (&r.requests, &r.limits);
    let cpu_request = get(requests, "cpu")?.or(get(limits, "cpu")?);
    let mut out = cri::LinuxContainerResources {
        cpu_shares: cpu_request.map_or(2, |cpu| ((cpu * 1024.0) as i64).max(2)),
        ..Default::default()
    };
    if let Some(cpu) = get(limits, "cpu")? {
        out.cpu_period = 100_000;
        out.cpu_quota = ((cpu * 100_000.0) as i64).max(1000);
    }
    if let Some(mem) = get(limits, "memory")? {
        out.memory_limit_in_bytes = mem as i64;
    }
    Ok(out)
}

fn mounts(
    t: &Target<'_>,
    c: &Container,
    vars: &HashMap<&str, &str>,
) -> Result<Vec<cri::Mount>, String> {
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let host = t
            .mounts
            .get(&m.name)
            .ok_or_else(|| format!("volume mount {:?}: no volume of that name", m.name))?;
        let host = match sub_path(m, vars) {
            None => host.clone(),
            Some(sub) => {
                let target = subpath::target(t.pod_dir, &m.name, &c.name, i);
                subpath::mount_at(host, &sub, &target).map_err(|e| {
                    format!(
                        "failed to prepare subPath for volumeMount {:?} of container {:?}: {e}",
                        m.name, c.name
                    )
                })?;
                target
            }
        };
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false),
            ..Default::default()
        });
    }
    if !out.iter().any(|m| m.container_path == "/etc/hosts") && !t.pod_ips.is_empty() {
        let text = super::hosts::content(t.settings, t.pod, t.pod_ips);
        let path = super::hosts::write(t.pod_dir, &text)?;
        out.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: path.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The mount's subPath, or its subPathExpr with the container's variables expanded.
fn sub_path(
    m: &k8s_openapi::api::core::v1::VolumeMount,
    vars: &HashMap<&str, &str>,
) -> Option<String> {
    let sub = match (&m.sub_path, &m.sub_path_expr) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Some(e)) if !e.is_empty() => env::expand(e, vars),
        _ => return None,
    };
    Some(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let mut b = Backoff::default();
        assert!(b.ready("c"));
        let delays: Vec<u64> = (0..7).map(|_| b.bump("c").as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert!(!b.ready("c"));
    }

    /// The crash back-off `st` holds for container `c`, in seconds.
    fn crash_backoff(st: &State) -> u64 {
        st.crash.current("c").as_secs()
    }

    #[test]
    fn a_failed_restart_counts_once_toward_the_backoff() {
        let mut st = State::default();
        assert!(st.admit("c", Attempt::Restart).is_ok());
        st.settle("c", Attempt::Restart, &Outcome::Failed);
        assert_eq!(crash_backoff(&st), 10);
        assert!(st.admit("c", Attempt::Restart).is_err());
    }

    #[test]
    fn a_container_never_created_is_retried_every_ten_seconds() {
        let mut st = State::default();
        assert!(
            st.admit("c", Attempt::First).is_ok(),
            "the first try is at once"
        );
        st.settle("c", Attempt::First, &Outcome::Failed);
        let wait = st.admit("c", Attempt::First).expect_err("retried too soon");
        assert!(wait > Duration::from_secs(9) && wait <= CREATE_RETRY);
        // Due again: a second failure waits the same 10 s, as kubelet's pod worker does.
        st.retry.insert("c".into(), Instant::now());
        assert!(st.admit("c", Attempt::First).is_ok());
        st.settle("c", Attempt::First, &Outcome::Failed);
        let wait = st.admit("c", Attempt::First).expect_err("retried too soon");
        assert!(wait <= CREATE_RETRY);
        assert_eq!(crash_backoff(&st), 10, "no crash counted");
    }

    #[test]
    fn a_start_waiting_for_its_image_or_one_that_works_does_not_back_off() {
        let mut st = State::default();
        st.settle("c", Attempt::First, &Outcome::NoImage);
        st.settle("c", Attempt::First, &Outcome::Started);
        assert!(st.admit("c", Attempt::First).is_ok());
    }

    #[test]
    fn latest_or_untagged_images_are_always_pulled() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("r:5000/busybox:latest"), "Always");
        assert_eq!(default_policy("r:5000/busybox"), "Always");
        assert_eq!(default_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_policy("busybox@sha256:ab"), "IfNotPresent");
    }
}
