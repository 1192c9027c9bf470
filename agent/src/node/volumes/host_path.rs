//! hostPath: a path of the node mounted as it is, after kubelet's check of its `type` (and, for the
//! `…OrCreate` types, creating what is missing with kubelet's modes: directories 0755, files 0644).
//! With no type nothing is checked; a missing path becomes a directory, as containerd and CRI-O make
//! it under kubelet (kube-proxy's `/lib/modules` on a machine without modules, say).

use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

use super::Error;

/// What a hostPath `type` asks of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `""` (or no type): no check; a missing path is made a directory.
    Unset,
    DirectoryOrCreate,
    Directory,
    FileOrCreate,
    File,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    fn parse(t: Option<&str>) -> Option<Kind> {
        Some(match t.unwrap_or("") {
            "" => Kind::Unset,
            "DirectoryOrCreate" => Kind::DirectoryOrCreate,
            "Directory" => Kind::Directory,
            "FileOrCreate" => Kind::FileOrCreate,
            "File" => Kind::File,
            "Socket" => Kind::Socket,
            "CharDevice" => Kind::CharDevice,
            "BlockDevice" => Kind::BlockDevice,
            _ => return None,
        })
    }

    /// The noun of kubelet's "hostPath type check failed: <path> is not a <noun>".
    fn noun(self) -> &'static str {
        match self {
            Kind::Unset => "path",
            Kind::DirectoryOrCreate | Kind::Directory => "directory",
            Kind::FileOrCreate | Kind::File => "file",
            Kind::Socket => "socket file",
            Kind::CharDevice => "character device",
            Kind::BlockDevice => "block device",
        }
    }

    fn matches(self, m: &Metadata) -> bool {
        let t = m.file_type();
        match self {
            Kind::Unset => true,
            Kind::DirectoryOrCreate | Kind::Directory => t.is_dir(),
            Kind::FileOrCreate | Kind::File => t.is_file(),
            Kind::Socket => t.is_socket(),
            Kind::CharDevice => t.is_char_device(),
            Kind::BlockDevice => t.is_block_device(),
        }
    }
}

/// Checks (or creates) the pod's host path; the path to bind into its containers.
pub fn setup(volume: &str, h: &HostPathVolumeSource) -> Result<PathBuf, Error> {
    let fail = |m: String| Error::volume(volume, m);
    let path = Path::new(&h.path);
    if !path.is_absolute() {
        return Err(fail(format!(
            "hostPath {:?} is not an absolute path",
            h.path
        )));
    }
    let kind = Kind::parse(h.type_.as_deref())
        .ok_or_else(|| fail(format!("hostPath type {:?} is not known", h.type_)))?;
    // Symlinks are followed, as kubelet's check does: the mount binds what they point at.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create(kind, path).map_err(|m| fail(format!("hostPath type check failed: {m}")))?;
            std::fs::metadata(path).map_err(|e| fail(format!("{}: {e}", path.display())))?
        }
        Err(e) => return Err(fail(format!("{}: {e}", path.display()))),
    };
    if !kind.matches(&meta) {
        return Err(fail(format!(
            "hostPath type check failed: {} is not a {}",
            path.display(),
            kind.noun()
        )));
    }
    Ok(path.to_path_buf())
}

/// Creates a missing path for the `…OrCreate` types; for the others, says that it does not exist.
fn create(kind: Kind, path: &Path) -> Result<(), String> {
    let shown = path.display();
    match kind {
        Kind::Unset | Kind::DirectoryOrCreate => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| format!("create directory {shown}: {e}")),
        // Like kubelet, the parent directory is not made: a missing one fails the pod.
        Kind::FileOrCreate => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|e| format!("create file {shown}: {e}")),
        _ => Err(format!("{shown} does not exist")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &Path, t: &str) -> HostPathVolumeSource {
        HostPathVolumeSource {
            path: path.to_string_lossy().into_owned(),
            type_: Some(t.into()),
        }
    }

    fn err(path: &Path, t: &str) -> String {
        match setup("v", &src(path, t)) {
            Ok(p) => panic!("{t} on {}: accepted as {}", path.display(), p.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn types_are_checked_against_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        assert!(setup("v", &src(dir.path(), "Directory")).is_ok());
        assert!(setup("v", &src(&file, "File")).is_ok());
        assert!(setup("v", &src(Path::new("/dev/null"), "CharDevice")).is_ok());
        assert!(err(&file, "Directory").contains("is not a directory"));
        assert!(err(dir.path(), "File").contains("is not a file"));
        assert!(err(&file, "Socket").contains("is not a socket file"));
        assert!(err(&file, "CharDevice").contains("is not a character device"));
        assert!(err(Path::new("/dev/null"), "BlockDevice").contains("is not a block device"));
        assert!(err(&dir.path().join("nope"), "File").contains("does not exist"));
        assert!(err(&dir.path().join("nope"), "Directory").contains("does not exist"));
        assert!(err(&file, "Dir").contains("type Some(\"Dir\") is not known"));
        assert!(err(Path::new("rel/path"), "").contains("not an absolute path"));
        // No type: anything goes; what is missing becomes a directory.
        assert!(setup("v", &src(&file, "")).is_ok());
        let absent = dir.path().join("absent");
        assert!(setup("v", &src(&absent, "")).is_ok());
        assert!(absent.is_dir());
    }

    #[test]
    fn or_create_types_make_what_is_missing_with_kubelets_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("a/b");
        setup("v", &src(&d, "DirectoryOrCreate")).expect("directory created");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        assert!(d.is_dir());
        let f = dir.path().join("a/f");
        setup("v", &src(&f, "FileOrCreate")).expect("file created");
        assert!(f.is_file());
        // The process umask may take bits away, never add them.
        assert_eq!(mode(&d) & !0o755, 0);
        assert_eq!(mode(&f) & !0o644, 0);
        // An existing file keeps its content.
        std::fs::write(&f, b"keep").expect("write");
        setup("v", &src(&f, "FileOrCreate")).expect("existing file");
        assert_eq!(std::fs::read(&f).expect("read"), b"keep");
        assert!(err(&dir.path().join("no/f"), "FileOrCreate").contains("create file"));
        assert!(err(&f, "DirectoryOrCreate").contains("is not a directory"));
    }
}
