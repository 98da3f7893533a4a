//! Advisory file locks (`flock(2)`): builds hold the store lock shared, gc and switch exclusive.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::observe::Observer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock; released when dropped (the kernel also releases it if the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock on `path` (created if missing). If another process holds it, tells the
    /// observer what it is waiting for, then blocks — as cargo does.
    pub fn acquire(
        path: &Path,
        mode: LockMode,
        what: &str,
        observer: &dyn Observer,
    ) -> io::Result<FileLock> {
        // A directory is locked through a read-only descriptor (nothing is created in it).
        let file = if path.is_dir() {
            fs_err::File::open(path)?.into_parts().0
        } else {
            match fs_err::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
            {
                Ok(f) => f.into_parts().0,
                // A read-only store can still be read under a lock (a no-op build).
                Err(e) if path.exists() => fs_err::File::open(path).map_err(|_| e)?.into_parts().0,
                Err(e) => return Err(e),
            }
        };
        let (try_op, block_op) = match mode {
            LockMode::Shared => (
                FlockOperation::NonBlockingLockShared,
                FlockOperation::LockShared,
            ),
            LockMode::Exclusive => (
                FlockOperation::NonBlockingLockExclusive,
                FlockOperation::LockExclusive,
            ),
        };
        match flock(&file, try_op) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                observer.status("Blocking", &format!("waiting for file lock on {what}"));
                flock(&file, block_op).map_err(|e| lock_error(e, path))?;
            }
            Err(e) => return Err(lock_error(e, path)),
        }
        Ok(FileLock {
            _file: file,
            path: path.to_owned(),
        })
    }

    /// Takes the exclusive lock on the existing file or directory `path` without waiting:
    /// `Ok(None)` when another process holds a lock on it (or `path` is gone). Never creates
    /// `path`. A taken lock on a temporary entry proves its creator, who locked it for its
    /// life, is dead (see [`super::Store::scratch`]).
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        let file = match fs_err::File::open(path) {
            Ok(f) => f.into_parts().0,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_owned(),
            })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(lock_error(e, path)),
        }
    }

    /// Whether `path` (not followed if a symlink) is still the file or directory this lock
    /// holds. A lock taken on a directory that another process then renamed or removed locks
    /// nothing anyone else will find: the taker checks this and starts again.
    pub fn is_at(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        match (self._file.metadata(), path.symlink_metadata()) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            _ => false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn lock_error(e: rustix::io::Errno, path: &Path) -> io::Error {
    crate::fs::annotate(e.into(), "lock", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the scratch sweep relies on: a lock held through one open file description
    /// refuses a try-lock through another, even in the same process, and a released one
    /// (the kernel's release at the holder's death) is taken.
    #[test]
    fn a_held_lock_refuses_try_exclusive_and_a_released_one_is_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(".tmp-work-x");
        fs_err::create_dir(&dir).unwrap();
        let held = FileLock::try_exclusive(&dir).unwrap().expect("free");
        assert!(held.is_at(&dir));
        assert!(FileLock::try_exclusive(&dir).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&dir).unwrap().is_some());
        assert!(
            FileLock::try_exclusive(&tmp.path().join("gone"))
                .unwrap()
                .is_none()
        );
    }
}
