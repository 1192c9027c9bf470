//! Making and unmaking a pod: its directory, pinned namespaces (through `skiff-monitor pinns`), the
//! infra process of a shared PID namespace, the pod's files and its CNI attachment. Every step is
//! recorded in the (not yet saved) record as it is done, so a failure undoes exactly what was done.
//! Blocking: run through `cri::blocking`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cri_api::v1 as cri;
use tonic::Status;

use super::{files, network, SandboxRecord};
use crate::cri::error::{internal, invalid};
use crate::cri::pod::validate::Plan;
use crate::cri::Daemon;
use crate::monitor::protocol::{pin_path, PinOptions};

/// The size of a pod's /dev/shm, as Docker and containerd give it.
pub const SHM_SIZE: u64 = 64 << 20;

pub fn pods_dir(d: &Daemon) -> PathBuf {
    d.config.run_dir.join("sandboxes")
}

/// Builds the whole pod or nothing.
pub fn create(
    d: &Daemon,
    id: String,
    config: cri::PodSandboxConfig,
    runtime_handler: String,
    plan: &Plan,
) -> Result<SandboxRecord, Status> {
    let dir = pods_dir(d).join(&id);
    let mut rec = SandboxRecord {
        id,
        config,
        runtime_handler,
        created_at: crate::now_ns(),
        ready: false,
        netns: None,
        ipcns: None,
        utsns: None,
        pidns: None,
        infra_pid: None,
        ips: Vec::new(),
        cgroup_parent: plan.cgroup_parent.clone(),
        dir,
        infra_start: 0,
        shm: None,
        cni_network: None,
        cni_result: None,
        infra_cgroup: None,
        userns: None,
    };
    match build(d, &mut rec, plan) {
        Ok(()) => Ok(rec),
        Err(e) => {
            tracing::warn!(sandbox = %rec.id, "RunPodSandbox failed, undoing: {}", e.message());
            if let Err(undo) = release(d, &mut rec) {
                tracing::warn!(sandbox = %rec.id, "undo: {}", undo.message());
            }
            remove_dir(&rec.dir);
            Err(e)
        }
    }
}

fn build(d: &Daemon, rec: &mut SandboxRecord, plan: &Plan) -> Result<(), Status> {
    // Checked first, so a pod that cannot get a network is refused before anything exists.
    let net_conf = if plan.host_network {
        None
    } else {
        Some(network::load_conf(d)?)
    };
    make_dir(&rec.dir)?;
    if !rec.config.log_directory.is_empty() {
        make_dir(Path::new(&rec.config.log_directory))?;
    }
    pin_namespaces(d, rec, plan)?;
    write_files(rec, plan)?;
    if plan.shared_pid {
        let (pid, start) = spawn_infra(d, &rec.dir)?;
        rec.infra_pid = Some(pid);
        rec.infra_start = start;
        rec.pidns = Some(format!("/proc/{pid}/ns/pid").into());
        place_infra(d, rec, pid)?;
    }
    if let (Some(list), Some(netns)) = (net_conf, rec.netns.clone()) {
        // Recorded before ADD: a half-done ADD is undone with DEL as well.
        rec.cni_network = Some(list.name.clone());
        let result = network::attach(d, &list, rec, &netns, &plan.port_mappings)?;
        rec.ips = network::result_ips(&result);
        rec.cni_result = Some(result);
        files::write(
            &rec.dir,
            "hosts",
            &files::hosts(&plan.hostname, &rec.ips, false),
        )?;
    }
    Ok(())
}

fn make_dir(dir: &Path) -> Result<(), Status> {
    std::fs::create_dir_all(dir).map_err(|e| internal(format!("create {}: {e}", dir.display())))
}

