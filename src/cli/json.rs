//! `--json` output: one document per command, each with `"version": 1`. The schemas are
//! documented in docs/json.md; a field is only ever added within a version, never renamed or
//! removed (that takes a new version).

use serde::Serialize;

/// The schema version of every `--json` document this build writes.
pub const VERSION: u32 = 1;

/// Prints `doc` as one pretty-printed JSON document on stdout.
pub fn print(doc: &impl Serialize) {
    let text = serde_json::to_string_pretty(doc).expect("JSON documents serialize");
    outln!("{text}");
}

/// `kbuild diff --json`.
#[derive(Serialize)]
pub struct Diff {
    pub version: u32,
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
    /// The unit actions a switch from `from` to `to` would take.
    pub units: Vec<kbuild::activate::UnitAction>,
}

/// One changed path of a diff.
#[derive(Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    Added {
        path: String,
    },
    Removed {
        path: String,
    },
    Text {
        path: String,
        /// The unified diff.
        diff: String,
    },
    Binary {
        path: String,
        old: Blob,
        new: Blob,
    },
}

/// A binary file's size and BLAKE3 digest.
#[derive(Serialize)]
pub struct Blob {
    pub size: u64,
    pub blake3: String,
}

impl Diff {
    pub fn new(d: &kbuild::diff::Diff) -> Diff {
        use kbuild::diff::Change as C;
        let blob = |(size, blake3): &(u64, String)| Blob {
            size: *size,
            blake3: blake3.clone(),
        };
        Diff {
            version: VERSION,
            from: d.from,
            to: d.to,
            changes: d
                .changes
                .iter()
                .map(|c| match c {
                    C::Added { path } => Change::Added { path: path.clone() },
                    C::Removed { path } => Change::Removed { path: path.clone() },
                    C::Text { path, diff } => Change::Text {
                        path: path.clone(),
                        diff: diff.clone(),
                    },
                    C::Binary { path, old, new } => Change::Binary {
                        path: path.clone(),
                        old: blob(old),
                        new: blob(new),
                    },
                })
                .collect(),
            units: d.units.clone(),
        }
    }
}

/// `kbuild switch --dry-run --json` and `kbuild rollback --dry-run --json`: the whole plan.
#[derive(Serialize)]
pub struct Plan {
    pub version: u32,
    pub root: String,
    /// The profiles of `from` and `to` (null with the generation).
    pub from_profile: Option<String>,
    pub to_profile: Option<String>,
    /// The generation the root is on now (null: none, unmanaged).
    pub from: Option<u64>,
    /// The generation it would be on.
    pub to: Option<u64>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub released: Vec<String>,
    pub adopt: Vec<String>,
    pub rerecorded: Vec<String>,
    pub reconstructed: bool,
    pub restore: Vec<String>,
    pub forgotten: Vec<String>,
    pub blocked_restores: Vec<String>,
    pub unmanaged: Vec<String>,
    pub repairs: Vec<String>,
    /// The recipes of the active and of the target generation, when they differ.
    pub recipes: Option<RecipesChange>,
    pub prerequisites: Vec<Prerequisite>,
    pub units: Vec<kbuild::activate::UnitAction>,
    /// The systemctl command lines, in order: those run before the files change (stops),
    /// then those after.
    pub systemctl: Systemctl,
    pub resumes: bool,
    pub undoes: bool,
    /// The target generation's health checks, and whether they would run.
    pub health: Health,
    /// Null when the switch would go ahead; otherwise why it would be refused (the exit code
    /// is then 1, as for the switch itself).
    pub refused: Option<Refusal>,
}

/// The health checks of a plan's target generation.
#[derive(Serialize)]
pub struct Health {
    /// Whether the checks would run (root `/` with a running systemd).
    pub run: bool,
    /// Why they would not (null when they would, or when there are none).
    pub not_run: Option<String>,
    pub checks: Vec<kbuild::health::Check>,
    /// A gate a killed kbuild left (`health.json`'s `pending`), which a switch to its
    /// generation runs again; null when none.
    pub pending: Option<kbuild::activate::health::Pending>,
}

impl Health {
    pub fn new(root: &kbuild::activate::Root, checks: &[kbuild::health::Check]) -> Health {
        let live = kbuild::activate::systemd_is_live(root);
        Health {
            run: live && !checks.is_empty(),
            not_run: (!live && !checks.is_empty()).then(|| not_run_reason(root).to_owned()),
            checks: checks.to_vec(),
            pending: None,
        }
    }
}

/// Why health checks and unit actions are not run on `root`.
pub fn not_run_reason(root: &kbuild::activate::Root) -> &'static str {
    if root.dir() != std::path::Path::new("/") {
        "root is not `/`"
    } else {
        "systemd is not running"
    }
}

