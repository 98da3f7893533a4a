//! Activation: putting a generation into effect on a root, atomically and recoverably.
//!
//! ```text
//! <root>/etc/.kbuild/
//! ├── current          → /abs/store/<hash>-rootfs-master   (the flip point)
//! ├── state.json       active generation, managed paths, directories kbuild created, adopted files
//! ├── journal.json     present only while a switch is in progress (the target state)
//! ├── health.json      the last generation that passed its health gate; a gate in progress
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
//! interrupted switch (or undoing it when its target cannot be reached). A path may change
//! type between generations (a link in one, a directory in the other). The algorithm is
//! described in `docs/switch.md`.
//!
//! One file per concept: `root` (the root and its `state.json`), `plan` (old → new, read
//! only), `journal` (recording a switch and the idempotent steps that carry it out),
//! `prerequisites` (host files checked, never copied), `roots` (the store's registry of
//! roots, for gc), `units` (what a unit reads; start/stop/restart), `systemctl` (running
//! them), `health` (the health gate after the unit actions, and `health.json`: the last
//! generation that passed it, a gate in progress), `drift` (a root against its record), `reconstruct` (a lost or stale record
//! completed from the disk), `beneath` (no-follow file operations), `fault`
//! (crash injection for tests). This file ties them together: resolve, plan, apply.

pub mod beneath;
mod disk;
mod drift;
mod error;
pub mod fault;
pub mod health;
mod journal;
mod plan;
mod prerequisites;
mod reconstruct;
mod root;
mod roots;
mod systemctl;
pub mod units;

use crate::generation;
use crate::observe::Observer;
use crate::store::{FileLock, LockMode, Store};

pub use drift::drift;
pub use error::SwitchError;
pub use journal::{Recovered, recover};
pub use plan::{Plan, plan};
pub use prerequisites::{ExposedKey, Missing, Prerequisite, Prerequisites, Status};
pub use root::{Root, State};
pub use roots::{
    InUse, active_generation, check_registry, forget_stale_roots, in_use, in_use_without,
    moved_store, roots_on,
};
pub use systemctl::{ActionFailure, Failed, run_systemctl, systemctl_commands, systemd_is_live};
pub use units::UnitAction;

/// Where kbuild keeps its state inside a root.
const STATE_DIR: &str = "etc/.kbuild";

/// The outcome of an applied switch.
#[derive(Debug)]
pub struct Applied {
    pub generation: u64,
    pub changed_anything: bool,
}

/// Which generation a switch goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest generation of the profile (`kbuild switch`).
    Newest,
    /// A given generation of the profile (`kbuild switch N`).
    Number(u64),
    /// The one before the active generation, in the root's profile (`kbuild rollback`).
    Previous,
}

/// Which profile a switch reads its generation in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Choice {
    /// The root's own profile (recorded at its first switch; `default` when none is).
    #[default]
    Root,
    /// `--host NAME`: the host's profile, for a root that has none yet or is that host's.
    Host(String),
    /// `--profile NAME`: that profile, also to move a root to another profile's generations.
    Profile(String),
}

/// The profile `choice` designates for a root in `state`. `--host` never moves a root that
/// belongs to another profile (the wrong host's settings would land on it): that takes
/// `--profile`, said so in the error.
pub fn choose_profile(root: &Root, state: &State, choice: &Choice) -> Result<String, SwitchError> {
    let own = state.profile_name();
    let managed = state.generation.is_some();
    match choice {
        Choice::Root => Ok(own.to_owned()),
        Choice::Profile(p) => Ok(p.clone()),
        Choice::Host(h) if !managed || h == own => Ok(h.clone()),
        Choice::Host(h) => Err(SwitchError::OtherProfile {
            root: root.dir().to_owned(),
            own: own.to_owned(),
            asked: h.clone(),
        }),
    }
}

/// The generation `target` designates in `profile` for a root in `state` now.
fn resolve_in(
    store: &Store,
    root: &Root,
    state: &State,
    profile: &str,
    target: Target,
) -> Result<generation::Generation, SwitchError> {
    let number = match target {
        Target::Newest => newest(store, profile)?,
        Target::Number(n) => n,
        Target::Previous => previous_of(store, root, state)?,
    };
    let profile = if target == Target::Previous {
        state.profile_name()
    } else {
        profile
    };
    generation::get(store, profile, number)?.ok_or_else(|| no_such(store, profile, number))
}

