//! The journal of a switch (`etc/.kbuild/journal.json`: the states it goes from and to, and
//! its unit actions) and the idempotent steps that bring a root to the journal's target, so
//! that the next command completes a switch interrupted at any point.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::beneath::{Beneath, Entry};
use super::root::{Root, State, ancestors, is_our_link, write_json};
use super::{STATE_DIR, SwitchError, UnitAction, fault};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Journal {
    pub version: u32,
    pub from: State,
    pub to: State,
    /// The unit actions of this switch: after a crash, the switch that completes it carries
    /// them out too (the daemons must not keep running the old configuration).
    #[serde(default)]
    pub units: Vec<UnitAction>,
}

/// Records the switch `plan` describes (temp file, fsync, rename) before anything changes.
pub(crate) fn begin(root: &Root, plan: &super::Plan) -> Result<Journal, SwitchError> {
    let journal = Journal {
        version: 1,
        from: plan.from.clone(),
        to: plan.to.clone(),
        units: plan.units.clone(),
    };
    root.ensure_state_dir()?;
    write_json(&root.state_dir().join("journal.json"), &journal)?;
    fault::point("journal written");
    Ok(journal)
}

/// Completes an interrupted switch, if any, returning the unit actions it still owes.
pub fn recover(root: &Root) -> Result<Vec<UnitAction>, SwitchError> {
    match root.journal()? {
        Some(j) => {
            execute(root, &j.from, &j.to)?;
            Ok(j.units)
        }
        None => Ok(Vec::new()),
    }
}

/// Brings the root from `from` to `to`. Every step checks before it acts, so running this
/// again after a crash at any point finishes the job.
pub(crate) fn execute(root: &Root, from: &State, to: &State) -> Result<(), SwitchError> {
    let fs = Beneath::open(root.dir())?;
    let adopted = |p: &str| format!("/{STATE_DIR}/adopted{p}");
    let current = format!("/{STATE_DIR}/current");

    // 1. Move adopted originals aside (before anything is linked over them).
    for p in to.adopted.difference(&from.adopted) {
        if matches!(fs.entry(p)?, Entry::Missing) || is_our_link(&fs, p)? {
            continue;
        }
        fs.rename(p, &adopted(p))?;
        fault::point("adopt");
    }
    // 2. Directories for new links, parents first.
    for d in &to.created_dirs {
        if fs.entry(d)? == Entry::Missing {
            fs.mkdir(d)?;
            fault::point("mkdir");
        }
    }
    // 3. The flip: one rename switches every path both generations manage.
    let rootfs = to.rootfs.as_ref().expect("a target state has a rootfs");
    if fs.entry(&current)? != Entry::Symlink(rootfs.clone()) {
        fs.replace_symlink(&current, rootfs)?;
        fault::point("flip");
    }
    // 4. Links for paths the new generation adds.
    for p in &to.managed {
        if !is_our_link(&fs, p)? {
            fs.replace_symlink(p, &Root::link_target(p))?;
            fault::point("link");
        }
    }
    // 5. Links of paths no longer managed.
    for p in from.managed.difference(&to.managed) {
        if is_our_link(&fs, p)? {
            fs.unlink(p)?;
            fault::point("unlink");
        }
    }
    // 6. Originals whose path is no longer managed come back.
    for p in from.adopted.difference(&to.adopted) {
        if fs.entry(&adopted(p))? != Entry::Missing && fs.entry(p)? == Entry::Missing {
            fs.rename(&adopted(p), p)?;
            fault::point("restore");
        }
        // Empty directories left under adopted/ by the restore go too.
        for dir in ancestors(&adopted(p)) {
            if dir.len() <= format!("/{STATE_DIR}/adopted").len() || !fs.rmdir(&dir)? {
                break;
            }
        }
    }
    // 7. Directories kbuild created that no managed path needs any more, deepest first;
    //    a directory holding someone else's files stays.
    let needed: BTreeSet<String> = to
        .managed
        .iter()
        .chain(to.adopted.iter())
        .flat_map(|p| ancestors(p))
        .collect();
    let mut created: Vec<&String> = from.created_dirs.union(&to.created_dirs).collect();
    created.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    let mut kept = BTreeSet::new();
    for d in created {
        if needed.contains(d) {
            kept.insert(d.clone());
        } else if fs.entry(d)? != Entry::Missing {
            if fs.rmdir(d)? {
                fault::point("rmdir");
            } else {
                kept.insert(d.clone());
            }
        }
    }
    fs.sync_dir("etc")?;
    fs.sync_dir("usr/local/bin")?;
    // 8. Record the new state, then retire the journal.
    let state_dir = root.state_dir();
    let mut state = to.clone();
    state.created_dirs = kept;
    write_json(&state_dir.join("state.json"), &state)?;
    fault::point("state written");
    fs_err::remove_file(state_dir.join("journal.json"))?;
    crate::fs::fsync_dir(&state_dir)?;
    Ok(())
}
