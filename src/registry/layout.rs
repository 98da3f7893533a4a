//! OCI image layout directories (image-spec `image-layout.md`):
//!
//! ```text
//! DIR/
//! ├── oci-layout          {"imageLayoutVersion":"1.0.0"}
//! ├── index.json          one manifest descriptor, tagged `<profile>-<generation>`
//! │                       (annotation `org.opencontainers.image.ref.name`)
//! └── blobs/sha256/<hex>  the manifest, the config and one zstd blob per object
//! ```
//!
//! `export` writes the whole layout into `DIR.kbuild-tmp` ([`ExportStaging`]), blobs first
//! (each a synced temp file renamed to its digest), `index.json` last, and renames that
//! directory to `DIR` when it is complete and synced. The same directory shape stages a pull
//! (see `remote`), so a rerun finds the blobs that already arrived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::artifact::{self, Descriptor, MANIFEST_MEDIA_TYPE};

/// The annotation naming a manifest in `index.json` (what `skopeo copy … oci:DIR:TAG` uses).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Serialize, Deserialize)]
struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    image_layout_version: String,
}

#[derive(Serialize, Deserialize)]
struct Index {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    manifests: Vec<Descriptor>,
}

/// The path of blob `digest` in the layout at `dir` (`None`: not a sha256 digest).
pub fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    artifact::digest_hex(digest).map(|hex| dir.join("blobs/sha256").join(hex))
}

/// Creates `dir/blobs/sha256` and `oci-layout` (a fresh or staging layout).
pub fn init(dir: &Path) -> std::io::Result<()> {
    fs_err::create_dir_all(dir.join("blobs/sha256"))?;
    let layout = serde_json::to_vec(&OciLayout {
        image_layout_version: "1.0.0".to_owned(),
    })
    .expect("serializes");
    crate::fs::write_atomic_readable(&dir.join("oci-layout"), &layout)?;
    Ok(())
}

/// Writes `bytes` as blob `digest` unless it is already there.
pub fn put_blob(dir: &Path, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = blob_path(dir, digest).expect("digests we make are sha256");
    crate::fs::write_atomic_readable(&path, bytes)
}

/// Writes `index.json` naming `manifest` (its bytes are already a blob) as `tag`.
pub fn write_index(
    dir: &Path,
    manifest_digest: &str,
    manifest_size: u64,
    tag: &str,
) -> std::io::Result<()> {
    let index = Index {
        schema_version: 2,
        media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
        manifests: vec![Descriptor {
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            digest: manifest_digest.to_owned(),
            size: manifest_size,
            artifact_type: Some(artifact::ARTIFACT_TYPE.to_owned()),
            annotations: BTreeMap::from([(REF_NAME.to_owned(), tag.to_owned())]),
        }],
    };
    let mut json = serde_json::to_vec_pretty(&index).expect("serializes");
    json.push(b'\n');
    crate::fs::write_atomic_readable(&dir.join("index.json"), &json)
}

/// The manifest the layout at `dir` holds: `(bytes, digest)`. The layout must name exactly
/// one image manifest in `index.json`; its bytes are checked against their digest.
pub fn read_manifest(dir: &Path) -> Result<(Vec<u8>, String), RegistryError> {
    let not = |why: String| RegistryError::NotALayout {
        dir: dir.to_owned(),
        why,
    };
    let io = |source| RegistryError::Layout {
        dir: dir.to_owned(),
        source,
    };
    if !dir.join("oci-layout").is_file() {
        return Err(
            not_a_layout(dir).unwrap_or_else(|| not("it has no `oci-layout` file".to_owned()))
        );
    }
    let text = read_capped(&dir.join("index.json"), artifact::MAX_METADATA_SIZE).map_err(io)?;
    let index: Index = serde_json::from_slice(&text)
        .map_err(|e| not(format!("`index.json` is not an OCI index: {e}")))?;
    let manifests: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| d.media_type == MANIFEST_MEDIA_TYPE)
        .collect();
    let d = match manifests.as_slice() {
        [d] => *d,
        [] => return Err(not("`index.json` names no image manifest".to_owned())),
        more => {
            return Err(not(format!(
                "`index.json` names {} manifests; import takes a layout with one",
                more.len()
            )));
        }
    };
    if d.size > artifact::MAX_METADATA_SIZE {
        return Err(not(format!("its manifest declares {} bytes", d.size)));
    }
    let path = blob_path(dir, &d.digest)
        .ok_or_else(|| not(format!("manifest digest `{}` is not sha256", d.digest)))?;
    let bytes = read_capped(&path, artifact::MAX_METADATA_SIZE).map_err(io)?;
    let actual = artifact::sha256_digest(&bytes);
    if actual != d.digest {
        return Err(RegistryError::DigestMismatch {
            what: format!("the manifest of `{}`", dir.display()),
            digest: d.digest.clone(),
            actual,
            from_registry: false,
        });
    }
    Ok((bytes, d.digest.clone()))
}

