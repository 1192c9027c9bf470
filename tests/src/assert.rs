//! Assertions on runtime command results that print everything needed to debug a failure.

use crate::cmd::Output;

/// Panics with the full command output unless it succeeded.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.success(), "{what}: expected success{out}");
}

/// True when stdout+stderr contains `needle`, case-insensitively.
pub fn mentions(out: &Output, needle: &str) -> bool {
    out.all_text()
        .to_lowercase()
        .contains(&needle.to_lowercase())
}

/// Asserts the command failed (non-zero, not a hang) and that its output mentions, for
/// every group, at least one of the group's substrings (case-insensitive).
///
/// Runtimes word their errors differently; groups name the offending thing loosely
/// (e.g. `&["config.json"]`, `&["not exist", "not found", "no such"]`).
pub fn assert_failed_mentioning(out: &Output, what: &str, groups: &[&[&str]]) {
    assert!(!out.timed_out, "{what}: command hung{out}");
    assert!(
        out.code.is_some_and(|c| c != 0),
        "{what}: expected a non-zero exit{out}"
    );
    for group in groups {
        assert!(
            group.iter().any(|n| mentions(out, n)),
            "{what}: error output should mention one of {group:?}{out}"
        );
    }
}
