//! Spec building, table by table, against a real (temporary) rootfs and daemon state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cri_api::v1 as cri;
use skiff_runtime::image::rootfs::RunConfig;
use skiff_runtime::spec::{NamespaceKind, Spec};
use tonic::{Code, Status};

use super::*;
use crate::config::Config;
use crate::cri::pod::SandboxRecord;
use crate::cri::Daemon;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    daemon: Arc<Daemon>,
    sandbox: SandboxRecord,
    image: RunConfig,
    rootfs: PathBuf,
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\nbob:x:1002:1003::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\nalices:x:1001:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let config = Config {
        state_dir: dir.join("state"),
        run_dir: dir.join("run"),
        image_root: dir.join("images"),
        ..Config::default()
    };
    let daemon = Daemon::open(config).unwrap();
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
    let pod_dir = dir.join("pod");
    std::fs::create_dir_all(pod_dir.join("shm")).unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(pod_dir.join(f), "x\n").unwrap();
    }
    // Through serde, so that fields added to the record later take their defaults here too.
    let mut sandbox: SandboxRecord = serde_json::from_value(serde_json::json!({
        "id": "pod1", "config": "", "runtime_handler": "", "created_at": 0, "ready": true,
        "netns": null, "ipcns": null, "utsns": null, "pidns": null, "infra_pid": null,
        "ips": [], "cgroup_parent": "/kubepods/podabc", "dir": pod_dir,
    }))
    .unwrap();
    sandbox.config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "u-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-0".into(),
        ..Default::default()
    };
    let image = RunConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into(), "--port=80".into()],
        env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
        working_dir: Some("/srv".into()),
        ..Default::default()
    };
    Fixture {
        _tmp: tmp,
        dir,
        daemon,
        sandbox,
        image,
        rootfs,
    }
}

impl Fixture {
    fn build(&self, config: &cri::ContainerConfig) -> Result<Spec, Status> {
        build(&SpecInput {
            daemon: &self.daemon,
            id: "ctr1",
            config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: self.rootfs.clone(),
        })
    }

    fn ok(&self, config: &cri::ContainerConfig) -> Spec {
        match self.build(config) {
            Ok(s) => s,
            Err(e) => panic!("spec: {e}"),
        }
    }