/// Why `dir`, which has no `oci-layout` file, is no layout, where that is something other
/// than a directory without one: it does not exist, it is a file (an archive of a layout?),
/// or an export to it was interrupted (`DIR.kbuild-tmp` beside it, or `DIR/.kbuild-tmp` in
/// it and nothing else).
fn not_a_layout(dir: &Path) -> Option<RegistryError> {
    let interrupted = |staging: PathBuf| {
        Some(RegistryError::ExportInterrupted {
            dir: dir.to_owned(),
            staging,
        })
    };
    match dir.metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(name) = dir.file_name() {
                let mut staging = name.to_owned();
                staging.push(".kbuild-tmp");
                let staging = dir.with_file_name(staging);
                if staging.is_dir() {
                    return interrupted(staging);
                }
            }
            Some(RegistryError::LayoutMissing {
                dir: dir.to_owned(),
            })
        }
        Ok(md) if md.is_file() => Some(RegistryError::LayoutIsAFile {
            dir: dir.to_owned(),
            archive: archive_kind(dir),
        }),
        Ok(md) if md.is_dir() => {
            let names: Vec<_> = match fs_err::read_dir(dir) {
                Ok(rd) => rd,
                // Not "no `oci-layout`": it may well have one.
                Err(source) => {
                    return Some(RegistryError::Layout {
                        dir: dir.to_owned(),
                        source,
                    });
                }
            }
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
            (names == [INSIDE]).then(|| interrupted(dir.join(INSIDE)))?
        }
        _ => None,
    }
}

/// The kind of archive the file at `path` starts like, by its magic bytes: what a layout
/// copied as one file (`tar -czf`) looks like.
fn archive_kind(path: &Path) -> Option<&'static str> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(512);
    fs_err::File::open(path)
        .ok()?
        .take(512)
        .read_to_end(&mut head)
        .ok()?;
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        "a gzip-compressed file"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "a zstd-compressed file"
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "an xz-compressed file"
    } else if head.starts_with(b"BZh") {
        "a bzip2-compressed file"
    } else if head.get(257..262) == Some(b"ustar") {
        // POSIX tar (ustar and GNU): the magic at offset 257.
        "a tar archive"
    } else {
        return None;
    };
    Some(kind)
}

/// Opens a file of a layout (`index.json`, a blob) for reading, refusing anything but a
/// regular file: a layout comes from elsewhere, and a FIFO would block the reader forever, a
/// device never end, a symlink point anywhere on this host. Opened without following a
/// symlink and without blocking (a FIFO opens at once), then checked on the open descriptor,
/// so nothing can be swapped in between. A missing file stays `NotFound`.
pub fn open_regular(path: &Path) -> std::io::Result<fs_err::File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let flags = (OFlags::NOFOLLOW | OFlags::NONBLOCK).bits();
    let refuse = |what: &str| {
        crate::fs::annotate(
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("it is {what}; a layout's files must be regular files"),
            ),
            "read",
            path,
        )
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(i32::try_from(flags).expect("open flags fit an int"))
        .open(path)
    {
        Ok(f) => f,
        // O_NOFOLLOW on a symlink.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(refuse("a symbolic link"));
        }
        Err(e) => return Err(crate::fs::annotate(e, "open", path)),
    };
    let t = file
        .metadata()
        .map_err(|e| crate::fs::annotate(e, "read", path))?
        .file_type();
    if !t.is_file() {
        return Err(refuse(if t.is_fifo() {
            "a FIFO"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_socket() {
            "a socket"
        } else {
            "a device"
        }));
    }
    Ok(fs_err::File::from_parts(file, path))
}

