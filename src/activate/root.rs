//! A root and what kbuild records in it: `etc/.kbuild/state.json` (the active generation, the
//! managed paths, the directories kbuild created, the adopted originals) and the root's lock.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::beneath::{Beneath, Entry};
use super::disk::Disk;
use super::journal::Journal;
use super::{STATE_DIR, SwitchError};
use crate::observe::Observer;
use crate::store::{FileLock, LockMode, StoreId};

/// What kbuild knows about a root: written atomically to `state.json` after each switch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// 2 since states record `store_id`; version 1 states are read as they are.
    pub version: u32,
    /// The store the active generation comes from (absolute, canonical when it was written).
    pub store: Option<PathBuf>,
    /// That store's id (`store/.kbuild/id`): the store is recognised by it wherever it is
    /// mounted or moved. Absent in version 1 states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
    /// The profile the root belongs to (recorded at its first switch; absent: `default`,
    /// which is also how states written before profiles read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The active generation's number, in [`State::profile_name`].
    pub generation: Option<u64>,
    /// Absolute path of the active rootfs.
    pub rootfs: Option<PathBuf>,
    /// Absolute paths (as seen inside the root) that are kbuild's symlinks.
    pub managed: BTreeSet<String>,
    /// Directories kbuild created (removed again once empty and unneeded).
    pub created_dirs: BTreeSet<String>,
    /// Paths whose original was moved to `adopted/`.
    pub adopted: BTreeSet<String>,
}

impl State {
    /// The root's profile: the recorded one, else `default`.
    pub fn profile_name(&self) -> &str {
        self.profile
            .as_deref()
            .unwrap_or(crate::generation::DEFAULT_PROFILE)
    }
}

/// How a state records `profile`: `default` is not written (absent reads as `default`), so
/// the state of a root that never used profiles stays as it was.
pub(crate) fn profile_field(profile: &str) -> Option<String> {
    (profile != crate::generation::DEFAULT_PROFILE).then(|| profile.to_owned())
}

