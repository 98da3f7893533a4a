//! Drift: how a root differs from what kbuild recorded for it (`kbuild verify --root`).

use super::beneath::{Beneath, Entry};
use super::root::Root;
use super::{STATE_DIR, SwitchError};

/// Differences between a root and its recorded state: links changed, removed or replaced by
/// hand, a flip point that moved, an interrupted switch.
pub fn drift(root: &Root) -> Result<Vec<String>, SwitchError> {
    if !root.dir().is_dir() {
        return Ok(vec![
            "the root does not exist (check `--root` / KBUILD_ROOT)".to_owned(),
        ]);
    }
    let state = root.state()?;
    let mut out = Vec::new();
    if root.interrupted() {
        out.push("an interrupted switch is pending (`kbuild switch` completes it)".to_owned());
    }
    let fs = Beneath::open(root.dir())?;
    if let Some(rootfs) = &state.rootfs {
        match fs.entry(&format!("/{STATE_DIR}/current"))? {
            Entry::Symlink(t) if t == *rootfs => {
                if !rootfs.is_dir() {
                    out.push(format!(
                        "the active rootfs `{}` is missing from the store",
                        rootfs.display()
                    ));
                }
            }
            Entry::Symlink(t) => out.push(format!(
                "/{STATE_DIR}/current points to `{}` instead of `{}`",
                t.display(),
                rootfs.display()
            )),
            _ => out.push(format!("/{STATE_DIR}/current is missing")),
        }
    }
    for p in &state.managed {
        match fs.entry(p) {
            Ok(Entry::Missing) => out.push(format!("removed: {p}")),
            Ok(Entry::Symlink(t)) if t != Root::link_target(p) => {
                out.push(format!("link changed: {p} -> {}", t.display()));
            }
            Ok(Entry::Symlink(_)) => {
                if !root.host(p).exists() {
                    out.push(format!("dangling: {p}"));
                }
            }
            Ok(_) => out.push(format!("replaced by a file: {p}")),
            Err(e) => out.push(format!("{p}: {e}")),
        }
    }
    Ok(out)
}
