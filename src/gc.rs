//! `kbuild gc`: drop old generations and every object no kept generation reaches.
//!
//! Runs under the exclusive store lock, so no build (shared lock) or switch (shared lock)
//! is in progress: an object a build is producing or a switch is activating is never
//! deleted, and leftover `.tmp-*` entries are known to be abandoned.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::activate::{self, SwitchError};
use crate::generation;
use crate::observe::Observer;
use crate::store::{LockMode, Store, StorePath};

#[derive(Debug, Default)]
pub struct Report {
    /// (profile, number) of each generation removed.
    pub generations_removed: Vec<(String, u64)>,
    pub objects_removed: Vec<StorePath>,
    /// Bytes whose last link was removed.
    pub bytes_freed: u64,
    pub temp_removed: usize,
    /// Registered roots that are gone or managed from another store now.
    pub roots_forgotten: Vec<std::path::PathBuf>,
    /// Kept input archives left in the store (pinned by a remaining generation).
    pub archives_kept: usize,
    /// Their size in bytes: what offline rebuilds cost in disk space.
    pub archive_bytes: u64,
    /// Kept input archives deleted (no remaining generation pins them, or all were dropped).
    pub archives_removed: usize,
}

/// What gc does with kept input archives (fixed-output objects named by their pin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Archives {
    /// Keep each archive while a remaining generation's inputs pin it (the default): those
    /// generations can be rebuilt, repaired or extended offline.
    #[default]
    WhilePinned,
    /// Delete every kept archive (`kbuild gc --drop-archives`): builds fetch again.
    DropAll,
}

/// Removes generations beyond the newest `keep` of each profile (of `only`, when given; never one a registered root uses or resolves
/// to, see [`activate::in_use`]), then every object unreachable from the remaining
/// generations and the objects roots use.
/// Crash-safe: an object is renamed off its name (and the rename made durable) before its
/// contents are deleted, and the next gc deletes what a killed one left.
///
/// Kept input archives follow `archives`: by default one stays while a remaining generation
/// pins it (they are not part of any rootfs, so reachability alone would always drop them).
///
/// With `dry_run` nothing is written or removed: the report lists what would go.
pub fn gc(
    store: &Store,
    keep: Option<usize>,
    only: Option<&str>,
    archives: Archives,
    dry_run: bool,
    observer: &dyn Observer,
) -> Result<Report, SwitchError> {
    // A v1 store read in place (it cannot be written) can be looked at, not collected.
    if !dry_run {
        store.require_writable_layout()?;
    }
    let _lock = store.lock(LockMode::Exclusive, observer)?;
    let mut report = Report {
        roots_forgotten: activate::forget_stale_roots(store, dry_run)?,
        ..Report::default()
    };
    let in_use = activate::in_use_without(store, &report.roots_forgotten)?;

    if let Some(keep) = keep {
        // `--keep N` keeps the newest N of every profile (or of the one asked for): each
        // host keeps its own history.
        let profiles = match &only {
            Some(p) => vec![(*p).to_owned()],
            None => generation::profiles(store)?,
        };
        for profile in profiles {
            let gens = generation::list(store, &profile)?;
            let cutoff = gens.len().saturating_sub(keep);
            for g in &gens[..cutoff] {
                if in_use.generations.contains(&(profile.clone(), g.number)) {
                    continue;
                }
                if !dry_run {
                    fs_err::remove_file(generation::record_path(store, &profile, g.number))?;
                }
                report.generations_removed.push((profile.clone(), g.number));
            }
        }
    }
    // Live set: every profile's kept generations' rootfs objects and what they reference.
    let mut live: BTreeSet<StorePath> = BTreeSet::new();
    // The generations left (a dry run removed none: it skips those it would).
    let left: Vec<generation::Generation> = generation::list_all(store)?
        .into_iter()
        .filter(|g| {
            !report
                .generations_removed
                .iter()
                .any(|(p, n)| *p == g.profile && *n == g.number)
        })
        .collect();
    let mut stack: Vec<StorePath> = left
        .iter()
        .map(|g| g.rootfs.clone())
        .chain(in_use.objects)
        .collect();
    while let Some(p) = stack.pop() {
        if !live.insert(p.clone()) {
            continue;
        }
        if let Some(meta) = store.meta(&p)? {
            stack.extend(meta.references);
        }
    }
    let kept = store.kept_objects()?;
    let pinned: BTreeSet<String> = if archives == Archives::WhilePinned {
        left.into_iter()
            .flat_map(|g| g.inputs.into_values())
            .collect()
    } else {
        BTreeSet::new()
    };
    for (p, pin) in &kept {
        if pinned.contains(&pin.key()) {
            live.insert(p.clone());
            report.archives_kept += 1;
            report.archive_bytes += store.path_of(p).symlink_metadata().map_or(0, |m| m.len());
        } else {
            report.archives_removed += 1;
        }
    }
    // Leftovers first (a killed build's scratch, objects a killed gc had already renamed off
    // their names, objects a build set aside): the exclusive lock says they are abandoned.
    let mut temps = Vec::new();
    for e in fs_err::read_dir(store.dir())? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            if dry_run {
                temps.push(e.path());
            } else {
                report.bytes_freed += remove_counting(&e.path())?;
            }
            report.temp_removed += 1;
        }
    }
    // Every doomed object leaves its name in one rename, and the renames are durable, before
    // any of its contents go: killed at any point, gc leaves each name holding the whole
    // object or nothing.
    let mut doomed = Vec::new();
    if dry_run {
        let mut paths = temps;
        for o in crate::store::verify::objects(store)? {
            if !live.contains(&o) {
                paths.push(store.path_of(&o));
                report.objects_removed.push(o);
            }
        }
        report.bytes_freed = count(&paths)?;
        return Ok(report);
    }
    for o in crate::store::verify::objects(store)? {
        if live.contains(&o) {
            continue;
        }
        let trash = store.dir().join(format!(".tmp-gc-{o}"));
        crate::fs::remove_tree(&trash)?;
        fs_err::rename(store.path_of(&o), &trash)?;
        doomed.push((o, trash));
    }
    store.sync_dir()?;
    // Their metadata and index entries (a name without an object is a miss for builds).
    let removed: Vec<StorePath> = doomed.iter().map(|(o, _)| o.clone()).collect();
    store.forget(&removed)?;
    store.forget_orphans()?;
    for (o, trash) in doomed {
        report.bytes_freed += remove_counting(&trash)?;
        report.objects_removed.push(o);
    }
    store.sync_dir()?;
    Ok(report)
}

