//! The CRI `ImageService` over skiff's image store: pull (with kubelet's credentials and the node's
//! mirrors), list, status, remove, file-system usage.
//!
//! The store keeps one record per name; the CRI's `Image` is one per image id (the config digest), so
//! records sharing a config digest are folded into one `Image` with every name as a repo tag.

mod fsinfo;
mod fsusage;
mod lookup;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cri_api::v1 as cri;
use tonic::Status;

use super::error::{internal, invalid, truncate};
use super::{blocking, Daemon};
use skiff_runtime::image::rootfs::{run_config, RunConfig};
use skiff_runtime::image::store::ImageRecord;
use skiff_runtime::image::{self as img, Credentials, HostsConfig, PullOptions, Reference};

pub use fsinfo::{get as fs_info_now, refresh as refresh_fs_info, FsInfoCache};
pub use fsusage::{usage, Usage};
pub use lookup::find;

/// A pulled image, as containers are made from it.
pub struct ResolvedImage {
    pub record: ImageRecord,
    /// The image's run defaults.
    pub run: RunConfig,
    /// The image id: its config digest, `sha256:...`.
    pub id: String,
}

/// Finds a pulled image by any name kubelet may use for it: the name it was pulled as, an image id
/// (`sha256:...` or its hex prefix), or a repo digest. `NotFound` when it is not present.
pub fn resolve(d: &Daemon, image: &str) -> Result<ResolvedImage, Status> {
    let record = match by_name(d, image) {
        Some(r) => r,
        None => {
            let records = d.images.list().map_err(internal)?;
            find(&records, image)?
                .ok_or_else(|| super::error::not_found("image", &truncate(image)))?
                .clone()
        }
    };
    let run = run_config(&d.images, &record).map_err(internal)?;
    Ok(ResolvedImage {
        id: record.config_digest.to_string(),
        record,
        run,
    })
}

/// The common case on the container-creation path: a tagged name, found with one record read
/// instead of a scan of every image. Ids and digests take the scan.
fn by_name(d: &Daemon, image: &str) -> Option<ImageRecord> {
    let looks_like_id = image.starts_with("sha256:")
        || image.bytes().all(|b| b.is_ascii_hexdigit())
        || image.contains('@');
    if looks_like_id {
        return None;
    }
    d.images.inspect(image).ok()
}

fn spec_name(spec: Option<&cri::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(invalid("image spec is empty: the image name is required")),
    }
}

pub async fn list(
    d: &Arc<Daemon>,
    r: cri::ListImagesRequest,
) -> Result<cri::ListImagesResponse, Status> {
    let filter = r
        .filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.is_empty());
    let d = d.clone();
    blocking(move || {
        let records = d.images.list().map_err(internal)?;
        let wanted = match &filter {
            // A filter that names nothing pulled, or is not a name at all, matches nothing.
            Some(name) => match find(&records, name) {
                Ok(Some(r)) => Some(r.config_digest.clone()),
                _ => return Ok(cri::ListImagesResponse::default()),
            },
            None => None,
        };
        let images = group(&records)
            .into_iter()
            .filter(|g| wanted.as_ref().is_none_or(|w| g[0].config_digest == *w))
            .map(|g| to_cri(&d, &g))
            .collect();
        Ok(cri::ListImagesResponse { images })
    })
    .await
}

pub async fn status(
    d: &Arc<Daemon>,
    r: cri::ImageStatusRequest,
) -> Result<cri::ImageStatusResponse, Status> {
    let name = spec_name(r.image.as_ref())?.to_string();
    let d = d.clone();
    blocking(move || {
        let records = d.images.list().map_err(internal)?;
        // Absent is an answer, not an error: kubelet pulls on an empty status.
        let Some(found) = find(&records, &name).unwrap_or(None) else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let same: Vec<&ImageRecord> = records
            .iter()
            .filter(|x| x.config_digest == found.config_digest)
            .collect();
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            info.insert("info".to_string(), verbose_info(&d, &same));
        }
        Ok(cri::ImageStatusResponse {
            image: Some(to_cri(&d, &same)),
            info,
        })
    })
    .await
}

pub async fn pull(
    d: &Arc<Daemon>,
    r: cri::PullImageRequest,
) -> Result<cri::PullImageResponse, Status> {
    let name = spec_name(r.image.as_ref())?.to_string();
    let reference = Reference::parse(&name).map_err(|e| invalid(e.to_string()))?;
    let credentials = r.auth.as_ref().map(credentials).transpose()?.flatten();
    let d = d.clone();
    blocking(move || {
        let hosts = HostsConfig::load(&d.config.registries)
            .map_err(|e| Status::failed_precondition(format!("registries file: {e}")))?;
        let opts = PullOptions {
            credentials,
            hosts,
            max_layer_bytes: d.config.max_layer_size,
            max_image_bytes: d.config.max_image_size,
            ..PullOptions::default()
        };
        let started = std::time::Instant::now();
        let rec = img::pull(&d.images, &reference, &opts).map_err(|e| pull_error(&name, e))?;
        d.fs_info.invalidate();
        tracing::info!(
            image = %rec.name,
            id = %rec.config_digest,
            ms = started.elapsed().as_millis() as u64,
            "image pulled"
        );
        Ok(cri::PullImageResponse {
            image_ref: rec.config_digest.to_string(),
        })
    })
    .await
}

