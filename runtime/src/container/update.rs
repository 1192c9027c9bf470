//! `update`: new cgroup limits for a live container, written to its cgroup and kept in its state
//! so later updates and `exec`s start from them.

use crate::cgroups;
use crate::spec::Resources;
use crate::state::{StateDir, Status};

use super::{ContainerError, Runtime};

impl Runtime {
    /// Merges `new` into the container's limits (a field `new` leaves unset keeps its value) and
    /// applies the result. A stopped container has no cgroup to update: `WrongState`.
    pub fn update(&self, id: &str, new: Resources) -> Result<(), ContainerError> {
        let dir = StateDir::open(&self.root, id)?;
        let mut st = dir.load()?;
        let status = st.status(&dir.path);
        if status == Status::Stopped {
            return Err(ContainerError::WrongState {
                id: id.into(),
                status,
                action: "nothing to update",
            });
        }
        let linux = st.config.linux.get_or_insert_with(Default::default);
        let res = linux.resources.get_or_insert_with(Resources::default);
        res.merge(new);
        let res = res.clone();
        // Device rules stay as they are: rewriting them would briefly cut the container off.
        cgroups::from_state(&st.cgroup).apply(&res, &[])?;
        dir.save(&st)?;
        Ok(())
    }
}
