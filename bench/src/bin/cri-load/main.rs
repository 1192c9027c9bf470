//! cri-load: pod start latency and memory of any CRI runtime (skiffd, containerd) over its socket.
//!
//! For each pod: RunPodSandbox + CreateContainer + StartContainer of a cached image, timed as one.
//! Memory: the daemon's RSS before any pod (idle) and the summed RSS of the per-container processes
//! (monitors or shims) while every pod runs. Optionally, the throughput of the streaming server
//! (`stream`): exec and port-forward, each against its floor. Prints one JSON object.

mod stream;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use cri_api::v1 as cri;
use hyper_util::rt::TokioIo;
use skiff_bench::mem::{rss_kib, sum_of_comm};
use tonic::transport::{Channel, Endpoint};

struct Args {
    socket: PathBuf,
    image: String,
    pods: usize,
    log_dir: PathBuf,
    daemon_pid: Option<i32>,
    /// `comm` of the per-container processes whose RSS is summed.
    per_pod_process: Option<String>,
    label: String,
    /// Images pulled before timing (a runtime's pause image).
    pull_first: Vec<String>,
    /// ExecSync calls of `true` to time once every pod runs.
    exec_sync: usize,
    /// MiB streamed out of `dd` through exec over WebSocket and over SPDY, against a local pipe.
    exec_stream_mib: u64,
    /// MiB downloaded from `httpd` in the first pod through port-forward over SPDY and through the
    /// WebSocket tunnel, against the same `httpd` over loopback TCP.
    forward_mib: u64,
    /// Rounds of the streaming measurements; the median of each path is reported.
    stream_rounds: usize,
}

const USAGE: &str = "cri-load --socket PATH --image REF [--pods N] [--log-dir DIR] \
                     [--daemon-pid PID] [--per-pod-process COMM] [--label NAME] [--pull-first REF]... [--exec-sync N] \
                     [--exec-stream-mib N] [--forward-mib N] [--stream-rounds N]";

fn parse() -> Result<Args> {
    let mut a = Args {
        socket: PathBuf::new(),
        image: String::new(),
        pods: 100,
        log_dir: "/tmp/cri-load-logs".into(),
        daemon_pid: None,
        per_pod_process: None,
        label: "runtime".into(),
        pull_first: Vec::new(),
        exec_sync: 0,
        exec_stream_mib: 0,
        forward_mib: 0,
        stream_rounds: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--socket" => a.socket = val()?.into(),
            "--image" => a.image = val()?,
            "--pods" => a.pods = val()?.parse().context("--pods")?,
            "--log-dir" => a.log_dir = val()?.into(),
            "--daemon-pid" => a.daemon_pid = Some(val()?.parse().context("--daemon-pid")?),
            "--per-pod-process" => a.per_pod_process = Some(val()?),
            "--label" => a.label = val()?,
            "--pull-first" => a.pull_first.push(val()?),
            "--exec-sync" => a.exec_sync = val()?.parse().context("--exec-sync")?,
            "--exec-stream-mib" => {
                a.exec_stream_mib = val()?.parse().context("--exec-stream-mib")?
            }
            "--forward-mib" => a.forward_mib = val()?.parse().context("--forward-mib")?,
            "--stream-rounds" => a.stream_rounds = val()?.parse().context("--stream-rounds")?,
            other => bail!("unknown argument {other:?}\nusage: {USAGE}"),
        }
    }
    if a.socket.as_os_str().is_empty() || a.image.is_empty() {
        bail!("--socket and --image are required\nusage: {USAGE}");
    }
    Ok(a)
}

async fn connect(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Ok(Endpoint::try_from("http://cri.invalid")?
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await?)
}