fn pin_namespaces(d: &Daemon, rec: &mut SandboxRecord, plan: &Plan) -> Result<(), Status> {
    let mut opts = PinOptions {
        dir: rec.dir.clone(),
        sysctls: plan.sysctls.clone(),
        ..Default::default()
    };
    if !plan.host_network {
        opts.namespaces.extend(["net".into(), "uts".into()]);
        opts.hostname = Some(plan.hostname.clone());
    }
    if !plan.host_ipc {
        opts.namespaces.push("ipc".into());
        opts.shm_size = SHM_SIZE;
    }
    if opts.namespaces.is_empty() {
        return Ok(());
    }
    if let Some(u) = &plan.userns {
        opts.namespaces.insert(0, "user".into());
        opts.userns = Some((u.uid, u.gid));
    }
    // What pinns may have mounted, so an undo finds it even when pinns fails half-way.
    let has = |ns: &str| opts.namespaces.iter().any(|n| n == ns);
    let pin = |ns: &str| has(ns).then(|| pin_path(&rec.dir, ns));
    (rec.netns, rec.ipcns, rec.utsns) = (pin("net"), pin("ipc"), pin("uts"));
    rec.userns = pin("user");
    rec.shm = (opts.shm_size > 0).then(|| rec.dir.join("shm"));
    let out = Command::new(d.config.monitor_path())
        .arg("pinns")
        .args(opts.to_args())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| internal(format!("start {}: {e}", d.config.monitor_path().display())))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg = stderr.trim().trim_start_matches("skiff-monitor pinns: ");
    match out.status.code() {
        Some(0) => {}
        Some(crate::monitor::protocol::EXIT_BAD_SYSCTL) => {
            return Err(invalid(format!("sysctls: {msg}")))
        }
        _ => return Err(internal(format!("pin namespaces: {msg}"))),
    }
    Ok(())
}

fn write_files(rec: &SandboxRecord, plan: &Plan) -> Result<(), Status> {
    let hostname = if plan.host_network {
        crate::cri::pod::host_hostname()
    } else {
        plan.hostname.clone()
    };
    files::write(&rec.dir, "hostname", &format!("{hostname}\n"))?;
    files::write(
        &rec.dir,
        "resolv.conf",
        &files::resolv_conf(rec.config.dns_config.as_ref()),
    )?;
    files::write(
        &rec.dir,
        "hosts",
        &files::hosts(&hostname, &[], plan.host_network),
    )
}

