//! Compiles an OCI `linux.seccomp` object into a classic BPF program for `seccomp(2)`.
//!
//! Layout: dispatch on `seccomp_data.arch` to one section per audit architecture; bad architectures
//! are killed. The x86_64 section splits again on `__X32_SYSCALL_BIT` into the native and x32 rules. A
//! section is a list of self-contained blocks, one per rule, tried in profile order; each block checks
//! the syscall number, then its argument conditions, and returns the rule's action. A block that looks at
//! arguments reloads the syscall number on its way out, so that the next block finds it in A again.
//! Conditional jumps only ever stay inside a block (their offsets are 8-bit); the long jumps of the
//! dispatch use `ja`.

use super::syscalls;
use super::SeccompError;
use crate::spec::{Seccomp, SeccompArg};

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on the length of a filter.
pub const MAX_INSNS: usize = 4096;

pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const RET_KILL_THREAD: u32 = 0;
pub const RET_TRAP: u32 = 0x0003_0000;
pub const RET_ERRNO: u32 = 0x0005_0000;
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
pub const RET_TRACE: u32 = 0x7ff0_0000;
pub const RET_LOG: u32 = 0x7ffc_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;

// Offsets into struct seccomp_data.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// Classic BPF opcodes.
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The syscall tables of one architecture the profile names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    X32,
    I386,
}

impl Arch {
    fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => syscalls::X86_64,
            Arch::X32 => syscalls::X32,
            Arch::I386 => syscalls::I386,
        }
    }

    /// The number the kernel puts in `seccomp_data.nr` for this syscall on this architecture.
    pub fn number(self, name: &str) -> Option<u32> {
        let t = self.table();
        let i = t.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
        let nr = t[i].1;
        Some(if self == Arch::X32 {
            nr | X32_SYSCALL_BIT
        } else {
            nr
        })
    }

    fn wide_args(self) -> bool {
        self != Arch::I386
    }
}

/// Architectures by their OCI names; `Ok(None)` for ones this host can never run, which are accepted
/// and ignored.
pub fn parse_arch(name: &str) -> Result<Option<Arch>, SeccompError> {
    Ok(match name {
        "SCMP_ARCH_X86_64" => Some(Arch::X86_64),
        "SCMP_ARCH_X32" => Some(Arch::X32),
        "SCMP_ARCH_X86" => Some(Arch::I386),
        "SCMP_ARCH_ARM"
        | "SCMP_ARCH_AARCH64"
        | "SCMP_ARCH_MIPS"
        | "SCMP_ARCH_MIPS64"
        | "SCMP_ARCH_MIPS64N32"
        | "SCMP_ARCH_MIPSEL"
        | "SCMP_ARCH_MIPSEL64"
        | "SCMP_ARCH_MIPSEL64N32"
        | "SCMP_ARCH_PPC"
        | "SCMP_ARCH_PPC64"
        | "SCMP_ARCH_PPC64LE"
        | "SCMP_ARCH_S390"
        | "SCMP_ARCH_S390X"
        | "SCMP_ARCH_PARISC"
        | "SCMP_ARCH_PARISC64"
        | "SCMP_ARCH_RISCV64"
        | "SCMP_ARCH_LOONGARCH64"
        | "SCMP_ARCH_M68K"
        | "SCMP_ARCH_SH"
        | "SCMP_ARCH_SHEB" => None,
        _ => {
            return Err(SeccompError::Invalid {
                field: "linux.seccomp.architectures".into(),
                value: name.into(),
            })
        }
    })
}

