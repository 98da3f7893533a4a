//! What the disk alone tells about a root whose record is missing or stale: `state.json`
//! moved away (it was corrupt) or never written, or `journal.json` moved away mid-switch (the
//! record then names the generation the switch came from). kbuild's own links (relative,
//! through the flip point), the generation the flip point names, the directories holding
//! only kbuild's links, and the originals kept in `adopted/` are recognised, so that nothing
//! kbuild made is called hand-made and no kept original is ever stranded.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::beneath::Entry;
use super::disk::Disk;
use super::plan::{adopted_path, is_temp_link, rootfs_files};
use super::root::{State, ancestors, entry_below, is_our_link};
use super::{STATE_DIR, SwitchError, roots};
use crate::generation::{self, Generation};
use crate::store::Store;

/// `recorded` completed from the disk (no journal is pending). Returns the state and whether
/// it was rebuilt (the record was missing, or named another rootfs than the flip point: the
/// switch then writes it again even when nothing else changes).
pub(crate) fn complete(
    store: &Store,
    fs: &dyn Disk,
    mut recorded: State,
    target: Option<&Generation>,
) -> Result<(State, bool), SwitchError> {
    let kept = unrecorded_originals(fs, &recorded.adopted)?;
    recorded.adopted.extend(kept);
    let Some((rootfs, generation)) = flip_point(store, fs, target, recorded.profile_name())? else {
        return Ok((recorded, false));
    };
    // A managed link that is a directory holding only kbuild's links (or nothing) now: the
    // directories of a type change cut short (its journal moved away). They are kbuild's.
    let before = recorded.created_dirs.len();
    let old = recorded.rootfs.clone().filter(|p| p.is_dir());
    let rootfses = [Some(rootfs.as_path()), old.as_deref()];
    for p in recorded.managed.clone() {
        our_dirs(fs, &p, &rootfses, &mut recorded.created_dirs)?;
    }
    let grew = recorded.created_dirs.len() != before;
    let recorded_object = roots::object_name(recorded.rootfs.as_deref());
    let stale = recorded.rootfs.is_none()
        || (recorded_object != roots::object_name(Some(&rootfs))
            && roots::owner(store, &recorded) == roots::Owner::Ours);
    if !stale {
        return Ok((recorded, grew));
    }
    // kbuild's links: of the rootfs the flip point names, and of the recorded generation
    // (a switch cut short keeps some of those).
    let mut candidates = rootfs_files(&rootfs)?;
    candidates.extend(recorded.managed.iter().cloned());
    if let Some(old) = &old {
        candidates.extend(rootfs_files(old)?);
    }
    let mut managed = BTreeSet::new();
    for p in candidates {
        if is_our_link(fs, &p, &rootfses)? {
            managed.insert(p);
        }
    }
    let mut created_dirs = recorded.created_dirs.clone();
    for d in managed.iter().flat_map(|p| ancestors(p)) {
        if !created_dirs.contains(&d) && only_our_links(fs, &d, &rootfses)? {
            created_dirs.insert(d);
        }
    }
    let state = State {
        version: 2,
        store: Some(store.canonical_dir()),
        store_id: store.existing_id(),
        profile: generation
            .as_ref()
            .and_then(|(p, _)| super::root::profile_field(p)),
        generation: generation.map(|(_, n)| n),
        rootfs: Some(rootfs),
        managed,
        created_dirs,
        adopted: recorded.adopted,
    };
    Ok((state, true))
}

/// The rootfs the flip point names and its generation (profile, number), if known.
type FlipPoint = Option<(PathBuf, Option<(String, u64)>)>;

/// The rootfs `etc/.kbuild/current` names, when it is an object of this store, and the
/// generation it belongs to (`target` when it is that one's, else the newest that uses it).
fn flip_point(
    store: &Store,
    fs: &dyn Disk,
    target: Option<&Generation>,
    profile: &str,
) -> Result<FlipPoint, SwitchError> {
    let Entry::Symlink(t) = fs.entry(&format!("/{STATE_DIR}/current"))? else {
        return Ok(None);
    };
    let Some(object) = roots::object_name(Some(&t)) else {
        return Ok(None);
    };
    let here = store.canonical_dir().join(object.as_str());
    if !store.contains(&object) || !same_dir(&t, &here) {
        return Ok(None);
    }
    // The root's own profile first: the same rootfs may be a generation of several.
    let newest_in = |gens: Vec<Generation>| {
        gens.into_iter()
            .filter(|g| g.rootfs == object)
            .max_by_key(|g| g.number)
            .map(|g| (g.profile, g.number))
    };
    let generation = match target {
        Some(g) if g.rootfs == object => Some((g.profile.clone(), g.number)),
        _ => match newest_in(generation::list(store, profile)?) {
            Some(found) => Some(found),
            None => newest_in(generation::list_all(store)?),
        },
    };
    Ok(Some((here, generation)))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_dir() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Adds `dir` and the directories below it to `out` when it holds only kbuild's links.
fn our_dirs(
    fs: &dyn Disk,
    dir: &str,
    rootfses: &[Option<&Path>],
    out: &mut BTreeSet<String>,
) -> io::Result<()> {
    if !only_our_links(fs, dir, rootfses)? {
        return Ok(());
    }
    out.insert(dir.to_owned());
    for name in fs.list(dir)? {
        let child = format!("{dir}/{name}");
        if fs.entry(&child)? == Entry::Directory {
            our_dirs(fs, &child, rootfses, out)?;
        }
    }
    Ok(())
}

/// Whether directory `dir` holds nothing but kbuild's links and directories of the same kind
/// (then kbuild made it, or may remove it when it is emptied: it holds nothing of anyone else).
fn only_our_links(fs: &dyn Disk, dir: &str, rootfses: &[Option<&Path>]) -> io::Result<bool> {
    if entry_below(fs, dir)? != Entry::Directory {
        return Ok(false);
    }
    for name in fs.list(dir)? {
        let child = format!("{dir}/{name}");
        let ours = match fs.entry(&child)? {
            Entry::Directory => only_our_links(fs, &child, rootfses)?,
            Entry::Symlink(_) if is_temp_link(&name) => true,
            Entry::Symlink(_) => is_our_link(fs, &child, rootfses)?,
            _ => false,
        };
        if !ours {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The originals kept in `etc/.kbuild/adopted/` that `recorded` does not name (files and
/// symlinks, as paths of the root); those under a recorded path (a
/// directory adopted whole) belong to it.
pub(crate) fn unrecorded_originals(
    fs: &dyn Disk,
    recorded: &BTreeSet<String>,
) -> io::Result<BTreeSet<String>> {
    let top = format!("/{STATE_DIR}/adopted");
    let mut out = BTreeSet::new();
    if entry_below(fs, &top)? != Entry::Directory {
        return Ok(out);
    }
    let mut stack = vec![String::new()];
    while let Some(path) = stack.pop() {
        if recorded.contains(&path) {
            continue;
        }
        // (An empty directory there is what a restore leaves on its way: not an original.)
        for name in fs.list(&format!("{top}{path}"))? {
            let child = format!("{path}/{name}");
            if recorded.contains(&child) {
                continue;
            }
            match fs.entry(&adopted_path(&child))? {
                Entry::Directory => stack.push(child),
                _ => {
                    out.insert(child);
                }
            }
        }
    }
    Ok(out)
}
