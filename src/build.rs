//! `kbuild build`: realise a recipe set against the store and record a generation.
//!
//! The order of work is chosen so that a no-op rebuild only reads: recipes are parsed and
//! rendered in memory, unpack outputs are found through the derivation index, the rootfs
//! digest is computed from its components' digests, and only what is missing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::derivation;
use crate::generation::{self, NewGeneration, Recorded};
use crate::install::{self, InstallError, InstallLink};
use crate::lockfile::{LockError, LockFile, LockedInput};
use crate::observe::Observer;
use crate::pin::{Algo, Pin};
use crate::recipe::{self, FileSource, RecipeError, RecipeSet, TargetPath, VariableError};
use crate::render::{self, RenderError};
use crate::store::{IndexedOutput, LockMode, Node, ObjectMeta, Store, StoreError, StorePath};
use crate::unpack::{self, ModeRule, UnpackError, Wanted};

/// Where things are and how to behave; shared by `build`, `lock` and `update`.
#[derive(Clone, Debug)]
pub struct Context {
    pub store_dir: PathBuf,
    pub recipes_dir: PathBuf,
    pub lock_path: PathBuf,
    /// `lock_path` was not given but derived from `recipes_dir` (the file beside it): errors
    /// about the lock file then say where it was looked for.
    pub lock_path_derived: bool,
    pub offline: bool,
    pub max_unpacked: u64,
}

#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    pub recipes: Vec<String>,
    pub sets: Vec<(String, String)>,
    /// Input name → URL to fetch instead; the pin then comes from the file actually read.
    pub overrides: BTreeMap<String, String>,
    /// Fail rather than change the lock file.
    pub locked: bool,
    /// Record the pins of overridden inputs (the file actually read) under the recipe's URLs.
    pub write_lock: bool,
    /// The profile the generation is recorded in (`None`: `default`).
    pub profile: Option<String>,
    /// The hosts of the hosts file, which templates read as `hosts` (empty: a plain build).
    pub hosts: Vec<crate::hosts::HostEntry>,
    /// Overridden inputs this command has read already (name → pin key read): the hosts of
    /// one `build --all-hosts` read an `--override-input` file once, not once per host.
    pub read_overrides: BTreeMap<String, String>,
}

/// What a build did to the store besides reusing objects: the difference between "up to
/// date" and "re-created what was missing or damaged".
#[derive(Debug, Default)]
pub struct StoreChanges {
    /// Objects the build added under a name that was free (new, or missing before).
    pub added: Vec<StorePath>,
    /// Objects found incomplete or damaged under their name, moved aside and rebuilt.
    pub set_aside: Vec<(StorePath, String)>,
    /// Damaged objects replaced in one step by a rebuilt copy (`verify --repair`).
    pub replaced: Vec<StorePath>,
}

/// A build that re-creates given damaged objects of a generation in place, for
/// `kbuild verify --repair` (see [`rebuild`]).
struct Repair<'a> {
    objects: &'a BTreeSet<StorePath>,
}

#[derive(Debug)]
pub struct BuildOutcome {
    pub rootfs: StorePath,
    pub rootfs_path: PathBuf,
    pub generation: Recorded,
    /// Objects this build added, set aside or replaced.
    pub changes: StoreChanges,
    pub lock_written: bool,
    /// What changed in the lock file, one line per input (`Locking …`, `Updating …`).
    pub lock_changes: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error(transparent)]
    Check(Box<crate::check::Failed>),
    #[error(transparent)]
    Variable(#[from] VariableError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("`--override-input {name}=…`: no loaded recipe declares an input `{name}`")]
    UnknownOverride { name: String, known: Vec<String> },
    #[error("`--override-input {name}=…`: {message}")]
    BadOverride { name: String, message: String },
    #[error("no recipe in the recipes directory declares an input `{name}`")]
    UnknownInput { name: String, known: Vec<String> },
    #[error("the lock file `{}` would change ({reason}), and `--locked` was given", path.display())]
    LockWouldChange { path: PathBuf, reason: String },
    /// `--locked` without a lock file at all.
    #[error("the lock file `{}` is missing, and `--locked` was given{}", path.display(), beside(path, recipes))]
    LockMissing {
        path: PathBuf,
        /// The recipes directory, when the path was derived from it.
        recipes: Option<PathBuf>,
    },
    #[error(
        "input `{input}`: member `{member}` is kept with two different modes ({origin} gives another `mode` than a file selecting it elsewhere)"
    )]
    MemberModes {
        input: String,
        member: String,
        origin: String,
    },
    #[error(
        "{origin}: `on_change = \"reload\"` for `{target}`, but the unit has no `ExecReload=` (`systemctl reload` would fail)"
    )]
    NoExecReload { target: String, origin: String },
    #[error(
        "{} mismatch for input `{input}` from `{url}`: the recipe pins it ({})\n  expected: {}\n    actual: {}",
        expected.algo(), at.loc, at.written(expected), at.written(actual)
    )]
    RecipePinMismatch {
        input: String,
        url: String,
        expected: Box<Pin>,
        actual: Box<Pin>,
        at: Box<crate::recipe::PinAt>,
    },
    #[error("input `{input}`: {recipe_origin} pins {recipe}, but `{}` pins {}", lock_path.display(), lock.hex())]
    LockDisagrees {
        input: String,
        recipe_origin: String,
        recipe: Box<Pin>,
        lock_path: PathBuf,
        lock: Box<Pin>,
    },
}

/// For a lock file looked for beside a recipes directory elsewhere than `.`: says where it
/// was looked for, and why there.
fn beside(lock: &Path, recipes: &Option<PathBuf>) -> String {
    let Some(recipes) = recipes else {
        return String::new();
    };
    let parent = recipes.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(p) if lock.parent() == Some(p) => format!(
            " (looked for beside the recipes directory `{}`)",
            recipes.display()
        ),
        _ => String::new(),
    }
}

impl From<std::io::Error> for BuildError {
    fn from(e: std::io::Error) -> BuildError {
        BuildError::Store(StoreError::Io(e))
    }
}

impl From<Box<crate::check::Failed>> for BuildError {
    fn from(e: Box<crate::check::Failed>) -> BuildError {
        BuildError::Check(e)
    }
}

