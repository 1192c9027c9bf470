//! The security context: capabilities, seccomp, devices and the masked/read-only proc paths.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use cri_api::v1 as cri;
use skiff_runtime::security::caps;
use skiff_runtime::spec::{Capabilities, Device, DeviceRule, Seccomp};
use tonic::Status;

use super::{bad, SpecInput};

pub use skiff_runtime::spec::default::{DEFAULT_CAPS, DEFAULT_READONLY_PATHS as DEFAULT_READONLY};

/// runc's masked paths plus the power-capping interface, as containerd masks it.
fn default_masked() -> Vec<&'static str> {
    let mut v = skiff_runtime::spec::default::DEFAULT_MASKED_PATHS.to_vec();
    v.push("/sys/devices/virtual/powercap");
    v
}

/// Larger seccomp profiles than this are refused.
const MAX_PROFILE: u64 = 4 << 20;

/// `CAP_X` for `x`, `X` or `CAP_X`, if the kernel knows it.
fn cap_name(field: &str, name: &str) -> Result<String, Status> {
    let n = caps::from_name(name).ok_or_else(|| bad(field, name, "unknown capability"))?;
    Ok(caps::known()[n as usize].to_string())
}

/// What "all capabilities" means for a container: those the daemon itself holds (as containerd
/// does), since no process can grant more; a node's root may lack some (here CAP_SYS_RESOURCE).
pub fn current_capabilities() -> Vec<String> {
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    caps::known()
        .into_iter()
        .enumerate()
        .filter(|(n, _)| *n < 64 && eff & (1u64 << n) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The default set, ALL or nothing as asked, then the named additions, then the named drops.
pub fn capabilities(input: &SpecInput) -> Result<Capabilities, Status> {
    let all = current_capabilities();
    let sc = input.security().cloned().unwrap_or_default();
    let c = sc.capabilities.unwrap_or_default();
    let is_all = |s: &String| s.eq_ignore_ascii_case("ALL");
    let mut set: Vec<String> = if sc.privileged || c.add_capabilities.iter().any(is_all) {
        all.clone()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if !sc.privileged {
        if c.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        for a in c.add_capabilities.iter().filter(|s| !is_all(s)) {
            let n = cap_name("capabilities.add_capabilities", a)?;
            if !set.contains(&n) {
                set.push(n);
            }
        }
        for d in c.drop_capabilities.iter().filter(|s| !is_all(s)) {
            let n = cap_name("capabilities.drop_capabilities", d)?;
            set.retain(|s| *s != n);
        }
    }
    let mut ambient = Vec::new();
    for a in &c.add_ambient_capabilities {
        let n = cap_name("capabilities.add_ambient_capabilities", a)?;
        if !set.contains(&n) {
            set.push(n.clone());
        }
        ambient.push(n);
    }
    Ok(Capabilities {
        bounding: set.clone(),
        effective: set.clone(),
        permitted: set,
        inheritable: ambient.clone(),
        ambient,
    })
}

/// The seccomp filter the security context asks for; none for privileged containers.
// Older kubelets still send the deprecated `seccomp_profile_path`.
#[allow(deprecated)]
pub fn seccomp(input: &SpecInput, caps: &[String]) -> Result<Option<Seccomp>, Status> {
    use cri::security_profile::ProfileType;
    let Some(sc) = input.security() else {
        return Ok(None);
    };
    if sc.privileged {
        return Ok(None);
    }
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => runtime_default(caps).map(Some),
            Ok(ProfileType::Unconfined) => Ok(None),
            Ok(ProfileType::Localhost) => localhost("seccomp.localhost_ref", &p.localhost_ref),
            Err(_) => Err(bad(
                "seccomp.profile_type",
                &p.profile_type.to_string(),
                "unknown profile type",
            )),
        };
    }
    let legacy = sc.seccomp_profile_path.as_str();
    match legacy {
        "" | "unconfined" => Ok(None),
        "runtime/default" | "docker/default" => runtime_default(caps).map(Some),
        _ => match legacy.strip_prefix("localhost/") {
            Some(path) => localhost("seccomp_profile_path", path),
            None => Err(bad("seccomp_profile_path", legacy, "unknown profile")),
        },
    }
}

fn runtime_default(caps: &[String]) -> Result<Seccomp, Status> {
    skiff_runtime::security::seccomp::default_profile_for(caps)
        .map_err(|e| Status::internal(format!("built-in seccomp profile: {e}")))
}

/// A profile file on the node: absolute, present, and a valid `linux.seccomp` object.
fn localhost(field: &str, path: &str) -> Result<Option<Seccomp>, Status> {
    use std::io::Read;
    if !path.starts_with('/') {
        return Err(bad(field, path, "must be an absolute path"));
    }
    let file = std::fs::File::open(path).map_err(|e| bad(field, path, &e.to_string()))?;
    let mut data = Vec::new();
    file.take(MAX_PROFILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| bad(field, path, &e.to_string()))?;
    if data.len() as u64 > MAX_PROFILE {
        return Err(bad(field, path, "profile is too large"));
    }
    // serde's messages quote what they found: a file that is not a profile (a key, a password
    // file) must not reach the client's error or the logs, only where it stopped making sense.
    let profile: Seccomp = serde_json::from_slice(&data).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Data => "not a seccomp profile",
            Category::Syntax | Category::Io => "not JSON",
            Category::Eof => "JSON that ends too early",
        };
        let why = format!("{what} (at line {}, column {})", e.line(), e.column());
        bad(field, path, &why)
    })?;
    skiff_runtime::security::seccomp::compile(&profile).map_err(|e| {
        let why = format!("invalid seccomp profile: {}", without_value(e));
        bad(field, path, &why)
    })?;
    Ok(Some(profile))
}

