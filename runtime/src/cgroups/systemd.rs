//! The systemd manager: the container's cgroup is a transient scope that systemd creates over D-Bus
//! (with `Delegate=yes`, so limits are then written to the scope's own files, as on cgroupfs).
//!
//! Used only where systemd runs (`/run/systemd/system` exists) and the container asks for it with
//! `--systemd-cgroup` or a `slice:prefix:name` cgroups path.

use std::path::Path;
use std::time::{Duration, Instant};

use super::dbus::{Call, Connection, DbusError, Value};
use super::devices::Rule;
use super::fs::FsManager;
use super::oom::OomWatch;
use super::{stats, CgroupError, CgroupManager, CgroupState};
use crate::spec::Resources;

const PRIVATE_SOCKET: &str = "/run/systemd/private";
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";

/// Whether systemd is the init of this machine.
pub fn running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn manager_call(member: &str) -> Call<'_> {
    Call {
        destination: "org.freedesktop.systemd1",
        path: "/org/freedesktop/systemd1",
        interface: "org.freedesktop.systemd1.Manager",
        member,
    }
}

fn connect() -> Result<Connection, DbusError> {
    Connection::open(Path::new(PRIVATE_SOCKET), false)
        .or_else(|_| Connection::open(Path::new(SYSTEM_BUS), true))
}

fn prop(name: &str, v: Value) -> Value {
    Value::Struct(vec![Value::Str(name.into()), Value::Variant(Box::new(v))])
}

/// The arguments of `StartTransientUnit` for a scope holding `pid`.
pub fn start_args(unit: &str, slice: &str, pid: u32) -> Vec<Value> {
    let props = vec![
        prop("Description", Value::Str(format!("skiff container {unit}"))),
        prop("Slice", Value::Str(slice.into())),
        prop("Delegate", Value::Bool(true)),
        prop("DefaultDependencies", Value::Bool(false)),
        prop("PIDs", Value::Array("u".into(), vec![Value::U32(pid)])),
    ];
    vec![
        Value::Str(unit.into()),
        Value::Str("replace".into()),
        Value::Array("(sv)".into(), props),
        Value::Array("(sa(sv))".into(), Vec::new()),
    ]
}

fn dbus_err(unit: &str) -> impl FnOnce(DbusError) -> CgroupError + '_ {
    move |e| CgroupError::Systemd {
        unit: unit.to_owned(),
        message: e.to_string(),
    }
}

pub struct SystemdManager {
    fs: FsManager,
    unit: String,
    slice: String,
}

impl SystemdManager {
    /// `rel` is the scope's path as systemd lays it out (`a.slice/a-b.slice/x.scope`).
    pub fn new(rel: &Path) -> Result<SystemdManager, CgroupError> {
        let name = |p: Option<&std::ffi::OsStr>| p.map(|s| s.to_string_lossy().into_owned());
        let unit = name(rel.file_name()).unwrap_or_default();
        let slice = name(rel.parent().and_then(Path::file_name)).unwrap_or_default();
        let mut fs = FsManager::new(rel)?;
        fs.set_systemd_unit(&unit);
        Ok(SystemdManager { fs, unit, slice })
    }

    pub fn from_state(state: CgroupState) -> SystemdManager {
        let unit = state.systemd_unit.clone().unwrap_or_default();
        SystemdManager {
            fs: FsManager::from_state(state),
            unit,
            slice: String::new(),
        }
    }

    /// Waits until systemd has moved `pid` into the scope.
    fn wait_placed(&self, pid: i32) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let want = format!("/{}", self.unit);
        loop {
            let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cg.lines().any(|l| l.ends_with(&want)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Systemd {
                    unit: self.unit.clone(),
                    message: format!("pid {pid} did not arrive in the scope"),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl CgroupManager for SystemdManager {
    fn create(&mut self) -> Result<(), CgroupError> {
        // A scope cannot exist without a process: systemd creates it in `add_process`.
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let pid_u = u32::try_from(pid).map_err(|_| CgroupError::BadValue {
            field: "pid".into(),
            reason: format!("{pid} is negative"),
        })?;
        let mut conn = connect().map_err(dbus_err(&self.unit))?;
        let args = start_args(&self.unit, &self.slice, pid_u);
        conn.call(&manager_call("StartTransientUnit"), &args)
            .map_err(dbus_err(&self.unit))?;
        self.wait_placed(pid)?;
        Ok(())
    }

    fn apply(&self, resources: &Resources, devices: &[Rule]) -> Result<(), CgroupError> {
        self.fs.apply(resources, devices)
    }

    fn stats(&self) -> stats::Stats {
        self.fs.stats()
    }

    fn oom_kills(&self) -> u64 {
        self.fs.oom_kills()
    }

    fn oom_watch(&self) -> Result<Option<OomWatch>, CgroupError> {
        self.fs.oom_watch()
    }

    fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.fs.pids()
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        self.fs.kill_all(signal)
    }

    fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        self.fs.freeze(frozen)
    }

    fn destroy(&self) -> Result<(), CgroupError> {
        let _ = self.fs.freeze(false);
        let _ = self.fs.kill_all(libc::SIGKILL);
        let mut conn = connect().map_err(dbus_err(&self.unit))?;
        let args = [Value::Str(self.unit.clone()), Value::Str("replace".into())];
        match conn.call(&manager_call("StopUnit"), &args) {
            Ok(_) => Ok(()),
            Err(DbusError::Call { name, .. }) if name.ends_with("NoSuchUnit") => Ok(()),
            Err(e) => Err(dbus_err(&self.unit)(e)),
        }
    }

    fn state(&self) -> CgroupState {
        self.fs.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_arguments() {
        let args = start_args("cri-abc.scope", "kubepods.slice", 42);
        let sig: String = args.iter().map(Value::signature).collect();
        assert_eq!(sig, "ssa(sv)a(sa(sv))");
        let msg = super::super::dbus::method_call(1, &manager_call("StartTransientUnit"), &args);
        let text = String::from_utf8_lossy(&msg);
        assert!(text.contains("cri-abc.scope"));
        assert!(text.contains("Delegate"));
    }
}
