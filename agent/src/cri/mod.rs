//! The CRI `RuntimeService` and `ImageService`: one module per kind of object, and the shared daemon
//! state they all work on.

pub mod container;
pub mod daemon_status;
pub mod events;
pub mod image;
pub mod pod;
pub mod sandbox;
pub mod service;
pub mod spec;
pub mod stats;
pub mod streaming;

use std::sync::{Arc, OnceLock, RwLock};

use tonic::Status;

use crate::config::{CgroupDriver, Config};
use crate::store::{StoreError, Table};
use container::ContainerRecord;
use pod::SandboxRecord;

/// Everything the services share. One per skiffd process.
pub struct Daemon {
    pub config: Config,
    pub sandboxes: Table<SandboxRecord>,
    pub containers: Table<ContainerRecord>,
    /// The OCI runtime (the skiff-runtime library) over the state root of skiffd's containers.
    pub oci: skiff_runtime::container::Runtime,
    pub images: skiff_runtime::image::store::Store,
    /// The driver in use (the configured one, when the host has it).
    pub cgroup_driver: CgroupDriver,
    pub events: events::Events,
    /// The pod CIDR kubelet last gave through `UpdateRuntimeConfig`.
    pub pod_cidr: RwLock<String>,
    /// The exec/attach/port-forward server, once started.
    pub stream: OnceLock<Arc<crate::stream::server::Server>>,
    /// The last `ImageFsInfo` measurement.
    pub fs_info: image::FsInfoCache,
    /// Container names held while their containers are being created.
    pub creating: container::Creating,
    /// Containers whose exit has been published.
    pub exits_seen: container::ExitsSeen,
    /// The previous CPU sample of each container and pod (and of the node), for rates.
    pub rates: stats::Rates,
    /// The output all running `ExecSync` calls hold together.
    pub exec_output: Arc<container::OutputBudget>,
}

impl Daemon {
    /// Opens every store under the configured directories.
    pub fn open(config: Config) -> anyhow::Result<Arc<Daemon>> {
        use anyhow::Context;
        // Container filesystems, pod files and exec output live below: root's alone, also when an
        // older version left them open to other users.
        let containers_dir = config.state_dir.join("containers");
        for dir in [&config.state_dir, &config.run_dir, &containers_dir] {
            skiff_runtime::private_dir::ensure(dir)
                .with_context(|| format!("create {} as a private directory", dir.display()))?;
        }
        let sandboxes = Table::open(&config.state_dir.join("sandboxes"))?;
        let containers = Table::open(&containers_dir)?;
        let images = skiff_runtime::image::store::Store::open(&config.image_root)
            .with_context(|| format!("open image store {}", config.image_root.display()))?;
        let cgroup_driver = daemon_status::effective_cgroup_driver(config.cgroup_driver);
        let oci = skiff_runtime::container::Runtime::new(config.runtime_root())
            .with_systemd_cgroup(cgroup_driver == CgroupDriver::Systemd);
        Ok(Arc::new(Daemon {
            sandboxes,
            containers,
            oci,
            images,
            cgroup_driver,
            events: events::Events::new(),
            pod_cidr: RwLock::new(String::new()),
            stream: OnceLock::new(),
            fs_info: image::FsInfoCache::default(),
            creating: Default::default(),
            exits_seen: Default::default(),
            rates: Default::default(),
            exec_output: Default::default(),
            config,
        }))
    }
}

impl Daemon {
    /// Publishes `kind` for `container_id` (a container, or a sandbox for sandbox events) with the
    /// pod's and its containers' statuses now.
    pub fn emit(
        &self,
        container_id: &str,
        sandbox_id: &str,
        kind: cri_api::v1::ContainerEventType,
    ) {
        if !self.events.wanted() {
            return;
        }
        let pod_sandbox_status = self
            .sandboxes
            .get(sandbox_id)
            .map(|sb| sandbox::sandbox_status(self, &sb));
        let containers_statuses = self
            .containers
            .list()
            .iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| container::container_status(self, c))
            .collect();
        self.events.publish(cri_api::v1::ContainerEventResponse {
            container_id: container_id.into(),
            container_event_type: kind as i32,
            created_at: crate::now_ns(),
            pod_sandbox_status,
            containers_statuses,
        });
    }
}

/// The CRI's error vocabulary, so every module maps failures the same way.
pub mod error {
    use super::*;

    pub fn invalid(msg: impl std::fmt::Display) -> Status {
        Status::invalid_argument(msg.to_string())
    }

    pub fn not_found(kind: &str, id: &str) -> Status {
        Status::not_found(format!("{kind} {id:?} not found"))
    }

    pub fn internal(e: impl std::fmt::Display) -> Status {
        Status::internal(e.to_string())
    }

    /// An id the client sent: present, short, and without anything that could become a path.
    pub fn check_id(kind: &str, id: &str) -> Result<(), Status> {
        if id.is_empty() {
            return Err(invalid(format!("{kind} id is empty")));
        }
        if id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || id.starts_with('.')
        {
            return Err(invalid(format!(
                "{kind} id {:?} is not a valid id",
                truncate(id)
            )));
        }
        Ok(())
    }

    /// The full id of the object a client named by its id or by a prefix of exactly one id, as crictl
    /// users type the 13 characters `crictl ps` and `crictl pods` show. An id that names nothing
    /// comes back as given: the caller decides between `NotFound` and an idempotent success.
    pub fn full_id<T: crate::store::Record>(
        table: &Table<T>,
        kind: &str,
        id: &str,
    ) -> Result<String, Status> {
        check_id(kind, id)?;
        match table.full_id(id) {
            Ok(Some(full)) => Ok(full),
            Ok(None) => Ok(id.to_owned()),
            Err(n) => Err(invalid(format!(
                "{kind} id prefix {:?} is ambiguous: {n} ids start with it",
                truncate(id)
            ))),
        }
    }

    /// At most 64 characters of untrusted text, for error messages.
    pub fn truncate(s: &str) -> String {
        s.chars().take(64).collect()
    }

    impl From<StoreError> for Status {
        fn from(e: StoreError) -> Status {
            internal(e)
        }
    }
}

/// Rebuilds the daemon's view of the node from disk, before it serves.
pub async fn recover(d: &Arc<Daemon>) {
    sandbox::recover(d).await;
    container::recover(d).await;
    // Measured ahead, so that the first `crictl images` need not wait for the walk.
    image::refresh_fs_info(d);
}

/// Runs blocking work (the runtime library, registry I/O, the file system) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
}

#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use super::container::ContainerRecord;
    use super::Daemon;
    use crate::config::Config;

    /// A daemon whose directories all live under `dir`.
    pub fn daemon(dir: &Path) -> Arc<Daemon> {
        Daemon::open(Config {
            state_dir: dir.join("state"),
            run_dir: dir.join("run"),
            image_root: dir.join("images"),
            ..Config::default()
        })
        .expect("open a daemon")
    }

    /// A container record with nothing behind it: no monitor, no bundle.
    pub fn record(id: &str, sandbox: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: sandbox.into(),
            config: Default::default(),
            image_name: String::new(),
            image_id: String::new(),
            created_at: 0,
            started_at: 0,
            bundle: "/nonexistent".into(),
            log_path: None,
            monitor_pid: 0,
            pid: 0,
        }
    }
}
