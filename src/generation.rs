//! Generations: numbered, immutable records of the rootfs builds (like Nix's
//! `system-N-link`), kept per profile in the store at `.kbuild/profiles/<profile>/<N>.json`.
//! A profile is one line of history (one host's, named after it; plain builds use
//! `default`): numbers count per profile, so a root that follows one profile never lands on
//! another host's generation. Generations are the roots the garbage collector keeps and the
//! targets `switch` and `rollback` move between.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::observe::Observer;
use crate::store::{LockMode, Store, StoreError, StorePath};

/// The profile plain builds (no `--host`, no `--profile`) record into, and the one a root
/// whose state names no profile belongs to.
pub const DEFAULT_PROFILE: &str = "default";

/// A generation record, as stored (the profile is where it is stored, not in the file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// The profile this generation belongs to (the directory it was read from).
    #[serde(skip)]
    pub profile: String,
    pub version: u32,
    pub number: u64,
    pub rootfs: StorePath,
    pub recipes: Vec<String>,
    pub variables: BTreeMap<String, String>,
    /// Input name → pin actually used: the sha256 hex, or `sha512:<hex>` (see `Pin::key`).
    pub inputs: BTreeMap<String, String>,
    /// Host paths that must exist before this generation may be switched to.
    pub prerequisites: Vec<String>,
    /// RFC 3339, UTC.
    pub created: String,
    /// The hosts file's hosts the templates read (absent for a plain build).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<crate::hosts::HostEntry>,
    /// Where each rootfs entry came from, by its path in the rootfs (absent in records made
    /// before kbuild recorded origins). Not part of any digest: the rootfs is the same tree
    /// whatever the recipes called its files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub origins: BTreeMap<String, Origin>,
}

/// Where one rootfs entry came from (`kbuild show`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Origin {
    /// A member of an input's archive.
    Input { input: String, member: String },
    /// A rendered template, by its path as the recipe names it.
    Template { path: String },
    /// A recipe's literal text.
    Text,
    /// An enablement link made from the `[Install]` section of `unit`.
    Install { unit: String },
    /// The rootfs's own `kbuild.json`.
    Manifest,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Input { input, member } => write!(f, "input {input} member {member}"),
            Origin::Template { path } => write!(f, "template {path}"),
            Origin::Text => f.write_str("literal text"),
            Origin::Install { unit } => write!(f, "[Install] link of {unit}"),
            Origin::Manifest => f.write_str("kbuild manifest"),
        }
    }
}

/// What a build wants recorded.
#[derive(Clone, Debug)]
pub struct NewGeneration {
    pub rootfs: StorePath,
    pub recipes: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, String>,
    pub prerequisites: Vec<String>,
    pub hosts: Vec<crate::hosts::HostEntry>,
    /// Where each rootfs entry came from (not compared: it names what the tree is built of).
    pub origins: BTreeMap<String, Origin>,
}

impl NewGeneration {
    fn same_as(&self, g: &Generation) -> bool {
        self.rootfs == g.rootfs
            && self.recipes == g.recipes
            && self.variables == g.variables
            && self.inputs == g.inputs
            && self.prerequisites == g.prerequisites
            && self.hosts == g.hosts
    }
}

/// Whether `record` added a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    New(u64),
    Unchanged(u64),
}

impl Recorded {
    pub fn number(self) -> u64 {
        match self {
            Recorded::New(n) | Recorded::Unchanged(n) => n,
        }
    }
}

