//! Activation: putting a generation into effect on a root, atomically and recoverably.
//!
//! ```text
//! <root>/etc/.kbuild/
//! ├── current          → /abs/store/<hash>-rootfs-master   (the flip point)
//! ├── state.json       active generation, managed paths, directories kbuild created, adopted files
//! ├── journal.json     present only while a switch is in progress (the target state)
//! └── adopted/<path>   originals moved aside by `--adopt`, restored when no longer managed
//! <root>/etc/kubernetes/apiserver → ../../etc/.kbuild/current/etc/kubernetes/apiserver
//! <root>/usr/local/bin/kubectl    → ../../../etc/.kbuild/current/usr/local/bin/kubectl
//! ```
//!
//! A switch holds an exclusive `flock` on the root directory itself.
//!
//! Every managed path is a relative symlink through `current`, so moving between generations
//! that manage the same paths is one `rename(2)` of `current`. A switch is planned (pure: it
//! reads the root and the store), then applied: the target state is written to the journal
//! and fsync'd, then idempotent steps bring the root to it. After a crash at any step, the
//! next `switch` or `rollback` finds the journal and re-runs the same steps, completing the
//! interrupted switch. The algorithm is described in `docs/switch.md`.

pub mod beneath;
pub mod fault;
pub mod units;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::generation::{self, Generation};
use crate::observe::Observer;
use crate::store::{FileLock, LockMode, Store, StoreError};
use beneath::{Beneath, Entry};
pub use units::UnitAction;

const STATE_DIR: &str = "etc/.kbuild";
/// The rootfs top-level directories whose files are linked into the root.
const MANAGED_TOPS: &[&str] = &["etc", "usr"];

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("generation {0} does not exist in this store")]
    NoSuchGeneration(u64),
    #[error("the store has no generations yet")]
    NoGenerations,
    #[error("there is no generation before {0} to roll back to")]
    NothingToRollBackTo(u64),
    #[error("root `{}` has no active generation to roll back from", .0.display())]
    NotActive(PathBuf),
    #[error("rootfs `{}` of generation {generation} is missing from the store", path.display())]
    MissingRootfs { generation: u64, path: PathBuf },
    #[error("missing host prerequisites under `{}`: {}", root.display(), missing.join(", "))]
    Prerequisites { root: PathBuf, missing: Vec<String> },
    #[error("{} in root `{}` {} not managed by kbuild; nothing was changed:\n{}",
        if paths.len() == 1 { "this path" } else { "these paths" }, root.display(),
        if paths.len() == 1 { "exists and is" } else { "exist and are" },
        paths.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Unmanaged { root: PathBuf, paths: Vec<String> },
    #[error("`{path}` was replaced by hand, and an earlier original of it is already kept in `{}`", kept.display())]
    AlreadyAdopted { path: String, kept: PathBuf },
    #[error("`{}` is a symlink or not a directory; kbuild will not write through it", .0)]
    UnsafeParent(String),
    #[error("root `{}` is managed from store `{}`, not `{}`", root.display(), theirs.display(), ours.display())]
    OtherStore {
        root: PathBuf,
        theirs: PathBuf,
        ours: PathBuf,
    },
    #[error("corrupt activation state `{}`", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SwitchError {
    pub fn help(&self) -> Option<String> {
        match self {
            SwitchError::Unmanaged { .. } => Some(
                "move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)".into(),
            ),
            SwitchError::Prerequisites { .. } => Some(
                "create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)".into(),
            ),
            SwitchError::NoGenerations => Some("run `kbuild build master` first".into()),
            SwitchError::NoSuchGeneration(_) => Some("`kbuild generations` lists them".into()),
            SwitchError::OtherStore { theirs, .. } => Some(format!(
                "pass `--store {}` to manage this root",
                theirs.display()
            )),
            _ => None,
        }
    }
}

