//! The roots registry (`store/.kbuild/roots/`): which roots switched from this store, so gc
//! keeps the generations they use; and which store a root's record belongs to.
//!
//! A store is known by its id (`store/.kbuild/id`), not by its path: a root records the id
//! next to the store's path, so a store that was moved (`mv store /data/store`), reached
//! through a symlink or mounted elsewhere keeps its roots. A state written before ids existed
//! (state version 1) is matched by the store directory's inode, then by its rootfs object.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::beneath::{Beneath, Entry};
use super::root::{Root, State, read_json};
use super::{STATE_DIR, SwitchError};
use crate::generation;
use crate::store::{Store, StoreId, StorePath};

/// Which store a recorded state belongs to, seen from `store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// No store: the root is not managed (or kbuild never switched it).
    Nobody,
    /// This store, possibly recorded under another path (the store moved, or is reached
    /// through a symlink or another mount).
    Ours,
    /// Another store, last known at `path`.
    Theirs {
        path: PathBuf,
        /// Whether that store is still at `path` (false: moved away or deleted).
        there: bool,
    },
}

/// Whose `state` is: by store id; for a version-1 state (no id), by the store directory's
/// inode, and when its recorded store is gone, by whether its rootfs object is in `store`.
pub(crate) fn owner(store: &Store, state: &State) -> Owner {
    let Some(path) = &state.store else {
        return Owner::Nobody;
    };
    let theirs = |there| Owner::Theirs {
        path: path.clone(),
        there,
    };
    let ours = store.existing_id();
    if let (Some(id), Some(ours)) = (&state.store_id, &ours) {
        return if id == ours {
            Owner::Ours
        } else {
            theirs(StoreId::read(path).as_ref() == Some(id))
        };
    }
    // No id on one side (a version 1 state, or a store whose id file was lost).
    if same_dir(path, store.dir()) {
        return Owner::Ours;
    }
    if let (Some(a), Some(b)) = (StoreId::read(path), &ours) {
        return if a == *b { Owner::Ours } else { theirs(true) };
    }
    if path.join(".kbuild/version").exists() {
        return theirs(true);
    }
    match object_name(state.rootfs.as_deref()) {
        Some(o) if store.contains(&o) => Owner::Ours,
        _ => theirs(false),
    }
}

/// Whether two paths are one directory (same device and inode), however each is reached.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The store object a rootfs path names (its last component), whatever store path precedes it.
pub(crate) fn object_name(rootfs: Option<&Path>) -> Option<StorePath> {
    let name = rootfs?.file_name()?.to_str()?;
    StorePath::try_from(name.to_owned()).ok()
}

fn registry(store: &Store) -> PathBuf {
    store.bookkeeping().join("roots")
}

fn registration(store: &Store, root: &Root) -> Result<(PathBuf, Vec<u8>), SwitchError> {
    let key = blake3::hash(root.dir().as_os_str().as_encoded_bytes()).to_hex();
    let path = registry(store).join(format!("{}.json", &key[..32]));
    let body = serde_json::json!({ "root": root.dir(), "store_id": store.id()? });
    let mut bytes = serde_json::to_vec_pretty(&body).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok((path, bytes))
}

/// Records the root in the store (with the store's id), so gc keeps what it uses. Writes
/// only when the record is new or changed: a root already registered switches from a
/// read-only store.
pub(crate) fn register(store: &Store, root: &Root) -> Result<(), SwitchError> {
    let (path, bytes) = registration(store, root)?;
    let err = |source| SwitchError::Registry {
        root: root.dir().to_owned(),
        dir: registry(store),
        source,
    };
    let written = fs_err::create_dir_all(registry(store))
        .and_then(|()| crate::fs::write_if_changed(&path, &bytes).map(drop));
    match written {
        // A record an older kbuild wrote (no store id) serves gc as well: adding the id is
        // not worth refusing a switch from a read-only store.
        Err(_) if registered_already(store, root, &path) => Ok(()),
        other => other.map_err(err),
    }
}

