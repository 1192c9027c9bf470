//! cgroup v2 device rules: a `BPF_PROG_TYPE_CGROUP_DEVICE` program built from the rules and attached
//! to the container's cgroup.
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where
//! `access_type` is `access << 16 | type`. Rules are checked last to first, so that a later rule
//! overrides an earlier one; a request no rule matches is denied.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use skiff_sys::bpf::{call, call_fd, insn, Insn};

use super::Rule;
use crate::cgroups::CgroupError;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const ATTACH_CGROUP_DEVICE: u32 = 6;
const F_ALLOW_MULTI: u32 = 2;

const LDX_W: u8 = 0x61;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |a, c| {
        a | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// The checks of one rule; a jump with `off == i16::MIN` means "to the next rule" and is patched.
fn rule_block(r: &Rule) -> Vec<Insn> {
    const NEXT: i16 = i16::MIN;
    let mut b = Vec::new();
    match r.kind {
        'b' => b.push(insn(JNE_K, 2, 0, NEXT, DEV_BLOCK)),
        'c' => b.push(insn(JNE_K, 2, 0, NEXT, DEV_CHAR)),
        _ => {}
    }
    let acc = access_bits(&r.access);
    if acc != ACC_MKNOD | ACC_READ | ACC_WRITE {
        b.push(insn(MOV64_X, 1, 3, 0, 0));
        b.push(insn(AND64_K, 1, 0, 0, acc));
        if r.allow {
            // Allow only when every requested kind of access is in the rule.
            b.push(insn(JNE_X, 1, 3, NEXT, 0));
        } else {
            // Deny when any requested kind of access is.
            b.push(insn(JEQ_K, 1, 0, NEXT, 0));
        }
    }
    if let Some(m) = r.major {
        b.push(insn(JNE_K, 4, 0, NEXT, m as i32));
    }
    if let Some(m) = r.minor {
        b.push(insn(JNE_K, 5, 0, NEXT, m as i32));
    }
    b.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
    b.push(insn(EXIT, 0, 0, 0, 0));
    let len = b.len() as i16;
    for (i, ins) in b.iter_mut().enumerate() {
        if ins.off == NEXT {
            ins.off = len - (i as i16 + 1);
        }
    }
    b
}

/// The program for `rules`.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND64_K, 2, 0, 0, 0xffff),
        insn(RSH64_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let block = rule_block(r);
        // A rule matching everything ends the program: the verifier refuses unreachable code.
        let catch_all = block.len() == 2;
        p.extend(block);
        if catch_all {
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn load(prog: &[Insn]) -> std::io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut attr = [0u64; 16];
    // prog_type, insn_cnt | insns | license
    attr[0] = u64::from(PROG_TYPE_CGROUP_DEVICE) | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    call_fd(BPF_PROG_LOAD, &mut attr)
}

/// Ids of the device programs attached to `cg`.
fn attached(cg: &OwnedFd) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut attr = [0u64; 16];
    // target_fd, attach_type | query_flags, attach_flags | prog_ids | prog_cnt
    attr[0] = cg.as_raw_fd() as u64 | (u64::from(ATTACH_CGROUP_DEVICE) << 32);
    attr[2] = ids.as_mut_ptr() as u64;
    attr[3] = ids.len() as u64;
    call(BPF_PROG_QUERY, &mut attr)?;
    let n = (attr[3] & 0xffff_ffff) as usize;
    Ok(ids[..n.min(ids.len())].to_vec())
}

fn attach_cmd(cmd: libc::c_long, cg: &OwnedFd, prog: &OwnedFd, flags: u32) -> std::io::Result<()> {
    let mut attr = [0u64; 16];
    // target_fd, attach_bpf_fd | attach_type, attach_flags
    attr[0] = cg.as_raw_fd() as u64 | ((prog.as_raw_fd() as u64) << 32);
    attr[1] = u64::from(ATTACH_CGROUP_DEVICE) | (u64::from(flags) << 32);
    call(cmd, &mut attr).map(|_| ())
}

fn prog_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    attr[0] = u64::from(id);
    call_fd(BPF_PROG_GET_FD_BY_ID, &mut attr)
}

/// Loads the program for `rules` and attaches it to the cgroup at `dir`, replacing programs attached
/// earlier (by a previous `apply` or `update`): the new one goes on first, so there is no gap.
pub fn apply(dir: &Path, rules: &[Rule]) -> Result<(), CgroupError> {
    if rules.is_empty() {
        return Ok(());
    }
    let err = |what: &str| {
        let path = dir.to_owned();
        let what = what.to_owned();
        move |e: std::io::Error| CgroupError::Bpf {
            path,
            what,
            source: e,
        }
    };
    let cg = std::fs::File::open(dir).map_err(err("open cgroup"))?;
    let cg = OwnedFd::from(cg);
    let old = attached(&cg).unwrap_or_default();
    let prog = load(&program(rules)).map_err(err("load device program"))?;
    attach_cmd(BPF_PROG_ATTACH, &cg, &prog, F_ALLOW_MULTI).map_err(err("attach device program"))?;
    for id in old {
        if let Ok(p) = prog_by_id(id) {
            attach_cmd(BPF_PROG_DETACH, &cg, &p, 0).map_err(err("detach old device program"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_land_on_next_rule() {
        let r = Rule {
            allow: true,
            kind: 'c',
            major: Some(1),
            minor: Some(3),
            access: "rw".into(),
        };
        let b = rule_block(&r);
        // type, mov, and, jne, major, minor, mov r0, exit
        assert_eq!(b.len(), 8);
        for (i, ins) in b.iter().enumerate() {
            if matches!(ins.code, JNE_K | JEQ_K | JNE_X) {
                assert_eq!(i as i16 + 1 + ins.off, b.len() as i16);
            }
        }
        let p = program(&[r]);
        assert_eq!(p.len(), 6 + 8 + 2);
        assert_eq!(p.last().unwrap().code, EXIT);
    }
}