/// What kbuild knows about a root: written atomically to `state.json` after each switch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The store the active generation comes from (absolute).
    pub store: Option<PathBuf>,
    pub generation: Option<u64>,
    /// Absolute path of the active rootfs.
    pub rootfs: Option<PathBuf>,
    /// Absolute paths (as seen inside the root) that are kbuild's symlinks.
    pub managed: BTreeSet<String>,
    /// Directories kbuild created (removed again once empty and unneeded).
    pub created_dirs: BTreeSet<String>,
    /// Paths whose original was moved to `adopted/`.
    pub adopted: BTreeSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    version: u32,
    from: State,
    to: State,
    /// The unit actions of this switch: after a crash, the switch that completes it carries
    /// them out too (the daemons must not keep running the old configuration).
    #[serde(default)]
    units: Vec<UnitAction>,
}

/// A root filesystem kbuild switches generations in.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A root named by `dir`; canonical when it exists, so that `/srv/m1`, `../m1` and a
    /// symlink to it are one root (one lock, one registration with the store).
    pub fn new(dir: &Path) -> Root {
        let dir = std::fs::canonicalize(dir)
            .or_else(|_| std::path::absolute(dir))
            .unwrap_or_else(|_| dir.to_owned());
        Root { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    /// The host path of an absolute path inside the root.
    pub fn host(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// The link text of a managed path: relative, through the flip point.
    fn link_target(path: &str) -> PathBuf {
        let depth = path.trim_start_matches('/').matches('/').count();
        let mut t = PathBuf::new();
        for _ in 0..depth {
            t.push("..");
        }
        t.push(STATE_DIR);
        t.push("current");
        t.push(path.trim_start_matches('/'));
        t
    }

    /// The recorded state; an unmanaged root has the default (empty) state.
    pub fn state(&self) -> Result<State, SwitchError> {
        self.check_state_dir()?;
        read_json(&self.state_dir().join("state.json"))
            .map(|s: Option<State>| s.unwrap_or_default())
    }

    fn journal(&self) -> Result<Option<Journal>, SwitchError> {
        self.check_state_dir()?;
        read_json(&self.state_dir().join("journal.json"))
    }

    /// State is read only from a real `etc/.kbuild` directory: a journal planted behind a
    /// symlink would otherwise be executed.
    fn check_state_dir(&self) -> Result<(), SwitchError> {
        if !self.dir.is_dir() {
            return Ok(()); // nothing to read; `lock` reports a missing root
        }
        match Beneath::open(&self.dir)?.entry(&format!("/{STATE_DIR}"))? {
            Entry::Missing | Entry::Directory => Ok(()),
            _ => Err(SwitchError::UnsafeParent(
                self.state_dir().display().to_string(),
            )),
        }
    }

    /// Whether an interrupted switch awaits completion.
    pub fn interrupted(&self) -> bool {
        self.state_dir().join("journal.json").exists()
    }

    /// Takes the root's switch lock: a flock on the root directory itself, so that a switch
    /// refused for a missing prerequisite or an unmanaged file leaves no trace in the root.
    fn lock(&self, observer: &dyn Observer) -> Result<FileLock, SwitchError> {
        if !self.dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("root `{}` is not a directory", self.dir.display()),
            )
            .into());
        }
        Ok(FileLock::acquire(
            &self.dir,
            LockMode::Exclusive,
            &format!("root `{}`", self.dir.display()),
            observer,
        )?)
    }

    /// Creates `etc/.kbuild/adopted` without following any symlink on the way.
    fn ensure_state_dir(&self) -> io::Result<()> {
        Beneath::open(&self.dir)?.mkdir_all(&format!("/{STATE_DIR}/adopted"))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, SwitchError> {
    let Some(bytes) = crate::fs::read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| SwitchError::State {
            path: path.to_owned(),
            source,
        })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    crate::fs::write_atomic(path, &bytes)
}

