//! `kbuild verify`: re-hash every object against its name.
//!
//! Each inode is hashed once even when several objects hardlink it (a rootfs shares its
//! binaries with the member objects), and files are hashed on all cores.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Digest, Node, Store, StorePath};

/// One object that failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    pub path: StorePath,
    pub problem: String,
    /// Only its permissions are wrong (the content matches its name): repaired in place.
    pub writable_only: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub objects: usize,
    /// Distinct bytes read and hashed.
    pub bytes: u64,
    pub corrupt: Vec<Corrupt>,
}

/// All object names in the store (entries that parse as store paths).
pub fn objects(store: &Store) -> io::Result<Vec<StorePath>> {
    let mut out: Vec<StorePath> = fs_err::read_dir(store.dir())?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            StorePath::try_from(name).ok()
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Re-hashes every object. Never modifies the store.
pub fn verify(store: &Store) -> io::Result<Report> {
    let objects = objects(store)?;
    // Pass 1: collect the distinct inodes of all regular files.
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for o in &objects {
        for entry in walkdir::WalkDir::new(store.path_of(o)) {
            let entry = entry.map_err(io::Error::other)?;
            if entry.file_type().is_file() {
                let m = entry.metadata().map_err(io::Error::other)?;
                inodes
                    .entry((m.dev(), m.ino()))
                    .or_insert_with(|| entry.path().to_owned());
            }
        }
    }
    // Pass 2: hash them on every core.
    let work: Vec<((u64, u64), PathBuf)> = inodes.into_iter().collect();
    let digests: Mutex<HashMap<(u64, u64), io::Result<Digest>>> = Mutex::new(HashMap::new());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((key, path)) = work.get(i) else {
                        break;
                    };
                    let d = hash_file(path, &mut buf);
                    digests
                        .lock()
                        .expect("no panics while held")
                        .insert(*key, d);
                }
            });
        }
    });
    let digests = digests.into_inner().expect("threads joined");
    let mut report = Report {
        objects: objects.len(),
        ..Report::default()
    };
    for (_, path) in &work {
        if let Ok(m) = path.metadata() {
            report.bytes += m.len();
        }
    }
    // Pass 3: rebuild each object's node tree from the cached file digests.
    for o in &objects {
        let problem = match node_of(&store.path_of(o), &digests) {
            Ok(node) => {
                let digest = node.digest();
                if digest.store_hash() != o.hash_part() {
                    Some(format!(
                        "content hash is {}, its name says {}",
                        digest.store_hash(),
                        o.hash_part()
                    ))
                } else {
                    match store.meta(o) {
                        Ok(Some(meta)) if meta.digest != digest.to_hex() => {
                            Some("metadata digest differs from the content".to_owned())
                        }
                        Ok(None) => Some("metadata is missing".to_owned()),
                        Err(e) => Some(e.to_string()),
                        Ok(Some(_)) => None,
                    }
                }
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            report.corrupt.push(Corrupt {
                path: o.clone(),
                problem,
                writable_only: false,
            });
        } else if let Some(w) = first_writable(&store.path_of(o))? {
            // Objects are read-only for good: someone made this writable (and may write).
            report.corrupt.push(Corrupt {
                path: o.clone(),
                problem: format!("`{}` is writable (objects are read-only)", w.display()),
                writable_only: true,
            });
        }
    }
    Ok(report)
}

/// The first entry of an object with a write permission bit, if any.
fn first_writable(path: &Path) -> io::Result<Option<PathBuf>> {
    Ok(modes(path)?
        .into_iter()
        .find(|(_, mode)| mode & 0o222 != 0)
        .map(|(p, _)| p))
}

/// Every entry of an object (symlinks aside) with its permission bits.
fn modes(path: &Path) -> io::Result<Vec<(PathBuf, u32)>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.map_err(io::Error::other)?;
        if !entry.file_type().is_symlink() {
            let meta = entry.metadata().map_err(io::Error::other)?;
            out.push((entry.into_path(), meta.permissions().mode()));
        }
    }
    Ok(out)
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<Digest> {
    let mut f = fs_err::File::open(path)?;
    let mut h = blake3::Hasher::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest(*h.finalize().as_bytes()))
}

fn node_of(path: &Path, digests: &HashMap<(u64, u64), io::Result<Digest>>) -> io::Result<Node> {
    let m = fs_err::symlink_metadata(path)?;
    let ft = m.file_type();
    if ft.is_symlink() {
        let target = fs_err::read_link(path)?;
        return Ok(Node::Symlink {
            target: target.into_os_string().into_encoded_bytes(),
        });
    }
    if ft.is_dir() {
        let mut entries = BTreeMap::new();
        for e in fs_err::read_dir(path)? {
            let e = e?;
            entries.insert(
                e.file_name().into_encoded_bytes(),
                node_of(&e.path(), digests)?,
            );
        }
        return Ok(Node::Directory(entries));
    }
    if !ft.is_file() {
        return Err(io::Error::other(format!(
            "`{}` is not a file, directory or symlink",
            path.display()
        )));
    }
    let contents = match digests.get(&(m.dev(), m.ino())) {
        Some(Ok(d)) => *d,
        Some(Err(e)) => return Err(io::Error::new(e.kind(), e.to_string())),
        None => hash_file(path, &mut vec![0u8; 1 << 20])?,
    };
    Ok(Node::File {
        executable: m.permissions().mode() & 0o111 != 0,
        size: m.len(),
        contents,
    })
}

/// Deletes corrupt objects (with their metadata and the index entries that name them), so the
/// next build re-creates them; objects that are only writable get their modes back. The caller
/// holds the store lock exclusively. Directories are made writable to be removed; files are
/// unlinked without touching their modes, since other objects may hardlink the same inode.
pub fn repair(store: &Store, corrupt: &[Corrupt]) -> io::Result<Vec<StorePath>> {
    let mut repaired = Vec::new();
    let mut removed = Vec::new();
    for c in corrupt {
        if c.writable_only {
            // The content is right: only take the write bits away again.
            for (path, mode) in modes(&store.path_of(&c.path))? {
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o222))?;
            }
        } else {
            crate::fs::remove_tree(&store.path_of(&c.path))?;
            removed.push(c.path.clone());
        }
        repaired.push(c.path.clone());
    }
    store.forget(&removed).map_err(io::Error::other)?;
    store.sync_dir()?;
    Ok(repaired)
}
