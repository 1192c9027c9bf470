//! Fixtures of the security tests: a small busybox image with chosen accounts and config, and probes
//! of the host's files made as another local user.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::Value;

use crate::registry::build::{Compression, Image, Layer, LayerBuilder, Layout};
use crate::registry::Registry;

/// A uid and gid no account on the test machines has: "another local user".
pub const OTHER_UID: u32 = 4242;

/// A one-layer image of the host's static busybox with `/etc/passwd` and `/etc/group` as given,
/// a setuid-root copy at `/bin/suid`, a device node at `/dev/probe-null` (1:3), a world-writable
/// `/tmp` and `/home/user/notes` (`hello`, 0600, owned by 1000); `config` is the image config's
/// `config` object (`User`, `Cmd`, …).
pub fn busybox_image(passwd: &str, group: &str, config: Value) -> Image {
    let busybox =
        std::fs::read("/bin/busybox").expect("read /bin/busybox (apt-get install busybox-static)");
    let mut l = LayerBuilder::new();
    l.dir("bin", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .file("bin/suid", 0o4755, &busybox);
    for applet in ["sh", "cat", "id", "sleep", "touch", "true"] {
        l.symlink(&format!("bin/{applet}"), "busybox");
    }
    l.dir("etc", 0o755)
        .file("etc/passwd", 0o644, passwd.as_bytes())
        .file("etc/group", 0o644, group.as_bytes())
        .dir("dev", 0o755)
        .char_dev("dev/probe-null", 1, 3)
        .dir("tmp", 0o1777)
        .dir("home", 0o755)
        .dir("home/user", 0o755)
        .file_owned("home/user/notes", 0o600, 1000, 1000, b"hello\n");
    Image::new(
        vec![Layer::new(l.finish(), Compression::Gzip)],
        "amd64",
        config,
    )
}

/// Pushes each `(tag, image)` to `reg` as `<repo>:<tag>`, through an OCI layout in `work`.
pub fn push_images(reg: &Registry, work: &Path, repo: &str, images: &[(&str, &Image)]) {
    let mut layout = Layout::create(&work.join(format!("layout-{repo}"))).expect("layout");
    for (tag, img) in images {
        layout.add_image(tag, img).expect("add image to layout");
    }
    for (tag, _) in images {
        reg.push(&layout.dir, tag, &format!("{repo}:{tag}"), &[])
            .unwrap_or_else(|e| panic!("push {repo}:{tag}: {e}"));
    }
}

/// What a probe does with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `stat`: needs search permission on every directory above.
    Stat,
    /// `open(O_RDONLY)`: also read permission on the file or directory itself.
    Open,
    /// `execve`: also execute permission; a setuid-root file would run as root.
    Exec,
}

/// The errno of `probe` on `path` made by [`OTHER_UID`] (without supplementary groups), 0 when
/// it succeeded. Runs in a forked child, so the test process keeps its own credentials; the child
/// reports through a close-on-exec pipe, so an `execve` that worked reports nothing.
pub fn errno_as_other_user(probe: Probe, path: &Path) -> i32 {
    let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let argv = [c.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: the child makes raw system calls only (no allocation, no locks) and ends with _exit;
    // every pointer it uses was made before the fork and stays valid in its copy of the memory.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: as above; per-thread credential changes are right in a one-thread child.
        unsafe {
            let id = OTHER_UID as libc::c_long;
            let errno: i32 =
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, id, id, id) != 0
                    || libc::syscall(libc::SYS_setresuid, id, id, id) != 0
                {
                    -1
                } else {
                    let r = match probe {
                        Probe::Stat => {
                            let mut st: libc::stat = std::mem::zeroed();
                            libc::stat(c.as_ptr(), &mut st)
                        }
                        Probe::Open => libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK),
                        Probe::Exec => libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()),
                    };
                    if r < 0 {
                        *libc::__errno_location()
                    } else {
                        0
                    }
                };
            libc::write(fds[1], (&errno as *const i32).cast(), 4);
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end, which we own.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 4];
    // SAFETY: reading at most 4 bytes into buf from the read end we own.
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) };
    // SAFETY: closing the read end, which we own; then waiting for our own child.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    let errno = match n {
        0 => 0,
        4 => i32::from_ne_bytes(buf),
        _ => panic!("probe child: short report ({n})"),
    };
    assert_ne!(errno, -1, "the probe could not become uid {OTHER_UID}");
    errno
}

/// Asserts that [`OTHER_UID`] gets EACCES for every probe, naming each path it could reach.
pub fn assert_closed_to_other_users(probes: &[(Probe, &Path)]) {
    let open: Vec<String> = probes
        .iter()
        .filter_map(|(p, path)| {
            let errno = errno_as_other_user(*p, path);
            (errno != libc::EACCES).then(|| {
                format!(
                    "{p:?} {}: {}",
                    path.display(),
                    std::io::Error::from_raw_os_error(errno)
                )
            })
        })
        .collect();
    assert!(
        open.is_empty(),
        "uid {OTHER_UID} was not refused (EACCES expected):\n{}",
        open.join("\n")
    );
}

/// Asserts that [`OTHER_UID`] can stat `dir` and execute `/bin/true`: the probes below `dir` are
/// not refused by the test's own scratch directories, and an exec that works is seen as one.
pub fn assert_reachable_by_other_users(dir: &Path) {
    for (probe, path) in [(Probe::Stat, dir), (Probe::Exec, Path::new("/bin/true"))] {
        let errno = errno_as_other_user(probe, path);
        assert_eq!(
            errno,
            0,
            "uid {OTHER_UID}: {probe:?} {} failed ({}): the probes would prove nothing",
            path.display(),
            std::io::Error::from_raw_os_error(errno)
        );
    }
}

/// The mode bits (`0o7777`) of `path`.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}