impl BuildError {
    pub fn help(&self) -> Option<String> {
        match self {
            BuildError::Recipe(e) => e.help(),
            BuildError::Check(e) => Some(format!(
                "{} (rule `{}`); correct the value (`--set`, the hosts file or the recipe) and build again",
                e.reason, e.rule
            )),
            BuildError::Variable(e) => e.help(),
            BuildError::Render(e) => e.help(),
            BuildError::Lock(e) => e.help(),
            BuildError::Unpack(e) => e.help(),
            BuildError::Store(e) => Store::help(e),
            BuildError::Install(e) => Some(e.help()),
            BuildError::BadOverride { .. } => None,
            BuildError::NoExecReload { .. } => Some(
                "add `ExecReload=` to the unit's [Service] section (or a drop-in), or use `on_change = \"restart\"`; then run `kbuild build` again".into(),
            ),
            BuildError::UnknownOverride { known, .. } | BuildError::UnknownInput { known, .. } => {
                Some(format!("declared inputs: {}", known.join(", ")))
            }
            BuildError::LockMissing { .. } => Some(
                "point `--lock-file PATH` at the project's lock file, or pin the inputs from local copies without the network: `kbuild build RECIPE --override-input NAME=file:///path/to/file --write-lock`".into(),
            ),
            BuildError::LockWouldChange { .. } => Some(
                "run `kbuild lock` (or the build without `--locked`) and commit the lock file"
                    .into(),
            ),
            BuildError::MemberModes { member, .. } => Some(format!(
                "give every file selecting `{member}` the same `mode` (or none, to keep the archive's), then run `kbuild build` again"
            )),
            BuildError::RecipePinMismatch { actual, at, .. } => Some(format!(
                "the recipe's pin is what the file must match (an override or a mirror too): fix the mirror, or, if the new file is trusted, set `{} = \"{}\"` at {} and run `kbuild build` again",
                at.key,
                at.written(actual),
                at.loc
            )),
            BuildError::LockDisagrees { input, recipe, .. } => Some(format!(
                "if the recipe is right, run `kbuild update {input}`; otherwise fix the recipe's `{}`",
                recipe.algo()
            )),
        }
    }
}

/// How an input will be obtained in this build.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) urls: Vec<String>,
    /// The URLs a lock entry records: the recipe's, even when an override is read.
    pub(crate) lock_urls: Vec<String>,
    /// Known pin (from the lock or the recipe); `None` means "pin what we fetch".
    pub(crate) pin: Option<Pin>,
    /// The algorithm to pin with when `pin` is `None`: the recipe's, else sha256.
    pub(crate) algo: Algo,
    /// The pinned size, when the lock knows it (a larger download is cut off).
    pub(crate) size: Option<u64>,
    pub(crate) overridden: bool,
    /// Overridden, but read earlier in this command (its `pin` is what was read).
    pub(crate) read_already: bool,
    /// Where the recipe writes `pin`, when `pin` is the recipe's: a mismatch is fixed there.
    pub(crate) pinned_at: Option<crate::recipe::PinAt>,
}

/// Where the recipe writes `pin`, if the recipe pins `decl` with exactly `pin`.
fn pinned_at(decl: &crate::recipe::InputDecl, pin: Option<&Pin>) -> Option<crate::recipe::PinAt> {
    decl.pin_at
        .clone()
        .filter(|_| pin.is_some() && decl.pin.as_ref() == pin)
}

/// `e` as read from the kept copy at `kept`, naming the input's `upstream` URL instead of the
/// store path (the copy is an implementation detail; the URL is what the recipe names).
pub(crate) fn from_upstream(e: UnpackError, kept: &str, upstream: Option<&String>) -> UnpackError {
    let Some(upstream) = upstream else {
        return e;
    };
    let fix = |url: String| if url == kept { upstream.clone() } else { url };
    match e {
        UnpackError::Archive {
            input,
            url,
            message,
        } => UnpackError::Archive {
            input,
            url: fix(url),
            message,
        },
        UnpackError::MissingMembers {
            input,
            url,
            missing,
        } => UnpackError::MissingMembers {
            input,
            url: fix(url),
            missing,
        },
        other => other,
    }
}

/// A rootfs file's content, ready to be placed.
struct Component {
    target: TargetPath,
    node: Node,
    /// The store object holding it (exists, or is written from `bytes`).
    path: StorePath,
    bytes: Option<Vec<u8>>,
}

pub fn build(
    ctx: &Context,
    req: &BuildRequest,
    observer: &dyn Observer,
) -> Result<BuildOutcome, BuildError> {
    // The order recipes are named in changes nothing (imports merge the same either way), so
    // `build a b`, `build b a` and `build a a b` are one build with one rootfs name.
    let mut recipes = req.recipes.clone();
    recipes.sort();
    recipes.dedup();
    let set = recipe::load(&ctx.recipes_dir, &recipes)?;
    let vars = recipe::resolve_variables(&set, &req.sets)?;
    for name in req.overrides.keys() {
        if !set.inputs.contains_key(name) {
            return Err(BuildError::UnknownOverride {
                name: name.clone(),
                known: set.inputs.keys().cloned().collect(),
            });
        }
    }
    // Render first: template errors need no store and no network.
    let components = render_files(&set, &vars, &req.hosts)?;
    recipe::render_health(&set, &vars)?;
    check_reload(&set, &components)?;
    // The recipes' rules over what was rendered, before anything is written.
    check_rules(&set, &vars, &components, req)?;

    // `--locked` with no lock file at all: say that, not that one input is unpinned.
    if req.locked && !set.inputs.is_empty() && ctx.lock_path.symlink_metadata().is_err() {
        return Err(BuildError::LockMissing {
            path: ctx.lock_path.clone(),
            recipes: ctx.lock_path_derived.then(|| ctx.recipes_dir.clone()),
        });
    }
    let original = LockFile::load(&ctx.lock_path)?;
    let lock = original.clone();
    let plans = plan_inputs(ctx, &set, &lock, req)?;

    let store = Store::open(&ctx.store_dir)?;
    let _lock = store.lock(LockMode::Shared, observer)?;
    store.remove_abandoned(observer);
    let mut changes = StoreChanges::default();
    let (rootfs, lock_written, lock_changes, generation) = build_in(
        ctx,
        req,
        &store,
        set,
        vars,
        recipes,
        components,
        (original, lock, plans),
        None,
        &mut changes,
        observer,
    )?;
    Ok(BuildOutcome {
        rootfs_path: store.path_of(&rootfs),
        rootfs,
        generation: generation.expect("a build records a generation"),
        lock_written,
        lock_changes,
        changes,
    })
}

/// The lock file before and after, and how each input is obtained.
type Pins = (LockFile, LockFile, BTreeMap<String, Plan>);
/// The rootfs, whether the lock file was written, its changes, the generation recorded.
type Built = (StorePath, bool, Vec<(String, String)>, Option<Recorded>);