/// Everything a switch will do, computed without changing anything.
#[derive(Debug)]
pub struct Plan {
    pub root: PathBuf,
    pub from: State,
    pub to: State,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub adopt: Vec<String>,
    pub restore: Vec<String>,
    /// Prerequisites and whether each exists under the root.
    pub prerequisites: Vec<(String, bool)>,
    /// Unmanaged paths in the way (refused unless adopting).
    pub unmanaged: Vec<String>,
    /// Managed links of the active generation that went missing (or a moved flip point):
    /// switching to the active generation puts them back.
    pub repairs: Vec<String>,
    /// The recipes of the active and the target generation, when they differ.
    pub recipes_change: Option<(Vec<String>, Vec<String>)>,
    pub units: Vec<UnitAction>,
    /// An interrupted switch will be completed first.
    pub resumes: bool,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.from.rootfs == self.to.rootfs
            && self.from.managed == self.to.managed
            && self.adopt.is_empty()
            && self.repairs.is_empty()
            && !self.resumes
    }

    /// The refusals a switch makes before changing anything (a dry run reports them too).
    pub fn check(&self) -> Result<(), SwitchError> {
        let missing = self.missing_prerequisites();
        if !missing.is_empty() {
            return Err(SwitchError::Prerequisites {
                root: self.root.clone(),
                missing,
            });
        }
        if !self.unmanaged.is_empty() {
            return Err(SwitchError::Unmanaged {
                root: self.root.clone(),
                paths: self.unmanaged.clone(),
            });
        }
        Ok(())
    }

    pub fn missing_prerequisites(&self) -> Vec<String> {
        self.prerequisites
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gen_name = |s: &State| match s.generation {
            Some(n) => format!("generation {n}"),
            None => "nothing".to_owned(),
        };
        writeln!(
            f,
            "root {}: {} -> {}",
            self.root.display(),
            gen_name(&self.from),
            gen_name(&self.to)
        )?;
        if self.resumes {
            writeln!(f, "  an interrupted switch is completed first")?;
        }
        if let Some((from, to)) = &self.recipes_change {
            writeln!(
                f,
                "  recipes: {} -> {}",
                if from.is_empty() {
                    "?".to_owned()
                } else {
                    from.join(" ")
                },
                to.join(" ")
            )?;
        }
        let missing = self.missing_prerequisites();
        if missing.is_empty() {
            writeln!(f, "  prerequisites: {} present", self.prerequisites.len())?;
        } else {
            for p in &missing {
                writeln!(f, "  prerequisite missing: {p}")?;
            }
        }
        for p in &self.unmanaged {
            writeln!(f, "  unmanaged, in the way: {p}")?;
        }
        for p in &self.adopt {
            writeln!(
                f,
                "  adopt   {p} (original kept in /{STATE_DIR}/adopted{p})"
            )?;
        }
        for p in &self.added {
            writeln!(f, "  add     {p}")?;
        }
        for p in &self.changed {
            writeln!(f, "  change  {p}")?;
        }
        for p in &self.removed {
            writeln!(f, "  remove  {p}")?;
        }
        for p in &self.restore {
            writeln!(f, "  restore {p} (the original adopted earlier)")?;
        }
        for p in &self.repairs {
            writeln!(f, "  repair  {p} (changed or removed by hand)")?;
        }
        for u in &self.units {
            writeln!(f, "  {u}")?;
        }
        if self.is_noop() {
            writeln!(f, "  nothing to do")?;
        }
        Ok(())
    }
}

/// Files of a rootfs that are linked into a root, as absolute paths.
fn rootfs_files(rootfs: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for top in MANAGED_TOPS {
        let dir = rootfs.join(top);
        if !dir.exists() {
            continue;
        }
        for entry in walkdir::WalkDir::new(&dir).sort_by_file_name() {
            let entry = entry.map_err(io::Error::other)?;
            if entry.file_type().is_dir() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(rootfs)
                .expect("walk stays under the rootfs");
            out.insert(format!("/{}", rel.to_string_lossy()));
        }
    }
    Ok(out)
}

