//! The plan of a switch: from the root's recorded state and the target generation, what is
//! added, changed, removed, adopted, restored and repaired, the prerequisites and the unit
//! actions. Computing it reads only; `--dry-run` prints exactly this.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::beneath::{Beneath, Entry};
use super::disk::Disk;
use super::prerequisites::{self, Prerequisites};
use super::root::{Root, State, ancestors, expected_link, is_our_link};
use super::roots::{self, Owner};
use super::{STATE_DIR, SwitchError, UnitAction, reconstruct, units};
use crate::generation::{self, Generation};
use crate::store::Store;

/// The rootfs top-level directories whose files are linked into the root.
const MANAGED_TOPS: &[&str] = &["etc", "usr"];

/// Everything a switch will do, computed without changing anything.
#[derive(Debug)]
pub struct Plan {
    pub root: PathBuf,
    pub from: State,
    pub to: State,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    /// kbuild's links of paths the new generation lacks (or that become directories).
    pub removed: Vec<String>,
    /// Paths the new generation lacks whose link was replaced by hand: left as they are.
    pub released: Vec<String>,
    pub adopt: Vec<String>,
    /// Originals found in `adopted/` that no record named: recorded again (restored once
    /// their path is no longer managed).
    pub rerecorded: Vec<String>,
    /// The record was missing or stale (moved away): rebuilt from the disk and written again.
    pub reconstructed: bool,
    /// Adopted originals moved back to their path.
    pub restore: Vec<String>,
    /// Adopted originals whose kept copy is gone: dropped from the record.
    pub forgotten: Vec<String>,
    /// Adopted originals that should come back but a hand-made file is in the way: the
    /// switch refuses before changing anything.
    pub blocked_restores: Vec<String>,
    /// Each prerequisite and what the check under the root found.
    pub prerequisites: Prerequisites,
    /// Unmanaged paths in the way (refused unless adopting).
    pub unmanaged: Vec<String>,
    /// Managed links of the active generation that went missing (or a moved flip point):
    /// switching to the active generation puts them back.
    pub repairs: Vec<String>,
    /// The recipes of the active and the target generation, when they differ.
    /// The variables the new generation differs in from the active one (name, old, new),
    /// shown when either is a host's profile (another host's values are visible at once).
    pub variables_change: Vec<(String, Option<String>, Option<String>)>,
    pub recipes_change: Option<(Vec<String>, Vec<String>)>,
    pub units: Vec<UnitAction>,
    /// An interrupted switch will be completed first.
    pub resumes: bool,
    /// The interrupted switch cannot reach its target (its rootfs is gone, or a file made by
    /// hand is in the way): it is undone first.
    pub undoes: bool,
}

impl Plan {
    /// The target generation's health checks, read from its rootfs (none for a rootfs
    /// without them; see [`crate::health::of_rootfs`]). Errors: a damaged manifest.
    pub fn health_checks(&self) -> Result<Vec<crate::health::Check>, SwitchError> {
        match self.to.rootfs.as_deref() {
            Some(r) => Ok(crate::health::of_rootfs(r)?),
            None => Ok(Vec::new()),
        }
    }

    pub fn is_noop(&self) -> bool {
        self.from.rootfs == self.to.rootfs
            && self.from.managed == self.to.managed
            && self.adopt.is_empty()
            && self.forgotten.is_empty()
            && self.repairs.is_empty()
            && self.rerecorded.is_empty()
            && !self.reconstructed
            && !self.resumes
    }

    /// The refusals a switch makes before changing anything (a dry run reports them too).
    pub fn check(&self) -> Result<(), SwitchError> {
        let missing = self.prerequisites.missing();
        if !missing.is_empty() {
            return Err(SwitchError::Prerequisites {
                root: self.root.clone(),
                missing,
                help: self.prerequisites.help().unwrap_or_default(),
            });
        }
        // A path whose earlier original is kept: `--adopt` cannot take this one too.
        if let Some(p) = self
            .unmanaged
            .iter()
            .find(|p| self.from.adopted.contains(*p))
        {
            return Err(SwitchError::AlreadyAdopted {
                path: p.clone(),
                host: self.root.join(p.trim_start_matches('/')),
                kept: self.root.join(adopted_path(p).trim_start_matches('/')),
            });
        }
        if !self.unmanaged.is_empty() {
            return Err(SwitchError::Unmanaged {
                root: self.root.clone(),
                paths: self.unmanaged.clone(),
            });
        }
        if let Some(p) = self.blocked_restores.first() {
            return Err(SwitchError::RestoreBlocked {
                path: self.root.join(p.trim_start_matches('/')),
                kept: self.root.join(adopted_path(p).trim_start_matches('/')),
            });
        }
        Ok(())
    }