/// The error for generation `number` missing from `profile`, naming the profiles that have it.
fn no_such(store: &Store, profile: &str, number: u64) -> SwitchError {
    let elsewhere = generation::profiles(store)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p != profile && generation::get(store, p, number).ok().flatten().is_some())
        .collect();
    SwitchError::NoSuchGeneration {
        number,
        profile: profile.to_owned(),
        elsewhere,
    }
}

/// The generation `target` designates for `root` now, read in the profile `choice` names.
pub fn resolve(
    store: &Store,
    root: &Root,
    target: Target,
    choice: &Choice,
) -> Result<generation::Generation, SwitchError> {
    let fs = beneath::Beneath::open(root.dir())?;
    let state = reconstruct::complete(store, &fs, root.state()?, None)?.0;
    let profile = choose_profile(root, &state, choice)?;
    resolve_in(store, root, &state, &profile, target)
}

/// The plan a switch to `target` would carry out; changes nothing (`--dry-run`). After an
/// interrupted switch, its recovery is simulated first — the same decision (complete or
/// undo) and the same steps the real command takes — and the plan is made against the root
/// as recovery leaves it, so the dry run refuses exactly where the switch would.
pub fn dry_run(
    store: &Store,
    root: &Root,
    target: Target,
    choice: &Choice,
    adopt: bool,
) -> Result<Plan, SwitchError> {
    let fs = beneath::Beneath::open(root.dir())?;
    let Some(j) = root.journal()? else {
        let g = resolve(store, root, target, choice)?;
        check_objects(store, &g)?;
        return plan::plan_on(&fs, store, root, &g, adopt, None);
    };
    let (r, state, sim) = journal::recovery_preview(&fs, store, root, j)?;
    let profile = choose_profile(root, &state, choice)?;
    let g = resolve_in(store, root, &state, &profile, target)?;
    check_objects(store, &g)?;
    let after = plan::AfterRecovery {
        state,
        undone: r.undone.is_some(),
    };
    plan::plan_on(&sim, store, root, &g, adopt, Some(after))
}

/// Refuses a generation whose objects fail the integrity check a build applies (see
/// [`crate::store::verify::check_unmodified_closure`]): activating a modified object would
/// put unknown content into the root. Checked before anything in the root changes.
fn check_objects(store: &Store, g: &generation::Generation) -> Result<(), SwitchError> {
    crate::store::verify::check_unmodified_closure(store, &g.rootfs)?;
    Ok(())
}

/// Switches `root` to `target` (a [`Session`] of one switch). An interrupted switch is
/// completed (or undone) first and reported to `recovered`, whatever happens next.
/// `before_journal` runs once the plan is accepted and before the switch's journal is written
/// (the health gate records itself as pending there: a journal that recovery completes never
/// exists without it); `before_flip` runs after the journal and before the root changes (the
/// CLI stops removed units there, while their unit files still exist). Neither runs for a
/// switch that changes no file.
// The target and its profile are separate arguments, as the CLI reads them.
#[allow(clippy::too_many_arguments)]
pub fn switch(
    store: &Store,
    root: &Root,
    target: Target,
    choice: &Choice,
    adopt: bool,
    observer: &dyn Observer,
    recovered: &dyn Fn(&Recovered),
    before_journal: &dyn Fn(&Plan) -> Result<(), SwitchError>,
    before_flip: &dyn Fn(&Plan) -> Result<(), SwitchError>,
) -> Result<(Plan, Applied), SwitchError> {
    Session::open(store, root, observer)?.switch(
        target,
        choice,
        adopt,
        recovered,
        before_journal,
        before_flip,
    )
}

/// A root held for a sequence of switches: its exclusive lock and the store's shared lock
/// are taken once, so that a switch, its health gate and the rollback a failed gate makes
/// happen with no other kbuild acting on the root in between (a gate can wait for minutes).
pub struct Session<'a> {
    store: &'a Store,
    root: &'a Root,
    _root_lock: FileLock,
    // Shared store lock: gc cannot delete the generation while it is being activated.
    _store_lock: FileLock,
}