/// Plans switching `root` to generation `number` of `store`.
pub fn plan(store: &Store, root: &Root, number: u64, adopt: bool) -> Result<Plan, SwitchError> {
    let g = generation::get(store, number)?.ok_or(SwitchError::NoSuchGeneration(number))?;
    plan_for(store, root, &g, adopt)
}

fn plan_for(store: &Store, root: &Root, g: &Generation, adopt: bool) -> Result<Plan, SwitchError> {
    let store_dir = store.canonical_dir();
    let rootfs = store_dir.join(g.rootfs.as_str());
    if !rootfs.is_dir() {
        return Err(SwitchError::MissingRootfs {
            generation: g.number,
            path: rootfs,
        });
    }
    let journal = root.journal()?;
    let resumes = journal.is_some();
    // After an interrupted switch, the root is (or will be, once recovered) at the journal's
    // target: plan from there.
    let from = match journal {
        Some(j) => j.to,
        None => root.state()?,
    };
    if let Some(theirs) = &from.store
        && *theirs != store_dir
        && !from.managed.is_empty()
    {
        return Err(SwitchError::OtherStore {
            root: root.dir().to_owned(),
            theirs: theirs.clone(),
            ours: store_dir,
        });
    }
    let managed = rootfs_files(&rootfs)?;
    let fs = Beneath::open(root.dir())?;
    let old_rootfs = from.rootfs.clone().filter(|p| p.is_dir());

    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut unmanaged = Vec::new();
    let mut repairs = Vec::new();
    let mut new_dirs = BTreeSet::new();
    if from.rootfs.is_some() {
        let current = format!("/{STATE_DIR}/current");
        if fs.entry(&current)? != Entry::Symlink(rootfs.clone())
            && from.rootfs.as_ref() == Some(&rootfs)
        {
            repairs.push(current);
        }
    }
    for path in &managed {
        if from.managed.contains(path) {
            // A managed link replaced by hand (a file, or a link elsewhere) is the user's now;
            // one that was deleted is simply put back.
            match fs.entry(path)? {
                Entry::Missing => repairs.push(path.clone()),
                _ if !is_our_link(&fs, path)? => unmanaged.push(path.clone()),
                _ => {}
            }
            let differs = match &old_rootfs {
                Some(old) => {
                    let rel = path.trim_start_matches('/');
                    !units::same_file(&old.join(rel), &rootfs.join(rel))?
                }
                None => true,
            };
            if differs {
                changed.push(path.clone());
            }
            continue;
        }
        added.push(path.clone());
        // Parents: existing ones must be real directories; missing ones kbuild creates.
        let mut dir = String::new();
        let comps: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for c in &comps[..comps.len() - 1] {
            dir.push('/');
            dir.push_str(c);
            match fs.entry(&dir)? {
                Entry::Directory => {}
                Entry::Missing => {
                    new_dirs.insert(dir.clone());
                }
                _ => {
                    return Err(SwitchError::UnsafeParent(
                        root.host(&dir).display().to_string(),
                    ));
                }
            }
        }
        let ours = is_our_link(&fs, path)?;
        if !ours && !matches!(fs.entry(path)?, Entry::Missing) && !from.adopted.contains(path) {
            unmanaged.push(path.clone());
        }
    }
    let removed: Vec<String> = from.managed.difference(&managed).cloned().collect();
    let restore: Vec<String> = removed
        .iter()
        .filter(|p| from.adopted.contains(*p))
        .cloned()
        .collect();
    let adopt_now: Vec<String> = if adopt { unmanaged.clone() } else { Vec::new() };
    // One original per path: never overwrite an earlier adopted file.
    if let Some(p) = adopt_now.iter().find(|p| from.adopted.contains(*p)) {
        return Err(SwitchError::AlreadyAdopted {
            path: p.clone(),
            kept: root
                .state_dir()
                .join("adopted")
                .join(p.trim_start_matches('/')),
        });
    }
    if adopt {
        unmanaged.clear();
    }
    let mut adopted: BTreeSet<String> = from
        .adopted
        .iter()
        .filter(|p| !restore.contains(p))
        .cloned()
        .collect();
    adopted.extend(adopt_now.iter().cloned());
    let mut created_dirs = from.created_dirs.clone();
    created_dirs.extend(new_dirs);

    let prerequisites = g
        .prerequisites
        .iter()
        .map(|p| (p.clone(), root.host(p).exists()))
        .collect();
    let units = units::plan(old_rootfs.as_deref(), &rootfs)?;
    let to = State {
        version: 1,
        store: Some(store_dir),
        generation: Some(g.number),
        rootfs: Some(rootfs),
        managed,
        created_dirs,
        adopted,
    };
    let active = from
        .generation
        .filter(|_| from.store.as_ref() == Some(&store.canonical_dir()))
        .and_then(|n| generation::get(store, n).ok().flatten());
    let recipes_change = match active {
        Some(a) if a.recipes != g.recipes => Some((a.recipes, g.recipes.clone())),
        _ => None,
    };
    Ok(Plan {
        root: root.dir().to_owned(),
        from,
        to,
        added,
        changed,
        removed,
        adopt: adopt_now,
        restore,
        prerequisites,
        unmanaged,
        repairs,
        recipes_change,
        units,
        resumes,
    })
}