/// kubelet's `AuthConfig` as the puller's credentials; `None` when it carries none.
fn credentials(a: &cri::AuthConfig) -> Result<Option<Credentials>, Status> {
    if !a.registry_token.is_empty() {
        return Ok(Some(Credentials::Token(a.registry_token.clone())));
    }
    if !a.identity_token.is_empty() {
        return Ok(Some(Credentials::IdentityToken(a.identity_token.clone())));
    }
    if !a.username.is_empty() {
        return Ok(Some(Credentials::Basic {
            username: a.username.clone(),
            password: a.password.clone(),
        }));
    }
    if !a.auth.is_empty() {
        return Credentials::from_auth_field(&a.auth)
            .map(Some)
            .ok_or_else(|| invalid("auth.auth is not base64 of user:password"));
    }
    Ok(None)
}

/// The puller's failure in the CRI's codes, keeping the registry's own words.
fn pull_error(name: &str, e: img::Error) -> Status {
    use img::Error as E;
    let msg = format!("pull {}: {e}", truncate(name));
    match e {
        E::InvalidReference { .. } | E::InvalidDigest { .. } | E::InvalidPlatform { .. } => {
            Status::invalid_argument(msg)
        }
        E::Registry { status: 404, .. } | E::ImageNotFound(_) | E::NoMatchingPlatform { .. } => {
            Status::not_found(msg)
        }
        E::Registry { status: 401, .. } | E::Unauthorized { .. } => Status::permission_denied(msg),
        E::Registry { .. } | E::Transport { .. } => Status::unavailable(msg),
        E::Config { .. } | E::Credentials { .. } => Status::failed_precondition(msg),
        E::TooLarge { .. } => Status::resource_exhausted(msg),
        _ => Status::internal(msg),
    }
}

pub async fn remove(
    d: &Arc<Daemon>,
    r: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, Status> {
    let name = spec_name(r.image.as_ref())?.to_string();
    let d = d.clone();
    blocking(move || {
        let records = d.images.list().map_err(internal)?;
        let Some(found) = find(&records, &name).unwrap_or(None) else {
            return Ok(cri::RemoveImageResponse {});
        };
        let id = found.config_digest.to_string();
        if let Some(c) = d.containers.list().into_iter().find(|c| c.uses_image(&id)) {
            return Err(Status::failed_precondition(format!(
                "image {id} is in use by container {}",
                c.id
            )));
        }
        // Removing an image removes every name it was pulled as, as the CRI expects of an id.
        for rec in records
            .iter()
            .filter(|x| x.config_digest == found.config_digest)
        {
            match d.images.remove(&rec.name) {
                Ok(_) | Err(img::Error::ImageNotFound(_)) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        d.fs_info.invalidate();
        tracing::info!(image = %id, "image removed");
        Ok(cri::RemoveImageResponse {})
    })
    .await
}

pub async fn fs_info(
    d: &Arc<Daemon>,
    _r: cri::ImageFsInfoRequest,
) -> Result<cri::ImageFsInfoResponse, Status> {
    Ok(fsinfo::get(d).await)
}

/// The usage of the image store and of every container's writable layer, walked now.
/// The `ImageFsInfo` answer, and each container's writable layer by id.
fn measure_fs(d: &Daemon) -> (cri::ImageFsInfoResponse, HashMap<String, Usage>) {
    let root = d.images.root().to_path_buf();
    let images = usage(&root);
    let mut containers = Usage::default();
    let mut each = HashMap::new();
    let mut mount = None;
    for c in d.containers.list() {
        let u = usage(&c.bundle);
        containers.add(&u);
        each.insert(c.id.clone(), u);
        mount = mount.or_else(|| c.bundle.parent().map(|p| p.to_path_buf()));
    }
    let mount = mount.unwrap_or_else(|| d.config.state_dir.join("containers"));
    // Stamped when the walk ends, which is when its figures were true.
    let now = crate::now_ns();
    let resp = cri::ImageFsInfoResponse {
        image_filesystems: vec![fs_usage(now, &root, &images)],
        container_filesystems: vec![fs_usage(now, &mount, &containers)],
    };
    (resp, each)
}

fn fs_usage(now: i64, mount: &std::path::Path, u: &Usage) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp: now,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: mount.to_string_lossy().into_owned(),
        }),
        used_bytes: Some(cri::UInt64Value { value: u.bytes }),
        inodes_used: Some(cri::UInt64Value { value: u.inodes }),
    }
}