    fn invalid(&self, config: &cri::ContainerConfig, needle: &str) {
        match self.build(config) {
            Ok(_) => panic!("accepted a config that should fail with {needle:?}"),
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{e}");
                assert!(e.message().contains(needle), "{needle:?} not in {e}");
            }
        }
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn with_sc(sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    cri::ContainerConfig {
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn process(spec: &Spec) -> &skiff_runtime::spec::Process {
    spec.process.as_ref().unwrap()
}

fn linux(spec: &Spec) -> &skiff_runtime::spec::Linux {
    spec.linux.as_ref().unwrap()
}

#[test]
fn command_and_args_follow_kubernetes_rules() {
    let fx = fixture();
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (&[], &[], &["/entry", "serve", "--port=80"]),
        (&[], &["x", "y"], &["/entry", "x", "y"]),
        (&["/bin/sh", "-c"], &[], &["/bin/sh", "-c"]),
        (&["/bin/sh"], &["-c", "true"], &["/bin/sh", "-c", "true"]),
    ];
    for (command, args, want) in cases {
        let c = cri::ContainerConfig {
            command: s(command),
            args: s(args),
            ..Default::default()
        };
        assert_eq!(process(&fx.ok(&c)).args, s(want), "{command:?} {args:?}");
    }
    let mut fx = fixture();
    fx.image.entrypoint.clear();
    fx.image.cmd.clear();
    fx.invalid(&cri::ContainerConfig::default(), "command");
    let c = cri::ContainerConfig {
        args: s(&["only-args"]),
        ..Default::default()
    };
    assert_eq!(process(&fx.ok(&c)).args, s(&["only-args"]));
}

#[test]
fn config_env_overrides_the_image() {
    let fx = fixture();
    let c = cri::ContainerConfig {
        command: s(&["x"]),
        envs: vec![
            cri::KeyValue {
                key: "B".into(),
                value: "config".into(),
            },
            cri::KeyValue {
                key: "C".into(),
                value: "new=with=equals".into(),
            },
        ],
        ..Default::default()
    };
    let env = process(&fx.ok(&c)).env.clone();
    for want in [
        "PATH=/bin",
        "A=image",
        "B=config",
        "C=new=with=equals",
        "HOSTNAME=web-0",
    ] {
        assert!(env.contains(&want.to_string()), "{want} not in {env:?}");
    }
    assert_eq!(env.iter().filter(|e| e.starts_with("B=")).count(), 1);
    let mut fx = fixture();
    fx.image.env.clear();
    let env = process(&fx.ok(&c)).env.clone();
    assert!(
        env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")),
        "{env:?}"
    );
}

#[test]
fn working_dir_from_config_then_image_then_root() {
    let mut fx = fixture();
    let mut c = cri::ContainerConfig {
        command: s(&["x"]),
        ..Default::default()
    };
    assert_eq!(process(&fx.ok(&c)).cwd, "/srv");
    c.working_dir = "/work".into();
    assert_eq!(process(&fx.ok(&c)).cwd, "/work");
    c.working_dir = "relative".into();
    fx.invalid(&c, "working_dir");
    c.working_dir.clear();
    fx.image.working_dir = None;
    assert_eq!(process(&fx.ok(&c)).cwd, "/");
}

#[test]
fn process_basics() {
    let fx = fixture();
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        no_new_privs: true,
        ..Default::default()
    });
    c.tty = true;
    c.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        oom_score_adj: 999,
        ..Default::default()
    });
    let spec = fx.ok(&c);
    let p = process(&spec);
    assert!(p.terminal && p.no_new_privileges);
    assert_eq!(p.oom_score_adj, Some(999));
    assert_eq!(p.rlimits[0].kind, "RLIMIT_NOFILE");
    assert!(p.rlimits[0].hard <= process::NOFILE);
    assert_eq!(p.rlimits[0].soft, p.rlimits[0].hard);
    assert_eq!(
        spec.root.as_ref().unwrap().path,
        fx.rootfs.to_string_lossy()
    );
}

fn user_of(fx: &Fixture, c: &cri::ContainerConfig) -> (u32, u32, Vec<u32>) {
    let spec = fx.ok(c);
    let u = &process(&spec).user;
    (u.uid, u.gid, u.additional_gids.clone())
}

#[test]
fn users_resolve_in_the_container_passwd() {
    let mut fx = fixture();
    let sc = |f: &dyn Fn(&mut cri::LinuxContainerSecurityContext)| {
        let mut sc = cri::LinuxContainerSecurityContext::default();
        f(&mut sc);
        let mut c = with_sc(sc);
        c.command = s(&["x"]);
        c
    };
    // Nothing set: the image's user, root by default.
    assert_eq!(user_of(&fx, &sc(&|_| {})), (0, 0, vec![0]));
    // By uid: the primary group from passwd, memberships from group.
    let by_uid = sc(&|s| s.run_as_user = Some(cri::Int64Value { value: 1000 }));
    assert_eq!(user_of(&fx, &by_uid), (1000, 1001, vec![1001, 10, 29]));
    // A uid without a passwd entry: gid 0.
    let unknown = sc(&|s| s.run_as_user = Some(cri::Int64Value { value: 4242 }));
    assert_eq!(user_of(&fx, &unknown), (4242, 0, vec![0]));
    let by_name = sc(&|s| {
        s.run_as_username = "bob".into();
        s.run_as_group = Some(cri::Int64Value { value: 7 });
        s.supplemental_groups = vec![500];
    });
    assert_eq!(user_of(&fx, &by_name), (1002, 7, vec![7, 10, 500]));
    let strict = sc(&|s| {
        s.run_as_user = Some(cri::Int64Value { value: 1000 });
        s.supplemental_groups = vec![500];
        s.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    });
    assert_eq!(user_of(&fx, &strict), (1000, 1001, vec![1001, 500]));
    fx.invalid(&sc(&|s| s.run_as_username = "mallory".into()), "mallory");
    fx.invalid(
        &sc(&|s| s.run_as_group = Some(cri::Int64Value { value: 7 })),
        "without run_as_user",
    );
    fx.invalid(
        &sc(&|s| s.run_as_user = Some(cri::Int64Value { value: -1 })),
        "run_as_user",
    );
    // The image's User in its four spellings.
    for (user, want) in [
        ("alice", (1000, 1001)),
        ("1002", (1002, 1003)),
        ("55:66", (55, 66)),
        ("alice:wheel", (1000, 10)),
        ("1000:audio", (1000, 29)),
    ] {
        fx.image.user = Some(user.into());
        let (u, g, _) = user_of(&fx, &sc(&|_| {}));
        assert_eq!((u, g), want, "{user}");
    }
    fx.image.user = Some("nobody-here".into());
    fx.invalid(&sc(&|_| {}), "image User");
    fx.image.user = Some("alice:nogroup".into());
    fx.invalid(&sc(&|_| {}), "image User");
}

