//! `skiff-monitor exec`: runs a command in a container through the runtime library with its output
//! on the pipes skiffd gave it, so skiffd's threads never fork. It waits for the process (killing it
//! at the timeout) and writes the [`ExecOutcome`] to the result file.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::protocol::{ExecArgs, ExecOutcome};

/// `skiff-monitor exec ...`
pub fn main(args: &[String]) -> i32 {
    let args = match ExecArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("skiff-monitor exec: {e}");
            return 2;
        }
    };
    let outcome = exec(&args).unwrap_or_else(ExecOutcome::Failed);
    let data = serde_json::to_vec(&outcome).unwrap_or_default();
    if let Err(e) = skiff_sys::fs::replace(&args.result, &data, 0o600) {
        eprintln!("skiff-monitor exec: write {}: {e}", args.result.display());
        return 1;
    }
    0
}

/// Starts the command with the container's own process settings (user, environment, working
/// directory, capabilities, LSM labels, no_new_privs) and waits for it.
fn exec(args: &ExecArgs) -> Result<ExecOutcome, String> {
    use skiff_runtime::container::{ExecOptions, Runtime};
    let rt = Runtime::new(&args.root);
    let mut process = rt.exec_base(&args.id).map_err(|e| e.to_string())?;
    process.args = args.cmd.clone();
    process.terminal = args.console_socket.is_some();
    process.console_size = args
        .console_size
        .filter(|_| process.terminal)
        .map(|(height, width)| skiff_runtime::spec::ConsoleSize { height, width });
    process.command_line = None;
    let pid_file = args.result.with_extension("pid");
    let opts = ExecOptions {
        process,
        console_socket: args.console_socket.clone(),
        pid_file: Some(pid_file.clone()),
        detach: true,
        preserve_fds: 0,
    };
    // Rust ignores SIGPIPE and an ignored signal stays ignored across exec: the command must get
    // it as usual (`yes | head` ends only through it).
    // SAFETY: setting a standard disposition; this helper has no handler of its own for SIGPIPE.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    rt.exec(&args.id, &opts).map_err(|e| e.to_string())?;
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or("the exec'd process's pid was not recorded")?;
    let _ = std::fs::remove_file(&pid_file);
    Ok(wait(pid, args.timeout))
}

/// Waits for our child `pid`; at the timeout (0: none) kills it. The wait blocks on a pidfd, so
/// the exit is seen the moment it happens (a probe or `kubectl exec` of a short command would
/// otherwise wait out a polling interval).
fn wait(pid: i32, timeout: u64) -> ExecOutcome {
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout));
    let pidfd = skiff_sys::fd::pidfd_open(pid).ok();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG; status is a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return ExecOutcome::Exited(exit_code(status));
        }
        if r < 0 {
            return ExecOutcome::Failed(format!(
                "wait for {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // SAFETY: kill and reap our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return ExecOutcome::TimedOut;
        }
        match &pidfd {
            Some(fd) => {
                let left =
                    deadline.map_or(-1, |d| poll_ms(d.saturating_duration_since(Instant::now())));
                super::sys::poll(&[fd.as_raw_fd()], left);
            }
            // Without pidfds (kernels before 5.3) the exit is looked for every 10 ms.
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// `left` as poll(2)'s timeout: rounded up, so the deadline has passed when it returns.
fn poll_ms(left: Duration) -> i32 {
    i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX)
}

/// A shell-style exit code: the status, or 128 + the signal that ended it.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    // `wait` reaps each child through waitpid.
    #[allow(clippy::zombie_processes)]
    fn helper_timeout_kills_and_reports() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let t = std::time::Instant::now();
        assert_eq!(wait(child.id() as i32, 1), ExecOutcome::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(20));
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        assert_eq!(wait(child.id() as i32, 0), ExecOutcome::Exited(7));
        let child = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        assert_eq!(wait(child.id() as i32, 0), ExecOutcome::Exited(137));
    }

    #[test]
    fn poll_timeouts_round_up() {
        assert_eq!(poll_ms(Duration::ZERO), 1);
        assert_eq!(poll_ms(Duration::from_micros(1500)), 2);
        assert_eq!(poll_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
