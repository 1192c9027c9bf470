//! OCI bundles: a private copy of the busybox rootfs plus a config.json edited as JSON.

use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// A bundle directory and its config, which tests edit freely before `save`.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// Creates `dir` with `rootfs/` copied from the cached busybox rootfs and a default config.
    pub fn new(dir: &Path) -> Bundle {
        fs::create_dir_all(dir).expect("create bundle dir");
        crate::rootfs::copy_to(&dir.join("rootfs"));
        let b = Bundle {
            dir: dir.to_path_buf(),
            config: default_config(),
        };
        b.save();
        b
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Writes config.json (the runtime reads it at create/run).
    pub fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        fs::write(self.config_path(), text).expect("write config.json");
    }

    /// Sets the value at a JSON pointer (e.g. `/process/user/uid`), creating objects on the way.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        set_pointer(&mut self.config, pointer, value);
        self
    }

    /// Removes the value at a JSON pointer if present.
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        let (parent, last) = match pointer.rsplit_once('/') {
            Some(p) => p,
            None => return self,
        };
        match self.config.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.remove(last);
            }
            Some(Value::Array(a)) => {
                if let Ok(i) = last.parse::<usize>() {
                    if i < a.len() {
                        a.remove(i);
                    }
                }
            }
            _ => {}
        }
        self
    }

    /// process.args
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// process.args = ["sh", "-c", script]
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Appends to the array at `pointer` (created if missing).
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if self.config.pointer(pointer).is_none() {
            set_pointer(&mut self.config, pointer, json!([]));
        }
        match self.config.pointer_mut(pointer) {
            Some(Value::Array(a)) => a.push(value),
            other => panic!("{pointer} is not an array: {other:?}"),
        }
        self
    }

    /// Appends a mount.
    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.push("/mounts", m)
    }

    /// Adds a namespace (optionally joined by path), replacing one of the same type.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let ns = match path {
            Some(p) => json!({"type": kind, "path": p}),
            None => json!({"type": kind}),
        };
        self.push("/linux/namespaces", ns)
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(Value::Array(a)) = self.config.pointer_mut("/linux/namespaces") {
            a.retain(|n| n["type"] != kind);
        }
        self
    }

    /// Drops the mount at `destination` from the default set.
    pub fn remove_mount(&mut self, destination: &str) -> &mut Self {
        if let Some(Value::Array(a)) = self.config.pointer_mut("/mounts") {
            a.retain(|m| m["destination"] != destination);
        }
        self
    }
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    assert!(
        pointer.starts_with('/'),
        "JSON pointer must start with /: {pointer}"
    );
    let mut cur = root;
    let parts: Vec<&str> = pointer[1..].split('/').collect();
    let (last, path) = parts.split_last().expect("non-empty pointer");
    for p in path {
        cur = match cur {
            Value::Array(a) => {
                let i: usize = p.parse().expect("array index in pointer");
                &mut a[i]
            }
            v => {
                if !v.is_object() {
                    *v = json!({});
                }
                v.as_object_mut()
                    .expect("object")
                    .entry(p.to_string())
                    .or_insert_with(|| json!({}))
            }
        };
    }
    match cur {
        Value::Array(a) => {
            let i: usize = last.parse().expect("array index in pointer");
            a[i] = value;
        }
        v => {
            if !v.is_object() {
                *v = json!({});
            }
            v.as_object_mut()
                .expect("object")
                .insert(last.to_string(), value);
        }
    }
}

/// The config every test starts from: close to `runc spec`, without a terminal and with
/// a writable rootfs, running `sh`.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "skiff-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}
