//! The runner of the root-run suites that need a single-threaded test binary (each case may
//! re-run the binary itself inside new namespaces, which the standard harness's threads forbid).

pub type CaseResult = Result<(), String>;
pub type Case = (&'static str, fn() -> CaseResult);

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs the cases whose names contain one of the command-line filters (all without filters),
/// `after` following each one, prints cargo's result line and exits with the suite's status.
pub fn run(suite: &str, cases: &[Case], after: fn() -> CaseResult) -> ! {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{suite} tests need root");
        std::process::exit(1);
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in cases {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        match case().and_then(|()| after()) {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                println!("test {name} ... FAILED\n    {e}\n");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
    std::process::exit(0)
}
