//! Pull: resolve a reference to a manifest, fetch and verify its config, then download,
//! verify and unpack the layers in parallel, each streaming straight into its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::auth::{CredentialStore, Credentials};
use super::digest::{Digest, HashingReader};
use super::error::{Error, IoContext, Result};
use super::hosts::HostsConfig;
use super::limits::{self, ImageBudget, Metered};
use super::manifest::{
    self, Compression, Descriptor, Document, ImageConfigFile, ImageManifest, Platform,
};
use super::reference::Reference;
use super::registry::{Client, Endpoint};
use super::store::{ImageRecord, LayerRecord, Store};
use super::unpack;

/// What a pull reports as it goes, one event per layer state change.
#[derive(Clone, Debug)]
pub enum Progress {
    /// Already unpacked in the store.
    Exists { digest: Digest, size: u64 },
    /// Downloading (or replaying a partial download); `done` of `total` bytes.
    Downloading {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// Verified and unpacked.
    Done { digest: Digest, size: u64 },
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Clone)]
pub struct PullOptions {
    /// Platform to choose from an index; the host's by default.
    pub platform: Option<Platform>,
    /// Credentials for the image's registry (the CRI's `AuthConfig`), over the file's.
    pub credentials: Option<Credentials>,
    /// A Docker `config.json`; `None` means `$DOCKER_CONFIG` or `~/.docker/config.json`.
    pub credentials_file: Option<PathBuf>,
    pub hosts: HostsConfig,
    /// Layers downloaded at once.
    pub max_parallel: usize,
    pub max_manifest_bytes: u64,
    pub max_config_bytes: u64,
    /// Uncompressed size limit of one layer (a decompression bomb stops here);
    /// [`limits::DEFAULT_MAX_LAYER_BYTES`] by default.
    pub max_layer_bytes: u64,
    /// Uncompressed size limit of the whole image, layers already in the store included;
    /// [`limits::DEFAULT_MAX_IMAGE_BYTES`] by default.
    pub max_image_bytes: u64,
    /// Reconnects per blob after a dropped connection.
    pub retries: u32,
    pub progress: Option<ProgressFn>,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            platform: None,
            credentials: None,
            credentials_file: None,
            hosts: HostsConfig::default(),
            max_parallel: 3,
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 8 << 20,
            max_layer_bytes: limits::DEFAULT_MAX_LAYER_BYTES,
            max_image_bytes: limits::DEFAULT_MAX_IMAGE_BYTES,
            retries: 5,
            progress: None,
        }
    }
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("credentials", &self.credentials)
            .field("max_parallel", &self.max_parallel)
            .field("max_layer_bytes", &self.max_layer_bytes)
            .field("max_image_bytes", &self.max_image_bytes)
            .finish_non_exhaustive()
    }
}

