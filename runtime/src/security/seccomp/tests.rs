use super::bpf::{self, simulate, AUDIT_ARCH_I386, AUDIT_ARCH_X86_64};
use super::*;
use crate::spec::{SeccompArg, SeccompSyscall};

fn profile(v: serde_json::Value) -> Seccomp {
    serde_json::from_value(v).expect("test profile")
}

fn run(f: &Filter, nr: u32, args: [u64; 6]) -> u32 {
    simulate(&f.insns, nr, AUDIT_ARCH_X86_64, args).expect("program returns")
}

fn nr(name: &str) -> u32 {
    bpf::Arch::X86_64.number(name).expect("syscall")
}

#[test]
fn tables_are_sorted() {
    for t in [syscalls::X86_64, syscalls::I386, syscalls::X32] {
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
    }
    assert_eq!(nr("mkdir"), libc::SYS_mkdir as u32);
    assert_eq!(nr("unshare"), libc::SYS_unshare as u32);
    assert_eq!(nr("openat2"), libc::SYS_openat2 as u32);
}

#[test]
fn errno_and_default() {
    let f = compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 123}]
    })))
    .unwrap();
    assert_eq!(run(&f, nr("mkdir"), [0; 6]), bpf::RET_ERRNO | 123);
    assert_eq!(run(&f, nr("getpid"), [0; 6]), bpf::RET_ALLOW);
    // An x32 call when the profile only names x86_64, and a foreign architecture, are bad-arch kills.
    assert_eq!(
        run(&f, nr("mkdir") | 0x4000_0000, [0; 6]),
        bpf::RET_KILL_PROCESS
    );
    assert_eq!(
        simulate(&f.insns, 39, AUDIT_ARCH_I386, [0; 6]),
        Some(bpf::RET_KILL_PROCESS)
    );
}

#[test]
fn architectures() {
    let f = compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    })))
    .unwrap();
    let eperm = bpf::RET_ERRNO | libc::EPERM as u32;
    assert_eq!(run(&f, 83, [0; 6]), eperm);
    assert_eq!(run(&f, 83 | 0x4000_0000, [0; 6]), eperm);
    assert_eq!(simulate(&f.insns, 39, AUDIT_ARCH_I386, [0; 6]), Some(eperm));
    assert_eq!(
        simulate(&f.insns, 83, AUDIT_ARCH_I386, [0; 6]),
        Some(bpf::RET_ALLOW)
    );
}

fn arg_rule(op: &str, value: u64, two: Option<u64>) -> Filter {
    let s = Seccomp {
        default_action: "SCMP_ACT_ALLOW".into(),
        syscalls: vec![SeccompSyscall {
            names: vec!["write".into()],
            action: "SCMP_ACT_ERRNO".into(),
            errno_ret: Some(5),
            args: vec![SeccompArg {
                index: 2,
                value,
                value_two: two,
                op: op.into(),
            }],
        }],
        ..Seccomp::default()
    };
    compile(&s).unwrap()
}

fn matches(f: &Filter, arg: u64) -> bool {
    run(f, nr("write"), [0, 0, arg, 0, 0, 0]) == bpf::RET_ERRNO | 5
}

#[test]
fn every_comparison_op_on_64_bit_values() {
    let samples = [
        0u64,
        1,
        41,
        42,
        43,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_002a,
        0x2_0000_0000,
        u64::MAX,
    ];
    for v in samples {
        for (op, want) in [
            (
                "SCMP_CMP_EQ",
                &(|a: u64, v: u64| a == v) as &dyn Fn(u64, u64) -> bool,
            ),
            ("SCMP_CMP_NE", &|a, v| a != v),
            ("SCMP_CMP_LT", &|a, v| a < v),
            ("SCMP_CMP_LE", &|a, v| a <= v),
            ("SCMP_CMP_GT", &|a, v| a > v),
            ("SCMP_CMP_GE", &|a, v| a >= v),
        ] {
            let f = arg_rule(op, v, None);
            for a in samples {
                assert_eq!(matches(&f, a), want(a, v), "{op} arg={a:#x} value={v:#x}");
            }
        }
        let f = arg_rule(
            "SCMP_CMP_MASKED_EQ",
            0xff00_0000_00ff,
            Some(v & 0xff00_0000_00ff),
        );
        for a in samples {
            assert_eq!(matches(&f, a), a & 0xff00_0000_00ff == v & 0xff00_0000_00ff);
        }
    }
}

