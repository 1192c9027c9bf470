//! The runtime spec's mount options, turned into mount(2) flags, propagation changes, recursive
//! `mount_setattr` attributes and the fs-specific data string.

use libc::c_ulong;

/// `MS_NOSYMFOLLOW` (Linux 5.10); spelled out because not every libc exports it.
pub const MS_NOSYMFOLLOW: c_ulong = 256;

/// `MOUNT_ATTR_*` values of `mount_setattr(2)`.
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    pub const ATIME_MASK: u64 = 0x70;
    pub const RELATIME: u64 = 0x0;
    pub const NOATIME: u64 = 0x10;
    pub const STRICTATIME: u64 = 0x20;
    pub const NODIRATIME: u64 = 0x80;
    pub const NOSYMFOLLOW: u64 = 0x200000;
}

/// One mount entry's options, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags for mount(2) (and for the remount of a bind).
    pub flags: c_ulong,
    /// Propagation changes applied after the mount, in order.
    pub propagation: Vec<c_ulong>,
    /// `bind` (false) or `rbind` (true).
    pub bind: Option<bool>,
    /// Recursive attributes to set and clear with `mount_setattr(AT_RECURSIVE)`.
    pub attr_set: u64,
    pub attr_clr: u64,
    /// Options the kernel's filesystem gets as its data string.
    pub data: Vec<String>,
}

impl MountOptions {
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// Flags that only a remount can apply to a bind mount.
    pub fn remount_flags(&self) -> c_ulong {
        self.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT)
    }

    pub fn has_recursive_attrs(&self) -> bool {
        self.attr_set != 0 || self.attr_clr != 0
    }
}

/// Per-mount flags as `mount_setattr` attributes: (set, clear). With `exact`, every per-mount
/// attribute not in `flags` is cleared, which is what a bind remount with `flags` does; without,
/// attributes not named are left as they are (for mounts whose flags a user namespace cannot clear).
pub fn flags_to_attr(flags: c_ulong, exact: bool) -> (u64, u64) {
    let map = [
        (libc::MS_RDONLY, attr::RDONLY),
        (libc::MS_NOSUID, attr::NOSUID),
        (libc::MS_NODEV, attr::NODEV),
        (libc::MS_NOEXEC, attr::NOEXEC),
        (libc::MS_NODIRATIME, attr::NODIRATIME),
        (MS_NOSYMFOLLOW, attr::NOSYMFOLLOW),
    ];
    let mut set = 0;
    let mut all = 0;
    for (ms, a) in map {
        all |= a;
        if flags & ms != 0 {
            set |= a;
        }
    }
    let atime = if flags & libc::MS_NOATIME != 0 {
        Some(attr::NOATIME)
    } else if flags & libc::MS_STRICTATIME != 0 {
        Some(attr::STRICTATIME)
    } else if flags & libc::MS_RELATIME != 0 {
        Some(attr::RELATIME)
    } else {
        None
    };
    let mut clr = if exact { all & !set } else { 0 };
    if let Some(mode) = atime {
        set |= mode;
        clr |= attr::ATIME_MASK;
    } else if exact {
        clr |= attr::ATIME_MASK;
    }
    (set, clr)
}

/// An option that is recognised but not implemented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// (name, flag, true when the option clears the flag instead of setting it)
const FLAGS: &[(&str, c_ulong, bool)] = &[
    ("ro", libc::MS_RDONLY, false),
    ("rw", libc::MS_RDONLY, true),
    ("suid", libc::MS_NOSUID, true),
    ("nosuid", libc::MS_NOSUID, false),
    ("dev", libc::MS_NODEV, true),
    ("nodev", libc::MS_NODEV, false),
    ("exec", libc::MS_NOEXEC, true),
    ("noexec", libc::MS_NOEXEC, false),
    ("sync", libc::MS_SYNCHRONOUS, false),
    ("async", libc::MS_SYNCHRONOUS, true),
    ("dirsync", libc::MS_DIRSYNC, false),
    ("remount", libc::MS_REMOUNT, false),
    ("mand", libc::MS_MANDLOCK, false),
    ("nomand", libc::MS_MANDLOCK, true),
    ("atime", libc::MS_NOATIME, true),
    ("noatime", libc::MS_NOATIME, false),
    ("diratime", libc::MS_NODIRATIME, true),
    ("nodiratime", libc::MS_NODIRATIME, false),
    ("relatime", libc::MS_RELATIME, false),
    ("norelatime", libc::MS_RELATIME, true),
    ("strictatime", libc::MS_STRICTATIME, false),
    ("nostrictatime", libc::MS_STRICTATIME, true),
    ("lazytime", libc::MS_LAZYTIME, false),
    ("nolazytime", libc::MS_LAZYTIME, true),
    ("nosymfollow", MS_NOSYMFOLLOW, false),
    ("symfollow", MS_NOSYMFOLLOW, true),
];

