//! Build test images in memory (layers as tar, gzip or zstd), write them as OCI layouts for
//! skopeo, or hand them to the test-local server.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer tar built entry by entry. Entries with hostile names are written with raw headers.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
    mtime: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Complete);
        Self {
            b,
            mtime: 1_700_000_000,
        }
    }

    fn header(&self, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// Append with the name written raw (no validation), so hostile names can be built.
    fn raw(
        &mut self,
        mut h: tar::Header,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        {
            let u = h.as_ustar_mut().expect("ustar header");
            u.name = [0; 100];
            u.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                u.linkname = [0; 100];
                u.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_cksum();
        self.b.append(&h, data).expect("append to in-memory tar");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = self.header(tar::EntryType::Directory, mode, 0);
        self.raw(h, path, None, &[])
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        let h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        self.raw(h, path, None, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = self.header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.raw(h, path, None, data)
    }

    /// A file with PAX `SCHILY.xattr.*` records.
    pub fn file_xattrs(
        &mut self,
        path: &str,
        mode: u32,
        data: &[u8],
        xattrs: &[(&str, &[u8])],
    ) -> &mut Self {
        let ext: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(ext.iter().map(|(k, v)| (k.as_str(), *v)))
            .expect("pax");
        self.file(path, mode, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Symlink, 0o777, 0);
        self.raw(h, path, Some(target), &[])
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Link, 0o644, 0);
        self.raw(h, path, Some(target), &[])
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.raw(h, path, None, &[])
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        let h = self.header(tar::EntryType::Fifo, 0o644, 0);
        self.raw(h, path, None, &[])
    }

    /// Docker/OCI whiteout of `dir/name`.
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, 0o644, b"")
    }

    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

impl Layer {
    pub fn new(tar: Vec<u8>, c: Compression) -> Self {
        let (blob, media_type) = match c {
            Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&tar).expect("gzip");
                (
                    e.finish().expect("gzip"),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(&tar[..], 3).expect("zstd"),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        Self {
            tar,
            blob,
            media_type: media_type.to_string(),
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.blob)
    }

    pub fn diff_id(&self) -> String {
        sha256(&self.tar)
    }
}

/// An image: manifest, config and layer blobs.
pub struct Image {
    pub manifest: Vec<u8>,
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
    pub arch: String,
}

impl Image {
    pub fn new(layers: Vec<Layer>, arch: &str, container_config: Value) -> Self {
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id()).collect::<Vec<_>>()},
        }))
        .expect("config json");
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len()})).collect::<Vec<_>>(),
        }))
        .expect("manifest json");
        Self {
            manifest,
            config,
            layers,
            arch: arch.to_string(),
        }
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }

    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.digest(),
            "size": self.manifest.len(),
            "platform": {"architecture": self.arch, "os": "linux"},
        })
    }
}

/// An OCI image index over images.
pub fn index(images: &[&Image]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": images.iter().map(|i| i.descriptor()).collect::<Vec<_>>(),
    }))
    .expect("index json")
}

/// An OCI image layout directory (what skopeo's `oci:` transport reads).
pub struct Layout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl Layout {
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        })
    }

    pub fn blob(&self, data: &[u8]) -> Result<String> {
        let d = sha256(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data)?;
        Ok(d)
    }

    fn put_image(&self, img: &Image) -> Result<()> {
        self.blob(&img.manifest)?;
        self.blob(&img.config)?;
        for l in &img.layers {
            self.blob(&l.blob)?;
        }
        Ok(())
    }

    pub fn add_image(&mut self, tag: &str, img: &Image) -> Result<()> {
        self.put_image(img)?;
        let mut d = img.descriptor();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(d);
        self.write_index()
    }

    pub fn add_index(&mut self, tag: &str, images: &[&Image]) -> Result<()> {
        for i in images {
            self.put_image(i)?;
        }
        let idx = index(images);
        let d = self.blob(&idx)?;
        self.refs.push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d,
            "size": idx.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        self.write_index()
    }

    fn write_index(&self) -> Result<()> {
        let idx = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx)?)?;
        Ok(())
    }
}
