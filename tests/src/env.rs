//! One test's world: a private state root, bundles, unique ids, and cleanup on drop.

use crate::binary::runtime_bin;
use crate::bundle::Bundle;
use crate::cmd::{self, default_timeout, Output};
use crate::host;
use serde_json::Value;
use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

type Cleanup = Box<dyn FnOnce()>;

pub struct TestEnv {
    /// Private scratch dir of this test; removed on drop.
    pub dir: PathBuf,
    /// `--root` of every runtime command this test runs.
    pub root: PathBuf,
    name: String,
    ids: RefCell<Vec<String>>,
    cleanups: RefCell<Vec<Cleanup>>,
}

impl TestEnv {
    /// A fresh environment; `name` shows up in ids and paths to make leftovers traceable.
    pub fn new(name: &str) -> TestEnv {
        runtime_bin();
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/var/tmp/skiff-test/run/{name}-{}-{n}",
            std::process::id()
        ));
        if dir.exists() {
            host::unmount_below(&dir);
            let _ = fs::remove_dir_all(&dir);
        }
        let root = dir.join("state");
        fs::create_dir_all(&root).expect("create test dir");
        TestEnv {
            dir,
            root,
            name,
            ids: RefCell::new(Vec::new()),
            cleanups: RefCell::new(Vec::new()),
        }
    }

    /// A unique container id, force-deleted when the environment drops.
    pub fn id(&self) -> String {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{n}", self.name, std::process::id());
        self.ids.borrow_mut().push(id.clone());
        id
    }

    /// A new bundle in this test's dir, with its own rootfs copy and the default config.
    pub fn bundle(&self) -> Bundle {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Bundle::new(&self.dir.join(format!("bundle-{n}")))
    }

    /// A bundle whose config drops the cgroup mount and sysfs, for tests that create many
    /// containers and only need a shell.
    pub fn bundle_light(&self) -> Bundle {
        let mut b = self.bundle();
        b.remove_mount("/sys/fs/cgroup");
        b
    }

    /// Registers an action to run on drop (before the scratch dir is removed).
    pub fn on_drop(&self, f: impl FnOnce() + 'static) {
        self.cleanups.borrow_mut().push(Box::new(f));
    }

    /// `skiff --root <root>` ready for more arguments.
    pub fn command(&self) -> Command {
        let mut c = Command::new(runtime_bin());
        c.arg("--root").arg(&self.root);
        c
    }

    /// Runs a prepared command with capture and the default deadline.
    pub fn exec(&self, c: &mut Command) -> Output {
        cmd::run(c, &self.dir, default_timeout())
    }

    /// Runs `skiff --root <root> ARGS...`.
    pub fn rt(&self, args: &[&str]) -> Output {
        self.exec(self.command().args(args))
    }

    /// Like [`TestEnv::rt`] with a custom deadline.
    pub fn rt_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        cmd::run(self.command().args(args), &self.dir, timeout)
    }

    /// Runs a host helper and asserts it succeeded.
    pub fn host(&self, prog: &str, args: &[&str]) -> Output {
        cmd::host(&self.dir, prog, args)
    }

    /// Saves the bundle's config and runs `create --bundle B ID`.
    pub fn create(&self, b: &Bundle, id: &str) -> Output {
        b.save();
        self.rt(&["create", "--bundle", path_str(&b.dir), id])
    }

    /// `create` that must succeed.
    pub fn must_create(&self, b: &Bundle, id: &str) -> Output {
        let out = self.create(b, id);
        assert!(out.success(), "create {id} failed{out}");
        out
    }

    /// `start ID` that must succeed.
    pub fn must_start(&self, id: &str) -> Output {
        let out = self.rt(&["start", id]);
        assert!(out.success(), "start {id} failed{out}");
        out
    }

    /// Saves the config and runs `run --bundle B ID` in the foreground.
    pub fn run_fg(&self, b: &Bundle, id: &str) -> Output {
        b.save();
        self.rt(&["run", "--bundle", path_str(&b.dir), id])
    }

    /// Runs `sh -c SCRIPT` as a new foreground container of bundle `b` and asserts exit 0.
    pub fn run_sh(&self, b: &mut Bundle, script: &str) -> Output {
        b.sh(script);
        let id = self.id();
        let out = self.run_fg(b, &id);
        assert!(out.success(), "container `sh -c {script:?}` failed{out}");
        out
    }

    /// `state ID` parsed as JSON.
    pub fn state(&self, id: &str) -> Value {
        let out = self.rt(&["state", id]);
        assert!(out.success(), "state {id} failed{out}");
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state {id} is not JSON ({e}){out}"))
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap_or("").to_string()
    }

    /// The container's init pid from `state`.
    pub fn pid(&self, id: &str) -> i64 {
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state of {id} has no numeric pid: {st}"))
    }

    /// Polls `state` until the status is `want`.
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> Value {
        let end = Instant::now() + timeout;
        loop {
            let st = self.state(id);
            if st["status"] == want || Instant::now() >= end {
                assert_eq!(
                    st["status"], want,
                    "container {id} never reached {want}: {st}"
                );
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts that nothing of container `id` remains: no state, no list entry, no state dir,
    /// no mount mentioning the bundle, no live init process, no cgroup dir named like the id.
    pub fn assert_clean(&self, id: &str, bundle: &Path, pid: Option<i64>) {
        let st = self.rt(&["state", id]);
        assert!(
            !st.success(),
            "state of deleted container {id} still works{st}"
        );
        let list = self.rt(&["list", "-q"]);
        assert!(list.success(), "list -q failed{list}");
        assert!(
            !list.stdout.lines().any(|l| l.trim() == id),
            "{id} still listed{list}"
        );
        let state_dir = self.root.join(id);
        assert!(
            !state_dir.exists(),
            "state dir {} left behind: {:?}",
            state_dir.display(),
            host::list_dir(&state_dir)
        );
        let mounts = host::mounts_mentioning(bundle);
        assert!(mounts.is_empty(), "mounts left for {id}: {mounts:#?}");
        if let Some(pid) = pid {
            assert!(
                host::wait_process_gone(pid, Duration::from_secs(5)),
                "init process {pid} of {id} still alive"
            );
        }
        let cg = host::cgroup_dirs_named(id);
        assert!(cg.is_empty(), "cgroup dirs left for {id}: {cg:#?}");
    }

    /// Ids this environment handed out.
    pub fn ids(&self) -> Vec<String> {
        self.ids.borrow().clone()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let quick = Duration::from_secs(10);
        for id in self.ids.borrow().iter() {
            // Best effort: most ids are already gone, so errors are expected here.
            let _ = self.rt_timeout(&["kill", id, "KILL"], quick);
            let _ = self.rt_timeout(&["delete", "--force", id], quick);
        }
        for f in self.cleanups.borrow_mut().drain(..).rev() {
            f();
        }
        host::unmount_below(&self.dir);
        if std::env::var_os("SKIFF_TEST_KEEP").is_some() {
            eprintln!("note: kept {}", self.dir.display());
            return;
        }
        let left: Vec<String> = host::mount_points()
            .into_iter()
            .filter(|m| m.starts_with(&*self.dir.to_string_lossy()))
            .collect();
        if left.is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "note: not removing {} (still mounted: {left:?})",
                self.dir.display()
            );
        }
    }
}

/// A path as &str (test paths are always UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}
