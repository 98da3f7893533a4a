//! What pushes remember in the store's bookkeeping, so that the next push does little:
//!
//! ```text
//! .kbuild/oci/blobs/<object>.json   the object's blob digest and size (format version,
//!                                   zstd level): a push HEADs the registry with it and
//!                                   compresses the object only when the blob is missing
//! .kbuild/oci/pushed.json           registry → repositories pushed to (newest first):
//!                                   where a missing blob may be mounted from
//! .kbuild/oci/pull/<hex>.lock       held (exclusive) by the pull staging the manifest whose
//!                                   digest starts with `<hex>` (empty files, left in place:
//!                                   removing a lock file races with its next taker)
//! ```
//!
//! Both are hints, and a push trusts an entry only as far as it can check it cheaply: an
//! entry that cannot be right (not a regular file of at most 64 KiB — a directory, a
//! symlink, never followed, a FIFO —, not JSON, another object's, a blob larger than the object can
//! compress to, or one blob named by objects of different sizes in the generation pushed) is
//! dropped with a warning before it is used; a wrong blob digest is caught when the registry
//! lacks that blob and the object is compressed for upload: the entry is dropped with a
//! warning and the blob the object really compresses to is sent and named in the manifest.
//! A wrong digest of a blob the registry *has*, for an object no other object of the
//! generation contradicts, is not caught by the push (catching it means compressing every
//! object the cache exists to skip): `kbuild verify` compresses every object that has an
//! entry and compares ([`check`]), and `kbuild verify --repair` drops the entries that lie
//! ([`drop_entries`]); the receiving store checks every object against its name and refuses
//! such a manifest. A wrong repository only makes a mount fail, and the blob is uploaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::artifact::ZSTD_LEVEL;
use crate::observe::Observer;
use crate::store::{FileLock, LockMode, Store, StorePath};

/// How many other repositories a push tries to mount a missing blob from.
pub const MOUNT_SOURCES: usize = 3;

/// Format of `.kbuild/oci/blobs/<object>.json`. Version 2 names its object (an entry copied
/// onto another object's file is caught) and the zstd library that compressed it (another
/// zstd may give other bytes at the same level); version-1 entries are forgotten quietly.
#[derive(Serialize, Deserialize)]
struct BlobEntry {
    version: u32,
    object: String,
    zstd_level: i32,
    /// `zstd::zstd_safe::version_number()` of the kbuild that wrote it.
    zstd_version: u32,
    blob: String,
    size: u64,
}

const ENTRY_VERSION: u32 = 2;

/// What the push cache says about an object's blob.
#[derive(Debug, PartialEq, Eq)]
pub enum Remembered {
    /// `(sha256:<hex>, size)`.
    Blob(String, u64),
    /// No entry, or one of an older format or another zstd: compress the object.
    Nothing,
    /// An entry that cannot be right (`why`): to be dropped with a warning, and the object
    /// compressed.
    Damaged(String),
}

fn dir(store: &Store) -> PathBuf {
    store.bookkeeping().join("oci")
}

/// Takes the lock of the pull staging manifest `hex` (the first 32 hex digits of its digest,
/// as in the staging directory's name), waiting — with a "Blocking" status — while another
/// pull of the same manifest holds it. Two pulls of one reference would otherwise write the
/// same `.part` files of one staging directory.
pub fn pull_lock(store: &Store, hex: &str, observer: &dyn Observer) -> std::io::Result<FileLock> {
    let d = dir(store).join("pull");
    fs_err::create_dir_all(&d)?;
    FileLock::acquire(
        &d.join(format!("{hex}.lock")),
        LockMode::Exclusive,
        &format!("the pull staging of manifest sha256:{hex}…"),
        observer,
    )
}

/// The path of `object`'s entry.
pub fn entry_path(store: &Store, object: &StorePath) -> PathBuf {
    dir(store).join("blobs").join(format!("{object}.json"))
}

/// The largest entry read, in bytes. A real entry is about 250 bytes; a bigger file is not
/// one, and reading a file without bound (a symlink to `/dev/zero`) would never end.
const ENTRY_MAX: u64 = 64 << 10;

