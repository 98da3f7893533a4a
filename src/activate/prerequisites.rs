//! Host prerequisites of a generation (secrets such as `/etc/kubernetes/token.csv`): checked
//! under the root before a switch changes anything, never copied into the store.
//!
//! A prerequisite is present when it is a regular file kbuild can open for reading, after
//! following symlinks **inside the root**, as `chroot ROOT cat PATH` would: an absolute link
//! target starts again at the root, `..` never climbs above it, and more than 40 links on the
//! way is a loop. With `--root /srv/m1`, `etc/kubernetes/token.csv -> /secrets/token.csv`
//! means `/srv/m1/secrets/token.csv`, never the host's `/secrets/token.csv`. Resolution uses
//! `openat2(RESOLVE_IN_ROOT)`; where the kernel lacks it (before 5.6, or a seccomp filter
//! refuses it) the same walk is done one component at a time with `openat(O_NOFOLLOW)`.
//!
//! Nothing is opened for reading before it is known to be a regular file (a FIFO would block
//! the switch, a device could act on being opened): the path is first opened `O_PATH` and
//! inspected with `fstat`.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{
    CWD, FileType, Mode, OFlags, ResolveFlags, Stat, fstat, openat, openat2, readlinkat,
};
use rustix::io::Errno;

use super::root::Root;

/// Symlinks followed while resolving one path before it is a loop (the kernel's limit).
const MAX_LINKS: usize = 40;

/// The fix for prerequisites that simply do not exist (the only `help:` before reasons).
const ABSENT_FIX: &str = "create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)";

/// [`ABSENT_FIX`] among fixes for other reasons.
const ABSENT_FIX_AMONG: &str = "create the ones that do not exist on the host (kbuild never copies secrets such as tokens and TLS keys into the store)";

/// How much of a group- or world-readable file is read to see whether it holds a private key.
const KEY_SCAN_BYTES: u64 = 64 * 1024;

/// One prerequisite and what the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prerequisite {
    /// The path inside the root, as the recipe names it (`/etc/kubernetes/token.csv`).
    pub path: String,
    pub status: Status,
}

/// What a prerequisite was found to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// A readable regular file; `exposed` is set for a private key that group or others can
    /// read (the switch proceeds, with a warning).
    Present { exposed: Option<ExposedKey> },
    /// Not usable as a prerequisite; the switch is refused.
    Missing(Missing),
}

/// Why a prerequisite does not count as present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Nothing at the path (or a directory on the way is missing).
    NotFound,
    /// A symlink on the way (the path itself, a directory above it, or a link a link leads
    /// to) leads to nothing inside the root: every link followed, in order, and where the
    /// path ended (see `Dangling`).
    Dangling(Dangling),
    /// More than 40 symlinks on the way.
    Loop,
    /// A component on the way is a file, not a directory.
    NotADirectoryOnTheWay,
    /// Something other than a regular file (`"a directory"`, `"a FIFO"`, …).
    NotAFile(&'static str),
    /// A regular file kbuild cannot open for reading (or reach: a directory on the way
    /// is not searchable).
    Unreadable(String),
    /// The file changed between being inspected and opened.
    Changed,
    /// The generation itself installs this path (or one above or below it): built by a kbuild
    /// that did not yet refuse such recipes. Switching would adopt the host's secret.
    Installed(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::NotFound => f.write_str("does not exist"),
            Missing::Dangling(d) => d.fmt(f),
            Missing::Loop => f.write_str("a symlink loop"),
            Missing::NotADirectoryOnTheWay => {
                f.write_str("a component of the path is not a directory")
            }
            Missing::NotAFile(what) => write!(f, "{what}, not a file"),
            Missing::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Missing::Changed => f.write_str("changed while kbuild was checking it"),
            Missing::Installed(t) => write!(
                f,
                "this generation installs `{t}` itself; rebuild it with `kbuild build`, which refuses a recipe that installs a prerequisite"
            ),
        }
    }
}

/// How a path that does not exist inside the root was reached through symlinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dangling {
    /// The prerequisite's path (`/etc/kubernetes/ssl/ca.pem`).
    pub path: String,
    /// Each symlink followed, in order: where it is inside the root (after the links before
    /// it) and its target as written.
    pub hops: Vec<(String, String)>,
    /// The first component, inside the root, that does not exist.
    pub absent: String,
    /// Whether `absent` is part of the last link's target (the link itself leads nowhere),
    /// rather than a name after it (the link led to a directory lacking that name).
    pub in_last_target: bool,
}