/// Whether `name` may name a profile: a host name or the like (`[A-Za-z0-9._-]`, no leading
/// dot, at most 64 bytes), so it is safe as a directory name.
pub fn valid_profile(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Where the profiles live (`.kbuild/profiles`).
pub fn profiles_dir(store: &Store) -> PathBuf {
    store.bookkeeping().join("profiles")
}

fn dir(store: &Store, profile: &str) -> PathBuf {
    // A v1 store read in place: its one list is profile `default` (no other profile exists).
    if store.is_v1_read_only() {
        if profile == DEFAULT_PROFILE {
            return store.bookkeeping().join("generations");
        }
        return store
            .bookkeeping()
            .join("generations")
            .join(".no-such-profile");
    }
    profiles_dir(store).join(profile)
}

/// The path of generation `number` of `profile`.
pub fn record_path(store: &Store, profile: &str, number: u64) -> PathBuf {
    dir(store, profile).join(format!("{number}.json"))
}

/// The profiles that exist, sorted (`default` among them once anything was built plainly).
pub fn profiles(store: &Store) -> Result<Vec<String>, StoreError> {
    if store.is_v1_read_only() {
        return Ok(vec![DEFAULT_PROFILE.to_owned()]);
    }
    let mut out: Vec<String> = match fs_err::read_dir(profiles_dir(store)) {
        Ok(entries) => entries
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                (valid_profile(&name) && e.file_type().ok()?.is_dir()).then_some(name)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    out.sort();
    Ok(out)
}

/// All generations of `profile`, oldest first (none for a profile that does not exist).
pub fn list(store: &Store, profile: &str) -> Result<Vec<Generation>, StoreError> {
    let numbers = numbers(store, profile)?;
    let mut out = Vec::with_capacity(numbers.len());
    for n in numbers {
        if let Some(g) = get(store, profile, n)? {
            out.push(g);
        }
    }
    Ok(out)
}

/// Every generation of every profile (profiles sorted by name, each oldest first): what gc
/// keeps and verify checks.
pub fn list_all(store: &Store) -> Result<Vec<Generation>, StoreError> {
    let mut out = Vec::new();
    for p in profiles(store)? {
        out.extend(list(store, &p)?);
    }
    Ok(out)
}

/// Generation `number` of `profile`, if recorded.
pub fn get(store: &Store, profile: &str, number: u64) -> Result<Option<Generation>, StoreError> {
    if !valid_profile(profile) {
        return Ok(None);
    }
    let path = record_path(store, profile, number);
    let Some(mut g): Option<Generation> = crate::store::read_json(&path)? else {
        return Ok(None);
    };
    // The name is what everything goes by (gc's "newest N", `switch N`); a record copied or
    // renamed by hand would make gc delete a generation it keeps, or a switch activate another.
    if g.number != number {
        return Err(StoreError::MisnamedRecord {
            path,
            recorded: g.number,
            named: number,
        });
    }
    g.profile = profile.to_owned();
    Ok(Some(g))
}

/// The recorded generation numbers of `profile`, ascending (from the `<N>.json` names).
fn numbers(store: &Store, profile: &str) -> Result<Vec<u64>, StoreError> {
    if !valid_profile(profile) {
        return Ok(Vec::new());
    }
    let entries = match fs_err::read_dir(dir(store, profile)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

/// The newest generation number of `profile` (0: none).
pub fn newest_number(store: &Store, profile: &str) -> Result<u64, StoreError> {
    Ok(numbers(store, profile)?.last().copied().unwrap_or(0))
}

/// The file in a profile's directory holding the highest generation number it ever recorded.
const HIGH_WATER: &str = ".last";

/// The profile's high-water mark (0: none written; an unreadable one is an error, since
/// guessing low could reuse a number).
fn high_water(dir: &std::path::Path) -> Result<u64, StoreError> {
    let path = dir.join(HIGH_WATER);
    match fs_err::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| {
            StoreError::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "`{}` does not hold a generation number (it keeps numbers from being reused; write the highest number the profile ever had into it)",
                    path.display()
                ),
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The number of `profile`'s newest generation when it is `new` (so recording `new` would
/// change nothing), found by reading alone: a store that cannot be written (a read-only
/// mount) can still answer it.
pub fn newest_if_same(
    store: &Store,
    profile: &str,
    new: &NewGeneration,
) -> Result<Option<u64>, StoreError> {
    let newest = newest_number(store, profile)?;
    if newest > 0
        && let Some(g) = get(store, profile, newest)?
        && new.same_as(&g)
    {
        return Ok(Some(newest));
    }
    Ok(None)
}

/// Records `new` as the next generation of `profile` unless its newest one is identical.
pub fn record(
    store: &Store,
    profile: &str,
    new: NewGeneration,
    observer: &dyn Observer,
) -> Result<Recorded, StoreError> {
    store.require_writable_layout()?;
    let d = dir(store, profile);
    if !d.is_dir() {
        fs_err::create_dir_all(&d)?;
        crate::fs::fsync_dir(&profiles_dir(store))?;
        crate::fs::fsync_dir(&store.bookkeeping())?;
    }
    let _lock = crate::store::FileLock::acquire(
        &d.join(".lock"),
        LockMode::Exclusive,
        "the generation list",
        observer,
    )?;
    let newest = newest_number(store, profile)?;
    if newest > 0
        && let Some(g) = get(store, profile, newest)?
        && new.same_as(&g)
    {
        return Ok(Recorded::Unchanged(newest));
    }
    // Numbers are never reused, even after gc removed the newest records (a number in a log
    // or in a root's state must keep meaning one rootfs): the high-water mark is written,
    // synced, before the record, so a crash between the two skips a number, never reuses it.
    let number = newest.max(high_water(&d)?) + 1;
    crate::fs::write_atomic(&d.join(HIGH_WATER), format!("{number}\n").as_bytes())?;
    let g = Generation {
        profile: profile.to_owned(),
        version: 1,
        number,
        rootfs: new.rootfs,
        recipes: new.recipes,
        variables: new.variables,
        inputs: new.inputs,
        prerequisites: new.prerequisites,
        hosts: new.hosts,
        origins: new.origins,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let mut json = serde_json::to_vec_pretty(&g).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::fs::write_atomic(&d.join(format!("{number}.json")), &json)?;
    Ok(Recorded::New(number))
}

/// What one rootfs entry is, for `kbuild show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Executable,
    Symlink,
    Dir,
}

impl EntryKind {
    /// The word `kbuild show` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Executable => "executable",
            EntryKind::Symlink => "symlink",
            EntryKind::Dir => "dir",
        }
    }
}

/// One entry of a generation's rootfs, read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its path relative to the rootfs (`/` separated).
    pub path: String,
    pub kind: EntryKind,
    /// Bytes of a file; the target's length for a symlink; 0 for a directory.
    pub size: u64,
    /// The symlink's target.
    pub target: Option<String>,
    /// Where it came from (`None`: not recorded, or a directory).
    pub origin: Option<Origin>,
}

/// The entries of `g`'s rootfs, sorted by path (the rootfs directory itself left out).
/// Read with `symlink_metadata`, so no link is followed out of the store.
pub fn entries(store: &Store, g: &Generation) -> Result<Vec<Entry>, StoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    // What a switch would refuse is not listed as the generation's: the rootfs must have the
    // shape recorded when it was added (a rootfs or its `etc/` replaced by a link is not).
    crate::store::verify::check_unmodified_closure(store, &g.rootfs)?;
    let top = store.path_of(&g.rootfs);
    let mut out = Vec::new();
    let mut stack = vec![(top.clone(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in fs_err::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let md = fs_err::symlink_metadata(e.path())?;
            let (kind, size, target) = if md.is_dir() {
                stack.push((e.path(), path.clone()));
                (EntryKind::Dir, 0, None)
            } else if md.file_type().is_symlink() {
                let t = fs_err::read_link(e.path())?;
                (
                    EntryKind::Symlink,
                    md.len(),
                    Some(t.to_string_lossy().into_owned()),
                )
            } else if md.permissions().mode() & 0o111 != 0 {
                (EntryKind::Executable, md.len(), None)
            } else {
                (EntryKind::File, md.len(), None)
            };
            let origin = g.origins.get(&path).cloned();
            out.push(Entry {
                path,
                kind,
                size,
                target,
                origin,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// The bytes of `g`'s closure: its rootfs and the objects it references, every inode
/// counted once (a rootfs hardlinks its components, so they cost nothing twice). Regular
/// files only: directories and symlinks are filesystem overhead, not content.
pub fn closure_bytes(store: &Store, g: &Generation) -> Result<u64, StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut roots = vec![store.path_of(&g.rootfs)];
    if let Some(meta) = store.meta(&g.rootfs)? {
        roots.extend(meta.references.iter().map(|r| store.path_of(r)));
    }
    let mut stack = roots;
    while let Some(p) = stack.pop() {
        let md = match fs_err::symlink_metadata(&p) {
            Ok(md) => md,
            // A missing component (gc'd, or damaged) costs nothing; `verify` reports it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        if md.is_dir() {
            for e in fs_err::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
            total += md.len();
        }
    }
    Ok(total)
}
