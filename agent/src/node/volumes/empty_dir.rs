//! emptyDir on the node's disk: a directory that lives as long as the pod.

use std::path::Path;

use k8s_openapi::api::core::v1::EmptyDirVolumeSource;

use super::Error;

pub fn setup(dir: &Path, volume: &str, e: &EmptyDirVolumeSource) -> Result<(), Error> {
    if e.medium.as_deref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::volume(
            volume,
            "emptyDir medium Memory is not supported",
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|err| Error::volume(volume, format!("create {}: {err}", dir.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
        .map_err(|err| Error::volume(volume, format!("chmod {}: {err}", dir.display())))
}
