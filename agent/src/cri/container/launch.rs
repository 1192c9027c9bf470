//! CreateContainer: checks the request, lays out the bundle (overlay root over the image's layers and
//! config.json), and has a monitor create the container.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cri_api::v1 as cri;
use tonic::Status;

use super::super::error::{full_id, internal, invalid, not_found, truncate};
use super::super::{blocking, image, spec, Daemon};
use super::{
    container_dir, exit_file, image_volume, remove_bundle, reopen_file, watch, ContainerRecord,
};
use crate::cri::pod::SandboxRecord;
use crate::monitor::protocol::Report;

/// The longest container name accepted (Kubernetes allows 63).
const MAX_NAME: usize = 1024;

/// Names (sandbox, name, attempt) of containers being created right now, by one daemon.
#[derive(Default)]
pub struct Creating(Arc<Mutex<BTreeSet<NameKey>>>);

type NameKey = (String, String, u32);

/// How long the monitor may take to create the container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn create(
    d: &Arc<Daemon>,
    r: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    let sandbox_id = full_id(&d.sandboxes, "sandbox", &r.pod_sandbox_id)?;
    let mut config = r.config.ok_or_else(|| invalid("config is required"))?;
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(invalid("config.metadata.name is required"));
    }
    if name.len() > MAX_NAME {
        return Err(invalid(format!(
            "config.metadata.name {:?}... is longer than {MAX_NAME} bytes",
            truncate(&name)
        )));
    }
    let sb = d
        .sandboxes
        .get(&sandbox_id)
        .ok_or_else(|| not_found("sandbox", &r.pod_sandbox_id))?;
    if !sb.ready {
        return Err(Status::failed_precondition(format!(
            "sandbox {} is not ready",
            sb.id
        )));
    }
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(invalid("config.image.image is required"));
    }
    let log_path = log_path(
        log_directory(&sb, r.sandbox_config.as_ref())?,
        &config.log_path,
    )?;
    let img = image::resolve(d, &image_name)?;
    let volumes = image_volume::resolve(d, &mut config)?;
    let name = reserve_name(d, &sb.id, &config)?;
    let id = skiff_sys::id::new_id().map_err(internal)?;
    let dir = container_dir(d, &id);
    let rec = ContainerRecord {
        id: id.clone(),
        sandbox_id: sb.id.clone(),
        config,
        image_name,
        image_id: img.id.clone(),
        created_at: crate::now_ns(),
        started_at: 0,
        bundle: dir.clone(),
        log_path,
        monitor_pid: 0,
        pid: 0,
    };
    let dd = d.clone();
    // All of the work, the record included, runs to its end even if the client goes away meanwhile,
    // and the name stays reserved until the record holds it.
    let rec = blocking(move || {
        let _name = name;
        let out = build_and_launch(&dd, &sb, &img, &volumes, rec).and_then(|rec| {
            dd.containers.put(&rec)?;
            Ok(rec)
        });
        if out.is_err() {
            undo(&dd, &id, &dir);
        }
        out
    })
    .await?;
    d.fs_info.invalidate();
    watch::arm(d, &rec);
    d.emit(
        &rec.id,
        &rec.sandbox_id,
        cri::ContainerEventType::ContainerCreatedEvent,
    );
    Ok(cri::CreateContainerResponse {
        container_id: rec.id,
    })
}

/// The pod's log directory: the sandbox's own, else the one in the request's copy of the pod config
/// (where containerd takes it from; a `crictl runp` config without one still gets logs that way).
fn log_directory<'a>(
    sb: &'a SandboxRecord,
    request: Option<&'a cri::PodSandboxConfig>,
) -> Result<&'a str, Status> {
    if !sb.config.log_directory.is_empty() {
        return Ok(&sb.config.log_directory);
    }
    let dir = request.map_or("", |c| c.log_directory.as_str());
    crate::cri::pod::validate::check_log_directory(dir)?;
    Ok(dir)
}

/// The log file: `log_path` is relative to the sandbox's log directory and may not leave it.
fn log_path(log_directory: &str, rel: &str) -> Result<Option<PathBuf>, Status> {
    if rel.is_empty() {
        return Ok(None);
    }
    let p = Path::new(rel);
    let bad = p
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if bad || rel.contains('\0') || rel.len() > 4096 {
        return Err(invalid(format!(
            "config.log_path {:?} must be a relative path inside the sandbox's log directory",
            truncate(rel)
        )));
    }
    if log_directory.is_empty() {
        return Ok(None);
    }
    Ok(Some(Path::new(log_directory).join(p)))
}

/// Holds a container name in a sandbox while the container is being created.
struct NameReservation(Arc<Mutex<BTreeSet<NameKey>>>, NameKey);

