//! The lock-free read of a container's state: what a watcher needs (status, init pid, cgroups)
//! without waiting behind a command that holds the container's lock.

use crate::cgroups::CgroupState;
use crate::state::{self, Status};

use super::{ContainerError, Runtime};

/// A container as a lock-free read sees it: whole (state files are replaced atomically) but
/// possibly a moment old.
#[derive(Debug, Clone)]
pub struct Observed {
    pub status: Status,
    /// The init's pid in the runtime's pid namespace.
    pub pid: i32,
    pub cgroup: CgroupState,
}

impl Runtime {
    /// Reads the container's state without taking its lock; cheap enough to call on every status
    /// query. A container being created or deleted reads as not found.
    pub fn observe(&self, id: &str) -> Result<Observed, ContainerError> {
        state::validate_id(id)?;
        let dir = self.root.join(id);
        let st = state::read_unlocked(&dir, id)?;
        Ok(Observed {
            status: st.status(&dir),
            pid: st.pid,
            cgroup: st.cgroup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateError;

    #[test]
    fn missing_and_bad_ids_are_errors_not_panics() {
        let root = tempfile::tempdir().unwrap();
        let rt = Runtime::new(root.path());
        assert!(matches!(
            rt.observe("absent"),
            Err(ContainerError::State(StateError::NotFound(_)))
        ));
        assert!(matches!(
            rt.observe("../x"),
            Err(ContainerError::State(StateError::BadId(_)))
        ));
        // A directory whose state is not written yet (a create in progress) is not found either.
        std::fs::create_dir(root.path().join("half")).unwrap();
        assert!(matches!(
            rt.observe("half"),
            Err(ContainerError::State(StateError::NotFound(_)))
        ));
    }
}
