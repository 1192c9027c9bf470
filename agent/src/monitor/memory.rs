//! Gives back the memory the monitor's set-up touched. Creating a container runs most of the runtime
//! library (config parsing, mounts, cgroups, seccomp) once; afterwards the monitor only relays output
//! for as long as the container lives, so the pages of that one-off work would otherwise sit in its
//! resident set, once per container, for the node's lifetime.

use std::ops::Range;

/// A mapping of /proc/self/smaps that can be dropped and faulted back in from its file unchanged.
#[derive(Debug, PartialEq, Eq)]
struct Clean {
    range: Range<usize>,
}

/// Returns the freed heap to the kernel, drops the clean file-backed pages (binary and library text,
/// read-only data) so only those the relay loop touches again come back, and drops the unused part of
/// the stack below the current frame.
pub fn shed() {
    // SAFETY: malloc_trim only hands free heap memory back to the kernel.
    unsafe { libc::malloc_trim(0) };
    if let Some(plan) = plan() {
        plan.shed();
    }
}

/// What [`shed`] drops, read from /proc/self/smaps ahead of time: a process that loses /proc during
/// its set-up (the infra, whose root becomes an empty tmpfs) plans while it still sees it and sheds
/// at the end of the set-up.
#[derive(Debug)]
pub struct Plan {
    clean: Vec<Clean>,
    stack: Option<Range<usize>>,
}

/// The mappings to drop as they are now, or `None` if /proc/self/smaps cannot be read.
pub fn plan() -> Option<Plan> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(Plan {
        clean: clean_mappings(&smaps),
        stack: stack_range(&smaps),
    })
}

impl Plan {
    /// Drops the planned mappings' pages and the free heap (see [`shed`]).
    pub fn shed(self) {
        let Plan { clean, stack } = self;
        for m in &clean {
            advise(&m.range, libc::MADV_RANDOM);
            advise(&m.range, libc::MADV_DONTNEED);
        }
        drop(clean);
        if let Some(r) = stack {
            shed_stack(r);
        }
        // SAFETY: malloc_trim only hands free heap memory back to the kernel.
        unsafe { libc::malloc_trim(0) };
    }
}

fn advise(r: &Range<usize>, advice: libc::c_int) {
    // SAFETY: the range is a whole mapping of this process taken from smaps, and only private,
    // never-written file pages or stack pages below the live frame are dropped: either refaults from
    // the file with the same contents, or was unused.
    unsafe { libc::madvise(r.start as *mut libc::c_void, r.end - r.start, advice) };
}

/// Drops the stack pages below the current frame, which the set-up's deeper calls left resident.
fn shed_stack(stack: Range<usize>) {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    // Only the main thread runs on the [stack] mapping.
    if !stack.contains(&here) {
        return;
    }
    // A generous margin below this frame: madvise and the calls after it still run there.
    let end = here.saturating_sub(16 * 1024) & !(page_size() - 1);
    if end > stack.start {
        advise(&(stack.start..end), libc::MADV_DONTNEED);
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(4096)
}

/// Private, non-writable, file-backed mappings with no copied-on-write page. A RELRO segment is
/// read-only too but was written during relocation; its `Anonymous` count keeps it out.
fn clean_mappings(smaps: &str) -> Vec<Clean> {
    let mut out = Vec::new();
    let mut current: Option<(Range<usize>, bool)> = None;
    for line in smaps.lines() {
        if let Some((range, candidate)) = header(line) {
            current = Some((range, candidate));
            continue;
        }
        let Some(rest) = line.strip_prefix("Anonymous:") else {
            continue;
        };
        if let Some((range, true)) = current.take() {
            if rest.trim().trim_end_matches("kB").trim() == "0" {
                out.push(Clean { range });
            }
        }
    }
    out
}

/// The range of a mapping header line and whether it is a candidate (private, not writable, file).
fn header(line: &str) -> Option<(Range<usize>, bool)> {
    let mut f = line.split_whitespace();
    let (lo, hi) = f.next()?.split_once('-')?;
    let range = usize::from_str_radix(lo, 16).ok()?..usize::from_str_radix(hi, 16).ok()?;
    let perms = f.next()?.as_bytes();
    if perms.len() != 4 {
        return None;
    }
    let (_offset, _dev, inode) = (f.next()?, f.next()?, f.next()?);
    let path = f.next().unwrap_or("");
    let candidate = perms[1] != b'w' && perms[3] == b'p' && inode != "0" && path.starts_with('/');
    Some((range, candidate))
}

fn stack_range(smaps: &str) -> Option<Range<usize>> {
    smaps
        .lines()
        .filter(|l| l.ends_with("[stack]"))
        .find_map(header)
        .map(|(r, _)| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0020000 r--p 00000000 fe:01 123 /usr/bin/skiff-monitor
Rss:                 128 kB
Anonymous:             0 kB
55d0a0020000-55d0a0100000 r-xp 00020000 fe:01 123 /usr/bin/skiff-monitor
Rss:                 900 kB
Anonymous:             0 kB
55d0a0100000-55d0a0110000 r--p 00100000 fe:01 123 /usr/bin/skiff-monitor
Anonymous:            64 kB
55d0a0110000-55d0a0112000 rw-p 00110000 fe:01 123 /usr/bin/skiff-monitor
Anonymous:             8 kB
7f0000000000-7f0000001000 r--s 00000000 fe:01 9 /etc/shared
Anonymous:             0 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:            44 kB
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_private_file_mappings_are_dropped() {
        let got: Vec<_> = clean_mappings(SMAPS).into_iter().map(|c| c.range).collect();
        assert_eq!(
            got,
            vec![
                0x55d0a0000000..0x55d0a0020000,
                0x55d0a0020000..0x55d0a0100000
            ]
        );
    }

    #[test]
    fn a_plan_made_ahead_sheds_later() {
        let plan = plan().expect("smaps readable");
        assert!(!plan.clean.is_empty(), "no clean mapping found: {plan:?}");
        assert!(plan.stack.is_some());
        let before: Vec<u8> = (0..=255).collect();
        plan.shed();
        let after: Vec<u8> = (0..=255).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn finds_the_stack() {
        assert_eq!(stack_range(SMAPS), Some(0x7ffc00000000..0x7ffc00021000));
    }

    #[test]
    fn shedding_keeps_the_process_working() {
        let before: Vec<u8> = (0..=255).collect();
        shed();
        let after: Vec<u8> = (0..=255).collect();
        assert_eq!(before, after);
        assert!(format!("{:?}", std::env::current_dir()).contains("Ok"));
    }
}
