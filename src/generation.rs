//! Generations: numbered, immutable records of the rootfs builds (like Nix's
//! `system-N-link`), kept in the store at `.kbuild/generations/<N>.json`. They are the roots
//! the garbage collector keeps and the targets `switch` and `rollback` move between.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::observe::Observer;
use crate::store::{LockMode, Store, StoreError, StorePath};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub version: u32,
    pub number: u64,
    pub rootfs: StorePath,
    pub recipes: Vec<String>,
    pub variables: BTreeMap<String, String>,
    /// Input name → pin actually used: the sha256 hex, or `sha512:<hex>` (see `Pin::key`).
    pub inputs: BTreeMap<String, String>,
    /// Host paths that must exist before this generation may be switched to.
    pub prerequisites: Vec<String>,
    /// RFC 3339, UTC.
    pub created: String,
}

/// What a build wants recorded.
#[derive(Clone, Debug)]
pub struct NewGeneration {
    pub rootfs: StorePath,
    pub recipes: Vec<String>,
    pub variables: BTreeMap<String, String>,
    pub inputs: BTreeMap<String, String>,
    pub prerequisites: Vec<String>,
}

impl NewGeneration {
    fn same_as(&self, g: &Generation) -> bool {
        self.rootfs == g.rootfs
            && self.recipes == g.recipes
            && self.variables == g.variables
            && self.inputs == g.inputs
            && self.prerequisites == g.prerequisites
    }
}

/// Whether `record` added a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    New(u64),
    Unchanged(u64),
}

impl Recorded {
    pub fn number(self) -> u64 {
        match self {
            Recorded::New(n) | Recorded::Unchanged(n) => n,
        }
    }
}

fn dir(store: &Store) -> PathBuf {
    store.bookkeeping().join("generations")
}

/// All generations, oldest first.
pub fn list(store: &Store) -> Result<Vec<Generation>, StoreError> {
    let numbers = numbers(store)?;
    let mut out = Vec::with_capacity(numbers.len());
    for n in numbers {
        if let Some(g) = get(store, n)? {
            out.push(g);
        }
    }
    Ok(out)
}

pub fn get(store: &Store, number: u64) -> Result<Option<Generation>, StoreError> {
    crate::store::read_json(&dir(store).join(format!("{number}.json")))
}

/// The recorded generation numbers, ascending (from the `<N>.json` names).
fn numbers(store: &Store) -> Result<Vec<u64>, StoreError> {
    let mut numbers: Vec<u64> = fs_err::read_dir(dir(store))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

fn newest_number(store: &Store) -> Result<u64, StoreError> {
    Ok(numbers(store)?.last().copied().unwrap_or(0))
}

/// Records `new` as the next generation unless the newest one is identical.
pub fn record(
    store: &Store,
    new: NewGeneration,
    observer: &dyn Observer,
) -> Result<Recorded, StoreError> {
    let _lock = crate::store::FileLock::acquire(
        &dir(store).join(".lock"),
        LockMode::Exclusive,
        "the generation list",
        observer,
    )?;
    let newest = newest_number(store)?;
    if newest > 0
        && let Some(g) = get(store, newest)?
        && new.same_as(&g)
    {
        return Ok(Recorded::Unchanged(newest));
    }
    let number = newest + 1;
    let g = Generation {
        version: 1,
        number,
        rootfs: new.rootfs,
        recipes: new.recipes,
        variables: new.variables,
        inputs: new.inputs,
        prerequisites: new.prerequisites,
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    };
    let mut json = serde_json::to_vec_pretty(&g).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::fs::write_atomic(&dir(store).join(format!("{number}.json")), &json)?;
    Ok(Recorded::New(number))
}
