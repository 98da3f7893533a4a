//! The temporary entries this process made (store scratch directories, temp files of atomic
//! writes), so that an interrupted command (Ctrl-C) can remove them before it exits instead
//! of leaving them for the next `kbuild gc`.
//!
//! Entries are recorded when made and never unrecorded: a finished entry was renamed onto
//! its final name or removed, so nothing is left at the recorded path, and its random name is
//! never handed out again while this process lives.
//!
//! Also what an interrupt leaves behind that the user must hear of (a health gate that did
//! not finish, see [`set_left`]): the command line's handler says it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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

/// Removes every recorded entry still present (never following symlinks) and returns how
/// many were removed. Other threads may still be writing into a scratch directory, so a
/// removal is retried a few times. The list stays locked: no entry is recorded after this.
pub fn remove_tracked() -> usize {
    let tracked = TRACKED.lock().unwrap_or_else(|e| e.into_inner());
    let mut removed = 0;
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
