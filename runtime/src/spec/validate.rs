//! Checks on a parsed spec that types alone cannot express. Everything here runs before any namespace,
//! mount or process exists, so a bad config leaves nothing behind.

use std::collections::HashSet;
use std::path::{Component, Path};

use super::{NamespaceKind, Spec, SpecError, User};

/// Bounds that keep a hostile config from costing minutes or gigabytes; real configs are far below them.
pub const MAX_MOUNTS: usize = 4096;
pub const MAX_DEVICES: usize = 4096;
pub const MAX_PATH_LISTS: usize = 4096;
pub const MAX_HOOKS: usize = 256;
pub const MAX_ARGV_ENV_BYTES: usize = 2 * 1024 * 1024;
pub const MAX_GROUPS: usize = 65536;

/// (uid_t)-1, also (gid_t)-1: setresuid and setresgid read it as "leave unchanged", so a process
/// asked to run as it would keep the runtime's root. Never a usable id.
pub const UNCHANGED_ID: u32 = u32::MAX;

/// Why [`UNCHANGED_ID`] is refused, for every error that names a field holding it.
pub const UNCHANGED_ID_REASON: &str =
    "4294967295 is -1 as a uid_t or gid_t, which the kernel reads as \"leave unchanged\" (the process would stay root): not a valid id";

/// The field of `user` (`uid`, `gid`, `additionalGids[i]`) that holds [`UNCHANGED_ID`], if any.
pub fn unchanged_id_field(user: &User) -> Option<String> {
    if user.uid == UNCHANGED_ID {
        return Some("uid".into());
    }
    if user.gid == UNCHANGED_ID {
        return Some("gid".into());
    }
    let i = user
        .additional_gids
        .iter()
        .position(|g| *g == UNCHANGED_ID)?;
    Some(format!("additionalGids[{i}]"))
}

pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    check_version(&spec.oci_version)?;
    let root = spec.root.as_ref().ok_or_else(|| {
        SpecError::invalid("root", "missing: a container needs a root filesystem")
    })?;
    if root.path.is_empty() {
        return Err(SpecError::invalid("root.path", "empty"));
    }
    check_process(spec)?;
    check_mounts(spec)?;
    check_namespaces(spec)?;
    check_linux(spec)?;
    check_hooks(spec)?;
    Ok(())
}

fn check_version(v: &str) -> Result<(), SpecError> {
    let major = v.split('.').next().unwrap_or("");
    if major != "1" {
        return Err(SpecError::invalid(
            "ociVersion",
            format!("unsupported version {v:?}: skiff implements runtime-spec 1.x"),
        ));
    }
    Ok(())
}

fn check_process(spec: &Spec) -> Result<(), SpecError> {
    let p = spec
        .process
        .as_ref()
        .ok_or_else(|| SpecError::invalid("process", "missing: nothing to run"))?;
    if p.args.is_empty() && p.command_line.is_none() {
        return Err(SpecError::invalid("process.args", "empty: nothing to run"));
    }
    if !p.cwd.starts_with('/') {
        return Err(SpecError::invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", p.cwd),
        ));
    }
    check_no_nul("process.cwd", &p.cwd)?;
    let mut bytes = 0usize;
    for (i, a) in p.args.iter().enumerate() {
        check_no_nul(&format!("process.args[{i}]"), a)?;
        bytes += a.len() + 1;
    }
    for (i, e) in p.env.iter().enumerate() {
        let field = format!("process.env[{i}]");
        check_no_nul(&field, e)?;
        if !e.contains('=') || e.starts_with('=') {
            return Err(SpecError::invalid(field, format!("{e:?} is not KEY=VALUE")));
        }
        bytes += e.len() + 1;
    }
    if bytes > MAX_ARGV_ENV_BYTES {
        return Err(SpecError::invalid(
            "process.args/env",
            format!("{bytes} bytes exceed the {MAX_ARGV_ENV_BYTES}-byte limit"),
        ));
    }
    if let Some(field) = unchanged_id_field(&p.user) {
        return Err(SpecError::invalid(
            format!("process.user.{field}"),
            UNCHANGED_ID_REASON,
        ));
    }
    if p.user.additional_gids.len() > MAX_GROUPS {
        return Err(SpecError::invalid(
            "process.user.additionalGids",
            format!("more than {MAX_GROUPS} groups"),
        ));
    }
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits.iter().enumerate() {
        let field = format!("process.rlimits[{i}]");
        if super::rlimit_resource(&r.kind).is_none() {
            return Err(SpecError::invalid(
                field,
                format!("unknown rlimit type {:?}", r.kind),
            ));
        }
        if r.soft > r.hard {
            return Err(SpecError::invalid(
                field,
                format!("soft limit {} exceeds hard limit {}", r.soft, r.hard),
            ));
        }
        if !seen.insert(&r.kind) {
            return Err(SpecError::invalid(field, format!("duplicate {}", r.kind)));
        }
    }
    if let Some(adj) = p.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(SpecError::invalid(
                "process.oomScoreAdj",
                format!("{adj} is outside -1000..1000"),
            ));
        }
    }
    Ok(())
}