impl fmt::Display for Dangling {
    /// `a symlink to `../../x`, and `/x` is a symlink to `/outside/t`, which does not exist
    /// inside the root`: every hop, so the one that leads nowhere is named, not only the first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (link, target)) in self.hops.iter().enumerate() {
            if i > 0 {
                f.write_str(", and ")?;
            }
            if i == 0 && *link == self.path {
                write!(f, "a symlink to `{target}`")?;
            } else {
                write!(f, "`{link}` is a symlink to `{target}`")?;
            }
        }
        if self.in_last_target {
            f.write_str(", which does not exist inside the root")
        } else {
            write!(f, "; `{}` does not exist inside the root", self.absent)
        }
    }
}

/// A private key that group or others may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExposedKey {
    /// Permission bits of the file (after following links).
    pub mode: u32,
    /// Where the file actually is on this host (after following links inside the root):
    /// what `chmod` must be given.
    pub host_path: String,
}

impl Prerequisite {
    /// `Some(reason)` when the prerequisite is missing.
    pub fn missing(&self) -> Option<&Missing> {
        match &self.status {
            Status::Missing(m) => Some(m),
            Status::Present { .. } => None,
        }
    }

    /// How it is listed when missing: the path, with the reason unless it simply does not
    /// exist (`/etc/kubernetes/token.csv (a directory, not a file)`).
    pub fn missing_line(&self) -> Option<String> {
        match self.missing()? {
            Missing::NotFound => Some(self.path.clone()),
            m => Some(format!("{} ({m})", self.path)),
        }
    }

    /// The fix for this kind of missing prerequisite, for the `help:` line.
    fn fix(&self) -> Option<&'static str> {
        Some(match self.missing()? {
            Missing::NotFound => ABSENT_FIX,
            Missing::Dangling(_) | Missing::Loop => {
                "fix the symlink: it is followed inside the root, as `chroot ROOT` would, so what it leads to must exist there"
            }
            Missing::NotADirectoryOnTheWay => {
                "replace the file on the way with the directory that holds the prerequisite"
            }
            Missing::NotAFile("a directory") => {
                "remove the directory (what a failed bind mount leaves) and put the file in its place"
            }
            Missing::NotAFile(_) => "remove what is not a file and put the file in its place",
            Missing::Unreadable(_) => {
                "make the file readable by the user running kbuild (`chmod`, `chown`), and its directories searchable"
            }
            Missing::Changed => "run the command again once nothing is changing the file",
            Missing::Installed(_) => "rebuild the generation with `kbuild build`",
        })
    }

    /// The warning for a private key group or others can read, without the `warning: ` prefix.
    pub fn warning(&self) -> Option<String> {
        match &self.status {
            Status::Present { exposed: Some(k) } => Some(format!(
                "private key {} is readable by group or others (mode {:04o}); fix: chmod 600 {}",
                self.path,
                k.mode,
                crate::unit_name::shell_quote(&k.host_path)
            )),
            _ => None,
        }
    }
}

/// The prerequisites of a generation as checked in one root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prerequisites(pub Vec<Prerequisite>);

impl Prerequisites {
    /// The missing ones, each with its reason (see [`Prerequisite::missing_line`]).
    pub fn missing(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(Prerequisite::missing_line)
            .collect()
    }