/// Whether the registry already holds a record of `root` that gc reads as this store's.
fn registered_already(store: &Store, root: &Root, path: &Path) -> bool {
    let Ok(Some(v)) = read_json::<serde_json::Value>(path) else {
        return false;
    };
    let id = v.get("store_id").and_then(|i| i.as_str());
    v.get("root").and_then(|r| r.as_str()) == root.dir().to_str()
        && (id.is_none() || id == store.existing_id().as_ref().map(StoreId::as_str))
}

/// The refusal `register` would make, found without writing (for `--dry-run`): the
/// registry, or the directory it is created in, is not writable.
pub fn check_registry(store: &Store, root: &Root) -> Result<(), SwitchError> {
    if store.existing_id().is_none() {
        // The switch would first give the store its id (see `Store::id`).
        let path = store.bookkeeping().join("id");
        rustix::fs::access(store.bookkeeping(), rustix::fs::Access::WRITE_OK).map_err(|e| {
            crate::store::StoreError::Id {
                store: store.dir().to_owned(),
                path,
                source: io::Error::from(e),
            }
        })?;
    } else {
        let (path, _) = registration(store, root)?;
        if registered_already(store, root, &path) {
            return Ok(());
        }
    }
    let dir = registry(store);
    let probe = if dir.is_dir() {
        dir.clone()
    } else {
        store.bookkeeping()
    };
    rustix::fs::access(&probe, rustix::fs::Access::WRITE_OK).map_err(|e| SwitchError::Registry {
        root: root.dir().to_owned(),
        dir,
        source: io::Error::from(e),
    })
}

/// The generation of `store` active on `root` (profile, number), if the root is managed from
/// this store.
pub fn active_generation(store: &Store, root: &Root) -> Option<(String, u64)> {
    root.state()
        .ok()
        .filter(|s| owner(store, s) == Owner::Ours)
        .and_then(|s| Some((s.profile_name().to_owned(), s.generation?)))
}

/// The registered roots whose recorded active generation is `number` of `profile` (what a
/// repair's help names: such a root must switch away before gc can drop the generation).
pub fn roots_on(store: &Store, profile: &str, number: u64) -> Vec<PathBuf> {
    registered_roots(store)
        .into_iter()
        .filter(|(_, root, _)| {
            root.state()
                .is_ok_and(|s| s.generation == Some(number) && s.profile_name() == profile)
        })
        .map(|(_, root, _)| root.dir().to_owned())
        .collect()
}

/// The roots registered with this store: (registry file, root, the store id it recorded).
fn registered_roots(store: &Store) -> Vec<(PathBuf, Root, Option<StoreId>)> {
    let Ok(entries) = std::fs::read_dir(registry(store)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let v: serde_json::Value = read_json(&e.path()).ok()??;
            let r = v.get("root")?.as_str()?;
            let id = v
                .get("store_id")
                .and_then(|i| serde_json::from_value(i.clone()).ok());
            Some((e.path(), Root::new(Path::new(r)), id))
        })
        .collect()
}

/// Forgets registered roots that no longer exist or are managed from another store now, and
/// records copied in from another store (another id). gc calls this under the exclusive store
/// lock. Returns their paths.
///
/// With `dry_run` the registrations stay: only the list of what would be forgotten.
pub fn forget_stale_roots(store: &Store, dry_run: bool) -> Result<Vec<PathBuf>, SwitchError> {
    let ours = store.existing_id();
    let mut out = Vec::new();
    for (file, root, id) in registered_roots(store) {
        let copied = matches!((&id, &ours), (Some(a), Some(b)) if a != b);
        let recorded_ours = root.state().is_ok_and(|s| owner(store, &s) == Owner::Ours);
        // A root whose record cannot be read is still ours while its flip point resolves
        // into this store.
        let ours_still = root.dir().is_dir()
            && !copied
            && (recorded_ours
                || root.journal().is_ok_and(|j| j.is_some())
                || current_object(store, &root, false).is_some());
        if !ours_still {
            if !dry_run {
                fs_err::remove_file(file)?;
            }
            out.push(root.dir().to_owned());
        }
    }
    Ok(out)
}

/// What the registered roots still need from this store; gc never deletes any of it.
#[derive(Debug, Default)]
pub struct InUse {
    /// Generations (profile, number) a root is on, or goes to or from in an interrupted switch.
    pub generations: BTreeSet<(String, u64)>,
    /// Their rootfs objects, and the one each root's `current` link resolves to.
    pub objects: BTreeSet<StorePath>,
}