fn pod(i: usize, a: &Args) -> cri::PodSandboxConfig {
    let name = format!("bench-{i}");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("uid-{}-{i}", std::process::id()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: a.log_dir.join(&name).to_string_lossy().into_owned(),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn container(a: &Args) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "sleeper".into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: a.image.clone(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "sleeper.log".into(),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = parse()?;
    let ch = connect(&a.socket).await.context("connect")?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let idle_rss = a.daemon_pid.map(rss_kib).unwrap_or(0);
    for image in a.pull_first.iter().chain([&a.image]) {
        img.pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("pull {image}"))?;
    }
    let before = a
        .per_pod_process
        .as_deref()
        .map(sum_of_comm)
        .unwrap_or((0, 0, 0));
    let mut lat = Vec::with_capacity(a.pods);
    let mut ids = Vec::with_capacity(a.pods);
    let mut containers = Vec::with_capacity(a.pods);
    let mut failure = None;
    for i in 0..a.pods {
        let cfg = pod(i, &a);
        let t0 = Instant::now();
        match start_pod(&mut rt, &a, cfg, &mut ids).await {
            Ok(cid) => {
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                containers.push(cid);
            }
            Err(e) => {
                failure = Some(format!("pod {i}: {e:#}"));
                break;
            }
        }
    }
    let busy_rss = a.daemon_pid.map(rss_kib).unwrap_or(0);
    let mut exec_lat = Vec::with_capacity(a.exec_sync);
    if failure.is_none() {
        for (i, cid) in containers.iter().cycle().take(a.exec_sync).enumerate() {
            let t0 = Instant::now();
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: cid.clone(),
                    cmd: vec!["true".into()],
                    timeout: 10,
                })
                .await;
            match r.map(|r| r.into_inner().exit_code) {
                Ok(0) => exec_lat.push(t0.elapsed().as_secs_f64() * 1000.0),
                Ok(code) => failure = Some(format!("ExecSync {i}: exit code {code}")),
                Err(e) => failure = Some(format!("ExecSync {i}: {e}")),
            }
            if failure.is_some() {
                break;
            }
        }
    }
    exec_lat.sort_by(f64::total_cmp);
    let mut streaming = serde_json::Map::new();
    if failure.is_none() && (a.exec_stream_mib > 0 || a.forward_mib > 0) {
        if let (Some(cid), Some(sid)) = (containers.first(), ids.first()) {
            match stream_figures(&mut rt, &a, sid, cid).await {
                Ok(m) => streaming = m,
                Err(e) => failure = Some(format!("streaming: {e:#}")),
            }
        }
    }
    let after = a
        .per_pod_process
        .as_deref()
        .map(sum_of_comm)
        .unwrap_or((0, 0, 0));
    for sid in &ids {
        let pod_sandbox_id = sid.clone();
        let _ = rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_sandbox_id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id })
            .await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Some(f) = failure {
        bail!("{} failed at {f}", a.label);
    }
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let procs = after.0.saturating_sub(before.0);
    let per_proc = after
        .1
        .saturating_sub(before.1)
        .checked_div(procs)
        .unwrap_or(0);
    let per_proc_pss = after
        .2
        .saturating_sub(before.2)
        .checked_div(procs)
        .unwrap_or(0);
    let mut out = serde_json::json!({
        "runtime": a.label,
        "pods": a.pods,
        "p50_ms": percentile(&sorted, 50.0),
        "p99_ms": percentile(&sorted, 99.0),
        "mean_ms": lat.iter().sum::<f64>() / lat.len().max(1) as f64,
        "daemon_idle_rss_kib": idle_rss,
        "daemon_busy_rss_kib": busy_rss,
        "per_pod_processes": procs,
        "per_pod_process_rss_kib": per_proc,
        "per_pod_process_pss_kib": per_proc_pss,
        "exec_sync_p50_ms": percentile(&exec_lat, 50.0),
        "exec_sync_p99_ms": percentile(&exec_lat, 99.0),
        "latencies_ms": lat,
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(streaming);
    }
    println!("{out}");
    Ok(())
}

