//! The roots registry (`store/.kbuild/roots/`): which roots switched from this store, so gc
//! keeps the generations they use.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::SwitchError;
use super::root::{Root, State, read_json};
use crate::store::Store;

/// Records the root in the store, so gc keeps its active generation.
pub(crate) fn register(store: &Store, root: &Root) -> io::Result<()> {
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