#[test]
fn the_unchanged_id_is_refused_from_every_source() {
    let mut fx = fixture();
    std::fs::write(
        fx.rootfs.join("etc/passwd"),
        "max:x:4294967295:0::/:/bin/sh\ngmax:x:2000:4294967295::/:/bin/sh\nops:x:2001:0::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(fx.rootfs.join("etc/group"), "huge:x:4294967295:ops\n").unwrap();
    let max = || Some(cri::Int64Value { value: 4294967295 });
    let sc = |f: &dyn Fn(&mut cri::LinuxContainerSecurityContext)| {
        let mut sc = cri::LinuxContainerSecurityContext::default();
        f(&mut sc);
        let mut c = with_sc(sc);
        c.command = s(&["x"]);
        c
    };
    let uid = |v| Some(cri::Int64Value { value: v });
    let requests = [
        (
            sc(&|s| s.run_as_user = max()),
            "run_as_user \"4294967295\": 4294967295 is -1 as a uid_t",
        ),
        (
            sc(&|s| {
                s.run_as_user = uid(1000);
                s.run_as_group = max();
            }),
            "run_as_group \"4294967295\": 4294967295 is -1 as a uid_t",
        ),
        (
            sc(&|s| s.supplemental_groups = vec![4294967295]),
            "supplemental_groups",
        ),
        (
            sc(&|s| s.run_as_username = "max".into()),
            "run_as_username \"max\": process.user.uid",
        ),
        (
            sc(&|s| s.run_as_user = uid(2000)),
            "run_as_user \"2000\": process.user.gid",
        ),
        (
            sc(&|s| s.run_as_user = uid(2001)),
            "run_as_user \"2001\": process.user.additionalGids[1]",
        ),
    ];
    for (config, needle) in requests {
        fx.invalid(&config, needle);
    }
    for (user, needle) in [
        ("4294967295", "process.user.uid"),
        ("max", "process.user.uid"),
        ("2001:4294967295", "process.user.gid"),
        ("2001:huge", "process.user.gid"),
        ("ops", "process.user.additionalGids[1]"),
    ] {
        fx.image.user = Some(user.into());
        fx.invalid(&sc(&|_| {}), &format!("image User {user:?}: {needle}"));
    }
}

#[test]
fn passwd_symlinks_stay_inside_the_rootfs() {
    let fx = fixture();
    // An absolute symlink is resolved as if the rootfs were `/`: it must find the rootfs's file,
    // not the host's (which has no user "inside").
    std::fs::write(fx.rootfs.join("etc/real"), "inside:x:77:88::/:/bin/sh\n").unwrap();
    std::fs::remove_file(fx.rootfs.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/../../../etc/real", fx.rootfs.join("etc/passwd")).unwrap();
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        run_as_username: "inside".into(),
        ..Default::default()
    });
    c.command = s(&["x"]);
    assert_eq!(user_of(&fx, &c).0, 77);
    std::fs::remove_file(fx.rootfs.join("etc/passwd")).unwrap();
    std::os::unix::fs::symlink("/etc", fx.rootfs.join("etc/passwd")).unwrap();
    fx.invalid(&c, "inside");
}