/// Reads at most `cap` bytes of `path`, a regular file ([`open_regular`]; a larger file is
/// an error).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(crate::fs::annotate(
            std::io::Error::other(format!("larger than {cap} bytes")),
            "read",
            path,
        ));
    }
    Ok(bytes)
}

/// The directory an export writes into before it becomes `DIR`: `DIR.kbuild-tmp`, beside
/// it (same filesystem, so the final rename is atomic), held under an exclusive lock
/// (`flock(2)` on the directory itself) for the whole export.
///
/// An empty `DIR` that already exists may be a mount point (a USB stick mounted at
/// `/media/usb`) or sit in a directory the user cannot write: the staging directory is then
/// `DIR/.kbuild-tmp`, and publishing moves `oci-layout` and `blobs` into `DIR`, then
/// `index.json` last, so `DIR` is an OCI layout only once it is complete (`import` refuses a
/// directory without `index.json`).
///
/// One fixed name, not one per process: a leftover of a killed export is found and emptied
/// by the next export to the same `DIR` instead of piling up, and a second export to the
/// same `DIR` waits ("Blocking waiting for file lock on the export to `DIR`") instead of
/// racing the first, then finds `DIR` complete and is refused like any non-empty `DIR`.
/// Hence an interrupt removes it only while this export holds its lock
/// ([`crate::interrupt::Held`]), never by its name alone: once published or removed, the name
/// may be a newer export's staging.
pub struct ExportStaging {
    /// The staging directory and its lock (let go once published or removed), removed by
    /// an interrupt only while this process still holds it.
    held: Arc<crate::interrupt::Held>,
    output: PathBuf,
    /// Staged inside an existing `output` (`output/.kbuild-tmp`).
    inside: bool,
}

/// The staging directory's name inside an existing, empty output directory.
const INSIDE: &str = ".kbuild-tmp";

