//! The artifact a generation ships as (format version 1, `docs/registry.md`): an OCI image
//! manifest with `artifactType` [`ARTIFACT_TYPE`], a config blob ([`Config`]) describing the
//! generation, every object its rootfs links and the rootfs tree, and one zstd blob per
//! object. The rootfs itself is never sent: it is hardlinks to its objects plus a few
//! symlinks and small texts, rebuilt from its tree on the receiving store.
//!
//! Deterministic: the config and manifest are `serde_json` of structs with a fixed field
//! order and sorted maps, compact, with no timestamps and no generation number (numbers are
//! per store); blobs are zstd level [`ZSTD_LEVEL`], single-threaded, no checksum, so the same
//! generation gives the same manifest digest from any builder.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::RegistryError;
use crate::generation::{Generation, Origin};
use crate::store::{Digest, Node, Store, StorePath};

/// The manifest's media type (OCI image manifest, schemaVersion 2).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The manifest's `artifactType` and the config blob's media type.
pub const ARTIFACT_TYPE: &str = "application/vnd.kbuild.generation.v1+json";
/// The config blob's media type.
pub const CONFIG_MEDIA_TYPE: &str = ARTIFACT_TYPE;
/// Each object's blob: the object file's bytes, zstd-compressed.
pub const OBJECT_MEDIA_TYPE: &str = "application/vnd.kbuild.object.v1+zstd";
/// The config format version this kbuild writes and reads.
pub const CONFIG_VERSION: u32 = 1;
/// zstd level of object blobs. Part of the format: another level gives other blob digests.
pub const ZSTD_LEVEL: i32 = 1;
/// The largest object accepted from outside (bytes, uncompressed): larger declared sizes are
/// refused before anything is downloaded.
pub const MAX_OBJECT_SIZE: u64 = 4 << 30;
/// The largest config blob or manifest accepted (bytes).
pub const MAX_METADATA_SIZE: u64 = 16 << 20;
/// The largest inline text file in a rootfs tree (the rootfs's `kbuild.json`).
pub const MAX_TEXT_SIZE: usize = 1 << 20;

/// The config blob: what the receiving store records and how it rebuilds the rootfs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// [`CONFIG_VERSION`].
    pub version: u32,
    /// The profile the generation was built in (the default profile of the import).
    pub profile: String,
    pub recipes: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, String>,
    pub prerequisites: Vec<String>,
    #[serde(default)]
    pub hosts: Vec<crate::hosts::HostEntry>,
    #[serde(default)]
    pub origins: BTreeMap<String, Origin>,
    pub rootfs: Rootfs,
    /// Every object the rootfs links, sorted by name.
    pub objects: Vec<Object>,
}

/// The rootfs: its store name and its tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rootfs {
    pub name: StorePath,
    /// Path relative to the rootfs (`/`-separated) → entry; directories listed too.
    pub tree: BTreeMap<String, TreeEntry>,
}

/// One entry of a rootfs tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TreeEntry {
    Directory,
    Symlink {
        target: String,
    },
    /// A hardlink to the object of that name.
    Object {
        object: StorePath,
    },
    /// A small file that is no object of its own (the rootfs's `kbuild.json`).
    Text {
        text: String,
        executable: bool,
    },
}

/// One content object (a regular file in the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub name: StorePath,
    /// `sha256:<hex>` of its blob (the zstd-compressed bytes).
    pub blob: String,
    /// Bytes of the blob.
    pub blob_size: u64,
    /// Bytes of the object (uncompressed).
    pub size: u64,
    pub executable: bool,
    /// Plain BLAKE3 of the object's bytes; with size and executable bit it gives the
    /// object's node digest, whose first 128 bits are its name.
    pub blake3: String,
    /// The derivation that made it (informative, recorded in the store's metadata).
    pub deriver: String,
}