fn caps_of(fx: &Fixture, add: &[&str], drop: &[&str]) -> Result<Vec<String>, Status> {
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: s(add),
            drop_capabilities: s(drop),
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    });
    c.command = s(&["x"]);
    fx.build(&c).map(|spec| {
        let caps = process(&spec).capabilities.clone().unwrap();
        assert_eq!(caps.bounding, caps.effective);
        assert_eq!(caps.bounding, caps.permitted);
        caps.bounding
    })
}

#[test]
fn capabilities_add_drop_and_all() {
    let fx = fixture();
    let default = caps_of(&fx, &[], &[]).unwrap();
    assert_eq!(default, s(&security::DEFAULT_CAPS));
    let added = caps_of(&fx, &["NET_ADMIN", "CAP_SYS_TIME"], &["chown", "CAP_KILL"]).unwrap();
    assert!(added.contains(&"CAP_NET_ADMIN".into()) && added.contains(&"CAP_SYS_TIME".into()));
    assert!(!added.contains(&"CAP_CHOWN".into()) && !added.contains(&"CAP_KILL".into()));
    let all = caps_of(&fx, &["ALL"], &[]).unwrap();
    assert_eq!(all, security::current_capabilities());
    assert!(all.contains(&"CAP_SYS_ADMIN".into()));
    assert_eq!(caps_of(&fx, &[], &["ALL"]).unwrap(), Vec::<String>::new());
    assert_eq!(
        caps_of(&fx, &["NET_BIND_SERVICE"], &["ALL"]).unwrap(),
        s(&["CAP_NET_BIND_SERVICE"])
    );
    let e = caps_of(&fx, &["CAP_FLY"], &[]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("CAP_FLY"), "{e}");
}

fn seccomp_of(fx: &Fixture, sc: cri::LinuxContainerSecurityContext) -> Result<Spec, Status> {
    let mut c = with_sc(sc);
    c.command = s(&["x"]);
    fx.build(&c)
}

fn profile(kind: cri::security_profile::ProfileType, r: &str) -> Option<cri::SecurityProfile> {
    Some(cri::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: r.into(),
    })
}