/// `kbuild check --json`.
#[derive(Serialize)]
pub struct Check {
    pub version: u32,
    pub root: String,
    /// The active generation and its profile.
    pub profile: String,
    pub generation: u64,
    /// `passed`, `failed`, `not run` (no live systemd here) or `none` (no checks).
    pub status: &'static str,
    /// Why the checks were not run (null otherwise).
    pub not_run: Option<String>,
    /// The generation whose gate was interrupted (null: none).
    pub pending: Option<kbuild::activate::health::Pending>,
    /// The generation that last passed its gate (null: none recorded).
    pub last_good: Option<kbuild::activate::health::GenerationRef>,
    pub checks: Vec<CheckResult>,
}

/// One check of `kbuild check --json`.
#[derive(Serialize)]
pub struct CheckResult {
    /// The check as the generation records it.
    pub check: kbuild::health::Check,
    /// `passed`, `failed` or `not run`.
    pub status: &'static str,
    /// The last attempt's answer (null when not run).
    pub answer: Option<String>,
    pub attempts: u32,
    pub elapsed_ms: u64,
}

#[derive(Serialize)]
pub struct RecipesChange {
    pub from: Vec<String>,
    pub to: Vec<String>,
}

#[derive(Serialize)]
pub struct Prerequisite {
    pub path: String,
    pub present: bool,
    /// Why it does not count as present (null when present).
    pub missing: Option<String>,
    /// A present private key group or others can read (null otherwise).
    pub warning: Option<String>,
}

#[derive(Serialize)]
pub struct Systemctl {
    pub before: Vec<Vec<String>>,
    pub after: Vec<Vec<String>>,
}

#[derive(Serialize)]
pub struct Refusal {
    pub error: String,
    pub help: Option<String>,
}

impl Plan {
    pub fn new(p: &kbuild::activate::Plan, refused: Option<Refusal>, health: Health) -> Plan {
        let (before, after) = kbuild::activate::systemctl_commands(&p.units);
        Plan {
            version: VERSION,
            root: p.root.display().to_string(),
            from_profile: p.from.generation.map(|_| p.from.profile_name().to_owned()),
            to_profile: p.to.generation.map(|_| p.to.profile_name().to_owned()),
            from: p.from.generation,
            to: p.to.generation,
            added: p.added.clone(),
            changed: p.changed.clone(),
            removed: p.removed.clone(),
            released: p.released.clone(),
            adopt: p.adopt.clone(),
            rerecorded: p.rerecorded.clone(),
            reconstructed: p.reconstructed,
            restore: p.restore.clone(),
            forgotten: p.forgotten.clone(),
            blocked_restores: p.blocked_restores.clone(),
            unmanaged: p.unmanaged.clone(),
            repairs: p.repairs.clone(),
            recipes: p.recipes_change.as_ref().map(|(from, to)| RecipesChange {
                from: from.clone(),
                to: to.clone(),
            }),
            prerequisites: p
                .prerequisites
                .0
                .iter()
                .map(|q| Prerequisite {
                    path: q.path.clone(),
                    present: q.missing_line().is_none(),
                    missing: q.missing_line(),
                    warning: q.warning(),
                })
                .collect(),
            units: p.units.clone(),
            systemctl: Systemctl { before, after },
            resumes: p.resumes,
            undoes: p.undoes,
            health,
            refused,
        }
    }
}

/// `kbuild gc --json` (and `gc --dry-run --json`).
#[derive(Serialize)]
pub struct Gc {
    pub version: u32,
    /// True for `--dry-run`: the lists say what would go, and nothing was removed.
    pub dry_run: bool,
    pub generations_removed: Vec<Removed>,
    pub objects_removed: Vec<String>,
    pub temporary_entries_removed: usize,
    pub bytes_freed: u64,
    pub roots_forgotten: Vec<String>,
    pub archives_kept: usize,
    pub archive_bytes: u64,
    pub archives_removed: usize,
}

/// A generation gc removed (or would remove).
#[derive(Serialize)]
pub struct Removed {
    pub profile: String,
    pub generation: u64,
}

/// `kbuild verify --json`.
#[derive(Serialize)]
pub struct Verify {
    pub version: u32,
    pub ok: bool,
    pub objects: usize,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

/// One thing `verify` found.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Problem {
    /// A store object that does not hash to its name (or is not read-only...).
    Corrupt { object: String, problem: String },
    /// A generation whose rootfs object is not in the store.
    Missing { generation: u64, rootfs: String },
    /// A root's links differ from its active generation.
    Drift { root: String, problem: String },
    /// A push cache entry (`STORE/.kbuild/oci/blobs/<object>.json`) whose object does not
    /// compress to the blob it names, or that cannot be right at all.
    PushCache { entry: String, problem: String },
}
