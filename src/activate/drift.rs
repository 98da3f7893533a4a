//! Drift: how a root differs from what kbuild recorded for it (`kbuild verify --root`), each
//! difference with the kbuild command that repairs it.

use super::beneath::{Beneath, Entry};
use super::plan::adopted_path;
use super::root::{Root, expected_link};
use super::{STATE_DIR, SwitchError, reconstruct, roots};
use crate::generation;
use crate::store::Store;

/// Differences between a root and its recorded state — links changed, removed or replaced by
/// hand, a flip point that moved, an interrupted switch, a rootfs gone from the store — each
/// naming the command that repairs it.
pub fn drift(store: &Store, root: &Root) -> Result<Vec<String>, SwitchError> {
    if !root.dir().is_dir() {
        return Ok(vec![
            "the root does not exist (check `--root` / KBUILD_ROOT)".to_owned(),
        ]);
    }
    let mut out = Vec::new();
    // kbuild's own entries of the wrong kind: nothing else can be judged until they are fixed.
    if let Err(e @ SwitchError::StateEntry { .. }) = root.check_state_dir() {
        out.push(format!("{e} ({})", e.help().unwrap_or_default()));
        return Ok(out);
    }
    // The health record: `switch` and `check` refuse a damaged one (or one of another
    // version), so it is a finding here, with the same fix; the rest can still be judged.
    if let Err(e) = super::health::record(root) {
        // On one line: the error and its causes (what the parser said, and where).
        let mut what = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            what.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out.push(match e.help() {
            Some(help) => format!("{what} ({help})"),
            None => what,
        });
    }
    if let Some(j) = root.journal()? {
        let name = |s: &super::State| {
            s.generation
                .map_or("nothing".to_owned(), |n| format!("generation {n}"))
        };
        let n = |g: Option<u64>| g.map_or("N".to_owned(), |n| n.to_string());
        // The store as it was when the switch began: a repair run from a store that moved
        // since needs this store's place.
        let flags = store_flags(store, j.from.store.as_ref().or(j.to.store.as_ref()));
        let fs = Beneath::open(root.dir())?;
        // What recovery will do, decided as the next switch decides it.
        let fix = match super::journal::recovery_preview(&fs, store, root, j.clone()) {
            Ok((r, _, _)) if r.undone.is_none() => {
                format!("`kbuild switch {}{flags}` completes it", n(j.to.generation))
            }
            Ok((r, _, _)) => format!(
                "it cannot be completed ({}): `kbuild switch {}{flags}` undoes it",
                r.undone.unwrap_or_default(),
                n(j.from.generation)
            ),
            Err(e) => match e.help() {
                Some(help) => format!("{e}: {help}"),
                None => e.to_string(),
            },
        };
        out.push(format!(
            "an interrupted switch from {} to {} is pending ({fix})",
            name(&j.from),
            name(&j.to)
        ));
        // What the links look like mid-switch is the journal's business, not drift.
        return Ok(out);
    }
    let fs = Beneath::open(root.dir())?;
    let current = format!("/{STATE_DIR}/current");
    let state = root.state()?;
    // Originals kept in adopted/ that no record names (the record was lost or moved away):
    // the next switch records them again (see `reconstruct`), so none is stranded.
    let (rebuilt, stale) = reconstruct::complete(store, &fs, state.clone(), None)?;
    let switch = rebuilt.generation.map_or("kbuild switch".to_owned(), |n| {
        format!(
            "kbuild switch {n}{}",
            store_flags(store, state.store.as_ref())
        )
    });
    for p in reconstruct::unrecorded_originals(&fs, &state.adopted)? {
        out.push(format!(
            "unrecorded original: {} (kept for {p}; no record names it: `{switch}` records it again, and it comes back once kbuild no longer manages {p})",
            adopted_path(&p)
        ));
    }
    // kbuild's entries without its record: the flip point (or kept originals) but no
    // state.json. A switch to the flip point's generation records the root again.
    if fs.entry(&format!("/{STATE_DIR}/state.json"))? == Entry::Missing {
        let flip = match fs.entry(&current)? {
            Entry::Symlink(t) => Some(t),
            _ => None,
        };
        let kept = !fs.list(&format!("/{STATE_DIR}/adopted"))?.is_empty();
        if flip.is_some() || kept {
            let object = roots::object_name(flip.as_deref());
            // The switch names the profile when it is not `default` (the root's record, which
            // would say so, is the thing missing).
            let n = generation::list_all(store)?
                .into_iter()
                .rev()
                .find(|g| object.as_ref() == Some(&g.rootfs))
                .map_or("N".to_owned(), |g| {
                    if g.profile == generation::DEFAULT_PROFILE {
                        g.number.to_string()
                    } else {
                        format!("{} --profile {}", g.number, g.profile)
                    }
                });
            out.push(format!(
                "/{STATE_DIR}/state.json is missing, though kbuild's {} there (`kbuild switch {n}{}` records the root again; kbuild's own links are recognised)",
                if flip.is_some() { "flip point `current` is" } else { "kept originals are" },
                store_flags(store, None)
            ));
        }
        return Ok(out);
    }
    let (Some(rootfs), Some(active)) = (&state.rootfs, state.generation) else {
        return Ok(out);
    };
    let flags = store_flags(store, state.store.as_ref());
    let repair = format!("`kbuild switch {active}{flags}` repairs it");
    // Where to go when the active generation itself is broken: the newest other one present
    // that passes the check `switch` makes (a damaged one would be refused, or worse).
    let elsewhere = match generation::list(store, state.profile_name())?
        .into_iter()
        .rev()
        .find(|g| {
        g.number != active
            && store.canonical_dir().join(g.rootfs.as_str()).is_dir()
            && crate::store::verify::check_unmodified_closure(store, &g.rootfs).is_ok()
    }) {
        Some(g) => format!(
            "`kbuild switch {}{flags}` puts the root on generation {}, the newest other one present",
            g.number, g.number
        ),
        None => {
            "no other generation is present and intact: `kbuild verify --repair` repairs damaged ones, or `kbuild build RECIPE`, then `kbuild switch`".to_owned()
        }
    };
    // A store that moved (known by its id): every link dangles through the old path, and
    // `roots::moved_store` reports that as one problem with its switch.
    if !rootfs.is_dir()
        && roots::owner(store, &state) == roots::Owner::Ours
        && roots::object_name(Some(rootfs)).is_some_and(|o| store.contains(&o))
    {
        return Ok(out);
    }
    if !rootfs.is_dir() {
        // Every link dangles: one problem, one way out.
        let fix = &elsewhere;
        out.push(format!(
            "the active rootfs `{}` of generation {active} is missing from the store ({fix})",
            rootfs.display()
        ));
        return Ok(out);
    }
    let flip_ok = fs.entry(&current)? == Entry::Symlink(rootfs.clone());
    match fs.entry(&current)? {
        Entry::Symlink(t) if t == *rootfs => {}
        Entry::Symlink(t) => out.push(format!(
            "{current} points to `{}` instead of `{}` ({repair})",
            t.display(),
            rootfs.display()
        )),
        _ => out.push(format!("{current} is missing ({repair})")),
    }
    // The flip point is on another generation of this store (a switch whose journal was moved
    // away, or a hand edit): the record's links are not what the root shows, and the switch
    // named above starts from what the disk holds.
    if stale {
        return Ok(out);
    }
    // A path replaced by hand is the user's: `--adopt` keeps it aside and puts kbuild's link
    // back — unless an original of it is kept already (one per path).
    let replaced = |p: &str| {
        if state.adopted.contains(p) {
            format!(
                "an original of it is kept in {} already: move this one away, then {repair}",
                adopted_path(p)
            )
        } else {
            format!(
                "`kbuild switch {active} --adopt{flags}` keeps it in {} and puts kbuild's link back",
                adopted_path(p)
            )
        }
    };
    for p in &state.managed {
        match fs.entry(p) {
            Ok(Entry::Missing) => out.push(format!("removed: {p} ({repair})")),
            // kbuild's link through the flip point where the generation has an alias (an
            // older kbuild's): the switch itself puts the alias's text back.
            Ok(Entry::Symlink(t))
                if t != expected_link(Some(rootfs), p) && t == Root::link_target(p) =>
            {
                out.push(format!("link changed: {p} -> {} ({repair})", t.display()));
            }
            Ok(Entry::Symlink(t)) if t != expected_link(Some(rootfs), p) => {
                out.push(format!(
                    "link changed: {p} -> {} ({})",
                    t.display(),
                    replaced(p)
                ));
            }
            Ok(Entry::Symlink(_)) => {
                // Through a moved flip point every link dangles: that is one problem.
                if flip_ok && !root.host(p).exists() {
                    out.push(format!(
                        "dangling: {p} (generation {active}'s rootfs lacks it; {elsewhere})"
                    ));
                }
            }
            Ok(Entry::Directory) => {
                out.push(format!("replaced by a directory: {p} ({})", replaced(p)))
            }
            Ok(_) => out.push(format!("replaced by a file: {p} ({})", replaced(p))),
            Err(e) => out.push(format!("{p}: {e} (move that away, then {repair})")),
        }
    }
    // Files the active rootfs has that the root does not link (a switch made while the
    // rootfs lacked them, repaired since): the next switch to it adds them.
    if flip_ok {
        for p in super::plan::rootfs_files(rootfs)?.difference(&state.managed) {
            out.push(format!(
                "not linked: {p} (generation {active} has it; {repair})"
            ));
        }
    }
    Ok(out)
}

/// The `--store` a repair command needs: this store's place, when the root recorded another
/// (the store moved) — a command run without it would look for the store where it was.
fn store_flags(store: &Store, recorded: Option<&std::path::PathBuf>) -> String {
    let here = store.canonical_dir();
    match recorded {
        Some(r) if *r != here => format!(" --store {}", here.display()),
        _ => String::new(),
    }
}