/// A compile error with the value it quotes from the file left out: which field is wrong is the
/// client's business, what the file holds is not.
fn without_value(e: skiff_runtime::security::seccomp::SeccompError) -> String {
    use skiff_runtime::security::seccomp::SeccompError;
    match e {
        SeccompError::Invalid { field, .. } => format!("{field}: invalid value"),
        other => other.to_string(),
    }
}

/// The config's masked and read-only paths (kubelet sends the defaults; others get them too); none
/// for privileged containers.
pub fn paths(input: &SpecInput) -> (Vec<String>, Vec<String>) {
    let sc = input.security().cloned().unwrap_or_default();
    if sc.privileged {
        return (Vec::new(), Vec::new());
    }
    let or_default = |given: Vec<String>, d: &[&str]| {
        if given.is_empty() {
            d.iter().map(|s| s.to_string()).collect()
        } else {
            given
        }
    };
    (
        or_default(sc.masked_paths, &default_masked()),
        or_default(sc.readonly_paths, &DEFAULT_READONLY),
    )
}

/// `linux.devices` and the device cgroup rules: deny by default (the runtime adds the standard
/// devices), allow each configured device; privileged containers get every host device.
pub fn devices(input: &SpecInput) -> Result<(Vec<Device>, Vec<DeviceRule>), Status> {
    if input.privileged() {
        let allow_all = DeviceRule {
            allow: true,
            access: Some("rwm".into()),
            ..Default::default()
        };
        return Ok((host_devices(Path::new("/dev")), vec![allow_all]));
    }
    let mut devices = Vec::new();
    let mut rules = vec![DeviceRule {
        allow: false,
        access: Some("rwm".into()),
        ..Default::default()
    }];
    for d in &input.config.devices {
        let (dev, rule) = device(d)?;
        rules.push(rule);
        devices.push(dev);
    }
    Ok((devices, rules))
}

fn device(d: &cri::Device) -> Result<(Device, DeviceRule), Status> {
    if !d.container_path.starts_with('/') || d.container_path.split('/').any(|c| c == "..") {
        return Err(bad(
            "devices.container_path",
            &d.container_path,
            "must be an absolute path without ..",
        ));
    }
    let perms = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    if perms.chars().any(|c| !"rwm".contains(c)) {
        return Err(bad(
            "devices.permissions",
            perms,
            "may only contain r, w and m",
        ));
    }
    let dev = device_node(Path::new(&d.host_path), &d.container_path)
        .ok_or_else(|| bad("devices.host_path", &d.host_path, "is not a device"))?;
    let rule = DeviceRule {
        allow: true,
        kind: Some(dev.kind.clone()),
        major: Some(dev.major),
        minor: Some(dev.minor),
        access: Some(perms.into()),
    };
    Ok((dev, rule))
}

/// A host device node as a `linux.devices` entry at `dest`.
fn device_node(host: &Path, dest: &str) -> Option<Device> {
    let m = std::fs::metadata(host).ok()?;
    let ft = m.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return None;
    };
    let rdev = m.rdev();
    Some(Device {
        kind: kind.into(),
        path: dest.into(),
        major: libc::major(rdev) as i64,
        minor: libc::minor(rdev) as i64,
        file_mode: Some(m.mode() & 0o7777),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
    })
}

/// Every device node under the host's /dev, except the per-container ones the runtime makes.
fn host_devices(dir: &Path) -> Vec<Device> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            let name = e.file_name();
            if !matches!(name.to_str(), Some("pts" | "shm" | "mqueue" | "fd")) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
            continue;
        }
        if let Some(d) = path.to_str().and_then(|p| device_node(&path, p)) {
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_value;
    use skiff_runtime::security::seccomp::SeccompError;

    #[test]
    fn compile_errors_leave_the_value_out() {
        let e = SeccompError::Invalid {
            field: "linux.seccomp.defaultAction".into(),
            value: "s3\"cr3t".into(),
        };
        assert_eq!(
            without_value(e),
            "linux.seccomp.defaultAction: invalid value"
        );
    }
}
