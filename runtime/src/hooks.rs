//! OCI lifecycle hooks: each runs with the container's state JSON on stdin, its own argv and env, and
//! an optional timeout.

use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::Hook;
use crate::state::OciState;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook {path}: cannot run: {source}")]
    Spawn {
        stage: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{stage} hook {path} timed out after {secs}s")]
    Timeout {
        stage: &'static str,
        path: String,
        secs: i64,
    },
    #[error("{stage} hook {path} failed ({status}){output}")]
    Failed {
        stage: &'static str,
        path: String,
        status: String,
        output: String,
    },
}

/// Runs `hooks` in order, stopping at the first failure.
pub fn run_all(stage: &'static str, hooks: &[Hook], state: &OciState) -> Result<(), HookError> {
    if hooks.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks {
        run(stage, hook, &json)?;
    }
    Ok(())
}

fn run(stage: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let spawn_err = |source| HookError::Spawn {
        stage,
        path: hook.path.clone(),
        source,
    };
    // Output goes to an anonymous file rather than a pipe: a chatty hook can never block on a full pipe
    // while we wait for it, and we can still quote what it said when it fails.
    let out = memfd("skiff-hook").map_err(spawn_err)?;
    let out_file = std::fs::File::from(out);
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(out_file.try_clone().map_err(spawn_err)?)
        .stderr(out_file.try_clone().map_err(spawn_err)?);
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s as u64));
    let mut nap = Duration::from_micros(200);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_err)? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                stage,
                path: hook.path.clone(),
                secs: hook.timeout.unwrap_or_default(),
            });
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut output = String::new();
    let mut f = out_file;
    if f.rewind().is_ok() {
        let _ = f.take(4096).read_to_string(&mut output);
    }
    let output = output.trim();
    Err(HookError::Failed {
        stage,
        path: hook.path.clone(),
        status: status.to_string(),
        output: if output.is_empty() {
            String::new()
        } else {
            format!(": {output}")
        },
    })
}

pub fn memfd(name: &str) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: name is a valid C string; memfd_create returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Status;

    fn state() -> OciState {
        OciState {
            oci_version: "1.2.0".into(),
            id: "h1".into(),
            status: Status::Creating,
            pid: 7,
            bundle: "/b".into(),
            annotations: Default::default(),
        }
    }

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["FOO=bar".into()],
            timeout,
        }
    }

    #[test]
    fn stdin_env_and_failure() {
        let dir = std::env::temp_dir().join(format!("skiff-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!("cat > {}; echo $FOO >> {}", out.display(), out.display());
        run_all("prestart", &[hook(&script, None)], &state()).unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(
            got.contains("\"id\":\"h1\"") && got.contains("\"pid\":7") && got.ends_with("bar\n")
        );
        let err = run_all(
            "poststart",
            &[hook("echo oops >&2; exit 3", None)],
            &state(),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("poststart") && msg.contains("oops") && msg.contains('3'),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timeout_kills() {
        let t = Instant::now();
        let err = run_all("createRuntime", &[hook("sleep 30", Some(1))], &state()).unwrap_err();
        assert!(matches!(err, HookError::Timeout { .. }));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