/// The outcome of an applied switch.
#[derive(Debug)]
pub struct Applied {
    pub generation: u64,
    pub changed_anything: bool,
    /// Unit actions of an interrupted switch this one completed first; they still have to run.
    pub recovered_units: Vec<UnitAction>,
}

/// Which generation a switch goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest generation (`kbuild switch`).
    Newest,
    /// A given generation (`kbuild switch N`).
    Number(u64),
    /// The one before the active generation (`kbuild rollback`).
    Previous,
}

/// The generation number `target` designates for `root` now.
pub fn resolve(store: &Store, root: &Root, target: Target) -> Result<u64, SwitchError> {
    match target {
        Target::Newest => newest(store),
        Target::Number(n) => Ok(n),
        Target::Previous => previous(store, root),
    }
}

/// The plan a switch to `target` would carry out; changes nothing (`--dry-run`).
pub fn dry_run(
    store: &Store,
    root: &Root,
    target: Target,
    adopt: bool,
) -> Result<Plan, SwitchError> {
    plan(store, root, resolve(store, root, target)?, adopt)
}

/// Switches `root` to `target`. `before_flip` runs once the plan is accepted and before the
/// root changes (the CLI stops removed units there, while their unit files still exist).
pub fn switch(
    store: &Store,
    root: &Root,
    target: Target,
    adopt: bool,
    observer: &dyn Observer,
    before_flip: &dyn Fn(&Plan),
) -> Result<(Plan, Applied), SwitchError> {
    let _root_lock = root.lock(observer)?;
    // Shared store lock: gc cannot delete the generation while it is being activated.
    let _store_lock = store.lock(LockMode::Shared, observer)?;
    let recovered = recover(root)?;
    let plan = plan(store, root, resolve(store, root, target)?, adopt)?;
    let (plan, mut applied) = apply(store, root, plan, before_flip)?;
    applied.recovered_units = recovered;
    Ok((plan, applied))
}

/// The newest generation's number.
pub fn newest(store: &Store) -> Result<u64, SwitchError> {
    generation::list(store)?
        .last()
        .map(|g| g.number)
        .ok_or(SwitchError::NoGenerations)
}