/// `skiff-monitor infra`: its pid (in skiffd's PID namespace) and start time.
fn spawn_infra(d: &Daemon, dir: &Path) -> Result<(i32, u64), Status> {
    let out = Command::new(d.config.monitor_path())
        .arg("infra")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| internal(format!("start the infra process: {e}")))?;
    let pid: Option<i32> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    match pid {
        Some(pid) if out.status.success() && pid > 0 => {
            let start = start_time(pid)
                .ok_or_else(|| internal(format!("infra process {pid} died at once")))?;
            Ok((pid, start))
        }
        _ => Err(internal(format!(
            "start the infra process: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// Puts the infra process in a cgroup of its own below the pod's, as a pod member is: its usage is the
/// pod's and it goes with the pod.
fn place_infra(d: &Daemon, rec: &mut SandboxRecord, pid: i32) -> Result<(), Status> {
    let path = d.cgroup_driver.cgroups_path(&rec.cgroup_parent, &rec.id);
    let spec = skiff_runtime::spec::Spec {
        linux: Some(skiff_runtime::spec::Linux {
            cgroups_path: Some(path),
            ..Default::default()
        }),
        ..Default::default()
    };
    let failed = |e: skiff_runtime::cgroups::CgroupError| {
        internal(format!("put the infra process in its cgroup: {e}"))
    };
    let mut cg = skiff_runtime::cgroups::new_manager(
        &spec,
        &rec.id,
        d.cgroup_driver == crate::config::CgroupDriver::Systemd,
    )
    .map_err(failed)?;
    cg.create().map_err(failed)?;
    // Recorded before the move, so an undo removes what was created.
    rec.infra_cgroup = Some(cg.state());
    cg.add_process(pid).map_err(failed)?;
    rec.infra_cgroup = Some(cg.state());
    Ok(())
}

/// Kept in the record when it cannot be removed yet, so the next stop tries again.
fn remove_infra_cgroup(rec: &mut SandboxRecord) {
    let Some(state) = &rec.infra_cgroup else {
        return;
    };
    match skiff_runtime::cgroups::from_state(state).destroy() {
        Ok(()) => rec.infra_cgroup = None,
        Err(e) => tracing::warn!(sandbox = %rec.id, "remove the infra cgroup: {e}"),
    }
}

/// Field 22 of /proc/<pid>/stat: tells a process from a later one that reuses its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the recorded infra process is still the one we started.
pub fn infra_alive(rec: &SandboxRecord) -> bool {
    match rec.infra_pid {
        Some(pid) => start_time(pid) == Some(rec.infra_start),
        None => false,
    }
}

/// Kills the infra process (which ends every process of the pod's PID namespace) and waits for it.
fn kill_infra(rec: &SandboxRecord) {
    let Some(pid) = rec.infra_pid else { return };
    if !infra_alive(rec) {
        return;
    }
    // SAFETY: kill takes plain integers; the start time check above makes the pid ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_gone(pid, Some(rec.infra_start));
}

/// Stops what runs for the pod: CNI DEL (releasing its IP) and the infra process. Idempotent: each
/// step clears its part of the record once done.
/// A failed DEL does not keep the infra process alive: its error is returned after the rest is done.
pub fn release(d: &Daemon, rec: &mut SandboxRecord) -> Result<(), Status> {
    let mut result = Ok(());
    if let Some(network) = rec.cni_network.clone() {
        match network::detach(d, rec, &network) {
            Ok(()) => rec.cni_network = None,
            Err(e) => result = Err(e),
        }
    }
    kill_infra(rec);
    remove_infra_cgroup(rec);
    rec.infra_pid = None;
    rec.infra_start = 0;
    rec.pidns = None;
    result
}

/// Kills infra processes of pods under `pods_dir` that have no record (a crash between starting one and
/// saving the record), and removes their cgroups; their command line names the pod directory.
pub fn kill_stray_infras(pods_dir: &Path, known: &std::collections::HashSet<String>) {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let [_, b"infra", b"--dir", dir, ..] = args.as_slice() else {
            continue;
        };
        let dir = Path::new(std::ffi::OsStr::from_bytes(dir));
        let stray = dir.parent() == Some(pods_dir)
            && dir
                .file_name()
                .is_some_and(|id| !known.contains(&*id.to_string_lossy()));
        if stray {
            tracing::info!(pid, dir = %dir.display(), "killing the infra process of an unknown pod");
            let id = dir.file_name().unwrap_or_default().to_string_lossy();
            let cgroup = stray_cgroup(pid, &id);
            let start = start_time(pid);
            // SAFETY: kill takes plain integers; the command line shows the process is a stray infra.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_gone(pid, start);
            if let Some(rel) = cgroup {
                remove_stray_cgroup(&rel);
            }
        }
    }
}

/// The cgroup `place_infra` gave a stray infra, named for its pod; none when it never got there (it is
/// then still in skiffd's own cgroup, which must not be touched).
fn stray_cgroup(pid: i32, id: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .map(|p| PathBuf::from(p.trim_start_matches('/')))
        .find(|p| !id.is_empty() && p.file_name().is_some_and(|n| n == id))
}

/// Removes `rel` from every hierarchy, as `place_infra` created it in each.
fn remove_stray_cgroup(rel: &Path) {
    use skiff_runtime::cgroups::fs::FsManager;
    use skiff_runtime::cgroups::CgroupManager;
    let Ok(planned) = FsManager::new(rel) else {
        return;
    };
    let mut state = planned.state();
    state.owned = state.paths.values().cloned().collect();
    if let Err(e) = FsManager::from_state(state).destroy() {
        tracing::warn!("remove the cgroup of an unknown pod's infra process: {e}");
    }
}

fn wait_gone(pid: i32, start: Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while start.is_some() && start_time(pid) == start && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Unmounts everything at or below `dir` (pins, shm), deepest first, then deletes it.
pub fn remove_dir(dir: &Path) {
    unmount_below(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("remove {}: {e}", dir.display()),
    }
}

pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = skiff_runtime::mountinfo::read_self()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

fn unmount_below(dir: &Path) {
    // Mounts stacked on one point come off one per pass.
    for _ in 0..4 {
        let points = mounts_below(dir);
        if points.is_empty() {
            return;
        }
        unmount_all(&points);
    }
}

fn unmount_all(points: &[PathBuf]) {
    for p in points {
        let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
            continue;
        };
        // SAFETY: c is a valid NUL-terminated path; a detached unmount touches no memory of ours.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            tracing::warn!(
                "unmount {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}