impl Object {
    /// The node this entry claims the object is.
    pub fn node(&self) -> Option<Node> {
        Some(Node::File {
            executable: self.executable,
            size: self.size,
            contents: Digest::from_hex(&self.blake3)?,
        })
    }
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The OCI image manifest, field order fixed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    #[serde(rename = "artifactType", default)]
    pub artifact_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex part of a `sha256:<64 hex>` digest, or `None` if it is not one (so it is safe as
/// a file name).
pub fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// A generation ready to ship: its config and manifest bytes, and where each blob's bytes
/// come from.
#[derive(Debug)]
pub struct Artifact {
    pub config: Config,
    pub config_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    /// `sha256:<hex>` of `manifest_bytes`.
    pub manifest_digest: String,
}

/// An object read for an artifact: its size and BLAKE3 (of the bytes) and its blob.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub size: u64,
    pub blake3: Digest,
    /// `sha256:<hex>` of the blob.
    pub blob: String,
    pub blob_size: u64,
}

/// Describes generation `g` (profile `g.profile`). Each object is prepared by `prepare`,
/// called once per object with its name and path (on several threads: objects are
/// independent, so the bytes do not depend on the order), which reads the object for its
/// BLAKE3 and compresses it (or finds its blob digest in a cache).
pub fn describe(
    store: &Store,
    g: &Generation,
    prepare: impl Fn(&StorePath, &Path) -> Result<Prepared, RegistryError> + Sync,
) -> Result<Artifact, RegistryError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let object_err = |object: &StorePath, source| RegistryError::Object {
        object: object.to_string(),
        source,
    };
    // The check a switch makes: a generation damaged in this store (a rootfs entry replaced
    // by a link, a changed file) is refused here, not shipped for every receiver to refuse.
    crate::store::verify::check_unmodified_closure(store, &g.rootfs)?;
    let meta = store
        .meta(&g.rootfs)?
        .ok_or_else(|| RegistryError::Object {
            object: g.rootfs.to_string(),
            source: std::io::Error::other("it has no metadata (run `kbuild verify --repair`)"),
        })?;
    // Objects by inode, to name each rootfs file by the object it is a hardlink of.
    let mut by_inode = BTreeMap::new();
    let mut by_node = BTreeMap::new();
    let mut found = Vec::new();
    for name in &meta.references {
        let path = store.path_of(name);
        let md = fs_err::symlink_metadata(&path).map_err(|e| object_err(name, e))?;
        if !md.is_file() {
            return Err(object_err(
                name,
                std::io::Error::other("it is not a regular file (only file objects ship)"),
            ));
        }
        let executable = md.permissions().mode() & 0o111 != 0;
        let deriver = store.meta(name)?.map(|m| m.deriver).unwrap_or_default();
        by_inode.insert((md.dev(), md.ino()), name.clone());
        found.push((name.clone(), path, executable, deriver));
    }
    let prepared = super::parallel_map(&found, |(name, path, _, _)| prepare(name, path))?;
    let mut objects = Vec::new();
    for ((name, _, executable, deriver), p) in found.into_iter().zip(prepared) {
        let o = Object {
            name: name.clone(),
            blob: p.blob,
            blob_size: p.blob_size,
            size: p.size,
            executable,
            blake3: p.blake3.to_hex(),
            deriver,
        };
        if let Some(node) = o.node() {
            by_node.insert(node.digest(), name);
        }
        objects.push(o);
    }
    objects.sort_by(|a, b| a.name.cmp(&b.name));

    let top = store.path_of(&g.rootfs);
    let mut tree = BTreeMap::new();
    let walk = crate::fs::walk_tree(&top).map_err(|e| object_err(&g.rootfs, e))?;
    for entry in walk.min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| object_err(&g.rootfs, crate::fs::walk_error(e)))?;
        let rel = entry
            .path()
            .strip_prefix(&top)
            .expect("walkdir stays below its root")
            .to_str()
            .ok_or_else(|| {
                object_err(
                    &g.rootfs,
                    std::io::Error::other(format!("`{}` is not UTF-8", entry.path().display())),
                )
            })?
            .to_owned();
        let ft = entry.file_type();
        let item = if ft.is_dir() {
            TreeEntry::Directory
        } else if ft.is_symlink() {
            let t = fs_err::read_link(entry.path()).map_err(|e| object_err(&g.rootfs, e))?;
            TreeEntry::Symlink {
                target: t.to_string_lossy().into_owned(),
            }
        } else {
            let md = entry
                .metadata()
                .map_err(|e| object_err(&g.rootfs, std::io::Error::other(e)))?;
            let executable = md.permissions().mode() & 0o111 != 0;
            let by_ino = by_inode.get(&(md.dev(), md.ino())).cloned();
            let object = match by_ino {
                Some(o) => Some(o),
                // A copy instead of a hardlink (another filesystem): found by content.
                None => {
                    let (size, b3) =
                        hash_file(entry.path()).map_err(|e| object_err(&g.rootfs, e))?;
                    let node = Node::File {
                        executable,
                        size,
                        contents: b3,
                    };
                    by_node.get(&node.digest()).cloned()
                }
            };
            match object {
                Some(object) => TreeEntry::Object { object },
                None => {
                    let bytes = fs_err::read(entry.path()).map_err(|e| object_err(&g.rootfs, e))?;
                    let text = String::from_utf8(bytes)
                        .ok()
                        .filter(|t| t.len() <= MAX_TEXT_SIZE);
                    match text {
                        Some(text) => TreeEntry::Text { text, executable },
                        None => {
                            return Err(object_err(
                                &g.rootfs,
                                std::io::Error::other(format!(
                                    "`{rel}` is no object the rootfs references and too large or not text"
                                )),
                            ));
                        }
                    }
                }
            }
        };
        tree.insert(rel, item);
    }

    let config = Config {
        version: CONFIG_VERSION,
        profile: g.profile.clone(),
        recipes: g.recipes.clone(),
        variables: g.variables.clone(),
        inputs: g.inputs.clone(),
        prerequisites: g.prerequisites.clone(),
        hosts: g.hosts.clone(),
        origins: g.origins.clone(),
        rootfs: Rootfs {
            name: g.rootfs.clone(),
            tree,
        },
        objects,
    };
    Ok(finish(config))
}

