//! The journal of a switch (`etc/.kbuild/journal.json`: the states it goes from and to, and
//! its unit actions), the idempotent steps that bring a root from one state to another, and
//! recovery: the next command completes a switch interrupted at any point — or undoes it,
//! running the same steps back to the journal's origin, when its target cannot be reached.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::beneath::{Beneath, Entry};
use super::disk::{Disk, Simulated};
use super::plan::{adopted_path, is_temp_link, owned_dir};
use super::root::{Root, State, ancestors, entry_below, expected_link, is_our_link, write_json};
use super::{STATE_DIR, SwitchError, UnitAction, fault, roots};
use crate::store::Store;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Journal {
    pub version: u32,
    pub from: State,
    pub to: State,
    /// The unit actions of this switch: after a crash, the switch that completes it carries
    /// them out too (the daemons must not keep running the old configuration).
    #[serde(default)]
    pub units: Vec<UnitAction>,
}

/// Records the switch `plan` describes (temp file, fsync, rename) before anything changes.
pub(crate) fn begin(root: &Root, plan: &super::Plan) -> Result<Journal, SwitchError> {
    let journal = Journal {
        version: 1,
        from: plan.from.clone(),
        to: plan.to.clone(),
        units: plan.units.clone(),
    };
    root.ensure_state_dir()?;
    write_json(&root.state_dir().join("journal.json"), &journal)?;
    fault::step("journal written")?;
    Ok(journal)
}

/// What the recovery of an interrupted switch did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The unit actions the interrupted switch still owes (reversed when it was undone).
    pub units: Vec<UnitAction>,
    /// Set when the interrupted switch could not be completed and was undone instead: why.
    pub undone: Option<String>,
    /// Whether there was an interrupted switch at all.
    pub happened: bool,
    /// The generation the root is on now (none: the root is unmanaged again).
    pub generation: Option<u64>,
}

/// Whether a state can be switched to: its rootfs is in the store (or it is the empty state
/// of a root kbuild did not manage yet).
pub(crate) fn reachable(state: &State) -> bool {
    state.rootfs.as_ref().is_none_or(|p| p.is_dir())
}

fn describe(s: &State) -> String {
    match s.generation {
        Some(n) => format!("generation {n}"),
        None => "nothing".to_owned(),
    }
}

/// Completes an interrupted switch, if any. When its target cannot be reached (its rootfs is
/// gone from the store, or a step fails: a file made by hand in the way), the switch is undone
/// instead — the same idempotent steps towards the journal's origin — so that no root is ever
/// left for good between two generations. Only when neither way works is this an error, which
/// names what is in the way.
pub fn recover(store: &Store, root: &Root) -> Result<Recovered, SwitchError> {
    let Some(j) = root.journal()? else {
        return Ok(Recovered::default());
    };
    let fs = Beneath::open(root.dir())?;
    recover_on(&fs, store, root, j, true).map(|(r, _)| r)
}

/// What recovering the interrupted switch `j` will do, and the state it leaves, computed
/// without changing anything: the same decisions and steps as [`recover`], on a simulation
/// of the root (what a dry run plans from).
pub(crate) fn recovery_preview<'a>(
    fs: &'a Beneath,
    store: &Store,
    root: &Root,
    j: Journal,
) -> Result<(Recovered, State, Simulated<'a>), SwitchError> {
    let sim = Simulated::new(fs, root.dir());
    let (r, s) = recover_on(&sim, store, root, j, false)?;
    Ok((r, s, sim))
}

/// Recovers `j` on `disk`; with `commit`, records the outcome (state.json, journal gone).
fn recover_on(
    disk: &dyn Disk,
    store: &Store,
    root: &Root,
    j: Journal,
    commit: bool,
) -> Result<(Recovered, State), SwitchError> {
    let j = localized(store, j);
    let run = |from: &State, to: &State| -> Result<State, SwitchError> {
        let state = steps(disk, root, from, to)?;
        if commit {
            record(root, &state)?;
        }
        Ok(state)
    };
    let forward = match way_on(disk, store, root, &j)? {
        Way::Forward => match run(&j.from, &j.to) {
            Ok(state) => {
                return Ok((
                    Recovered {
                        units: j.units,
                        undone: None,
                        happened: true,
                        generation: j.to.generation,
                    },
                    state,
                ));
            }
            // A step failed after all (a race, an I/O error): undo instead.
            Err(e) => e,
        },
        Way::Backward(why) => why,
    };
    let backward = match preflight(disk, root, &j.to, &j.from) {
        None => match run(&j.to, &j.from) {
            Ok(state) => {
                return Ok((
                    Recovered {
                        units: j.units.iter().map(UnitAction::reversed).collect(),
                        undone: Some(forward.to_string()),
                        happened: true,
                        generation: j.from.generation,
                    },
                    state,
                ));
            }
            Err(e) => e,
        },
        Some(e) => e,
    };
    Err(wedged(&j, forward, backward))
}

