//! The errors of switching, rolling back and inspecting a root, with their `help:` lines.

use std::io;
use std::path::PathBuf;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("generation {0} does not exist in this store")]
    NoSuchGeneration(u64),
    #[error("the store has no generations yet")]
    NoGenerations,
    #[error("there is no generation before {0} to roll back to")]
    NothingToRollBackTo(u64),
    #[error("root `{}` has no active generation to roll back from", .0.display())]
    NotActive(PathBuf),
    #[error("rootfs `{}` of generation {generation} is missing from the store", path.display())]
    MissingRootfs { generation: u64, path: PathBuf },
    #[error("missing host prerequisites under `{}`: {}", root.display(), missing.join(", "))]
    Prerequisites { root: PathBuf, missing: Vec<String> },
    #[error("{} in root `{}` {} not managed by kbuild; nothing was changed:\n{}",
        if paths.len() == 1 { "this path" } else { "these paths" }, root.display(),
        if paths.len() == 1 { "exists and is" } else { "exist and are" },
        paths.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Unmanaged { root: PathBuf, paths: Vec<String> },
    #[error("`{path}` was replaced by hand, and an earlier original of it is already kept in `{}`", kept.display())]
    AlreadyAdopted { path: String, kept: PathBuf },
    #[error("`{}` is a symlink or not a directory; kbuild will not write through it", .0)]
    UnsafeParent(String),
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
    #[error("corrupt activation state `{}`", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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
            SwitchError::Prerequisites { .. } => Some(
                "create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)".into(),
            ),
            SwitchError::NoGenerations => Some("run `kbuild build master` first".into()),
            SwitchError::NoSuchGeneration(_) => Some("`kbuild generations` lists them".into()),
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
