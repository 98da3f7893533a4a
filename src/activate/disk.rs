//! The operations the steps of a switch make on a root: on the root itself ([`Beneath`]), or
//! simulated over it ([`Simulated`]), so that a dry run sees the root exactly as the recovery
//! of an interrupted switch will leave it — the same steps decide both.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::beneath::{Beneath, Entry, NotADirectory};
use super::fault;

/// What the steps of a switch do to a root (paths are absolute, inside the root).
pub(crate) trait Disk {
    fn entry(&self, path: &str) -> io::Result<Entry>;
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    fn mkdir(&self, path: &str) -> io::Result<()>;
    fn replace_symlink(&self, path: &str, target: &Path) -> io::Result<()>;
    fn unlink(&self, path: &str) -> io::Result<()>;
    fn rmdir(&self, path: &str) -> io::Result<bool>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// A step boundary (where `KBUILD_FAULT_AT` may abort a real switch, and
    /// `KBUILD_FAULT_FAIL_AT` make it fail). Errors: the injected failure.
    fn fault(&self, step: &str) -> io::Result<()>;
}

impl Disk for Beneath {
    fn entry(&self, path: &str) -> io::Result<Entry> {
        Beneath::entry(self, path)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        Beneath::list(self, dir)
    }
    fn mkdir(&self, path: &str) -> io::Result<()> {
        Beneath::mkdir(self, path)
    }
    fn replace_symlink(&self, path: &str, target: &Path) -> io::Result<()> {
        Beneath::replace_symlink(self, path, target)
    }
    fn unlink(&self, path: &str) -> io::Result<()> {
        Beneath::unlink(self, path)
    }
    fn rmdir(&self, path: &str) -> io::Result<bool> {
        Beneath::rmdir(self, path)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Beneath::rename(self, from, to)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        Beneath::sync_dir(self, dir)
    }
    fn fault(&self, step: &str) -> io::Result<()> {
        fault::step(step)
    }
}

/// What the simulation changed at a path (and so hides what the root holds there).
#[derive(Clone, Debug)]
enum Over {
    /// Nothing is there.
    Gone,
    /// A symlink.
    Link(PathBuf),
    /// A directory the simulation made (empty but for entries of its own).
    Dir,
    /// What the root holds at that path (moved here).
    Alias(String),
}

/// How a path resolves through the simulated changes.
enum Resolved {
    Real(String),
    Missing,
    /// Below a symlink or a file: not a directory.
    NotDir(String),
    Link(PathBuf),
    NewDir,
}

/// A root as it would be after some steps, computed without changing it: reads go to the
/// root unless a simulated change covers the path.
pub(crate) struct Simulated<'a> {
    real: &'a Beneath,
    dir: PathBuf,
    over: RefCell<BTreeMap<String, Over>>,
}

fn norm(p: &str) -> String {
    format!("/{}", p.trim_matches('/'))
}

fn parent_of(p: &str) -> Option<&str> {
    match p.rsplit_once('/') {
        Some(("", _)) => Some("/"),
        Some((parent, _)) => Some(parent),
        None => None,
    }
}

