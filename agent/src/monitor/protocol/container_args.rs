//! The command line of `skiff-monitor container`, written by skiffd.

use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct ContainerArgs {
    pub id: String,
    pub bundle: PathBuf,
    /// The runtime state root.
    pub root: PathBuf,
    /// The CRI log file; output is discarded without one.
    pub log: Option<PathBuf>,
    pub exit_file: PathBuf,
    /// Where the number of log reopens done so far is written, so a reopen can be confirmed.
    pub reopen_file: Option<PathBuf>,
    /// The inherited descriptor on which the outcome of create is reported.
    pub status_fd: Option<i32>,
    pub tty: bool,
    pub stdin: bool,
    pub systemd_cgroup: bool,
    /// Stay in the foreground (no double fork): for tests and debugging.
    pub foreground: bool,
}

impl ContainerArgs {
    pub fn parse(args: &[String]) -> Result<ContainerArgs, String> {
        let mut a = ContainerArgs::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--id" => a.id = value()?,
                "--bundle" => a.bundle = value()?.into(),
                "--root" => a.root = value()?.into(),
                "--log" => a.log = Some(value()?.into()),
                "--exit-file" => a.exit_file = value()?.into(),
                "--reopen-file" => a.reopen_file = Some(value()?.into()),
                "--status-fd" => {
                    let v = value()?;
                    let fd =
                        v.parse::<i32>().ok().filter(|fd| *fd > 2).ok_or_else(|| {
                            format!("--status-fd {v:?} is not a descriptor above 2")
                        })?;
                    a.status_fd = Some(fd);
                }
                "--tty" => a.tty = true,
                "--stdin" => a.stdin = true,
                "--systemd-cgroup" => a.systemd_cgroup = true,
                "--foreground" => a.foreground = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        // The monitor leaves the caller's working directory; relative paths are resolved first.
        for p in [&mut a.bundle, &mut a.root, &mut a.exit_file] {
            absolutize(p);
        }
        for p in [a.log.as_mut(), a.reopen_file.as_mut()]
            .into_iter()
            .flatten()
        {
            absolutize(p);
        }
        for (name, missing) in [
            ("--id", a.id.is_empty()),
            ("--bundle", a.bundle.as_os_str().is_empty()),
            ("--root", a.root.as_os_str().is_empty()),
            ("--exit-file", a.exit_file.as_os_str().is_empty()),
        ] {
            if missing {
                return Err(format!("{name} is required"));
            }
        }
        Ok(a)
    }
}

fn absolutize(p: &mut PathBuf) {
    if !p.as_os_str().is_empty() {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_and_names_problems() {
        let a = ContainerArgs::parse(&s(&[
            "--id",
            "c",
            "--bundle",
            "/b",
            "--root",
            "/r",
            "--exit-file",
            "/e",
            "--tty",
            "--status-fd",
            "3",
        ]))
        .unwrap();
        assert!(a.tty && !a.stdin);
        assert_eq!(a.status_fd, Some(3));
        let e = ContainerArgs::parse(&s(&["--id", "c"])).unwrap_err();
        assert!(e.contains("--bundle"), "{e}");
        let e = ContainerArgs::parse(&s(&["--bogus"])).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
        let e = ContainerArgs::parse(&s(&["--status-fd", "1"])).unwrap_err();
        assert!(e.contains("--status-fd"), "{e}");
    }
}