/// What this store's registered roots use: the active generation of every root that switched
/// from it, both ends of an interrupted switch (its journal), the last generation that passed
/// its health gate (`health.json`), and the rootfs object each
/// root's `etc/.kbuild/current` resolves to in this store — known by the store's id and the
/// object's name, not by the path the link spells (the store may have moved since).
pub fn in_use(store: &Store) -> Result<InUse, SwitchError> {
    in_use_without(store, &[])
}

/// [`in_use`], leaving out the roots at `skip` (those a gc dry run would forget).
pub fn in_use_without(store: &Store, skip: &[PathBuf]) -> Result<InUse, SwitchError> {
    let mut out = InUse::default();
    for (_, root, _) in registered_roots(store) {
        if skip.iter().any(|s| s == root.dir()) {
            continue;
        }
        let mut states: Vec<State> = root.state().into_iter().collect();
        if let Ok(Some(j)) = root.journal() {
            states.push(j.from);
            states.push(j.to);
        }
        let ours: Vec<&State> = states
            .iter()
            .filter(|s| owner(store, s) == Owner::Ours)
            .collect();
        out.generations.extend(
            ours.iter()
                .filter_map(|s| Some((s.profile_name().to_owned(), s.generation?))),
        );
        out.objects
            .extend(ours.iter().filter_map(|s| object_name(s.rootfs.as_deref())));
        // The generation a failed health gate goes back to (`health.json`): a rollback
        // target must not be collected while the root may need it.
        if !ours.is_empty()
            && let Ok(Some(good)) =
                super::health::record(&root).map(|r| r.and_then(|r| r.last_good))
        {
            if let Ok(Some(g)) = generation::get(store, &good.profile, good.generation) {
                out.objects.insert(g.rootfs.clone());
            }
            out.generations.insert((good.profile, good.generation));
        }
        if let Some(o) = current_object(store, &root, !ours.is_empty()) {
            out.objects.insert(o);
        }
    }
    out.objects.retain(|o| store.contains(o));
    for g in generation::list_all(store)? {
        if out.objects.contains(&g.rootfs) {
            out.generations.insert((g.profile, g.number));
        }
    }
    Ok(out)
}

/// The object of this store the root's flip point resolves to: the link's last component,
/// when the directory before it is this store (by id or inode), or — the link dangling since
/// the store moved — when the root's record belongs to this store.
fn current_object(store: &Store, root: &Root, recorded_ours: bool) -> Option<StorePath> {
    let fs = Beneath::open(root.dir()).ok()?;
    let Entry::Symlink(target) = fs.entry(&format!("/{STATE_DIR}/current")).ok()? else {
        return None;
    };
    let dir = target.parent()?;
    let ours = match (StoreId::read(dir), store.existing_id()) {
        (Some(a), Some(b)) => a == b,
        _ if same_dir(dir, store.dir()) => true,
        _ => !dir.exists() && recorded_ours,
    };
    ours.then(|| object_name(Some(&target))).flatten()
}

/// A root's flip point that no longer resolves because the store it points into moved: the
/// problem line for `kbuild verify --root`, naming the switch that re-points it.
pub fn moved_store(store: &Store, root: &Root) -> Option<String> {
    let state = root.state().ok()?;
    if owner(store, &state) != Owner::Ours {
        return None;
    }
    let fs = Beneath::open(root.dir()).ok()?;
    let Entry::Symlink(target) = fs.entry(&format!("/{STATE_DIR}/current")).ok()? else {
        return None;
    };
    let object = object_name(Some(&target))?;
    if target.exists() || !store.contains(&object) {
        return None;
    }
    let generation = state.generation?;
    Some(format!(
        "/{STATE_DIR}/current points into `{}`, where the store no longer is (it is at `{}` now): `kbuild switch {generation} --store {} --root {}` re-points it",
        target.parent()?.display(),
        store.canonical_dir().display(),
        crate::unit_name::shell_quote(&store.canonical_dir().display().to_string()),
        crate::unit_name::shell_quote(&root.dir().display().to_string()),
    ))
}