/// The bytes of the entry file at `path`: `Ok(None)` if there is none, `Err(why)` (a
/// sentence without the path) for one kbuild cannot read as an entry: not a regular file
/// (a directory, a symlink, a FIFO), unreadable, or larger than [`ENTRY_MAX`]. A symlink is
/// never followed, and a FIFO swapped in after the check is not waited on.
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let not_a_file = |m: &std::fs::Metadata| {
        if m.is_dir() {
            "it is a directory, not an entry file"
        } else if m.is_symlink() {
            "it is a symlink, not an entry file"
        } else {
            "it is not a regular file"
        }
    };
    match path.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("it cannot be inspected ({e})")),
        Ok(m) if !m.is_file() => return Err(not_a_file(&m).to_owned()),
        Ok(_) => {}
    }
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| format!("it cannot be read ({e})"))?;
    let m = f
        .metadata()
        .map_err(|e| format!("it cannot be inspected ({e})"))?;
    if !m.is_file() {
        return Err(not_a_file(&m).to_owned());
    }
    let mut bytes = Vec::new();
    f.take(ENTRY_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("it cannot be read ({e})"))?;
    if bytes.len() as u64 > ENTRY_MAX {
        return Err(format!(
            "it is larger ({} bytes) than any cache entry",
            m.len()
        ));
    }
    Ok(Some(bytes))
}

/// The remembered blob of `object`.
pub fn blob(store: &Store, object: &StorePath) -> Remembered {
    let bytes = match read_entry(&entry_path(store, object)) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Remembered::Nothing,
        Err(why) => return Remembered::Damaged(why),
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    match serde_json::from_slice::<Version>(&bytes) {
        Ok(v) if v.version != ENTRY_VERSION => return Remembered::Nothing,
        Ok(_) => {}
        Err(e) => return Remembered::Damaged(format!("it is not a cache entry ({e})")),
    }
    let e: BlobEntry = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => return Remembered::Damaged(format!("it is not a cache entry ({e})")),
    };
    if e.zstd_level != ZSTD_LEVEL || e.zstd_version != zstd::zstd_safe::version_number() {
        return Remembered::Nothing;
    }
    if e.object != object.as_str() {
        return Remembered::Damaged(format!("it is the entry of object `{}`", e.object));
    }
    if super::artifact::digest_hex(&e.blob).is_none() {
        return Remembered::Damaged(format!("`{}` is not a sha256 digest", e.blob));
    }
    Remembered::Blob(e.blob, e.size)
}

/// Drops the entry of `object` (a missing one is fine; a directory in its place goes too,
/// a symlink is unlinked, not followed).
pub fn forget_blob(store: &Store, object: &StorePath) -> std::io::Result<()> {
    crate::fs::remove_tree(&entry_path(store, object))
}

/// Remembers the blob of `object`.
pub fn remember_blob(
    store: &Store,
    object: &StorePath,
    blob: &str,
    size: u64,
) -> std::io::Result<()> {
    let d = dir(store).join("blobs");
    fs_err::create_dir_all(&d)?;
    let json = serde_json::to_vec(&BlobEntry {
        version: ENTRY_VERSION,
        object: object.to_string(),
        zstd_level: ZSTD_LEVEL,
        zstd_version: zstd::zstd_safe::version_number(),
        blob: blob.to_owned(),
        size,
    })
    .map_err(std::io::Error::other)?;
    crate::fs::write_if_changed(&entry_path(store, object), &json).map(drop)
}

/// Entries of `objects` (a generation's file objects, about to be pushed) that cannot all be
/// right, each with why; found without compressing anything. A blob larger than zstd's
/// worst case for its object's size cannot be that object's, and one blob holds one
/// content, so objects of different sizes naming the same blob cannot all be right (which
/// of them is, only compressing tells: every one of them is distrusted).
pub fn contradicted(store: &Store, objects: &[StorePath]) -> BTreeMap<StorePath, String> {
    let mut out = BTreeMap::new();
    let mut by_blob: BTreeMap<String, Vec<(StorePath, u64)>> = BTreeMap::new();
    for o in objects {
        let Remembered::Blob(blob, blob_size) = blob(store, o) else {
            continue;
        };
        let Ok(m) = store.path_of(o).symlink_metadata() else {
            continue;
        };
        let bound = usize::try_from(m.len())
            .map(zstd::zstd_safe::compress_bound)
            .unwrap_or(usize::MAX) as u64;
        if blob_size > bound {
            out.insert(
                o.clone(),
                format!(
                    "it names a blob of {blob_size} bytes, more than object `{o}` ({} bytes) can compress to",
                    m.len()
                ),
            );
            continue;
        }
        by_blob.entry(blob).or_default().push((o.clone(), m.len()));
    }
    for (blob, claims) in by_blob {
        let Some((first, first_size)) = claims.first() else {
            continue;
        };
        let Some((other, other_size)) = claims.iter().find(|(_, size)| size != first_size) else {
            continue;
        };
        let why = format!(
            "objects `{first}` ({first_size} bytes) and `{other}` ({other_size} bytes) both name blob `{blob}`, which holds one content"
        );
        for (o, _) in &claims {
            out.insert(o.clone(), why.clone());
        }
    }
    out
}

