//! Linux capabilities by name, and the five sets of a process.

use super::{sys, SecurityError};

/// Every capability name the kernel headers define, by number.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability the running kernel knows. Read once per process: a process being set
/// up asks for every capability it names.
pub fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(NAMES.len() as u32 - 1)
    })
}

/// Capabilities this build and this kernel both know, for `skiff features`.
pub fn known() -> Vec<&'static str> {
    let last = last_cap() as usize;
    NAMES.iter().take(last + 1).copied().collect()
}

/// A capability number from its name, if the running kernel has it.
pub fn from_name(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    let n = NAMES.iter().position(|c| *c == full)? as u32;
    (n <= last_cap()).then_some(n)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Set(pub u64);

impl Set {
    fn from_names(names: &[String], which: &str) -> Set {
        let mut bits = 0u64;
        for name in names {
            match from_name(name) {
                Some(n) => bits |= 1 << n,
                None => tracing::warn!(
                    "capabilities.{which}: {name:?} is unknown to this kernel; skipped"
                ),
            }
        }
        Set(bits)
    }

    pub fn has(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CapSets {
    pub bounding: Set,
    pub effective: Set,
    pub inheritable: Set,
    pub permitted: Set,
    pub ambient: Set,
}

impl CapSets {
    pub fn from_spec(c: &crate::spec::Capabilities) -> CapSets {
        CapSets {
            bounding: Set::from_names(&c.bounding, "bounding"),
            effective: Set::from_names(&c.effective, "effective"),
            inheritable: Set::from_names(&c.inheritable, "inheritable"),
            permitted: Set::from_names(&c.permitted, "permitted"),
            ambient: Set::from_names(&c.ambient, "ambient"),
        }
    }
}

pub fn drop_bounding(keep: &Set) -> Result<(), SecurityError> {
    for n in 0..=last_cap() {
        if !keep.has(n) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            // EINVAL: the kernel lacks this capability; nothing to drop.
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                sys(
                    r,
                    format!("drop {} from the bounding set", NAMES[n as usize]),
                )?;
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

pub fn set(sets: &CapSets) -> Result<(), SecurityError> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |s: Set, i: usize| (s.0 >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: word(sets.effective, i),
        permitted: word(sets.permitted, i),
        inheritable: word(sets.inheritable, i),
    });
    // SAFETY: capset reads a v3 header and two data words, both valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    sys(r as libc::c_int, "capset")?;
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    sys(r, "clear ambient capabilities")?;
    for n in 0..=last_cap() {
        if sets.ambient.has(n) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    n as libc::c_ulong,
                    0,
                    0,
                )
            };
            // The kernel refuses an ambient capability missing from permitted or inheritable, as the
            // spec allows; say so and go on.
            if r < 0 {
                tracing::debug!(
                    "cannot raise ambient {}: {}",
                    NAMES[n as usize],
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(from_name("CAP_NET_RAW"), Some(13));
        assert_eq!(from_name("net_raw"), Some(13));
        assert_eq!(from_name("CAP_NOPE"), None);
        let s = Set::from_names(&["CAP_KILL".into(), "CAP_BOGUS".into()], "bounding");
        assert!(s.has(5) && !s.has(0));
    }
}