#[test]
fn several_args_and_same_arg_alternatives() {
    let f = compile(&profile(serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 7, "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 2, "value": 10, "op": "SCMP_CMP_GT"}]},
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 8, "args": [
                {"index": 0, "value": 3, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 4, "op": "SCMP_CMP_EQ"}]}
        ]
    })))
    .unwrap();
    let w = nr("write");
    assert_eq!(run(&f, w, [1, 0, 11, 0, 0, 0]), bpf::RET_ERRNO | 7);
    assert_eq!(run(&f, w, [1, 0, 10, 0, 0, 0]), bpf::RET_ALLOW);
    assert_eq!(run(&f, w, [2, 0, 11, 0, 0, 0]), bpf::RET_ALLOW);
    let r = nr("read");
    assert_eq!(run(&f, r, [3; 6]), bpf::RET_ERRNO | 8);
    assert_eq!(run(&f, r, [4; 6]), bpf::RET_ERRNO | 8);
    assert_eq!(run(&f, r, [5; 6]), bpf::RET_ALLOW);
}

#[test]
fn bad_input_is_named() {
    let bad = [
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_NOPE"}),
            "defaultAction",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
            "architectures",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}),
            "flags[0]",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}),
            "errnoRet",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "index",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_XX"}]}]}),
            "op",
        ),
        (
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}),
            "listenerPath",
        ),
    ];
    for (p, field) in bad {
        let e = compile(&profile(p.clone())).unwrap_err().to_string();
        assert!(e.contains(field), "{p}: {e}");
    }
}

