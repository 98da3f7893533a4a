//! The content-addressed store.
//!
//! ```text
//! store/
//! ├── <hash>-<name>              immutable objects: a file or a directory tree, read-only,
//! │                              <hash> = first 32 hex digits of the root node's BLAKE3 digest,
//! │                              or, for a kept input archive (a fixed-output object), of
//! │                              the encoding of its pin (see [`Store::kept_archive`])
//! ├── .tmp-work-XXXXXX           an object being built; renamed in only when complete;
//! │                              flock-ed by its creator, so a later writer removes it
//! │                              once that process died ([`Store::remove_abandoned`])
//! ├── .tmp-gc-<object>           an object gc is deleting: it left its name first
//! ├── .tmp-aside-<hash>-N        an incomplete or damaged object moved off its name
//! ├── .tmp-pull-<digest>         a pull's checked objects, kept for a rerun after a failure
//! └── .kbuild/
//!     ├── version                layout version ("kbuild-store-v2")
//!     ├── id                     the store's identity (random, made once): roots know their
//!     │                          store by it, wherever the store is mounted or moved
//!     ├── lock                   flock: builds shared, gc and verify exclusive
//!     ├── index/<key>.json       derivation key → output objects (makes no-op builds instant)
//!     ├── meta/<object>.json     per object: full digest, deriver, references
//!     ├── profiles/<P>/<N>.json  generation records, numbered per profile (see `generation`)
//!     ├── roots/<key>.json       roots switched from this store (see `activate::roots`)
//!     └── oci/                   what pushes remember: blob digests, repositories pushed to
//!                                (see `registry::cache`)
//! ```
//!
//! Objects are added by building in a temp entry inside the store directory, syncing, and a
//! `rename(2)` that never replaces: if the destination exists it holds the same content and
//! the add succeeded. Nothing else ever writes below an object name. Objects leave the same
//! way: renamed off their name in one step (to a `.tmp-*` entry, which the next gc deletes)
//! before anything inside them is removed, so a name never holds a partial object. A damaged
//! object a generation needs is replaced by a good copy with one `RENAME_EXCHANGE`.

pub mod lock;
pub mod node;
pub mod verify;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use lock::{FileLock, LockMode};
pub use node::{Digest, Node};

use crate::observe::Observer;

const LAYOUT_VERSION: &str = "kbuild-store-v2";

/// The layout before profiles (one line of generations in `.kbuild/generations/`): upgraded
/// in place on first use (see [`upgrade_v1`]).
const LAYOUT_V1: &str = "kbuild-store-v1";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use store `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` is not a kbuild store (it has no `.kbuild/version`)", path.display())]
    NotAStore { path: PathBuf, creating: bool },
    /// The store directory itself is absent (a typo, or nothing built here yet).
    #[error("store `{}` does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("store `{}` has layout `{found}`, this kbuild understands `{LAYOUT_VERSION}`", path.display())]
    Layout { path: PathBuf, found: String },
    #[error("store `{}` has the layout of an older kbuild (`{LAYOUT_V1}`) and cannot be upgraded here: it cannot be written", path.display())]
    NeedsUpgrade {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("store object `{}` was modified after it was added ({what})", path.display())]
    Modified { path: PathBuf, what: String },
    #[error("cannot give store `{}` its id `{}`", store.display(), path.display())]
    Id {
        store: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{count} damaged or missing object(s) are left as they are: no good copy could be rebuilt"
    )]
    Unrepaired { count: usize, help: String },
    #[error("generation record `{}` says it is generation {recorded}, but its name says {named}", path.display())]
    MisnamedRecord {
        path: PathBuf,
        recorded: u64,
        named: u64,
    },
    #[error("corrupt store metadata `{path}`")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A validated store object name, `<32 hex digits>-<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