/// Replaces the damaged objects `damaged` of generation `g` by copies rebuilt from the
/// generation's recipes, variables and locked inputs, each in one step. Records no generation
/// and never writes the lock file. Objects the recipes no longer produce stay as they are
/// (the caller re-verifies). The caller holds the store lock exclusively.
pub fn rebuild(
    ctx: &Context,
    store: &Store,
    g: &generation::Generation,
    damaged: &BTreeSet<StorePath>,
    overrides: &BTreeMap<String, String>,
    observer: &dyn Observer,
) -> Result<StoreChanges, BuildError> {
    let req = BuildRequest {
        recipes: g.recipes.clone(),
        sets: g.variables.clone().into_iter().collect(),
        overrides: overrides.clone(),
        locked: true,
        write_lock: false,
        profile: Some(g.profile.clone()),
        hosts: g.hosts.clone(),
        read_overrides: BTreeMap::new(),
    };
    let set = recipe::load(&ctx.recipes_dir, &req.recipes)?;
    let vars = recipe::resolve_variables(&set, &req.sets)?;
    if let Some(name) = overrides.keys().find(|n| !set.inputs.contains_key(*n)) {
        return Err(BuildError::UnknownOverride {
            name: name.clone(),
            known: set.inputs.keys().cloned().collect(),
        });
    }
    let components = render_files(&set, &vars, &req.hosts)?;
    check_reload(&set, &components)?;
    let original = LockFile::load(&ctx.lock_path)?;
    let plans = plan_inputs(ctx, &set, &original, &req)?;
    let mut changes = StoreChanges::default();
    build_in(
        ctx,
        &req,
        store,
        set,
        vars,
        req.recipes.clone(),
        components,
        (original.clone(), original, plans),
        Some(&Repair { objects: damaged }),
        &mut changes,
        observer,
    )?;
    Ok(changes)
}

/// The part of a build that runs under the store lock.
#[allow(clippy::too_many_arguments)]
fn build_in(
    ctx: &Context,
    req: &BuildRequest,
    store: &Store,
    set: RecipeSet,
    vars: BTreeMap<String, String>,
    recipes: Vec<String>,
    mut components: Vec<Component>,
    (original, mut lock, plans): Pins,
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
    observer: &dyn Observer,
) -> Result<Built, BuildError> {
    // Unpack inputs (index hit, or one pass over the archive), several at once.
    let jobs: Vec<(String, Vec<Wanted>)> = wanted_members(&set).into_iter().collect();
    let realised = realise_all(ctx, store, &plans, &jobs, repair, changes, observer)?;
    let mut used_inputs = BTreeMap::new();
    for ((input, _), realised) in jobs.into_iter().zip(realised) {
        let plan = &plans[&input];
        let Realised { pin, outputs, size } = realised;
        if !plan.overridden || req.write_lock {
            let recipe_pin = set.inputs[&input].pin.as_ref();
            if let Some(r) = recipe_pin.filter(|r| **r != pin) {
                return Err(BuildError::LockDisagrees {
                    input: input.clone(),
                    recipe_origin: set.inputs[&input].origin.to_string(),
                    recipe: Box::new(r.clone()),
                    lock_path: ctx.lock_path.clone(),
                    lock: Box::new(pin),
                });
            }
            let entry = lock
                .inputs
                .entry(input.clone())
                .or_insert_with(|| LockedInput {
                    urls: plan.lock_urls.clone(),
                    pin: pin.clone(),
                    size: None,
                });
            entry.urls = plan.lock_urls.clone();
            if entry.pin != pin {
                // Another file (or another algorithm): the old size says nothing about it.
                entry.size = None;
            }
            entry.pin = pin.clone();
            // Found through the index (an earlier build read it, through an override say):
            // the kept archive's size still bounds the next download of it.
            let size = size.or_else(|| {
                store
                    .kept_object(&pin)
                    .and_then(|o| std::fs::symlink_metadata(store.path_of(&o)).ok())
                    .map(|m| m.len())
            });
            if size.is_some() {
                entry.size = size;
            }
        }
        used_inputs.insert(input.clone(), pin.key());
        // One output per member: the archive is decoded once and each member written once.
        let by_member: BTreeMap<String, IndexedOutput> =
            outputs.into_iter().map(|o| (o.id.clone(), o)).collect();
        for f in set.files.values() {
            if let FileSource::Member { input: i, member } = &f.source
                && *i == input
            {
                let o = &by_member[member];
                if let Some(x) = f.mode
                    && x != o.executable
                {
                    return Err(BuildError::MemberModes {
                        input: input.clone(),
                        member: member.clone(),
                        origin: f.origin.to_string(),
                    });
                }
                components.push(Component {
                    target: f.target.clone(),
                    node: o.node().ok_or_else(|| {
                        StoreError::Io(std::io::Error::other(format!(
                            "index entry for `{}` has a malformed digest",
                            o.path
                        )))
                    })?,
                    path: o.path.clone(),
                    bytes: None,
                });
            }
        }
    }
    // Pins of declared inputs no file uses still belong in the lock (with their current URLs).
    for (name, plan) in &plans {
        if let (false, Some(pin)) = (plan.overridden, &plan.pin) {
            let entry = lock
                .inputs
                .entry(name.clone())
                .or_insert_with(|| LockedInput {
                    urls: plan.lock_urls.clone(),
                    pin: pin.clone(),
                    size: None,
                });
            entry.urls = plan.lock_urls.clone();
            if entry.pin != *pin {
                entry.pin = pin.clone();
                entry.size = None;
            }
        }
    }
    // Sizes are informational: filling one in is not a change `--locked` refuses.
    if req.locked && !lock.same_pins(&original) {
        return Err(BuildError::LockWouldChange {
            path: ctx.lock_path.clone(),
            reason: "a fetch filled in missing pins".into(),
        });
    }
    let lock_changes = lock.changes_from(&original);

    for c in &components {
        let size = match c.node {
            Node::File { size, .. } => Some(size),
            _ => None,
        };
        if !repair.is_some_and(|r| r.objects.contains(&c.path)) {
            store.check_unmodified(&c.path, size)?;
        }
    }
    let health = recipe::render_health(&set, &vars)?;
    let prerequisites = prerequisites(&set, &health);
    let manifest = manifest(&set, &prerequisites, &health);
    let links = install_links(store, &components)?;
    let rootfs = assemble_rootfs(store, &set, &components, &links, &manifest, repair, changes)?;
    if repair.is_some() {
        return Ok((rootfs, false, lock_changes, None));
    }
    // Under `--locked` the file is never rewritten (not even to fill in a size or reformat).
    let lock_written = !req.locked && lock.save(&ctx.lock_path)?;

    let generation = generation::record(
        store,
        req.profile
            .as_deref()
            .unwrap_or(generation::DEFAULT_PROFILE),
        NewGeneration {
            rootfs: rootfs.clone(),
            recipes,
            variables: vars,
            inputs: used_inputs,
            prerequisites: prerequisites.into_iter().collect(),
            hosts: req.hosts.clone(),
            origins: origins(&set, &links, &ctx.recipes_dir),
        },
        observer,
    )?;
    Ok((rootfs, lock_written, lock_changes, Some(generation)))
}