#[test]
#[allow(deprecated)]
fn seccomp_kinds() {
    use cri::security_profile::ProfileType as T;
    let fx = fixture();
    let seccomp = |sc| seccomp_of(&fx, sc).map(|s| linux(&s).seccomp.clone());
    let none = seccomp(Default::default()).unwrap();
    assert!(none.is_none());
    let rd = seccomp(cri::LinuxContainerSecurityContext {
        seccomp: profile(T::RuntimeDefault, ""),
        ..Default::default()
    })
    .unwrap()
    .expect("RuntimeDefault gives a profile");
    assert_eq!(rd.default_action, "SCMP_ACT_ERRNO");
    let unconfined = seccomp(cri::LinuxContainerSecurityContext {
        seccomp: profile(T::Unconfined, ""),
        ..Default::default()
    })
    .unwrap();
    assert!(unconfined.is_none());
    let legacy = seccomp(cri::LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(legacy.is_some());
    let privileged = seccomp(cri::LinuxContainerSecurityContext {
        privileged: true,
        seccomp: profile(T::RuntimeDefault, ""),
        ..Default::default()
    })
    .unwrap();
    assert!(privileged.is_none());
    // Localhost: absolute, present, valid.
    let good = fx.dir.join("good.json");
    std::fs::write(
        &good,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let bad = fx.dir.join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": 7}"#).unwrap();
    let local = |p: &Path| cri::LinuxContainerSecurityContext {
        seccomp: profile(T::Localhost, &p.to_string_lossy()),
        ..Default::default()
    };
    let got = seccomp(local(&good)).unwrap().unwrap();
    assert_eq!(got.default_action, "SCMP_ACT_ALLOW");
    for (p, needle) in [
        (bad.as_path(), "bad.json"),
        (Path::new("/nonexistent/profile.json"), "profile.json"),
        (Path::new("relative.json"), "absolute"),
    ] {
        let e = seccomp(local(p)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(needle), "{e}");
    }
    let e = seccomp(cri::LinuxContainerSecurityContext {
        seccomp_profile_path: format!("localhost/{}", bad.display()),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

fn mount_cfg(mounts: Vec<cri::Mount>) -> cri::ContainerConfig {
    cri::ContainerConfig {
        command: s(&["x"]),
        mounts,
        ..Default::default()
    }
}

fn bind(host: &Path, container: &str) -> cri::Mount {
    cri::Mount {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.into(),
        ..Default::default()
    }
}

#[test]
fn mounts_are_validated() {
    let fx = fixture();
    let host = fx.dir.join("data");
    std::fs::create_dir(&host).unwrap();
    fx.invalid(
        &mount_cfg(vec![bind(&host, "relative/path")]),
        "relative/path",
    );
    fx.invalid(&mount_cfg(vec![bind(&host, "/data/../../etc")]), "..");
    fx.invalid(
        &mount_cfg(vec![bind(Path::new("rel/host"), "/data")]),
        "rel/host",
    );
    fx.invalid(
        &mount_cfg(vec![bind(&fx.dir.join("missing-dir"), "/data")]),
        "missing-dir",
    );
    fx.invalid(&mount_cfg(vec![bind(&host, "/da\0ta")]), "NUL");
    fx.invalid(
        &mount_cfg(vec![bind(Path::new("/tmp/\0x"), "/data")]),
        "host_path",
    );
    let long = format!("relative{}", "x".repeat(10000));
    let e = fx.build(&mount_cfg(vec![bind(&host, &long)])).unwrap_err();
    assert!(
        e.message().len() < 300,
        "error not truncated: {}",
        e.message().len()
    );
    let mut rro = bind(&host, "/data");
    rro.recursive_read_only = true;
    fx.invalid(&mount_cfg(vec![rro.clone()]), "needs readonly");
    rro.readonly = true;
    let spec = fx.ok(&mount_cfg(vec![rro]));
    let m = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/data")
        .unwrap();
    assert_eq!(m.kind.as_deref(), Some("bind"));
    assert_eq!(m.source.as_deref(), Some(host.to_str().unwrap()));
    assert_eq!(m.options, s(&["rbind", "rprivate", "rro", "ro"]));
    let mut bad_prop = bind(&host, "/data");
    bad_prop.propagation = 9;
    fx.invalid(&mount_cfg(vec![bad_prop]), "propagation");
}

#[test]
fn mounts_order_defaults_pod_files_and_overrides() {
    let mut fx = fixture();
    let host = fx.dir.join("data");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    let spec = fx.ok(&mount_cfg(vec![
        bind(&host.join("sub"), "/data/sub"),
        bind(&host, "/data"),
        bind(&host, "/etc/hosts"),
    ]));
    let dests: Vec<&str> = spec.mounts.iter().map(|m| m.destination.as_str()).collect();
    let pos = |d: &str| dests.iter().position(|x| *x == d).unwrap();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/dev/shm",
    ] {
        assert!(dests.contains(&d), "{d} missing from {dests:?}");
    }
    assert!(pos("/data") < pos("/data/sub"), "{dests:?}");
    assert_eq!(dests.iter().filter(|d| **d == "/etc/hosts").count(), 1);
    let hosts = &spec.mounts[pos("/etc/hosts")];
    assert_eq!(hosts.source.as_deref(), Some(host.to_str().unwrap()));
    let hostname = &spec.mounts[pos("/etc/hostname")];
    assert_eq!(
        hostname.source.as_deref(),
        Some(fx.sandbox.dir.join("hostname").to_str().unwrap())
    );
    let shm = &spec.mounts[pos("/dev/shm")];
    assert_eq!(
        shm.kind.as_deref(),
        Some("tmpfs"),
        "no pod IPC namespace: private"
    );
    let sys = &spec.mounts[pos("/sys")];
    assert!(sys.options.contains(&"ro".into()));
    fx.sandbox.ipcns = Some(fx.dir.join("ipc"));
    let spec = fx.ok(&mount_cfg(vec![]));
    let shm = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/dev/shm")
        .unwrap();
    assert_eq!(shm.kind.as_deref(), Some("bind"));
    assert_eq!(
        shm.source.as_deref(),
        Some(fx.sandbox.dir.join("shm").to_str().unwrap())
    );
}

#[test]
fn readonly_rootfs_makes_pod_files_readonly() {
    let fx = fixture();
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        readonly_rootfs: true,
        ..Default::default()
    });
    c.command = s(&["x"]);
    let spec = fx.ok(&c);
    assert!(spec.root.as_ref().unwrap().readonly);
    let hosts = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/etc/hosts")
        .unwrap();
    assert!(hosts.options.contains(&"ro".into()));
}

#[test]
fn propagation_needs_a_propagating_host_mount() {
    use cri::MountPropagation as P;
    let fx = fixture();
    let mounts = skiff_runtime::mountinfo::read_self().unwrap();
    let host = fx.dir.join("data");
    std::fs::create_dir(&host).unwrap();
    let on = skiff_runtime::mountinfo::containing(&mounts, &host).unwrap();
    let slave = on.optional.iter().any(|o| o.starts_with("master:"));
    for (prop, opt, ok) in [
        (P::PropagationPrivate, "rprivate", true),
        (
            P::PropagationHostToContainer,
            "rslave",
            on.is_shared() || slave,
        ),
        (P::PropagationBidirectional, "rshared", on.is_shared()),
    ] {
        let mut m = bind(&host, "/data");
        m.propagation = prop as i32;
        let c = mount_cfg(vec![m]);
        if ok {
            let spec = fx.ok(&c);
            let m = spec
                .mounts
                .iter()
                .find(|m| m.destination == "/data")
                .unwrap();
            assert!(m.options.contains(&opt.to_string()), "{:?}", m.options);
        } else {
            fx.invalid(&c, "not");
        }
    }
    // Where the host has a shared mount, bidirectional propagation from it is accepted, and the
    // root becomes shared too.
    if let Some(shared) = mounts
        .iter()
        .find(|m| m.is_shared() && m.mount_point.is_dir())
    {
        let mut m = bind(&shared.mount_point, "/shared");
        m.propagation = P::PropagationBidirectional as i32;
        let spec = fx.ok(&mount_cfg(vec![m]));
        assert_eq!(linux(&spec).rootfs_propagation.as_deref(), Some("rshared"));
    }
}

#[test]
fn image_volumes_become_directories() {
    let mut fx = fixture();
    fx.image.volumes = s(&["/var/lib/data", "/cache"]);
    std::os::unix::fs::symlink("/../../../escape", fx.rootfs.join("cache")).unwrap();
    fx.ok(&mount_cfg(vec![]));
    assert!(fx.rootfs.join("var/lib/data").is_dir());
    // The symlink is followed inside the root: the directory appears there, not beside it.
    assert!(fx.rootfs.join("escape").is_dir());
    assert!(!fx.dir.join("escape").exists());
    fx.image.volumes = s(&["relative"]);
    fx.invalid(&mount_cfg(vec![]), "image volume");
}

#[test]
fn privileged_gets_everything() {
    let fx = fixture();
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        privileged: true,
        masked_paths: s(&["/proc/kcore"]),
        ..Default::default()
    });
    c.command = s(&["x"]);
    let spec = fx.ok(&c);
    let l = linux(&spec);
    assert!(l.masked_paths.is_empty() && l.readonly_paths.is_empty());
    assert!(l.seccomp.is_none());
    let rules = &l.resources.as_ref().unwrap().devices;
    assert!(rules.len() == 1 && rules[0].allow);
    assert!(l.devices.iter().any(|d| d.path == "/dev/null"));
    let sys = spec
        .mounts
        .iter()
        .find(|m| m.destination == "/sys")
        .unwrap();
    assert!(sys.options.contains(&"rw".into()));
    let caps = process(&spec).capabilities.clone().unwrap();
    assert_eq!(caps.bounding, security::current_capabilities());
}