impl StorePath {
    pub fn new(digest: Digest, name: &str) -> Result<StorePath, String> {
        StorePath::try_from(format!("{}-{name}", digest.store_hash()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit hash part.
    pub fn hash_part(&self) -> &str {
        &self.0[..32]
    }

    pub fn name(&self) -> &str {
        &self.0[33..]
    }
}

/// Whether `name` may follow the hash in a store path (Nix's rule: no leading dot,
/// `[A-Za-z0-9+._?=-]`, at most 211 bytes).
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

impl TryFrom<String> for StorePath {
    type Error = String;
    fn try_from(s: String) -> Result<StorePath, String> {
        let ok = s.len() > 33
            && s.as_bytes()[..32]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && s.as_bytes()[32] == b'-'
            && valid_object_name(&s[33..]);
        if ok {
            Ok(StorePath(s))
        } else {
            Err(format!("`{s}` is not a store object name"))
        }
    }
}

impl From<StorePath> for String {
    fn from(p: StorePath) -> String {
        p.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({})", self.0)
    }
}

/// A store's identity (32 hex digits, `.kbuild/id`): the same for every path the store is
/// reached by (a symlink, a bind mount, its new place after a move).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoreId(String);

impl StoreId {
    /// The id of the store at `dir` (following links), if there is one there.
    pub fn read(dir: &Path) -> Option<StoreId> {
        let text = std::fs::read_to_string(dir.join(".kbuild/id")).ok()?;
        let id = text.trim();
        (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| StoreId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Metadata kept beside each object (`.kbuild/meta/<object>.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub version: u32,
    /// Full BLAKE3 digest of the root node (the name holds only its first 128 bits).
    pub digest: String,
    /// Key of the derivation that produced it.
    pub deriver: String,
    /// Objects this one was assembled from; kept alive with it by gc.
    pub references: Vec<StorePath>,
    /// The object's tree without its contents (metadata version 2): what `switch` and
    /// `rollback` check the object against without hashing (see [`Store::check_recorded`]).
    /// Absent in records written before (version 1) and for names that are not UTF-8; a
    /// build that reuses the object records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
}

/// The current metadata version: 2 records [`ObjectMeta::shape`].
pub const META_VERSION: u32 = 2;

/// One entry of an object's recorded [`Shape`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ShapeEntry {
    File { size: u64, executable: bool },
    Directory,
    Symlink { target: String },
}

/// An object's entries by path relative to the object (`.` is the object itself): names,
/// types, sizes, executable bits and symlink targets, without contents.
pub type Shape = std::collections::BTreeMap<String, ShapeEntry>;

/// The shape of `node`, or `None` when a name or link target is not UTF-8 (JSON keeps text).
pub fn shape_of(node: &Node) -> Option<Shape> {
    fn walk(node: &Node, rel: &str, out: &mut Shape) -> Option<()> {
        let entry = match node {
            Node::File {
                executable, size, ..
            } => ShapeEntry::File {
                size: *size,
                executable: *executable,
            },
            Node::Symlink { target } => ShapeEntry::Symlink {
                target: String::from_utf8(target.clone()).ok()?,
            },
            Node::Directory(entries) => {
                for (name, child) in entries {
                    let name = std::str::from_utf8(name).ok()?;
                    let path = if rel == "." {
                        name.to_owned()
                    } else {
                        format!("{rel}/{name}")
                    };
                    walk(child, &path, out)?;
                }
                ShapeEntry::Directory
            }
        };
        out.insert(rel.to_owned(), entry);
        Some(())
    }
    let mut out = Shape::new();
    walk(node, ".", &mut out)?;
    Some(out)
}

/// The node a shape describes, with zero contents digests ([`shape_matches`] never compares
/// contents). `None` when the shape is not a tree (a hand-edited record).
fn node_of_shape(shape: &Shape) -> Option<Node> {
    fn build(shape: &Shape, rel: &str) -> Option<Node> {
        Some(match shape.get(rel)? {
            ShapeEntry::File { size, executable } => Node::File {
                executable: *executable,
                size: *size,
                contents: Digest([0; 32]),
            },
            ShapeEntry::Symlink { target } => Node::Symlink {
                target: target.clone().into_bytes(),
            },
            ShapeEntry::Directory => {
                let prefix = if rel == "." {
                    String::new()
                } else {
                    format!("{rel}/")
                };
                let mut entries = std::collections::BTreeMap::new();
                for key in shape.keys() {
                    if let Some(name) = key.strip_prefix(&prefix)
                        && key != "."
                        && !name.is_empty()
                        && !name.contains('/')
                    {
                        entries.insert(name.as_bytes().to_vec(), build(shape, key)?);
                    }
                }
                Node::Directory(entries)
            }
        })
    }
    build(shape, ".")
}

/// The `deriver` of a kept input archive: `fixed:<algorithm>:<hex digest>`.
pub fn fixed_deriver(pin: &crate::pin::Pin) -> String {
    format!("fixed:{}:{}", pin.algo(), pin.hex())
}

/// The pin a kept archive's `deriver` records, if it is one (see [`fixed_deriver`]).
pub fn pin_of_deriver(deriver: &str) -> Option<crate::pin::Pin> {
    let rest = deriver.strip_prefix("fixed:")?;
    let (algo, hex) = rest.split_once(':')?;
    let algo = match algo {
        "sha256" => crate::pin::Algo::Sha256,
        "sha512" => crate::pin::Algo::Sha512,
        _ => return None,
    };
    crate::pin::Pin::from_hex(algo, hex).ok()
}

/// One output recorded in the derivation index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedOutput {
    /// What the derivation calls this output (for unpack: the archive member).
    pub id: String,
    pub path: StorePath,
    pub executable: bool,
    pub size: u64,
    /// Plain BLAKE3 of the file's bytes.
    pub blake3: String,
}

impl IndexedOutput {
    pub fn node(&self) -> Option<Node> {
        Some(Node::File {
            executable: self.executable,
            size: self.size,
            contents: Digest::from_hex(&self.blake3)?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    version: u32,
    outputs: Vec<IndexedOutput>,
}

/// The name prefix of scratch entries ([`Store::scratch`]).
const SCRATCH_PREFIX: &str = ".tmp-work-";

/// A scratch directory of the store, locked by this process for its life (see
/// [`Store::scratch`]); removed on drop.
#[derive(Debug)]
pub struct Scratch {
    // Dropped in this order: the directory goes while it is still locked.
    dir: tempfile::TempDir,
    _lock: FileLock,
}

impl Scratch {
    /// The directory, `STORE/.tmp-work-XXXXXX`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// An opened store directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// A `kbuild-store-v1` store that could not be upgraded because it cannot be written (a
    /// read-only mount, no permission): read in place, its generations as profile `default`.
    /// Commands that must write the store refuse it ([`StoreError::NeedsUpgrade`]).
    v1_read_only: bool,
}

impl Store {
    /// Opens the store at `dir`, creating it (and its bookkeeping) if it does not exist. An
    /// existing directory becomes a store only if it is empty (a `.gitignore`, `.gitkeep` or
    /// `README.md` aside): `--store /tmp` must not turn /tmp into one.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join(".kbuild/version").exists() && dir.is_dir() {
            let foreign = fs_err::read_dir(dir)
                .map_err(|source| StoreError::Open {
                    path: dir.to_owned(),
                    source,
                })?
                .filter_map(Result::ok)
                .any(|e| {
                    let n = e.file_name();
                    !matches!(
                        n.to_str(),
                        Some(".gitignore" | ".gitkeep" | "README.md" | ".kbuild")
                    )
                });
            if foreign {
                return Err(StoreError::NotAStore {
                    path: dir.to_owned(),
                    creating: true,
                });
            }
        }
        Self::open_inner(dir, true)
    }

    /// Whether `dir` holds no store yet and nothing else either (missing, empty, or only the
    /// files a fresh checkout's `store/` has, or a store being created right now).
    pub fn is_unused(dir: &Path) -> bool {
        if dir.join(".kbuild/version").exists() {
            return false;
        }
        match std::fs::read_dir(dir) {
            Err(_) => true,
            Ok(entries) => entries.filter_map(Result::ok).all(|e| {
                matches!(
                    e.file_name().to_str(),
                    Some(".gitignore" | ".gitkeep" | "README.md" | ".kbuild")
                )
            }),
        }
    }

    /// Opens an existing store; never creates one (for commands that only read or delete).
    pub fn open_existing(dir: &Path) -> Result<Store, StoreError> {
        if dir.symlink_metadata().is_err() {
            return Err(StoreError::Missing {
                path: dir.to_owned(),
            });
        }
        if !dir.join(".kbuild/version").exists() {
            return Err(StoreError::NotAStore {
                path: dir.to_owned(),
                creating: false,
            });
        }
        Self::open_inner(dir, false)
    }

    fn open_inner(dir: &Path, create: bool) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: dir.to_owned(),
            source,
        };
        let meta_dir = dir.join(".kbuild");
        if create {
            // `profiles/` is made by the first build (or the upgrade of a v1 store): made
            // here, it would hide the v1 generations of an old store from its upgrade.
            for d in ["index", "meta"] {
                fs_err::create_dir_all(meta_dir.join(d)).map_err(open_err)?;
            }
        }
        let version = meta_dir.join("version");
        let mut store = Store {
            dir: dir.to_owned(),
            v1_read_only: false,
        };
        // A new store gets its id before `version` marks it complete; an existing store
        // without one gets it when a root first registers (see `Store::id`).
        if create && !version.exists() {
            store.id()?;
        }
        match std::fs::read_to_string(&version) {
            Ok(v) if v.trim() == LAYOUT_VERSION => {
                // A crash after the upgrade's flip and version left the old list behind.
                if meta_dir.join("generations").exists() {
                    finish_upgrade(&meta_dir).map_err(open_err)?;
                }
            }
            Ok(v) if v.trim() == LAYOUT_V1 => match upgrade_v1(&meta_dir) {
                Ok(()) => {}
                // A store that cannot be written stays usable for what only reads it
                // (generations, switch/rollback of a root, verify, diff): its v1 layout is
                // read in place; what must write it (build, gc) gets `NeedsUpgrade`.
                Err(e) if !create && cannot_write(&e) => store.v1_read_only = true,
                Err(e) if cannot_write(&e) => {
                    return Err(StoreError::NeedsUpgrade {
                        path: dir.to_owned(),
                        source: e,
                    });
                }
                Err(e) => return Err(open_err(e)),
            },
            Ok(v) => {
                return Err(StoreError::Layout {
                    path: dir.to_owned(),
                    found: v.trim().to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::fs::write_atomic(&version, format!("{LAYOUT_VERSION}\n").as_bytes())
                    .map_err(open_err)?;
            }
            Err(e) => return Err(open_err(crate::fs::annotate(e, "read", &version))),
        }
        Ok(store)
    }

    /// The store's id, made once (random) and kept in `.kbuild/id`: what a root records
    /// to know its store after the store moved or is reached by another path. An old store
    /// gets one here; two racing kbuilds agree on the first one written (never replaced).
    pub fn id(&self) -> Result<StoreId, StoreError> {
        if let Some(id) = self.existing_id() {
            return Ok(id);
        }
        let path = self.bookkeeping().join("id");
        let err = |source| StoreError::Id {
            store: self.dir.clone(),
            path: path.clone(),
            source,
        };
        let mut bytes = [0u8; 16];
        std::io::Read::read_exact(
            &mut fs_err::File::open("/dev/urandom").map_err(err)?,
            &mut bytes,
        )
        .map_err(err)?;
        let id = StoreId(bytes.iter().map(|b| format!("{b:02x}")).collect());
        let tmp = self
            .bookkeeping()
            .join(format!(".id-{}", std::process::id()));
        crate::fs::write_atomic(&tmp, format!("{}\n", id.0).as_bytes()).map_err(err)?;
        let placed = crate::fs::rename_noreplace(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        placed.map_err(err)?;
        crate::fs::fsync_dir(&self.bookkeeping()).map_err(err)?;
        self.existing_id().ok_or_else(|| {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the id file holds no id",
            ))
        })
    }

    /// The store's id if it has one (never writes).
    pub fn existing_id(&self) -> Option<StoreId> {
        StoreId::read(&self.dir)
    }

    /// A `help:` line for store errors.
    pub fn help(e: &StoreError) -> Option<String> {
        match e {
            StoreError::NeedsUpgrade { path, .. } => Some(format!(
                "upgrade it once where it is writable (e.g. `kbuild generations --store {}` on a writable mount; a few hardlinks, nothing copied); commands that only read it (generations, switch, rollback, verify, diff) work as it is",
                path.display()
            )),
            StoreError::NotAStore { creating: true, .. } => Some(
                "the directory holds other files; pass `--store` a new or empty directory (default `./store`)".into(),
            ),
            StoreError::Missing { path } => Some(format!(
                "check `--store` (default `./store`, env KBUILD_STORE; absolute: `{}`); `kbuild build RECIPE` creates the store",
                std::path::absolute(path).unwrap_or_else(|_| path.clone()).display()
            )),
            StoreError::NotAStore { creating: false, .. } => Some(
                "check `--store` (default `./store`, env KBUILD_STORE); `kbuild build` creates a store".into(),
            ),
            StoreError::Id { store, .. } => Some(format!(
                "a store written by an older kbuild gets its id once, on the first switch: make `{}` writable for that switch (roots record the id to find the store wherever it is mounted)",
                store.join(".kbuild").display()
            )),
            StoreError::Modified { .. } => Some(
                "run `kbuild verify --repair`: it replaces damaged objects with copies rebuilt from their sources".into(),
            ),
            StoreError::Unrepaired { help, .. } => Some(help.clone()),
            StoreError::MisnamedRecord { path, recorded, .. } => Some(format!(
                "the record was copied or renamed by hand (kbuild writes `N.json` for generation N); nothing was changed: move `{}` back to `{recorded}.json`, or remove it if generation {recorded} has its own record",
                path.display()
            )),
            _ => None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store directory as roots record it: canonical, so `./store` and
    /// `/srv/x/../kbuild/store` name the same store.
    pub fn canonical_dir(&self) -> PathBuf {
        fs_err::canonicalize(&self.dir)
            .or_else(|_| std::path::absolute(&self.dir))
            .unwrap_or_else(|_| self.dir.clone())
    }

    /// Absolute-or-relative filesystem path of an object.
    pub fn path_of(&self, p: &StorePath) -> PathBuf {
        self.dir.join(p.as_str())
    }

    pub fn contains(&self, p: &StorePath) -> bool {
        self.path_of(p).symlink_metadata().is_ok()
    }

    /// The path of the kept archive of the input `entry` pins, when the store holds it: the
    /// file a build reads instead of fetching (offline builds, members added later,
    /// `verify --repair`). Found by the pin alone, whatever URL the archive came from. The
    /// file is the archive's verified bytes, read-only; `None` when it was never kept or gc
    /// dropped it.
    pub fn kept_archive(&self, entry: &crate::lockfile::LockedInput) -> Option<PathBuf> {
        self.kept_object(&entry.pin).map(|p| self.path_of(&p))
    }

    /// The object keeping the archive pinned by `pin`, if present (see
    /// [`Store::kept_archive`]).
    pub fn kept_object(&self, pin: &crate::pin::Pin) -> Option<StorePath> {
        let prefix = format!("{}-", crate::derivation::fixed_hash(pin));
        let mut found: Vec<StorePath> = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                if !name.starts_with(&prefix) {
                    return None;
                }
                StorePath::try_from(name).ok()
            })
            .collect();
        // Two names for one pin (the URL's file name changed): either holds the same bytes.
        found.sort();
        found.into_iter().next()
    }

    /// Every kept input archive in the store, with its pin (from its metadata).
    pub fn kept_objects(&self) -> Result<Vec<(StorePath, crate::pin::Pin)>, StoreError> {
        let mut out = Vec::new();
        for p in verify::objects(self)? {
            if let Some(pin) = self.meta(&p)?.and_then(|m| pin_of_deriver(&m.deriver)) {
                out.push((p, pin));
            }
        }
        Ok(out)
    }

    /// Adds the verified, synced archive at `tmp` as the kept archive of `pin`, called
    /// `name` (the URL's file name). Returns the object, and whether it was added (`false`:
    /// the store already kept it). Like every object it is renamed in only when complete, so
    /// a killed build leaves a `.tmp-*` entry and never a partial archive under the name.
    pub fn add_kept(
        &self,
        tmp: &Path,
        pin: &crate::pin::Pin,
        name: &str,
        size: u64,
    ) -> io::Result<(StorePath, bool)> {
        if let Some(p) = self.kept_object(pin) {
            crate::fs::remove_tree(tmp)?;
            return Ok((p, false));
        }
        let hash = crate::derivation::fixed_hash(pin);
        let path = StorePath::try_from(format!("{hash}-{name}"))
            .or_else(|_| StorePath::try_from(format!("{hash}-input")))
            .map_err(io::Error::other)?;
        let meta = ObjectMeta {
            version: META_VERSION,
            digest: crate::derivation::fixed_digest(pin),
            deriver: fixed_deriver(pin),
            references: vec![],
            shape: Some(Shape::from([(
                ".".to_owned(),
                ShapeEntry::File {
                    size,
                    executable: false,
                },
            )])),
        };
        let added = self.add(tmp, &path, &meta)?;
        Ok((path, added))
    }

    /// A cheap tamper check, made on every build for the objects it uses: objects keep the
    /// constant mtime and their size forever, and a write to one changes its mtime. A missing
    /// object passes (the caller decides). `kbuild verify` is the thorough check.
    pub fn check_unmodified(&self, p: &StorePath, size: Option<u64>) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path_of(p);
        let Ok(m) = path.symlink_metadata() else {
            return Ok(());
        };
        let what = if m.mtime() != crate::fs::STORE_MTIME {
            Some("its modification time changed".to_owned())
        } else if m.is_file() && size.is_some_and(|s| s != m.len()) {
            Some(format!(
                "its size is {} bytes, not {}",
                m.len(),
                size.unwrap_or_default()
            ))
        } else {
            None
        };
        match what {
            Some(what) => Err(StoreError::Modified { path, what }),
            None => Ok(()),
        }
    }

    /// Checks, without reading file contents, that the object at `p` has the shape of
    /// `expected`: the same names, types, sizes, executable bits and symlink targets, and the
    /// store's constant mtime on every file and directory. A partly deleted or partly written
    /// tree fails; a flipped byte with a restored mtime passes (`kbuild verify` finds that).
    /// `Ok(false)` when the object is missing; `Err(what)` names the first difference.
    pub fn check_shape(&self, p: &StorePath, expected: &Node) -> Result<bool, String> {
        let path = self.path_of(p);
        if path.symlink_metadata().is_err() {
            return Ok(false);
        }
        shape_matches(&path, Path::new(""), expected).map(|()| true)
    }

    /// The check `switch` and `rollback` make on an object before a root uses it, without
    /// reading file contents: against its recorded [`Shape`] when its metadata has one
    /// ([`Store::check_shape`]: names, types, sizes, executable bits, symlink targets,
    /// constant mtimes), else (metadata written by an older kbuild) the constant mtime of
    /// every entry. A missing object passes (the caller decides).
    pub fn check_recorded(&self, p: &StorePath) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let top = self.path_of(p);
        if top.symlink_metadata().is_err() {
            return Ok(());
        }
        let modified = |what: String| StoreError::Modified {
            path: top.clone(),
            what,
        };
        if let Some(node) = self
            .meta(p)?
            .and_then(|m| m.shape)
            .as_ref()
            .and_then(node_of_shape)
        {
            return self.check_shape(p, &node).map(drop).map_err(modified);
        }
        self.check_unmodified(p, None)?;
        for entry in crate::fs::walk(&top).min_depth(1) {
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_symlink() {
                continue;
            }
            let m = entry.metadata().map_err(crate::fs::walk_error)?;
            if m.mtime() != crate::fs::STORE_MTIME {
                let rel = entry.path().strip_prefix(&top).unwrap_or(entry.path());
                return Err(modified(format!(
                    "the modification time of `{}` changed",
                    rel.display()
                )));
            }
        }
        Ok(())
    }

    /// Records the shape of an object whose metadata predates it (version 1), once a build
    /// has checked the object against `node`. Leaves other metadata alone.
    pub fn record_shape(&self, p: &StorePath, node: &Node) -> Result<(), StoreError> {
        let Some(mut meta) = self.meta(p)? else {
            return Ok(());
        };
        if meta.shape.is_some() {
            return Ok(());
        }
        let Some(shape) = shape_of(node) else {
            return Ok(());
        };
        meta.shape = Some(shape);
        meta.version = META_VERSION;
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        crate::fs::write_if_changed(&self.meta_path(p), &json)?;
        Ok(())
    }

    /// Moves the object `p` off its name in one step, to a `.tmp-aside-*` entry the next gc
    /// deletes, and makes that durable. Returns the new path, or `None` when the object is
    /// already gone (a concurrent build moved the same incomplete object aside first).
    pub fn move_aside(&self, p: &StorePath) -> io::Result<Option<PathBuf>> {
        for n in 0u32.. {
            let aside = self.dir.join(format!(".tmp-aside-{}-{n}", p.hash_part()));
            match crate::fs::rename_noreplace(&self.path_of(p), &aside) {
                Ok(true) => {
                    self.sync_dir()?;
                    return Ok(Some(aside));
                }
                Ok(false) => {}
                Err(_) if !self.contains(p) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        unreachable!("some suffix is free")
    }

    /// Replaces the object `p` by the finished, synced copy at `tmp` in one step
    /// (`RENAME_EXCHANGE`), then deletes the old one. A root linking into `p` sees the old
    /// object or the new one, never neither. `p` must exist; the caller holds the store lock
    /// exclusively.
    pub fn replace(&self, tmp: &Path, p: &StorePath, meta: &ObjectMeta) -> io::Result<()> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        let dest = self.path_of(p);
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        crate::fs::write_if_changed(&self.meta_path(p), &json)?;
        crate::fs::make_read_only(tmp)?;
        renameat_with(CWD, tmp, CWD, &dest, RenameFlags::EXCHANGE)
            .map_err(|e| crate::fs::annotate(e.into(), "exchange a good copy with", &dest))?;
        self.sync_dir()?;
        // `tmp` now holds the damaged object: a `.tmp-*` entry, deleted now or by the next gc.
        crate::fs::remove_tree(tmp)
    }

    /// Whether this is a v1 store read in place because it cannot be upgraded (see
    /// [`StoreError::NeedsUpgrade`]).
    pub fn is_v1_read_only(&self) -> bool {
        self.v1_read_only
    }

    /// Refuses a v1 store read in place: for commands that must write the store.
    pub fn require_writable_layout(&self) -> Result<(), StoreError> {
        if self.v1_read_only {
            return Err(StoreError::NeedsUpgrade {
                path: self.dir.clone(),
                source: io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
            });
        }
        Ok(())
    }

    pub(crate) fn bookkeeping(&self) -> PathBuf {
        self.dir.join(".kbuild")
    }

    /// The store-wide lock: builds take it shared, gc exclusive.
    pub fn lock(&self, mode: LockMode, observer: &dyn Observer) -> io::Result<FileLock> {
        FileLock::acquire(
            &self.bookkeeping().join("lock"),
            mode,
            &format!("store `{}`", self.dir.display()),
            observer,
        )
    }

    /// A scratch directory inside the store (same filesystem, so renames out of it are atomic
    /// and hardlinks into it work), `.tmp-work-XXXXXX`. Removed on drop unless its contents
    /// were moved out. This process holds an exclusive `flock` on the directory for the
    /// scratch's life: the kernel drops it when the process dies (even by `kill -9`), so a
    /// later writer that can take it knows the entry is abandoned
    /// ([`Store::remove_abandoned`]). The caller holds the store lock.
    pub fn scratch(&self) -> io::Result<Scratch> {
        loop {
            let dir = tempfile::Builder::new()
                .prefix(SCRATCH_PREFIX)
                .tempdir_in(&self.dir)
                .map_err(|e| {
                    crate::fs::annotate(
                        crate::fs::plain(e),
                        "create a build directory in",
                        &self.dir,
                    )
                })
                .inspect(|d| crate::interrupt::track(d.path()))?;
            // Between the `mkdir` and the lock, a sweeping writer may take the lock of the new
            // (empty) directory and remove it: then it is not ours any more, start again.
            let Some(lock) = FileLock::try_exclusive(dir.path())? else {
                continue;
            };
            if lock.is_at(dir.path()) {
                return Ok(Scratch { dir, _lock: lock });
            }
        }
    }

    /// Removes the scratch entries ([`Store::scratch`]) of processes that died (a `kill -9`
    /// during a build, a pull or an import leaves one, maybe hundreds of MiB) and says so on
    /// `observer` in one line, as gc would. An entry is removed only while this process holds
    /// its lock, which proves no live process owns it; the entries of live writers are left
    /// alone, whatever their age. Best effort: an entry that cannot be removed (a read-only
    /// store) stays for `kbuild gc`. Called by writers under the store lock.
    pub fn remove_abandoned(&self, observer: &dyn Observer) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let (mut removed, mut freed) = (0usize, 0u64);
        for e in entries.filter_map(Result::ok) {
            let is_scratch = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
            // Directories only, never followed: a scratch entry is a directory.
            if !is_scratch || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path();
            let Ok(Some(lock)) = FileLock::try_exclusive(&path) else {
                continue;
            };
            if !lock.is_at(&path) {
                continue;
            }
            match crate::gc::remove_counting(&path) {
                Ok(bytes) => {
                    removed += 1;
                    freed += bytes;
                }
                Err(_) => continue,
            }
        }
        if removed > 0 {
            self.sync_dir().ok();
            observer.status(
                "Removed",
                &format!(
                    "{removed} temporary {} a killed kbuild left, {} freed",
                    if removed == 1 { "entry" } else { "entries" },
                    crate::observe::human_bytes(freed)
                ),
            );
        }
    }

    /// Moves a finished, synced object at `tmp` into the store as `path`. Returns `false` if
    /// the object was already present (then `tmp` is removed; content addressing makes that
    /// a success). The caller has made the data durable (see [`Store::sync`]).
    pub fn add(&self, tmp: &Path, path: &StorePath, meta: &ObjectMeta) -> io::Result<bool> {
        let dest = self.path_of(path);
        if self.contains(path) {
            crate::fs::remove_tree(tmp)?;
            return Ok(false);
        }
        // Metadata first: an object is never visible without it.
        let meta_path = self.meta_path(path);
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        crate::fs::write_if_changed(&meta_path, &json)?;
        crate::fs::make_read_only(tmp)?;
        let added = crate::fs::rename_noreplace(tmp, &dest)?;
        if !added {
            crate::fs::remove_tree(tmp)?;
        }
        Ok(added)
    }

    /// Flushes everything written so far to disk: one `syncfs(2)` per batch of objects
    /// instead of an fsync per file (as composefs does).
    pub fn sync(&self) -> io::Result<()> {
        let d = fs_err::File::open(&self.dir)?;
        rustix::fs::syncfs(&d).map_err(|e| crate::fs::annotate(e.into(), "sync", &self.dir))
    }

    /// Makes the renames into the store directory durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        crate::fs::fsync_dir(&self.dir)
    }

    fn meta_path(&self, p: &StorePath) -> PathBuf {
        self.bookkeeping()
            .join("meta")
            .join(format!("{}.json", p.as_str()))
    }

    pub fn meta(&self, p: &StorePath) -> Result<Option<ObjectMeta>, StoreError> {
        read_json(&self.meta_path(p))
    }

    fn index_path(&self, key: &str) -> PathBuf {
        self.bookkeeping().join("index").join(format!("{key}.json"))
    }

    /// The outputs of derivation `key`, if it was realised and all its outputs still exist.
    pub fn lookup(&self, key: &str) -> Result<Option<Vec<IndexedOutput>>, StoreError> {
        let entry: Option<IndexEntry> = read_json(&self.index_path(key))?;
        Ok(entry
            .filter(|e| e.outputs.iter().all(|o| self.contains(&o.path)))
            .map(|e| e.outputs))
    }

    /// Deletes an object's metadata and the index entries that name a missing object (after
    /// gc or a repair removed objects). The caller holds the store lock exclusively.
    pub fn forget(&self, removed: &[StorePath]) -> Result<(), StoreError> {
        for p in removed {
            let _ = std::fs::remove_file(self.meta_path(p));
            // The blob digest a push remembered (`registry::cache`), if any.
            let _ = std::fs::remove_file(
                self.bookkeeping()
                    .join("oci/blobs")
                    .join(format!("{p}.json")),
            );
        }
        for e in fs_err::read_dir(self.bookkeeping().join("index"))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json")
                && self.lookup(key)?.is_none()
            {
                fs_err::remove_file(e.path())?;
            }
        }
        Ok(())
    }

    /// Deletes metadata and push cache entries whose object is gone (left by a gc killed
    /// between renaming an object off its name and forgetting it). The caller holds the store
    /// lock exclusively, so no build is between writing an object's metadata and renaming the
    /// object in.
    pub fn forget_orphans(&self) -> Result<(), StoreError> {
        for d in [
            self.bookkeeping().join("meta"),
            self.bookkeeping().join("oci/blobs"),
        ] {
            let entries = match fs_err::read_dir(&d) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for e in entries {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(Ok(p)) = name
                    .strip_suffix(".json")
                    .map(|n| StorePath::try_from(n.to_owned()))
                    && !self.contains(&p)
                {
                    fs_err::remove_file(e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Records that derivation `key` produced `outputs`.
    pub fn record(&self, key: &str, outputs: &[IndexedOutput]) -> io::Result<()> {
        let entry = IndexEntry {
            version: 1,
            outputs: outputs.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(io::Error::other)?;
        crate::fs::write_if_changed(&self.index_path(key), &json).map(drop)
    }
}

/// Compares the tree at `path` with `expected` (see [`Store::check_shape`]).
fn shape_matches(path: &Path, rel: &Path, expected: &Node) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let shown = || {
        if rel.as_os_str().is_empty() {
            "the object".to_owned()
        } else {
            format!("`{}`", rel.display())
        }
    };
    let m = path
        .symlink_metadata()
        .map_err(|_| format!("{} is missing", shown()))?;
    let ft = m.file_type();
    let mtime = || {
        if m.mtime() == crate::fs::STORE_MTIME {
            Ok(())
        } else if rel.as_os_str().is_empty() {
            // The words the cheap check of a build uses ([`Store::check_unmodified`]).
            Err("its modification time changed".to_owned())
        } else {
            Err(format!("{} has another modification time", shown()))
        }
    };
    match expected {
        Node::File {
            executable, size, ..
        } => {
            if !ft.is_file() {
                return Err(format!("{} is not a regular file", shown()));
            }
            if m.len() != *size && rel.as_os_str().is_empty() {
                return Err(format!("its size is {} bytes, not {size}", m.len()));
            }
            if m.len() != *size {
                return Err(format!("{} has {} bytes, not {size}", shown(), m.len()));
            }
            if (m.permissions().mode() & 0o111 != 0) != *executable {
                return Err(format!("{} has another executable bit", shown()));
            }
            mtime()
        }
        Node::Symlink { target } => {
            let actual =
                std::fs::read_link(path).map_err(|_| format!("{} is not a symlink", shown()))?;
            if actual.into_os_string().into_encoded_bytes() != *target {
                return Err(format!("{} points elsewhere", shown()));
            }
            Ok(())
        }
        Node::Directory(entries) => {
            if !ft.is_dir() {
                return Err(format!("{} is not a directory", shown()));
            }
            let mut found = std::collections::BTreeSet::new();
            for e in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", shown()))? {
                let e = e.map_err(|e| format!("{}: {e}", shown()))?;
                found.insert(e.file_name().into_encoded_bytes());
            }
            for name in entries.keys() {
                if !found.contains(name) {
                    let child = rel.join(String::from_utf8_lossy(name).as_ref());
                    return Err(format!("`{}` is missing", child.display()));
                }
            }
            if let Some(extra) = found.iter().find(|n| !entries.contains_key(*n)) {
                let child = rel.join(String::from_utf8_lossy(extra).as_ref());
                return Err(format!("`{}` should not be there", child.display()));
            }
            for (name, node) in entries {
                let name = String::from_utf8_lossy(name).into_owned();
                shape_matches(&path.join(&name), &rel.join(&name), node)?;
            }
            // Last: removing an entry changes it, and the missing entry is the better message.
            mtime()
        }
    }
}

/// Reads a JSON file; a missing file is `None`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = crate::fs::read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Metadata {
            path: path.to_owned(),
            source,
        })
}

/// Upgrades a `kbuild-store-v1` store in place: its one line of generations
/// (`.kbuild/generations/<N>.json`) becomes the profile `default`
/// (`.kbuild/profiles/default/<N>.json`), every generation kept under its number, so the
/// roots' records (generation N, its rootfs) stay true.
///
/// The new layout is built beside the old one (`.kbuild/.tmp-profiles-<pid>`, hardlinks to
/// the records, made durable) and put in place by one `rename(2)` that never replaces: that
/// rename is the flip. Killed before it, the store is the v1 store it was (the next use
/// starts again, deleting the leftover); killed after it, `profiles/` is complete and is what
/// every later use reads, and the version and the removal of the old list are finished by
/// the next open. Two kbuilds upgrading at once agree on the first rename.
fn upgrade_v1(meta_dir: &Path) -> io::Result<()> {
    let profiles = meta_dir.join("profiles");
    if !profiles.exists() {
        let tmp = meta_dir.join(format!(".tmp-profiles-{}", std::process::id()));
        crate::fs::remove_tree(&tmp).ok();
        let built = build_profiles(meta_dir, &tmp);
        crate::activate::fault::point("store upgrade: new layout built beside the old");
        match built {
            Ok(()) => {
                if !crate::fs::rename_noreplace(&tmp, &profiles)? {
                    // Another kbuild upgraded first: its layout is the one in place.
                    crate::fs::remove_tree(&tmp)?;
                }
                crate::fs::fsync_dir(meta_dir)?;
            }
            // The old list vanished under us: another kbuild finished the upgrade.
            Err(_) if profiles.exists() => crate::fs::remove_tree(&tmp)?,
            Err(e) => {
                crate::fs::remove_tree(&tmp).ok();
                return Err(e);
            }
        }
        crate::activate::fault::point("store upgrade: profiles in place");
    }
    crate::fs::write_atomic(
        &meta_dir.join("version"),
        format!("{LAYOUT_VERSION}\n").as_bytes(),
    )?;
    crate::activate::fault::point("store upgrade: version written");
    finish_upgrade(meta_dir)
}

/// The upgrade failed because the store cannot be written (a read-only mount, no
/// permission), not because something is wrong with it.
fn cannot_write(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
    )
}

/// `tmp/default/<N>.json` for every v1 record (hardlinks: nothing is copied), synced.
fn build_profiles(meta_dir: &Path, tmp: &Path) -> io::Result<()> {
    let default = tmp.join(crate::generation::DEFAULT_PROFILE);
    fs_err::create_dir_all(&default)?;
    let old = meta_dir.join("generations");
    match fs_err::read_dir(&old) {
        Ok(entries) => {
            for e in entries {
                let e = e?;
                let name = e.file_name();
                let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if n.parse::<u64>().is_err() {
                    continue;
                }
                if let Err(err) = fs_err::hard_link(e.path(), default.join(&name)) {
                    // A filesystem without hardlinks: a copy, synced.
                    if err.kind() == io::ErrorKind::NotFound {
                        return Err(err);
                    }
                    let bytes = fs_err::read(e.path())?;
                    crate::fs::write_atomic(&default.join(&name), &bytes)?;
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::fs::fsync_dir(&default)?;
    crate::fs::fsync_dir(tmp)
}

/// Removes what the upgrade left: the v1 list (now also in `profiles/default`) and the
/// layouts killed upgrades were building.
fn finish_upgrade(meta_dir: &Path) -> io::Result<()> {
    let old = meta_dir.join("generations");
    if let Err(e) = std::fs::remove_dir_all(&old)
        && e.kind() != io::ErrorKind::NotFound
    {
        return Err(crate::fs::annotate(e, "remove", &old));
    }
    for e in fs_err::read_dir(meta_dir)? {
        let e = e?;
        if e.file_name()
            .to_string_lossy()
            .starts_with(".tmp-profiles-")
        {
            crate::fs::remove_tree(&e.path()).ok();
        }
    }
    crate::fs::fsync_dir(meta_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Said(std::sync::Mutex<Vec<String>>);
    impl Observer for Said {
        fn status(&self, verb: &str, message: &str) {
            self.0.lock().unwrap().push(format!("{verb} {message}"));
        }
    }

    /// Only scratch entries nobody holds are removed: this process's own live scratch, and
    /// every other kind of temporary entry, stay.
    #[test]
    fn remove_abandoned_takes_only_unlocked_scratch_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let live = store.scratch().unwrap();
        fs_err::write(live.path().join("object-0"), b"live").unwrap();
        let dead = store.dir().join(".tmp-work-dead01");
        fs_err::create_dir(&dead).unwrap();
        fs_err::write(dead.join("object-0"), vec![7u8; 3 << 20]).unwrap();
        let staging = store.dir().join(".tmp-pull-0123");
        fs_err::create_dir(&staging).unwrap();
        let said = Said::default();
        store.remove_abandoned(&said);
        assert!(!dead.exists());
        assert!(live.path().join("object-0").exists());
        assert!(staging.exists());
        assert_eq!(
            *said.0.lock().unwrap(),
            ["Removed 1 temporary entry a killed kbuild left, 3.0 MiB freed"]
        );
        store.remove_abandoned(&said);
        assert_eq!(said.0.lock().unwrap().len(), 1, "nothing more to say");
    }
}
