//! The temporary entries this process made (store scratch directories, temp files of atomic
//! writes), so that an interrupted command (Ctrl-C) can remove them before it exits instead
//! of leaving them for the next `kbuild gc`.
//!
//! Entries are recorded when made and never unrecorded: a finished entry was renamed onto
//! its final name or removed, so nothing is left at the recorded path, and its random name is
//! never handed out again while this process lives. A directory with a fixed name that is
//! this process's only while it holds a lock on it (an export's staging) is a [`Held`]
//! instead, removed only while still held.
//!
//! Also what an interrupt leaves behind that the user must hear of (a health gate that did
//! not finish, see [`set_left`]): the command line's handler says it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

static HELD: Mutex<Vec<Weak<Held>>> = Mutex::new(Vec::new());

static LEFT: Mutex<Option<String>> = Mutex::new(None);

/// Process groups of children running now (see [`track_group`]).
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Records `pid`, a child spawned in a process group of its own (`process_group(0)`, so the
/// group id is its pid), for [`kill_tracked_groups`]: a SIGINT sent to kbuild alone (`timeout
/// -s INT`, a service stop, a CI cancel) must not leave it running. Undone by [`kill_group`].
pub fn track_group(pid: u32) {
    GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// Kills the process group `pid` (SIGKILL: the child and whatever it started that stayed in
/// its group) and forgets it. A group already gone (ESRCH) is fine.
pub fn kill_group(pid: u32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| *p != pid);
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Kills every process group recorded by [`track_group`] (on interrupt).
pub fn kill_tracked_groups() {
    let groups = std::mem::take(&mut *GROUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in groups {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Records what an interrupt now would leave undone, and the ways out (`None`: nothing).
pub fn set_left(what: Option<String>) {
    *LEFT.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

/// What an interrupt now leaves undone (see [`set_left`]).
pub fn left() -> Option<String> {
    LEFT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Records `path`, a temporary entry this process just made.
pub fn track(path: &Path) {
    let mut tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    // Keep the list short in long runs: forget entries that are gone (renamed or removed).
    if tracked.len() >= 64 {
        tracked.retain(|p| p.symlink_metadata().is_ok());
    }
    tracked.push(path.to_owned());
}

/// A temporary directory with a fixed name that this process holds under an exclusive lock
/// (an export's staging, `DIR.kbuild-tmp`). Unlike a [`track`]ed entry, its path is not
/// this process's for good: once the lock is let go (the directory published or removed),
/// another process may make a directory of that name. So an interrupt removes it only while
/// the lock is still held on the directory at that path, and under this entry's mutex, so
/// that the removal never runs beside the rename that publishes it ([`Held::with`]).
pub struct Held {
    path: PathBuf,
    lock: Mutex<Option<crate::store::FileLock>>,
}

impl Held {
    /// Records `path`, locked by `lock`, for removal on interrupt.
    pub fn new(path: &Path, lock: crate::store::FileLock) -> Arc<Held> {
        let held = Arc::new(Held {
            path: path.to_owned(),
            lock: Mutex::new(Some(lock)),
        });
        let mut all = HELD.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&held));
        held
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the lock (`None` once let go: set it to `None` to let go) while no
    /// interrupt can remove the directory. After an interrupt removed it, this blocks until
    /// the process exits.
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<crate::store::FileLock>) -> R) -> R {
        f(&mut self.lock.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Removes every [`Held`] directory whose lock this process still holds; how many.
fn remove_held() -> usize {
    // Kept locked until the process exits, as the tracked list: a directory held after this
    // point could not be removed.
    let all = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let mut removed = 0;
    for held in all.iter().filter_map(Weak::upgrade) {
        let guard = held.lock.lock().unwrap_or_else(|e| e.into_inner());
        if guard.as_ref().is_some_and(|l| l.is_at(&held.path)) {
            // The command's other threads may still be writing into it (an export's blobs):
            // retried, as a tracked entry is.
            for _ in 0..5 {
                if crate::fs::remove_tree(&held.path).is_ok()
                    && held.path.symlink_metadata().is_err()
                {
                    removed += 1;
                    break;
                }
            }
        }
        // Held until the process exits: the command's thread cannot publish (or otherwise
        // touch) what was just removed.
        std::mem::forget(guard);
        std::mem::forget(held);
    }
    std::mem::forget(all);
    removed
}

/// Removes every recorded entry still present (never following symlinks), and every
/// [`Held`] directory still locked by this process, and returns how many were removed.
/// Other threads may still be writing into a scratch directory, so a removal is retried a
/// few times. The list stays locked: no entry is recorded after this.
pub fn remove_tracked() -> usize {
    let mut removed = remove_held();
    let tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    for p in tracked.iter() {
        if p.symlink_metadata().is_err() {
            continue;
        }
        for _ in 0..5 {
            if crate::fs::remove_tree(p).is_ok() && p.symlink_metadata().is_err() {
                removed += 1;
                break;
            }
        }
    }
    // Keep the lock held until the process exits: a thread still running cannot record (and
    // so leave) a new entry.
    std::mem::forget(tracked);
    removed
}