/// The `SECCOMP_RET_*` value of an OCI action.
pub fn action(
    name: &str,
    errno_ret: Option<u32>,
    field: &str,
) -> Result<(u32, bool), SeccompError> {
    let data = |e: Option<u32>| -> Result<u32, SeccompError> {
        let e = e.unwrap_or(libc::EPERM as u32);
        if e > 0xffff {
            return Err(SeccompError::Invalid {
                field: format!("{field} errnoRet"),
                value: e.to_string(),
            });
        }
        Ok(e)
    };
    let takes_errno = matches!(name, "SCMP_ACT_ERRNO" | "SCMP_ACT_TRACE");
    if errno_ret.is_some() && !takes_errno {
        return Err(SeccompError::Invalid {
            field: format!("{field} errnoRet (only for SCMP_ACT_ERRNO and SCMP_ACT_TRACE)"),
            value: name.into(),
        });
    }
    let ret = match name {
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => RET_TRAP,
        "SCMP_ACT_ERRNO" => RET_ERRNO | data(errno_ret)?,
        "SCMP_ACT_TRACE" => RET_TRACE | data(errno_ret)?,
        "SCMP_ACT_ALLOW" => RET_ALLOW,
        "SCMP_ACT_LOG" => RET_LOG,
        "SCMP_ACT_NOTIFY" => RET_USER_NOTIF,
        _ => {
            return Err(SeccompError::Invalid {
                field: field.into(),
                value: name.into(),
            })
        }
    };
    Ok((ret, name == "SCMP_ACT_NOTIFY"))
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

fn parse_op(a: &SeccompArg, field: &str) -> Result<Op, SeccompError> {
    Ok(match a.op.as_str() {
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => {
            return Err(SeccompError::Invalid {
                field: format!("{field}.op"),
                value: other.into(),
            })
        }
    })
}

/// A validated argument condition.
#[derive(Debug, Clone, Copy)]
struct Cond {
    index: u32,
    op: Op,
    value: u64,
    value_two: u64,
}

/// A validated rule: syscall names, its return value and its conditions (all must hold).
#[derive(Debug, Clone)]
struct Rule {
    names: Vec<String>,
    ret: u32,
    conds: Vec<Cond>,
}

/// A profile checked and ready to be emitted for the architectures it names.
#[derive(Debug, Clone)]
pub struct Plan {
    default_ret: u32,
    arches: Vec<Arch>,
    rules: Vec<Rule>,
    pub uses_notify: bool,
}

/// Checks every field of the profile, without looking at the running kernel.
pub fn plan(s: &Seccomp) -> Result<Plan, SeccompError> {
    let (default_ret, default_notify) = action(
        &s.default_action,
        s.default_errno_ret,
        "linux.seccomp.defaultAction",
    )?;
    if default_notify {
        return Err(SeccompError::Invalid {
            field: "linux.seccomp.defaultAction (notify is only for listed syscalls)".into(),
            value: s.default_action.clone(),
        });
    }
    let mut arches = Vec::new();
    for a in &s.architectures {
        if let Some(a) = parse_arch(a)? {
            if !arches.contains(&a) {
                arches.push(a);
            }
        }
    }
    if s.architectures.is_empty() {
        arches.push(Arch::X86_64);
    }
    let mut rules = Vec::new();
    let mut uses_notify = false;
    for (i, sc) in s.syscalls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let (ret, notify) = action(&sc.action, sc.errno_ret, &format!("{field}.action"))?;
        uses_notify |= notify;
        let mut conds = Vec::new();
        for (j, a) in sc.args.iter().enumerate() {
            let f = format!("{field}.args[{j}]");
            let op = parse_op(a, &f)?;
            if a.index > 5 {
                return Err(SeccompError::Invalid {
                    field: format!("{f}.index (0 to 5)"),
                    value: a.index.to_string(),
                });
            }
            conds.push(Cond {
                index: a.index,
                op,
                value: a.value,
                value_two: a.value_two.unwrap_or(0),
            });
        }
        // A rule that would return what the default returns anyway adds nothing.
        if ret == default_ret {
            continue;
        }
        split_rule(&sc.names, ret, conds, &mut rules);
    }
    Ok(Plan {
        default_ret,
        arches,
        rules,
        uses_notify,
    })
}

