//! From a pulled image to an OCI bundle: an overlayfs root over the image's layers with a private
//! writable layer, and a config.json built from the image's run defaults and the caller's overrides.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::rootfs::{layer_dirs, lowerdir_option, run_config, RunConfig};
pub use super::store::bundles_root;
use super::store::{ImageRecord, Store};
use crate::rootfs::resolve::open_in_root;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Image(#[from] super::error::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {image} has no command to run: give one after `--` or with --entrypoint")]
    NoCommand { image: String },
    #[error("{origin} {user:?}: {reason}")]
    User {
        /// `--user` or the image's `User`.
        origin: &'static str,
        user: String,
        reason: String,
    },
    #[error("--env {0:?} is not KEY=VALUE")]
    Env(String),
}

/// What the caller changes about the image's defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub entrypoint: Option<String>,
    /// Replaces the image's Cmd when not empty.
    pub args: Vec<String>,
    /// `KEY=VALUE`, over the image's.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub hostname: String,
}

/// Builds `dir` (which must not exist) into a bundle for `image`.
pub fn make_bundle(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    o: &Overrides,
) -> Result<(), BundleError> {
    let result = build(store, image, dir, o);
    if result.is_err() {
        remove_bundle(dir);
    }
    result
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

fn build(store: &Store, image: &ImageRecord, dir: &Path, o: &Overrides) -> Result<(), BundleError> {
    // Shared with pulls, exclusive to rmi and prune: the layers found here stay until the
    // use is recorded.
    let _gc = store.lock("gc", false)?;
    let rc = run_config(store, image)?;
    let lowers = layer_dirs(store, image)?;
    if let Some(parent) = dir.parent() {
        crate::private_dir::ensure(parent).map_err(io_err("create", parent))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    store.record_use(image, dir)?;
    for sub in ["upper", "work", "rootfs"] {
        std::fs::create_dir(dir.join(sub)).map_err(io_err("create", &dir.join(sub)))?;
    }
    mount_overlay(dir, &lowers)?;
    let spec = spec_for(image, &rc, &dir.join("rootfs"), o)?;
    let data = serde_json::to_vec_pretty(&spec).unwrap_or_default();
    let path = dir.join("config.json");
    crate::state::write_atomic(&path, &data, 0o600).map_err(|e| BundleError::Io {
        what: "write",
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Mounts `dir/rootfs` as an overlay of `lowers` (lowest first) with `dir/upper` and `dir/work`,
/// which must exist, as its writable layer.
pub fn mount_overlay(dir: &Path, lowers: &[PathBuf]) -> Result<(), BundleError> {
    let rootfs = dir.join("rootfs");
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir_option(lowers),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let c = |s: &str| CString::new(s).unwrap_or_default();
    let target = c(&rootfs.to_string_lossy());
    let data = c(&data);
    // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io_err("mount overlay on", &rootfs)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Unmounts the bundle's root and deletes the bundle; for bundles this module made.
pub fn remove_bundle(dir: &Path) {
    if let Ok(c) = CString::new(dir.join("rootfs").as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2 reads a valid path; a path that is not a mount point just fails.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn spec_for(
    image: &ImageRecord,
    rc: &RunConfig,
    rootfs: &Path,
    o: &Overrides,
) -> Result<Value, BundleError> {
    let args = command(image, rc, o)?;
    let env = environment(rc, o)?;
    let (origin, user_spec) = match (&o.user, &rc.user) {
        (Some(u), _) => ("--user", u.as_str()),
        (None, u) => ("the image's User", u.as_deref().unwrap_or("")),
    };
    let (uid, gid, groups) = resolve_user(rootfs, user_spec, origin)?;
    let mut spec = crate::spec::default_spec(false);
    spec["root"] = json!({ "path": rootfs, "readonly": false });
    spec["hostname"] = json!(o.hostname);
    let p = &mut spec["process"];
    p["terminal"] = json!(o.tty);
    p["args"] = json!(args);
    p["env"] = json!(env);
    p["cwd"] = json!(rc
        .working_dir
        .clone()
        .filter(|w| w.starts_with('/'))
        .unwrap_or("/".into()));
    p["user"] = json!({ "uid": uid, "gid": gid, "additionalGids": groups });
    spec["annotations"] = json!({
        "org.opencontainers.image.ref.name": image.name,
        "run.skiff.image.digest": image.manifest_digest.to_string(),
    });
    Ok(spec)
}

fn command(image: &ImageRecord, rc: &RunConfig, o: &Overrides) -> Result<Vec<String>, BundleError> {
    let mut args: Vec<String> = match &o.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => rc.entrypoint.clone(),
    };
    if !o.args.is_empty() {
        args.extend(o.args.iter().cloned());
    } else if o.entrypoint.is_none() {
        // As Docker does: a new entrypoint drops the image's Cmd, which was written for the old one.
        args.extend(rc.cmd.iter().cloned());
    }
    if args.is_empty() {
        return Err(BundleError::NoCommand {
            image: image.name.clone(),
        });
    }
    Ok(args)
}

fn environment(rc: &RunConfig, o: &Overrides) -> Result<Vec<String>, BundleError> {
    let mut env: Vec<String> = rc.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={}", crate::process::DEFAULT_PATH));
    }
    for e in &o.env {
        let Some((key, _)) = e.split_once('=') else {
            return Err(BundleError::Env(e.clone()));
        };
        if key.is_empty() {
            return Err(BundleError::Env(e.clone()));
        }
        env.retain(|old| old.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(e.clone());
    }
    if o.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    Ok(env)
}

/// `user`, `uid`, `user:group`, `uid:gid` → ids, looked up in the image's own `/etc/passwd` and
/// `/etc/group`, read without following any link out of the image.
fn resolve_user(
    rootfs: &Path,
    spec: &str,
    origin: &'static str,
) -> Result<(u32, u32, Vec<u32>), BundleError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let err = |reason: &str| BundleError::User {
        origin,
        user: spec.to_owned(),
        reason: reason.to_owned(),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let groups = read_in_root(rootfs, "etc/group");
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, Some("root".to_owned()))
    } else if let Ok(uid) = user.parse::<u32>() {
        let entry = passwd_entries(&passwd).find(|e| e.1 == uid);
        (
            uid,
            entry.as_ref().map(|e| e.2).unwrap_or(0),
            entry.map(|e| e.0),
        )
    } else {
        let entry = passwd_entries(&passwd)
            .find(|e| e.0 == user)
            .ok_or_else(|| err("no such user in the image's /etc/passwd"))?;
        (entry.1, entry.2, Some(entry.0))
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(&groups)
                .find(|e| e.0 == g)
                .map(|e| e.1)
                .ok_or_else(|| err("no such group in the image's /etc/group"))?,
        };
    }
    let extra: Vec<u32> = match (&name, group) {
        (Some(n), None) => group_entries(&groups)
            .filter(|e| e.2.iter().any(|m| m == n) && e.1 != gid)
            .map(|e| e.1)
            .collect(),
        _ => Vec::new(),
    };
    let ids = [("uid", uid), ("gid", gid)]
        .into_iter()
        .chain(extra.iter().map(|g| ("supplementary gid", *g)));
    for (what, id) in ids {
        if id == crate::spec::UNCHANGED_ID {
            return Err(err(&format!(
                "{what}: {}",
                crate::spec::UNCHANGED_ID_REASON
            )));
        }
    }
    Ok((uid, gid, extra))
}

fn read_in_root(rootfs: &Path, rel: &str) -> String {
    let Ok(root) = std::fs::File::open(rootfs) else {
        return String::new();
    };
    let Ok(fd) = open_in_root(&root.as_fd(), rel) else {
        return String::new();
    };
    // O_PATH descriptors cannot be read: reopen through the magic link, which names the same inode.
    let Ok(file) = std::fs::File::open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    )) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = file.take(4 << 20).read_to_string(&mut s);
    s
}

fn passwd_entries(text: &str) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some((
            f.first()?.to_string(),
            f.get(2)?.parse().ok()?,
            f.get(3)?.parse().ok()?,
        ))
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = (String, u32, Vec<String>)> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| {
                m.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_from_image_files() {
        let dir = std::env::temp_dir().join(format!("skiff-bundle-user-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nweb:x:33:\nlog:x:4:web\n").unwrap();
        assert_eq!(resolve_user(&dir, "", "--user").unwrap(), (0, 0, vec![]));
        assert_eq!(
            resolve_user(&dir, "web", "--user").unwrap(),
            (33, 33, vec![4])
        );
        assert_eq!(
            resolve_user(&dir, "web:log", "--user").unwrap(),
            (33, 4, vec![])
        );
        assert_eq!(
            resolve_user(&dir, "1234:5", "--user").unwrap(),
            (1234, 5, vec![])
        );
        let e = resolve_user(&dir, "nobody", "--user")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nobody") && e.contains("/etc/passwd"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_unchanged_id_is_refused_however_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "max:x:4294967295:5::/:/bin/sh\nops:x:40:40::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "huge:x:4294967295:ops\n").unwrap();
        let cases = [
            ("4294967295", "uid"),
            ("max", "uid"),
            ("40:4294967295", "gid"),
            ("40:huge", "gid"),
            ("ops", "supplementary gid"),
        ];
        for (spec, what) in cases {
            let e = resolve_user(dir.path(), spec, "the image's User")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("the image's User {spec:?}: {what}: 4294967295")),
                "{e}"
            );
        }
    }
}
