//! `kbuild verify`: re-hash every object against its name (a kept input archive against the
//! pin its name is made from).
//!
//! Each inode is hashed once even when several objects hardlink it (a rootfs shares its
//! binaries with the member objects), and files are hashed on all cores.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    // Kept input archives are checked against their pin, not hashed with BLAKE3.
    let mut fixed = HashMap::new();
    for o in &objects {
        if let Ok(Some(meta)) = store.meta(o)
            && let Some(pin) = super::pin_of_deriver(&meta.deriver)
        {
            fixed.insert(o.clone(), (pin, meta.digest));
        }
    }
    // Pass 1: collect the distinct inodes of all regular files.
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for o in objects.iter().filter(|o| !fixed.contains_key(*o)) {
        for entry in crate::fs::walk(&store.path_of(o)) {
            let entry = entry.map_err(crate::fs::walk_error)?;
            if entry.file_type().is_file() {
                let m = entry.metadata().map_err(crate::fs::walk_error)?;
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
        if let Some((pin, digest)) = fixed.get(o) {
            let path = store.path_of(o);
            if let Ok(m) = path.metadata() {
                report.bytes += m.len();
            }
            if let Some(problem) = check_fixed(&path, o, pin, digest) {
                report.corrupt.push(Corrupt {
                    path: o.clone(),
                    problem,
                    writable_only: false,
                });
            } else if let Some(w) = first_writable(&path)? {
                report.corrupt.push(Corrupt {
                    path: o.clone(),
                    problem: format!("`{}` is writable (objects are read-only)", w.display()),
                    writable_only: true,
                });
            }
            continue;
        }
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

/// What is wrong with the kept archive at `path`, if anything: its name and recorded digest
/// must be those of its pin, and its bytes must hash to the pin.
fn check_fixed(path: &Path, o: &StorePath, pin: &crate::pin::Pin, digest: &str) -> Option<String> {
    let expected = crate::derivation::fixed_digest(pin);
    if o.hash_part() != &expected[..32] || digest != expected {
        return Some(format!(
            "its name or metadata does not match the pin it records ({pin})"
        ));
    }
    let m = match fs_err::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if !m.is_file() {
        return Some("a kept archive must be a regular file".into());
    }
    let mut f = match fs_err::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(e.to_string()),
    };
    let mut h = pin.algo().hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) => return Some(e.to_string()),
        }
    }
    let actual = h.finish();
    (actual != *pin).then(|| {
        format!(
            "content {} is {}, its pin says {}",
            pin.algo(),
            actual.hex(),
            pin.hex()
        )
    })
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
    for entry in crate::fs::walk(path) {
        let entry = entry.map_err(crate::fs::walk_error)?;
        if !entry.file_type().is_symlink() {
            let meta = entry.metadata().map_err(crate::fs::walk_error)?;
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

/// What [`repair`] did.
#[derive(Debug, Default)]
pub struct Repaired {
    /// Objects whose content was right and whose write bits were taken away again.
    pub permissions: Vec<StorePath>,
    /// Damaged objects no generation uses: deleted (the next build that needs one re-creates it).
    pub deleted: Vec<StorePath>,
    /// Damaged objects replaced in one step by a copy rebuilt from generation N's sources.
    pub replaced: Vec<(StorePath, u64)>,
    /// Missing objects generation N needs (its rootfs, say), re-created from its sources.
    pub recreated: Vec<(StorePath, u64)>,
    /// Generations whose damaged objects could not be rebuilt, and why: those objects stay
    /// in place (a root using them keeps working as it did).
    pub failed: Vec<(u64, String)>,
}

/// Re-creates the given damaged or missing objects of a generation, returning the objects it
/// replaced or added, or why it could not (see `kbuild::build::rebuild`).
pub type Rebuild<'a> = dyn FnMut(&crate::generation::Generation, &BTreeSet<StorePath>) -> Result<Vec<StorePath>, String>
    + 'a;

/// Every object a generation with this rootfs needs: the rootfs and what it references,
/// transitively.
pub fn closure(
    store: &Store,
    rootfs: &StorePath,
) -> Result<BTreeSet<StorePath>, super::StoreError> {
    let mut out = BTreeSet::new();
    let mut stack = vec![rootfs.clone()];
    while let Some(p) = stack.pop() {
        if !out.insert(p.clone()) {
            continue;
        }
        if let Ok(Some(meta)) = store.meta(&p) {
            stack.extend(meta.references);
        }
    }
    Ok(out)
}

/// The check `switch` and `rollback` make before activating a rootfs, the one a build makes
/// before it reuses an object ([`Store::check_recorded`]): every object the rootfs
/// references, then the rootfs itself, has its recorded shape (names, types, sizes,
/// executable bits, symlink targets) and the store's constant mtime. Nothing is hashed, so
/// it stays fast; `kbuild verify` is the thorough check. Missing referenced objects pass: the
/// rootfs holds its own links.
pub fn check_unmodified_closure(
    store: &Store,
    rootfs: &StorePath,
) -> Result<(), super::StoreError> {
    let mut objects = closure(store, rootfs)?;
    objects.remove(rootfs);
    for p in objects.iter().chain(std::iter::once(rootfs)) {
        store.check_recorded(p)?;
    }
    Ok(())
}

/// Repairs what [`verify`] found without ever taking an object a generation needs off its
/// name: write bits are removed again; a damaged object no generation uses is deleted (moved
/// off its name first); a damaged object a generation uses, and a generation's missing
/// rootfs, is handed to `rebuild` with the generation, which replaces it by a good copy in
/// one step (or re-creates it) or fails (then it stays as it is, reported in
/// [`Repaired::failed`]). Objects in `roots_use` (what registered roots resolve to) and what
/// they reference count as used too. The caller holds the store lock exclusively and
/// verifies again afterwards: `rebuild` may not be able to re-create every object.
pub fn repair(
    store: &Store,
    corrupt: &[Corrupt],
    roots_use: &BTreeSet<StorePath>,
    rebuild: &mut Rebuild,
) -> Result<Repaired, super::StoreError> {
    let mut done = Repaired::default();
    let mut damaged = BTreeSet::new();
    for c in corrupt {
        if c.writable_only {
            // The content is right: only take the write bits away again.
            for (path, mode) in modes(&store.path_of(&c.path))? {
                fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o222))?;
            }
            done.permissions.push(c.path.clone());
        } else {
            damaged.insert(c.path.clone());
        }
    }
    let generations = crate::generation::list_all(store)?;
    // What roots use is never deleted, even without a generation record to rebuild it from
    // (then it stays as it is, and the caller's second verify reports it).
    let mut used = BTreeSet::new();
    for p in roots_use {
        used.extend(closure(store, p)?);
    }
    // Newest first: the generation most likely to be active, and whose sources are current.
    for g in generations.iter().rev() {
        let needs = closure(store, &g.rootfs)?;
        used.extend(needs.iter().cloned());
        let mut todo: BTreeSet<StorePath> = needs
            .intersection(&damaged)
            .filter(|p| !done.replaced.iter().any(|(r, _)| r == *p))
            .cloned()
            .collect();
        if !store.contains(&g.rootfs) {
            todo.insert(g.rootfs.clone());
        }
        if todo.is_empty() {
            continue;
        }
        match rebuild(g, &todo) {
            Ok(rebuilt) => {
                for p in rebuilt {
                    if damaged.contains(&p) {
                        done.replaced.push((p, g.number));
                    } else {
                        done.recreated.push((p, g.number));
                    }
                }
            }
            Err(why) => done.failed.push((g.number, why)),
        }
    }
    for p in damaged.difference(&used) {
        if let Some(aside) = store.move_aside(p)? {
            crate::fs::remove_tree(&aside)?;
        }
        done.deleted.push(p.clone());
    }
    store.forget(&done.deleted)?;
    store.sync_dir()?;
    Ok(done)
}