    /// The missing prerequisites, each with the reason (see [`Prerequisites::missing`]).
    pub fn missing_prerequisites(&self) -> Vec<String> {
        self.prerequisites.missing()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gen_name = |s: &State| match (s.generation, s.profile.as_deref()) {
            (Some(n), Some(p)) => format!("generation {n} of {p}"),
            (Some(n), None) => format!("generation {n}"),
            (None, _) => "nothing".to_owned(),
        };
        // Another generation with the same rootfs: only the recorded number changes.
        let same = if self.is_noop() && self.from.generation != self.to.generation {
            " (same files)"
        } else {
            ""
        };
        writeln!(
            f,
            "root {}: {} -> {}{same}",
            self.root.display(),
            gen_name(&self.from),
            gen_name(&self.to)
        )?;
        // A move to another profile: rollback stays in the new one, so say how to go back.
        let profile_of = |s: &State| {
            s.profile
                .clone()
                .unwrap_or_else(|| crate::generation::DEFAULT_PROFILE.to_owned())
        };
        if let Some(n) = self.from.generation
            && profile_of(&self.from) != profile_of(&self.to)
        {
            writeln!(
                f,
                "  the root moves from profile `{}` to `{}`; `kbuild switch --profile {} {n} --root {}` returns it (`kbuild rollback` stays in `{}`)",
                profile_of(&self.from),
                profile_of(&self.to),
                profile_of(&self.from),
                self.root.display(),
                profile_of(&self.to),
            )?;
        }
        if self.undoes {
            writeln!(
                f,
                "  an interrupted switch is undone first (it cannot be completed)"
            )?;
        } else if self.resumes {
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
        // A host's generation names its variables: the wrong host's address shows at once.
        let hosts = self.from.profile.is_some() || self.to.profile.is_some();
        if hosts && !self.variables_change.is_empty() {
            let first = self.from.generation.is_none();
            let parts: Vec<String> = self
                .variables_change
                .iter()
                .map(|(k, old, new)| {
                    let new = new.as_deref().unwrap_or("<unset>");
                    match (first, old) {
                        (true, _) => format!("{k}={new}"),
                        (false, old) => {
                            format!("{k}={new} (was {})", old.as_deref().unwrap_or("<unset>"))
                        }
                    }
                })
                .collect();
            let label = if first {
                "variables"
            } else {
                "variables changed"
            };
            writeln!(f, "  {label}: {}", parts.join(", "))?;
        }
        write!(f, "{}", self.prerequisites)?;
        for p in &self.unmanaged {
            writeln!(f, "  unmanaged, in the way: {p}")?;
        }
        if self.reconstructed {
            writeln!(
                f,
                "  record  the root's state again (rebuilt from the disk: kbuild's links, the directories holding only them, the originals in /{STATE_DIR}/adopted)"
            )?;
        }
        for p in self.rerecorded.iter().filter(|p| !self.restore.contains(p)) {
            writeln!(
                f,
                "  keep    {p} (original found in {}, recorded again)",
                adopted_path(p)
            )?;
        }
        for p in &self.adopt {
            writeln!(f, "  adopt   {p} (original kept in {})", adopted_path(p))?;
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
        for p in &self.released {
            writeln!(
                f,
                "  leave   {p} (replaced by hand; no longer managed, left as it is)"
            )?;
        }
        for p in &self.restore {
            writeln!(f, "  restore {p} (the original adopted earlier)")?;
        }
        for p in &self.blocked_restores {
            writeln!(
                f,
                "  cannot restore {p}: a file made by hand is in the way of the original kept in {}",
                adopted_path(p)
            )?;
        }
        for p in &self.forgotten {
            writeln!(
                f,
                "  forget  {p} (its original, kept in {}, is gone)",
                adopted_path(p)
            )?;
        }
        for p in &self.repairs {
            match (&self.from.store, &self.to.store) {
                (Some(old), Some(new)) if *p == format!("/{STATE_DIR}/current") && old != new => {
                    writeln!(
                        f,
                        "  repair  {p} (points into `{}`; the store is at `{}` now)",
                        old.display(),
                        new.display()
                    )?
                }
                _ => writeln!(f, "  repair  {p} (changed or removed by hand)")?,
            }
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
pub(crate) fn rootfs_files(rootfs: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for top in MANAGED_TOPS {
        let walk = match crate::fs::walk_tree(&rootfs.join(top)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            walk => walk?,
        };
        for entry in walk.sort_by_file_name() {
            let entry = entry.map_err(crate::fs::walk_error)?;
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

/// Plans switching `root` to generation `g` of `store`, as the root is now (no journal:
/// `switch` recovers an interrupted switch first).
pub fn plan(store: &Store, root: &Root, g: &Generation, adopt: bool) -> Result<Plan, SwitchError> {
    let fs = Beneath::open(root.dir())?;
    plan_for(&fs, store, root, g, adopt, None)
}

/// After recovery: the state it leaves and whether it undid the interrupted switch.
pub(crate) struct AfterRecovery {
    pub state: State,
    pub undone: bool,
}

/// Plans switching to generation `g` on `disk` (the root, or the root as recovery will
/// leave it, `after`): what a dry run prints.
pub(crate) fn plan_on(
    disk: &dyn Disk,
    store: &Store,
    root: &Root,
    g: &Generation,
    adopt: bool,
    after: Option<AfterRecovery>,
) -> Result<Plan, SwitchError> {
    plan_for(disk, store, root, g, adopt, after)
}

fn plan_for(
    fs: &dyn Disk,
    store: &Store,
    root: &Root,
    g: &Generation,
    adopt: bool,
    after: Option<AfterRecovery>,
) -> Result<Plan, SwitchError> {
    let store_dir = store.canonical_dir();
    let rootfs = store_dir.join(g.rootfs.as_str());
    // Not followed: a rootfs replaced by a symlink would link the root to what it points at.
    if !rootfs.symlink_metadata().is_ok_and(|m| m.is_dir()) {
        return Err(SwitchError::MissingRootfs {
            generation: g.number,
            path: rootfs,
        });
    }
    // After an interrupted switch, plan from the state its recovery leaves, on the root as
    // recovery leaves it (`fs` simulates that).
    let resumes = after.is_some();
    let (undoes, mut from) = match after {
        Some(a) => (a.undone, a.state),
        None => (false, root.state()?),
    };
    // Without a journal, the record is completed from the disk: lost or stale (moved away)
    // records forget nothing kbuild made and strand no kept original.
    let recorded_adopted = from.adopted.clone();
    let mut reconstructed = false;
    if !resumes {
        (from, reconstructed) = reconstruct::complete(store, fs, from, Some(g))?;
    }
    let rerecorded: Vec<String> = from
        .adopted
        .difference(&recorded_adopted)
        .cloned()
        .collect();
    if from.rootfs.is_none() && from.managed.is_empty() {
        from.managed = recognised_links(fs)?;
    }
    // A store is known by its id, not its path: a root recorded under another path of this
    // store (moved, symlinked, mounted elsewhere) is ours. `--adopt` takes a root over from
    // another store.
    let owner = roots::owner(store, &from);
    if let Owner::Theirs { path, there } = &owner
        && !from.managed.is_empty()
        && !adopt
    {
        return Err(SwitchError::OtherStore {
            root: root.dir().to_owned(),
            theirs: path.clone(),
            ours: store_dir,
            there: *there,
        });
    }
    let managed = rootfs_files(&rootfs)?;
    // The active rootfs as this store holds it now (the recorded path may predate a move).
    let from_object = roots::object_name(from.rootfs.as_deref());
    let old_rootfs = match (&owner, &from_object) {
        (Owner::Ours, Some(o)) => Some(store_dir.join(o.as_str())),
        _ => from.rootfs.clone(),
    }
    .filter(|p| p.is_dir());
    // Directories the new generation needs, and the links it stops managing.
    let needed_dirs: BTreeSet<String> = managed.iter().flat_map(|p| ancestors(p)).collect();
    let gone: BTreeSet<String> = from.managed.difference(&managed).cloned().collect();
    // An original whose kept copy was deleted (given up, as the help of a refusal offers)
    // is forgotten, also where the path stays managed: another may be adopted there.
    let mut forgotten = Vec::new();
    if !resumes {
        for p in from.adopted.clone() {
            if (managed.contains(&p) || needed_dirs.contains(&p))
                && fs.entry(&adopted_path(&p))? == Entry::Missing
            {
                from.adopted.remove(&p);
                forgotten.push(p);
            }
        }
    }

    // Links are kbuild's when they go through the flip point or carry an alias's text in
    // either generation.
    let rootfses = [old_rootfs.as_deref(), Some(rootfs.as_path())];
    let is_our_link = |fs: &dyn Disk, p: &str| is_our_link(fs, p, &rootfses);
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut unmanaged = Vec::new();
    let mut repairs = Vec::new();
    let mut new_dirs = BTreeSet::new();
    // Mid-switch, the disk is neither generation: recovery brings it to one first.
    if from.rootfs.is_some() {
        let current = format!("/{STATE_DIR}/current");
        if fs.entry(&current)? != Entry::Symlink(rootfs.clone())
            && owner == Owner::Ours
            && from_object.as_ref() == Some(&g.rootfs)
        {
            repairs.push(current);
        }
    }
    for path in &managed {
        if from.managed.contains(path) {
            // A managed link replaced by hand (a file, or a link elsewhere) is the user's now;
            // one that was deleted is simply put back.
            match fs.entry(path)? {
                Entry::Missing => {
                    repairs.push(path.clone());
                    // Its directories may be gone too (removed by hand): made again.
                    for dir in ancestors(path) {
                        if fs.entry(&dir)? == Entry::Missing {
                            new_dirs.insert(dir);
                        }
                    }
                }
                _ if !is_our_link(fs, path)? => unmanaged.push(path.clone()),
                // An alias link kbuild made with another text (of an older kbuild, or put
                // back by hand): switching to the active generation replaces it.
                Entry::Symlink(t)
                    if t != expected_link(Some(&rootfs), path)
                        && from_object.as_ref() == Some(&g.rootfs) =>
                {
                    repairs.push(path.clone())
                }
                _ => {}
            }
            let differs = match &old_rootfs {
                Some(old) => {
                    let rel = path.trim_start_matches('/');
                    !units::same_file(&old.join(rel), &rootfs.join(rel)).unwrap_or(false)
                }
                None => true,
            };
            if differs {
                changed.push(path.clone());
            }
            continue;
        }
        added.push(path.clone());
        // Parents: existing ones must be real directories; missing ones kbuild creates, and so
        // are kbuild's own links of paths that become directories (removed first).
        let mut replaced = false;
        for dir in ancestors(path).into_iter().rev() {
            if replaced {
                new_dirs.insert(dir);
                continue;
            }
            match fs.entry(&dir)? {
                Entry::Directory => {}
                Entry::Missing => {
                    new_dirs.insert(dir);
                }
                _ if gone.contains(&dir) && is_our_link(fs, &dir)? => {
                    new_dirs.insert(dir);
                    replaced = true;
                }
                // A file made by hand where a directory goes is unmanaged: `--adopt` keeps it in
                // `adopted/`. (A symlink there stays refused: kbuild never writes through one.)
                Entry::Other => {
                    if !unmanaged.contains(&dir) {
                        unmanaged.push(dir.clone());
                    }
                    new_dirs.insert(dir);
                    replaced = true;
                }
                _ => {
                    return Err(SwitchError::UnsafeParent(
                        root.host(&dir).display().to_string(),
                    ));
                }
            }
        }
        if replaced {
            continue;
        }
        let in_way = match fs.entry(path)? {
            Entry::Missing => false,
            // A directory kbuild made that holds only its own links of paths this switch
            // removes is kbuild's: it goes, and the link takes its place.
            Entry::Directory => !owned_dir(fs, path, &from, &gone)?,
            _ => !is_our_link(fs, path)?,
        };
        if in_way {
            unmanaged.push(path.clone());
        }
    }
    // Links this switch removes; one replaced by hand is the user's and stays.
    let mut removed = Vec::new();
    let mut released = Vec::new();
    for p in &gone {
        match fs.entry(p) {
            Ok(Entry::Missing) => {}
            // Already a directory kbuild made (a type change cut short): nothing to remove.
            Ok(Entry::Directory) if from.created_dirs.contains(p) => {}
            Ok(_) if is_our_link(fs, p)? => removed.push(p.clone()),
            _ => released.push(p.clone()),
        }
    }
    // Originals kept aside come back once their path is neither managed nor a directory the
    // new generation needs — if the kept copy is still there and nothing hand-made is in the
    // way (then the switch stops before changing anything).
    let mut restore = Vec::new();
    let mut blocked = Vec::new();
    for p in &from.adopted {
        if managed.contains(p) || needed_dirs.contains(p) {
            continue;
        }
        if fs.entry(&adopted_path(p))? == Entry::Missing {
            forgotten.push(p.clone());
            continue;
        }
        let free = match fs.entry(p)? {
            Entry::Missing => true,
            Entry::Directory => from.created_dirs.contains(p) && owned_dir(fs, p, &from, &gone)?,
            _ => gone.contains(p) && is_our_link(fs, p)?,
        };
        if free {
            restore.push(p.clone());
        } else {
            blocked.push(p.clone());
        }
    }
    let adopt_now: Vec<String> = if adopt { unmanaged.clone() } else { Vec::new() };
    // One original per path: never overwrite an earlier adopted file, whether the state
    // records it or only the disk still holds it.
    for p in &adopt_now {
        if from.adopted.contains(p) || fs.entry(&adopted_path(p))? != Entry::Missing {
            return Err(SwitchError::AlreadyAdopted {
                path: p.clone(),
                host: root.host(p),
                kept: root.host(&adopted_path(p)),
            });
        }
    }
    if adopt {
        unmanaged.clear();
    }
    let mut adopted: BTreeSet<String> = from
        .adopted
        .iter()
        .filter(|p| !restore.contains(p) && !forgotten.contains(p))
        .cloned()
        .collect();
    adopted.extend(adopt_now.iter().cloned());
    let mut created_dirs = from.created_dirs.clone();
    created_dirs.extend(new_dirs);

    let prerequisites = prerequisites::check(root, &g.prerequisites, &managed);
    let units = units::plan(old_rootfs.as_deref(), &rootfs)?;
    let to = State {
        version: 2,
        store: Some(store_dir),
        // Made by `switch` under the store lock before planning (a dry run never writes).
        store_id: store.existing_id(),
        profile: super::root::profile_field(&g.profile),
        generation: Some(g.number),
        rootfs: Some(rootfs),
        managed,
        created_dirs,
        adopted,
    };
    let active = from
        .generation
        .filter(|_| owner == Owner::Ours)
        .and_then(|n| {
            generation::get(store, from.profile_name(), n)
                .ok()
                .flatten()
        });
    let variables_change = match &active {
        Some(a) => a
            .variables
            .keys()
            .chain(g.variables.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| a.variables.get(*k) != g.variables.get(*k))
            .map(|k| {
                (
                    k.clone(),
                    a.variables.get(k).cloned(),
                    g.variables.get(k).cloned(),
                )
            })
            .collect(),
        None => g
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), None, Some(v.clone())))
            .collect(),
    };
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
        released,
        adopt: adopt_now,
        rerecorded,
        reconstructed,
        restore,
        forgotten,
        blocked_restores: blocked,
        prerequisites,
        unmanaged,
        repairs,
        recipes_change,
        variables_change,
        units,
        resumes,
        undoes,
    })
}

/// Without a record (a root kbuild never managed, or whose `state.json` was moved away because
/// it was corrupt): the paths of the rootfs the flip point names that are kbuild's links, so
/// that a switch from here removes the ones the new generation lacks.
fn recognised_links(fs: &dyn Disk) -> Result<BTreeSet<String>, SwitchError> {
    let Entry::Symlink(rootfs) = fs.entry(&format!("/{STATE_DIR}/current"))? else {
        return Ok(BTreeSet::new());
    };
    if !rootfs.is_dir() {
        return Ok(BTreeSet::new());
    }
    let mut out = BTreeSet::new();
    for p in rootfs_files(&rootfs)? {
        if is_our_link(fs, &p, &[Some(&rootfs)])? {
            out.insert(p);
        }
    }
    Ok(out)
}

/// Whether `name` is the temporary link `Beneath::replace_symlink` renames into place.
pub(crate) fn is_temp_link(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".kbuild-tmp")
}

/// Where the original of `path` is kept once adopted (inside the root).
pub(crate) fn adopted_path(path: &str) -> String {
    format!("/{STATE_DIR}/adopted{path}")
}

/// Whether directory `dir` is kbuild's to remove: it created it (`from.created_dirs`) and it
/// holds nothing but kbuild's links of paths in `gone` and directories of the same kind.
pub(crate) fn owned_dir(
    fs: &dyn Disk,
    dir: &str,
    from: &State,
    gone: &BTreeSet<String>,
) -> io::Result<bool> {
    if !from.created_dirs.contains(dir) {
        return Ok(false);
    }
    for name in fs.list(dir)? {
        let child = format!("{dir}/{name}");
        let ours = match fs.entry(&child)? {
            Entry::Directory => owned_dir(fs, &child, from, gone)?,
            // Also the temporary link of a `replace_symlink` cut short by a power loss.
            Entry::Symlink(_) if is_temp_link(&name) => true,
            Entry::Symlink(_) => {
                gone.contains(&child) && is_our_link(fs, &child, &[from.rootfs.as_deref()])?
            }
            _ => false,
        };
        if !ours {
            return Ok(false);
        }
    }
    Ok(true)
}
