//! The infra process of a pod whose containers share a PID namespace: PID 1 of that namespace, which
//! reaps the pod's orphans and keeps the namespace alive until the sandbox stops.
//!
//! Every member of the pod sees it, and one with CAP_SYS_PTRACE can open its `/proc/1/root`, its cwd
//! and its descriptors, or make it run code. So it holds nothing such a member could use: a mount
//! namespace of its own whose root is an empty read-only tmpfs, uid and gid 65535 with no supplementary
//! groups, no capability in any set, no descriptor, no_new_privs, and a seccomp filter that allows only
//! what reaping needs. skiffd puts it in the pod's cgroup.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use skiff_runtime::security::{caps, seccomp};
use skiff_runtime::spec::{Seccomp, SeccompSyscall};

use super::pinns::join;
use super::protocol::{pin_path, PINNABLE};

/// The infra's uid and gid: not root, and not `nobody`, which images use for their own processes.
pub const INFRA_ID: libc::uid_t = 65535;

/// All the infra does once confined: wait for children and signals, and end.
const ALLOWED_SYSCALLS: [&str; 7] = [
    "wait4",
    "rt_sigtimedwait",
    "restart_syscall",
    "rt_sigreturn",
    "close",
    "exit",
    "exit_group",
];

/// `skiff-monitor infra --dir <pod dir>`: starts PID 1 of a new PID namespace, confined, prints its pid
/// (as seen from here) on stdout and exits; the infra process outlives skiffd. It first joins whichever
/// of the pod's pinned namespaces exist, so it sits in all of the pod's namespaces.
pub fn main(args: &[String]) -> i32 {
    match parse(args).and_then(start) {
        Ok(pid) => {
            println!("{pid}");
            0
        }
        Err(e) => {
            eprintln!("skiff-monitor infra: {e:#}");
            1
        }
    }
}

fn parse(args: &[String]) -> Result<&Path> {
    match args {
        [flag, dir] if flag == "--dir" && Path::new(dir).is_absolute() => Ok(Path::new(dir)),
        _ => bail!("usage: infra --dir <pod dir>"),
    }
}

/// Forks the infra and waits until it is confined: it closes its end of a pipe once it is, or writes
/// why it could not be and exits.
fn start(dir: &Path) -> Result<i32> {
    for ns in PINNABLE {
        let pin = pin_path(dir, ns);
        if pin.exists() {
            join(&pin, ns)?;
        }
    }
    // SAFETY: unshare(CLONE_NEWPID) only affects children forked after it by this process.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare pid");
    }
    let (mut rx, tx) = pipe()?;
    // SAFETY: this helper is single-threaded, so the child may run arbitrary code after fork.
    let pid = match unsafe { libc::fork() } {
        -1 => return Err(std::io::Error::last_os_error()).context("fork"),
        0 => {
            drop(rx);
            run(dir, tx)
        }
        pid => pid,
    };
    drop(tx);
    let mut why = String::new();
    let _ = rx.read_to_string(&mut why);
    if why.is_empty() {
        return Ok(pid);
    }
    // SAFETY: reaping our own child, which reported a failure and exits.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    bail!("{why}")
}

fn pipe() -> Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe");
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// The infra itself (PID 1 of the pod): confines itself, reports on `report`, then reaps forever.
fn run(dir: &Path, report: OwnedFd) -> ! {
    if let Err(e) = confine(dir, report.as_raw_fd()) {
        let msg = format!("{e:#}");
        // SAFETY: writing a local buffer to our own pipe, then ending this forked child at once.
        unsafe {
            libc::write(report.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(1);
        }
    }
    // Closing the pipe tells the helper the infra is confined.
    drop(report);
    reap_forever()
}

fn confine(dir: &Path, keep_fd: i32) -> Result<()> {
    // SAFETY: setsid only detaches this process from skiffd's session.
    unsafe { libc::setsid() };
    // Read while /proc is still in reach.
    let ids = (own_id("uid_map")?, own_id("gid_map")?);
    let set_up_pages = super::memory::plan();
    empty_root(dir)?;
    drop_identity(ids)?;
    block_sigchld()?;
    close_fds_but(keep_fd)?;
    let filter = seccomp::compile(&filter_profile()).context("compile the seccomp filter")?;
    // The infra lives as long as its pod and only reaps from now on: the pages the set-up touched go
    // back before the filter forbids madvise.
    if let Some(plan) = set_up_pages {
        plan.shed();
    }
    seccomp::install(&filter).context("install the seccomp filter")?;
    Ok(())
}

/// A mount namespace of our own whose root is an empty read-only tmpfs: the host's file systems are
/// out of reach through `/proc/1/root` and `/proc/1/cwd`. The tmpfs goes over the pod directory, which
/// only serves as a mount point in this namespace.
fn empty_root(dir: &Path) -> Result<()> {
    // SAFETY: unshare changes only this single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare mount namespace");
    }
    // Nothing done here may reach the host's mounts.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .context("make mounts private")?;
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount(
        Some("infra"),
        dir,
        Some("tmpfs"),
        flags,
        Some("size=4k,nr_inodes=1,mode=0555"),
    )
    .with_context(|| format!("mount an empty tmpfs on {}", dir.display()))?;
    skiff_runtime::rootfs::pivot(dir).context("pivot into the empty root")
}

fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |s: Option<&[u8]>| s.map(CString::new).transpose();
    let (src, fstype, data) = (
        c(src.map(str::as_bytes))?,
        c(fstype.map(str::as_bytes))?,
        c(data.map(str::as_bytes))?,
    );
    let target = CString::new(target.as_os_str().as_bytes())?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            ptr(&src),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// uid and gid [`INFRA_ID`] (see [`own_id`]), no supplementary groups, every capability set empty (bounding and ambient
/// too), no_new_privs, not dumpable.
fn drop_identity((uid, gid): (libc::uid_t, libc::gid_t)) -> Result<()> {
    caps::drop_bounding(&caps::Set(0))?;
    let check = |rc: libc::c_int, what: &str| -> Result<()> {
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context(what.to_string());
        }
        Ok(())
    };
    // SAFETY: plain syscalls with integer arguments (setgroups with an empty list).
    unsafe {
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(gid, gid, gid), "setresgid")?;
        // Without keep-caps the uid change empties the permitted, effective and ambient sets.
        check(libc::setresuid(uid, uid, uid), "setresuid")?;
    }
    caps::set(&caps::CapSets::default())?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "set no_new_privs",
        )?;
        check(
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0),
            "set dumpable",
        )?;
    }
    Ok(())
}

/// [`INFRA_ID`], or in a pod's user namespace that does not map it, the highest id it maps: never
/// the pod's root.
fn own_id(file: &str) -> Result<libc::uid_t> {
    let map = std::fs::read_to_string(format!("/proc/self/{file}"))
        .with_context(|| format!("read /proc/self/{file}"))?;
    let ranges: Vec<(u32, u32)> = map
        .lines()
        .filter_map(|l| {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[2]))
        })
        .collect();
    pick_id(&ranges)
        .with_context(|| format!("the pod's {file} has no id for the infra process but 0"))
}

/// From (first id, count) ranges of a user namespace.
fn pick_id(ranges: &[(u32, u32)]) -> Option<libc::uid_t> {
    if ranges
        .iter()
        .any(|&(first, n)| INFRA_ID >= first && INFRA_ID - first < n)
    {
        return Some(INFRA_ID);
    }
    ranges
        .iter()
        .filter(|&&(first, _)| first <= INFRA_ID)
        .map(|&(first, n)| first.saturating_add(n.saturating_sub(1)).min(INFRA_ID))
        .filter(|&id| id > 0)
        .max()
}

/// SIGCHLD stays pending for `sigtimedwait` instead of being delivered.
fn block_sigchld() -> Result<()> {
    // SAFETY: the sigset is initialised by sigemptyset before use; sigprocmask changes only this process.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("block SIGCHLD");
    }
    Ok(())
}

/// Closes everything inherited (stdio included) but the report pipe.
fn close_fds_but(keep: i32) -> Result<()> {
    let keep = keep as libc::c_uint;
    let ranges = [(0, keep.saturating_sub(1)), (keep + 1, libc::c_uint::MAX)];
    for (first, last) in ranges.into_iter().filter(|(f, l)| f <= l && *f != keep) {
        // SAFETY: close_range closes descriptors of this process only; none of them is used again.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("close descriptors");
        }
    }
    Ok(())
}

/// Everything but [`ALLOWED_SYSCALLS`] fails with EPERM; other architectures are killed.
fn filter_profile() -> Seccomp {
    Seccomp {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: vec!["SCMP_ARCH_X86_64".into()],
        syscalls: vec![SeccompSyscall {
            names: ALLOWED_SYSCALLS.iter().map(|s| s.to_string()).collect(),
            action: "SCMP_ACT_ALLOW".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// PID 1's only work: reap every child the pod's processes leave to it. The timeout is a safety net
/// for a SIGCHLD merged with one already consumed.
fn reap_forever() -> ! {
    // SAFETY: waitpid and sigtimedwait on this process's own children and signals; the sigset is
    // initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let timeout = libc::timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        loop {
            while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
            libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_allows_reaping_and_nothing_else() {
        use seccomp::bpf::simulate;
        const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
        const ALLOW: u32 = 0x7fff_0000;
        let f = seccomp::compile(&filter_profile()).unwrap();
        let ret = |nr: libc::c_long| simulate(&f.insns, nr as u32, AUDIT_ARCH_X86_64, [0; 6]);
        for nr in [
            libc::SYS_wait4,
            libc::SYS_rt_sigtimedwait,
            libc::SYS_exit_group,
        ] {
            assert_eq!(ret(nr), Some(ALLOW), "syscall {nr}");
        }
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_setns,
            libc::SYS_kill,
            libc::SYS_write,
        ] {
            assert_eq!(
                ret(nr),
                Some(0x0005_0000 | libc::EPERM as u32),
                "syscall {nr}"
            );
        }
    }

    #[test]
    fn infra_id_is_mapped_and_not_root() {
        assert_eq!(pick_id(&[(0, 4294967295)]), Some(INFRA_ID));
        assert_eq!(pick_id(&[(0, 100000)]), Some(INFRA_ID));
        assert_eq!(pick_id(&[(0, 1000)]), Some(999));
        assert_eq!(pick_id(&[(0, 1)]), None);
    }

    #[test]
    fn arguments() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&s(&["--dir", "/x"])).unwrap(), Path::new("/x"));
        assert!(parse(&s(&["--dir", "x"])).is_err());
        assert!(parse(&s(&["--dir"])).is_err());
        assert!(parse(&s(&["--pid", "/x"])).is_err());
    }
}