#[test]
fn masked_and_readonly_paths_from_config_or_defaults() {
    let fx = fixture();
    let spec = fx.ok(&mount_cfg(vec![]));
    assert!(linux(&spec).masked_paths.contains(&"/proc/kcore".into()));
    assert!(linux(&spec).readonly_paths.contains(&"/proc/sys".into()));
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        masked_paths: s(&["/proc/a"]),
        readonly_paths: s(&["/proc/b"]),
        ..Default::default()
    });
    c.command = s(&["x"]);
    let spec = fx.ok(&c);
    assert_eq!(linux(&spec).masked_paths, s(&["/proc/a"]));
    assert_eq!(linux(&spec).readonly_paths, s(&["/proc/b"]));
}

#[test]
fn devices_must_be_device_nodes() {
    let fx = fixture();
    let dev = |host: &str, perms: &str| cri::ContainerConfig {
        command: s(&["x"]),
        devices: vec![cri::Device {
            host_path: host.into(),
            container_path: "/dev/mine".into(),
            permissions: perms.into(),
        }],
        ..Default::default()
    };
    let spec = fx.ok(&dev("/dev/null", "rw"));
    let l = linux(&spec);
    let d = l.devices.iter().find(|d| d.path == "/dev/mine").unwrap();
    assert_eq!((d.kind.as_str(), d.major, d.minor), ("c", 1, 3));
    let rules = &l.resources.as_ref().unwrap().devices;
    assert!(!rules[0].allow, "deny by default first");
    assert!(rules.iter().any(|r| r.allow
        && r.major == Some(1)
        && r.minor == Some(3)
        && r.access.as_deref() == Some("rw")));
    fx.invalid(&dev("/etc/passwd", ""), "/etc/passwd");
    fx.invalid(&dev("/dev/null", "rwx"), "permissions");
}