/// Loads, renders and checks `req` without touching the store or the network: what a build
/// of several hosts runs for every host first, so that a fault in any writes nothing.
pub fn check_only(ctx: &Context, req: &BuildRequest) -> Result<(), BuildError> {
    let mut recipes = req.recipes.clone();
    recipes.sort();
    recipes.dedup();
    let set = recipe::load(&ctx.recipes_dir, &recipes)?;
    let vars = recipe::resolve_variables(&set, &req.sets)?;
    let components = render_files(&set, &vars, &req.hosts)?;
    recipe::render_health(&set, &vars)?;
    check_reload(&set, &components)?;
    check_rules(&set, &vars, &components, req)
}

/// Runs the recipes' checks (see [`crate::check`]) over the variables and rendered files.
fn check_rules(
    set: &RecipeSet,
    vars: &BTreeMap<String, String>,
    components: &[Component],
    req: &BuildRequest,
) -> Result<(), BuildError> {
    if set.checks.is_empty() {
        return Ok(());
    }
    let files: BTreeMap<String, String> = components
        .iter()
        .filter_map(|c| {
            let text = String::from_utf8(c.bytes.clone()?).ok()?;
            Some((c.target.as_str().to_owned(), text))
        })
        .collect();
    let build = crate::check::Build {
        variables: vars,
        files: &files,
        hosts: &req.hosts,
        host: req.profile.as_deref().filter(|_| !req.hosts.is_empty()),
    };
    build.check(&set.checks)?;
    Ok(())
}

/// Renders every template and text file in memory.
fn render_files(
    set: &RecipeSet,
    vars: &BTreeMap<String, String>,
    hosts: &[crate::hosts::HostEntry],
) -> Result<Vec<Component>, BuildError> {
    let mut out = Vec::new();
    for f in set.files.values() {
        let (name, source) = match &f.source {
            FileSource::Template { name, source } => (name.clone(), source.as_str()),
            FileSource::Text(t) => (
                render::text_name(&f.origin.loc.to_string(), f.target.as_str()),
                t.as_str(),
            ),
            FileSource::Member { .. } => continue,
        };
        let rendered = render::render_hosts(&name, source, vars, hosts)?;
        render::check_format(&name, f.target.as_str(), &rendered, source, vars, f.format)?;
        let bytes = rendered.text.into_bytes();
        let node = Node::file(&bytes, f.mode.unwrap_or(false));
        let path = StorePath::new(node.digest(), &sanitize_name(f.target.file_name()))
            .map_err(|m| std::io::Error::other(format!("target `{}`: {m}", f.target)))?;
        out.push(Component {
            target: f.target.clone(),
            node,
            path,
            bytes: Some(bytes),
        });
    }
    Ok(out)
}