fn apply(
    store: &Store,
    root: &Root,
    plan: Plan,
    before_flip: &dyn Fn(&Plan),
) -> Result<(Plan, Applied), SwitchError> {
    plan.check()?;
    let generation = plan.to.generation.expect("a plan targets a generation");
    // Registered before the root changes, so gc knows the root even if this switch crashes
    // (and a root moved to another path is known again after one no-op switch).
    register(store, root)?;
    if plan.is_noop() {
        return Ok((
            plan,
            Applied {
                generation,
                changed_anything: false,
                recovered_units: Vec::new(),
            },
        ));
    }
    let journal = Journal {
        version: 1,
        from: plan.from.clone(),
        to: plan.to.clone(),
        units: plan.units.clone(),
    };
    root.ensure_state_dir()?;
    write_json(&root.state_dir().join("journal.json"), &journal)?;
    fault::point("journal written");
    // Units are stopped only once the switch is recorded: a failure before this point
    // leaves the services untouched.
    before_flip(&plan);
    execute(root, &journal.from, &journal.to)?;
    Ok((
        plan,
        Applied {
            generation,
            changed_anything: true,
            recovered_units: Vec::new(),
        },
    ))
}

/// Completes an interrupted switch, if any.
/// Completes an interrupted switch, if any, returning the unit actions it still owes.
pub fn recover(root: &Root) -> Result<Vec<UnitAction>, SwitchError> {
    match root.journal()? {
        Some(j) => {
            execute(root, &j.from, &j.to)?;
            Ok(j.units)
        }
        None => Ok(Vec::new()),
    }
}

/// Brings the root from `from` to `to`. Every step checks before it acts, so running this
/// again after a crash at any point finishes the job.
fn execute(root: &Root, from: &State, to: &State) -> Result<(), SwitchError> {
    let fs = Beneath::open(root.dir())?;
    let adopted = |p: &str| format!("/{STATE_DIR}/adopted{p}");
    let current = format!("/{STATE_DIR}/current");

    // 1. Move adopted originals aside (before anything is linked over them).
    for p in to.adopted.difference(&from.adopted) {
        if matches!(fs.entry(p)?, Entry::Missing) || is_our_link(&fs, p)? {
            continue;
        }
        fs.rename(p, &adopted(p))?;
        fault::point("adopt");
    }
    // 2. Directories for new links, parents first.
    for d in &to.created_dirs {
        if fs.entry(d)? == Entry::Missing {
            fs.mkdir(d)?;
            fault::point("mkdir");
        }
    }
    // 3. The flip: one rename switches every path both generations manage.
    let rootfs = to.rootfs.as_ref().expect("a target state has a rootfs");
    if fs.entry(&current)? != Entry::Symlink(rootfs.clone()) {
        fs.replace_symlink(&current, rootfs)?;
        fault::point("flip");
    }
    // 4. Links for paths the new generation adds.
    for p in &to.managed {
        if !is_our_link(&fs, p)? {
            fs.replace_symlink(p, &Root::link_target(p))?;
            fault::point("link");
        }
    }
    // 5. Links of paths no longer managed.
    for p in from.managed.difference(&to.managed) {
        if is_our_link(&fs, p)? {
            fs.unlink(p)?;
            fault::point("unlink");
        }
    }
    // 6. Originals whose path is no longer managed come back.
    for p in from.adopted.difference(&to.adopted) {
        if fs.entry(&adopted(p))? != Entry::Missing && fs.entry(p)? == Entry::Missing {
            fs.rename(&adopted(p), p)?;
            fault::point("restore");
        }
        // Empty directories left under adopted/ by the restore go too.
        for dir in ancestors(&adopted(p)) {
            if dir.len() <= format!("/{STATE_DIR}/adopted").len() || !fs.rmdir(&dir)? {
                break;
            }
        }
    }
    // 7. Directories kbuild created that no managed path needs any more, deepest first;
    //    a directory holding someone else's files stays.
    let needed: BTreeSet<String> = to
        .managed
        .iter()
        .chain(to.adopted.iter())
        .flat_map(|p| ancestors(p))
        .collect();
    let mut created: Vec<&String> = from.created_dirs.union(&to.created_dirs).collect();
    created.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let mut kept = BTreeSet::new();
    for d in created {
        if needed.contains(d) {
            kept.insert(d.clone());
        } else if fs.entry(d)? != Entry::Missing {
            if fs.rmdir(d)? {
                fault::point("rmdir");
            } else {
                kept.insert(d.clone());
            }
        }
    }
    fs.sync_dir("etc")?;
    fs.sync_dir("usr/local/bin")?;
    // 8. Record the new state, then retire the journal.
    let state_dir = root.state_dir();
    let mut state = to.clone();
    state.created_dirs = kept;
    write_json(&state_dir.join("state.json"), &state)?;
    fault::point("state written");
    fs_err::remove_file(state_dir.join("journal.json"))?;
    crate::fs::fsync_dir(&state_dir)?;
    Ok(())
}

fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        out.push(parent.to_owned());
        p = parent;
    }
    out
}

/// Whether `path` is kbuild's link (the relative link through the flip point).
fn is_our_link(fs: &Beneath, path: &str) -> io::Result<bool> {
    Ok(fs.entry(path)? == Entry::Symlink(Root::link_target(path)))
}

/// Records the root in the store, so gc keeps its active generation.
fn register(store: &Store, root: &Root) -> io::Result<()> {
    let dir = store.bookkeeping().join("roots");
    fs_err::create_dir_all(&dir)?;
    let key = blake3::hash(root.dir().as_os_str().as_encoded_bytes()).to_hex();
    let path = dir.join(format!("{}.json", &key[..32]));
    let body = serde_json::json!({ "root": root.dir() });
    let mut bytes = serde_json::to_vec_pretty(&body).map_err(io::Error::other)?;
    bytes.push(b'\n');
    crate::fs::write_if_changed(&path, &bytes).map(drop)
}

/// The generation of `store` active on `root`, if the root is managed from this store.
pub fn active_generation(store: &Store, root: &Root) -> Option<u64> {
    let ours = store.canonical_dir();
    root.state()
        .ok()
        .filter(|s| s.store.as_ref() == Some(&ours))
        .and_then(|s| s.generation)
}

/// The roots registered with this store: (registry file, root).
fn registered_roots(store: &Store) -> Vec<(PathBuf, Root)> {
    let Ok(entries) = std::fs::read_dir(store.bookkeeping().join("roots")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let v: serde_json::Value = read_json(&e.path()).ok()??;
            let r = v.get("root")?.as_str()?;
            Some((e.path(), Root::new(Path::new(r))))
        })
        .collect()
}

/// Forgets registered roots that no longer exist or are no longer managed from this store
/// (gc calls this under the exclusive store lock). Returns their paths.
pub fn forget_stale_roots(store: &Store) -> Result<Vec<PathBuf>, SwitchError> {
    let ours = store.canonical_dir();
    let mut out = Vec::new();
    for (file, root) in registered_roots(store) {
        let ours_still = root.dir().is_dir()
            && (root.state().is_ok_and(|s| s.store.as_ref() == Some(&ours))
                || root.journal().is_ok_and(|j| j.is_some()));
        if !ours_still {
            fs_err::remove_file(file)?;
            out.push(root.dir().to_owned());
        }
    }
    Ok(out)
}

/// Generations of this store that a root still needs: the active one of every root that
/// switched from it, and both ends of an interrupted switch (its journal), which the next
/// command will complete. gc never deletes these.
pub fn generations_in_use(store: &Store) -> Result<BTreeSet<u64>, SwitchError> {
    let ours = store.canonical_dir();
    let mut out = BTreeSet::new();
    for (_, root) in registered_roots(store) {
        let mut states: Vec<State> = root.state().into_iter().collect();
        if let Ok(Some(j)) = root.journal() {
            states.push(j.from);
            states.push(j.to);
        }
        out.extend(
            states
                .iter()
                .filter(|s| s.store.as_ref() == Some(&ours))
                .filter_map(|s| s.generation),
        );
    }
    Ok(out)
}

