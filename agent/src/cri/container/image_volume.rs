//! Image volumes (`Mount.image`): a pulled image mounted read-only into a container, whole or one
//! path of it (`image_sub_path`).
//!
//! Each volume is mounted once under the bundle (`image-volumes/<n>`): an overlay of the image's
//! layers without an upper directory, or a read-only bind of the only layer (overlayfs needs two
//! lower layers when it has no upper one). The container gets a bind of that mount, or of the
//! sub path resolved inside it without following symlinks out of the image.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use cri_api::v1 as cri;
use skiff_runtime::image::rootfs::{layer_dirs, lowerdir_option};
use skiff_runtime::image::store::ImageRecord;
use skiff_runtime::rootfs::resolve::RootDir;
use tonic::Status;

use super::super::error::{internal, invalid, truncate};
use super::super::{image, Daemon};

/// An image mount of a container config, with the image it names.
pub struct ImageVolume {
    /// Its index in `config.mounts`.
    index: usize,
    record: ImageRecord,
    sub_path: String,
}

fn volumes_dir(bundle: &Path) -> PathBuf {
    bundle.join("image-volumes")
}

/// Checks the config's image mounts, finds their images in the store and records in each mount
/// the id it resolved to (`image.image_ref`, which `ContainerStatus` reports).
pub fn resolve(d: &Daemon, config: &mut cri::ContainerConfig) -> Result<Vec<ImageVolume>, Status> {
    let mut out = Vec::new();
    for (index, m) in config.mounts.iter_mut().enumerate() {
        let Some(spec) = m.image.as_mut() else {
            if !m.image_sub_path.is_empty() {
                return Err(field_err(m, "mounts.image_sub_path", "needs mounts.image"));
            }
            continue;
        };
        if !m.host_path.is_empty() {
            return Err(field_err(
                m,
                "mounts.host_path",
                "must be empty with mounts.image",
            ));
        }
        if !m.readonly {
            return Err(field_err(
                m,
                "mounts.readonly",
                "image volumes are read-only",
            ));
        }
        check_sub_path(&m.image_sub_path)?;
        if spec.image.is_empty() {
            return Err(invalid("mounts.image.image is required"));
        }
        let img = image::resolve(d, &spec.image)?;
        spec.image_ref = img.id;
        out.push(ImageVolume {
            index,
            record: img.record,
            sub_path: m.image_sub_path.clone(),
        });
    }
    Ok(out)
}

fn field_err(m: &cri::Mount, field: &str, why: &str) -> Status {
    invalid(format!(
        "{field} of mount {:?}: {why}",
        truncate(&m.container_path)
    ))
}

/// A sub path is relative to the image's root and stays in it.
fn check_sub_path(p: &str) -> Result<(), Status> {
    let ok = !p.contains('\0')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "mounts.image_sub_path {:?}: must be a relative path inside the image",
            truncate(p)
        )))
    }
}

/// Mounts every volume under `bundle` and returns the config the spec is built from: each image
/// mount turned into a read-only bind of what it shows.
pub fn mount_all(
    d: &Daemon,
    bundle: &Path,
    config: &cri::ContainerConfig,
    volumes: &[ImageVolume],
) -> Result<cri::ContainerConfig, Status> {
    let mut out = config.clone();
    for (n, v) in volumes.iter().enumerate() {
        let dir = volumes_dir(bundle).join(n.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| internal(format!("create {}: {e}", dir.display())))?;
        let lowers = layer_dirs(&d.images, &v.record).map_err(internal)?;
        mount_image(&dir, &lowers)
            .map_err(|e| internal(format!("mount image {}: {e}", v.record.name)))?;
        let source = sub_path_source(&dir, &v.sub_path)?;
        let m = &mut out.mounts[v.index];
        m.host_path = source.to_string_lossy().into_owned();
        m.image = None;
        m.image_sub_path.clear();
    }
    Ok(out)
}

/// The real path of `sub` inside the mounted image, resolved as if the image were `/`.
fn sub_path_source(dir: &Path, sub: &str) -> Result<PathBuf, Status> {
    if sub.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let root = RootDir::open(dir).map_err(|e| internal(format!("open {}: {e}", dir.display())))?;
    let fd = root.resolve(sub).map_err(|e| {
        invalid(format!(
            "mounts.image_sub_path {:?}: not in the image: {e}",
            truncate(sub)
        ))
    })?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(internal)?;
    // RESOLVE_IN_ROOT kept the lookup inside; this only guards against a mount moved meanwhile.
    if !real.starts_with(dir) {
        return Err(internal(format!(
            "{} left {}",
            real.display(),
            dir.display()
        )));
    }
    Ok(real)
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)
}

/// Mounts the layers (lowest first) read-only on `target`.
fn mount_image(target: &Path, lowers: &[PathBuf]) -> std::io::Result<()> {
    let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    let t = cstr(target)?;
    if lowers.len() >= 2 {
        let data = CString::new(format!("lowerdir={}", lowerdir_option(lowers)))
            .map_err(std::io::Error::other)?;
        // SAFETY: every pointer is a valid NUL-terminated string for the duration of the call.
        let r = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                t.as_ptr(),
                c"overlay".as_ptr(),
                flags,
                data.as_ptr().cast(),
            )
        };
        return check(r);
    }
    // No layer at all: the (empty) target itself, made read-only.
    let source = match lowers.first() {
        Some(l) => cstr(l)?,
        None => t.clone(),
    };
    // SAFETY: valid NUL-terminated paths; a bind ignores type and data.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    })?;
    // SAFETY: as above; a bind's flags change only through a remount.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        detach(target);
        return Err(e);
    }
    Ok(())
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn detach(p: &Path) {
    if let Ok(c) = cstr(p) {
        // SAFETY: umount2 reads a valid path; a path that is not a mount point just fails.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Unmounts every image volume of a bundle, so that removing the bundle never reaches into a
/// layer. Volumes not mounted are left as they are.
pub fn unmount_all(bundle: &Path) {
    let Ok(entries) = std::fs::read_dir(volumes_dir(bundle)) else {
        return;
    };
    for e in entries.flatten() {
        detach(&e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_relative() {
        for ok in ["", "etc", "usr/share", "./etc", "etc/"] {
            assert!(check_sub_path(ok).is_ok(), "{ok:?}");
        }
        for bad in ["/etc", "../x", "etc/../../x", "a\0b"] {
            let e = check_sub_path(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(e.message().contains("image_sub_path"), "{e:?}");
        }
    }

    #[test]
    fn sub_path_symlinks_resolve_inside_the_image() {
        let img = tempfile::tempdir().unwrap();
        let root = img.path();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("data/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("data/up")).unwrap();
        // The image has no /etc: a link to it is missing, never the host's /etc.
        let e = sub_path_source(root, "data/abs").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        std::fs::create_dir(root.join("etc")).unwrap();
        let real = std::fs::canonicalize(root).unwrap();
        assert_eq!(
            sub_path_source(&real, "data/abs").unwrap(),
            real.join("etc")
        );
        assert_eq!(sub_path_source(&real, "data/up").unwrap(), real);
        assert_eq!(sub_path_source(&real, "").unwrap(), real);
    }
}