impl<'a> Session<'a> {
    /// Takes the root's lock, then the store's (shared), waiting and saying so when busy.
    pub fn open(
        store: &'a Store,
        root: &'a Root,
        observer: &dyn Observer,
    ) -> Result<Session<'a>, SwitchError> {
        let root_lock = root.lock(observer)?;
        let store_lock = store.lock(LockMode::Shared, observer)?;
        // A store written by an older kbuild gets its id now, so the new state records it.
        store.id()?;
        Ok(Session {
            store,
            root,
            _root_lock: root_lock,
            _store_lock: store_lock,
        })
    }

    /// The root this session holds.
    pub fn root(&self) -> &Root {
        self.root
    }

    /// Completes or undoes an interrupted switch, if any (see [`recover`]); a [`switch`]
    /// of this session does it first too, and then finds nothing to recover.
    pub fn recover(&self) -> Result<Recovered, SwitchError> {
        recover(self.store, self.root)
    }

    /// What [`Session::recover`] will do and the state it will leave, changing nothing;
    /// `None` when no switch was interrupted. Errors: as the recovery's (neither way works).
    pub fn recovery_preview(&self) -> Result<Option<(Recovered, State)>, SwitchError> {
        let Some(j) = self.root.journal()? else {
            return Ok(None);
        };
        let fs = beneath::Beneath::open(self.root.dir())?;
        let (r, state, _) = journal::recovery_preview(&fs, self.store, self.root, j)?;
        Ok(Some((r, state)))
    }

    /// One switch to `target`, as [`switch`] describes.
    pub fn switch(
        &self,
        target: Target,
        choice: &Choice,
        adopt: bool,
        recovered: &dyn Fn(&Recovered),
        before_journal: &dyn Fn(&Plan) -> Result<(), SwitchError>,
        before_flip: &dyn Fn(&Plan) -> Result<(), SwitchError>,
    ) -> Result<(Plan, Applied), SwitchError> {
        let (store, root) = (self.store, self.root);
        let r = recover(store, root)?;
        if r.happened {
            recovered(&r);
        }
        let g = resolve(store, root, target, choice)?;
        check_objects(store, &g)?;
        let plan = plan(store, root, &g, adopt)?;
        apply(store, root, plan, before_journal, before_flip)
    }
}

/// The newest generation's number in `profile`.
pub fn newest(store: &Store, profile: &str) -> Result<u64, SwitchError> {
    match generation::newest_number(store, profile)? {
        0 => Err(SwitchError::NoGenerations {
            profile: profile.to_owned(),
            // Only profiles that have a generation to switch to (gc may leave empty ones).
            others: generation::profiles(store)?
                .into_iter()
                .filter(|p| {
                    p != profile && generation::newest_number(store, p).is_ok_and(|n| n > 0)
                })
                .collect(),
        }),
        n => Ok(n),
    }
}

fn apply(
    store: &Store,
    root: &Root,
    plan: Plan,
    before_journal: &dyn Fn(&Plan) -> Result<(), SwitchError>,
    before_flip: &dyn Fn(&Plan) -> Result<(), SwitchError>,
) -> Result<(Plan, Applied), SwitchError> {
    plan.check()?;
    let generation = plan.to.generation.expect("a plan targets a generation");
    // Registered before the root changes, so gc knows the root even if this switch crashes
    // (and a root moved to another path is known again after one no-op switch).
    roots::register(store, root)?;
    if plan.is_noop() {
        // Another generation with the same rootfs: no file changes, but the root is now on
        // the generation asked for (what `rollback`, `verify --root` and gc go by).
        if plan.from.generation != Some(generation) || plan.from.profile != plan.to.profile {
            let state = State {
                generation: Some(generation),
                profile: plan.to.profile.clone(),
                ..plan.from.clone()
            };
            root::write_json(&root.state_dir().join("state.json"), &state)?;
            crate::fs::fsync_dir(&root.state_dir())?;
        }
        return Ok((
            plan,
            Applied {
                generation,
                changed_anything: false,
            },
        ));
    }
    // First what must exist whenever the journal does (a pending gate): a failure here leaves
    // no journal, so no recovery completes the switch without it.
    before_journal(&plan)?;
    let journal = journal::begin(root, &plan)?;
    // Units are stopped only once the switch is recorded: a failure before this point
    // leaves the services untouched.
    before_flip(&plan)?;
    journal::execute(root, &journal.from, &journal.to)?;
    Ok((
        plan,
        Applied {
            generation,
            changed_anything: true,
        },
    ))
}

/// The generation before the root's active one in the root's own profile (what `rollback`
/// goes to): like a Nix profile's rollback, never another profile's generation.
fn previous_of(store: &Store, root: &Root, state: &State) -> Result<u64, SwitchError> {
    let active = state
        .generation
        .ok_or_else(|| SwitchError::NotActive(root.dir().to_owned()))?;
    generation::list(store, state.profile_name())?
        .into_iter()
        .map(|g| g.number)
        .filter(|n| *n < active)
        .max()
        .ok_or_else(|| SwitchError::NothingToRollBackTo {
            active,
            profile: state.profile_name().to_owned(),
        })
}
