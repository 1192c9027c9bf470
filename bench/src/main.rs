//! skiff-bench: container lifecycle timings of skiff, crun and runc on one bundle.

mod bench;
mod cli;
mod error;
mod ns;
mod proc;
mod report;
mod runtime;
mod stats;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bench::{Bench, Note};
use error::Result;
use report::{Environment, Report};
use runtime::{Floor, Runtime};

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args().skip(1)) {
        Ok(cli::Parsed::Run(opts)) => opts,
        Ok(cli::Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("skiff-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &cli::Options) -> Result<()> {
    let bundle = check_bundle(&opts.bundle)?;
    let cgroups = ns::enter_private(opts.keep_cgroup2)?;
    proc::become_subreaper()?;
    let state = StateDir::create()?;
    let (env, series, notes) = measure(opts, &bundle, &state.path)?;
    let env = Environment {
        cgroups: cgroups.describe().to_string(),
        ..env
    };
    let report = Report {
        env: &env,
        series: &series,
        notes: &notes,
    };
    if let Some(path) = &opts.json_file {
        std::fs::write(path, format!("{:#}\n", report.json()))
            .map_err(|e| fail!("writing {}: {e}", path.display()))?;
    }
    let text = if opts.json {
        format!("{:#}\n", report.json())
    } else {
        report.table()
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| fail!("writing the report to stdout: {e}"))
}

type Measured = (Environment, Vec<stats::Series>, Vec<Note>);

fn measure(opts: &cli::Options, bundle: &Path, state: &Path) -> Result<Measured> {
    let log = proc::StderrLog::create(&state.join("stderr.log"))?;
    let mut notes = Vec::new();
    let mut runtimes = Vec::new();
    for name in &opts.runtimes {
        let wanted = opts.binary(name);
        let Some(binary) = runtime::resolve(wanted) else {
            let reason = format!("skipped: no executable at {}", wanted.display());
            eprintln!("skiff-bench: {name}: {reason}");
            notes.push(Note {
                subject: name.clone(),
                reason,
            });
            continue;
        };
        let root = state.join(name);
        std::fs::create_dir(&root)
            .map_err(|e| fail!("creating state dir {}: {e}", root.display()))?;
        runtimes.push(Runtime {
            name: name.clone(),
            binary,
            root,
            bundle: bundle.to_path_buf(),
        });
    }
    let floor = Floor::for_bundle(bundle);
    let mut env = Environment {
        kernel: kernel_release(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cgroups: String::new(),
        bundle: bundle.display().to_string(),
        state_dir: state.display().to_string(),
        floor: format!("{} (argv[0] {:?})", floor.program.display(), floor.argv0),
        warmup: opts.warmup,
        runtimes: runtimes
            .iter()
            .map(|rt| {
                (
                    rt.name.clone(),
                    rt.binary.display().to_string(),
                    rt.version(&log),
                )
            })
            .collect(),
    };
    let mut bench = Bench::new(runtimes, floor, log, opts.warmup);
    bench.notes = notes;
    bench.probe();
    env.runtimes
        .retain(|(name, _, _)| bench.runtimes.iter().any(|rt| &rt.name == name));
    let mut series = Vec::new();
    if opts.run_phase {
        series.extend(bench.run_phase(opts.run_iterations));
    }
    if opts.split_phase && !bench.runtimes.is_empty() {
        series.extend(bench.split_phase(opts.split_iterations));
    }
    Ok((env, series, bench.notes))
}

/// The bundle must exist and must not ask for a terminal (nothing here provides one).
fn check_bundle(bundle: &Path) -> Result<PathBuf> {
    let bundle = bundle
        .canonicalize()
        .map_err(|e| fail!("bundle {}: {e}", bundle.display()))?;
    let config_path = bundle.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| fail!("reading {}: {e}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| fail!("{}: invalid JSON: {e}", config_path.display()))?;
    let process = &config["process"];
    if process["terminal"].as_bool() == Some(true) {
        return Err(fail!(
            "{}: process.terminal is true; the benchmark needs false",
            config_path.display()
        ));
    }
    if process["args"] != serde_json::json!(["/bin/true"]) {
        eprintln!(
            "skiff-bench: note: {} runs {} rather than [\"/bin/true\"]",
            config_path.display(),
            process["args"]
        );
    }
    Ok(bundle)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| String::from("unknown"))
}

/// Per-run tmpfs holding every runtime's `--root`; gone when the run ends.
struct StateDir {
    path: PathBuf,
}

impl StateDir {
    fn create() -> Result<StateDir> {
        let path = std::env::temp_dir().join(format!("skiff-bench.{}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|e| fail!("creating state dir {}: {e}", path.display()))?;
        let dir = StateDir { path };
        ns::mount_tmpfs(&dir.path)?;
        Ok(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Ok(target) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
            // SAFETY: `target` is a NUL-terminated path alive for the call; the mount
            // exists only in this process's private namespace.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}