fn check_mounts(spec: &Spec) -> Result<(), SpecError> {
    if spec.mounts.len() > MAX_MOUNTS {
        return Err(SpecError::invalid(
            "mounts",
            format!(
                "{} entries exceed the limit of {MAX_MOUNTS}",
                spec.mounts.len()
            ),
        ));
    }
    for (i, m) in spec.mounts.iter().enumerate() {
        check_container_path(&format!("mounts[{i}].destination"), &m.destination)?;
        if let Some(src) = &m.source {
            check_no_nul(&format!("mounts[{i}].source"), src)?;
        }
        for (j, o) in m.options.iter().enumerate() {
            check_no_nul(&format!("mounts[{i}].options[{j}]"), o)?;
        }
    }
    Ok(())
}

fn check_namespaces(spec: &Spec) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for (i, ns) in spec.namespaces().iter().enumerate() {
        let field = format!("linux.namespaces[{i}]");
        if !seen.insert(ns.kind) {
            return Err(SpecError::invalid(
                field,
                format!("duplicate {} namespace", ns.kind.as_str()),
            ));
        }
        if let Some(path) = &ns.path {
            if !path.starts_with('/') {
                return Err(SpecError::invalid(
                    field + ".path",
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
    }
    if !seen.contains(&NamespaceKind::Mount) {
        return Err(SpecError::invalid(
            "linux.namespaces",
            "a mount namespace is required: the container's root is set up inside it",
        ));
    }
    if spec.hostname.is_some() && !seen.contains(&NamespaceKind::Uts) {
        return Err(SpecError::invalid(
            "hostname",
            "setting it needs a uts namespace in linux.namespaces",
        ));
    }
    if spec.domainname.is_some() && !seen.contains(&NamespaceKind::Uts) {
        return Err(SpecError::invalid(
            "domainname",
            "setting it needs a uts namespace in linux.namespaces",
        ));
    }
    let linux = match spec.linux() {
        Some(l) => l,
        None => return Ok(()),
    };
    let has_userns = seen.contains(&NamespaceKind::User);
    if !has_userns && (!linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty()) {
        return Err(SpecError::invalid(
            "linux.uidMappings",
            "id mappings need a user namespace in linux.namespaces",
        ));
    }
    if !linux.time_offsets.is_empty() && spec.namespace(NamespaceKind::Time).is_none() {
        return Err(SpecError::invalid(
            "linux.timeOffsets",
            "time offsets need a time namespace in linux.namespaces",
        ));
    }
    for key in linux.time_offsets.keys() {
        if key != "monotonic" && key != "boottime" {
            return Err(SpecError::invalid(
                "linux.timeOffsets",
                format!("unknown clock {key:?} (monotonic or boottime)"),
            ));
        }
    }
    Ok(())
}

fn check_linux(spec: &Spec) -> Result<(), SpecError> {
    let linux = match spec.linux() {
        Some(l) => l,
        None => return Ok(()),
    };
    if linux.devices.len() > MAX_DEVICES {
        return Err(SpecError::invalid("linux.devices", "too many entries"));
    }
    for (i, d) in linux.devices.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        check_container_path(&(field.clone() + ".path"), &d.path)?;
        if !matches!(d.kind.as_str(), "c" | "b" | "u" | "p") {
            return Err(SpecError::invalid(
                field + ".type",
                format!("{:?} is not one of c, b, u, p", d.kind),
            ));
        }
    }
    for (name, list) in [
        ("linux.maskedPaths", &linux.masked_paths),
        ("linux.readonlyPaths", &linux.readonly_paths),
    ] {
        if list.len() > MAX_PATH_LISTS {
            return Err(SpecError::invalid(name, "too many entries"));
        }
        for (i, p) in list.iter().enumerate() {
            check_container_path(&format!("{name}[{i}]"), p)?;
        }
    }
    if let Some(prop) = &linux.rootfs_propagation {
        if super::propagation_flag(prop).is_none() {
            return Err(SpecError::invalid(
                "linux.rootfsPropagation",
                format!("unknown propagation {prop:?}"),
            ));
        }
    }
    for key in linux.sysctl.keys() {
        check_sysctl(spec, key)?;
    }
    Ok(())
}

/// A sysctl is only safe to set when the namespace that scopes it is not the host's: a new one, or one
/// joined by path that is not the host's (a pod's pinned namespace). Otherwise the write would change the
/// host.
fn check_sysctl(spec: &Spec, key: &str) -> Result<(), SpecError> {
    let field = format!("linux.sysctl.{key}");
    if key.is_empty() || key.contains("..") || key.contains('\0') || key.starts_with(['.', '/']) {
        return Err(SpecError::invalid(field, "not a sysctl name"));
    }
    let own = |kind| match spec.namespace(kind) {
        None => false,
        Some(ns) => match &ns.path {
            None => true,
            Some(path) => !crate::nsfs::is_host_ns(kind.proc_name(), path),
        },
    };
    let ipc = key.starts_with("kernel.msg")
        || key.starts_with("kernel.sem")
        || key.starts_with("kernel.shm")
        || key.starts_with("fs.mqueue.");
    let needed = if ipc {
        Some(NamespaceKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NamespaceKind::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NamespaceKind::Uts)
    } else {
        None
    };
    match needed {
        Some(kind) if own(kind) => Ok(()),
        Some(kind) => Err(SpecError::invalid(
            field,
            format!(
                "needs a {} namespace that is not the host's (a new one, or a path to another)",
                kind.as_str()
            ),
        )),
        None => Err(SpecError::invalid(
            field,
            "not namespaced: setting it would change the host",
        )),
    }
}

fn check_hooks(spec: &Spec) -> Result<(), SpecError> {
    let hooks = match &spec.hooks {
        Some(h) => h,
        None => return Ok(()),
    };
    let kinds = [
        ("prestart", &hooks.prestart),
        ("createRuntime", &hooks.create_runtime),
        ("createContainer", &hooks.create_container),
        ("startContainer", &hooks.start_container),
        ("poststart", &hooks.poststart),
        ("poststop", &hooks.poststop),
    ];
    for (name, list) in kinds {
        if list.len() > MAX_HOOKS {
            return Err(SpecError::invalid(
                format!("hooks.{name}"),
                "too many hooks",
            ));
        }
        for (i, h) in list.iter().enumerate() {
            let field = format!("hooks.{name}[{i}]");
            if !h.path.starts_with('/') {
                return Err(SpecError::invalid(
                    field + ".path",
                    format!("{:?} is not an absolute path", h.path),
                ));
            }
            if let Some(t) = h.timeout {
                if t <= 0 {
                    return Err(SpecError::invalid(
                        field + ".timeout",
                        format!("{t} is not a positive number of seconds"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A path inside the container: `..` is refused outright rather than resolved, so that no later step
/// has to reason about where it would lead.
fn check_container_path(field: &str, path: &str) -> Result<(), SpecError> {
    check_no_nul(field, path)?;
    if path.is_empty() {
        return Err(SpecError::invalid(field, "empty path"));
    }
    if Path::new(path)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(SpecError::invalid(
            field,
            format!("{path:?} contains '..', which could leave the container's root"),
        ));
    }
    Ok(())
}

fn check_no_nul(field: &str, s: &str) -> Result<(), SpecError> {
    if s.contains('\0') {
        return Err(SpecError::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}
