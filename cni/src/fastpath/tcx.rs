//! Loading the fast path's programs and keeping them on a device's tcx ingress, with the bpf()
//! syscall. Attachments are not links: one stays until it is detached or its device goes, so the
//! process that made it (skiff-bridge, which exits at once) need not stay.

use std::os::fd::{AsRawFd, OwnedFd};

use skiff_sys::bpf::{call, call_fd};

use super::asm::Insn;
use super::FastPathError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const PROG_TYPE_SCHED_CLS: u32 = 3;
/// Since Linux 6.6: older bpf.h headers lack it.
const TCX_INGRESS: u32 = 46;
/// `struct bpf_prog_info`'s name, and as much of the struct as is read.
const INFO_NAME: usize = 64;
const INFO_LEN: usize = 128;

/// Loads `prog` as a tc (sched_cls) program called `name` (at most 15 bytes); on failure the
/// error carries the verifier's log.
pub fn load(name: &str, prog: &[Insn]) -> Result<OwnedFd, FastPathError> {
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
    let n = name.len().min(15);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let [a, b] = [&prog_name[..8], &prog_name[8..]].map(|h| {
        let mut w = [0u8; 8];
        w.copy_from_slice(h);
        u64::from_ne_bytes(w)
    });
    attr[6] = a;
    attr[7] = b;
    call_fd(BPF_PROG_LOAD, &mut attr).map_err(|err| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        FastPathError::Load {
            name: name.to_string(),
            err,
            log: String::from_utf8_lossy(&log[..end]).trim_end().to_string(),
        }
    })
}

fn attach_cmd(cmd: libc::c_long, prog: &OwnedFd, ifindex: u32) -> std::io::Result<()> {
    let mut attr = [0u64; 16];
    // target_ifindex, attach_bpf_fd | attach_type, attach_flags
    attr[0] = u64::from(ifindex) | ((prog.as_raw_fd() as u64) << 32);
    attr[1] = u64::from(TCX_INGRESS);
    call(cmd, &mut attr).map(|_| ())
}

/// Puts `prog` on the tcx ingress of device `ifindex` in this thread's network namespace, after
/// the programs already there.
pub fn attach(prog: &OwnedFd, ifindex: u32) -> Result<(), FastPathError> {
    attach_cmd(BPF_PROG_ATTACH, prog, ifindex).map_err(|err| FastPathError::Attach {
        op: "attach",
        ifindex,
        err,
    })
}

/// The programs on the tcx ingress of device `ifindex`, each with its name: ours are found by name.
pub fn attached(ifindex: u32) -> Result<Vec<(OwnedFd, String)>, FastPathError> {
    let err = |err| FastPathError::Attach {
        op: "list the programs",
        ifindex,
        err,
    };
    let mut ids = [0u32; 64];
    let mut attr = [0u64; 16];
    // target_ifindex, attach_type | query_flags, attach_flags | prog_ids | count
    attr[0] = u64::from(ifindex) | (u64::from(TCX_INGRESS) << 32);
    attr[2] = ids.as_mut_ptr() as u64;
    attr[3] = ids.len() as u64;
    call(BPF_PROG_QUERY, &mut attr).map_err(err)?;
    let n = ((attr[3] & 0xffff_ffff) as usize).min(ids.len());
    let mut out = Vec::new();
    for id in &ids[..n] {
        let mut attr = [0u64; 16];
        attr[0] = u64::from(*id);
        match call_fd(BPF_PROG_GET_FD_BY_ID, &mut attr) {
            Ok(fd) => {
                let name = name_of(&fd).map_err(err)?;
                out.push((fd, name));
            }
            // Detached and freed since the query.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(out)
}

fn name_of(prog: &OwnedFd) -> std::io::Result<String> {
    let mut info = [0u8; INFO_LEN];
    let mut attr = [0u64; 16];
    // bpf_fd, info_len | info
    attr[0] = prog.as_raw_fd() as u64 | ((INFO_LEN as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    call(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name = &info[INFO_NAME..INFO_NAME + 16];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Takes `prog` off the tcx ingress of device `ifindex`.
pub fn detach(prog: &OwnedFd, ifindex: u32) -> Result<(), FastPathError> {
    attach_cmd(BPF_PROG_DETACH, prog, ifindex).map_err(|err| FastPathError::Attach {
        op: "detach",
        ifindex,
        err,
    })
}