/// The config's bytes and the manifest around them.
pub fn finish(config: Config) -> Artifact {
    let config_bytes = serde_json::to_vec(&config).expect("the config serializes");
    let mut layers: Vec<Descriptor> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for o in &config.objects {
        // Two objects with the same bytes (and other names) share one blob.
        if seen.insert(o.blob.clone()) {
            layers.push(Descriptor {
                media_type: OBJECT_MEDIA_TYPE.to_owned(),
                digest: o.blob.clone(),
                size: o.blob_size,
                artifact_type: None,
                annotations: BTreeMap::new(),
            });
        }
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: MANIFEST_MEDIA_TYPE.to_owned(),
        artifact_type: ARTIFACT_TYPE.to_owned(),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_owned(),
            digest: sha256_digest(&config_bytes),
            size: config_bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::from([
            ("dev.kbuild.profile".to_owned(), config.profile.clone()),
            (
                "dev.kbuild.rootfs".to_owned(),
                config.rootfs.name.to_string(),
            ),
        ]),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("the manifest serializes");
    let manifest_digest = sha256_digest(&manifest_bytes);
    Artifact {
        config,
        config_bytes,
        manifest,
        manifest_bytes,
        manifest_digest,
    }
}

/// Size and plain BLAKE3 of a file's bytes.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, Digest)> {
    let mut f = fs_err::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let n = std::io::copy(&mut f, &mut h)?;
    Ok((n, Digest(*h.finalize().as_bytes())))
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }

    /// `(sha256:<hex>, bytes, inner)`.
    pub fn finish(self) -> (String, u64, W) {
        (
            format!("sha256:{}", hex(&self.hasher.finalize())),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses the file at `src` into `dest` (created), reading it once for both its BLAKE3
/// and the blob. Fixed settings: level [`ZSTD_LEVEL`], one thread, no checksum (the blob's
/// digest and the object's BLAKE3 check it), content size left out (the config carries it).
/// `dest` is synced (`fdatasync`) when `durable` says it must outlive a crash (an export's
/// blob); a push's staged blob is read back once from the page cache and deleted, so syncing
/// it would only make the push wait for the disk.
pub fn compress_file(src: &Path, dest: &Path, durable: Durable) -> std::io::Result<Prepared> {
    let out = fs_err::File::create(dest)?;
    let (p, buf) = compress_into(src, std::io::BufWriter::new(out), dest)?;
    let file = buf
        .into_inner()
        .map_err(|e| crate::fs::annotate(e.into_error(), "write", dest))?;
    if durable == Durable::Synced {
        file.sync_data()?;
    }
    Ok(p)
}

/// The blob digest (`sha256:<hex>`) and size in bytes that the file `src` compresses to, as
/// [`compress_file`] would write it, without writing it: what `kbuild verify` checks a push
/// cache entry against (see `registry::cache::check`).
pub fn blob_of(src: &Path) -> std::io::Result<(String, u64)> {
    let (p, _) = compress_into(src, std::io::sink(), src)?;
    Ok((p.blob, p.blob_size))
}

/// Compresses `src` into `out` (the one encoder setup every blob is made with: level
/// [`ZSTD_LEVEL`], no checksum, no content size), `dest` naming `out` in errors.
fn compress_into<W: Write>(src: &Path, out: W, dest: &Path) -> std::io::Result<(Prepared, W)> {
    let mut input = Blake3Reader {
        inner: fs_err::File::open(src)?,
        hasher: blake3::Hasher::new(),
        count: 0,
    };
    let mut enc = zstd::stream::Encoder::new(HashingWriter::new(out), ZSTD_LEVEL)
        .map_err(|e| crate::fs::annotate(e, "start compressing into", dest))?;
    enc.include_checksum(false)
        .and_then(|()| enc.include_contentsize(false))
        .map_err(|e| crate::fs::annotate(e, "set up compression into", dest))?;
    std::io::copy(&mut input, &mut enc)?;
    let w = enc
        .finish()
        .map_err(|e| crate::fs::annotate(e, "compress into", dest))?;
    let (blob, blob_size, out) = w.finish();
    Ok((
        Prepared {
            size: input.count,
            blake3: Digest(*input.hasher.finalize().as_bytes()),
            blob,
            blob_size,
        },
        out,
    ))
}

/// Whether [`compress_file`] syncs the blob it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durable {
    /// Synced before it is renamed into place: it must outlive a crash (an export).
    Synced,
    /// Not synced: a scratch file, gone after use (a push's staged blob).
    Scratch,
}

/// A reader that BLAKE3-hashes and counts what is read through it.
struct Blake3Reader<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R: Read> Read for Blake3Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Bytes decompressed between two writeback kicks (as `unpack`'s `WRITEBACK_STEP`).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Decompresses blob bytes from `input` into the new file `dest`, refusing more than `limit`
/// bytes of output. Returns the size and BLAKE3 of what was written (not yet synced).
///
/// Writeback is started every `WRITEBACK_STEP` bytes with `fadvise(DONTNEED)` (as a build
/// writes its members): the disk writes while the decoder goes on, so the `syncfs` before the
/// objects are added waits only for the tails.
pub fn decompress_to(input: impl Read, dest: &Path, limit: u64) -> std::io::Result<(u64, Digest)> {
    let dec = zstd::stream::Decoder::new(input)?;
    let mut out = std::io::BufWriter::new(fs_err::File::create(dest)?);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    let (mut total, mut kicked) = (0u64, 0u64);
    let mut dec = dec.take(limit + 1);
    loop {
        let n = dec.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(std::io::Error::other(format!(
                "it decompresses to more than the {limit} bytes declared"
            )));
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        if total - kicked >= WRITEBACK_STEP {
            out.flush()?;
            let len = std::num::NonZeroU64::new(total - kicked);
            // Advisory: a failure only loses the overlap, never data.
            let _ = rustix::fs::fadvise(
                out.get_ref().file(),
                kicked,
                len,
                rustix::fs::Advice::DontNeed,
            );
            kicked = total;
        }
    }
    // Not synced here: the store adds a batch of objects after one `syncfs`.
    out.into_inner().map_err(|e| e.into_error())?;
    Ok((total, Digest(*h.finalize().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_fixed_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&src, &data).unwrap();
        let a = compress_file(&src, &dir.path().join("a"), Durable::Scratch).unwrap();
        let b = compress_file(&src, &dir.path().join("b"), Durable::Scratch).unwrap();
        assert_eq!(
            (&a.blob, a.blob_size),
            (&b.blob, b.blob_size),
            "the same bytes give the same blob"
        );
        assert_eq!(
            (a.size, a.blake3.0),
            (data.len() as u64, *blake3::hash(&data).as_bytes())
        );
        let blob = std::fs::read(dir.path().join("a")).unwrap();
        assert_eq!(sha256_digest(&blob), a.blob);
        assert_eq!(blob.len() as u64, a.blob_size);
        let (n, d) = decompress_to(&blob[..], &dir.path().join("out"), data.len() as u64).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d.0, *blake3::hash(&data).as_bytes());
        let short = decompress_to(&blob[..], &dir.path().join("out2"), 10).unwrap_err();
        assert!(
            short.to_string().contains("more than the 10 bytes"),
            "{short}"
        );
    }

    #[test]
    fn digests_that_are_not_sha256_hex_are_refused() {
        assert!(digest_hex(&format!("sha256:{}", "0".repeat(64))).is_some());
        for d in [
            "sha256:../../etc",
            "sha512:00",
            "sha256:ABC",
            &format!("sha256:{}/", "0".repeat(63)),
        ] {
            assert!(digest_hex(d).is_none(), "{d}");
        }
    }
}