impl<'a> Simulated<'a> {
    pub(crate) fn new(real: &'a Beneath, dir: &Path) -> Simulated<'a> {
        Simulated {
            real,
            dir: dir.to_owned(),
            over: RefCell::new(BTreeMap::new()),
        }
    }

    fn resolve(&self, p: &str) -> Resolved {
        let over = self.over.borrow();
        let mut cur = p.to_owned();
        let mut suffix = String::new();
        loop {
            if let Some(o) = over.get(&cur) {
                return match (o, suffix.is_empty()) {
                    (Over::Gone, _) => Resolved::Missing,
                    (Over::Link(t), true) => Resolved::Link(t.clone()),
                    (Over::Link(_), false) => Resolved::NotDir(cur),
                    (Over::Dir, true) => Resolved::NewDir,
                    (Over::Dir, false) => Resolved::Missing,
                    (Over::Alias(r), _) => Resolved::Real(format!("{r}{suffix}")),
                };
            }
            match cur.rsplit_once('/') {
                Some((parent, name)) if !parent.is_empty() => {
                    suffix = format!("/{name}{suffix}");
                    cur = parent.to_owned();
                }
                _ => return Resolved::Real(p.to_owned()),
            }
        }
    }

    fn set(&self, p: &str, o: Over) {
        let mut over = self.over.borrow_mut();
        let below = format!("{p}/");
        over.retain(|k, _| !k.starts_with(&below));
        over.insert(p.to_owned(), o);
    }

    fn parent_is_dir(&self, p: &str) -> io::Result<()> {
        match parent_of(p) {
            None | Some("/") => Ok(()),
            Some(parent) => match self.entry(parent)? {
                Entry::Directory => Ok(()),
                Entry::Missing => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{}` does not exist", self.dir.join(&parent[1..]).display()),
                )),
                _ => Err(io::Error::other(NotADirectory(self.dir.join(&parent[1..])))),
            },
        }
    }
}

impl Disk for Simulated<'_> {
    fn entry(&self, path: &str) -> io::Result<Entry> {
        match self.resolve(&norm(path)) {
            Resolved::Real(r) => self.real.entry(&r),
            Resolved::Missing => Ok(Entry::Missing),
            Resolved::NotDir(a) => Err(io::Error::other(NotADirectory(
                self.dir.join(a.trim_start_matches('/')),
            ))),
            Resolved::Link(t) => Ok(Entry::Symlink(t)),
            Resolved::NewDir => Ok(Entry::Directory),
        }
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let dir = norm(dir);
        let mut names: std::collections::BTreeSet<String> = match self.resolve(&dir) {
            Resolved::Real(r) => self.real.list(&r)?.into_iter().collect(),
            _ => Default::default(),
        };
        for (k, o) in self.over.borrow().iter() {
            if parent_of(k) == Some(dir.as_str()) {
                let name = k.rsplit('/').next().unwrap_or_default().to_owned();
                match o {
                    Over::Gone => names.remove(&name),
                    _ => names.insert(name),
                };
            }
        }
        Ok(names.into_iter().collect())
    }

    fn mkdir(&self, path: &str) -> io::Result<()> {
        let p = norm(path);
        if self.entry(&p)? == Entry::Directory {
            return Ok(());
        }
        self.parent_is_dir(&p)?;
        if self.entry(&p)? != Entry::Missing {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot create directory `{}`: File exists",
                    self.dir.join(&p[1..]).display()
                ),
            ));
        }
        self.set(&p, Over::Dir);
        Ok(())
    }

    fn replace_symlink(&self, path: &str, target: &Path) -> io::Result<()> {
        let p = norm(path);
        self.parent_is_dir(&p)?;
        if self.entry(&p)? == Entry::Directory {
            return Err(io::Error::other(format!(
                "failed to replace `{}`: Is a directory",
                self.dir.join(&p[1..]).display()
            )));
        }
        self.set(&p, Over::Link(target.to_owned()));
        Ok(())
    }

    fn unlink(&self, path: &str) -> io::Result<()> {
        let p = norm(path);
        match self.entry(&p)? {
            Entry::Missing => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "cannot remove `{}`: not there",
                    self.dir.join(&p[1..]).display()
                ),
            )),
            Entry::Directory => Err(io::Error::other(format!(
                "cannot remove `{}`: Is a directory",
                self.dir.join(&p[1..]).display()
            ))),
            _ => {
                self.set(&p, Over::Gone);
                Ok(())
            }
        }
    }

    fn rmdir(&self, path: &str) -> io::Result<bool> {
        let p = norm(path);
        match self.entry(&p) {
            Ok(Entry::Directory) => {
                if self.list(&p)?.is_empty() {
                    self.set(&p, Over::Gone);
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Ok(Entry::Missing) => Ok(false),
            Ok(_) => Err(io::Error::other(format!(
                "cannot remove directory `{}`: Not a directory",
                self.dir.join(&p[1..]).display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (a, b) = (norm(from), norm(to));
        if self.entry(&b)? != Entry::Missing {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot move `{}` to `{}`: something is there already (kbuild never replaces it)",
                    self.dir.join(&a[1..]).display(),
                    self.dir.join(&b[1..]).display()
                ),
            ));
        }
        let value = match self.resolve(&a) {
            Resolved::Real(r) if self.real.entry(&r)? != Entry::Missing => Over::Alias(r),
            Resolved::Link(t) => Over::Link(t),
            Resolved::NewDir => Over::Dir,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "cannot move `{}`: not there",
                        self.dir.join(&a[1..]).display()
                    ),
                ));
            }
        };
        // The destination's parents are made, like `Beneath::rename` does.
        let mut missing = Vec::new();
        let mut cur = b.as_str();
        while let Some(parent) = parent_of(cur).filter(|p| *p != "/") {
            if self.entry(parent)? == Entry::Missing {
                missing.push(parent.to_owned());
            }
            cur = parent;
        }
        for d in missing.iter().rev() {
            self.set(d, Over::Dir);
        }
        // Simulated entries below the source move along with it.
        let below = format!("{a}/");
        let moved: Vec<(String, Over)> = self
            .over
            .borrow()
            .iter()
            .filter(|(k, _)| k.starts_with(&below))
            .map(|(k, o)| (format!("{b}/{}", &k[below.len()..]), o.clone()))
            .collect();
        self.set(&b, value);
        self.over.borrow_mut().extend(moved);
        self.set(&a, Over::Gone);
        Ok(())
    }

    fn sync_dir(&self, _dir: &str) -> io::Result<()> {
        Ok(())
    }

    fn fault(&self, _step: &str) -> io::Result<()> {
        Ok(())
    }
}
