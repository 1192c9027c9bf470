//! Just enough eBPF for the redirect path's tc programs: instructions assembled by hand, loaded
//! and attached to a device's tcx ingress with the bpf() syscall, so that the bench needs neither
//! a compiler for BPF nor libbpf.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const PROG_TYPE_SCHED_CLS: u32 = 3;
/// Since Linux 6.6: older bpf.h headers lack it.
const TCX_INGRESS: u32 = 46;

/// Registers: r0 the return value, r1-r5 arguments (clobbered by calls), r6-r9 kept across calls,
/// r10 the frame pointer (read only).
pub const R0: u8 = 0;
pub const R1: u8 = 1;
pub const R2: u8 = 2;
pub const R3: u8 = 3;
pub const R4: u8 = 4;
pub const R5: u8 = 5;
pub const R6: u8 = 6;
pub const R7: u8 = 7;
pub const R8: u8 = 8;
pub const FP: u8 = 10;

/// One eBPF instruction, laid out as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_B: u8 = 0x71;
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const ST_B: u8 = 0x72;
const ST_W: u8 = 0x62;
const ST_DW: u8 = 0x7a;
const MOV64_X: u8 = 0xbf;
const MOV64_K: u8 = 0xb7;
const ADD64_K: u8 = 0x07;
const AND32_K: u8 = 0x54;
const AND64_K: u8 = 0x57;
const JA: u8 = 0x05;
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JSET_K: u8 = 0x45;
/// The 32-bit form: compares the low halves, so that an address (a u32 in network order) can be
/// tested against an immediate without sign extension getting in the way.
const JNE32_K: u8 = 0x56;
const CALL: u8 = 0x85;
/// A call's source register when its immediate is a kernel function's BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;
const EXIT: u8 = 0x95;

/// A place in the program that jumps can name before it is known.
#[derive(Clone, Copy)]
pub struct Label(usize);

/// A program being written: instructions, and jumps whose offsets are filled in by `finish`.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: Vec<Option<usize>>,
    jumps: Vec<(usize, Label)>,
}

impl Asm {
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn push(&mut self, i: Insn) -> &mut Self {
        self.insns.push(i);
        self
    }

    pub fn mov_reg(&mut self, dst: u8, src: u8) -> &mut Self {
        self.push(insn(MOV64_X, dst, src, 0, 0))
    }

    pub fn mov_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(MOV64_K, dst, 0, 0, imm))
    }

    pub fn add_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(ADD64_K, dst, 0, 0, imm))
    }

    pub fn and32_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(AND32_K, dst, 0, 0, imm))
    }

    pub fn and_imm(&mut self, dst: u8, imm: i32) -> &mut Self {
        self.push(insn(AND64_K, dst, 0, 0, imm))
    }

    /// `dst = *(u8 *)(src + off)`
    pub fn load_b(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(LDX_B, dst, src, off, 0))
    }

    /// `dst = *(u64 *)(src + off)`
    pub fn load_dw(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(LDX_DW, dst, src, off, 0))
    }

    /// `dst = *(u32 *)(src + off)`
    pub fn load_w(&mut self, dst: u8, src: u8, off: i16) -> &mut Self {
        self.push(insn(LDX_W, dst, src, off, 0))
    }

    /// `*(u32 *)(dst + off) = src`
    pub fn store_w(&mut self, dst: u8, off: i16, src: u8) -> &mut Self {
        self.push(insn(STX_W, dst, src, off, 0))
    }

    pub fn store_imm_b(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(insn(ST_B, dst, 0, off, imm))
    }

    pub fn store_imm_w(&mut self, dst: u8, off: i16, imm: i32) -> &mut Self {
        self.push(insn(ST_W, dst, 0, off, imm))
    }

    /// Zeroes `len` bytes (a multiple of 8) of the stack from `fp + off`: the verifier lets a
    /// helper read only stack it has seen written.
    pub fn zero_stack(&mut self, off: i16, len: i16) -> &mut Self {
        for at in (off..off + len).step_by(8) {
            self.push(insn(ST_DW, FP, 0, at, 0));
        }
        self
    }

    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(insn(CALL, 0, 0, 0, helper))
    }

    /// A kernel function (a kfunc) by its id in the kernel's BTF.
    pub fn call_kfunc(&mut self, btf_id: i32) -> &mut Self {
        self.push(insn(CALL, 0, PSEUDO_KFUNC_CALL, 0, btf_id))
    }

    pub fn exit(&mut self) -> &mut Self {
        self.push(insn(EXIT, 0, 0, 0, 0))
    }

    /// To `to` when the 64-bit `dst` is not `imm`.
    pub fn jne(&mut self, dst: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(JNE_K, dst, 0, 0, imm))
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(code, dst, 0, 0, imm))
    }

    pub fn ja(&mut self, to: Label) -> &mut Self {
        self.jump(JA, 0, 0, to)
    }

    /// To `to` when the 64-bit `dst` is `imm`.
    pub fn jeq(&mut self, dst: u8, imm: i32, to: Label) -> &mut Self {
        self.jump(JEQ_K, dst, imm, to)
    }

    /// To `to` when `dst & imm` is not zero.
    pub fn jset(&mut self, dst: u8, imm: i32, to: Label) -> &mut Self {
        self.jump(JSET_K, dst, imm, to)
    }

    /// To `to` when the low 32 bits of `dst` are not `imm`.
    pub fn jne32(&mut self, dst: u8, imm: i32, to: Label) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.push(insn(JNE32_K, dst, 0, 0, imm))
    }

    pub fn finish(mut self) -> Vec<Insn> {
        for &(at, l) in &self.jumps {
            let to = self.labels[l.0].expect("a jump to a label never bound");
            self.insns[at].off =
                i16::try_from(to as isize - at as isize - 1).expect("a jump within an i16");
        }
        self.insns
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded buffer larger than every bpf_attr variant used here, and lives
    // across the call; the kernel reads and writes within its size argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `prog` as a tc (sched_cls) program called `name` (at most 15 bytes); on failure the
/// error carries the verifier's log.
pub fn load_sched_cls(name: &str, prog: &[Insn]) -> Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 1 << 20];
    let mut attr = [0u64; 16];
    // prog_type, insn_cnt | insns | license | log_level, log_size | log_buf | ... | prog_name
    attr[0] = u64::from(PROG_TYPE_SCHED_CLS) | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | ((log.len() as u64) << 32);
    attr[4] = log.as_mut_ptr() as u64;
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    attr[6] = u64::from_ne_bytes(prog_name[..8].try_into()?);
    attr[7] = u64::from_ne_bytes(prog_name[8..].try_into()?);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!(
                "load BPF program {name}: {e}\n{}",
                String::from_utf8_lossy(&log[..end]).trim_end()
            )
        }
    }
}

/// Attaches `prog` to the tcx ingress of the device `ifindex` in this thread's network namespace.
/// Not a link: the attachment holds the program until the device goes, so `prog` can be closed.
pub fn attach_tcx_ingress(prog: &OwnedFd, ifindex: u32) -> Result<()> {
    let mut attr = [0u64; 16];
    // target_ifindex, attach_bpf_fd | attach_type, attach_flags
    attr[0] = u64::from(ifindex) | ((prog.as_raw_fd() as u64) << 32);
    attr[1] = u64::from(TCX_INGRESS);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("attach BPF program to tcx ingress of {ifindex}: {e}"))
}