/// The systemctl invocations for `actions`, in the order they run: stop and disable removed
/// units before the flip (their unit files still exist), then after it daemon-reload, enable
/// and start new units, restart changed ones.
pub fn systemctl_commands(actions: &[UnitAction]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let (stops, rest): (Vec<&UnitAction>, Vec<&UnitAction>) = actions
        .iter()
        .partition(|a| matches!(a, UnitAction::Stop { .. }));
    let before = stops.iter().flat_map(|a| a.commands()).collect();
    let mut after = vec![vec!["daemon-reload".to_owned()]];
    after.extend(rest.iter().flat_map(|a| a.commands()));
    (before, after)
}

/// Whether unit actions can be run for real: the root is `/` and systemd is running.
pub fn systemd_is_live(root: &Root) -> bool {
    root.dir() == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

/// Runs `systemctl` for the unit actions of one phase (`before` the flip, or after it).
/// Returns the failures as readable lines.
pub fn run_systemctl(actions: &[UnitAction], before: bool) -> Vec<String> {
    let (stops, rest) = systemctl_commands(actions);
    let mut failures = Vec::new();
    for args in if before { stops } else { rest } {
        match std::process::Command::new("systemctl").args(&args).status() {
            Ok(s) if s.success() => {}
            Ok(s) => failures.push(format!("`systemctl {}` exited with {s}", args.join(" "))),
            Err(e) => failures.push(format!("cannot run `systemctl {}`: {e}", args.join(" "))),
        }
    }
    failures
}

/// Differences between a root and its recorded state: links changed, removed or replaced by
/// hand, a flip point that moved, an interrupted switch.
pub fn drift(root: &Root) -> Result<Vec<String>, SwitchError> {
    if !root.dir().is_dir() {
        return Ok(vec![
            "the root does not exist (check `--root` / KBUILD_ROOT)".to_owned(),
        ]);
    }
    let state = root.state()?;
    let mut out = Vec::new();
    if root.interrupted() {
        out.push("an interrupted switch is pending (`kbuild switch` completes it)".to_owned());
    }
    let fs = Beneath::open(root.dir())?;
    if let Some(rootfs) = &state.rootfs {
        match fs.entry(&format!("/{STATE_DIR}/current"))? {
            Entry::Symlink(t) if t == *rootfs => {
                if !rootfs.is_dir() {
                    out.push(format!(
                        "the active rootfs `{}` is missing from the store",
                        rootfs.display()
                    ));
                }
            }
            Entry::Symlink(t) => out.push(format!(
                "/{STATE_DIR}/current points to `{}` instead of `{}`",
                t.display(),
                rootfs.display()
            )),
            _ => out.push(format!("/{STATE_DIR}/current is missing")),
        }
    }
    for p in &state.managed {
        match fs.entry(p) {
            Ok(Entry::Missing) => out.push(format!("removed: {p}")),
            Ok(Entry::Symlink(t)) if t != Root::link_target(p) => {
                out.push(format!("link changed: {p} -> {}", t.display()));
            }
            Ok(Entry::Symlink(_)) => {
                if !root.host(p).exists() {
                    out.push(format!("dangling: {p}"));
                }
            }
            Ok(_) => out.push(format!("replaced by a file: {p}")),
            Err(e) => out.push(format!("{p}: {e}")),
        }
    }
    Ok(out)
}

/// The generation before `root`'s active one (what `rollback` goes to).
pub fn previous(store: &Store, root: &Root) -> Result<u64, SwitchError> {
    // After an interrupted switch the journal's target is what the root is about to be.
    let state = match root.journal()? {
        Some(j) => j.to,
        None => root.state()?,
    };
    let active = state
        .generation
        .ok_or_else(|| SwitchError::NotActive(root.dir().to_owned()))?;
    generation::list(store)?
        .into_iter()
        .map(|g| g.number)
        .filter(|n| *n < active)
        .max()
        .ok_or(SwitchError::NothingToRollBackTo(active))
}