/// Why `dir`, which `unusable_output` passed, cannot receive an export now
/// ([`RegistryError::OutputNotEmpty`] naming what it holds, or it was replaced by no
/// directory, or cannot be listed; `None`: missing or an empty directory, or one that holds
/// only a killed export's staging directory). A symbolic link to an empty directory (a
/// mount point reached through a link) is that directory.
pub fn output_in_the_way(dir: &Path) -> Option<RegistryError> {
    if dir.symlink_metadata().is_err() {
        return None;
    }
    if !dir.is_dir() {
        // Checked before ([`unusable_output`]): replaced while we waited or wrote.
        return Some(RegistryError::OutputNotADirectory {
            dir: dir.to_owned(),
            why: "is no longer a directory (replaced while the export ran)".to_owned(),
        });
    }
    let mut names: Vec<String> = match fs_err::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            // The staging directory of an export into an existing directory.
            .filter(|n| n != INSIDE)
            .collect(),
        Err(source) => {
            return Some(RegistryError::ExportWrite {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    if names.is_empty() {
        return None;
    }
    names.sort();
    let n = names.len();
    let shown: Vec<String> = names.iter().take(3).map(|n| format!("`{n}`")).collect();
    let mut holds = match fs_err::read_link(dir) {
        // Said, as `rm -r LINK` would remove the link and not what it holds.
        Ok(target) => format!(
            "it is a symbolic link to `{}`, which holds {}",
            target.display(),
            shown.join(", ")
        ),
        Err(_) => format!("it holds {}", shown.join(", ")),
    };
    if n > 3 {
        holds.push_str(&format!(" and {} more", n - 3));
    }
    if names.iter().any(|n| n == "index.json") && names.iter().any(|n| n == "oci-layout") {
        holds.push_str(": an OCI layout already, an earlier export?");
    }
    Some(not_empty(dir, holds))
}

/// [`RegistryError::OutputNotEmpty`] for `dir`, holding what `why` says.
fn not_empty(dir: &Path, why: String) -> RegistryError {
    RegistryError::OutputNotEmpty {
        dir: dir.to_owned(),
        why,
        removable: removable(dir),
    }
}

/// Why `output` can receive no export whatever it holds: it is a file or a dangling
/// symbolic link, names no directory, or (missing) its parent does not exist.
fn unusable_output(output: &Path) -> Option<RegistryError> {
    let not_a_dir = |why: String| {
        Some(RegistryError::OutputNotADirectory {
            dir: output.to_owned(),
            why,
        })
    };
    match output.metadata() {
        Ok(md) if md.is_dir() => None,
        Ok(_) => not_a_dir("is a file, not a directory".to_owned()),
        Err(_) => match output.symlink_metadata() {
            Ok(md) if md.is_symlink() => {
                let target = fs_err::read_link(output).unwrap_or_default();
                not_a_dir(format!(
                    "is a symbolic link to `{}`, which does not exist",
                    target.display()
                ))
            }
            // There, but its metadata cannot be read: the staging says why.
            Ok(_) => None,
            Err(_) => {
                if let Some(path) = output.to_str().and_then(|o| o.strip_prefix("oci:")) {
                    // skopeo's `oci:PATH[:REFERENCE]`.
                    let path = path.split_once(':').map_or(path, |(p, _)| p);
                    return Some(RegistryError::OutputTransport {
                        dir: output.to_owned(),
                        path: PathBuf::from(path),
                    });
                }
                let parent = match output.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                // The nearest ancestor that exists says why: a file in the way, or none
                // (then the parent is to be made).
                let existing = parent
                    .ancestors()
                    .find(|a| a.as_os_str().is_empty() || a.symlink_metadata().is_ok());
                match existing {
                    Some(a) if !a.as_os_str().is_empty() && !a.is_dir() => {
                        Some(RegistryError::OutputParentNotADirectory {
                            dir: output.to_owned(),
                            parent: a.to_owned(),
                        })
                    }
                    _ if !parent.is_dir() => Some(RegistryError::OutputParentMissing {
                        dir: output.to_owned(),
                        parent: parent.to_owned(),
                    }),
                    _ if output.file_name().is_none() => {
                        not_a_dir("names no directory (it ends in `..`)".to_owned())
                    }
                    _ => None,
                }
            }
        },
    }
}

/// Whether `rm -r dir` is fit advice: not for `/`, `.`, `..`, the current directory or one
/// above it, nor the home directory or one above it (an operator running as root could paste
/// it), nor a symbolic link.
fn removable(dir: &Path) -> bool {
    // `rm -r LINK` removes the link, not the directory the export was refused for.
    if dir.file_name().is_none() || dir.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
        return false;
    }
    let Ok(canon) = dir.canonicalize() else {
        return true;
    };
    let above = |p: Option<PathBuf>| {
        p.and_then(|p| p.canonicalize().ok())
            .is_some_and(|p| p.starts_with(&canon))
    };
    canon.parent().is_some()
        && !above(std::env::current_dir().ok())
        && !above(std::env::var_os("HOME").map(PathBuf::from))
}

impl ExportStaging {
    /// Takes (making it if needed) and empties the staging directory of an export to
    /// `output`, waiting while another export to `output` holds it. Refuses an `output` that
    /// cannot receive an export, each with its own error: a file or dangling link
    /// ([`RegistryError::OutputNotADirectory`]), a missing parent or one that is a file,
    /// skopeo's `oci:DIR`, a directory that is not empty ([`RegistryError::OutputNotEmpty`]),
    /// something else where the staging directory goes ([`RegistryError::StagingInTheWay`]),
    /// and a staging directory that cannot be made ([`RegistryError::ExportWrite`]).
    pub fn take(
        output: &Path,
        observer: &dyn crate::observe::Observer,
    ) -> Result<ExportStaging, RegistryError> {
        let write = |source| RegistryError::ExportWrite {
            dir: output.to_owned(),
            source,
        };
        if let Some(e) = unusable_output(output) {
            return Err(e);
        }
        if let Some(e) = output_in_the_way(output) {
            return Err(e);
        }
        // An existing (empty) directory is staged in, which needs no name for it: `.`,
        // `..` and `/` are fine; a new one beside it, in the parent `unusable_output` checked.
        let inside = output.is_dir();
        let path = if inside {
            output.join(INSIDE)
        } else {
            let mut name = output.file_name().unwrap_or_default().to_owned();
            name.push(".kbuild-tmp");
            output.with_file_name(name)
        };
        let what = format!("the export to `{}`", output.display());
        let lock = loop {
            match fs_err::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                        return Err(RegistryError::StagingInTheWay {
                            dir: output.to_owned(),
                            staging: path,
                        });
                    }
                }
                Err(e) => return Err(write(e)),
            }
            let lock = crate::store::FileLock::acquire(
                &path,
                crate::store::LockMode::Exclusive,
                &what,
                observer,
            )
            .map_err(write)?;
            // The export we waited for renamed this directory to `output` (or removed it):
            // the lock is on the wrong directory.
            if lock.is_at(&path) {
                break lock;
            }
        };
        let staging = ExportStaging {
            held: crate::interrupt::Held::new(&path, lock),
            output: output.to_owned(),
            inside,
        };
        // Decided again under the lock: the export we may have waited for made `output`.
        if let Some(e) = output_in_the_way(output) {
            return Err(e);
        }
        // Whatever a killed export left: a fresh start (its blobs are not trusted unsynced).
        for entry in fs_err::read_dir(&path).map_err(write)? {
            crate::fs::remove_tree(&entry.map_err(write)?.path()).map_err(write)?;
        }
        Ok(staging)
    }

    /// The staging directory (`DIR.kbuild-tmp`, or `DIR/.kbuild-tmp`).
    pub fn path(&self) -> &Path {
        self.held.path()
    }

    /// Makes the complete staging directory `output` in one rename: everything in it is
    /// synced first, the parent directory after, so `output` is never seen half-written, even
    /// after a power loss. (Staged inside an existing empty `output`: its entries are moved
    /// in, `index.json` last.)
    pub fn publish(self) -> Result<(), RegistryError> {
        // Under the staging's mutex: an interrupt now waits, then finds nothing to remove.
        self.held.with(|lock| {
            self.publish_locked()?;
            // Renamed or emptied: nothing is left to remove; the lock goes with the directory
            // it held.
            lock.take();
            Ok(())
        })
    }

    fn publish_locked(&self) -> Result<(), RegistryError> {
        let refuse = |why: String| not_empty(&self.output, why);
        let write = |source| RegistryError::ExportWrite {
            dir: self.output.clone(),
            source,
        };
        let path = self.path();
        crate::fs::fsync_dir(&path.join("blobs/sha256")).map_err(write)?;
        crate::fs::fsync_dir(&path.join("blobs")).map_err(write)?;
        crate::fs::fsync_dir(path).map_err(write)?;
        if let Some(e) = output_in_the_way(&self.output) {
            return Err(e);
        }
        if self.inside {
            for name in ["oci-layout", "blobs", "index.json"] {
                if !crate::fs::rename_noreplace(&path.join(name), &self.output.join(name))
                    .map_err(write)?
                {
                    return Err(refuse(format!(
                        "another process wrote `{name}` into it while the export ran"
                    )));
                }
                // `index.json` only once the rest is durable in `output`.
                crate::fs::fsync_dir(&self.output).map_err(write)?;
            }
            fs_err::remove_dir(path).map_err(write)?;
            crate::fs::fsync_dir(&self.output).map_err(write)?;
            return Ok(());
        }
        if self.output.symlink_metadata().is_ok() {
            // An empty directory (checked just above) someone made meanwhile.
            fs_err::remove_dir(&self.output).map_err(write)?;
        }
        if !crate::fs::rename_noreplace(path, &self.output).map_err(write)? {
            return Err(refuse(
                "another process made it while the export ran".to_owned(),
            ));
        }
        let parent = match self.output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        crate::fs::fsync_dir(parent).map_err(write)?;
        Ok(())
    }
}

impl Drop for ExportStaging {
    /// A failed export removes its staging directory (under its lock, before releasing it).
    fn drop(&mut self) {
        self.held.with(|lock| {
            if lock.is_some() {
                let _ = crate::fs::remove_tree(self.held.path());
                lock.take();
            }
        });
    }
}
