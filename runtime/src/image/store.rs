//! The content store under `/var/lib/skiff/image` (root configurable):
//!
//! ```text
//! blobs/sha256/<hex>     verified blobs (manifests, configs, compressed layers)
//! ingest/<hex>           partial downloads, resumed with HTTP Range
//! layers/<id>            one unpacked directory per chain ID (short numeric ids keep
//!                        overlayfs lowerdir strings short)
//! chains/<hex>.json      chain ID → layer id and provenance
//! images/<hex>.json      image records, keyed by the sha256 of the image name
//! tmp/                   layers being unpacked, each flocked by the process unpacking it
//! locks/                 flock files: per chain, per blob, and the `gc` lock
//! ```
//!
//! Pulls hold the `gc` lock shared; `rmi` and `prune` hold it exclusively, so garbage
//! collection never sees a half-finished pull. Opening the store removes what a killed pull left
//! in `tmp/`: the entries nobody holds a lock on.
//!
//! Containers made from images keep their bundles beside the store
//! (`<root>/../containers/<id>`), each with an `image.json` naming the image and the chains it
//! stacks. Those chains are in use: `rmi` refuses the image (unless forced) and `prune` keeps them.
//!
//! The root, the directories in it and the bundles directory are 0700 (see [`crate::private_dir`]):
//! unpacked layers and containers' roots hold setuid files and device nodes from images.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::digest::Digest;
use super::error::{Error, IoContext, Result};
use super::manifest::Platform;
use super::reference::Reference;

/// Its own directory under skiff's state root, so pruning never touches another component's files.
pub const DEFAULT_ROOT: &str = "/var/lib/skiff/image";
const DIRS: [&str; 7] = [
    "blobs/sha256",
    "ingest",
    "layers",
    "chains",
    "images",
    "tmp",
    "locks",
];

/// The file in a container's bundle that records the image it was made from.
pub const IMAGE_USE_FILE: &str = "image.json";

/// What a container made from an image records in its bundle.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageUse {
    pub image: String,
    pub config_digest: Digest,
    pub chain_ids: Vec<Digest>,
}

impl ImageUse {
    pub fn of(rec: &ImageRecord) -> Self {
        Self {
            image: rec.name.clone(),
            config_digest: rec.config_digest.clone(),
            chain_ids: rec.layers.iter().map(|l| l.chain_id.clone()).collect(),
        }
    }
}

/// A container that uses an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageUser {
    /// The container id (its bundle's directory name).
    pub container: String,
    pub uses: ImageUse,
}

/// One image: the name the user asked for, what it resolved to, and its layers lowest first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub name: String,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub platform: Platform,
    pub layers: Vec<LayerRecord>,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    /// Seconds since the epoch.
    pub pulled_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// An unpacked layer, shared by every image whose layer stack has this chain ID.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChainRecord {
    pub chain_id: Digest,
    pub id: u64,
    pub diff_id: Digest,
    pub blob: Digest,
    pub unpacked_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub blobs_removed: u64,
    pub layers_removed: u64,
    pub partials_removed: u64,
}

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// An flock held until dropped.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// A directory under `tmp/` that a layer is unpacked into, locked for as long as this lives so
/// that another process opening the store leaves it alone.
#[derive(Debug)]
pub(crate) struct TmpDir {
    path: PathBuf,
    _lock: File,
}

impl TmpDir {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// `flock(fd, op)`, retried on EINTR.
fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is owned by `f` and stays open for the call.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn open_dir(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
}

/// Where bundles of image containers live, beside the image store.
pub fn bundles_root(image_root: &Path) -> PathBuf {
    image_root
        .parent()
        .unwrap_or(Path::new("/var/lib/skiff"))
        .join("containers")
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        crate::private_dir::ensure(&root).at(&root)?;
        // What an older version made may be open to other users, its bundles among them.
        let made = DIRS.iter().map(|d| root.join(d));
        for p in made.chain([bundles_root(&root)]) {
            crate::private_dir::tighten(&p).at(&p)?;
        }
        for d in DIRS {
            let p = root.join(d);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .at(&p)?;
        }
        let store = Self { root };
        // Leftovers cost disk, not correctness: a store that cannot drop one still works.
        if let Err(e) = store.clean_tmp() {
            warn!(error = %e, "cannot remove what an interrupted pull left in tmp");
        }
        Ok(store)
    }