#[test]
fn namespaces_by_mode() {
    use cri::NamespaceMode as M;
    let mut fx = fixture();
    fx.sandbox.netns = Some("/run/skiff/ns/net-pod1".into());
    fx.sandbox.utsns = Some("/run/skiff/ns/uts-pod1".into());
    fx.sandbox.pidns = Some("/run/skiff/ns/pid-pod1".into());
    let ns = |mode: M, target: &str| {
        let mut c = with_sc(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.command = s(&["x"]);
        fx.build(&c).map(|s| linux(&s).namespaces.clone())
    };
    let pod = ns(M::Pod, "").unwrap();
    let find = |v: &[skiff_runtime::spec::Namespace], k| v.iter().find(|n| n.kind == k).cloned();
    assert_eq!(
        find(&pod, NamespaceKind::Network).unwrap().path.as_deref(),
        Some("/run/skiff/ns/net-pod1")
    );
    assert!(find(&pod, NamespaceKind::Ipc).is_none(), "host IPC: none");
    assert!(find(&pod, NamespaceKind::Mount).unwrap().path.is_none());
    assert_eq!(
        find(&pod, NamespaceKind::Pid).unwrap().path.as_deref(),
        Some("/run/skiff/ns/pid-pod1")
    );
    let own = ns(M::Container, "").unwrap();
    assert!(find(&own, NamespaceKind::Pid).unwrap().path.is_none());
    assert!(find(&ns(M::Node, "").unwrap(), NamespaceKind::Pid).is_none());
    let e = ns(M::Target, "nosuch").unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("nosuch"), "{e}");
    assert_eq!(
        ns(M::Target, "../x").unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        find(&own, NamespaceKind::Cgroup).is_some(),
        namespaces::cgroup2_only()
    );
}

#[test]
fn cgroups_path_for_both_drivers() {
    use crate::config::CgroupDriver as D;
    for (driver, parent, want) in [
        (D::Cgroupfs, "/kubepods/podabc", "/kubepods/podabc/c1"),
        (D::Cgroupfs, "kubepods/podabc/", "/kubepods/podabc/c1"),
        (D::Cgroupfs, "", "/skiff/c1"),
        (
            D::Systemd,
            "kubepods-besteffort-podabc.slice",
            "kubepods-besteffort-podabc.slice:skiff:c1",
        ),
        (
            D::Systemd,
            "/kubepods.slice/kubepods-podabc.slice",
            "kubepods-podabc.slice:skiff:c1",
        ),
        (D::Systemd, "", "system.slice:skiff:c1"),
    ] {
        assert_eq!(
            driver.cgroups_path(parent, "c1"),
            want,
            "{driver:?} {parent}"
        );
    }
    let fx = fixture();
    let spec = fx.ok(&mount_cfg(vec![]));
    let want = fx
        .daemon
        .cgroup_driver
        .cgroups_path("/kubepods/podabc", "ctr1");
    assert_eq!(linux(&spec).cgroups_path.as_deref(), Some(want.as_str()));
}

