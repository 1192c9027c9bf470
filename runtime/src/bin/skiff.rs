//! The `skiff` binary. It has its own C `main` rather than Rust's: std's start-up work (finding the
//! main thread's stack bounds by parsing /proc/self/maps, and an alternate signal stack for overflow
//! reports) is a sixth of the instructions a short command such as `skiff state` executes, and skiff
//! runs it twice whenever it re-executes itself from a protected view of its binary. `std::env::args`
//! works without it (glibc hands argv to std's initialiser).
// The unit-test harness brings its own main.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int};

#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // What std's start-up does and skiff relies on: a closed pipe on stdout is an error, not a
    // signal.
    // SAFETY: setting a signal's disposition to SIG_IGN involves no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // exit() flushes stdout, as returning from Rust's main would.
    std::process::exit(skiff_runtime::cli::main())
}
