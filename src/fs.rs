//! The one place that writes files: atomic replace, durable renames, read-only trees.
//!
//! Every write kbuild makes goes through here so that crash safety is argued once:
//! data goes to a temporary file in the destination directory, is synced, then renamed over
//! the target, and the directory is synced so the rename itself survives a power loss.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use fs_err as fs;

/// Constant mtime given to everything in the store (as Nix does), so listings are reproducible.
pub const STORE_MTIME: i64 = 1;

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, None)
}

/// [`write_atomic`] for a file others must read too (an exported OCI layout's `oci-layout`
/// and `index.json`, like its blobs): mode 0644 instead of the temp file's 0600.
pub fn write_atomic_readable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if read_optional(path)?.is_some_and(|old| old == bytes) {
        return Ok(());
    }
    write_atomic_mode(path, bytes, Some(0o644))
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| annotate(plain(e), "create a temporary file in", dir))?;
    crate::interrupt::track(tmp.path());
    if let Some(mode) = mode {
        fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    }
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_data())
        .map_err(|e| annotate(e, "write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| annotate(plain(e.error), "rename a temporary file onto", path))?;
    fsync_dir(dir)
}

/// Like [`write_atomic`] but skips the write when the file already holds exactly `bytes`.
/// Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    if read_optional(path)?.is_some_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

/// Makes a directory's entries durable (renames into it, files created in it).
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "sync directory", dir))
}

/// Moves a finished file whose data the caller has already synced (`sync_data`) onto
/// `path`, replacing it. The directory is not synced here: a caller that renames many files
/// into one directory syncs it once afterwards with [`fsync_dir`] (as composefs batches).
pub fn rename_synced(from: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(from, path).map_err(|e| annotate(e, "rename into", path))
}

/// `rename(2)` that never replaces: returns `Ok(false)` when `to` already exists.
///
/// Content-addressed adds rely on this: an existing destination holds the same content,
/// so "already there" is success and the caller discards its copy.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) | Err(rustix::io::Errno::NOTEMPTY) => Ok(false),
        // Filesystems without RENAME_NOREPLACE (some network filesystems): fall back to a
        // check-then-rename; two racing kbuilds then both rename identical content, which is
        // still correct for a content-addressed path that is a regular file.
        Err(rustix::io::Errno::INVAL) => {
            if to.symlink_metadata().is_ok() {
                return Ok(false);
            }
            std::fs::rename(from, to).map_err(|e| annotate(e, "rename into", to))?;
            Ok(true)
        }
        Err(e) => Err(annotate(io::Error::from(e), "rename into", to)),
    }
}

/// Sets the store's normalized permissions on a tree: directories and executables 0555,
/// other files 0444, and the constant mtime. Symlinks are left as they are.
pub fn make_read_only(path: &Path) -> io::Result<()> {
    // Children first: a directory must stay writable until its entries are done.
    for entry in walk(path).contents_first(true) {
        let entry = entry.map_err(walk_error)?;
        let ft = entry.file_type();
        if ft.is_symlink() {
            continue;
        }
        let p = entry.path();
        let meta = entry.metadata().map_err(walk_error)?;
        // A file with other links is an existing store object hardlinked into a new tree: it
        // is already normalized, and touching it would also reset a tampered mtime that the
        // build's tamper check relies on.
        if ft.is_file() && std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            continue;
        }
        let mode = if ft.is_dir() || meta.permissions().mode() & 0o111 != 0 {
            0o555
        } else {
            0o444
        };
        set_mtime(p)?;
        if meta.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(())
}

/// A walk over the tree at `path` that follows no symlink, not even `path` itself (walkdir
/// follows its root link by default): a store entry that is a symlink, planted or left by
/// damage, is one entry to unlink or report, never a way out of the store.
#[allow(clippy::disallowed_methods)] // the one place that makes a walk (clippy.toml)
pub fn walk(path: &Path) -> walkdir::WalkDir {
    walkdir::WalkDir::new(path).follow_root_links(false)
}

/// A [`walk`] over a tree whose top must be a directory, as a rootfs in the store is: a top
/// that is a symlink (a store entry replaced by hand, or damage) is an `InvalidData` error
/// naming it, never followed, so nothing outside the store is read as the generation's files.
/// `NotFound` when there is nothing at `path`.
pub fn walk_tree(path: &Path) -> io::Result<walkdir::WalkDir> {
    let meta = fs_err::symlink_metadata(path)?;
    if !meta.is_dir() {
        let what = if meta.is_symlink() {
            "a symlink"
        } else {
            "not a directory"
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is {what}, not the directory the store made: the store is damaged (`kbuild verify` says how; `kbuild verify --repair` rebuilds what it can)",
                path.display()
            ),
        ));
    }
    Ok(walk(path))
}

/// A [`walk`] error as an `io::Error` that names the path it happened at (a loop error,
/// which has no single path, keeps walkdir's own text).
pub fn walk_error(e: walkdir::Error) -> io::Error {
    match e.path().map(Path::to_owned) {
        Some(path) => match e.into_io_error() {
            Some(io) => annotate(io, "read", &path),
            None => io::Error::other(format!("cannot walk `{}`", path.display())),
        },
        None => io::Error::other(e),
    }
}

/// Makes a read-only store tree removable again (for gc and for tests cleaning up). A
/// symlink, `path` itself included, is left alone: nothing outside the tree is chmod-ed.
pub fn make_writable(path: &Path) -> io::Result<()> {
    for entry in walk(path) {
        let entry = entry.map_err(walk_error)?;
        if entry.file_type().is_dir() {
            fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}

/// Removes a file or a (possibly read-only) directory tree; a missing path is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(annotate(e, "inspect", path)),
        Ok(m) if m.is_dir() => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

/// Gives `path` (not what it links to) the store's constant mtime.
pub(crate) fn set_mtime(path: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: STORE_MTIME,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| annotate(e.into(), "set the mtime of", path))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read. (Large
/// reads matter for the pipeline: inflate and hashing run per call.)
pub fn read_full<R: io::Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a whole file; a missing file is `None`, other errors name the path.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(annotate(e, "read", path)),
    }
}

/// The OS error alone: `tempfile` appends "at path …" (a random temporary name) to its
/// errors, and [`annotate`] names the path that matters.
pub fn plain(e: io::Error) -> io::Error {
    if let Some(code) = e.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    // tempfile's own error type is private and hides the OS error's code: cut its suffix.
    let text = e.to_string();
    match text.rfind(" at path \"") {
        Some(i) => io::Error::new(e.kind(), &text[..i]),
        None => e,
    }
}

/// Adds the action and path to an I/O error, the way `fs-err` does for std calls.
pub fn annotate(e: io::Error, action: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("failed to {action} `{}`: {e}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_tree_refuses_a_top_that_is_no_directory_and_never_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("f"), b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&tree, &link).unwrap();
        let file = tree.join("f");

        let names = |p: &Path| -> Vec<String> {
            walk_tree(p)
                .unwrap()
                .sort_by_file_name()
                .into_iter()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(&tree), ["tree", "f"]);
        for (p, what) in [(&link, "a symlink"), (&file, "not a directory")] {
            let e = walk_tree(p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(
                e.to_string()
                    .starts_with(&format!("`{}` is {what}, not the directory", p.display())),
                "{e}"
            );
        }
        let missing = walk_tree(&dir.path().join("none")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }
}