#[test]
fn resources_map_and_refuse_negatives() {
    let fx = fixture();
    let mut c = mount_cfg(vec![]);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "1000000".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = fx.ok(&c);
    let r = linux(&spec).resources.clone().unwrap();
    let cpu = r.cpu.unwrap();
    assert_eq!(
        (cpu.period, cpu.quota, cpu.shares),
        (Some(100000), Some(50000), Some(512))
    );
    assert_eq!(cpu.cpus.as_deref(), Some("0"));
    assert_eq!(r.memory.unwrap().limit, Some(64 << 20));
    assert_eq!(r.hugepage_limits[0].page_size, "2MB");
    assert_eq!(r.unified["memory.high"], "1000000");
    for (field, f) in [
        (
            "memory_limit_in_bytes",
            &(|r: &mut cri::LinuxContainerResources| r.memory_limit_in_bytes = -5)
                as &dyn Fn(&mut cri::LinuxContainerResources),
        ),
        ("cpu_shares", &|r| r.cpu_shares = -1),
        ("cpu_quota", &|r| r.cpu_quota = -7),
        ("page_size", &|r| {
            r.hugepage_limits = vec![cri::HugepageLimit {
                page_size: "huge".into(),
                limit: 1,
            }]
        }),
    ] {
        let mut res = cri::LinuxContainerResources::default();
        f(&mut res);
        let e = resources::from_cri(Some(&res)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{e}");
    }
}

#[test]
fn resource_updates_merge() {
    let mut base = resources::from_cri(Some(&cri::LinuxContainerResources {
        cpu_shares: 2,
        memory_limit_in_bytes: 100,
        ..Default::default()
    }))
    .unwrap();
    let new = resources::from_cri(Some(&cri::LinuxContainerResources {
        memory_limit_in_bytes: 200,
        ..Default::default()
    }))
    .unwrap();
    base.merge(new);
    assert_eq!(base.memory.unwrap().limit, Some(200));
    assert_eq!(base.cpu.unwrap().shares, Some(2));
}

#[test]
fn annotations_and_sysctls() {
    let mut fx = fixture();
    fx.sandbox.config.linux = Some(cri::LinuxPodSandboxConfig {
        sysctls: [
            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
            ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    let mut c = mount_cfg(vec![]);
    c.metadata = Some(cri::ContainerMetadata {
        name: "app".into(),
        attempt: 0,
    });
    c.annotations = [("mine".to_string(), "yes".to_string())].into();
    c.image = Some(cri::ImageSpec {
        image: "busybox".into(),
        ..Default::default()
    });
    let spec = fx.ok(&c);
    let a = &spec.annotations;
    assert_eq!(a["mine"], "yes");
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.container-name"], "app");
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "pod1");
    assert_eq!(a["io.kubernetes.cri.sandbox-name"], "web");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(a["io.kubernetes.cri.sandbox-uid"], "u-1");
    assert_eq!(a["io.kubernetes.cri.image-name"], "busybox");
    // Host network and IPC: the pod's sysctls are not the container's to set.
    assert!(linux(&spec).sysctl.is_empty());
    fx.sandbox.netns = Some("/run/n".into());
    let spec = fx.ok(&c);
    assert_eq!(linux(&spec).sysctl.len(), 1);
    assert_eq!(linux(&spec).sysctl["net.ipv4.ip_forward"], "1");
    fx.sandbox.ipcns = Some("/run/i".into());
    assert_eq!(linux(&fx.ok(&c)).sysctl.len(), 2);
}

#[test]
fn built_specs_pass_the_runtime_validation() {
    let fx = fixture();
    let host = fx.dir.join("data");
    std::fs::create_dir(&host).unwrap();
    let mut c = with_sc(cri::LinuxContainerSecurityContext {
        seccomp: profile(cri::security_profile::ProfileType::RuntimeDefault, ""),
        run_as_user: Some(cri::Int64Value { value: 1000 }),
        ..Default::default()
    });
    c.command = s(&["x"]);
    c.mounts = vec![bind(&host, "/data")];
    let spec = fx.ok(&c);
    skiff_runtime::spec::validate(&spec).unwrap();
}