    /// The `help:` line when some are missing: the fix for each kind of reason present, in
    /// the order first met. Only absent files: create them on the host.
    pub fn help(&self) -> Option<String> {
        let mut fixes: Vec<&str> = Vec::new();
        for f in self.0.iter().filter_map(Prerequisite::fix) {
            if !fixes.contains(&f) {
                fixes.push(f);
            }
        }
        match fixes.as_slice() {
            [] => None,
            [one] => Some((*one).to_owned()),
            many => Some(
                many.iter()
                    .map(|f| {
                        if *f == ABSENT_FIX {
                            ABSENT_FIX_AMONG
                        } else {
                            f
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }

    /// Warnings about present prerequisites (private keys others can read).
    pub fn warnings(&self) -> Vec<String> {
        self.0.iter().filter_map(Prerequisite::warning).collect()
    }
}

impl fmt::Display for Prerequisites {
    /// The plan's lines: a count when all are present, else each missing one with its reason;
    /// then each warning.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let missing = self.missing();
        if missing.is_empty() {
            writeln!(f, "  prerequisites: {} present", self.0.len())?;
        }
        for m in &missing {
            writeln!(f, "  prerequisite missing: {m}")?;
        }
        for w in self.warnings() {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

/// Checks each prerequisite of a generation under `root`; `managed` are the paths the
/// generation installs (a prerequisite among them, or above or below one of them, is missing
/// whatever the root holds).
pub(crate) fn check(
    root: &Root,
    prerequisites: &[String],
    managed: &BTreeSet<String>,
) -> Prerequisites {
    let resolver = match openat(
        CWD,
        root.dir(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(Resolver {
            root: fd,
            dir: root.dir().display().to_string(),
            openat2: !super::fault::no_openat2(),
        }),
        Err(_) => None,
    };
    Prerequisites(
        prerequisites
            .iter()
            .map(|p| Prerequisite {
                path: p.clone(),
                status: match (installed(p, managed), &resolver) {
                    (Some(t), _) => Status::Missing(Missing::Installed(t)),
                    // A root that cannot be opened holds nothing.
                    (None, None) => Status::Missing(Missing::NotFound),
                    (None, Some(r)) => r.check(p),
                },
            })
            .collect(),
    )
}

/// A managed path that is `p`, or above or below it (the load-time check of recipes, for
/// generations built before it existed).
fn installed(p: &str, managed: &BTreeSet<String>) -> Option<String> {
    let below = format!("{p}/");
    managed
        .iter()
        .find(|m| {
            *m == p
                || m.starts_with(&below)
                || p.strip_prefix(m.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
        .cloned()
}

/// The root, opened once, and how paths are resolved inside it.
struct Resolver {
    root: OwnedFd,
    /// The root as shown in messages (`/srv/m1`; `/` for the host).
    dir: String,
    /// Whether to try `openat2(RESOLVE_IN_ROOT)` first.
    openat2: bool,
}

fn file_type_name(t: FileType) -> &'static str {
    match t {
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Symlink => "a symlink",
        _ => "of an unknown type",
    }
}

fn errno_text(e: Errno) -> String {
    std::io::Error::from(e).to_string()
}

impl Resolver {
    fn check(&self, path: &str) -> Status {
        let rel = path.trim_start_matches('/');
        let fd = match self.open(rel, OFlags::PATH, true) {
            Ok(fd) => fd,
            Err(e) => return Status::Missing(self.why_not(rel, e)),
        };
        let st = match fstat(&fd) {
            Ok(st) => st,
            Err(e) => return Status::Missing(Missing::Unreadable(errno_text(e))),
        };
        let ty = FileType::from_raw_mode(st.st_mode);
        if ty != FileType::RegularFile {
            return Status::Missing(Missing::NotAFile(file_type_name(ty)));
        }
        // A regular file: opening it cannot block. NONBLOCK and NOCTTY all the same, in case
        // it was swapped for something else since.
        let file = match self.open(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
            true,
        ) {
            Ok(fd) => fd,
            Err(e) => return Status::Missing(Missing::Unreadable(errno_text(e))),
        };
        match fstat(&file) {
            Ok(again) if same_file(&st, &again) => {}
            _ => return Status::Missing(Missing::Changed),
        }
        let mode = st.st_mode & 0o7777;
        let exposed = (mode & 0o044 != 0 && is_private_key(path, file)).then(|| ExposedKey {
            mode,
            host_path: self.host_path(&fd, rel),
        });
        Status::Present { exposed }
    }

    /// Why `rel` could not be opened (`e`): a dangling final symlink is named with its target.
    fn why_not(&self, rel: &str, e: Errno) -> Missing {
        match e {
            Errno::NOENT => {
                // Walked again by hand, recording the links, whichever way found it missing:
                // both ways give the same words.
                let mut trace = Trace::default();
                let _ = self.walk(rel, OFlags::PATH, true, Some(&mut trace));
                match trace.absent {
                    Some((absent, in_last_target)) if !trace.hops.is_empty() => {
                        Missing::Dangling(Dangling {
                            path: format!("/{rel}"),
                            hops: trace.hops,
                            absent,
                            in_last_target,
                        })
                    }
                    _ => Missing::NotFound,
                }
            }
            Errno::LOOP => Missing::Loop,
            Errno::NOTDIR => Missing::NotADirectoryOnTheWay,
            e => Missing::Unreadable(errno_text(e)),
        }
    }

    /// Opens `rel` inside the root with `flags`, following symlinks inside the root (the
    /// last one too when `follow_last`).
    fn open(&self, rel: &str, flags: OFlags, follow_last: bool) -> Result<OwnedFd, Errno> {
        let mut flags = flags | OFlags::CLOEXEC;
        if !follow_last {
            flags |= OFlags::NOFOLLOW;
        }
        if self.openat2 {
            // EAGAIN: a rename raced with a `..`; the kernel asks to retry.
            for _ in 0..3 {
                match openat2(&self.root, rel, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                    Err(Errno::AGAIN) => continue,
                    // No openat2 (or not allowed): walk by hand.
                    Err(Errno::NOSYS | Errno::PERM | Errno::INVAL) => break,
                    other => return other,
                }
            }
        }
        self.walk(rel, flags, follow_last, None)
    }

    /// [`Resolver::open`] without `openat2`: one component at a time, never letting the
    /// kernel follow a link itself.
    /// With `trace`, records the links followed and the first name that does not exist.
    fn walk(
        &self,
        rel: &str,
        flags: OFlags,
        follow_last: bool,
        mut trace: Option<&mut Trace>,
    ) -> Result<OwnedFd, Errno> {
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let root = || openat(&self.root, ".", dir_flags, Mode::empty());
        // The directories walked so far, root first: `..` pops one, never the root.
        let mut dirs = vec![root()?];
        // Their names inside the root (one fewer: the root has none), for the trace.
        let mut names: Vec<String> = Vec::new();
        let mut todo: VecDeque<String> = components(rel);
        let mut links = 0;
        // How many names are left after the last link's target (for the trace).
        let mut after_last_target = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if dirs.len() > 1 {
                    dirs.pop();
                    names.pop();
                }
                continue;
            }
            let last = todo.is_empty();
            let here = dirs.last().expect("the root is never popped");
            let inside = || {
                format!(
                    "/{}",
                    names
                        .iter()
                        .chain([&name])
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("/")
                )
            };
            let st = match rustix::fs::statat(
                here,
                name.as_str(),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                Err(e) => {
                    if let (Errno::NOENT, Some(t)) = (e, trace.as_deref_mut()) {
                        t.absent = Some((inside(), todo.len() >= after_last_target));
                    }
                    return Err(e);
                }
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Symlink if !last || follow_last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Errno::LOOP);
                    }
                    let target = readlinkat(here, name.as_str(), Vec::new())?;
                    let target = target.to_string_lossy().into_owned();
                    if let Some(t) = trace.as_deref_mut() {
                        t.hops.push((inside(), target.clone()));
                    }
                    after_last_target = todo.len();
                    if target.starts_with('/') {
                        dirs.truncate(1);
                        names.clear();
                    }
                    for c in components(&target).into_iter().rev() {
                        todo.push_front(c);
                    }
                    if target.is_empty() {
                        return Err(Errno::NOENT);
                    }
                }
                _ if last => {
                    // NOFOLLOW: what is opened is exactly the entry just inspected (or, if it
                    // was swapped for a link meanwhile, an error or the link itself).
                    return openat(here, name.as_str(), flags | OFlags::NOFOLLOW, Mode::empty());
                }
                FileType::Directory => {
                    let next = openat(here, name.as_str(), dir_flags, Mode::empty())?;
                    dirs.push(next);
                    names.push(name);
                }
                _ => return Err(Errno::NOTDIR),
            }
        }
        // The path ended in the root itself or in `..`/`.`: a directory.
        let here = dirs.pop().expect("the root is never popped");
        if flags.contains(OFlags::PATH) {
            Ok(here)
        } else {
            openat(&here, ".", flags, Mode::empty())
        }
    }

    /// The host path of the file `fd` (opened `O_PATH`) for a `chmod` hint: what
    /// `/proc/self/fd` says, else the path as named under the root.
    fn host_path(&self, fd: &OwnedFd, rel: &str) -> String {
        use std::os::fd::AsRawFd as _;
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| Path::new(&self.dir).join(rel).display().to_string())
    }
}

/// What a walk by hand met: the links it followed (where, inside the root, and their targets)
/// and the first name that did not exist, with whether it came from the last link's target.
#[derive(Default)]
struct Trace {
    hops: Vec<(String, String)>,
    absent: Option<(String, bool)>,
}

/// The non-empty, non-`.` components of a path.
fn components(p: &str) -> VecDeque<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect()
}

fn same_file(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether a prerequisite holds a private key: its name ends in `-key.pem`, `_key.pem` or
/// `.key`, or a line among its first 64 KiB is a PEM `-----BEGIN … PRIVATE KEY-----` header
/// (RSA, EC, PKCS#8, encrypted or OpenSSH keys; also a certificate bundle with its key).
fn is_private_key(path: &str, file: OwnedFd) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.ends_with("-key.pem") || name.ends_with("_key.pem") || name.ends_with(".key") {
        return true;
    }
    let mut head = Vec::new();
    if std::fs::File::from(file)
        .take(KEY_SCAN_BYTES)
        .read_to_end(&mut head)
        .is_err()
    {
        return false;
    }
    head.split(|b| *b == b'\n').any(|line| {
        let line = line.trim_ascii();
        line.starts_with(b"-----BEGIN ") && line.ends_with(b"PRIVATE KEY-----")
    })
}