/// The bytes removing every tree of `paths` would free: files all of whose links are inside
/// them (objects share files by hard links), as [`remove_counting`] finds them one by one.
fn count(paths: &[std::path::PathBuf]) -> io::Result<u64> {
    let mut files: std::collections::HashMap<(u64, u64), (u64, u64, u64)> = Default::default();
    for path in paths {
        for entry in crate::fs::walk(path) {
            let entry = entry.map_err(crate::fs::walk_error)?;
            let m = fs_err::symlink_metadata(entry.path())?;
            if m.is_file() {
                files
                    .entry((m.dev(), m.ino()))
                    .or_insert((m.nlink(), m.len(), 0))
                    .2 += 1;
            }
        }
    }
    Ok(files
        .values()
        .filter(|(nlink, _, seen)| seen >= nlink)
        .map(|(_, len, _)| len)
        .sum())
}

/// Removes a tree, returning the bytes of files whose last link went with it. A symlink,
/// `path` itself included, is unlinked and never followed: a `.tmp-*` entry planted as a
/// link to elsewhere costs nothing outside the store. Errors name their path.
pub(crate) fn remove_counting(path: &Path) -> io::Result<u64> {
    crate::fs::make_writable(path).ok();
    let mut freed = 0;
    for entry in crate::fs::walk(path).contents_first(true) {
        let entry = entry.map_err(crate::fs::walk_error)?;
        let m = fs_err::symlink_metadata(entry.path())?;
        if entry.file_type().is_dir() {
            fs_err::remove_dir(entry.path())?;
        } else {
            if m.is_file() && m.nlink() == 1 {
                freed += m.len();
            }
            fs_err::remove_file(entry.path())?;
        }
    }
    Ok(freed)
}