/// Conditions on distinct arguments must all hold. Several on the same argument are alternatives, one
/// rule each: that is how OCI profiles in the wild are written (and how runc reads them).
fn split_rule(names: &[String], ret: u32, conds: Vec<Cond>, out: &mut Vec<Rule>) {
    let repeated = conds
        .iter()
        .enumerate()
        .any(|(i, c)| conds[..i].iter().any(|d| d.index == c.index));
    if repeated {
        for c in conds {
            out.push(Rule {
                names: names.to_vec(),
                ret,
                conds: vec![c],
            });
        }
    } else {
        out.push(Rule {
            names: names.to_vec(),
            ret,
            conds,
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Tgt {
    Next,
    /// The end of the current condition: it holds.
    Pass,
    /// The block's exit: the rule does not apply.
    Fail,
}

#[derive(Debug, Clone, Copy)]
struct SymInsn {
    code: u16,
    k: u32,
    jt: Tgt,
    jf: Tgt,
}

fn stmt(code: u16, k: u32) -> SymInsn {
    SymInsn {
        code,
        k,
        jt: Tgt::Next,
        jf: Tgt::Next,
    }
}

fn jump(code: u16, k: u32, jt: Tgt, jf: Tgt) -> SymInsn {
    SymInsn { code, k, jt, jf }
}

fn ins(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The instructions of one condition; leaves A clobbered.
fn cond_insns(c: &Cond, wide: bool) -> Vec<SymInsn> {
    use Tgt::{Fail, Next, Pass};
    let lo_off = OFF_ARGS + 8 * c.index;
    let hi_off = lo_off + 4;
    let (v, mask) = match c.op {
        Op::MaskedEq => (c.value_two, c.value),
        _ => (c.value, u64::MAX),
    };
    let (vhi, vlo) = ((v >> 32) as u32, v as u32);
    let (mhi, mlo) = ((mask >> 32) as u32, mask as u32);
    let mut out = Vec::new();
    // On a 32-bit architecture only the low word of an argument exists.
    if wide {
        out.push(stmt(LD_W_ABS, hi_off));
        match c.op {
            Op::Eq => out.push(jump(JMP_JEQ_K, vhi, Next, Fail)),
            Op::MaskedEq => {
                out.push(stmt(ALU_AND_K, mhi));
                out.push(jump(JMP_JEQ_K, vhi, Next, Fail));
            }
            Op::Ne => out.push(jump(JMP_JEQ_K, vhi, Next, Pass)),
            Op::Gt | Op::Ge => {
                out.push(jump(JMP_JGT_K, vhi, Pass, Next));
                out.push(jump(JMP_JEQ_K, vhi, Next, Fail));
            }
            Op::Lt | Op::Le => {
                out.push(jump(JMP_JGT_K, vhi, Fail, Next));
                out.push(jump(JMP_JEQ_K, vhi, Next, Pass));
            }
        }
    } else if vhi != 0 && !matches!(c.op, Op::MaskedEq) {
        // The value does not fit the argument: decide statically.
        if !matches!(c.op, Op::Ne | Op::Lt | Op::Le) {
            out.push(jump(JMP_JEQ_K, 0, Fail, Fail));
        }
        return out;
    }
    out.push(stmt(LD_W_ABS, lo_off));
    match c.op {
        Op::Eq => out.push(jump(JMP_JEQ_K, vlo, Next, Fail)),
        Op::MaskedEq => {
            out.push(stmt(ALU_AND_K, mlo));
            out.push(jump(JMP_JEQ_K, vlo, Next, Fail));
        }
        Op::Ne => out.push(jump(JMP_JEQ_K, vlo, Fail, Next)),
        Op::Gt => out.push(jump(JMP_JGT_K, vlo, Next, Fail)),
        Op::Ge => out.push(jump(JMP_JGE_K, vlo, Next, Fail)),
        Op::Lt => out.push(jump(JMP_JGE_K, vlo, Fail, Next)),
        Op::Le => out.push(jump(JMP_JGT_K, vlo, Fail, Next)),
    }
    out
}

/// One rule for one syscall number: `jeq nr; conditions...; ret; [ld nr]`.
fn block(nr: u32, rule: &Rule, wide: bool) -> Result<Vec<Insn>, SeccompError> {
    if rule.conds.is_empty() {
        return Ok(vec![
            Insn {
                code: JMP_JEQ_K,
                jt: 0,
                jf: 1,
                k: nr,
            },
            ins(RET_K, rule.ret),
        ]);
    }
    // Positions: conditions start at 1; `ret` follows them; the reload is the fail target.
    let conds: Vec<Vec<SymInsn>> = rule.conds.iter().map(|c| cond_insns(c, wide)).collect();
    let body_len: usize = conds.iter().map(Vec::len).sum();
    let reload = 1 + body_len + 1;
    let mut out = vec![Insn {
        code: JMP_JEQ_K,
        jt: 0,
        jf: offset(0, reload + 1)?,
        k: nr,
    }];
    let mut pos = 1;
    for c in &conds {
        let end = pos + c.len();
        for s in c {
            let resolve = |t: Tgt| match t {
                Tgt::Next => offset(pos, pos + 1),
                Tgt::Pass => offset(pos, end),
                Tgt::Fail => offset(pos, reload),
            };
            let (jt, jf) = (resolve(s.jt)?, resolve(s.jf)?);
            out.push(Insn {
                code: s.code,
                jt,
                jf,
                k: s.k,
            });
            pos += 1;
        }
    }
    out.push(ins(RET_K, rule.ret));
    out.push(ins(LD_W_ABS, OFF_NR));
    Ok(out)
}

/// The 8-bit offset of a jump at `from` to `to` (relative to the next instruction).
fn offset(from: usize, to: usize) -> Result<u8, SeccompError> {
    u8::try_from(to - from - 1).map_err(|_| SeccompError::TooLarge(to - from))
}

/// The rules of one architecture, ending in the default action. Expects A = nr.
fn section(plan: &Plan, arch: Arch) -> Result<Vec<Insn>, SeccompError> {
    let mut out = Vec::new();
    for rule in &plan.rules {
        for name in &rule.names {
            match arch.number(name) {
                Some(nr) => out.extend(block(nr, rule, arch.wide_args())?),
                None => tracing::debug!("seccomp: {name} does not exist on {arch:?}; skipped"),
            }
        }
    }
    out.push(ins(RET_K, plan.default_ret));
    Ok(out)
}

/// Emits the whole program.
pub fn emit(plan: &Plan) -> Result<Vec<Insn>, SeccompError> {
    let has = |a| plan.arches.contains(&a);
    let bad_arch = vec![ins(RET_K, RET_KILL_PROCESS)];
    let x86_64_part = if has(Arch::X86_64) || has(Arch::X32) {
        let native = if has(Arch::X86_64) {
            section(plan, Arch::X86_64)?
        } else {
            bad_arch.clone()
        };
        let x32 = if has(Arch::X32) {
            section(plan, Arch::X32)?
        } else {
            bad_arch.clone()
        };
        // ld nr; jge X32_BIT ? (ja x32) : (ja native, which follows)
        let mut s = vec![
            ins(LD_W_ABS, OFF_NR),
            Insn {
                code: JMP_JGE_K,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            ins(JMP_JA, native.len() as u32 + 1),
            ins(JMP_JA, 0),
        ];
        s.extend(native);
        s.extend(x32);
        Some(s)
    } else {
        None
    };
    let i386_part = if has(Arch::I386) {
        let mut s = vec![ins(LD_W_ABS, OFF_NR)];
        s.extend(section(plan, Arch::I386)?);
        Some(s)
    } else {
        None
    };
    let parts: Vec<(u32, Vec<Insn>)> = [
        (AUDIT_ARCH_X86_64, x86_64_part),
        (AUDIT_ARCH_I386, i386_part),
    ]
    .into_iter()
    .filter_map(|(a, p)| Some((a, p?)))
    .collect();
    // Dispatch: ld arch; per part: jeq arch,0,1; ja part; then ret bad-arch.
    let dispatch_len = 1 + 2 * parts.len() + 1;
    let mut out = vec![ins(LD_W_ABS, OFF_ARCH)];
    let mut start = dispatch_len;
    for (i, (arch, p)) in parts.iter().enumerate() {
        let ja_pos = 1 + 2 * i + 1;
        out.push(Insn {
            code: JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: *arch,
        });
        out.push(ins(JMP_JA, (start - ja_pos - 1) as u32));
        start += p.len();
    }
    out.push(ins(RET_K, RET_KILL_PROCESS));
    for (_, p) in parts {
        out.extend(p);
    }
    if out.len() > MAX_INSNS {
        return Err(SeccompError::TooLarge(out.len()));
    }
    Ok(out)
}

/// Runs a program over one `seccomp_data` the way the kernel would: for tests, and to check that
/// every path of an emitted program ends in a return.
pub fn simulate(prog: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> Option<u32> {
    let word = |off: u32| -> Option<u32> {
        Some(match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            8 | 12 => 0,
            o if (OFF_ARGS..OFF_ARGS + 48).contains(&o) => {
                let i = ((o - OFF_ARGS) / 8) as usize;
                let a = args[i];
                if (o - OFF_ARGS) % 8 == 0 {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => return None,
        })
    };
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let i = prog.get(pc)?;
        pc += 1;
        match i.code {
            LD_W_ABS => acc = word(i.k)?,
            ALU_AND_K => acc &= i.k,
            RET_K => return Some(i.k),
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                let t = match i.code {
                    JMP_JEQ_K => acc == i.k,
                    JMP_JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += if t { i.jt } else { i.jf } as usize;
            }
            _ => return None,
        }
    }
}