/// A service whose recipe asks for `on_change = "reload"` must have an `ExecReload=` (in its
/// unit file or a drop-in of the recipes): `systemctl reload` of a unit without one fails.
/// (Unit files taken from an archive are not read before the switch.)
fn check_reload(set: &RecipeSet, components: &[Component]) -> Result<(), BuildError> {
    let text_of = |target: &str| {
        components
            .iter()
            .find(|c| c.target.as_str() == target)
            .and_then(|c| c.bytes.as_deref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    for f in set.files.values() {
        if f.on_change != Some(crate::recipe::OnChange::Reload) {
            continue;
        }
        let Some(unit) = text_of(f.target.as_str()) else {
            continue;
        };
        let name = f.target.file_name();
        let mut texts = vec![unit];
        for dir in crate::activate::units::dropin_dirs(name) {
            let prefix = format!("{}{dir}/", crate::recipe::UNIT_PREFIX);
            for c in components {
                if c.target.as_str().starts_with(&prefix) {
                    texts.extend(text_of(c.target.as_str()));
                }
            }
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        if !crate::activate::units::parse_units(&refs, name).exec_reload {
            return Err(BuildError::NoExecReload {
                target: f.target.to_string(),
                origin: f.origin.to_string(),
            });
        }
    }
    Ok(())
}

/// The members each input must yield, with their executable bits.
fn wanted_members(set: &RecipeSet) -> BTreeMap<String, Vec<Wanted>> {
    let mut out: BTreeMap<String, BTreeSet<Wanted>> = BTreeMap::new();
    for f in set.files.values() {
        if let FileSource::Member { input, member } = &f.source {
            out.entry(input.clone()).or_default().insert(Wanted {
                member: member.clone(),
                mode: f.mode.map_or(ModeRule::FromArchive, ModeRule::Fixed),
            });
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

/// Decides, per declared input, which URLs to read and which pin to expect, checking the
/// recipe against the lock.
pub(crate) fn plan_inputs(
    ctx: &Context,
    set: &RecipeSet,
    lock: &LockFile,
    req: &BuildRequest,
) -> Result<BTreeMap<String, Plan>, BuildError> {
    let mut plans = BTreeMap::new();
    for (name, decl) in &set.inputs {
        if let Some(url) = req.overrides.get(name) {
            crate::fetch::check_url(url).map_err(|message| BuildError::BadOverride {
                name: name.clone(),
                message,
            })?;
            plans.insert(
                name.clone(),
                Plan {
                    urls: vec![url.clone()],
                    lock_urls: decl.urls.clone(),
                    // A pin written in the recipe is the trust anchor (as a fixed-output hash in
                    // Nix): the override's bytes must match it. A lock pin is not: an override
                    // (with `--write-lock`) is how a lock entry is re-pinned.
                    pin: req
                        .read_overrides
                        .get(name)
                        .and_then(|k| Pin::from_key(k))
                        .or_else(|| decl.pin.clone()),
                    algo: recipe_algo(decl),
                    size: None,
                    overridden: true,
                    read_already: req.read_overrides.contains_key(name),
                    pinned_at: decl.pin_at.clone().filter(|_| decl.pin.is_some()),
                },
            );
            continue;
        }
        let locked = lock.inputs.get(name);
        let pin = match (locked, &decl.pin) {
            (Some(l), Some(r))
                if l.urls == decl.urls && l.pin.algo() == r.algo() && l.pin != *r =>
            {
                return Err(BuildError::LockDisagrees {
                    input: name.clone(),
                    recipe_origin: decl.origin.to_string(),
                    recipe: Box::new(r.clone()),
                    lock_path: ctx.lock_path.clone(),
                    lock: Box::new(l.pin.clone()),
                });
            }
            // The recipe now pins with another algorithm (upstream's published sha512, say):
            // the two cannot be compared, so the recipe's pin is checked and locked.
            (Some(l), Some(r)) if l.urls == decl.urls && l.pin.algo() != r.algo() => {
                if req.locked {
                    return Err(BuildError::LockWouldChange {
                        path: ctx.lock_path.clone(),
                        reason: format!(
                            "{} pins input `{name}` with {}, the lock file with {}",
                            decl.origin,
                            r.algo(),
                            l.pin.algo()
                        ),
                    });
                }
                Some(r.clone())
            }
            (Some(l), _) if l.urls == decl.urls => Some(l.pin.clone()),
            (stale, pin) => {
                if req.locked {
                    let reason = if stale.is_some() {
                        format!("the URLs of input `{name}` changed in {}", decl.origin)
                    } else {
                        format!("input `{name}` is not pinned yet")
                    };
                    return Err(BuildError::LockWouldChange {
                        path: ctx.lock_path.clone(),
                        reason,
                    });
                }
                // The content pin survives a change of URLs (a new mirror, a moved file):
                // only `kbuild update` or the recipe's own pin may change it.
                pin.clone().or_else(|| stale.map(|l| l.pin.clone()))
            }
        };
        plans.insert(
            name.clone(),
            Plan {
                urls: decl.urls.clone(),
                lock_urls: decl.urls.clone(),
                // The size belongs to the pinned file, whatever its URLs are now.
                size: locked
                    .filter(|l| Some(&l.pin) == pin.as_ref())
                    .and_then(|l| l.size),
                pinned_at: pinned_at(decl, pin.as_ref()),
                pin,
                algo: recipe_algo(decl),
                overridden: false,
                read_already: false,
            },
        );
    }
    Ok(plans)
}

/// The algorithm an input is pinned with when nothing pins it yet: the recipe's pin's, else
/// sha256.
fn recipe_algo(decl: &crate::recipe::InputDecl) -> Algo {
    decl.pin.as_ref().map(Pin::algo).unwrap_or_default()
}

/// How many inputs are fetched and unpacked at once: enough to overlap a slow download with
/// another's decoding, few enough not to thrash a small host's disk and cores.
pub const PARALLEL_INPUTS: usize = 4;

/// Realises every input of `jobs` (at most [`PARALLEL_INPUTS`] at once), returning their
/// results in the order of `jobs`, or the first error in that order.
fn realise_all(
    ctx: &Context,
    store: &Store,
    plans: &BTreeMap<String, Plan>,
    jobs: &[(String, Vec<Wanted>)],
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
    observer: &dyn Observer,
) -> Result<Vec<Realised>, BuildError> {
    type Slot = std::sync::Mutex<Option<(Result<Realised, BuildError>, StoreChanges)>>;
    let slots: Vec<Slot> = jobs.iter().map(|_| Slot::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some((input, wanted)) = jobs.get(i) else {
                break;
            };
            let mut mine = StoreChanges::default();
            let r = realise_unpack(
                ctx,
                store,
                input,
                &plans[input],
                wanted,
                repair,
                &mut mine,
                observer,
            );
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some((r, mine));
        }
    };
    let workers = jobs.len().min(PARALLEL_INPUTS);
    if workers <= 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    let mut out = Vec::with_capacity(jobs.len());
    for slot in slots {
        let (r, mine) = slot
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("every job ran");
        changes.added.extend(mine.added);
        changes.set_aside.extend(mine.set_aside);
        changes.replaced.extend(mine.replaced);
        out.push(r?);
    }
    Ok(out)
}

/// An unpacked input.
struct Realised {
    pin: Pin,
    outputs: Vec<IndexedOutput>,
    /// The archive's size, when it was read in this build.
    size: Option<u64>,
}

/// Whether the indexed outputs may be reused as they are: none is to be repaired, and each
/// is whole (checked without reading it; see [`Store::check_shape`]). A damaged one fails the
/// build as tampering; one of the wrong shape is moved aside, and the caller unpacks again.
fn reusable(
    store: &Store,
    outputs: &[IndexedOutput],
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
) -> Result<bool, BuildError> {
    let mut whole = true;
    for o in outputs {
        if repair.is_some_and(|r| r.objects.contains(&o.path)) {
            whole = false;
            continue;
        }
        store.check_unmodified(&o.path, Some(o.size))?;
        let node = o.node().ok_or_else(|| {
            std::io::Error::other(format!(
                "index entry for `{}` has a malformed digest",
                o.path
            ))
        })?;
        match store.check_shape(&o.path, &node) {
            Ok(true) => {}
            Ok(false) => whole = false,
            Err(what) => {
                store.move_aside(&o.path)?;
                changes.set_aside.push((o.path.clone(), what));
                whole = false;
            }
        }
    }
    Ok(whole)
}

/// Finds the input's members through the index, or fetches and unpacks them.
#[allow(clippy::too_many_arguments)]
fn realise_unpack(
    ctx: &Context,
    store: &Store,
    input: &str,
    plan: &Plan,
    wanted: &[Wanted],
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
    observer: &dyn Observer,
) -> Result<Realised, BuildError> {
    if let (Some(pin), false) = (&plan.pin, plan.overridden && !plan.read_already) {
        if let Some(outputs) = store.lookup(&derivation::unpack_key(pin, wanted))?
            && reusable(store, &outputs, repair, changes)?
        {
            return Ok(Realised {
                pin: pin.clone(),
                outputs,
                size: None,
            });
        }
        // Another recipe set may have unpacked every member this one wants (`kube-common`
        // after `master`): each member is indexed on its own too.
        let mut outputs = Vec::with_capacity(wanted.len());
        for w in wanted {
            match store.lookup(&derivation::unpack_key(pin, std::slice::from_ref(w)))? {
                Some(mut o) if o.len() == 1 => outputs.push(o.remove(0)),
                _ => break,
            }
        }
        if outputs.len() == wanted.len() && reusable(store, &outputs, repair, changes)? {
            store.record(&derivation::unpack_key(pin, wanted), &outputs)?;
            return Ok(Realised {
                pin: pin.clone(),
                outputs,
                size: None,
            });
        }
    }
    let scratch = store.scratch()?;
    let unpacked = match read_kept(
        ctx,
        store,
        input,
        plan,
        wanted,
        scratch.path(),
        changes,
        observer,
    )? {
        Some(u) => u,
        None => unpack::fetch_and_unpack(
            &unpack::Request {
                input,
                urls: &plan.urls,
                expected: plan.pin.as_ref(),
                algo: plan.algo,
                wanted,
                offline: ctx.offline,
                max_unpacked: ctx.max_unpacked,
                expected_size: plan.size,
                keep: true,
            },
            scratch.path(),
            observer,
        )
        .map_err(|e| recipe_pin_error(e, plan))?,
    };
    if let Some(kept) = &unpacked.kept {
        let name = plan
            .lock_urls
            .first()
            .map(|u| archive_name(u))
            .unwrap_or_else(|| "input".into());
        store.add_kept(kept, &unpacked.pin, &name, unpacked.size)?;
    }
    let key = derivation::unpack_key(&unpacked.pin, wanted);
    let mut outputs = Vec::new();
    for f in &unpacked.files {
        let node = Node::File {
            executable: f.executable,
            size: f.size,
            contents: f.blake3,
        };
        let digest = node.digest();
        let base = f.wanted.member.rsplit('/').next().unwrap_or("member");
        let path = StorePath::new(digest, &sanitize_name(base))
            .map_err(|m| std::io::Error::other(format!("member `{}`: {m}", f.wanted.member)))?;
        let meta = ObjectMeta {
            version: crate::store::META_VERSION,
            digest: digest.to_hex(),
            deriver: key.clone(),
            references: vec![],
            shape: crate::store::shape_of(&node),
        };
        add_or_replace(store, &f.path, &path, &meta, repair, changes)?;
        outputs.push(IndexedOutput {
            id: f.wanted.member.clone(),
            path,
            executable: f.executable,
            size: f.size,
            blake3: f.blake3.to_hex(),
        });
    }
    store.sync_dir()?;
    store.record(&key, &outputs)?;
    for (f, o) in unpacked.files.iter().zip(&outputs) {
        store.record(
            &derivation::unpack_key(&unpacked.pin, std::slice::from_ref(&f.wanted)),
            std::slice::from_ref(o),
        )?;
    }
    Ok(Realised {
        pin: unpacked.pin,
        outputs,
        size: Some(unpacked.size),
    })
}

/// Whether the kept archive at `path` still hashes to `pin`. An archive error stops the read
/// before the hash is known; only a damaged copy is set aside — an intact one with a content
/// fault (a link leaving the archive, say) would fail the same way after a fresh download.
fn kept_matches(path: &Path, pin: &Pin) -> Result<bool, BuildError> {
    let mut file = fs_err::File::open(path)?;
    let mut hasher = pin.algo().hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish() == *pin)
}

/// Unpacks the input from the archive the store keeps for its pin, if it keeps one: no
/// network, whatever the URLs say. A kept archive that fails its pin (damaged since it was
/// kept) is moved aside and `None` returned: the caller fetches it again, and keeps the new
/// copy. An archive error from a copy that still matches its pin is the archive's own fault
/// and is returned as is.
#[allow(clippy::too_many_arguments)]
fn read_kept(
    ctx: &Context,
    store: &Store,
    input: &str,
    plan: &Plan,
    wanted: &[Wanted],
    scratch: &Path,
    changes: &mut StoreChanges,
    observer: &dyn Observer,
) -> Result<Option<unpack::Unpacked>, BuildError> {
    let (Some(pin), false) = (&plan.pin, plan.overridden) else {
        return Ok(None);
    };
    let Some(object) = store.kept_object(pin) else {
        return Ok(None);
    };
    let path = std::path::absolute(store.path_of(&object))?;
    let url = format!("file://{}", path.display());
    if let Err(e) = store.check_unmodified(&object, plan.size) {
        let what = match e {
            StoreError::Modified { what, .. } => what,
            other => other.to_string(),
        };
        store.move_aside(&object)?;
        changes.set_aside.push((object, what));
        return Ok(None);
    }
    let dir = scratch.join("kept");
    fs_err::create_dir(&dir)?;
    let urls = [url];
    let result = unpack::fetch_and_unpack(
        &unpack::Request {
            input,
            urls: &urls,
            expected: Some(pin),
            algo: pin.algo(),
            wanted,
            offline: ctx.offline,
            max_unpacked: ctx.max_unpacked,
            expected_size: plan.size,
            keep: false,
        },
        &dir,
        observer,
    );
    match result {
        Ok(u) => Ok(Some(u)),
        Err(UnpackError::HashMismatch { actual, .. }) => {
            store.move_aside(&object)?;
            let what = format!("its {} is {}", actual.algo(), actual.hex());
            changes.set_aside.push((object, what));
            Ok(None)
        }
        Err(UnpackError::Archive { message, .. }) if !kept_matches(&path, pin)? => {
            store.move_aside(&object)?;
            changes.set_aside.push((object, message));
            Ok(None)
        }
        Err(e) => Err(from_upstream(e, &urls[0], plan.lock_urls.first()).into()),
    }
}

/// A hash mismatch against a pin the recipe writes, as [`BuildError::RecipePinMismatch`]
/// (its help names the recipe line to edit: `kbuild update` would fail the same way).
pub(crate) fn recipe_pin_error(e: UnpackError, plan: &Plan) -> BuildError {
    match (e, &plan.pinned_at) {
        (
            UnpackError::HashMismatch {
                input,
                url,
                expected,
                actual,
            },
            Some(at),
        ) if plan.pin.as_ref() == Some(&expected) => BuildError::RecipePinMismatch {
            input,
            url,
            expected: Box::new(expected),
            actual: Box::new(actual),
            at: Box::new(at.clone()),
        },
        (e, _) => e.into(),
    }
}

/// The store name of a kept archive: the URL's last path component, made a valid name.
pub(crate) fn archive_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    sanitize_name(path.rsplit('/').next().unwrap_or("input"))
}

/// Makes an archive member's file name usable as a store object name.
fn sanitize_name(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+-._?=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_owned();
    if cleaned.is_empty() {
        "member".into()
    } else {
        cleaned.chars().take(200).collect()
    }
}

/// The host files a generation needs before a switch changes anything: its recipes'
/// `prerequisites`, and the files its `https://` health checks read (`ca`, `cert`, `key`)
/// unless the generation installs that path itself (a public CA or certificate: a `key` it
/// installs, or a path inside an installed file, is refused when the checks are rendered,
/// see `recipe::render_health`). A missing cluster CA then refuses the
/// switch with the other missing files, instead of failing the health gate after the flip
/// and rolling back; a group-readable client key gets the same warning as any key.
fn prerequisites(set: &RecipeSet, health: &[crate::health::Check]) -> BTreeSet<String> {
    let installed = |p: &str| set.files.keys().any(|t| t.as_str() == p);
    let tls = health.iter().flat_map(|c| c.probe.tls_paths());
    set.prerequisites
        .iter()
        .map(String::as_str)
        .chain(tls.filter(|p| !installed(p)))
        .map(str::to_owned)
        .collect()
}

/// `kbuild.json` at the top of every rootfs: what a host needs to know to activate it.
fn manifest(
    set: &RecipeSet,
    prerequisites: &BTreeSet<String>,
    health: &[crate::health::Check],
) -> Vec<u8> {
    let mut value = serde_json::json!({
        "version": 1,
        "prerequisites": prerequisites,
    });
    // The rendered health checks (`kbuild check` and the switch's gate read them from the
    // generation, without recipes); absent when none, so rootfs without them keep their digest.
    if !health.is_empty() {
        value["health"] = serde_json::to_value(health).expect("checks serialize");
    }
    // What a switch does to a changed service, when a recipe says (`on_change`); absent
    // otherwise, so that rootfs without it keep their digest.
    let units: serde_json::Map<String, serde_json::Value> = set
        .files
        .values()
        .filter_map(|f| {
            let on_change = f.on_change?;
            Some((
                f.target.file_name().to_owned(),
                serde_json::json!({ "on_change": on_change }),
            ))
        })
        .collect();
    if !units.is_empty() {
        value["units"] = serde_json::Value::Object(units);
    }
    let mut out = serde_json::to_vec_pretty(&value).expect("manifest serializes");
    out.push(b'\n');
    out
}

const MANIFEST: &str = "kbuild.json";

/// Where each rootfs entry comes from, for the generation record (`kbuild show`).
/// Template paths are recorded relative to the recipes directory (as the recipes name them), so
/// the same recipes built from two checkouts record the same generation.
fn origins(
    set: &RecipeSet,
    links: &[InstallLink],
    recipes_dir: &Path,
) -> BTreeMap<String, generation::Origin> {
    use generation::Origin;
    let mut out: BTreeMap<String, Origin> = set
        .files
        .values()
        .map(|f| {
            let o = match &f.source {
                FileSource::Member { input, member } => Origin::Input {
                    input: input.clone(),
                    member: member.clone(),
                },
                FileSource::Template { name, .. } => Origin::Template {
                    path: Path::new(name)
                        .strip_prefix(recipes_dir)
                        .map_or_else(|_| name.clone(), |p| p.display().to_string()),
                },
                FileSource::Text(_) => Origin::Text,
            };
            (f.target.relative().to_owned(), o)
        })
        .collect();
    for l in links {
        let unit = l.target.rsplit('/').next().unwrap_or(&l.target).to_owned();
        out.insert(l.path.clone(), Origin::Install { unit });
    }
    out.insert(MANIFEST.to_owned(), Origin::Manifest);
    out
}

/// The enablement links of the units among `components` (see [`crate::install`]): unit files
/// directly in `etc/systemd/system`, read from memory or from their store object.
fn install_links(store: &Store, components: &[Component]) -> Result<Vec<InstallLink>, BuildError> {
    let mut units = BTreeMap::new();
    for c in components {
        let Some(name) = c
            .target
            .relative()
            .strip_prefix(install::UNIT_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .filter(|n| !n.contains('/'))
        else {
            continue;
        };
        let bytes = match &c.bytes {
            Some(b) => b.clone(),
            None => fs_err::read(store.path_of(&c.path))?,
        };
        units.insert(
            name.to_owned(),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
    }
    // A file at the link's path, or at one of its directories.
    let taken = |rel: &str| {
        components.iter().any(|c| {
            let t = c.target.relative();
            rel == t
                || rel.strip_prefix(t).is_some_and(|r| r.starts_with('/'))
                || t.strip_prefix(rel).is_some_and(|r| r.starts_with('/'))
        })
    };
    Ok(install::links(&units, &taken)?)
}

/// Computes the rootfs digest from the components and the enablement links, and
/// materialises it if it is missing.
fn assemble_rootfs(
    store: &Store,
    set: &RecipeSet,
    components: &[Component],
    links: &[InstallLink],
    manifest: &[u8],
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
) -> Result<StorePath, BuildError> {
    let mut root = Node::Directory(BTreeMap::new());
    for c in components {
        insert(&mut root, c.target.relative(), c.node.clone());
    }
    for l in links {
        let node = Node::Symlink {
            target: l.target.as_bytes().to_vec(),
        };
        insert(&mut root, &l.path, node);
    }
    insert(&mut root, MANIFEST, Node::file(manifest, false));
    let digest = root.digest();
    let name = format!("rootfs-{}", set.roots.join("+"));
    let path = StorePath::new(digest, &name)
        .map_err(|m| std::io::Error::other(format!("rootfs name: {m}")))?;
    let repairing = |p: &StorePath| repair.is_some_and(|r| r.objects.contains(p));
    // Rendered files become objects of their own, so generations share them. New ones are
    // written, made durable with one syncfs, and added before the rootfs links them: every
    // rootfs file must be the store object's inode, even when a concurrent build adds the
    // same object first.
    // They are written even when the rootfs is reused: an object a generation references
    // is never left missing (a killed gc may have removed it alone).
    let to_write: Vec<(usize, &Component)> = components
        .iter()
        .enumerate()
        .filter(|(_, c)| c.bytes.is_some() && (!store.contains(&c.path) || repairing(&c.path)))
        .collect();
    let scratch = if to_write.is_empty() {
        None
    } else {
        Some(store.scratch()?)
    };
    let mut pending = Vec::new();
    for (i, c) in to_write {
        if let (Some(bytes), Some(scratch)) = (&c.bytes, &scratch) {
            let tmp = scratch.path().join(format!("file-{i}"));
            let executable = matches!(
                c.node,
                Node::File {
                    executable: true,
                    ..
                }
            );
            write_file(&tmp, bytes, executable)?;
            pending.push((tmp, c));
        }
    }
    if !pending.is_empty() {
        store.sync()?;
    }
    for (tmp, c) in &pending {
        // `add` succeeds when the object already exists (two targets with the same content,
        // or another build): content addressing makes either copy the right one.
        let meta = ObjectMeta {
            version: crate::store::META_VERSION,
            digest: c.node.digest().to_hex(),
            deriver: "render".into(),
            references: vec![],
            shape: crate::store::shape_of(&c.node),
        };
        add_or_replace(store, tmp, &c.path, &meta, repair, changes)?;
    }
    if repairing(&path) {
        // Rebuilt below and exchanged with the damaged copy.
    } else if repair.is_some() && !store.contains(&path) {
        // A repair re-creates damaged objects only; the recipes now make another rootfs.
        return Ok(path);
    } else {
        // Reused only when whole: a gc killed mid-delete (before gc renamed objects off their
        // names first) or a hand-made change can leave a partial tree under the name.
        match store.check_shape(&path, &root) {
            Ok(true) => {
                // A rootfs recorded by an older kbuild gets its shape now, for `switch`.
                store.record_shape(&path, &root)?;
                return Ok(path);
            }
            Ok(false) => {}
            Err(what) => {
                store.move_aside(&path)?;
                changes.set_aside.push((path.clone(), what));
            }
        }
    }

    // The rootfs is its own temp entry in the store directory: renaming a directory to a new
    // parent would need write permission on the (already read-only) directory itself.
    let top_dir = store.scratch()?;
    let top = top_dir.path().to_owned();
    for c in components {
        let dest = top.join(c.target.relative());
        fs_err::create_dir_all(dest.parent().expect("targets have a parent"))?;
        link_or_copy(&store.path_of(&c.path), &dest)?;
    }
    for l in links {
        let dest = top.join(&l.path);
        fs_err::create_dir_all(dest.parent().expect("links have a parent"))?;
        fs_err::os::unix::fs::symlink(&l.target, &dest)?;
        // Like every entry of an object: a rebuilt rootfs is the same tree, to the mtime.
        crate::fs::set_mtime(&dest)?;
    }
    write_file(&top.join(MANIFEST), manifest, false)?;
    store.sync()?;
    let references: BTreeSet<StorePath> = components.iter().map(|c| c.path.clone()).collect();
    let meta = ObjectMeta {
        version: crate::store::META_VERSION,
        digest: digest.to_hex(),
        deriver: "rootfs".into(),
        references: references.into_iter().collect(),
        shape: crate::store::shape_of(&root),
    };
    add_or_replace(store, &top, &path, &meta, repair, changes)?;
    // The temp dir's entry was renamed away (or removed): nothing left for its drop.
    drop(top_dir);
    store.sync_dir()?;
    Ok(path)
}

/// Adds a finished object, or, when it is one a repair replaces and is present, exchanges it
/// with the damaged copy in one step. Records which happened.
fn add_or_replace(
    store: &Store,
    tmp: &Path,
    path: &StorePath,
    meta: &ObjectMeta,
    repair: Option<&Repair>,
    changes: &mut StoreChanges,
) -> std::io::Result<()> {
    if repair.is_some_and(|r| r.objects.contains(path)) && store.contains(path) {
        store.replace(tmp, path, meta)?;
        changes.replaced.push(path.clone());
    } else if store.add(tmp, path, meta)? {
        changes.added.push(path.clone());
    }
    Ok(())
}

fn insert(dir: &mut Node, rel: &str, node: Node) {
    let Node::Directory(entries) = dir else {
        unreachable!("insert walks directories only")
    };
    match rel.split_once('/') {
        None => {
            entries.insert(rel.as_bytes().to_vec(), node);
        }
        Some((first, rest)) => {
            let child = entries
                .entry(first.as_bytes().to_vec())
                .or_insert_with(|| Node::Directory(BTreeMap::new()));
            insert(child, rest, node);
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::write(path, bytes)?;
    let mode = if executable { 0o755 } else { 0o644 };
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Hardlinks a store file into the rootfs being assembled (never copies big binaries);
/// copies only where the filesystem cannot link.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e)
            if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error())
                || e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) =>
        {
            fs_err::copy(from, to).map(drop)
        }
        Err(e) => Err(crate::fs::annotate(e, "hardlink into the rootfs", to)),
    }
}

/// What `kbuild lock` / `kbuild update` did.
#[derive(Debug, Default)]
pub struct LockReport {
    /// Inputs whose pin was added or changed: name → (old pin, new pin).
    pub changed: BTreeMap<String, (Option<Pin>, Pin)>,
    /// Entries removed because no recipe declares the input any more.
    pub removed: Vec<String>,
    pub written: bool,
}

/// Pins inputs of every recipe in the recipes directory. With `refresh`, re-resolves the
/// named inputs (all if empty) instead of keeping their pins. Inputs are fetched and
/// unpacked once, so the next build finds them in the store.
///
/// `overrides` (input name → URL) reads an input from another URL (a local copy, a mirror):
/// the pin is that of the file actually read, recorded under the recipe's URLs, as `build
/// --override-input … --write-lock` does.
pub fn lock(
    ctx: &Context,
    refresh: Option<&[String]>,
    overrides: &BTreeMap<String, String>,
    observer: &dyn Observer,
) -> Result<LockReport, BuildError> {
    let all = recipe::available(&ctx.recipes_dir);
    let set = recipe::load(&ctx.recipes_dir, &all)?;
    if let Some(name) = overrides.keys().find(|n| !set.inputs.contains_key(*n)) {
        return Err(BuildError::UnknownOverride {
            name: name.clone(),
            known: set.inputs.keys().cloned().collect(),
        });
    }
    for (name, url) in overrides {
        crate::fetch::check_url(url).map_err(|message| BuildError::BadOverride {
            name: name.clone(),
            message,
        })?;
    }
    if let Some(names) = refresh {
        for n in names {
            if !set.inputs.contains_key(n) {
                return Err(BuildError::UnknownInput {
                    name: n.clone(),
                    known: set.inputs.keys().cloned().collect(),
                });
            }
        }
    }
    let old = LockFile::load(&ctx.lock_path)?;
    let mut lock = old.clone();
    let mut report = LockReport::default();
    lock.inputs.retain(|name, _| {
        let keep = set.inputs.contains_key(name);
        if !keep {
            report.removed.push(name.clone());
        }
        keep
    });
    let wanted = wanted_members(&set);
    let store = Store::open(&ctx.store_dir)?;
    let _guard = store.lock(LockMode::Shared, observer)?;
    let mut plans = BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, decl) in &set.inputs {
        let refreshing = refresh.is_some_and(|r| r.is_empty() || r.contains(name));
        // An entry pinned with another algorithm than the recipe's pin is pinned again, with
        // the recipe's.
        let current = lock.inputs.get(name).filter(|l| {
            l.urls == decl.urls
                && !refreshing
                && decl.pin.as_ref().is_none_or(|r| r.algo() == l.pin.algo())
        });
        if let (Some(l), Some(r)) = (current, &decl.pin)
            && l.pin != *r
        {
            return Err(BuildError::LockDisagrees {
                input: name.clone(),
                recipe_origin: decl.origin.to_string(),
                recipe: Box::new(r.clone()),
                lock_path: ctx.lock_path.clone(),
                lock: Box::new(l.pin.clone()),
            });
        }
        if current.is_some() {
            continue;
        }
        let plan = Plan {
            urls: match overrides.get(name) {
                Some(url) => vec![url.clone()],
                None => decl.urls.clone(),
            },
            lock_urls: decl.urls.clone(),
            pin: decl.pin.clone(),
            algo: recipe_algo(decl),
            size: None,
            overridden: overrides.contains_key(name),
            read_already: false,
            pinned_at: decl.pin_at.clone().filter(|_| decl.pin.is_some()),
        };
        plans.insert(name.clone(), plan);
        jobs.push((name.clone(), wanted.get(name).cloned().unwrap_or_default()));
    }
    // Fetched several at once, as a build does.
    let realised = realise_all(
        ctx,
        &store,
        &plans,
        &jobs,
        None,
        &mut StoreChanges::default(),
        observer,
    )?;
    for ((name, _), Realised { pin, size, .. }) in jobs.into_iter().zip(realised) {
        let before = old.inputs.get(&name).map(|l| l.pin.clone());
        if before.as_ref() != Some(&pin) {
            report.changed.insert(name.clone(), (before, pin.clone()));
        }
        let size = size.or_else(|| {
            old.inputs
                .get(&name)
                .filter(|l| l.pin == pin)
                .and_then(|l| l.size)
        });
        lock.inputs.insert(
            name.clone(),
            LockedInput {
                urls: set.inputs[&name].urls.clone(),
                pin,
                size,
            },
        );
    }
    report.written = lock.save(&ctx.lock_path)?;
    Ok(report)
}
