//! File operations inside a root that never follow a symlink on the way.
//!
//! kbuild runs as root and writes into `/etc`. If anything in the root were a symlink kbuild
//! did not make — `etc/kubernetes` → `/tmp/elsewhere`, say — a path-based write would land
//! outside the root. Here every path is resolved component by component with
//! `openat(O_DIRECTORY | O_NOFOLLOW)` from a descriptor of the root, and the final operation
//! (`symlinkat`, `renameat`, `unlinkat`, `mkdirat`, `readlinkat`) acts on a name inside the
//! directory reached that way, so a planted symlink is refused instead of followed.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, RenameFlags, mkdirat, openat, readlinkat, renameat,
    renameat_with, statat, symlinkat, unlinkat,
};
use rustix::io::Errno;

/// A path kbuild had to go through is a symlink or not a directory (the error inside the
/// `io::Error` of a refused operation, so that callers can say how to fix it).
#[derive(Debug)]
pub struct NotADirectory(pub PathBuf);

impl std::fmt::Display for NotADirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` is a symlink or not a directory; kbuild will not write through it",
            self.0.display()
        )
    }
}

impl std::error::Error for NotADirectory {}

/// A root directory, opened once.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
    dir: PathBuf,
}

/// What is at a path (without following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    Directory,
    Symlink(PathBuf),
    Other,
}

fn split(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    match p.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", p),
    }
}

impl Beneath {
    /// Opens the root itself (which may be reached through symlinks: it is the user's choice).
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let root_fd = openat(
            CWD,
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| crate::fs::annotate(e.into(), "open root", root))?;
        Ok(Beneath {
            root: root_fd,
            dir: root.to_owned(),
        })
    }

    fn show(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    fn refuse(&self, rel: &str, e: Errno) -> io::Error {
        if e == Errno::LOOP || e == Errno::NOTDIR {
            io::Error::other(NotADirectory(self.show(rel)))
        } else {
            crate::fs::annotate(e.into(), "open", &self.show(rel))
        }
    }

    /// Opens directory `dir` (relative to the root, "" for the root), refusing symlinks.
    /// With `create`, missing components are made (mode 0755).
    fn open_dir(&self, dir: &str, create: bool) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut fd =
            openat(&self.root, ".", flags, Mode::empty()).map_err(|e| self.refuse("", e))?;
        let mut walked = String::new();
        for c in dir.split('/').filter(|c| !c.is_empty()) {
            walked.push('/');
            walked.push_str(c);
            let next = match openat(&fd, c, flags, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match mkdirat(&fd, c, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(crate::fs::annotate(
                                e.into(),
                                "create directory",
                                &self.show(&walked),
                            ));
                        }
                    }
                    openat(&fd, c, flags, Mode::empty())
                }
                other => other,
            };
            fd = next.map_err(|e| self.refuse(&walked, e))?;
        }
        Ok(fd)
    }

    fn parent(&self, path: &str, create: bool) -> io::Result<(OwnedFd, String)> {
        let (dir, name) = split(path);
        Ok((self.open_dir(dir, create)?, name.to_owned()))
    }

    /// What is at `path`; a symlink anywhere above it is an error, not followed.
    pub fn entry(&self, path: &str) -> io::Result<Entry> {
        let (dir, name) = split(path);
        let parent = match self.open_dir(dir, false) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
            Err(e) => return Err(e),
        };
        match statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(Entry::Missing),
            Err(e) => Err(crate::fs::annotate(e.into(), "inspect", &self.show(path))),
            Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => Entry::Directory,
                FileType::Symlink => {
                    let t = readlinkat(&parent, name, Vec::new()).map_err(|e| {
                        crate::fs::annotate(e.into(), "read link", &self.show(path))
                    })?;
                    let bytes: std::ffi::OsString =
                        std::os::unix::ffi::OsStringExt::from_vec(t.into_bytes());
                    Entry::Symlink(PathBuf::from(bytes))
                }
                _ => Entry::Other,
            }),
        }
    }

    /// Creates directory `path` (its parent must exist); an existing directory is fine.
    pub fn mkdir(&self, path: &str) -> io::Result<()> {
        let (parent, name) = self.parent(path, false)?;
        match mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if self.entry(path)? == Entry::Directory => Ok(()),
            Err(e) => Err(crate::fs::annotate(
                e.into(),
                "create directory",
                &self.show(path),
            )),
        }
    }

    /// Points `path` at `target` atomically (temporary link renamed over it), then syncs the
    /// directory so the change survives a power loss.
    pub fn replace_symlink(&self, path: &str, target: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path, false)?;
        let tmp = format!(".{name}.kbuild-tmp");
        let _ = unlinkat(&parent, tmp.as_str(), AtFlags::empty());
        symlinkat(target, &parent, tmp.as_str())
            .map_err(|e| crate::fs::annotate(e.into(), "create symlink", &self.show(path)))?;
        renameat(&parent, tmp.as_str(), &parent, name.as_str())
            .map_err(|e| crate::fs::annotate(e.into(), "replace", &self.show(path)))?;
        rustix::fs::fsync(&parent)
            .map_err(|e| crate::fs::annotate(e.into(), "sync", &self.show(path)))
    }

    pub fn unlink(&self, path: &str) -> io::Result<()> {
        let (parent, name) = self.parent(path, false)?;
        unlinkat(&parent, name.as_str(), AtFlags::empty())
            .map_err(|e| crate::fs::annotate(e.into(), "remove", &self.show(path)))
    }

    /// Removes an empty directory; `Ok(false)` if it is not empty or already gone.
    pub fn rmdir(&self, path: &str) -> io::Result<bool> {
        let (parent, name) = match self.parent(path, false) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        match unlinkat(&parent, name.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOENT) => Ok(false),
            Err(e) => Err(crate::fs::annotate(
                e.into(),
                "remove directory",
                &self.show(path),
            )),
        }
    }

    /// Moves `from` to `to` inside the root, creating `to`'s parent directories. Never
    /// replaces: an existing `to` (a file kept earlier, say) is an `AlreadyExists` error, decided
    /// by the kernel (`RENAME_NOREPLACE`), not by what kbuild believes is there.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (src, src_name) = self.parent(from, false)?;
        let (dst, dst_name) = self.parent(to, true)?;
        renameat_with(
            &src,
            src_name.as_str(),
            &dst,
            dst_name.as_str(),
            RenameFlags::NOREPLACE,
        )
        .map_err(|e| {
            if e == Errno::EXIST || e == Errno::NOTEMPTY {
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "cannot move `{}` to `{}`: something is there already (kbuild never replaces it)",
                        self.show(from).display(),
                        self.show(to).display()
                    ),
                )
            } else {
                crate::fs::annotate(e.into(), "move", &self.show(from))
            }
        })?;
        rustix::fs::fsync(&dst)
            .map_err(|e| crate::fs::annotate(e.into(), "sync", &self.show(to)))?;
        rustix::fs::fsync(&src).map_err(|e| crate::fs::annotate(e.into(), "sync", &self.show(from)))
    }

    /// Syncs directory `dir` (relative to the root), if it exists.
    pub fn sync_dir(&self, dir: &str) -> io::Result<()> {
        match self.open_dir(dir, false) {
            Ok(fd) => rustix::fs::fsync(&fd)
                .map_err(|e| crate::fs::annotate(e.into(), "sync", &self.show(dir))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Beneath {
    /// Creates directory `dir` and its missing parents, refusing symlinks on the way.
    pub fn mkdir_all(&self, dir: &str) -> io::Result<()> {
        self.open_dir(dir.trim_start_matches('/'), true).map(drop)
    }

    /// The names in directory `dir` (relative to the root), sorted; empty if it is missing.
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let fd = match self.open_dir(dir.trim_start_matches('/'), false) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        let d = rustix::fs::Dir::read_from(&fd)
            .map_err(|e| crate::fs::annotate(e.into(), "list", &self.show(dir)))?;
        for entry in d {
            let entry =
                entry.map_err(|e| crate::fs::annotate(e.into(), "list", &self.show(dir)))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }
}
