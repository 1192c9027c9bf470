//! Locating the runtime binary under test.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The runtime under test: `$SKIFF_BIN`, else `<workspace>/target/debug/skiff`.
pub fn runtime_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = match std::env::var_os("SKIFF_BIN") {
            Some(b) if !b.is_empty() => PathBuf::from(b),
            _ => target_dir().join("debug").join("skiff"),
        };
        assert!(
            bin.is_file(),
            "runtime binary {} not found: run `cargo build --workspace --bins` or set SKIFF_BIN",
            bin.display()
        );
        assert!(
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() } == 0,
            "the skiff integration tests create real containers and must run as root"
        );
        bin
    })
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    workspace_dir().join("target")
}

/// The repository root (the parent of the `tests` crate).
pub fn workspace_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// True when the binary under test is runc (used to validate the tests themselves).
pub fn is_runc() -> bool {
    runtime_bin().file_name().and_then(|n| n.to_str()) == Some("runc")
}

/// Returns true (and prints why) when a skiff-only test should not run against runc.
pub fn skip_on_runc(why: &str) -> bool {
    if is_runc() {
        eprintln!("note: skipped against runc: {why}");
        return true;
    }
    false
}
