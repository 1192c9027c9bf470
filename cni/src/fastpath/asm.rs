//! Just enough of an eBPF assembler for the fast path's programs: instructions written by hand,
//! jumps to labels resolved at the end, so that skiff needs neither a compiler for BPF nor libbpf.

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

use skiff_sys::bpf::insn;
pub use skiff_sys::bpf::Insn;

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
