//! The errors of switching, rolling back and inspecting a root, with their `help:` lines.

use std::io;
use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("generation {number} does not exist in {}", in_profile(profile))]
    NoSuchGeneration {
        number: u64,
        profile: String,
        /// Other profiles that have a generation of that number.
        elsewhere: Vec<String>,
    },
    #[error("{}", if others.is_empty() && profile == crate::generation::DEFAULT_PROFILE {
        "the store has no generations yet".to_owned()
    } else {
        format!("profile `{profile}` has no generations")
    })]
    NoGenerations {
        profile: String,
        /// The profiles that have generations.
        others: Vec<String>,
    },
    #[error("there is no generation before {active} to roll back to{}",
        if profile == crate::generation::DEFAULT_PROFILE { String::new() } else { format!(" in profile `{profile}`") })]
    NothingToRollBackTo { active: u64, profile: String },
    #[error("root `{}` belongs to profile `{own}`, not `{asked}`; nothing was changed", root.display())]
    OtherProfile {
        root: PathBuf,
        own: String,
        asked: String,
    },
    #[error("root `{}` has no active generation to roll back from", .0.display())]
    NotActive(PathBuf),
    #[error("rootfs `{}` of generation {generation} is missing from the store", path.display())]
    MissingRootfs { generation: u64, path: PathBuf },
    #[error("missing host prerequisites under `{}`: {}", root.display(), missing.join(", "))]
    Prerequisites {
        root: PathBuf,
        missing: Vec<String>,
        /// The fix for each kind of reason present (see `Prerequisites::help`).
        help: String,
    },
    #[error("{} in root `{}` {} not managed by kbuild; nothing was changed:\n{}",
        if paths.len() == 1 { "this path" } else { "these paths" }, root.display(),
        if paths.len() == 1 { "exists and is" } else { "exist and are" },
        paths.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Unmanaged { root: PathBuf, paths: Vec<String> },
    #[error("`{path}` was replaced by hand, and an earlier original of it is already kept in `{}`", kept.display())]
    AlreadyAdopted {
        path: String,
        /// Where that path is on the host.
        host: PathBuf,
        kept: PathBuf,
    },
    #[error("`{}` is a symlink or not a directory; kbuild will not write through it", .0)]
    UnsafeParent(String),
    #[error("the original of `{}` adopted earlier cannot be restored: `{}` was made by hand and is in the way of the kept original `{}`; nothing was changed", path.display(), path.display(), kept.display())]
    RestoreBlocked { path: PathBuf, kept: PathBuf },
    #[error("`{}` is in the way: {why}", path.display())]
    Blocked { path: PathBuf, why: String },
    #[error(
        "cannot complete the interrupted switch from {from} to {to} ({forward}), nor undo it ({backward})"
    )]
    Wedged {
        from: String,
        to: String,
        from_generation: Option<u64>,
        to_generation: Option<u64>,
        forward: Box<SwitchError>,
        backward: Box<SwitchError>,
    },
    #[error("root `{}` is managed from store `{}`, not from `{}` (another store){}", root.display(), theirs.display(), ours.display(),
        if *there { "" } else { "; that store is no longer there" })]
    OtherStore {
        root: PathBuf,
        /// Where the root's store was when it last switched.
        theirs: PathBuf,
        ours: PathBuf,
        /// Whether that store is still at `theirs` (false: moved away or deleted).
        there: bool,
    },
    #[error("cannot record root `{}` in the store's roots registry `{}`; nothing was changed", root.display(), dir.display())]
    Registry {
        root: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kbuild's own entry `{}` is {found}, which kbuild never makes; nothing was changed", path.display())]
    StateEntry {
        path: PathBuf,
        found: String,
        help: String,
    },
    #[error("corrupt activation state `{}`", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{}` records health format version {found}; this kbuild reads version 1", path.display())]
    HealthVersion { path: PathBuf, found: u32 },
    #[error(transparent)]
    Manifest(#[from] crate::health::ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SwitchError {
    pub fn help(&self) -> Option<String> {
        match self {
            SwitchError::Unmanaged { .. } => Some(
                "move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)".into(),
            ),
            SwitchError::Prerequisites { help, .. } => Some(help.clone()),
            SwitchError::RestoreBlocked { path, kept } => Some(format!(
                "move the hand-made `{}` away (e.g. `mv {} {}.local`) and run the command again: the original comes back; or, to give up the original, delete `{}` first",
                path.display(),
                path.display(),
                path.display(),
                kept.display()
            )),
            SwitchError::Blocked { path, .. } => Some(format!(
                "move `{}` away and run `kbuild switch` again: it completes the interrupted switch",
                path.display()
            )),
            SwitchError::Wedged {
                forward,
                backward,
                from_generation,
                to_generation,
                ..
            } => {
                let way = |e: &SwitchError, n: &Option<u64>, does: &str| {
                    let n = n.map_or("N".to_owned(), |n| n.to_string());
                    match e {
                        SwitchError::Blocked { path, .. } => Some(format!(
                            "move `{}` away, then `kbuild switch {n}` {does} it",
                            path.display()
                        )),
                        _ => None,
                    }
                };
                let mut ways: Vec<String> = [
                    way(forward, to_generation, "completes"),
                    way(backward, from_generation, "undoes"),
                ]
                .into_iter()
                .flatten()
                .collect();
                // The same file in both ways: one way out.
                if let (Some(a), Some(b)) = (ways.first(), ways.get(1))
                    && a.split(',').next() == b.split(',').next()
                {
                    ways.truncate(1);
                }
                // A target gone from the store can be re-created.
                for (e, n, does) in [
                    (forward, to_generation, "completes"),
                    (backward, from_generation, "undoes"),
                ] {
                    if let (SwitchError::MissingRootfs { .. }, Some(n)) = (&**e, n) {
                        ways.push(format!(
                            "`kbuild verify --repair` re-creates generation {n}'s rootfs, then `kbuild switch {n}` {does} it"
                        ));
                    }
                }
                let missing = |e: &SwitchError| matches!(e, SwitchError::MissingRootfs { .. });
                if missing(forward) && missing(backward) {
                    ways.push("if neither can be re-created: move `etc/.kbuild/journal.json` in the root away, then `kbuild switch N` puts the root on a generation N that is in the store (kbuild's links are recognised)".to_owned());
                }
                if ways.is_empty() {
                    ways.extend(forward.help().into_iter().chain(backward.help()));
                }
                Some(ways.join("; or "))
            }
            // `--adopt` is refused here (one original per path): the ways that work.
            SwitchError::AlreadyAdopted { host, kept, .. } => Some(format!(
                "kbuild keeps one original per path: move the hand-made `{h}` away (e.g. `mv {h} {h}.local`) and run the command again; or, to give up the kept original, delete `{}` and run the command again with `--adopt`",
                kept.display(),
                h = host.display(),
            )),
            SwitchError::UnsafeParent(p) => Some(format!(
                "kbuild needs a real directory at `{p}`: move what is there away and run the command again"
            )),
            SwitchError::State { path, .. } => Some(state_help(path)),
            SwitchError::HealthVersion { .. } => Some(
                "a newer kbuild wrote it: use that kbuild on this root".to_owned(),
            ),
            SwitchError::Manifest(_) => Some(
                "`kbuild verify --repair` re-creates the generation's rootfs from its sources (or build its recipes again with `kbuild build`)".to_owned(),
            ),
            SwitchError::StateEntry { help, .. } => Some(help.clone()),
            SwitchError::MissingRootfs { generation, .. } => Some(format!(
                "`kbuild verify --repair` re-creates generation {generation}'s rootfs from its sources (or build its recipes again with `kbuild build`); `kbuild generations` lists the others"
            )),
            SwitchError::Io(e) => e
                .get_ref()
                .and_then(|i| i.downcast_ref::<super::beneath::NotADirectory>())
                .map(|n| {
                    SwitchError::UnsafeParent(n.0.display().to_string())
                        .help()
                        .expect("UnsafeParent has a help line")
                }),
            SwitchError::NoGenerations { others, .. } if others.is_empty() => {
                Some("run `kbuild build master` first".into())
            }
            SwitchError::NoGenerations { profile, others } => Some(format!(
                "build it (`kbuild build {}`), or name the profile to switch to: {}",
                if profile == crate::generation::DEFAULT_PROFILE {
                    "RECIPE".to_owned()
                } else {
                    format!("--host {profile}")
                },
                others
                    .iter()
                    .map(|o| format!("`--profile {o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            SwitchError::NoSuchGeneration {
                profile, elsewhere, ..
            } => {
                let list = if profile == crate::generation::DEFAULT_PROFILE {
                    "`kbuild generations` lists them".to_owned()
                } else {
                    format!("`kbuild generations --profile {profile}` lists them")
                };
                Some(match elsewhere.as_slice() {
                    [] => list,
                    some => format!(
                        "{list}; profile {} has one of that number: another profile's generation is switched to with `--profile NAME`",
                        some.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
                    ),
                })
            }
            SwitchError::NothingToRollBackTo { profile, .. }
                if profile != crate::generation::DEFAULT_PROFILE =>
            {
                Some(format!(
                    "rollback stays in the root's profile; `kbuild generations --profile {profile}` lists its generations"
                ))
            }
            SwitchError::OtherProfile {
                root, own, asked, ..
            } => {
                let r = crate::unit_name::shell_quote(&root.display().to_string());
                Some(format!(
                    "`kbuild switch --root {r}` takes the newest generation of `{own}`; to move the root to `{asked}`'s generations, say so: `kbuild switch --profile {asked} --root {r}`"
                ))
            }
            SwitchError::OtherStore { theirs, there: true, .. } => Some(format!(
                "pass `--store {}` to switch the root from its store, or `--adopt` to manage it from this store from now on",
                theirs.display()
            )),
            SwitchError::OtherStore { there: false, .. } => Some(
                "if that store moved, pass its new place as `--store`; to manage the root from this store from now on, pass `--adopt`".into(),
            ),
            SwitchError::Registry { dir, .. } => Some(format!(
                "gc keeps the generation a root uses only while the root is in this registry: make `{}` writable (the only place in the store a switch writes, once per root) and run the switch again",
                dir.display()
            )),
            SwitchError::Store(e) => crate::store::Store::help(e),
            _ => None,
        }
    }
}

/// "this store" for the default profile (as before profiles), else "profile `P`".
fn in_profile(profile: &str) -> String {
    if profile == crate::generation::DEFAULT_PROFILE {
        "this store".to_owned()
    } else {
        format!("profile `{profile}`")
    }
}

/// How to get past a corrupt `state.json` or `journal.json`.
fn state_help(path: &std::path::Path) -> String {
    let p = path.display();
    if path.ends_with("health.json") {
        // Moving it away is not neutral: it holds the rollback target and a pending gate.
        format!(
            "it records the last generation that passed its health gate (the rollback target) and a gate in progress: move it away (`mv {p} {p}.bad`) and run `kbuild switch N` for the generation you know is good (its gate runs and records it again); what the moved file held (`last_good`, `pending`) is lost until then"
        )
    } else if path.ends_with("journal.json") {
        format!(
            "the interrupted switch it records cannot be read: move it away (`mv {p} {p}.bad`), then `kbuild switch N` puts the root on generation N (kbuild's links are recognised); `kbuild verify --root DIR` lists anything left"
        )
    } else {
        format!(
            "move it away (`mv {p} {p}.bad`), then `kbuild switch N` records the root again on generation N (kbuild's own links, its directories and the originals kept in /etc/.kbuild/adopted are recognised; nothing else is replaced)"
        )
    }
}
