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
//! Both are hints. A wrong blob digest is caught when the object is compressed for upload
//! (the digests must agree) or by the receiving store, which checks every object against
//! its name; a wrong repository only makes a mount fail, and the blob is uploaded.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::artifact::ZSTD_LEVEL;
use crate::observe::Observer;
use crate::store::{FileLock, LockMode, Store, StorePath};

/// How many other repositories a push tries to mount a missing blob from.
pub const MOUNT_SOURCES: usize = 3;

#[derive(Serialize, Deserialize)]
struct BlobEntry {
    version: u32,
    zstd_level: i32,
    blob: String,
    size: u64,
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

/// The remembered blob of `object`: `(sha256:<hex>, size)`.
pub fn blob(store: &Store, object: &StorePath) -> Option<(String, u64)> {
    let path = dir(store).join("blobs").join(format!("{object}.json"));
    let bytes = std::fs::read(path).ok()?;
    let e: BlobEntry = serde_json::from_slice(&bytes).ok()?;
    (e.version == 1 && e.zstd_level == ZSTD_LEVEL && super::artifact::digest_hex(&e.blob).is_some())
        .then_some((e.blob, e.size))
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
        version: 1,
        zstd_level: ZSTD_LEVEL,
        blob: blob.to_owned(),
        size,
    })
    .map_err(std::io::Error::other)?;
    crate::fs::write_if_changed(&d.join(format!("{object}.json")), &json).map(drop)
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
