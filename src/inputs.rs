//! What `kbuild inputs` shows: each input the recipes declare (URL, pin, whether its
//! archive is kept in the store), and an input archive's members.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::build::{BuildError, BuildRequest, Context};
use crate::lockfile::LockFile;
use crate::observe::Observer;
use crate::pin::Pin;
use crate::recipe;
use crate::store::{LockMode, Store};
use crate::unpack::{self, Member};

/// One input of the recipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    pub name: String,
    /// Primary URL first, then mirrors.
    pub urls: Vec<String>,
    /// The pin (from the lock file, or the recipe); `None` if unpinned.
    pub pin: Option<Pin>,
    /// The pinned size, when the lock knows it.
    pub size: Option<u64>,
    /// The kept archive in the store, when there is one.
    pub kept: Option<PathBuf>,
}

/// Every input declared by the recipes in the recipes directory, by name.
pub fn list(ctx: &Context) -> Result<Vec<InputInfo>, BuildError> {
    let all = recipe::available(&ctx.recipes_dir);
    let set = recipe::load(&ctx.recipes_dir, &all)?;
    let lock = LockFile::load(&ctx.lock_path)?;
    // Listing never creates a store: without one, nothing is kept.
    let store = Store::open_existing(&ctx.store_dir).ok();
    let mut out = Vec::new();
    for (name, decl) in &set.inputs {
        // As a build decides (see `build::plan_inputs`): the lock's pin for the same URLs,
        // else the recipe's, else the lock's even for other URLs (a pin survives a new
        // mirror or a moved file).
        let entry = lock.inputs.get(name);
        let locked = entry.filter(|l| l.urls == decl.urls);
        let pin = locked
            .map(|l| l.pin.clone())
            .or_else(|| decl.pin.clone())
            .or_else(|| entry.map(|l| l.pin.clone()));
        let kept = match (&store, &pin) {
            (Some(store), Some(pin)) => store.kept_object(pin).map(|o| store.path_of(&o)),
            _ => None,
        };
        out.push(InputInfo {
            name: name.clone(),
            urls: decl.urls.clone(),
            pin,
            size: locked.and_then(|l| l.size),
            kept,
        });
    }
    Ok(out)
}

/// The members of input `name`'s archive, with the decoder a build uses: read from the
/// archive the store keeps for its pin when there is one, else fetched from its URLs (or
/// the override) and checked against its pin. An archive fetched is kept in the store, as a
/// build keeps it, so the build that follows does not fetch it again.
pub fn members(
    ctx: &Context,
    name: &str,
    overrides: &BTreeMap<String, String>,
    observer: &dyn Observer,
) -> Result<Vec<Member>, BuildError> {
    let all = recipe::available(&ctx.recipes_dir);
    let set = recipe::load(&ctx.recipes_dir, &all)?;
    let known = || set.inputs.keys().cloned().collect::<Vec<_>>();
    if !set.inputs.contains_key(name) {
        return Err(BuildError::UnknownInput {
            name: name.to_owned(),
            known: known(),
        });
    }
    if let Some(other) = overrides.keys().find(|n| !set.inputs.contains_key(*n)) {
        return Err(BuildError::UnknownOverride {
            name: other.clone(),
            known: known(),
        });
    }
    let lock = LockFile::load(&ctx.lock_path)?;
    let req = BuildRequest {
        recipes: all,
        sets: Vec::new(),
        overrides: overrides.clone(),
        locked: false,
        write_lock: false,
        profile: None,
        hosts: Vec::new(),
        read_overrides: BTreeMap::new(),
    };
    let plans = crate::build::plan_inputs(ctx, &set, &lock, &req)?;
    let plan = &plans[name];
    let store = Store::open(&ctx.store_dir)?;
    let _guard = store.lock(LockMode::Shared, observer)?;
    let scratch = store.scratch()?;
    let kept = match (&plan.pin, plan.overridden) {
        (Some(pin), false) => store.kept_object(pin),
        _ => None,
    };
    let urls = match &kept {
        Some(object) => vec![format!(
            "file://{}",
            std::path::absolute(store.path_of(object))?.display()
        )],
        None => plan.urls.clone(),
    };
    let unpacked = unpack::fetch_and_unpack(
        &unpack::Request {
            input: name,
            urls: &urls,
            expected: plan.pin.as_ref(),
            algo: plan.algo,
            wanted: &[],
            offline: ctx.offline,
            max_unpacked: ctx.max_unpacked,
            expected_size: plan.size,
            keep: kept.is_none(),
        },
        scratch.path(),
        observer,
    )
    .map_err(|e| match &kept {
        Some(_) => crate::build::from_upstream(e, &urls[0], plan.lock_urls.first()).into(),
        None => crate::build::recipe_pin_error(e, plan),
    })?;
    if let Some(archive) = &unpacked.kept {
        let file_name = plan
            .lock_urls
            .first()
            .map(|u| crate::build::archive_name(u))
            .unwrap_or_else(|| "input".into());
        store.add_kept(archive, &unpacked.pin, &file_name, unpacked.size)?;
    }
    Ok(unpacked.members)
}