/// Pull `reference` into `store` and record it under the name asked for.
pub fn pull(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<ImageRecord> {
    let client = client_for(reference, opts)?;
    let _gc = store.lock("gc", false)?;
    let (ep, resolved) = resolve(&client, reference, opts)?;
    let Resolved {
        manifest,
        manifest_bytes,
        manifest_digest,
        media_type,
        index,
    } = resolved;
    let repo = &reference.repository;
    let (config_bytes, fetched_config) = config_blob(store, &client, &ep, repo, &manifest, opts)?;
    let config: ImageConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::Malformed {
            what: format!("image config {}", manifest.config.digest),
            reason: e.to_string(),
        })?;
    let budget = ImageBudget::new(opts.max_image_bytes);
    let stored = plan_layers(&manifest, &config).and_then(|layers| {
        let job = Job {
            store,
            client: &client,
            ep: &ep,
            repo,
            opts,
            budget: &budget,
            image: reference.to_string(),
        };
        fetch_layers(&job, &layers).map(|_| layers)
    });
    let layers = match stored {
        Ok(l) => l,
        Err(e) => {
            if fetched_config {
                forget_unused_config(store, &manifest.config.digest);
            }
            return Err(e);
        }
    };
    // Again: a concurrent failed pull may have dropped it meanwhile.
    store.write_blob(&manifest.config.digest, &config_bytes)?;
    store.write_blob(&manifest_digest, &manifest_bytes)?;
    if let Some((d, bytes)) = &index {
        store.write_blob(d, bytes)?;
    }
    let record = ImageRecord {
        name: reference.to_string(),
        manifest_digest,
        manifest_media_type: media_type,
        index_digest: index.map(|(d, _)| d),
        config_digest: manifest.config.digest.clone(),
        platform: Platform {
            architecture: config.architecture.clone(),
            os: config.os.clone(),
            variant: config.variant.clone(),
        },
        size: layers.iter().map(|l| l.size).sum(),
        layers,
        pulled_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    store.put_image(&record)?;
    info!(image = %record.name, manifest = %record.manifest_digest, "pulled");
    Ok(record)
}

/// The config from the store, or fetched and stored under the blob lock so concurrent
/// pulls fetch it once. Returns whether this pull stored it.
fn config_blob(
    store: &Store,
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    manifest: &ImageManifest,
    opts: &PullOptions,
) -> Result<(Vec<u8>, bool)> {
    let desc = &manifest.config;
    let _lock = store.lock(&format!("blob-{}", desc.digest.hex()), true)?;
    if store.has_blob(&desc.digest) {
        return Ok((store.read_blob(&desc.digest, opts.max_config_bytes)?, false));
    }
    let bytes = fetch_small(
        client,
        ep,
        repo,
        desc,
        opts.max_config_bytes,
        "image config",
    )?;
    store.write_blob(&desc.digest, &bytes)?;
    Ok((bytes, true))
}

/// A failed pull leaves the store as it found it: drop a config it stored that no image uses.
fn forget_unused_config(store: &Store, digest: &Digest) {
    let _lock = store.lock(&format!("blob-{}", digest.hex()), true);
    let used = store
        .list()
        .map(|imgs| imgs.iter().any(|i| &i.config_digest == digest))
        .unwrap_or(true);
    if !used {
        let p = store.blob_path(digest);
        if let Err(e) = fs::remove_file(&p) {
            warn!(path = %p.display(), error = %e, "cannot remove unused config");
        }
    }
}

fn client_for(reference: &Reference, opts: &PullOptions) -> Result<Client> {
    let path = opts
        .credentials_file
        .clone()
        .or_else(CredentialStore::default_path);
    let mut creds = match path {
        Some(p) => CredentialStore::load(&p)?,
        None => CredentialStore::default(),
    };
    if let Some(c) = &opts.credentials {
        creds.insert(&reference.registry, c.clone());
    }
    Client::new(opts.hosts.clone(), creds)
}

struct Resolved {
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    media_type: String,
    index: Option<(Digest, Vec<u8>)>,
}

impl Resolved {
    /// The manifest's own media type wins; then the HTTP Content-Type (umoci writes none); then OCI.
    fn new(
        manifest: ImageManifest,
        content_type: Option<String>,
        manifest_bytes: Vec<u8>,
        manifest_digest: Digest,
        index: Option<(Digest, Vec<u8>)>,
    ) -> Resolved {
        let media_type = manifest
            .media_type
            .clone()
            .or(content_type)
            .unwrap_or_else(|| manifest::OCI_MANIFEST.into());
        Resolved {
            manifest,
            manifest_bytes,
            manifest_digest,
            media_type,
            index,
        }
    }
}

/// Try each endpoint (mirrors first); the first that serves the manifest serves the blobs.
fn resolve(client: &Client, r: &Reference, opts: &PullOptions) -> Result<(Endpoint, Resolved)> {
    let endpoints = client.endpoints(r);
    let mut last = None;
    for ep in endpoints {
        match resolve_at(client, &ep, r, opts) {
            Ok(res) => return Ok((ep, res)),
            Err(e) if ep.is_mirror => {
                warn!(mirror = %ep.host, error = %e, "mirror failed, trying the next endpoint");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::InvalidReference {
        reference: r.to_string(),
        reason: "no endpoint".into(),
    }))
}

fn resolve_at(
    client: &Client,
    ep: &Endpoint,
    r: &Reference,
    opts: &PullOptions,
) -> Result<Resolved> {
    let what = format!("manifest {r}");
    let (bytes, ct) = fetch_manifest(
        client,
        ep,
        &r.repository,
        &r.manifest_ref(),
        opts.max_manifest_bytes,
        &what,
    )?;
    let digest = Digest::of(&bytes);
    if let Some(want) = &r.digest {
        want.verify(&what, &bytes)?;
    }
    match Document::parse(&what, &bytes, ct.as_deref())? {
        Document::Manifest(m) => Ok(Resolved::new(m, ct, bytes, digest, None)),
        Document::Index(idx) => {
            let wanted = opts.platform.clone().unwrap_or_else(Platform::host);
            let desc = manifest::select(&idx, &wanted)?.clone();
            debug!(platform = %wanted, manifest = %desc.digest, "selected from index");
            let what = format!("manifest {} of {r}", desc.digest);
            let limit = opts.max_manifest_bytes.min(desc.size);
            let (mbytes, mct) = fetch_manifest(
                client,
                ep,
                &r.repository,
                &desc.digest.to_string(),
                limit,
                &what,
            )?;
            check_descriptor(&what, &desc, &mbytes)?;
            let ct = mct.or_else(|| Some(desc.media_type.clone()).filter(|m| !m.is_empty()));
            match Document::parse(&what, &mbytes, ct.as_deref())? {
                Document::Manifest(m) => Ok(Resolved::new(
                    m,
                    ct,
                    mbytes,
                    desc.digest,
                    Some((digest, bytes)),
                )),
                Document::Index(_) => Err(Error::Malformed {
                    what,
                    reason: "nested index".into(),
                }),
            }
        }
    }
}

fn fetch_manifest(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    reference: &str,
    limit: u64,
    what: &str,
) -> Result<(Vec<u8>, Option<String>)> {
    let f = client.get_manifest(ep, repo, reference, manifest::ACCEPT)?;
    let bytes = read_limited(f.body, f.content_length, limit, what)?;
    Ok((bytes, f.content_type))
}

/// A small blob (config) read whole, checked against its descriptor.
fn fetch_small(
    client: &Client,
    ep: &Endpoint,
    repo: &str,
    desc: &Descriptor,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let what = format!("{what} {}", desc.digest);
    if desc.size > limit {
        return Err(Error::TooLarge { what, limit });
    }
    let f = client.get_blob(ep, repo, &desc.digest, 0)?;
    let bytes = read_limited(f.body, f.content_length, desc.size, &what)?;
    check_descriptor(&what, desc, &bytes)?;
    Ok(bytes)
}

fn read_limited(
    body: impl Read,
    content_length: Option<u64>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let too_large = || Error::TooLarge {
        what: what.to_string(),
        limit,
    };
    if content_length.is_some_and(|l| l > limit) {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    body.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Transport {
            url: what.to_string(),
            reason: e.to_string(),
        })?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(buf)
}

fn check_descriptor(what: &str, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != desc.size {
        return Err(Error::SizeMismatch {
            what: what.to_string(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    desc.digest.verify(what, bytes)
}

/// More layers than overlayfs can stack (its lowerdir limit is 500) cannot be run anyway.
const MAX_LAYERS: usize = 500;

fn plan_layers(m: &ImageManifest, config: &ImageConfigFile) -> Result<Vec<LayerRecord>> {
    if m.layers.len() > MAX_LAYERS {
        return Err(Error::Malformed {
            what: format!("manifest with config {}", m.config.digest),
            reason: format!(
                "{} layers (at most {MAX_LAYERS} are supported)",
                m.layers.len()
            ),
        });
    }
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(Error::Malformed {
            what: format!("image config {}", m.config.digest),
            reason: format!(
                "{} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                m.layers.len()
            ),
        });
    }
    let mut parent: Option<Digest> = None;
    let mut out = Vec::new();
    for (desc, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
        Compression::from_media_type(&format!("layer {}", desc.digest), &desc.media_type)?;
        let chain_id = Digest::chain(parent.as_ref(), diff_id);
        out.push(LayerRecord {
            digest: desc.digest.clone(),
            media_type: desc.media_type.clone(),
            size: desc.size,
            diff_id: diff_id.clone(),
            chain_id: chain_id.clone(),
        });
        parent = Some(chain_id);
    }
    Ok(out)
}

/// What every layer of one pull shares.
struct Job<'a> {
    store: &'a Store,
    client: &'a Client,
    ep: &'a Endpoint,
    repo: &'a str,
    opts: &'a PullOptions,
    budget: &'a ImageBudget,
    image: String,
}

impl Job<'_> {
    fn image_too_large(&self) -> Error {
        Error::TooLarge {
            what: format!("image {} uncompressed (all its layers)", self.image),
            limit: self.budget.limit,
        }
    }
}

/// Bounded parallel workers over the layer list; the first error wins.
fn fetch_layers(job: &Job, layers: &[LayerRecord]) -> Result<()> {
    let next = Mutex::new(0usize);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    let workers = job.opts.max_parallel.clamp(1, layers.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    return;
                }
                let i = {
                    let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some(layer) = layers.get(i) else { return };
                if let Err(e) = ensure_layer(job, layer) {
                    failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Make sure the layer's chain is unpacked. The chain lock makes concurrent pulls of one
/// layer wait for each other; the blob lock makes them share one download.
fn ensure_layer(job: &Job, layer: &LayerRecord) -> Result<()> {
    let (store, opts) = (job.store, job.opts);
    let report = |p: Progress| {
        if let Some(f) = &opts.progress {
            f(&p)
        }
    };
    let _chain = store.lock(&format!("chain-{}", layer.chain_id.hex()), true)?;
    if let Some(c) = store.chain(&layer.chain_id)? {
        if !store.layer_dir(c.id).is_dir() {
            // Its directory was removed behind our back: unpack it again.
            warn!(chain = %layer.chain_id, id = c.id, "layer directory missing, unpacking again");
            store.forget_chain(&layer.chain_id)?;
        }
    }
    if let Some(c) = store.chain(&layer.chain_id)? {
        if !job.budget.add(c.unpacked_bytes) {
            return Err(job.image_too_large());
        }
        report(Progress::Exists {
            digest: layer.digest.clone(),
            size: layer.size,
        });
        return Ok(());
    }
    let _blob = store.lock(&format!("blob-{}", layer.digest.hex()), true)?;
    let tmp = store.new_tmp_dir()?;
    match fetch_and_unpack(job, layer, tmp.path()) {
        Ok(unpacked) => {
            store.commit_layer(
                tmp.path(),
                &layer.chain_id,
                &layer.diff_id,
                &layer.digest,
                unpacked,
            )?;
            report(Progress::Done {
                digest: layer.digest.clone(),
                size: layer.size,
            });
            Ok(())
        }
        Err(e) => {
            if let Err(rm) = fs::remove_dir_all(tmp.path()) {
                warn!(dir = %tmp.path().display(), error = %rm, "cannot remove failed layer dir");
            }
            Err(e)
        }
    }
}

fn fetch_and_unpack(job: &Job, layer: &LayerRecord, tmp: &std::path::Path) -> Result<u64> {
    let (store, opts) = (job.store, job.opts);
    let label = layer.digest.to_string();
    let compression = Compression::from_media_type(&label, &layer.media_type)?;
    let net_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let downloading = !store.has_blob(&layer.digest);
    let source: Box<dyn Read + Send> = if downloading {
        Box::new(BlobSource::open(job, layer, net_error.clone())?)
    } else {
        let p = store.blob_path(&layer.digest);
        Box::new(File::open(&p).at(&p)?)
    };
    let mut blob = HashingReader::new(source, layer.size);
    // An entry may declare no more than what is left to this layer and to the image.
    let entry_limit = opts.max_layer_bytes.min(job.budget.remaining());
    let (unpacked, diff, over_limit) = {
        let decoder =
            decoder(compression, BufReader::with_capacity(128 << 10, &mut blob)).at(tmp)?;
        let mut diff = HashingReader::new(decoder, opts.max_layer_bytes);
        // Inflate and hash in large chunks, not a tar header's 512 bytes at a time. What the
        // unpacker leaves in the buffer is drained through it, so the diffID sees every byte.
        let metered = Metered {
            inner: &mut diff,
            budget: job.budget,
        };
        let buffered = BufReader::with_capacity(DECODE_CHUNK, metered);
        let unpack_opts = unpack::Options {
            max_entry_bytes: entry_limit,
            ..unpack::Options::default()
        };
        let res = unpack::unpack(buffered, tmp, &label, unpack_opts)
            .and_then(|(_, mut rest)| io::copy(&mut rest, &mut io::sink()).at(tmp));
        let over = diff.count() > opts.max_layer_bytes;
        (res, diff.finish(), over)
    };
    let failed = |e: Error| {
        if downloading {
            discard_ingest(store, &layer.digest, &e);
        }
        Err(e)
    };
    if let Some(e) = net_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        // A partial download stays for the next pull to resume; an empty one is no data.
        let p = store.ingest_path(&layer.digest);
        if fs::metadata(&p).is_ok_and(|m| m.len() == 0) {
            discard_ingest(store, &layer.digest, &e);
        }
        return Err(e);
    }
    if blob.count() > layer.size {
        return failed(Error::SizeMismatch {
            what: format!("layer {label}"),
            expected: layer.size,
            actual: blob.count(),
        });
    }
    if over_limit {
        return failed(Error::TooLarge {
            what: format!("layer {label} uncompressed"),
            limit: opts.max_layer_bytes,
        });
    }
    if job.budget.over() {
        return failed(job.image_too_large());
    }
    // Whatever the unpacker thought, a blob that is not the one asked for is the error to report.
    let drained = io::copy(&mut blob, &mut io::sink());
    let (digest, size) = blob.finish();
    if drained.is_ok() && size == layer.size && digest != layer.digest {
        return failed(Error::DigestMismatch {
            what: format!("layer {label}"),
            expected: label.clone(),
            actual: digest.to_string(),
        });
    }
    match unpacked {
        // An entry declared more than was left: the image's limit when that was the smaller.
        Err(Error::TooLarge { .. }) if entry_limit < opts.max_layer_bytes => {
            return failed(job.image_too_large())
        }
        Err(e) => return failed(e),
        Ok(_) => {}
    }
    if let Err(e) = drained {
        return failed(Error::Transport {
            url: label,
            reason: e.to_string(),
        });
    }
    if size != layer.size {
        return failed(Error::SizeMismatch {
            what: format!("layer {label}"),
            expected: layer.size,
            actual: size,
        });
    }
    let (diff_id, unpacked_bytes) = diff;
    if diff_id != layer.diff_id {
        return failed(Error::DigestMismatch {
            what: format!("layer {label} uncompressed (diff ID)"),
            expected: layer.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    if downloading {
        store.commit_ingest(&layer.digest)?;
    }
    Ok(unpacked_bytes)
}

/// Downloaded bytes written to the ingest file per write.
const INGEST_CHUNK: usize = 1 << 20;

/// Decompressed bytes produced per call into the decoder.
const DECODE_CHUNK: usize = 256 << 10;

fn discard_ingest(store: &Store, digest: &Digest, why: &Error) {
    debug!(%digest, error = %why, "discarding partial download");
    let p = store.ingest_path(digest);
    if let Err(e) = fs::remove_file(&p) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %p.display(), error = %e, "cannot remove partial download");
        }
    }
}

fn decoder<'a, R: io::BufRead + Send + 'a>(
    c: Compression,
    r: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

/// A blob's bytes: first a partial download left by an earlier attempt, then the registry
/// from where that ended, reconnecting with Range when the connection drops. Network bytes
/// are appended to the ingest file as they pass.
struct BlobSource<'a> {
    client: &'a Client,
    ep: &'a Endpoint,
    repo: &'a str,
    digest: Digest,
    size: u64,
    pos: u64,
    prefix: Option<File>,
    body: Option<Box<dyn Read + Send + Sync>>,
    /// Buffered: the network hands over a few KiB per read. Flushed when the blob is
    /// complete (before it is verified and committed); on failure whatever reached the file is
    /// a prefix to resume from, verified with the rest.
    sink: BufWriter<File>,
    attempts: u32,
    max_attempts: u32,
    error: Arc<Mutex<Option<Error>>>,
    progress: Option<ProgressFn>,
    reported: u64,
}

impl<'a> BlobSource<'a> {
    fn open(job: &Job<'a>, layer: &LayerRecord, error: Arc<Mutex<Option<Error>>>) -> Result<Self> {
        let (store, opts) = (job.store, job.opts);
        let path = store.ingest_path(&layer.digest);
        let sink = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        let have = sink.metadata().at(&path)?.len();
        let prefix = if have > 0 && have <= layer.size {
            debug!(digest = %layer.digest, bytes = have, "resuming partial download");
            Some(File::open(&path).at(&path)?)
        } else {
            if have > 0 {
                sink.set_len(0).at(&path)?;
            }
            None
        };
        Ok(Self {
            client: job.client,
            ep: job.ep,
            repo: job.repo,
            digest: layer.digest.clone(),
            size: layer.size,
            pos: 0,
            prefix,
            body: None,
            sink: BufWriter::with_capacity(INGEST_CHUNK, sink),
            attempts: 0,
            max_attempts: opts.retries + 1,
            error,
            progress: opts.progress.clone(),
            reported: 0,
        })
    }

    fn fail(&mut self, e: Error) -> io::Error {
        // What arrived stays on disk for the next pull to resume from.
        if let Err(f) = self.sink.flush() {
            warn!(digest = %self.digest, error = %f, "cannot keep the partial download");
        }
        let msg = e.to_string();
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
        io::Error::other(msg)
    }

    fn connect(&mut self) -> Result<()> {
        let f = self
            .client
            .get_blob(self.ep, self.repo, &self.digest, self.pos)?;
        let expected = self.size - f.offset;
        if let Some(len) = f.content_length {
            if len != expected {
                return Err(Error::SizeMismatch {
                    what: format!("layer {} (Content-Length)", self.digest),
                    expected,
                    actual: len,
                });
            }
        }
        let mut body = f.body;
        if f.offset < self.pos {
            // Range not honoured: skip what we already have.
            let skip = self.pos - f.offset;
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(|e| {
                Error::Transport {
                    url: self.digest.to_string(),
                    reason: e.to_string(),
                }
            })?;
            if skipped != skip {
                return Err(Error::Transport {
                    url: self.digest.to_string(),
                    reason: "connection closed while skipping to the resume offset".into(),
                });
            }
        }
        self.body = Some(body);
        Ok(())
    }

    fn retryable(e: &Error) -> bool {
        match e {
            Error::Transport { .. } => true,
            Error::Registry { status, .. } => *status >= 500,
            _ => false,
        }
    }

    fn report(&mut self) {
        if let Some(p) = &self.progress {
            if self.pos - self.reported >= (1 << 20) || self.pos == self.size {
                self.reported = self.pos;
                p(&Progress::Downloading {
                    digest: self.digest.clone(),
                    done: self.pos,
                    total: self.size,
                });
            }
        }
    }

    fn read_network(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size {
                return Ok(0);
            }
            if self.body.is_none() {
                self.attempts += 1;
                if let Err(e) = self.connect() {
                    if Self::retryable(&e) && self.attempts < self.max_attempts {
                        warn!(digest = %self.digest, error = %e, "blob fetch failed, retrying");
                        std::thread::sleep(Duration::from_millis(200 * self.attempts as u64));
                        continue;
                    }
                    return Err(self.fail(e));
                }
            }
            let want = (buf.len() as u64).min(self.size - self.pos) as usize;
            let res = self
                .body
                .as_mut()
                .map_or(Ok(0), |b| b.read(&mut buf[..want]));
            match res {
                Ok(n) if n > 0 => {
                    self.sink.write_all(&buf[..n])?;
                    self.pos += n as u64;
                    if self.pos == self.size {
                        self.sink.flush()?;
                    }
                    self.report();
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    let reason = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "connection closed early".to_string(),
                    };
                    self.body = None;
                    if self.attempts >= self.max_attempts {
                        return Err(self.fail(Error::Transport {
                            url: self.digest.to_string(),
                            reason: format!("{reason} at byte {} of {}", self.pos, self.size),
                        }));
                    }
                    warn!(digest = %self.digest, at = self.pos, %reason, "blob download interrupted, resuming");
                }
            }
        }
    }
}

impl Read for BlobSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(p) = &mut self.prefix {
            let want = (buf.len() as u64).min(self.size - self.pos) as usize;
            let n = p.read(&mut buf[..want])?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.prefix = None;
        }
        self.read_network(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::RootFs;

    fn desc(data: &[u8], media_type: &str) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: Digest::of(data),
            size: data.len() as u64,
            platform: None,
        }
    }

    #[test]
    fn plans_chain_ids_and_checks_counts() {
        let gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let m = ImageManifest {
            media_type: None,
            config: desc(b"c", "application/vnd.oci.image.config.v1+json"),
            layers: vec![desc(b"l1", gz), desc(b"l2", gz)],
        };
        let (d1, d2) = (Digest::of(b"t1"), Digest::of(b"t2"));
        let mut cfg = ImageConfigFile {
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![d1.clone(), d2.clone()],
            },
            ..Default::default()
        };
        let plan = plan_layers(&m, &cfg).unwrap();
        assert_eq!(plan[0].chain_id, d1);
        assert_eq!(plan[1].chain_id, Digest::chain(Some(&d1), &d2));
        cfg.rootfs.diff_ids.pop();
        assert!(matches!(
            plan_layers(&m, &cfg),
            Err(Error::Malformed { .. })
        ));
        let many = ImageManifest {
            layers: vec![desc(b"l", gz); MAX_LAYERS + 1],
            ..m
        };
        assert!(matches!(
            plan_layers(&many, &cfg),
            Err(Error::Malformed { .. })
        ));
    }
}