/// A root filesystem kbuild switches generations in.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A root named by `dir`; canonical when it exists, so that `/srv/m1`, `../m1` and a
    /// symlink to it are one root (one lock, one registration with the store).
    pub fn new(dir: &Path) -> Root {
        let dir = std::fs::canonicalize(dir)
            .or_else(|_| std::path::absolute(dir))
            .unwrap_or_else(|_| dir.to_owned());
        Root { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.join(STATE_DIR)
    }

    /// The host path of an absolute path inside the root.
    pub fn host(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// The link text of a managed path: relative, through the flip point.
    pub(crate) fn link_target(path: &str) -> PathBuf {
        let depth = path.trim_start_matches('/').matches('/').count();
        let mut t = PathBuf::new();
        for _ in 0..depth {
            t.push("..");
        }
        t.push(STATE_DIR);
        t.push("current");
        t.push(path.trim_start_matches('/'));
        t
    }

    /// The recorded state; an unmanaged root has the default (empty) state.
    pub fn state(&self) -> Result<State, SwitchError> {
        self.check_state_dir()?;
        read_json(&self.state_dir().join("state.json"))
            .map(|s: Option<State>| s.unwrap_or_default())
    }

    pub(crate) fn journal(&self) -> Result<Option<Journal>, SwitchError> {
        self.check_state_dir()?;
        read_json(&self.state_dir().join("journal.json"))
    }

    /// State is read only from a real `etc/.kbuild` directory: a journal planted behind a
    /// symlink would otherwise be executed. kbuild's own entries must be of their kind too
    /// (`current` a symlink, `state.json`, `journal.json` and `health.json` files, `adopted` a
    /// directory):
    /// anything else is found here, before a plan is made or a journal written, and named
    /// with the way out.
    pub(crate) fn check_state_dir(&self) -> Result<(), SwitchError> {
        if !self.dir.is_dir() {
            return Ok(()); // nothing to read; `lock` reports a missing root
        }
        let fs = Beneath::open(&self.dir)?;
        match fs.entry(&format!("/{STATE_DIR}"))? {
            Entry::Missing => return Ok(()),
            Entry::Directory => {}
            _ => {
                return Err(SwitchError::UnsafeParent(
                    self.state_dir().display().to_string(),
                ));
            }
        }
        for name in [
            "current",
            "state.json",
            "journal.json",
            "health.json",
            "adopted",
        ] {
            let entry = fs.entry(&format!("/{STATE_DIR}/{name}"))?;
            let found = match (&entry, name) {
                (Entry::Missing, _)
                | (Entry::Symlink(_), "current")
                | (Entry::Other, "state.json" | "journal.json" | "health.json")
                | (Entry::Directory, "adopted") => continue,
                (Entry::Directory, _) => "a directory",
                (Entry::Symlink(_), _) => "a symlink",
                _ => "a file",
            };
            return Err(self.wrong_entry(&fs, name, found, &entry));
        }
        Ok(())
    }

    /// The error for kbuild's entry `name` found to be `found`, with the commands that fix it.
    fn wrong_entry(&self, fs: &Beneath, name: &str, found: &str, entry: &Entry) -> SwitchError {
        let path = self.state_dir().join(name);
        let p = path.display();
        let empty_dir = *entry == Entry::Directory
            && fs
                .list(&format!("/{STATE_DIR}/{name}"))
                .is_ok_and(|l| l.is_empty());
        let away = if empty_dir {
            format!("remove it (`rmdir {p}`)")
        } else {
            format!("move it away (`mv {p} {p}.bad`)")
        };
        // The generation to name: the recorded one, when the record can be read.
        let state: Option<State> = if name == "state.json" {
            None
        } else {
            fs.entry(&format!("/{STATE_DIR}/state.json"))
                .ok()
                .filter(|e| *e == Entry::Other)
                .and_then(|_| {
                    read_json(&self.state_dir().join("state.json"))
                        .ok()
                        .flatten()
                })
        };
        let n = state
            .as_ref()
            .and_then(|s| s.generation)
            .map_or("N".to_owned(), |n| n.to_string());
        // Shell-quoted: the line is a command to type.
        let root = crate::unit_name::shell_quote(&self.dir.display().to_string());
        let then = match name {
            "current" => {
                format!("then `kbuild switch {n} --root {root}` puts kbuild's flip point back")
            }
            "state.json" => format!(
                "then `kbuild switch N --root {root}` records the root again on generation N (kbuild's own links are recognised)"
            ),
            "health.json" => {
                "then run the command again (the next gated switch records the last good generation anew)".to_owned()
            }
            "journal.json" => format!(
                "then `kbuild switch N --root {root}` puts the root on generation N (kbuild's links are recognised)"
            ),
            _ => {
                let kept = state.map(|s| s.adopted).unwrap_or_default();
                if kept.is_empty() {
                    "then run the command again".to_owned()
                } else {
                    format!(
                        "then `mkdir {p}` and move the originals it records ({}) into it, at the same paths, from where the old entry held them; then run the command again",
                        kept.into_iter().collect::<Vec<_>>().join(", ")
                    )
                }
            }
        };
        SwitchError::StateEntry {
            path: path.clone(),
            found: found.to_owned(),
            help: format!("{away}, {then}"),
        }
    }

    /// Whether an interrupted switch awaits completion.
    pub fn interrupted(&self) -> bool {
        self.state_dir().join("journal.json").exists()
    }

    /// Takes the root's switch lock: a flock on the root directory itself, so that a switch
    /// refused for a missing prerequisite or an unmanaged file leaves no trace in the root.
    pub(crate) fn lock(&self, observer: &dyn Observer) -> Result<FileLock, SwitchError> {
        if !self.dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("root `{}` is not a directory", self.dir.display()),
            )
            .into());
        }
        Ok(FileLock::acquire(
            &self.dir,
            LockMode::Exclusive,
            &format!("root `{}`", self.dir.display()),
            observer,
        )?)
    }

    /// Creates `etc/.kbuild/adopted` without following any symlink on the way.
    pub(crate) fn ensure_state_dir(&self) -> io::Result<()> {
        Beneath::open(&self.dir)?.mkdir_all(&format!("/{STATE_DIR}/adopted"))
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, SwitchError> {
    let Some(bytes) = crate::fs::read_optional(path)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| SwitchError::State {
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    crate::fs::write_atomic(path, &bytes)
}

/// The unit directory whose alias links keep their own text in the root.
const UNIT_DIR: &str = "/etc/systemd/system/";

/// The text of `path`'s link in `rootfs` when it is an alias (`Alias=A` of unit X: a link
/// `etc/systemd/system/A → X`, a bare unit name of the same type in the same directory).
/// systemd takes a link for another name of a unit only while it stays in its unit
/// directories: through the flip point it would load a second copy, so the root gets the
/// rootfs's text itself (X in the root goes through the flip point, so A follows the
/// generation).
pub(crate) fn alias_text(rootfs: &Path, path: &str) -> Option<PathBuf> {
    let name = path.strip_prefix(UNIT_DIR).filter(|n| !n.contains('/'))?;
    let text = std::fs::read_link(rootfs.join(path.trim_start_matches('/'))).ok()?;
    let t = text.to_str()?;
    let suffix = |n: &str| n.rsplit_once('.').map(|(_, s)| s.to_owned());
    let bare = !t.is_empty() && !t.contains('/') && !t.starts_with('.');
    (bare && suffix(t).is_some() && suffix(t) == suffix(name)).then_some(text)
}

/// The link text kbuild puts at managed `path` for the generation whose rootfs is `rootfs`:
/// an alias's own text, else the relative link through the flip point.
pub(crate) fn expected_link(rootfs: Option<&Path>, path: &str) -> PathBuf {
    rootfs
        .and_then(|r| alias_text(r, path))
        .unwrap_or_else(|| Root::link_target(path))
}

/// Whether `path` is kbuild's link: the relative link through the flip point, or the alias
/// text `path` has in one of `rootfses` (the generations a switch goes between).
pub(crate) fn is_our_link(
    fs: &dyn Disk,
    path: &str,
    rootfses: &[Option<&Path>],
) -> io::Result<bool> {
    Ok(match entry_below(fs, path)? {
        Entry::Symlink(t) => {
            t == Root::link_target(path)
                || rootfses
                    .iter()
                    .flatten()
                    .any(|r| alias_text(r, path).as_ref() == Some(&t))
        }
        _ => false,
    })
}

/// What is at `path`, where a path below something that is not a directory (kbuild's link of
/// a path becoming a directory, say) is simply not there. Nothing is followed either way.
pub(crate) fn entry_below(fs: &dyn Disk, path: &str) -> io::Result<Entry> {
    match fs.entry(path) {
        Err(e)
            if e.get_ref()
                .is_some_and(|i| i.is::<super::beneath::NotADirectory>()) =>
        {
            Ok(Entry::Missing)
        }
        other => other,
    }
}

/// The directories above an absolute path, deepest first (`/a/b/c` → `/a/b`, `/a`).
pub(crate) fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        out.push(parent.to_owned());
        p = parent;
    }
    out
}
