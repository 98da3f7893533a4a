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
//! `export` writes blobs first, each as a temp file renamed to its digest, and `index.json`
//! last: a layout with an `index.json` is complete. The same directory shape stages a pull
//! (see `remote`), so a rerun finds the blobs that already arrived.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    crate::fs::write_if_changed(&dir.join("oci-layout"), &layout)?;
    Ok(())
}

/// Writes `bytes` as blob `digest` unless it is already there.
pub fn put_blob(dir: &Path, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = blob_path(dir, digest).expect("digests we make are sha256");
    crate::fs::write_if_changed(&path, bytes).map(drop)
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
    crate::fs::write_atomic(&dir.join("index.json"), &json)
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
        return Err(not("it has no `oci-layout` file".to_owned()));
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
        });
    }
    Ok((bytes, d.digest.clone()))
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