async fn start_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    a: &Args,
    cfg: cri::PodSandboxConfig,
    ids: &mut Vec<String>,
) -> Result<String> {
    let sid = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id;
    ids.push(sid.clone());
    let cid = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sid,
            config: Some(container(a)),
            sandbox_config: Some(cfg),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .context("StartContainer")?;
    Ok(cid)
}

/// Median of samples.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// The streaming figures (MiB/s, medians over `--stream-rounds`), paths and floors interleaved in
/// each round. Port-forward reaches an `httpd` started in pod `sid` next to container `cid`.
async fn stream_figures(
    rt: &mut RuntimeServiceClient<Channel>,
    a: &Args,
    sid: &str,
    cid: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let exec_bytes = a.exec_stream_mib << 20;
    let fwd_bytes = a.forward_mib << 20;
    let mut floor_dir = None;
    if fwd_bytes > 0 {
        let server = bulk_server(rt, a, sid, fwd_bytes).await?;
        stream::wait_pod_server(rt, &server).await?;
        floor_dir = Some(stream::floor_file(fwd_bytes)?);
    }
    let mut samples: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut push = |name, v| match samples.iter_mut().find(|(n, _)| *n == name) {
        Some((_, xs)) => xs.push(v),
        None => samples.push((name, vec![v])),
    };
    // Each round runs its paths in a rotated order, so that none is always first (after the
    // previous round's last path) or always right after one of the others.
    let exec_paths = if exec_bytes > 0 { 4 } else { 0 };
    for round in 0..a.stream_rounds.max(1) {
        for step in 0..exec_paths {
            match (round + step) % 4 {
                0 => push("pipe_floor_mib_s", stream::pipe_floor(exec_bytes).await?),
                1 => push(
                    "exec_tcp_floor_mib_s",
                    stream::exec_tcp_floor(exec_bytes).await?,
                ),
                2 => {
                    let ws = stream::exec_websocket(rt, cid, exec_bytes).await;
                    push("exec_stream_mib_s", ws.context("exec over WebSocket")?)
                }
                _ => {
                    let sp = stream::exec_spdy(rt, cid, exec_bytes).await;
                    push("exec_spdy_mib_s", sp.context("exec over SPDY")?)
                }
            }
        }
        let Some(dir) = &floor_dir else { continue };
        for step in 0..3 {
            match (round + step) % 3 {
                0 => push("tcp_floor_mib_s", stream::tcp_floor(dir, fwd_bytes).await?),
                1 => {
                    let sp = stream::port_forward(rt, sid, fwd_bytes, false).await;
                    push("forward_spdy_mib_s", sp.context("port-forward over SPDY")?)
                }
                _ => {
                    let ws = stream::port_forward(rt, sid, fwd_bytes, true).await;
                    push(
                        "forward_ws_mib_s",
                        ws.context("port-forward over WebSocket")?,
                    )
                }
            }
        }
    }
    // The medians, and every round's figure beside each (`<name>_rounds`) to show the spread.
    let mut out = serde_json::Map::new();
    for (k, xs) in samples {
        out.insert(format!("{k}_rounds"), serde_json::json!(xs));
        out.insert(k.to_string(), serde_json::json!(median(xs)));
    }
    Ok(out)
}

/// Starts the bulk `httpd` container in pod `sid`; returns its id.
async fn bulk_server(
    rt: &mut RuntimeServiceClient<Channel>,
    a: &Args,
    sid: &str,
    bytes: u64,
) -> Result<String> {
    let mut cfg = container(a);
    cfg.metadata = Some(cri::ContainerMetadata {
        name: "bulk".into(),
        attempt: 0,
    });
    cfg.command = vec!["sh".into(), "-c".into(), stream::pod_server_script(bytes)];
    cfg.log_path = "bulk.log".into();
    let sandbox_config = pod(0, a);
    let cid = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sid.into(),
            config: Some(cfg),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .context("CreateContainer bulk")?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .context("StartContainer bulk")?;
    Ok(cid)
}
