//! Finding an image record by any name the CRI may use for it.

use tonic::Status;

use crate::cri::error::{invalid, truncate};
use skiff_runtime::image::store::ImageRecord;
use skiff_runtime::image::Reference;

/// The shortest id prefix accepted, as Docker and containerd accept.
const MIN_PREFIX: usize = 12;

/// The record `name` designates: a full or prefixed image id (`sha256:<hex>` or `<hex>`), a manifest
/// digest, a repo digest (`repo@sha256:...`), or a name as pulled in any spelling (`busybox` is
/// `docker.io/library/busybox:latest`). `Ok(None)` when nothing matches; `InvalidArgument` when
/// `name` is neither an id nor a reference, or an id prefix matches two images.
pub fn find<'a>(records: &'a [ImageRecord], name: &str) -> Result<Option<&'a ImageRecord>, Status> {
    let name = name.trim();
    if let Some(hex) = name.strip_prefix("sha256:") {
        if !is_hex(hex) || hex.is_empty() {
            return Err(invalid(format!(
                "image {:?} is not a valid sha256 id",
                truncate(name)
            )));
        }
        return by_id(records, hex);
    }
    if is_hex(name) && name.len() >= MIN_PREFIX && name.len() <= 64 {
        if let Some(r) = by_id(records, name)? {
            return Ok(Some(r));
        }
    }
    let reference = Reference::parse(name).map_err(|e| invalid(e.to_string()))?;
    let repo = |r: &Reference| format!("{}/{}", r.registry, r.repository);
    let wanted_repo = repo(&reference);
    if let Some(digest) = &reference.digest {
        return Ok(records.iter().find(|r| {
            let same_repo = Reference::parse(&r.name).is_ok_and(|x| repo(&x) == wanted_repo);
            same_repo && (r.manifest_digest == *digest || r.index_digest.as_ref() == Some(digest))
        }));
    }
    let canonical = reference.to_string();
    Ok(records.iter().find(|r| r.name == canonical))
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// By image id prefix (the config digest), or by a full manifest or index digest.
fn by_id<'a>(records: &'a [ImageRecord], hex: &str) -> Result<Option<&'a ImageRecord>, Status> {
    let full = hex.len() == 64;
    let mut found: Option<&ImageRecord> = None;
    for r in records {
        let hit = r.config_digest.hex().starts_with(hex)
            || (full
                && (r.manifest_digest.hex() == hex
                    || r.index_digest.as_ref().is_some_and(|d| d.hex() == hex)));
        if !hit {
            continue;
        }
        match found {
            Some(f) if f.config_digest != r.config_digest => {
                return Err(invalid(format!(
                    "image id prefix {hex:?} is ambiguous: it matches {} and {}",
                    f.config_digest, r.config_digest
                )))
            }
            Some(_) => {}
            None => found = Some(r),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::image::{Digest, Platform};

    fn rec(name: &str, config: &[u8], manifest: &[u8]) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            manifest_digest: Digest::of(manifest),
            manifest_media_type: String::new(),
            index_digest: None,
            config_digest: Digest::of(config),
            platform: Platform::host(),
            layers: vec![],
            size: 1,
            pulled_at: 0,
        }
    }

    #[test]
    fn every_name_kubelet_uses() {
        let recs = vec![
            rec("docker.io/library/busybox:latest", b"c1", b"m1"),
            rec("registry.k8s.io/pause:3.10", b"c2", b"m2"),
            rec("registry.skiff.test/library/busybox:latest", b"c1", b"m1"),
        ];
        let name = |n: &str| find(&recs, n).unwrap().map(|r| r.name.clone());
        assert_eq!(name("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(name("docker.io/busybox:latest").unwrap(), recs[0].name);
        assert_eq!(name("registry.k8s.io/pause:3.10").unwrap(), recs[1].name);
        assert_eq!(name("registry.k8s.io/pause:3.9"), None);
        let id = Digest::of(b"c2").to_string();
        assert_eq!(name(&id).unwrap(), recs[1].name);
        assert_eq!(name(&id[..7 + 12]).unwrap(), recs[1].name);
        assert_eq!(name(&id[7..7 + 12]).unwrap(), recs[1].name);
        let m = Digest::of(b"m2").to_string();
        assert_eq!(name(&m).unwrap(), recs[1].name);
        assert_eq!(
            name(&format!("registry.k8s.io/pause@{m}")).unwrap(),
            recs[1].name
        );
        assert_eq!(name(&format!("registry.k8s.io/other@{m}")), None);
        assert_eq!(name("sha256:0000000000000000"), None);
        assert!(find(&recs, "sha256:xyz").is_err());
        assert!(find(&recs, "UPPER/Case").is_err());
    }

    #[test]
    fn ambiguous_prefix_is_refused() {
        // Two configs whose digests share a first hex digit: a one-digit prefix names both.
        let mut recs = Vec::new();
        for i in 0..40u8 {
            recs.push(rec(&format!("x/i{i}:latest"), &[i], &[i]));
        }
        let first = recs[0].config_digest.hex()[..1].to_string();
        let twins = recs
            .iter()
            .filter(|r| r.config_digest.hex().starts_with(&first))
            .count();
        assert!(twins > 1);
        let e = find(&recs, &format!("sha256:{first}")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
