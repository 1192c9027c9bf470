//! The bpf() syscall and the instruction it loads, for the runtime's cgroup device programs and the
//! pod network's fast path.

use std::os::fd::{FromRawFd, OwnedFd};

/// One eBPF instruction, laid out as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// The source register in the high nibble, the destination in the low one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// bpf(`cmd`, `attr`): `attr` is a zero-padded `union bpf_attr`, larger than every variant the
/// callers use.
pub fn call(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
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

/// A command that returns a new descriptor (a loaded program, a program by id).
pub fn call_fd(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<OwnedFd> {
    let fd = call(cmd, attr)?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