    /// Removes what killed pulls left in `tmp/`; an entry a live pull holds stays.
    fn clean_tmp(&self) -> Result<()> {
        let mut removed = 0;
        for (_, path) in entries(&self.root.join("tmp"))? {
            let dir = match open_dir(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // Not a directory (nothing of ours): nobody can hold it.
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    fs::remove_file(&path).at(&path)?;
                    continue;
                }
                Err(e) => return Err(e).at(&path),
            };
            match flock(&dir, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e).at(&path),
            }
            match fs::remove_dir_all(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e).at(&path),
                _ => removed += 1,
            }
        }
        if removed > 0 {
            info!(
                removed,
                "removed layers left half-unpacked by an interrupted pull"
            );
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Read a stored blob, at most `limit` bytes, verifying its digest.
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let mut buf = Vec::new();
        File::open(&p)
            .at(&p)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .at(&p)?;
        if buf.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: p.display().to_string(),
                limit,
            });
        }
        d.verify(&p.display().to_string(), &buf)?;
        Ok(buf)
    }

    /// Store a small blob after checking it against its digest.
    pub fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<()> {
        d.verify(&format!("blob {d}"), data)?;
        if self.has_blob(d) {
            return Ok(());
        }
        write_atomic(&self.blob_path(d), data)
    }

    pub(crate) fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(d.hex())
    }

    /// Move a fully verified download into the blob store.
    pub(crate) fn commit_ingest(&self, d: &Digest) -> Result<()> {
        let from = self.ingest_path(d);
        File::open(&from).and_then(|f| f.sync_all()).at(&from)?;
        let to = self.blob_path(d);
        fs::rename(&from, &to).at(&to)?;
        sync_dir(to.parent().unwrap_or(&self.root))
    }

    pub(crate) fn lock(&self, name: &str, exclusive: bool) -> Result<FileLock> {
        let p = self.root.join("locks").join(format!("{name}.lock"));
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .at(&p)?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        flock(&f, op).at(&p)?;
        Ok(FileLock { _file: f })
    }

    /// A new, locked directory under `tmp/`. Between its creation and its lock another process
    /// may take it for a leftover and remove it: then the lock is on a removed directory, and
    /// another name is tried.
    pub(crate) fn new_tmp_dir(&self) -> Result<TmpDir> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let p = self
                .root
                .join("tmp")
                .join(format!("{}-{n}", std::process::id()));
            match fs::DirBuilder::new().mode(0o755).create(&p) {
                // A leftover of an earlier process with our pid: the next open removes it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => other.at(&p)?,
            }
            let dir = match open_dir(&p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                other => other.at(&p)?,
            };
            flock(&dir, libc::LOCK_EX).at(&p)?;
            let held = dir.metadata().at(&p)?;
            let still_there = fs::symlink_metadata(&p)
                .is_ok_and(|m| (m.dev(), m.ino()) == (held.dev(), held.ino()));
            if still_there {
                return Ok(TmpDir {
                    path: p,
                    _lock: dir,
                });
            }
        }
    }

    pub fn layer_dir(&self, id: u64) -> PathBuf {
        self.root.join("layers").join(id.to_string())
    }

    fn chain_path(&self, chain: &Digest) -> PathBuf {
        self.root
            .join("chains")
            .join(format!("{}.json", chain.hex()))
    }

    pub fn chain(&self, chain: &Digest) -> Result<Option<ChainRecord>> {
        read_json(&self.chain_path(chain))
    }

    /// Give an unpacked tmp dir its id and record it under its chain ID.
    pub(crate) fn commit_layer(
        &self,
        tmp: &Path,
        chain_id: &Digest,
        diff_id: &Digest,
        blob: &Digest,
        unpacked_bytes: u64,
    ) -> Result<ChainRecord> {
        let _meta = self.lock("meta", true)?;
        let counter = self.root.join("layers/next-id");
        let id: u64 = match fs::read_to_string(&counter) {
            Ok(s) => s.trim().parse().map_err(|_| Error::Store {
                path: counter.clone(),
                reason: format!("bad layer counter {s:?}"),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(e).at(&counter),
        };
        write_atomic(&counter, (id + 1).to_string().as_bytes())?;
        let dir = self.layer_dir(id);
        fs::rename(tmp, &dir).at(&dir)?;
        sync_dir(&self.root.join("layers"))?;
        let rec = ChainRecord {
            chain_id: chain_id.clone(),
            id,
            diff_id: diff_id.clone(),
            blob: blob.clone(),
            unpacked_bytes,
        };
        write_json(&self.chain_path(chain_id), &rec)?;
        debug!(chain = %chain_id, id, "layer committed");
        Ok(rec)
    }

    pub(crate) fn forget_chain(&self, chain: &Digest) -> Result<()> {
        let p = self.chain_path(chain);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at(&p),
            _ => Ok(()),
        }
    }

    fn image_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", Digest::of(name.as_bytes()).hex()))
    }

    pub(crate) fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        write_json(&self.image_path(&rec.name), rec)
    }

    /// Look an image up by any spelling of its reference (`busybox` finds
    /// `docker.io/library/busybox:latest`).
    /// A full `sha256:` digest finds the image with that config (image ID) or manifest digest.
    pub fn inspect(&self, name: &str) -> Result<ImageRecord> {
        if let Ok(d) = Digest::parse(name) {
            return self
                .list()?
                .into_iter()
                .find(|i| i.config_digest == d || i.manifest_digest == d)
                .ok_or_else(|| Error::ImageNotFound(name.to_string()));
        }
        let canonical = Reference::parse(name)?.to_string();
        read_json(&self.image_path(&canonical))?.ok_or(Error::ImageNotFound(canonical))
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).at(&dir)? {
            let p = entry.at(&dir)?.path();
            if p.extension().is_some_and(|e| e == "json") {
                if let Some(rec) = read_json::<ImageRecord>(&p)? {
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Where bundles of containers made from this store's images live.
    pub fn containers_dir(&self) -> PathBuf {
        bundles_root(&self.root)
    }

    /// Containers whose bundles record an image of this store. A record that cannot be read
    /// is an error: which layers it protects would be unknown.
    pub fn users(&self) -> Result<Vec<ImageUser>> {
        let dir = self.containers_dir();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).at(&dir),
        };
        for entry in entries {
            let entry = entry.at(&dir)?;
            if let Some(uses) = read_json::<ImageUse>(&entry.path().join(IMAGE_USE_FILE))? {
                out.push(ImageUser {
                    container: entry.file_name().to_string_lossy().into_owned(),
                    uses,
                });
            }
        }
        out.sort_by(|a, b| a.container.cmp(&b.container));
        Ok(out)
    }

    /// Record in a new container's bundle that it uses `rec`; held under the `gc` lock so
    /// that an `rmi` either sees the record or ran before the bundle's layers were looked up.
    pub(crate) fn record_use(&self, rec: &ImageRecord, bundle: &Path) -> Result<()> {
        write_json(&bundle.join(IMAGE_USE_FILE), &ImageUse::of(rec))
    }

    /// Remove an image record, then everything no other image needs. Refused while a container
    /// uses the image and no other name refers to it.
    pub fn remove(&self, name: &str) -> Result<ImageRecord> {
        self.remove_image(name, false)
    }

    /// Like [`Store::remove`]; `force` removes the name even while containers use the image
    /// (its layers stay until they are no longer used).
    pub fn remove_image(&self, name: &str, force: bool) -> Result<ImageRecord> {
        let _gc = self.lock("gc", true)?;
        let rec = self.inspect(name)?;
        if !force {
            self.refuse_if_used(&rec)?;
        }
        let p = self.image_path(&rec.name);
        fs::remove_file(&p).at(&p)?;
        sync_dir(&self.root.join("images"))?;
        info!(image = %rec.name, "image removed");
        self.collect()?;
        Ok(rec)
    }

    fn refuse_if_used(&self, rec: &ImageRecord) -> Result<()> {
        let other_name = self
            .list()?
            .iter()
            .any(|i| i.name != rec.name && i.config_digest == rec.config_digest);
        if other_name {
            return Ok(());
        }
        let containers: Vec<String> = self
            .users()?
            .into_iter()
            .filter(|u| u.uses.config_digest == rec.config_digest)
            .map(|u| u.container)
            .collect();
        if containers.is_empty() {
            return Ok(());
        }
        Err(Error::ImageInUse {
            image: rec.name.clone(),
            containers: containers.join(", "),
        })
    }

    /// Delete blobs, layers, partial downloads and tmp dirs no image or container refers to.
    pub fn prune(&self) -> Result<PruneReport> {
        let _gc = self.lock("gc", true)?;
        self.collect()
    }

    fn collect(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        for img in self.list()? {
            blobs.insert(img.manifest_digest.hex().to_string());
            blobs.insert(img.config_digest.hex().to_string());
            if let Some(i) = &img.index_digest {
                blobs.insert(i.hex().to_string());
            }
            for l in &img.layers {
                blobs.insert(l.digest.hex().to_string());
                chains.insert(l.chain_id.hex().to_string());
            }
        }
        for user in self.users()? {
            for c in &user.uses.chain_ids {
                chains.insert(c.hex().to_string());
            }
        }
        let mut layer_ids = HashSet::new();
        for (name, path) in entries(&self.root.join("chains"))? {
            let hex = name.trim_end_matches(".json");
            let rec: Option<ChainRecord> = read_json(&path)?;
            match rec {
                Some(r) if chains.contains(hex) => {
                    layer_ids.insert(r.id.to_string());
                }
                _ => {
                    fs::remove_file(&path).at(&path)?;
                }
            }
        }
        for (name, path) in entries(&self.root.join("layers"))? {
            if name != "next-id" && !layer_ids.contains(&name) {
                fs::remove_dir_all(&path).at(&path)?;
                report.layers_removed += 1;
            }
        }
        for (name, path) in entries(&self.root.join("blobs/sha256"))? {
            if !blobs.contains(&name) {
                fs::remove_file(&path).at(&path)?;
                report.blobs_removed += 1;
            }
        }
        for (_, path) in entries(&self.root.join("ingest"))? {
            fs::remove_file(&path).at(&path)?;
            report.partials_removed += 1;
        }
        for (_, path) in entries(&self.root.join("tmp"))? {
            fs::remove_dir_all(&path).at(&path)?;
        }
        info!(?report, "store pruned");
        Ok(report)
    }
}

fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Store {
                path: path.to_path_buf(),
                reason: format!("corrupt record: {e}"),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| Error::Store {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &data)
}

/// Replaced atomically (see `skiff_sys::fs::write_atomic`): readers see the old or the new file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    skiff_sys::fs::write_atomic(path, data, 0o600).at(path)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_removes_unlocked_tmp_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let held = s.new_tmp_dir().unwrap();
        fs::write(held.path().join("f"), b"half").unwrap();
        let left = dir.path().join("tmp/1-0");
        fs::create_dir_all(left.join("usr")).unwrap();
        fs::write(dir.path().join("tmp/stray"), b"x").unwrap();
        Store::open(dir.path()).unwrap();
        assert!(held.path().join("f").exists(), "a held entry was removed");
        assert!(!left.exists() && !dir.path().join("tmp/stray").exists());
        let path = held.path().to_path_buf();
        drop(held);
        Store::open(dir.path()).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn blobs_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        assert!(s.write_blob(&Digest::of(b"other"), b"hello").is_err());
        s.write_blob(&d, b"hello").unwrap();
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
        assert!(matches!(s.read_blob(&d, 2), Err(Error::TooLarge { .. })));
        assert!(matches!(s.inspect("busybox"), Err(Error::ImageNotFound(_))));
        let rec = ImageRecord {
            name: "docker.io/library/busybox:latest".into(),
            manifest_digest: d.clone(),
            manifest_media_type: String::new(),
            index_digest: None,
            config_digest: d.clone(),
            platform: Platform::host(),
            layers: vec![],
            size: 0,
            pulled_at: 0,
        };
        s.put_image(&rec).unwrap();
        assert_eq!(s.inspect("busybox").unwrap(), rec);
        assert_eq!(s.inspect(&d.to_string()).unwrap(), rec);
        fs::write(s.blob_path(&Digest::of(b"junk")), b"junk").unwrap();
        let r = s.prune().unwrap();
        assert_eq!(r.blobs_removed, 1);
        assert!(s.has_blob(&d));
        s.remove("busybox").unwrap();
        assert!(!s.has_blob(&d));
        assert!(s.list().unwrap().is_empty());
    }
}