const PROPAGATION: &[&str] = &[
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// (name, attribute, true when the option clears it)
const RECURSIVE: &[(&str, u64, bool)] = &[
    ("rro", attr::RDONLY, false),
    ("rrw", attr::RDONLY, true),
    ("rnosuid", attr::NOSUID, false),
    ("rsuid", attr::NOSUID, true),
    ("rnodev", attr::NODEV, false),
    ("rdev", attr::NODEV, true),
    ("rnoexec", attr::NOEXEC, false),
    ("rexec", attr::NOEXEC, true),
    ("rnodiratime", attr::NODIRATIME, false),
    ("rdiratime", attr::NODIRATIME, true),
    ("rnosymfollow", attr::NOSYMFOLLOW, false),
    ("rsymfollow", attr::NOSYMFOLLOW, true),
];

/// Recursive atime modes: each replaces the whole atime field.
const RECURSIVE_ATIME: &[(&str, u64)] = &[
    ("rrelatime", attr::RELATIME),
    ("rnorelatime", attr::RELATIME),
    ("rnoatime", attr::NOATIME),
    ("ratime", attr::RELATIME),
    ("rstrictatime", attr::STRICTATIME),
    ("rnostrictatime", attr::RELATIME),
];

const UNSUPPORTED: &[&str] = &["idmap", "ridmap"];

/// Every option name skiff recognises (for `skiff features`).
pub fn mount_options() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = FLAGS.iter().map(|f| f.0).collect();
    all.extend(["bind", "rbind"]);
    all.extend(PROPAGATION);
    all.extend(RECURSIVE.iter().map(|r| r.0));
    all.extend(RECURSIVE_ATIME.iter().map(|r| r.0));
    all
}

/// Parses a spec mount's options. Options skiff does not know go into the data string, as the
/// filesystem may understand them (`size=64m`, `mode=755`).
pub fn parse(options: &[String]) -> Result<MountOptions, Unsupported> {
    let mut out = MountOptions::default();
    for opt in options {
        let opt = opt.as_str();
        if UNSUPPORTED.contains(&opt) {
            return Err(Unsupported(opt.to_owned()));
        }
        if let Some(&(_, flag, clear)) = FLAGS.iter().find(|f| f.0 == opt) {
            if clear {
                out.flags &= !flag;
            } else {
                out.flags |= flag;
            }
        } else if opt == "bind" || opt == "rbind" {
            out.bind = Some(opt == "rbind");
        } else if let Some(flag) = crate::spec::propagation_flag(opt) {
            out.propagation.push(flag);
        } else if let Some(&(_, a, clear)) = RECURSIVE.iter().find(|r| r.0 == opt) {
            set_attr(&mut out, a, clear);
        } else if let Some(&(_, mode)) = RECURSIVE_ATIME.iter().find(|r| r.0 == opt) {
            out.attr_clr |= attr::ATIME_MASK;
            out.attr_set = (out.attr_set & !attr::ATIME_MASK) | mode;
        } else if !opt.is_empty() {
            out.data.push(opt.to_owned());
        }
    }
    Ok(out)
}

fn set_attr(out: &mut MountOptions, a: u64, clear: bool) {
    if clear {
        out.attr_set &= !a;
        out.attr_clr |= a;
    } else {
        out.attr_set |= a;
        out.attr_clr &= !a;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> MountOptions {
        let v: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        parse(&v).expect("parse")
    }

    #[test]
    fn flags_set_and_clear_in_order() {
        let o = p(&["nosuid", "ro", "noexec", "rw", "nodev"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV);
        assert_eq!(o.bind, None);
    }

    #[test]
    fn bind_propagation_and_data() {
        let o = p(&["rbind", "rslave", "size=64k", "mode=755", "ro"]);
        assert_eq!(o.bind, Some(true));
        assert_eq!(o.propagation, vec![libc::MS_SLAVE | libc::MS_REC]);
        assert_eq!(o.data_string().as_deref(), Some("size=64k,mode=755"));
        assert_eq!(o.remount_flags(), libc::MS_RDONLY);
    }

    #[test]
    fn recursive_attributes() {
        let o = p(&["rro", "rnosuid", "rnoatime"]);
        assert_eq!(
            o.attr_set,
            attr::RDONLY | attr::NOSUID | attr::NOATIME,
            "{o:?}"
        );
        assert_eq!(o.attr_clr, attr::ATIME_MASK);
        let o = p(&["rro", "rrw"]);
        assert_eq!(o.attr_set, 0);
        assert_eq!(o.attr_clr, attr::RDONLY);
    }

    #[test]
    fn flags_as_attributes() {
        let f = libc::MS_RDONLY | libc::MS_NOEXEC | libc::MS_NOATIME;
        let (set, clr) = flags_to_attr(f, false);
        assert_eq!(set, attr::RDONLY | attr::NOEXEC | attr::NOATIME);
        assert_eq!(clr, attr::ATIME_MASK);
        let (set, clr) = flags_to_attr(libc::MS_RDONLY, true);
        assert_eq!(set, attr::RDONLY);
        assert_eq!(
            clr,
            attr::NOSUID
                | attr::NODEV
                | attr::NOEXEC
                | attr::NODIRATIME
                | attr::NOSYMFOLLOW
                | attr::ATIME_MASK
        );
    }

    #[test]
    fn idmap_is_refused() {
        assert_eq!(
            parse(&["idmap".to_string()]),
            Err(Unsupported("idmap".into()))
        );
    }

    #[test]
    fn every_listed_option_parses() {
        for name in mount_options() {
            assert!(parse(&[name.to_string()]).is_ok(), "{name}");
            let o = parse(&[name.to_string()]).unwrap_or_default();
            assert!(o.data.is_empty(), "{name} fell through to data");
        }
    }
}