impl Drop for NameReservation {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// Names are unique per sandbox and attempt, among existing containers and those being created.
fn reserve_name(
    d: &Daemon,
    sandbox_id: &str,
    config: &cri::ContainerConfig,
) -> Result<NameReservation, Status> {
    let meta = config.metadata.clone().unwrap_or_default();
    let key = (sandbox_id.to_owned(), meta.name.clone(), meta.attempt);
    let mut creating = d.creating.0.lock().unwrap_or_else(|p| p.into_inner());
    let taken = d
        .containers
        .list()
        .into_iter()
        .find(|c| {
            c.sandbox_id == sandbox_id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        })
        .map(|c| c.id);
    if taken.is_some() || creating.contains(&key) {
        return Err(Status::already_exists(format!(
            "container name {:?} attempt {} is taken in sandbox {sandbox_id}{}",
            truncate(&meta.name),
            meta.attempt,
            taken.map(|t| format!(" by {t}")).unwrap_or_default()
        )));
    }
    creating.insert(key.clone());
    Ok(NameReservation(d.creating.0.clone(), key))
}

fn build_and_launch(
    d: &Daemon,
    sb: &SandboxRecord,
    img: &image::ResolvedImage,
    volumes: &[image_volume::ImageVolume],
    mut rec: ContainerRecord,
) -> Result<ContainerRecord, Status> {
    let dir = &rec.bundle;
    let lowers =
        skiff_runtime::image::rootfs::layer_dirs(&d.images, &img.record).map_err(internal)?;
    skiff_runtime::private_dir::ensure(dir)
        .map_err(|e| internal(format!("create {}: {e}", dir.display())))?;
    let containers = dir.parent().unwrap_or(dir);
    let shared = [&d.config.state_dir, containers, &d.config.run_dir];
    super::rootfs::let_pod_root_through(d, &shared, dir, sb)?;
    for sub in ["upper", "work", "rootfs"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| internal(format!("create {}: {e}", dir.join(sub).display())))?;
    }
    super::rootfs::mount(dir, &lowers, sb)?;
    let config = image_volume::mount_all(d, dir, &rec.config, volumes)?;
    let spec = spec::build(&spec::SpecInput {
        daemon: d,
        id: &rec.id,
        config: &config,
        sandbox: sb,
        image: &img.run,
        rootfs: dir.join("rootfs"),
    })?;
    let data = serde_json::to_vec_pretty(&spec).map_err(internal)?;
    skiff_runtime::state::write_atomic(&dir.join("config.json"), &data, 0o600).map_err(internal)?;
    let report = spawn_monitor(d, &rec)?;
    if let Some(e) = report.error {
        return Err(Status::unknown(format!("create container {}: {e}", rec.id)));
    }
    rec.pid = report.pid.unwrap_or(0);
    rec.monitor_pid = report.monitor_pid.unwrap_or(0);
    Ok(rec)
}

/// Starts `skiff-monitor container` and waits for its report: the container exists, or why not.
fn spawn_monitor(d: &Daemon, rec: &ContainerRecord) -> Result<Report, Status> {
    let (r, w) = skiff_sys::fd::pipe().map_err(internal)?;
    let diag = std::fs::File::create(rec.bundle.join("monitor.log")).map_err(internal)?;
    let mut cmd = Command::new(d.config.monitor_path());
    cmd.arg("container")
        .args(["--id", &rec.id, "--status-fd", "3"])
        .arg("--bundle")
        .arg(&rec.bundle)
        .arg("--root")
        .arg(d.config.runtime_root())
        .arg("--exit-file")
        .arg(exit_file(&rec.bundle))
        .arg("--reopen-file")
        .arg(reopen_file(&rec.bundle));
    if let Some(l) = &rec.log_path {
        cmd.arg("--log").arg(l);
    }
    if rec.config.tty {
        cmd.arg("--tty");
    }
    if rec.config.stdin {
        cmd.arg("--stdin");
    }
    if d.cgroup_driver == crate::config::CgroupDriver::Systemd {
        cmd.arg("--systemd-cgroup");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(diag);
    let wfd = w.as_raw_fd();
    // SAFETY: only dup2, which is async-signal-safe, runs between fork and exec: it puts the status
    // pipe on descriptor 3, without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(wfd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| internal(format!("start {}: {e}", d.config.monitor_path().display())))?;
    drop(w);
    // The monitor detaches at once; its first process only forks.
    let _ = child.wait();
    read_report(r)
}

fn read_report(r: OwnedFd) -> Result<Report, Status> {
    let mut pfd = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, CREATE_TIMEOUT.as_millis() as i32) };
    if n <= 0 {
        return Err(Status::deadline_exceeded(
            "the container monitor did not report within the create timeout",
        ));
    }
    let mut line = String::new();
    BufReader::new(std::fs::File::from(r))
        .read_line(&mut line)
        .map_err(internal)?;
    if line.trim().is_empty() {
        return Err(internal("the container monitor exited without a report"));
    }
    serde_json::from_str(&line).map_err(|e| internal(format!("monitor report {line:?}: {e}")))
}

/// Removes whatever a failed create left: the runtime's container, the mount, the directory.
pub(super) fn undo(d: &Daemon, id: &str, dir: &Path) {
    if let Err(e) = d.oci.delete(id, true) {
        tracing::warn!(container = id, "undo create: {e}");
    }
    remove_bundle(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names being created are held per daemon: two daemons in one process do not see each
    /// other's, and a dropped reservation frees the name.
    #[test]
    fn two_daemons_hold_names_apart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = crate::cri::testing::daemon(&tmp.path().join("a"));
        let b = crate::cri::testing::daemon(&tmp.path().join("b"));
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "web".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let held = reserve_name(&a, "pod", &config).expect("a reserves");
        let e = reserve_name(&a, "pod", &config).err().expect("a holds it");
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        let other = reserve_name(&b, "pod", &config).expect("b has its own names");
        drop(held);
        reserve_name(&a, "pod", &config).expect("freed by the drop");
        drop(other);
    }

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        let ok = |rel| log_path("/logs/pod", rel).unwrap();
        assert_eq!(ok("c/0.log"), Some(PathBuf::from("/logs/pod/c/0.log")));
        assert_eq!(ok("./c.log"), Some(PathBuf::from("/logs/pod/c.log")));
        assert_eq!(ok(""), None);
        assert_eq!(log_path("", "c.log").unwrap(), None);
        for bad in ["../x", "c/../../x", "/etc/passwd", "a\0b"] {
            let e = log_path("/logs/pod", bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("log_path"), "{e:?}");
        }
    }
}
