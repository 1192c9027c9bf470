//! `skiff-monitor pinns`: the command line skiffd writes to have a pod's namespaces pinned, where
//! they are pinned, and the exit code that tells a refused sysctl from other failures.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use skiff_runtime::spec::IdMapping;

/// The namespaces a pod may pin, by their `/proc/self/ns` names; the user namespace first, since the
/// others are joined with its rights.
pub const PINNABLE: [&str; 4] = ["user", "net", "ipc", "uts"];

/// What `skiff-monitor pinns` is asked to do.
#[derive(Debug, Default, PartialEq)]
pub struct PinOptions {
    /// The pod directory: namespaces go to `<dir>/ns/<name>`, the shm tmpfs to `<dir>/shm`.
    pub dir: PathBuf,
    pub namespaces: Vec<String>,
    pub hostname: Option<String>,
    /// `/proc/sys`-relative keys (slash-separated) and their values.
    pub sysctls: Vec<(String, String)>,
    /// Size in bytes of the pod's /dev/shm tmpfs; none when 0.
    pub shm_size: u64,
    /// The uid and gid mappings of a new user namespace that owns the others (with `user`).
    pub userns: Option<(IdMapping, IdMapping)>,
}

impl PinOptions {
    /// The command line skiffd passes (after `pinns`).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["--dir".to_string(), self.dir.to_string_lossy().into_owned()];
        for ns in &self.namespaces {
            a.push(format!("--{ns}"));
        }
        if let Some(h) = &self.hostname {
            a.extend(["--hostname".into(), h.clone()]);
        }
        for (k, v) in &self.sysctls {
            a.extend(["--sysctl".into(), format!("{k}={v}")]);
        }
        if self.shm_size > 0 {
            a.extend(["--shm-size".into(), self.shm_size.to_string()]);
        }
        if let Some((u, g)) = &self.userns {
            a.extend([
                "--uid-map".into(),
                map_arg(u),
                "--gid-map".into(),
                map_arg(g),
            ]);
        }
        a
    }

    pub fn parse(args: &[String]) -> Result<PinOptions> {
        let mut o = PinOptions::default();
        let (mut uid, mut gid) = (None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--dir" => o.dir = value("--dir")?.into(),
                "--hostname" => o.hostname = Some(value("--hostname")?),
                "--sysctl" => {
                    let kv = value("--sysctl")?;
                    let (k, v) = kv.split_once('=').context("--sysctl wants key=value")?;
                    o.sysctls.push((k.into(), v.into()));
                }
                "--shm-size" => o.shm_size = value("--shm-size")?.parse()?,
                "--uid-map" => uid = Some(parse_map(&value("--uid-map")?)?),
                "--gid-map" => gid = Some(parse_map(&value("--gid-map")?)?),
                flag => match flag.strip_prefix("--") {
                    Some(ns) if PINNABLE.contains(&ns) => o.namespaces.push(ns.into()),
                    _ => bail!("unknown argument {flag:?}"),
                },
            }
        }
        if !o.dir.is_absolute() {
            bail!("--dir must be an absolute path");
        }
        let user = o.namespaces.iter().any(|n| n == "user");
        o.userns = match (uid, gid) {
            (Some(u), Some(g)) if user => Some((u, g)),
            (None, None) if !user => None,
            _ => bail!("--user needs --uid-map and --gid-map, and they need --user"),
        };
        Ok(o)
    }
}

/// `container:host:size`.
fn map_arg(m: &IdMapping) -> String {
    format!("{}:{}:{}", m.container_id, m.host_id, m.size)
}

fn parse_map(s: &str) -> Result<IdMapping> {
    let n: Vec<u32> = s
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("mapping {s:?}: want container:host:size"))?;
    match n[..] {
        [container_id, host_id, size] => Ok(IdMapping {
            container_id,
            host_id,
            size,
        }),
        _ => bail!("mapping {s:?}: want container:host:size"),
    }
}

/// `<dir>/ns/<name>`: where a pod's pinned namespace lives.
pub fn pin_path(dir: &Path, ns: &str) -> PathBuf {
    dir.join("ns").join(ns)
}

/// The exit code of `pinns` when the kernel refused a sysctl value: the request was wrong, not the node.
pub const EXIT_BAD_SYSCTL: i32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let o = PinOptions {
            dir: "/run/x".into(),
            namespaces: vec!["net".into(), "uts".into()],
            hostname: Some("web".into()),
            sysctls: vec![("net/ipv4/ip_forward".into(), "1".into())],
            shm_size: 64 << 20,
            userns: None,
        };
        assert_eq!(PinOptions::parse(&o.to_args()).unwrap(), o);
        let map = |h| IdMapping {
            container_id: 0,
            host_id: h,
            size: 65536,
        };
        let u = PinOptions {
            dir: "/run/x".into(),
            namespaces: vec!["user".into(), "net".into()],
            userns: Some((map(1000), map(2000))),
            ..Default::default()
        };
        assert_eq!(PinOptions::parse(&u.to_args()).unwrap(), u);
        let bad = |a: &[&str]| {
            let v: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            PinOptions::parse(&v).is_err()
        };
        assert!(bad(&["--dir", "rel"]));
        assert!(bad(&["--dir", "/x", "--pid"]));
        assert!(bad(&["--dir", "/x", "--sysctl", "novalue"]));
        assert!(bad(&["--dir"]));
        assert!(bad(&["--dir", "/x", "--user"]));
        assert!(bad(&[
            "--dir",
            "/x",
            "--uid-map",
            "0:1:1",
            "--gid-map",
            "0:1:1"
        ]));
        assert!(bad(&[
            "--dir",
            "/x",
            "--user",
            "--uid-map",
            "0:1",
            "--gid-map",
            "0:1:1"
        ]));
    }
}
