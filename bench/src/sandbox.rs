//! A pod's network namespace as its runtime reports it through the CRI, so the bench's own tools
//! can run inside it on threads that enter it: no image needs them.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use skiff_tests::cri;

/// The network namespace of pod `name` as the runtime at `socket` reports it in its sandbox's
/// verbose status: skiffd's infra process or pinned namespace file, containerd's sandbox `pid`.
pub fn pod_netns(socket: &Path, name: &str) -> Result<PathBuf> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let info = rt.block_on(sandbox_info(socket, name))?;
    if let Some(pid) = info["infraPid"].as_i64().or_else(|| info["pid"].as_i64()) {
        return Ok(PathBuf::from(format!("/proc/{pid}/ns/net")));
    }
    info["pinnedNamespaces"]["network"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("pod {name}: no network namespace in its sandbox status: {info}"))
}

async fn sandbox_info(socket: &Path, name: &str) -> Result<Value> {
    use cri_api::v1 as api;
    let ch = cri::connect(socket).await?;
    let mut c = api::runtime_service_client::RuntimeServiceClient::new(ch);
    let filter = api::PodSandboxFilter {
        label_selector: [("io.kubernetes.pod.name".to_string(), name.to_string())].into(),
        ..Default::default()
    };
    let list = c
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner();
    let Some(sb) = list
        .items
        .iter()
        .find(|s| s.state == api::PodSandboxState::SandboxReady as i32)
    else {
        bail!("no ready sandbox of pod {name}");
    };
    let status = c
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: sb.id.clone(),
            verbose: true,
        })
        .await?
        .into_inner();
    let info = status
        .info
        .get("info")
        .ok_or_else(|| anyhow!("pod {name}: its sandbox status has no verbose info"))?;
    Ok(serde_json::from_str(info)?)
}

/// Runs `f` on a new thread inside the network namespace at `netns` (`/proc/PID/ns/net`, or a pinned
/// namespace file): the sockets it makes belong to that namespace.
pub fn spawn_in<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let file = File::open(netns).with_context(|| format!("open {}", netns.display()))?;
    let path = netns.to_path_buf();
    Ok(std::thread::spawn(move || {
        // SAFETY: setns changes only this thread's network namespace; the fd is open for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        f()
    }))
}