/// `j` with the rootfs paths of this store as it is now: a store known by its id may have
/// moved since the journal was written (see `roots::owner`).
fn localized(store: &Store, mut j: Journal) -> Journal {
    for s in [&mut j.from, &mut j.to] {
        let here =
            roots::object_name(s.rootfs.as_deref()).map(|o| store.canonical_dir().join(o.as_str()));
        if let Some(here) = here
            && !reachable(s)
            && here.is_dir()
            && roots::owner(store, s) == roots::Owner::Ours
        {
            s.rootfs = Some(here);
        }
    }
    j
}

/// Which way the recovery of `j` goes.
pub(crate) enum Way {
    /// Complete the switch.
    Forward,
    /// Undo it, because completing it cannot work (why).
    Backward(SwitchError),
}

/// Decides, changing nothing, how the interrupted switch `j` is recovered: completed when
/// its target is reachable and nothing is in the way, else undone when that can work; an
/// error naming what is in the way when neither can. Each way is checked before it is taken,
/// so a way that cannot finish changes nothing (no flipping back and forth).
fn way_on(disk: &dyn Disk, store: &Store, root: &Root, j: &Journal) -> Result<Way, SwitchError> {
    let j = &localized(store, j.clone());
    let forward = if reachable(&j.to) {
        match preflight(disk, root, &j.from, &j.to) {
            None => return Ok(Way::Forward),
            Some(e) => e,
        }
    } else {
        SwitchError::MissingRootfs {
            generation: j.to.generation.unwrap_or_default(),
            path: j.to.rootfs.clone().unwrap_or_default(),
        }
    };
    match preflight(disk, root, &j.to, &j.from) {
        None => Ok(Way::Backward(forward)),
        Some(backward) => Err(wedged(j, forward, backward)),
    }
}

fn wedged(j: &Journal, forward: SwitchError, backward: SwitchError) -> SwitchError {
    SwitchError::Wedged {
        from: describe(&j.from),
        to: describe(&j.to),
        from_generation: j.from.generation,
        to_generation: j.to.generation,
        forward: Box::new(forward),
        backward: Box::new(backward),
    }
}

/// The first thing that would stop `execute(from, to)` — a file made by hand where a link,
/// a directory or a restored original goes — found without changing anything.
fn preflight(disk: &dyn Disk, root: &Root, from: &State, to: &State) -> Option<SwitchError> {
    if !reachable(to) {
        return Some(SwitchError::MissingRootfs {
            generation: to.generation.unwrap_or_default(),
            path: to.rootfs.clone().unwrap_or_default(),
        });
    }
    let check = || -> Result<Option<SwitchError>, SwitchError> {
        let fs = disk;
        let blocked = |p: &str, why: &str| {
            Some(SwitchError::Blocked {
                path: root.host(p),
                why: why.to_owned(),
            })
        };
        let gone: BTreeSet<String> = from.managed.difference(&to.managed).cloned().collect();
        let needed_dirs: BTreeSet<String> = to.managed.iter().flat_map(|p| ancestors(p)).collect();
        let rootfses = [from.rootfs.as_deref(), to.rootfs.as_deref()];
        // What is at `p` now is kbuild's, or nothing: free for what goes there.
        let free = |p: &str| -> Result<bool, SwitchError> {
            Ok(match entry_below(fs, p)? {
                Entry::Missing => true,
                Entry::Directory => owned_dir(fs, p, from, &gone)?,
                _ => is_our_link(fs, p, &rootfses)?,
            })
        };
        // An original this switch adopts (a file, or one where a directory goes) is moved
        // aside before anything takes its place.
        let adopting = |p: &str| -> Result<bool, SwitchError> {
            Ok(to.adopted.contains(p)
                && !from.adopted.contains(p)
                && fs.entry(&adopted_path(p))? == Entry::Missing)
        };
        for d in &needed_dirs {
            let ok = match entry_below(fs, d)? {
                Entry::Missing | Entry::Directory => true,
                _ => (gone.contains(d) && is_our_link(fs, d, &rootfses)?) || adopting(d)?,
            };
            if !ok {
                return Ok(blocked(d, "a directory goes there"));
            }
        }
        for p in &to.managed {
            if !adopting(p)? && !free(p)? {
                return Ok(blocked(p, "kbuild's link goes there"));
            }
        }
        for p in from.adopted.difference(&to.adopted) {
            let kept = fs.entry(&adopted_path(p))? != Entry::Missing;
            if kept && !to.managed.contains(p) && !needed_dirs.contains(p) && !free(p)? {
                return Ok(blocked(
                    p,
                    &format!(
                        "the original adopted earlier, kept in `{}`, goes back there",
                        root.host(&adopted_path(p)).display()
                    ),
                ));
            }
        }
        Ok(None)
    };
    check().unwrap_or_else(Some)
}