/// Records grouped by image id, in name order of each group's first record.
fn group(records: &[ImageRecord]) -> Vec<Vec<&ImageRecord>> {
    let mut by_id: BTreeMap<String, Vec<&ImageRecord>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in records {
        let key = r.config_digest.to_string();
        if !by_id.contains_key(&key) {
            order.push(key.clone());
        }
        by_id.entry(key).or_default().push(r);
    }
    order.into_iter().filter_map(|k| by_id.remove(&k)).collect()
}

/// `repo:tag` names and `repo@digest` digests of an image's records.
fn names(recs: &[&ImageRecord]) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for r in recs {
        let Ok(reference) = Reference::parse(&r.name) else {
            continue;
        };
        let repo = format!("{}/{}", reference.registry, reference.repository);
        if let Some(tag) = &reference.tag {
            tags.push(format!("{repo}:{tag}"));
        }
        let digest = r.index_digest.as_ref().unwrap_or(&r.manifest_digest);
        digests.push(format!("{repo}@{digest}"));
    }
    tags.sort();
    tags.dedup();
    digests.sort();
    digests.dedup();
    (tags, digests)
}

fn to_cri(d: &Daemon, recs: &[&ImageRecord]) -> cri::Image {
    let first = recs[0];
    let id = first.config_digest.to_string();
    let (repo_tags, repo_digests) = names(recs);
    let user = run_config(&d.images, first)
        .ok()
        .and_then(|rc| rc.user)
        .unwrap_or_default();
    let (uid, username) = image_user(&user);
    cri::Image {
        spec: Some(cri::ImageSpec {
            image: id.clone(),
            ..Default::default()
        }),
        id,
        repo_tags,
        repo_digests,
        size: first.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        pinned: is_pinned(d, recs),
    }
}

/// Whether the image is the configured pause image, under any of its names.
fn is_pinned(d: &Daemon, recs: &[&ImageRecord]) -> bool {
    let Some(pause) = d.config.pause_image.as_deref() else {
        return false;
    };
    let Ok(pause) = Reference::parse(pause) else {
        return false;
    };
    let pause = pause.to_string();
    recs.iter().any(|r| r.name == pause)
}

/// The image's `User` as the CRI reports it: a numeric user is a uid, anything else a name; the
/// group part never counts. A number no container can run as (such as 4294967295, which the kernel
/// reads as "leave the uid unchanged") is reported as a name, which kubelet's runAsNonRoot check
/// cannot take for a non-root uid.
pub fn image_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    let usable = 0..i64::from(skiff_runtime::spec::UNCHANGED_ID);
    match name.parse::<i64>() {
        Ok(uid) if usable.contains(&uid) => (Some(uid), String::new()),
        _ => (None, name.to_string()),
    }
}

fn verbose_info(d: &Daemon, recs: &[&ImageRecord]) -> String {
    let first = recs[0];
    let config: serde_json::Value = d
        .images
        .read_blob(&first.config_digest, 64 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let info = serde_json::json!({
        "id": first.config_digest.to_string(),
        "names": recs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        "manifestDigest": first.manifest_digest.to_string(),
        "manifestMediaType": first.manifest_media_type,
        "indexDigest": first.index_digest.as_ref().map(|x| x.to_string()),
        "platform": first.platform,
        "layers": first.layers,
        "size": first.size,
        "pulledAt": first.pulled_at,
        "imageConfig": config,
    });
    info.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_forms() {
        assert_eq!(image_user(""), (None, String::new()));
        assert_eq!(image_user("1000"), (Some(1000), String::new()));
        assert_eq!(image_user("1000:50"), (Some(1000), String::new()));
        assert_eq!(image_user("nobody:nogroup"), (None, "nobody".into()));
        assert_eq!(image_user("-1"), (None, "-1".into()));
        assert_eq!(image_user("4294967294"), (Some(4294967294), String::new()));
        assert_eq!(image_user("4294967295"), (None, "4294967295".into()));
        assert_eq!(image_user("4294967296:0"), (None, "4294967296".into()));
    }

    #[test]
    fn auth_config_to_credentials() {
        let none = credentials(&cri::AuthConfig::default()).unwrap();
        assert!(none.is_none());
        let basic = credentials(&cri::AuthConfig {
            username: "alice".into(),
            password: "pw".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            basic,
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "pw".into()
            })
        );
        let auth = credentials(&cri::AuthConfig {
            auth: "YWxpY2U6czNjcmV0".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            auth,
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "s3cret".into()
            })
        );
        let bad = credentials(&cri::AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        let tok = credentials(&cri::AuthConfig {
            registry_token: "t".into(),
            username: "u".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(tok, Some(Credentials::Token("t".into())));
    }
}
