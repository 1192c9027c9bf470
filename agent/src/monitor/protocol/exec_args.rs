//! `skiff-monitor exec`: its command line, written by skiffd's `ExecSync` and streaming exec, and
//! the outcome the helper leaves in its result file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the helper reports in its result file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExecOutcome {
    Exited(i32),
    TimedOut,
    Failed(String),
}

impl ExecOutcome {
    /// The outcome at `path`, if the helper has written one.
    pub fn read(path: &Path) -> Option<ExecOutcome> {
        let data = std::fs::read(path).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// The helper's arguments (after `exec`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecArgs {
    /// The runtime state root.
    pub root: PathBuf,
    pub id: String,
    /// Seconds until the command is killed; 0: never.
    pub timeout: u64,
    /// Where the helper writes its [`ExecOutcome`].
    pub result: PathBuf,
    /// With a TTY: where the pty master is sent (streaming exec).
    pub console_socket: Option<PathBuf>,
    /// With a TTY: its size from the start, as (height, width).
    pub console_size: Option<(u16, u16)>,
    pub cmd: Vec<String>,
}

impl ExecArgs {
    /// The command line skiffd passes after `exec`.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "--root".to_string(),
            self.root.to_string_lossy().into_owned(),
            "--id".into(),
            self.id.clone(),
            "--timeout".into(),
            self.timeout.to_string(),
            "--result".into(),
            self.result.to_string_lossy().into_owned(),
        ];
        if let Some(sock) = &self.console_socket {
            a.extend([
                "--console-socket".into(),
                sock.to_string_lossy().into_owned(),
            ]);
        }
        if let Some((rows, cols)) = self.console_size {
            a.extend(["--console-size".into(), format!("{rows}x{cols}")]);
        }
        a.push("--".into());
        a.extend(self.cmd.iter().cloned());
        a
    }

    pub fn parse(args: &[String]) -> Result<ExecArgs, String> {
        let (mut root, mut id, mut timeout, mut result) = (None, None, 0u64, None);
        let (mut console_socket, mut console_size) = (None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--root" => root = Some(PathBuf::from(value()?)),
                "--id" => id = Some(value()?),
                "--timeout" => {
                    let v = value()?;
                    timeout = v.parse().map_err(|_| format!("--timeout {v:?}"))?
                }
                "--result" => result = Some(PathBuf::from(value()?)),
                "--console-socket" => console_socket = Some(PathBuf::from(value()?)),
                "--console-size" => {
                    let v = value()?;
                    console_size = Some(parse_size(&v).ok_or(format!("--console-size {v:?}"))?);
                }
                "--" => break,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let cmd: Vec<String> = it.cloned().collect();
        if cmd.is_empty() {
            return Err("no command after --".into());
        }
        Ok(ExecArgs {
            root: root.ok_or("--root is required")?,
            id: id.ok_or("--id is required")?,
            timeout,
            result: result.ok_or("--result is required")?,
            console_socket,
            console_size,
            cmd,
        })
    }
}

/// `ROWSxCOLS`, both non-zero.
fn parse_size(v: &str) -> Option<(u16, u16)> {
    let (rows, cols) = v.split_once('x')?;
    let size = (rows.parse().ok()?, cols.parse().ok()?);
    (size.0 > 0 && size.1 > 0).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_helper_arguments() {
        let a = ExecArgs::parse(&s(&[
            "--root",
            "/r",
            "--id",
            "c1",
            "--timeout",
            "5",
            "--result",
            "/x.json",
            "--",
            "sh",
            "-c",
            "echo --id",
        ]))
        .unwrap();
        assert_eq!(a.root, PathBuf::from("/r"));
        assert_eq!(a.id, "c1");
        assert_eq!(a.timeout, 5);
        assert_eq!(a.cmd, s(&["sh", "-c", "echo --id"]));
        assert_eq!(a.console_socket, None);
        let a = ExecArgs::parse(&s(&[
            "--root",
            "/r",
            "--id",
            "c1",
            "--result",
            "/x.json",
            "--console-socket",
            "/c.sock",
            "--",
            "sh",
        ]))
        .unwrap();
        assert_eq!(a.console_socket, Some(PathBuf::from("/c.sock")));
        let sized = [
            "--root",
            "/r",
            "--id",
            "c",
            "--result",
            "/x",
            "--console-size",
        ];
        let a = ExecArgs::parse(&s(&[&sized[..], &["37x111", "--", "sh"]].concat())).unwrap();
        assert_eq!(a.console_size, Some((37, 111)));
        for bad in ["0x80", "37", "37x", "x80", "-1x80", "37x70000"] {
            assert!(ExecArgs::parse(&s(&[&sized[..], &[bad, "--", "sh"]].concat())).is_err());
        }
        assert!(ExecArgs::parse(&s(&["--root", "/r", "--id", "c", "--result", "/x"])).is_err());
        assert!(ExecArgs::parse(&s(&["--id"])).is_err());
        assert!(ExecArgs::parse(&s(&["--timeout", "-1"])).is_err());
        assert!(ExecArgs::parse(&s(&["--bogus"])).is_err());
    }

    #[test]
    fn what_skiffd_writes_the_helper_reads() {
        let a = ExecArgs {
            root: "/r".into(),
            id: "c".into(),
            timeout: 3,
            result: "/x.json".into(),
            console_socket: Some("/t.sock".into()),
            console_size: Some((24, 80)),
            cmd: s(&["sh", "-c", "echo -- --id"]),
        };
        assert_eq!(ExecArgs::parse(&a.to_args()).unwrap(), a);
        let plain = ExecArgs {
            console_socket: None,
            console_size: None,
            ..a
        };
        assert_eq!(ExecArgs::parse(&plain.to_args()).unwrap(), plain);
    }
}