/// Brings the root from `from` to `to`. Every step checks before it acts, so running this
/// again after a crash at any point finishes the job; running it with `from` and `to`
/// exchanged undoes it. A path that changes type (a link that becomes a directory, or the
/// reverse) is removed before it is created again, like a removed path followed by an added
/// one. A step never replaces what it did not make: it stops and names the path instead.
pub(crate) fn execute(root: &Root, from: &State, to: &State) -> Result<(), SwitchError> {
    let state = steps(&Beneath::open(root.dir())?, root, from, to)?;
    record(root, &state)
}

/// The steps of [`execute`] on `fs`; returns the state to record.
fn steps(fs: &dyn Disk, root: &Root, from: &State, to: &State) -> Result<State, SwitchError> {
    let current = format!("/{STATE_DIR}/current");
    let blocked = |p: &str, why: &str| SwitchError::Blocked {
        path: root.host(p),
        why: why.to_owned(),
    };
    let gone: BTreeSet<&String> = from.managed.difference(&to.managed).collect();
    let restores: BTreeSet<&String> = from.adopted.difference(&to.adopted).collect();
    let needed_dirs: BTreeSet<String> = to.managed.iter().flat_map(|p| ancestors(p)).collect();
    let rootfses = [from.rootfs.as_deref(), to.rootfs.as_deref()];
    // Paths that must be free of kbuild's entries before anything else happens: where the new
    // generation puts a link or a directory, and where an original comes back.
    let under = |p: &str, top: &str| p == top || p.starts_with(&format!("{top}/"));
    // (By the path and its ancestors: a few set lookups, whatever the number of paths.)
    let must_clear = |p: &str| {
        needed_dirs.contains(p)
            || std::iter::once(p.to_owned())
                .chain(ancestors(p))
                .any(|a| to.managed.contains(&a) || restores.contains(&a))
    };

    // 1. Clear the way: kbuild's links of removed paths that are where a directory, a link or
    //    a restored original goes, then the directories kbuild made there (deepest first).
    for p in &gone {
        if must_clear(p) && is_our_link(fs, p, &rootfses)? {
            fs.unlink(p)?;
            fs.fault("unlink")?;
        }
    }
    let mut created: Vec<&String> = from.created_dirs.union(&to.created_dirs).collect();
    created.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in &created {
        if !needed_dirs.contains(*d) && must_clear(d) && entry_below(fs, d)? == Entry::Directory {
            for name in fs.list(d)? {
                let tmp = format!("{d}/{name}");
                if is_temp_link(&name) && matches!(fs.entry(&tmp)?, Entry::Symlink(_)) {
                    fs.unlink(&tmp)?;
                }
            }
            let adopting = to.adopted.difference(&from.adopted).any(|a| under(d, a));
            if !fs.rmdir(d)? && !adopting {
                let names = fs.list(d)?.join("`, `");
                return Err(blocked(
                    d,
                    &format!(
                        "this directory kbuild made holds files that are not kbuild's (`{names}`), and a link goes in its place"
                    ),
                ));
            }
            if entry_below(fs, d)? == Entry::Missing {
                fs.fault("rmdir")?;
            }
        }
    }
    // 2. Move adopted originals aside (before anything is linked over them). Never over an
    //    earlier original: the rename refuses to replace.
    for p in to.adopted.difference(&from.adopted) {
        // Already kept (moved before a crash, or an undone switch's original that never left):
        // what is at the path now is not the original.
        if fs.entry(&adopted_path(p))? != Entry::Missing
            || matches!(entry_below(fs, p)?, Entry::Missing)
            || is_our_link(fs, p, &rootfses)?
        {
            continue;
        }
        fs.rename(p, &adopted_path(p)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                blocked(p, &e.to_string())
            } else {
                e.into()
            }
        })?;
        fs.fault("adopt")?;
    }
    // 3. Directories for new links, parents first.
    for d in &to.created_dirs {
        if !needed_dirs.contains(d) {
            continue;
        }
        match entry_below(fs, d)? {
            Entry::Directory => {}
            Entry::Missing => {
                fs.mkdir(d)?;
                fs.fault("mkdir")?;
            }
            _ => return Err(blocked(d, "a directory goes there")),
        }
    }
    // 4. The flip: one rename switches every path both generations manage.
    match &to.rootfs {
        Some(rootfs) => {
            if entry_below(fs, &current)? != Entry::Symlink(rootfs.clone()) {
                fs.replace_symlink(&current, rootfs)?;
                fs.fault("flip")?;
            }
        }
        // Undoing the first switch of a root: no flip point any more.
        None => {
            if matches!(entry_below(fs, &current)?, Entry::Symlink(_)) {
                fs.unlink(&current)?;
                fs.fault("flip")?;
            }
        }
    }
    // 5. Links for paths the new generation adds (or that were deleted by hand), and alias
    //    links whose text differs in the new generation (replaced by one rename).
    for p in &to.managed {
        let want = expected_link(to.rootfs.as_deref(), p);
        match entry_below(fs, p)? {
            Entry::Symlink(t) if t == want => {}
            Entry::Missing => {
                fs.replace_symlink(p, &want)?;
                fs.fault("link")?;
            }
            _ if is_our_link(fs, p, &rootfses)? => {
                fs.replace_symlink(p, &want)?;
                fs.fault("link")?;
            }
            _ => return Err(blocked(p, "kbuild's link goes there")),
        }
    }
    // 6. Links of paths no longer managed.
    for p in &gone {
        if is_our_link(fs, p, &rootfses)? {
            fs.unlink(p)?;
            fs.fault("unlink")?;
        }
    }
    // 7. Originals whose path is no longer managed come back. One that cannot (a file made by
    //    hand took its place) stops the switch: it stays recorded and kept.
    let mut still_kept = BTreeSet::new();
    for p in &restores {
        // Missing: already back (or gone: the plan said it is forgotten).
        if fs.entry(&adopted_path(p))? != Entry::Missing {
            if to.managed.contains(*p) || needed_dirs.contains(*p) {
                // Undoing a switch that adopted a path both generations manage: the original
                // stays kept (and recorded) rather than displace kbuild's link.
                still_kept.insert((*p).clone());
                continue;
            }
            if entry_below(fs, p)? != Entry::Missing {
                return Err(blocked(
                    p,
                    &format!(
                        "the original adopted earlier, kept in `{}`, goes back there",
                        root.host(&adopted_path(p)).display()
                    ),
                ));
            }
            fs.rename(&adopted_path(p), p)?;
            fs.fault("restore")?;
        }
        // Empty directories left under adopted/ by the restore go too (also when a crash
        // came between the two).
        for dir in ancestors(&adopted_path(p)) {
            if dir.len() <= format!("/{STATE_DIR}/adopted").len() || !fs.rmdir(&dir)? {
                break;
            }
        }
    }
    // 8. Directories kbuild created that no managed path needs any more, deepest first;
    //    a directory holding someone else's files stays.
    let needed: BTreeSet<String> = to
        .managed
        .iter()
        .chain(to.adopted.iter())
        .flat_map(|p| ancestors(p))
        .collect();
    let mut kept = BTreeSet::new();
    for d in created {
        if restores.iter().any(|r| under(d, r)) {
            // Cleared in step 1; what is there now is a restored original, the host's.
            continue;
        }
        if needed.contains(d) {
            kept.insert(d.clone());
        } else if entry_below(fs, d)? == Entry::Directory {
            if fs.rmdir(d)? {
                fs.fault("rmdir")?;
            } else {
                kept.insert(d.clone());
            }
        }
    }
    fs.sync_dir("etc")?;
    fs.sync_dir("usr/local/bin")?;
    let mut state = to.clone();
    state.created_dirs = kept;
    state.adopted.extend(still_kept);
    Ok(state)
}

/// 9. Records the new state, then retires the journal.
fn record(root: &Root, state: &State) -> Result<(), SwitchError> {
    let state_dir = root.state_dir();
    write_json(&state_dir.join("state.json"), state)?;
    fault::step("state written")?;
    fs_err::remove_file(state_dir.join("journal.json"))?;
    crate::fs::fsync_dir(&state_dir)?;
    Ok(())
}