/// A push cache entry [`check`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// The entry's file, `STORE/.kbuild/oci/blobs/<object>.json`.
    pub path: PathBuf,
    /// What is wrong with it (a sentence without the path).
    pub problem: String,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct CacheReport {
    /// Entries checked by compressing their object (entries of an older format or another
    /// zstd, which no push uses, are not counted).
    pub entries: usize,
    /// Bytes of the objects compressed for the check.
    pub bytes: u64,
    pub bad: Vec<BadEntry>,
}

/// Checks every push cache entry (`.kbuild/oci/blobs/*.json`) as a proof: the entry's object
/// is compressed again, as a push would, and the digest and size it gives must be the ones
/// the entry records. Entries of an older format or another zstd are skipped (a push ignores
/// and rewrites them). Never modifies the store; objects are compressed on up to 4 threads.
///
/// # Errors
/// Only when the cache directory cannot be listed; an entry or object that cannot be read is
/// a [`BadEntry`].
pub fn check(store: &Store) -> std::io::Result<CacheReport> {
    let d = dir(store).join("blobs");
    let mut entries = Vec::new();
    match fs_err::read_dir(&d) {
        Ok(list) => {
            for e in list {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                // A push writing an entry right now (`write_if_changed`'s temp file).
                if name.starts_with('.') {
                    continue;
                }
                entries.push((e.path(), name));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    entries.sort();
    let checked = super::parallel_map(&entries, |(_, name)| Ok(check_entry(store, name)))
        .map_err(std::io::Error::other)?;
    let mut report = CacheReport::default();
    for ((path, _), (bytes, problem)) in entries.into_iter().zip(checked) {
        if let Some(bytes) = bytes {
            report.entries += 1;
            report.bytes += bytes;
        }
        if let Some(problem) = problem {
            report.bad.push(BadEntry { path, problem });
        }
    }
    Ok(report)
}

/// `(bytes compressed if it was checked, what is wrong)` for the entry file `name`.
fn check_entry(store: &Store, name: &str) -> (Option<u64>, Option<String>) {
    let Some(object) = name
        .strip_suffix(".json")
        .and_then(|n| StorePath::try_from(n.to_owned()).ok())
    else {
        return (
            None,
            Some("it is not named after a store object".to_owned()),
        );
    };
    let (blob_digest, blob_size) = match blob(store, &object) {
        Remembered::Blob(d, s) => (d, s),
        Remembered::Nothing => return (None, None),
        Remembered::Damaged(why) => return (None, Some(why)),
    };
    let object_path = store.path_of(&object);
    match object_path.symlink_metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return (
                None,
                Some(format!("object `{object}` is not a regular file")),
            );
        }
        Err(_) => return (None, Some(format!("object `{object}` is not in the store"))),
    }
    match super::artifact::blob_of(&object_path) {
        Ok((d, s)) if d == blob_digest && s == blob_size => (Some(size_of(&object_path)), None),
        Ok((d, s)) => (
            Some(size_of(&object_path)),
            Some(format!(
                "it names blob `{blob_digest}` ({blob_size} bytes), but object `{object}` compresses to `{d}` ({s} bytes)"
            )),
        ),
        Err(e) => (
            None,
            Some(format!("object `{object}` cannot be compressed: {e}")),
        ),
    }
}

fn size_of(path: &Path) -> u64 {
    path.metadata().map_or(0, |m| m.len())
}

/// Deletes the given entries (one already gone is fine; a directory in the cache goes with
/// its contents, a symlink is unlinked, not followed): the next push compresses those
/// objects again and remembers what they really compress to. `dropped` is told of each
/// entry as it goes, so a failure part-way still leaves a record of what was done.
///
/// # Errors
/// The first entry that could not be removed (with its path); the others are still tried.
pub fn drop_entries(
    entries: &[BadEntry],
    mut dropped: impl FnMut(&BadEntry),
) -> std::io::Result<()> {
    let mut first = None;
    for e in entries {
        match crate::fs::remove_tree(&e.path) {
            Ok(()) => dropped(e),
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

fn pushed_path(store: &Store) -> PathBuf {
    dir(store).join("pushed.json")
}

/// Repositories on `registry` pushed to before, newest first, `repository` left out.
pub fn mount_sources(store: &Store, registry: &str, repository: &str) -> Vec<String> {
    let Ok(bytes) = std::fs::read(pushed_path(store)) else {
        return Vec::new();
    };
    let map: BTreeMap<String, Vec<String>> = serde_json::from_slice(&bytes).unwrap_or_default();
    map.get(registry)
        .map(|v| {
            v.iter()
                .filter(|r| *r != repository)
                .take(MOUNT_SOURCES)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Records a push to `registry/repository` (kept to a few per registry).
pub fn remember_push(store: &Store, registry: &str, repository: &str) -> std::io::Result<()> {
    let path = pushed_path(store);
    let mut map: BTreeMap<String, Vec<String>> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let list = map.entry(registry.to_owned()).or_default();
    list.retain(|r| r != repository);
    list.insert(0, repository.to_owned());
    list.truncate(16);
    fs_err::create_dir_all(dir(store))?;
    let json = serde_json::to_vec_pretty(&map).map_err(std::io::Error::other)?;
    crate::fs::write_if_changed(&path, &json).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Digest;

    #[test]
    fn entries_that_cannot_be_right_are_damaged_and_old_formats_are_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let a = StorePath::new(Digest([1; 32]), "kube-apiserver").unwrap();
        let b = StorePath::new(Digest([2; 32]), "kube-scheduler").unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(blob(&store, &a), Remembered::Nothing);
        remember_blob(&store, &a, &digest, 42).unwrap();
        assert_eq!(blob(&store, &a), Remembered::Blob(digest.clone(), 42));

        // A's entry copied onto B's file.
        fs_err::copy(entry_path(&store, &a), entry_path(&store, &b)).unwrap();
        assert_eq!(
            blob(&store, &b),
            Remembered::Damaged(format!("it is the entry of object `{a}`"))
        );
        // Not JSON.
        fs_err::write(entry_path(&store, &b), "{\"version\": 2, \"blob\": tru").unwrap();
        assert!(
            matches!(blob(&store, &b), Remembered::Damaged(why) if why.starts_with("it is not a cache entry (")),
        );
        forget_blob(&store, &b).unwrap();
        forget_blob(&store, &b).unwrap();
        assert_eq!(blob(&store, &b), Remembered::Nothing);
        // Larger than any entry: read only up to the cap, then refused.
        fs_err::write(entry_path(&store, &b), vec![b' '; ENTRY_MAX as usize + 1]).unwrap();
        assert_eq!(
            blob(&store, &b),
            Remembered::Damaged(format!(
                "it is larger ({} bytes) than any cache entry",
                ENTRY_MAX + 1
            ))
        );
        // A directory in its place: damaged, and forgetting it removes it.
        forget_blob(&store, &b).unwrap();
        fs_err::create_dir(entry_path(&store, &b)).unwrap();
        assert_eq!(
            blob(&store, &b),
            Remembered::Damaged("it is a directory, not an entry file".to_owned())
        );
        forget_blob(&store, &b).unwrap();
        assert_eq!(blob(&store, &b), Remembered::Nothing);
        // Format 1 (before entries named their object and zstd): quietly nothing.
        fs_err::write(
            entry_path(&store, &a),
            format!("{{\"version\":1,\"zstd_level\":3,\"blob\":\"{digest}\",\"size\":42}}"),
        )
        .unwrap();
        assert_eq!(blob(&store, &a), Remembered::Nothing);
    }
}
