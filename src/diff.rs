//! `kbuild diff`: what differs between two generations, and what a switch would do to units.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::activate::{SwitchError, UnitAction, units};
use crate::generation;
use crate::store::Store;

/// Files larger than this, or not UTF-8, are compared as binaries.
const TEXT_LIMIT: u64 = 1 << 20;

#[derive(Debug)]
pub enum Change {
    Added {
        path: String,
    },
    Removed {
        path: String,
    },
    /// A text file: the unified diff.
    Text {
        path: String,
        diff: String,
    },
    /// A binary: sizes and BLAKE3 digests.
    Binary {
        path: String,
        old: (u64, String),
        new: (u64, String),
    },
}

#[derive(Debug)]
pub struct Diff {
    /// The profile both generations belong to (named in the headers unless `default`).
    pub profile: String,
    pub from: u64,
    pub to: u64,
    pub changes: Vec<Change>,
    pub units: Vec<UnitAction>,
}

fn rootfs_of(store: &Store, profile: &str, n: u64) -> Result<PathBuf, SwitchError> {
    let g = generation::get(store, profile, n)?.ok_or_else(|| SwitchError::NoSuchGeneration {
        number: n,
        profile: profile.to_owned(),
        elsewhere: Vec::new(),
    })?;
    let p = store.path_of(&g.rootfs);
    if !p.is_dir() {
        return Err(SwitchError::MissingRootfs {
            generation: n,
            path: p,
        });
    }
    // Damage inside the rootfs (an `etc/` replaced by a link) is refused, as a switch does.
    crate::store::verify::check_unmodified_closure(store, &g.rootfs)?;
    Ok(p)
}

fn files(rootfs: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in crate::fs::walk_tree(rootfs)?.sort_by_file_name() {
        let entry = entry.map_err(crate::fs::walk_error)?;
        if !entry.file_type().is_dir() {
            let rel = entry.path().strip_prefix(rootfs).expect("under rootfs");
            out.insert(format!("/{}", rel.to_string_lossy()));
        }
    }
    Ok(out)
}

/// Compares generations `from` and `to` of `profile`.
pub fn diff(store: &Store, profile: &str, from: u64, to: u64) -> Result<Diff, SwitchError> {
    let (a, b) = (
        rootfs_of(store, profile, from)?,
        rootfs_of(store, profile, to)?,
    );
    let (fa, fb) = (files(&a)?, files(&b)?);
    let mut changes = Vec::new();
    for p in fa.union(&fb) {
        let rel = p.trim_start_matches('/');
        match (fa.contains(p), fb.contains(p)) {
            (true, false) => changes.push(Change::Removed { path: p.clone() }),
            (false, true) => changes.push(Change::Added { path: p.clone() }),
            _ => {
                let (pa, pb) = (a.join(rel), b.join(rel));
                if units::same_file(&pa, &pb)? {
                    continue;
                }
                changes.push(compare(p, &pa, &pb)?);
            }
        }
    }
    Ok(Diff {
        profile: profile.to_owned(),
        from,
        to,
        changes,
        units: units::plan(Some(&a), &b)?,
    })
}

fn compare(path: &str, a: &Path, b: &Path) -> io::Result<Change> {
    let (ma, mb) = (fs_err::metadata(a)?, fs_err::metadata(b)?);
    if ma.len() <= TEXT_LIMIT && mb.len() <= TEXT_LIMIT {
        let (ta, tb) = (fs_err::read(a)?, fs_err::read(b)?);
        if let (Ok(ta), Ok(tb)) = (String::from_utf8(ta), String::from_utf8(tb)) {
            let diff = similar::TextDiff::from_lines(&ta, &tb)
                .unified_diff()
                .context_radius(2)
                .header(&format!("a{path}"), &format!("b{path}"))
                .to_string();
            return Ok(Change::Text {
                path: path.to_owned(),
                diff,
            });
        }
    }
    let hash = |p: &Path| -> io::Result<String> {
        let mut h = blake3::Hasher::new();
        h.update_reader(fs_err::File::open(p)?)?;
        Ok(h.finalize().to_hex()[..16].to_owned())
    };
    Ok(Change::Binary {
        path: path.to_owned(),
        old: (ma.len(), hash(a)?),
        new: (mb.len(), hash(b)?),
    })
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A host's generations are named with their profile, as `build` and `switch` name them.
        let of = if self.profile == generation::DEFAULT_PROFILE {
            String::new()
        } else {
            format!(" of {}", self.profile)
        };
        writeln!(f, "generation {}{of} -> {}{of}", self.from, self.to)?;
        if self.changes.is_empty() {
            writeln!(f, "no file differs")?;
        }
        for c in &self.changes {
            match c {
                Change::Added { path } => writeln!(f, "added    {path}")?,
                Change::Removed { path } => writeln!(f, "removed  {path}")?,
                Change::Binary { path, old, new } => writeln!(
                    f,
                    "changed  {path} (binary: {} bytes blake3 {}… -> {} bytes blake3 {}…)",
                    old.0, old.1, new.0, new.1
                )?,
                Change::Text { path, diff } => {
                    writeln!(f, "changed  {path}")?;
                    for line in diff.lines() {
                        writeln!(f, "    {line}")?;
                    }
                }
            }
        }
        if !self.units.is_empty() {
            writeln!(
                f,
                "unit actions of a switch {}{of} -> {}{of}:",
                self.from, self.to
            )?;
            for u in &self.units {
                writeln!(f, "  {u}")?;
            }
        }
        Ok(())
    }
}
