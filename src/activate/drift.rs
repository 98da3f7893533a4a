//! Drift: how a root differs from what kbuild recorded for it (`kbuild verify --root`), each
//! difference with the kbuild command that repairs it.

use super::beneath::{Beneath, Entry};
use super::journal::{Way, way};
use super::plan::adopted_path;
use super::root::Root;
use super::{STATE_DIR, SwitchError, roots};
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
    if let Some(j) = root.journal()? {
        let name = |s: &super::State| {
            s.generation
                .map_or("nothing".to_owned(), |n| format!("generation {n}"))
        };
        let n = |g: Option<u64>| g.map_or("N".to_owned(), |n| n.to_string());
        let fix = match way(store, root, &j) {
            Ok(Way::Forward) => format!("`kbuild switch {}` completes it", n(j.to.generation)),
            Ok(Way::Backward(why)) => format!(
                "it cannot be completed ({why}): `kbuild switch {}` undoes it",
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
    let state = root.state()?;
    let (Some(rootfs), Some(active)) = (&state.rootfs, state.generation) else {
        return Ok(out);
    };
    let fs = Beneath::open(root.dir())?;
    let repair = format!("`kbuild switch {active}` repairs it");
    // Where to go when the active generation itself is broken: the newest other one present.
    let elsewhere = match generation::list(store)?
        .into_iter()
        .rev()
        .find(|g| g.number != active && store.canonical_dir().join(g.rootfs.as_str()).is_dir())
    {
        Some(g) => format!(
            "`kbuild switch {}` puts the root on generation {}, the newest other one present",
            g.number, g.number
        ),
        None => {
            "no other generation is present: `kbuild build RECIPE`, then `kbuild switch`".to_owned()
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
    let current = format!("/{STATE_DIR}/current");
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
                "`kbuild switch {active} --adopt` keeps it in {} and puts kbuild's link back",
                adopted_path(p)
            )
        }
    };
    for p in &state.managed {
        match fs.entry(p) {
            Ok(Entry::Missing) => out.push(format!("removed: {p} ({repair})")),
            Ok(Entry::Symlink(t)) if t != Root::link_target(p) => {
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
            Ok(_) => out.push(format!("replaced by a file: {p} ({})", replaced(p))),
            Err(e) => out.push(format!("{p}: {e} (move that away, then {repair})")),
        }
    }
    Ok(out)
}
