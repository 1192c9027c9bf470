//! Command-line options.

use std::path::PathBuf;

use crate::error::Result;
use crate::fail;

pub const USAGE: &str = "\
usage: skiff-bench --bundle DIR [options]

Times container lifecycles of skiff, crun and runc on one OCI bundle whose
process is /bin/true, interleaving the runtimes in rotating order.

options:
  --bundle DIR            OCI bundle (config.json + rootfs) running /bin/true (required)
  --iterations N          iterations of every phase (default: 200 run, 100 split)
  --run-iterations N      iterations of the `run` phase
  --split-iterations N    iterations of the create/start/delete phase
  --warmup N              untimed warm-up rounds before each phase (default 5)
  --runtimes LIST         comma-separated subset of skiff,crun,runc (default all three)
  --skiff PATH            skiff binary (default: skiff next to this binary)
  --crun PATH             crun binary (default: crun from PATH)
  --runc PATH             runc binary (default: runc from PATH)
  --phases LIST           comma-separated subset of run,split (default both)
  --keep-cgroup2          do not detach the hybrid cgroup2 mount (crun 1.8 then fails)
  --json                  print the results as JSON on stdout instead of a table
  --json-file PATH        also write the JSON results (with every sample) to PATH
  -h, --help              this text
";

pub const RUNTIMES: [&str; 3] = ["skiff", "crun", "runc"];

#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: PathBuf,
    pub run_iterations: usize,
    pub split_iterations: usize,
    pub warmup: usize,
    pub runtimes: Vec<String>,
    pub skiff: PathBuf,
    pub crun: PathBuf,
    pub runc: PathBuf,
    pub run_phase: bool,
    pub split_phase: bool,
    pub keep_cgroup2: bool,
    pub json: bool,
    pub json_file: Option<PathBuf>,
}

/// What the command line asked for: a benchmark, or the help text.
pub enum Parsed {
    Run(Box<Options>),
    Help,
}

impl Options {
    fn defaults() -> Options {
        Options {
            bundle: PathBuf::new(),
            run_iterations: 200,
            split_iterations: 100,
            warmup: 5,
            runtimes: RUNTIMES.iter().map(|s| s.to_string()).collect(),
            skiff: default_skiff(),
            crun: PathBuf::from("crun"),
            runc: PathBuf::from("runc"),
            run_phase: true,
            split_phase: true,
            keep_cgroup2: false,
            json: false,
            json_file: None,
        }
    }

    /// The binary configured for runtime `name`.
    pub fn binary(&self, name: &str) -> &PathBuf {
        match name {
            "skiff" => &self.skiff,
            "crun" => &self.crun,
            _ => &self.runc,
        }
    }
}

/// skiff is built into the same target directory as this benchmark.
fn default_skiff() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("skiff")))
        .unwrap_or_else(|| PathBuf::from("target/release/skiff"))
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed> {
    let mut opts = Options::defaults();
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| fail!("option {flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--bundle" => opts.bundle = PathBuf::from(value()?),
            "--iterations" => {
                let n = count(&flag, &value()?)?;
                opts.run_iterations = n;
                opts.split_iterations = n;
            }
            "--run-iterations" => opts.run_iterations = count(&flag, &value()?)?,
            "--split-iterations" => opts.split_iterations = count(&flag, &value()?)?,
            "--warmup" => opts.warmup = value()?.parse().map_err(|e| bad(&flag, e))?,
            "--runtimes" => opts.runtimes = runtimes(&value()?)?,
            "--skiff" => opts.skiff = PathBuf::from(value()?),
            "--crun" => opts.crun = PathBuf::from(value()?),
            "--runc" => opts.runc = PathBuf::from(value()?),
            "--phases" => phases(&mut opts, &value()?)?,
            "--keep-cgroup2" => opts.keep_cgroup2 = true,
            "--json" => opts.json = true,
            "--json-file" => opts.json_file = Some(PathBuf::from(value()?)),
            other => return Err(fail!("unknown option {other:?}\n\n{USAGE}")),
        }
    }
    if opts.bundle.as_os_str().is_empty() {
        return Err(fail!("--bundle DIR is required\n\n{USAGE}"));
    }
    Ok(Parsed::Run(Box::new(opts)))
}

fn bad(flag: &str, e: impl std::fmt::Display) -> crate::error::Error {
    fail!("bad value for {flag}: {e}")
}

fn count(flag: &str, value: &str) -> Result<usize> {
    match value.parse::<usize>() {
        Ok(0) => Err(fail!("{flag} must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(bad(flag, format!("{value:?}: {e}"))),
    }
}

fn runtimes(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !RUNTIMES.contains(&name) {
            return Err(fail!(
                "--runtimes: unknown runtime {name:?} (known: skiff, crun, runc)"
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        return Err(fail!("--runtimes: the list is empty"));
    }
    Ok(out)
}

fn phases(opts: &mut Options, list: &str) -> Result<()> {
    opts.run_phase = false;
    opts.split_phase = false;
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "run" => opts.run_phase = true,
            "split" => opts.split_phase = true,
            other => {
                return Err(fail!(
                    "--phases: unknown phase {other:?} (known: run, split)"
                ))
            }
        }
    }
    if !opts.run_phase && !opts.split_phase {
        return Err(fail!("--phases: the list is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<Options> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Parsed::Run(o) => Ok(*o),
            Parsed::Help => Err(fail!("help")),
        }
    }

    #[test]
    fn iterations_sets_both_phases() {
        let o = opts(&["--bundle", "b", "--iterations", "7"]).unwrap();
        assert_eq!((o.run_iterations, o.split_iterations), (7, 7));
    }

    #[test]
    fn runtimes_are_checked_and_deduplicated() {
        let o = opts(&["--bundle", "b", "--runtimes", "crun,runc,crun"]).unwrap();
        assert_eq!(o.runtimes, ["crun", "runc"]);
        let e = opts(&["--bundle", "b", "--runtimes", "docker"]).unwrap_err();
        assert!(e.0.contains("docker"), "{e}");
    }

    #[test]
    fn bundle_is_required_and_zero_iterations_refused() {
        assert!(opts(&[]).unwrap_err().0.contains("--bundle"));
        let e = opts(&["--bundle", "b", "--iterations", "0"]).unwrap_err();
        assert!(e.0.contains("--iterations"), "{e}");
    }
}
