//! The pod's volumes as host directories under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`,
//! mounted into containers through the CRI: the projected service-account volume admission adds to
//! every pod ([`projected`], [`token`]), configMap and secret volumes ([`objects`]), downwardAPI
//! volumes ([`downward`]), emptyDir ([`empty_dir`]), the node's own paths ([`host_path`]). File
//! contents go through kubelet's atomic `..data` swap ([`atomic`]); `subPath` mounts are
//! resolved safely by [`subpath`].

pub mod atomic;
pub mod downward;
pub mod empty_dir;
pub mod host_path;
pub mod objects;
pub mod projected;
pub mod subpath;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Volume};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("volume {volume:?}: {message}")]
    Volume { volume: String, message: String },
    #[error("volume {volume:?}: {source}")]
    Write {
        volume: String,
        source: atomic::Error,
    },
    #[error("volume {volume:?}: {source}")]
    Api {
        volume: String,
        source: Box<kube::Error>,
    },
}

impl Error {
    fn volume(volume: &str, message: impl Into<String>) -> Error {
        Error::Volume {
            volume: volume.into(),
            message: message.into(),
        }
    }
}

/// The directory of one pod's data: `<root>/pods/<uid>`.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

/// How long a volume's contents stand before the API is asked again: updates of configMaps and
/// secrets reach the pod within this, and a node of many pods does not ask every second.
const REFRESH: Duration = Duration::from_secs(10);

/// A pod's volumes, kept up to date by each sync.
pub struct PodVolumes {
    dir: PathBuf,
    tokens: token::Tokens,
    /// Where each volume is and when its contents were last fetched.
    fresh: HashMap<String, (PathBuf, Instant)>,
}

impl PodVolumes {
    pub fn new(root: &Path, uid: &str) -> PodVolumes {
        PodVolumes {
            dir: pod_dir(root, uid).join("volumes"),
            tokens: token::Tokens::default(),
            fresh: HashMap::new(),
        }
    }

    /// Sets up or refreshes every volume; the host path of each by name. A volume that was set up
    /// once and fails to refresh (its configMap deleted, the API away) keeps its last contents,
    /// as with kubelet, and the failure is logged.
    pub async fn sync(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        node: &downward::Allocatable,
    ) -> Result<HashMap<String, PathBuf>, Error> {
        let mut out = HashMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            // The downward API reads only the pod: rendered at every sync, so label changes show.
            // A hostPath is checked once, when the pod first mounts it, as kubelet does: a socket
            // its daemon re-creates must not take a running pod's volumes away meanwhile.
            let cached = v.downward_api.is_none();
            let path = match self.fresh.get(&v.name) {
                Some((path, at)) if cached && (at.elapsed() < REFRESH || v.host_path.is_some()) => {
                    path.clone()
                }
                last => {
                    let last = last.map(|(p, _)| p.clone());
                    let path = match (self.one(client, pod, v, node).await, last) {
                        (Ok(path), _) => path,
                        (Err(e), Some(last)) => {
                            tracing::warn!(pod = ?pod.metadata.name, reason = "FailedMount", error = %e, "MountVolume.SetUp failed: the volume keeps its last contents");
                            last
                        }
                        (Err(e), None) => return Err(e),
                    };
                    self.fresh
                        .insert(v.name.clone(), (path.clone(), Instant::now()));
                    path
                }
            };
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    async fn one(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        v: &Volume,
        node: &downward::Allocatable,
    ) -> Result<PathBuf, Error> {
        let at = |plugin: &str| {
            self.dir
                .join(format!("kubernetes.io~{plugin}"))
                .join(&v.name)
        };
        let files = if let Some(p) = &v.projected {
            let files = projected::files(client, pod, &v.name, p, &mut self.tokens, node).await?;
            (at("projected"), files)
        } else if let Some(c) = &v.config_map {
            (
                at("configmap"),
                objects::config_map(client, pod, &v.name, c).await?,
            )
        } else if let Some(s) = &v.secret {
            (
                at("secret"),
                objects::secret(client, pod, &v.name, s).await?,
            )
        } else if let Some(d) = &v.downward_api {
            (at("downward-api"), downward::volume(pod, &v.name, d, node)?)
        } else if let Some(e) = &v.empty_dir {
            let dir = at("empty-dir");
            empty_dir::setup(&dir, &v.name, e, pod, node)?;
            return Ok(dir);
        } else if let Some(h) = &v.host_path {
            return host_path::setup(&v.name, h);
        } else {
            return Err(Error::volume(
                &v.name,
                format!("volume type {:?} is not supported by skiff", kind(v)),
            ));
        };
        let (dir, files) = files;
        atomic::write(&dir, &files).map_err(|source| Error::Write {
            volume: v.name.clone(),
            source,
        })?;
        Ok(dir)
    }
}

/// The files of `data` by key, or of the chosen `items` (key to path, with its mode).
pub fn select(
    volume: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, atomic::File>, Error> {
    let file = |content: Vec<u8>, m: Option<i32>| atomic::File {
        content,
        mode: m.map_or(mode, |m| m as u32 & 0o7777),
    };
    let Some(items) = items else {
        return Ok(data.into_iter().map(|(k, v)| (k, file(v, None))).collect());
    };
    let mut out = BTreeMap::new();
    for it in items {
        match data.get(&it.key) {
            Some(v) => {
                out.insert(it.path.clone(), file(v.clone(), it.mode));
            }
            None if optional => {}
            None => return Err(Error::volume(volume, format!("key {:?} not found", it.key))),
        }
    }
    Ok(out)
}

/// The type of a volume: the name of its one source field.
fn kind(v: &Volume) -> String {
    let json = serde_json::to_value(v).unwrap_or_default();
    json.as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "none".into())
}

/// Removes a pod's directory once nothing of the pod runs: its memory-backed emptyDirs and subPath
/// bind mounts are unmounted first, so nothing is removed through them.
pub fn remove_pod_dir(dir: &Path) {
    unmount_under(dir);
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), error = %e, "remove the pod's directory");
        }
    }
}

/// Detaches every mount at or below `dir`, the deepest first.
fn unmount_under(dir: &Path) {
    for p in crate::cri::sandbox::mounts_below(dir) {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %p.display(), error = %e, "unmount a pod's volume");
        }
    }
}