#[test]
fn runtime_default_profile() {
    let p = default_profile().unwrap();
    let f = compile(&p).unwrap();
    let eperm = bpf::RET_ERRNO | libc::EPERM as u32;
    for blocked in [
        "unshare",
        "keyctl",
        "add_key",
        "mount",
        "setns",
        "bpf",
        "kexec_load",
    ] {
        assert_eq!(run(&f, nr(blocked), [0; 6]), eperm, "{blocked}");
    }
    for allowed in ["read", "execve", "mkdir", "exit_group", "wait4"] {
        assert_eq!(run(&f, nr(allowed), [0; 6]), bpf::RET_ALLOW, "{allowed}");
    }
    let clone = nr("clone");
    assert_eq!(run(&f, clone, [0x11, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
    let newuser = libc::CLONE_NEWUSER as u64;
    assert_eq!(run(&f, clone, [newuser, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(run(&f, nr("socket"), [2, 1, 0, 0, 0, 0]), bpf::RET_ALLOW);
    assert_eq!(run(&f, nr("socket"), [40, 1, 0, 0, 0, 0]), eperm);
    assert_eq!(run(&f, nr("clone3"), [0; 6]), bpf::RET_ERRNO | 38);
    assert!(f.insns.len() < bpf::MAX_INSNS);
    // Every name is a real syscall on one of the profile's architectures: no typos.
    for rule in &p.syscalls {
        for n in &rule.names {
            let known = [bpf::Arch::X86_64, bpf::Arch::I386, bpf::Arch::X32]
                .iter()
                .any(|a| a.number(n).is_some());
            assert!(known, "{n}");
        }
    }
}

#[test]
fn runtime_default_with_capabilities() {
    let plain = compile(&default_profile().unwrap()).unwrap();
    let caps = ["CAP_SYS_CHROOT".to_string(), "sys_admin".to_string()];
    let f = compile(&default_profile_for(&caps).unwrap()).unwrap();
    let eperm = bpf::RET_ERRNO | libc::EPERM as u32;
    let newns = libc::CLONE_NEWNS as u64;
    assert_eq!(run(&plain, nr("chroot"), [0; 6]), eperm);
    assert_eq!(run(&f, nr("chroot"), [0; 6]), bpf::RET_ALLOW);
    assert_eq!(run(&plain, nr("clone"), [newns, 0, 0, 0, 0, 0]), eperm);
    assert_eq!(run(&f, nr("clone"), [newns, 0, 0, 0, 0, 0]), bpf::RET_ALLOW);
    assert_eq!(run(&f, nr("mount"), [0; 6]), bpf::RET_ALLOW);
    assert_eq!(run(&f, nr("keyctl"), [0; 6]), eperm);
    let gated: std::collections::BTreeMap<String, Vec<String>> =
        serde_json::from_str(DEFAULT_PROFILE_CAPS_JSON).unwrap();
    for names in gated.values() {
        for n in names {
            assert!(
                bpf::Arch::X86_64.number(n).is_some() || bpf::Arch::I386.number(n).is_some(),
                "{n}"
            );
        }
    }
}

/// A small deterministic generator, so the property test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn random_profile(r: &mut Rng) -> serde_json::Value {
    let actions: Vec<&str> = KNOWN_ACTIONS
        .iter()
        .copied()
        .chain(["SCMP_ACT_BOGUS", ""])
        .collect();
    let ops: Vec<&str> = KNOWN_OPS.iter().copied().chain(["SCMP_CMP_X"]).collect();
    let names = [
        "read",
        "write",
        "mkdir",
        "clone",
        "nope",
        "socket",
        "",
        "open",
        "arch_prctl",
    ];
    let mut syscalls = Vec::new();
    for _ in 0..r.next() % 12 {
        let args: Vec<serde_json::Value> = (0..r.next() % 4)
            .map(|_| {
                serde_json::json!({"index": r.next() % 8, "value": r.next(), "valueTwo": r.next(), "op": r.pick(&ops)})
            })
            .collect();
        let mut sc = serde_json::json!({
            "names": [r.pick(&names), r.pick(&names)],
            "action": r.pick(&actions),
            "args": args,
        });
        if r.next() % 3 == 0 {
            sc["errnoRet"] = serde_json::json!(r.next() % 70000);
        }
        syscalls.push(sc);
    }
    let arches = [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
    ];
    serde_json::json!({
        "defaultAction": r.pick(&actions[..actions.len() - 2]),
        "architectures": [r.pick(&arches), r.pick(&arches)],
        "flags": if r.next() % 4 == 0 { vec!["SECCOMP_FILTER_FLAG_LOG"] } else { vec![] },
        "listenerPath": if r.next() % 2 == 0 { "/run/x.sock" } else { "" },
        "syscalls": syscalls,
    })
}

/// Property: any profile either compiles to a program whose every evaluation returns, or is refused
/// with an error; never a panic.
#[test]
fn property_compiler_never_panics_and_programs_terminate() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let p = profile(random_profile(&mut r));
        let Ok(f) = compile(&p) else { continue };
        for _ in 0..20 {
            let nr = (r.next() % 470) as u32 | if r.next() % 4 == 0 { 0x4000_0000 } else { 0 };
            let arch = if r.next() % 3 == 0 {
                AUDIT_ARCH_I386
            } else {
                AUDIT_ARCH_X86_64
            };
            let args = [r.next(), r.next(), r.next(), r.next(), r.next(), r.next()];
            assert!(simulate(&f.insns, nr, arch, args).is_some());
        }
    }
}

/// Property: arbitrary bytes fed to the config parser give an error or a spec, never a panic.
#[test]
fn property_config_parser_never_panics() {
    let mut r = Rng(42);
    let seed = serde_json::to_vec(&random_profile(&mut r)).unwrap();
    let dir = std::env::temp_dir().join(format!("skiff-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    for i in 0..2000 {
        let mut doc = if i % 2 == 0 {
            let p = random_profile(&mut r);
            serde_json::to_vec(&serde_json::json!({
                "ociVersion": "1.0.2", "root": {"path": "rootfs"},
                "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
                "linux": {"seccomp": p}
            }))
            .unwrap()
        } else {
            seed.clone()
        };
        for _ in 0..r.next() % 8 {
            let at = (r.next() as usize) % doc.len().max(1);
            if let Some(b) = doc.get_mut(at) {
                *b = r.next() as u8;
            }
        }
        std::fs::write(&path, &doc).unwrap();
        if let Ok(spec) = crate::spec::Spec::read(&path) {
            if let Some(s) = spec.linux().and_then(|l| l.seccomp.as_ref()) {
                let _ = compile(s);
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
