//! Fetch, verify and unpack an archive input in one pass over its bytes.
//!
//! ```text
//!  source ──► [reader thread: sha256|sha512, tee] ──chunks──► [decoder: ar? → gzip|zstd|xz → tar]
//!                       │                                       │ members (sparse expanded)
//!                       ▼              kept members' bytes ◄─────┘
//!           the archive itself                 ▼
//!           (kept, see `Request::keep`)  [writer thread: BLAKE3 + write + fsync]
//! ```
//!
//! The three stages overlap on two cores; buffers are recycled through bounded channels so
//! memory stays constant whatever the archive size. Nothing leaves the scratch directory
//! unless the whole stream's sha256 matches the pin: the caller renames outputs into the
//! store only after [`fetch_and_unpack`] returns. Member names are checked as Python's
//! tarfile "data" filter does (PEP 706): absolute names and `..` are refused, modes collapse
//! to 0444/0555 (the recipe's `mode`, or the archive's x bits without one), owners and times
//! are dropped.
//!
//! **Formats.** A tarball (gzip, zstd, xz or plain) or a Debian package (an `ar` archive
//! whose `data.tar.{gz,xz,zst}` member is decoded in the same pass; recognised by its magic
//! `!<arch>\n`, never by the URL). Sparse members are expanded to their real bytes: GNU type
//! `S` (decoded by the `tar` crate, which checks the map) and PAX 0.0, 0.1 and 1.0 (decoded
//! here; a map whose blocks overlap or run backwards, reach past the real size, or do not
//! add up to the data the member holds is an error). `walk` is the one decoder: extraction
//! and [`list_members`] (`kbuild inputs NAME --members`) both go through it.
//!
//! **Links.** A selected member that is a hard link resolves to the member it names, which
//! tar requires to come earlier in the archive; a selected symlink resolves to the member
//! its target names, taken relative to the link's directory, wherever in the archive it is.
//! Chains are followed up to 40 links. A target that is absolute, climbs out of the archive
//! with `..`, or names no member is refused; links are never created. The bytes are the
//! target's, the executable bit the target's mode (as `stat` through a link would see).
//!
//! One pass cannot always get those bytes: the target of a hard link, or of a symlink, may
//! come *before* the link and not be selected itself, and by the time the link is read its
//! bytes are gone. Keeping every member on the chance that a later link names it would cost
//! the whole archive's size. Instead the first pass records every member (name, kind, link
//! target, mode, size; at most [`MAX_MEMBERS`] of them), extracts the selected ones and, from
//! a selected symlink on, the member its target names when that comes later; afterwards
//! every selected name is resolved over the complete listing. Only when a resolved target
//! was passed over does a second pass read the source again and extract exactly those
//! members, by their position in the archive. The second pass must see the same bytes (its
//! pin is checked against the first one's, so a source that changed in between is a
//! mismatch). It reads the copy the first pass kept ([`Request::keep`], as every build does),
//! so it is a local read and never a second download; only a caller that keeps nothing
//! (reading the store's kept archive, or [`unpack_reader`], which cannot re-read) is
//! different: the first re-opens its local file, the second reports the link as an error.
//! perl-base's `usr/bin/perl5.36.0` selected without `usr/bin/perl` takes the second pass;
//! tar only ever writes a hard link after its target, so one pass is enough whenever the
//! target is selected too, or comes after a symlink naming it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use crate::fetch::{self, FetchError};
use crate::fs::read_full;
use crate::observe::Observer;
use crate::pin::{Algo, Pin};
use crate::store::Digest;

const CHUNK: usize = 1 << 20;
/// Chunks in flight per channel; with two channels this bounds buffer memory to ~20 MiB.
const DEPTH: usize = 8;
/// Default cap on decompressed bytes (a decompression bomb stops here). The real v1.6.0
/// server tarball unpacks to about 1.2 GB.
pub const DEFAULT_MAX_UNPACKED: u64 = 32 << 30;
/// Members an archive may have: the listing kept for links and suggestions stays bounded
/// (a bomb of empty entries would otherwise grow it without end). Real archives have tens
/// of thousands at most.
pub const MAX_MEMBERS: usize = 1_000_000;
/// Links followed from one selected member before it counts as a loop (as Linux's 40).
const MAX_HOPS: usize = 40;
/// Names a missing-member error suggests.
const SUGGESTIONS: usize = 5;

/// How a kept member's executable bit is chosen (the store keeps only that bit: 0555/0444).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModeRule {
    /// The recipe's `mode`: executable or not, whatever the archive says.
    Fixed(bool),
    /// No `mode` in the recipe: executable when the archive header has any x bit, so a
    /// binary shipped 0755 runs from the switched root without the recipe repeating it.
    FromArchive,
}

/// A member to extract, and how its executable bit is chosen.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Wanted {
    pub member: String,
    pub mode: ModeRule,
}

/// An extracted member, synced, in the scratch directory.
#[derive(Debug)]
pub struct Extracted {
    pub wanted: Wanted,
    /// The executable bit the member got (the rule applied to its archive header).
    pub executable: bool,
    pub path: PathBuf,
    pub size: u64,
    pub blake3: Digest,
}

/// What kind of entry an archive member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular (or contiguous) file.
    File,
    /// A sparse file (GNU `S`, PAX 0.0, 0.1 or 1.0); its size is the expanded one.
    Sparse,
    Directory,
    /// A symbolic link and its target, as the archive holds it.
    Symlink(String),
    /// A hard link and the member it names, as the archive holds it.
    HardLink(String),
    Device,
    Fifo,
    /// Any other entry type (its type byte).
    Other(u8),
}

impl MemberKind {
    /// The short word `kbuild inputs --members` shows.
    pub fn label(&self) -> &'static str {
        match self {
            MemberKind::File => "file",
            MemberKind::Sparse => "sparse",
            MemberKind::Directory => "dir",
            MemberKind::Symlink(_) => "symlink",
            MemberKind::HardLink(_) => "hardlink",
            MemberKind::Device => "device",
            MemberKind::Fifo => "fifo",
            MemberKind::Other(_) => "other",
        }
    }

    /// As in "member `x` is a hard link".
    fn described(&self) -> &'static str {
        match self {
            MemberKind::File | MemberKind::Sparse => "a regular file",
            MemberKind::Directory => "a directory",
            MemberKind::Symlink(_) => "a symbolic link",
            MemberKind::HardLink(_) => "a hard link",
            MemberKind::Device => "a device node",
            MemberKind::Fifo => "a FIFO",
            MemberKind::Other(_) => "a special entry",
        }
    }

    fn is_file(&self) -> bool {
        matches!(self, MemberKind::File | MemberKind::Sparse)
    }
}

/// One archive member, as listed (names normalized: `./usr/bin/x` is `usr/bin/x`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub kind: MemberKind,
    /// Permission bits of the header (`None` when unreadable).
    pub mode: Option<u32>,
    /// Bytes once extracted (sparse: the real size; links: 0).
    pub size: u64,
}

/// A verified fetch.
#[derive(Debug)]
pub struct Unpacked {
    pub url: String,
    /// The pin of the bytes read (the expected one, or made with [`Request::algo`]).
    pub pin: Pin,
    pub size: u64,
    pub files: Vec<Extracted>,
    /// The archive's bytes, synced, when [`Request::keep`] asked for them.
    pub kept: Option<PathBuf>,
    /// Every member of the archive, in archive order (the listing the decoder made).
    pub members: Vec<Member>,
}

/// A member a recipe names that the archive lacks, with the closest names it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub member: String,
    pub closest: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "{} mismatch for input `{input}` from `{url}`\n  expected: {}\n    actual: {}",
        expected.algo(), expected.hex(), actual.hex()
    )]
    HashMismatch {
        input: String,
        url: String,
        expected: Pin,
        actual: Pin,
    },
    #[error("input `{input}` from `{url}`: {message}")]
    Archive {
        input: String,
        url: String,
        message: String,
    },
    #[error("input `{input}` from `{url}` lacks {}{}", list(&missing.iter().map(|m| m.member.clone()).collect::<Vec<_>>()), closest(missing))]
    MissingMembers {
        input: String,
        url: String,
        missing: Vec<Missing>,
    },
    #[error("cannot fetch input `{input}`")]
    Fetch {
        input: String,
        #[source]
        source: FetchError,
    },
    #[error("input `{input}`: every source failed:\n{}", failures.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    AllSourcesFailed {
        input: String,
        failures: Vec<String>,
    },
    #[error("cannot write extracted files")]
    Io(#[from] io::Error),
}

impl UnpackError {
    pub fn help(&self) -> Option<String> {
        match self {
            UnpackError::HashMismatch { input, .. } => Some(format!(
                "the file changed upstream or the mirror is wrong; if the new file is trusted, run `kbuild update {input}`"
            )),
            UnpackError::MissingMembers { input, .. } => Some(format!(
                "fix the `member` paths in the recipe; `kbuild inputs {input} --members` lists the archive's members"
            )),
            UnpackError::Fetch {
                source: FetchError::Offline { .. },
                input,
            } => Some(format!(
                "build once with network access, or point the input at a local copy: `--override-input {input}=file:///path/to/file`"
            )),
            UnpackError::Fetch { input, .. } | UnpackError::AllSourcesFailed { input, .. } => {
                Some(format!(
                    "add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input {input}=file:///path/to/file` (add `--offline` to be sure nothing is fetched)"
                ))
            }
            _ => None,
        }
    }

    /// The failure in one line, naming the URL (for retries and the all-sources summary).
    fn cause(&self) -> String {
        match self {
            UnpackError::Fetch { source, .. } => source.to_string(),
            UnpackError::HashMismatch {
                url,
                expected,
                actual,
                ..
            } => format!(
                "`{url}`: {} is {}, expected {}",
                expected.algo(),
                actual.hex(),
                expected.hex()
            ),
            UnpackError::Archive { url, message, .. } => format!("`{url}`: {message}"),
            other => other.to_string(),
        }
    }

    /// Whether another source (mirror) could do better.
    fn try_next_source(&self) -> bool {
        !matches!(self, UnpackError::Io(_))
    }
}

fn list(items: &[String]) -> String {
    items
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per missing member: the names closest to it in the archive.
fn closest(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| {
            if m.closest.is_empty() {
                format!("\n  `{}`: the archive holds no files", m.member)
            } else {
                format!(
                    "\n  `{}`: closest in the archive: {}",
                    m.member,
                    list(&m.closest)
                )
            }
        })
        .collect()
}

/// What to fetch and keep.
pub struct Request<'a> {
    pub input: &'a str,
    pub urls: &'a [String],
    /// The pin the bytes must match; `None` pins what is read, with `algo`.
    pub expected: Option<&'a Pin>,
    /// The algorithm to hash with when nothing is pinned yet.
    pub algo: Algo,
    pub wanted: &'a [Wanted],
    pub offline: bool,
    pub max_unpacked: u64,
    /// The pinned size, when known: a source delivering more is cut off right there.
    pub expected_size: Option<u64>,
    /// Also write the archive's bytes, as they are read, to a file in the attempt's scratch
    /// directory ([`Unpacked::kept`]): the caller keeps the input in the store, so later
    /// builds need no network, and a second pass (see the module doc) reads that copy.
    pub keep: bool,
}

/// Tries each URL in order (each up to [`fetch::ATTEMPTS_PER_URL`] times on transient
/// errors) and returns the first verified result; extracted files land in `scratch`.
pub fn fetch_and_unpack(
    req: &Request<'_>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, UnpackError> {
    let mut failures = Vec::new();
    let mut last = None;
    let mut tries = 0;
    for url in req.urls {
        for attempt in 1..=fetch::ATTEMPTS_PER_URL {
            // Each attempt extracts into a directory of its own, removed if it fails.
            tries += 1;
            let dir = scratch.join(format!("attempt-{tries}"));
            fs_err::create_dir(&dir)?;
            let result = unpack_once(req, url, &dir, observer);
            if result.is_err() {
                crate::fs::remove_tree(&dir)?;
            }
            match result {
                Ok(u) => {
                    if url != &req.urls[0] {
                        observer.status("Mirrored", &format!("{} was served by {url}", req.input));
                    }
                    return Ok(u);
                }
                Err(Attempt::Transient(e)) if attempt < fetch::ATTEMPTS_PER_URL => {
                    observer.status(
                        "Retrying",
                        &format!(
                            "{} (attempt {} of {})",
                            e.cause(),
                            attempt + 1,
                            fetch::ATTEMPTS_PER_URL
                        ),
                    );
                    std::thread::sleep(std::time::Duration::from_millis(250 << attempt));
                }
                Err(Attempt::Transient(e) | Attempt::Final(e)) => {
                    if !e.try_next_source() {
                        return Err(e);
                    }
                    failures.push(e.cause());
                    last = Some(e);
                    break;
                }
            }
        }
    }
    match (failures.len(), last) {
        (1, Some(e)) => Err(e),
        (_, Some(_)) => Err(UnpackError::AllSourcesFailed {
            input: req.input.to_owned(),
            failures,
        }),
        (_, None) => Err(UnpackError::AllSourcesFailed {
            input: req.input.to_owned(),
            failures: vec!["no URL given".into()],
        }),
    }
}

enum Attempt {
    Transient(UnpackError),
    Final(UnpackError),
}

fn open_source(
    req: &Request<'_>,
    url: &str,
    again: bool,
    observer: &dyn Observer,
) -> Result<Box<dyn Read + Send>, Attempt> {
    let input = req.input;
    if again {
        observer.transfer_end(input);
        observer.status(
            "Rereading",
            &format!("{input} from {url} (a selected link's target comes before the link)"),
        );
    } else {
        let what = if fetch::is_network(url) {
            "Fetching"
        } else {
            "Reading"
        };
        // Offline, a network URL fails at once: announcing a fetch first would mislead.
        if !(req.offline && fetch::is_network(url)) {
            observer.status(what, &format!("{input} from {url}"));
        }
    }
    let opened = fetch::open(url, req.offline).map_err(|source| {
        let e = UnpackError::Fetch {
            input: input.to_owned(),
            source,
        };
        match &e {
            UnpackError::Fetch { source, .. } if source.is_transient() => Attempt::Transient(e),
            _ => Attempt::Final(e),
        }
    })?;
    // A source announcing more than the pinned size is the wrong file: say so before reading.
    if let (Some(len), Some(pinned)) = (opened.len, req.expected_size)
        && len > pinned
    {
        return Err(Attempt::Final(UnpackError::Fetch {
            input: input.to_owned(),
            source: FetchError::Transport {
                url: url.to_owned(),
                message: format!(
                    "announces {len} bytes, more than the pinned {pinned} (nothing was read)"
                ),
                transient: false,
            },
        }));
    }
    observer.transfer_start(input, opened.len);
    Ok(opened.reader)
}

fn unpack_once(
    req: &Request<'_>,
    url: &str,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, Attempt> {
    let reopen = || open_source(req, url, true, observer);
    let first = open_source(req, url, false, observer);
    let result = first.and_then(|src| run(req, url, src, Some(&reopen), scratch, observer));
    observer.transfer_end(req.input);
    result
}

/// Unpacks an archive from any reader, in one attempt (no mirrors, no retries): the entry
/// point for the fuzzer and for callers that already hold the bytes. `label` stands for the
/// URL in messages. A reader cannot be read twice: a selected link whose target came
/// earlier unselected is an error here (see the module doc).
pub fn unpack_reader(
    req: &Request<'_>,
    label: &str,
    reader: Box<dyn Read + Send>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, UnpackError> {
    run(req, label, reader, None, scratch, observer).map_err(|a| match a {
        Attempt::Transient(e) | Attempt::Final(e) => e,
    })
}

/// Lists an archive's members (any supported format) from a reader, with the decoder that
/// extraction uses. `Err` says what is wrong with the archive.
pub fn list_members(reader: impl Read, max_unpacked: u64) -> Result<Vec<Member>, String> {
    let mut src = io::BufReader::with_capacity(CHUNK, reader);
    let mut members = Vec::new();
    walk(&mut src, max_unpacked, &mut |m, _| {
        if members.len() >= MAX_MEMBERS {
            return Err(format!(
                "has more than {MAX_MEMBERS} members (kbuild's limit on one archive)"
            ));
        }
        members.push(m.clone());
        Ok(())
    })?;
    Ok(members)
}

type Reopen<'a> = &'a dyn Fn() -> Result<Box<dyn Read + Send>, Attempt>;

/// Both passes and the resolution between them (see the module doc).
fn run(
    req: &Request<'_>,
    url: &str,
    source: Box<dyn Read + Send>,
    reopen: Option<Reopen<'_>>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, Attempt> {
    let archive_err = |message: String| {
        Attempt::Final(UnpackError::Archive {
            input: req.input.to_owned(),
            url: url.to_owned(),
            message,
        })
    };
    let names: BTreeSet<String> = req.wanted.iter().map(|w| w.member.clone()).collect();
    let mut first = run_pass(
        req,
        url,
        source,
        &Select::Names(names),
        (req.expected, req.algo),
        req.expected_size,
        req.keep,
        scratch,
        observer,
    )?;
    if let Some(m) = first.duplicate.take() {
        return Err(archive_err(m));
    }
    let last: HashMap<&str, usize> = first
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let mut missing = Vec::new();
    let mut resolved = Vec::with_capacity(req.wanted.len());
    for w in req.wanted {
        match last.get(w.member.as_str()) {
            None => missing.push(Missing {
                member: w.member.clone(),
                closest: suggest(&w.member, &first.members),
            }),
            Some(&i) => {
                let target = resolve(&w.member, i, &first.members, &last, &first.hard_links)
                    .map_err(archive_err)?;
                resolved.push((w, target));
            }
        }
    }
    if !missing.is_empty() {
        return Err(Attempt::Final(UnpackError::MissingMembers {
            input: req.input.to_owned(),
            url: url.to_owned(),
            missing,
        }));
    }
    let later: BTreeSet<usize> = resolved
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| !first.extracted.contains_key(t))
        .collect();
    if !later.is_empty() {
        // The copy being kept, when there is one, is the file just read: a local read.
        let source: Box<dyn Read + Send> = match (&first.kept, reopen) {
            (Some(path), _) => {
                observer.transfer_end(req.input);
                observer.status(
                    "Rereading",
                    &format!(
                        "{} from the copy kept of {url} (a selected link's target comes before the link)",
                        req.input
                    ),
                );
                let file = fs_err::File::open(path).map_err(|e| Attempt::Final(e.into()))?;
                observer.transfer_start(req.input, Some(first.size));
                Box::new(file)
            }
            (None, Some(reopen)) => reopen()?,
            (None, None) => {
                let t = *later.first().expect("not empty");
                return Err(archive_err(format!(
                    "member `{}` is needed through a link that comes after it; reading it needs a second pass over the source, which this reader cannot give",
                    first.members[t].name
                )));
            }
        };
        let second = run_pass(
            req,
            url,
            source,
            &Select::Positions(later),
            (Some(&first.pin), req.algo),
            Some(first.size),
            false,
            &scratch.join("second"),
            observer,
        )?;
        first.extracted.extend(second.extracted);
    }
    // Every resolved target is extracted now; a target several names share is copied for
    // all but the first, so each output is a file of its own (it is renamed into the store).
    let mut used = BTreeSet::new();
    let mut files = Vec::with_capacity(resolved.len());
    for (n, (w, t)) in resolved.into_iter().enumerate() {
        let file = first.extracted.get(&t).ok_or_else(|| {
            archive_err(format!(
                "member `{}` was not extracted",
                first.members[t].name
            ))
        })?;
        let executable = match w.mode {
            ModeRule::Fixed(x) => x,
            ModeRule::FromArchive => {
                let mode = first.members[t].mode.ok_or_else(|| {
                    archive_err(format!(
                        "member `{}` has an unreadable mode",
                        first.members[t].name
                    ))
                })?;
                mode & 0o111 != 0
            }
        };
        let path = if used.insert(t) {
            file.path.clone()
        } else {
            let copy = scratch.join(format!("copy-{n}"));
            copy_synced(&file.path, &copy).map_err(|e| Attempt::Final(UnpackError::Io(e)))?;
            copy
        };
        set_mode(&path, executable).map_err(|e| Attempt::Final(UnpackError::Io(e)))?;
        files.push(Extracted {
            wanted: w.clone(),
            executable,
            path,
            size: file.size,
            blake3: file.blake3,
        });
    }
    Ok(Unpacked {
        url: url.to_owned(),
        pin: first.pin,
        size: first.size,
        files,
        members: first.members,
        kept: first.kept,
    })
}

fn copy_synced(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = fs_err::File::open(from)?;
    let mut dst = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_data()
}

fn set_mode(path: &Path, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Follows links from member `i` (named `name`) to the regular file whose bytes it stands
/// for; `last` maps each name to its last member (as the extracted tree would hold it).
fn resolve(
    name: &str,
    mut i: usize,
    members: &[Member],
    last: &HashMap<&str, usize>,
    hard_links: &HashMap<usize, Result<usize, String>>,
) -> Result<usize, String> {
    let mut hops = 0;
    // A fault found after following links also names the selected member it came from.
    let from = |hops: usize, msg: String| {
        if hops == 0 {
            msg
        } else {
            format!("{msg} (reached from member `{name}`)")
        }
    };
    loop {
        let m = &members[i];
        let shown = &m.name;
        match &m.kind {
            k if k.is_file() => return Ok(i),
            MemberKind::Symlink(target) => {
                let next = symlink_target(&m.name, target).ok_or_else(|| {
                    from(hops, format!(
                        "member `{shown}` is a symbolic link to `{target}`, outside the archive (links are followed only to other members)"
                    ))
                })?;
                i = *last.get(next.as_str()).ok_or_else(|| {
                    from(hops, format!(
                        "member `{shown}` is a symbolic link to `{target}`, and the archive has no member `{next}`"
                    ))
                })?;
            }
            MemberKind::HardLink(target) => {
                i = match hard_links.get(&i) {
                    Some(Ok(t)) => *t,
                    Some(Err(why)) => {
                        return Err(from(
                            hops,
                            format!("member `{shown}` is a hard link to `{target}`, {why}"),
                        ));
                    }
                    None => unreachable!("every hard link is recorded"),
                };
            }
            other => {
                return Err(from(
                    hops,
                    format!(
                        "member `{shown}` is {}, not a regular file",
                        other.described()
                    ),
                ));
            }
        }
        hops += 1;
        if hops > MAX_HOPS {
            return Err(format!(
                "member `{name}` leads through more than {MAX_HOPS} links (a loop?)"
            ));
        }
    }
}

/// The member a symlink at `link` pointing to `target` names: relative to the link's
/// directory, `.` and `..` applied; `None` if absolute or climbing out of the archive.
fn symlink_target(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A hard link's target as a member name; `None` if absolute or with `..`.
fn hard_link_target(target: &str) -> Option<String> {
    match safe_name(target.as_bytes()) {
        Ok(Some(n)) => Some(n),
        _ => None,
    }
}

/// Ranks the archive's names by how well they could be what `wanted` meant: most trailing
/// path components in common (`bin/esbuild` → `package/bin/esbuild`), then the edit distance
/// of the file names (`kube-scheduler` → `kube-scheduler.tar`), then of the whole paths.
/// Directories are left out.
fn suggest(wanted: &str, members: &[Member]) -> Vec<String> {
    let wanted_parts: Vec<&str> = wanted.split('/').rev().collect();
    let base = |n: &str| n.rsplit('/').next().unwrap_or(n).to_owned();
    let wanted_base = base(wanted);
    let mut seen = BTreeSet::new();
    let mut ranked: Vec<(usize, usize, usize, &str)> = members
        .iter()
        .filter(|m| m.kind != MemberKind::Directory && seen.insert(m.name.as_str()))
        .map(|m| {
            let parts = m
                .name
                .split('/')
                .rev()
                .zip(&wanted_parts)
                .take_while(|(a, b)| a == *b)
                .count();
            (
                usize::MAX - parts,
                edit_distance(&wanted_base, &base(&m.name)),
                edit_distance(wanted, &m.name),
                m.name.as_str(),
            )
        })
        .collect();
    ranked.sort();
    ranked
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(.., n)| n.to_owned())
        .collect()
}

/// Levenshtein distance over bytes (names are short; two rows of memory).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Which members a pass extracts.
enum Select {
    /// Members with these names, and (from a symlink among them) the members their targets
    /// name when those come later.
    Names(BTreeSet<String>),
    /// Members at these positions (the second pass).
    Positions(BTreeSet<usize>),
}

/// A member written to the scratch directory.
#[derive(Debug)]
struct File {
    path: PathBuf,
    size: u64,
    blake3: Digest,
}

/// What one pass over the source found.
struct Pass {
    pin: Pin,
    /// The copy of the archive written while reading, when asked for.
    kept: Option<PathBuf>,
    size: u64,
    members: Vec<Member>,
    /// Each hard link's target member (the last of that name before the link), or why not.
    hard_links: HashMap<usize, Result<usize, String>>,
    /// Extracted members by position.
    extracted: BTreeMap<usize, File>,
    /// A selected name that appears as a regular file and as something else.
    duplicate: Option<String>,
}

/// One pass over an opened source: read (hashing, and keeping a copy when `keep`), decode,
/// extract the selected members. Errors are ordered as in one pass: a read failure, then a
/// pin mismatch
/// (the whole file was hashed, bounded by the pin), then a write error, then what is wrong
/// with the archive.
#[allow(clippy::too_many_arguments)]
fn run_pass(
    req: &Request<'_>,
    url: &str,
    source: Box<dyn Read + Send>,
    select: &Select,
    (expected, algo): (Option<&Pin>, Algo),
    expected_size: Option<u64>,
    keep: bool,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Pass, Attempt> {
    let input = req.input;
    let archive_err = |message: String| UnpackError::Archive {
        input: input.to_owned(),
        url: url.to_owned(),
        message,
    };
    if !scratch.exists() {
        fs_err::create_dir(scratch).map_err(|e| Attempt::Final(UnpackError::Io(e)))?;
    }

    let (full_tx, full_rx) = sync_channel::<Vec<u8>>(DEPTH);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let (w_tx, w_rx) = sync_channel::<WriterMsg>(DEPTH);
    let (wfree_tx, wfree_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    for _ in 0..DEPTH + 2 {
        free_tx
            .send(Vec::with_capacity(CHUNK))
            .expect("fresh channel");
        wfree_tx
            .send(Vec::with_capacity(CHUNK))
            .expect("fresh channel");
    }

    // Bytes the reader accepted; the decoder reports what it consumed as it goes, and the
    // rest (read ahead, then left unread after an error) is reported at the end, so a
    // transfer's total is what was read.
    let read_total = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        let limit = ReadLimit {
            bytes: expected_size.unwrap_or(req.max_unpacked),
            pinned: expected_size.is_some(),
        };
        let algo = expected.map_or(algo, Pin::algo);
        let keep = keep.then(|| scratch.join("archive"));
        // The kept copy is written by a thread of its own, so reading runs at the pace it
        // did without it: the reader only copies each chunk into a recycled buffer.
        let (keep_tx, keeper) = match &keep {
            Some(path) => {
                let path = path.clone();
                let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
                let (ktx, krx) = sync_channel::<Vec<u8>>(DEPTH + 2);
                let keeper = s.spawn(move || keep_stage(&path, rx, ktx));
                (Some((tx, krx)), Some(keeper))
            }
            None => (None, None),
        };
        let read = &read_total;
        let reader =
            s.spawn(move || read_stage(source, limit, algo, keep_tx, read, full_tx, free_rx));
        let writer = s.spawn(move || write_stage(w_rx, wfree_tx));

        let mut chan = ChannelReader {
            rx: full_rx,
            free: free_tx,
            cur: Vec::new(),
            pos: 0,
            input,
            observer,
            consumed: 0,
        };
        let mut state = Extract {
            select,
            needed: match select {
                Select::Names(n) => n.clone(),
                Select::Positions(_) => BTreeSet::new(),
            },
            members: Vec::new(),
            by_name: HashMap::new(),
            hard_links: HashMap::new(),
            duplicate: None,
            budget: req.max_unpacked,
            limit: req.max_unpacked,
            serial: 0,
            to_writer: &w_tx,
            free: &wfree_rx,
            scratch,
        };
        let decoded = walk(&mut chan, req.max_unpacked, &mut |m, data| {
            state.visit(m, data)
        });
        let Extract {
            members,
            hard_links,
            duplicate,
            ..
        } = state;
        drop(w_tx);
        // After an archive error, read the rest (bounded by the pinned size) so the sha256
        // covers the whole file: a corrupt archive that is also the wrong file is reported as
        // a hash mismatch. Without a pinned size there is nothing to compare, and an endless
        // source must not be read forever: stop right away.
        let drained = if decoded.is_ok() || expected_size.is_some() {
            io::copy(&mut chan, &mut io::sink())
        } else {
            Ok(0)
        };
        let consumed = chan.consumed;
        drop(chan);
        let read_result = reader.join().expect("reader thread panicked");
        let kept = keeper.map(|k| k.join().expect("keeper thread panicked"));
        let read = read_total.load(std::sync::atomic::Ordering::SeqCst);
        if read > consumed {
            observer.transfer_progress(input, read - consumed);
        }
        let written = writer.join().expect("writer thread panicked");

        let (pin, size) = match read_result {
            Ok(Some(v)) => v,
            // Stopped early after an archive error: report that error.
            Ok(None) => {
                let m = decoded
                    .err()
                    .unwrap_or_else(|| "the archive ended early".into());
                return Err(Attempt::Final(archive_err(m)));
            }
            Err(e) => {
                let transient = e.kind() != io::ErrorKind::InvalidData;
                let message =
                    if e.kind() == io::ErrorKind::TimedOut || e.to_string().contains("timeout") {
                        format!(
                            "no data for {} s (KBUILD_HTTP_TIMEOUT sets the limit, in seconds)",
                            fetch::stall_timeout().as_secs()
                        )
                    } else if transient {
                        format!("reading failed: {e}")
                    } else {
                        e.to_string()
                    };
                let err = UnpackError::Fetch {
                    input: input.to_owned(),
                    source: FetchError::Transport {
                        url: url.to_owned(),
                        message,
                        transient,
                    },
                };
                return Err(if transient {
                    Attempt::Transient(err)
                } else {
                    Attempt::Final(err)
                });
            }
        };
        drained.map_err(|e| Attempt::Final(UnpackError::Io(e)))?;
        if let Some(expected) = expected
            && *expected != pin
        {
            return Err(Attempt::Final(UnpackError::HashMismatch {
                input: input.to_owned(),
                url: url.to_owned(),
                expected: expected.clone(),
                actual: pin,
            }));
        }
        // A write error (disk full) is the cause of the decoder's "writer stopped".
        let files = written.map_err(|e| Attempt::Final(UnpackError::Io(e)))?;
        if let Some(Err(e)) = kept {
            return Err(Attempt::Final(UnpackError::Io(e)));
        }
        decoded.map_err(|m| Attempt::Final(archive_err(m)))?;
        Ok(Pass {
            pin,
            kept: keep,
            size,
            members,
            hard_links,
            extracted: files.into_iter().collect(),
            duplicate,
        })
    })
}

/// The extraction side of [`walk`] for one pass.
struct Extract<'a> {
    select: &'a Select,
    /// Names to extract (first pass): the selected ones, and symlink targets found on the way.
    needed: BTreeSet<String>,
    members: Vec<Member>,
    /// Each name's latest position so far.
    by_name: HashMap<String, usize>,
    hard_links: HashMap<usize, Result<usize, String>>,
    duplicate: Option<String>,
    /// Bytes that may still be written (sparse members expand beyond what was decompressed).
    budget: u64,
    limit: u64,
    /// Files written so far.
    serial: usize,
    to_writer: &'a SyncSender<WriterMsg>,
    free: &'a Receiver<Vec<u8>>,
    scratch: &'a Path,
}

impl Extract<'_> {
    fn visit(&mut self, m: &Member, data: &mut dyn Read) -> Result<(), String> {
        let i = self.members.len();
        if i >= MAX_MEMBERS {
            return Err(format!(
                "has more than {MAX_MEMBERS} members (kbuild's limit on one archive)"
            ));
        }
        let wanted = match self.select {
            Select::Names(_) => self.needed.contains(&m.name),
            Select::Positions(p) => p.contains(&i),
        };
        if let MemberKind::HardLink(target) = &m.kind {
            // Tar resolves a hard link to the member of that name extracted before it.
            let t = match hard_link_target(target) {
                None => Err("outside the archive (links are followed only to other members)".to_owned()),
                Some(t) => self.by_name.get(&t).copied().ok_or_else(|| {
                    "which is not a member before it (a hard link can only name an earlier member)".to_owned()
                }),
            };
            self.hard_links.insert(i, t);
        }
        if wanted && matches!(self.select, Select::Names(_)) {
            if let Some(&j) = self.by_name.get(&m.name) {
                let (a, b) = (&self.members[j].kind, &m.kind);
                if a.is_file() != b.is_file() && self.duplicate.is_none() {
                    self.duplicate = Some(format!(
                        "member `{}` appears twice, as {} and then as {}; kbuild cannot tell which one is meant",
                        m.name,
                        a.described(),
                        b.described()
                    ));
                }
            }
            if let MemberKind::Symlink(target) = &m.kind
                && let Some(next) = symlink_target(&m.name, target)
            {
                self.needed.insert(next);
            }
        }
        if wanted && m.kind.is_file() {
            self.extract(i, m, data)?;
        }
        self.by_name.insert(m.name.clone(), i);
        self.members.push(m.clone());
        Ok(())
    }

    fn extract(&mut self, i: usize, m: &Member, data: &mut dyn Read) -> Result<(), String> {
        if m.size > self.budget {
            return Err(format!(
                "unpacks to more than {} bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
                self.limit
            ));
        }
        self.budget -= m.size;
        // Numbered in extraction order (member-1, member-2, …), not by archive position.
        self.serial += 1;
        let path = self.scratch.join(format!("member-{}", self.serial));
        if self
            .to_writer
            .send(WriterMsg::Begin { at: i, path })
            .is_err()
        {
            return Err("the writer stopped (see the I/O error)".into());
        }
        loop {
            let mut buf = self
                .free
                .recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            buf.resize(CHUNK, 0);
            let n = read_full(data, &mut buf).map_err(|e| describe(&e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if self.to_writer.send(WriterMsg::Data(buf)).is_err() {
                return Err("the writer stopped (see the I/O error)".into());
            }
        }
        if self.to_writer.send(WriterMsg::End).is_err() {
            return Err("the writer stopped (see the I/O error)".into());
        }
        Ok(())
    }
}

/// How much the reader may read.
#[derive(Clone, Copy)]
struct ReadLimit {
    bytes: u64,
    /// `bytes` is the pinned size (else the unpack limit). Only then does reading go on when
    /// the consumer stops early: the hash of the whole (bounded) file says which error it is.
    pinned: bool,
}

/// Where the reader hands copies of chunks to the keeper, and the keeper's emptied buffers.
type KeepChannel = (SyncSender<Vec<u8>>, Receiver<Vec<u8>>);

/// Reads the source into recycled chunks, hashing as it goes (and handing a copy of each
/// chunk to the keeper, when there is one). Never reads more than one byte past the limit:
/// a wrong file larger than the pin is cut off there, not read to its end. `Ok(None)` when
/// the consumer stopped early and the rest was not read.
fn read_stage(
    mut src: Box<dyn Read + Send>,
    limit: ReadLimit,
    algo: Algo,
    keep: Option<KeepChannel>,
    read: &std::sync::atomic::AtomicU64,
    full: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
) -> io::Result<Option<(Pin, u64)>> {
    let mut hasher = algo.hasher();
    let mut total = 0u64;
    let mut consumer_gone = false;
    loop {
        let mut buf = free.recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        // At most one byte past the limit: enough to tell "larger" from "exactly".
        let room = limit.bytes.saturating_add(1).saturating_sub(total);
        let want = usize::try_from(room).map_or(CHUNK, |r| r.min(CHUNK));
        buf.resize(want, 0);
        let n = read_full(&mut src, &mut buf)?;
        buf.truncate(n);
        if n == 0 {
            return Ok(Some((hasher.finish(), total)));
        }
        total += n as u64;
        if total > limit.bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                if limit.pinned {
                    format!(
                        "delivers more than the pinned {} bytes (reading stopped at byte {total})",
                        limit.bytes
                    )
                } else {
                    format!(
                        "is larger than {} bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
                        limit.bytes
                    )
                },
            ));
        }
        read.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        hasher.update(&buf);
        if let Some((tx, pool)) = &keep {
            let mut copy = pool
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            copy.clear();
            copy.extend_from_slice(&buf);
            // A keeper that stopped (disk full) reports its error when joined.
            let _ = tx.send(copy);
        }
        if consumer_gone || full.send(buf).is_err() {
            consumer_gone = true;
            if !limit.pinned {
                return Ok(None);
            }
        }
    }
}

/// Writes the kept copy of the archive being read to `path`, with early writeback (as
/// members are, see `write_stage`) so the final `fdatasync` waits only for the tail.
fn keep_stage(path: &Path, rx: Receiver<Vec<u8>>, free: SyncSender<Vec<u8>>) -> io::Result<()> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    let (mut written, mut kicked) = (0u64, 0u64);
    for buf in rx {
        file.write_all(&buf)?;
        written += buf.len() as u64;
        if written - kicked >= WRITEBACK_STEP {
            let len = std::num::NonZeroU64::new(written - kicked);
            // Advisory: a failure only loses the overlap, never data.
            let _ = rustix::fs::fadvise(file.file(), kicked, len, rustix::fs::Advice::DontNeed);
            kicked = written;
        }
        let _ = free.try_send(buf);
    }
    file.sync_data()
}

/// A `BufRead` over the reader thread's chunks, handing emptied buffers back. Progress is
/// reported here, as the decoder consumes each chunk: the bar follows decompression, not
/// the reader running ahead (a slow xz decode would otherwise sit at 100 %).
struct ChannelReader<'o> {
    rx: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    input: &'o str,
    observer: &'o dyn Observer,
    /// Bytes reported so far (whole chunks the decoder moved past).
    consumed: u64,
}

impl Read for ChannelReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.cur.len() {
            if !self.cur.is_empty() {
                self.observer
                    .transfer_progress(self.input, self.cur.len() as u64);
                self.consumed += self.cur.len() as u64;
            }
            let Ok(next) = self.rx.recv() else {
                self.cur.clear();
                self.pos = 0;
                return Ok(&[]);
            };
            let old = std::mem::replace(&mut self.cur, next);
            let _ = self.free.try_send(old);
            self.pos = 0;
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Counts decompressed bytes and stops at the limit (decompression bombs).
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(format!(
                "unpacks to more than {} bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
                self.limit
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

enum WriterMsg {
    /// A member (at its position in the archive) begins; its bytes follow.
    Begin {
        at: usize,
        path: PathBuf,
    },
    Data(Vec<u8>),
    End,
}

/// Bytes written between two writeback kicks (see `write_stage`).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Writes kept members, hashing them with BLAKE3 on the way, and syncs each one.
///
/// Durability costs about as much as decoding here (the binaries are hundreds of MB), so
/// writeback is started every few MB with `fadvise(DONTNEED)`, which queues dirty pages
/// without waiting; the final `fdatasync` then only waits for the tail. The disk works in
/// parallel with the decoder instead of after it. Files are created 0600; the caller sets
/// the mode once links are resolved (the executable bit is the link target's).
fn write_stage(
    rx: Receiver<WriterMsg>,
    free: SyncSender<Vec<u8>>,
) -> io::Result<Vec<(usize, File)>> {
    struct Open {
        file: fs_err::File,
        hasher: blake3::Hasher,
        kicked: u64,
        at: usize,
        ex: File,
    }
    let mut done = Vec::new();
    let mut current: Option<Open> = None;
    for msg in rx {
        match msg {
            WriterMsg::Begin { at, path } => {
                use fs_err::os::unix::fs::OpenOptionsExt;
                let file = fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                current = Some(Open {
                    file,
                    hasher: blake3::Hasher::new(),
                    kicked: 0,
                    at,
                    ex: File {
                        path,
                        size: 0,
                        blake3: Digest([0; 32]),
                    },
                });
            }
            WriterMsg::Data(buf) => {
                let o = current.as_mut().expect("Begin comes before Data");
                o.hasher.update(&buf);
                if let Some(e) = crate::activate::fault::disk_full() {
                    return Err(crate::fs::annotate(e, "write", &o.ex.path));
                }
                o.file.write_all(&buf)?;
                o.ex.size += buf.len() as u64;
                if o.ex.size - o.kicked >= WRITEBACK_STEP {
                    let len = std::num::NonZeroU64::new(o.ex.size - o.kicked);
                    // Advisory: a failure only loses the overlap, never data.
                    let _ = rustix::fs::fadvise(
                        o.file.file(),
                        o.kicked,
                        len,
                        rustix::fs::Advice::DontNeed,
                    );
                    o.kicked = o.ex.size;
                }
                let _ = free.try_send(buf);
            }
            WriterMsg::End => {
                let mut o = current.take().expect("Begin comes before End");
                o.file.sync_data()?;
                o.ex.blake3 = Digest(*o.hasher.finalize().as_bytes());
                done.push((o.at, o.ex));
            }
        }
    }
    Ok(done)
}

/// What the decoder hands a visitor: a member and a reader of its bytes (sparse members
/// expanded). Bytes the visitor leaves unread are skipped.
type Visit<'v> = dyn FnMut(&Member, &mut dyn Read) -> Result<(), String> + 'v;

const AR_MAGIC: &[u8] = b"!<arch>\n";
const NOT_AN_ARCHIVE: &str =
    "is neither a tar archive (gzip, zstd, xz or plain) nor a Debian package (.deb)";

/// Decodes an archive: a Debian package (by its `ar` magic) or a tarball in any supported
/// compression, calling `visit` for each member with a name kbuild can match (UTF-8, not
/// the root). `Err` says what is wrong with the archive.
pub(crate) fn walk(
    src: &mut dyn BufRead,
    max_unpacked: u64,
    visit: &mut Visit<'_>,
) -> Result<(), String> {
    let magic = src.fill_buf().map_err(|e| describe(&e))?;
    if magic.starts_with(AR_MAGIC) {
        return walk_deb(src, max_unpacked, visit);
    }
    walk_tar(src, max_unpacked, visit, None)
}

/// A Debian package: `ar` members `debian-binary`, `control.tar.*`, `data.tar.*`; only the
/// data tarball is decoded, the rest is read and checked for shape. Every header field is
/// bounds-checked; a member runs exactly its declared size (plus the pad byte to an even
/// offset).
fn walk_deb(src: &mut dyn BufRead, max_unpacked: u64, visit: &mut Visit<'_>) -> Result<(), String> {
    let mut magic = [0u8; 8];
    src.read_exact(&mut magic).map_err(|e| describe(&e))?;
    let mut offset = 8u64;
    let mut data = None;
    loop {
        let mut header = [0u8; 60];
        let n = read_full(src, &mut header).map_err(|e| describe(&e))?;
        if n == 0 {
            break;
        }
        if n < header.len() {
            return Err("the archive is truncated (unexpected end of data)".into());
        }
        let ar = parse_ar_header(&header).map_err(|why| {
            format!("the Debian package is corrupt: the `ar` header at byte {offset} {why}")
        })?;
        let mut body = (&mut *src).take(ar.size);
        if ar.name.starts_with("data.tar") {
            if let Some(first) = &data {
                return Err(format!(
                    "the Debian package is corrupt: it has two data members (`{first}` and `{}`)",
                    ar.name
                ));
            }
            walk_tar(&mut body, max_unpacked, visit, Some(&ar.name))?;
            data = Some(ar.name.clone());
        }
        // Whatever the tar decoder left (and the other members) is read, so the member
        // ends exactly where its header says.
        let left = body.limit();
        let skipped = io::copy(&mut body, &mut io::sink()).map_err(|e| describe(&e))?;
        if skipped < left {
            return Err("the archive is truncated (unexpected end of data)".into());
        }
        offset = offset.saturating_add(60).saturating_add(ar.size);
        if ar.size % 2 == 1 {
            // The pad byte; GNU ar writes it, a missing one at the very end is tolerated.
            let mut pad = [0u8; 1];
            let got = read_full(src, &mut pad).map_err(|e| describe(&e))?;
            offset += got as u64;
        }
    }
    if data.is_none() {
        return Err(
            "is an `ar` archive without a `data.tar.*` member, not a Debian package".into(),
        );
    }
    Ok(())
}

/// One `ar` member header.
#[derive(Debug, PartialEq, Eq)]
pub struct ArHeader {
    pub name: String,
    pub size: u64,
}

/// Parses a 60-byte `ar` member header: name (16, GNU's trailing `/` dropped), mtime (12),
/// uid (6), gid (6), mode (8), size (10, decimal), the magic "`\n". `Err` says what is wrong.
pub fn parse_ar_header(h: &[u8; 60]) -> Result<ArHeader, String> {
    if &h[58..60] != b"`\n" {
        return Err("lacks its end marker (not an `ar` member header)".into());
    }
    let name = std::str::from_utf8(&h[..16])
        .map_err(|_| "has a name that is not text".to_owned())?
        .trim_end_matches(' ');
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || name.contains('/') {
        return Err(format!("has a malformed name `{name}`"));
    }
    let size = std::str::from_utf8(&h[48..58])
        .ok()
        .map(|s| s.trim_end_matches(' '))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "has a malformed size".to_owned())?;
    Ok(ArHeader {
        name: name.to_owned(),
        size,
    })
}

/// Decompresses and walks one tar stream; `in_deb` names the package member it came from.
fn walk_tar(
    src: &mut dyn BufRead,
    max_unpacked: u64,
    visit: &mut Visit<'_>,
    in_deb: Option<&str>,
) -> Result<(), String> {
    let magic = src.fill_buf().map_err(|e| describe(&e))?.to_vec();
    let decoder: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(&mut *src))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(&mut *src).map_err(|e| e.to_string())?)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(&mut *src))
    } else if magic.len() >= 262 && &magic[257..262] == b"ustar" {
        Box::new(&mut *src)
    } else {
        return Err(match in_deb {
            Some(m) => format!(
                "the Debian package's `{m}` is not a tar archive kbuild reads (gzip, zstd, xz or plain)"
            ),
            None => NOT_AN_ARCHIVE.into(),
        });
    };
    let mut limited = Limited {
        inner: decoder,
        left: max_unpacked,
        limit: max_unpacked,
    };
    let mut skip = vec![0u8; CHUNK];
    {
        let mut archive = tar::Archive::new(&mut limited);
        let entries = archive.entries().map_err(|e| describe(&e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| describe(&e))?;
            if entry.header().entry_type().is_pax_global_extensions() {
                // Global PAX records are ignored, as before; the header's own name is still
                // checked like any member's. Reading them as this entry's records would
                // take their `path` for its name.
                safe_name(&entry.header().path_bytes())?;
                while read_full(&mut entry, &mut skip).map_err(|e| describe(&e))? > 0 {}
                continue;
            }
            let sparse = pax_sparse(&mut entry)?;
            let raw = match &sparse {
                Some(PaxSparse { name: Some(n), .. }) => n.clone(),
                _ => entry.path_bytes().into_owned(),
            };
            let Some(name) = safe_name(&raw)? else {
                while read_full(&mut entry, &mut skip).map_err(|e| describe(&e))? > 0 {}
                continue;
            };
            let header = entry.header();
            let mode = header.mode().ok();
            let kind = header.entry_type();
            let link = || {
                String::from_utf8_lossy(&entry.link_name_bytes().unwrap_or_default()).into_owned()
            };
            let member_kind = match kind {
                _ if sparse.is_some() => MemberKind::Sparse,
                k if k.is_gnu_sparse() => MemberKind::Sparse,
                k if k.is_file() || k == tar::EntryType::Continuous => MemberKind::File,
                tar::EntryType::Directory => MemberKind::Directory,
                tar::EntryType::Symlink => MemberKind::Symlink(link()),
                // A hard link names a member: shown normalized, as members are.
                tar::EntryType::Link => {
                    let raw = link();
                    MemberKind::HardLink(hard_link_target(&raw).unwrap_or(raw))
                }
                tar::EntryType::Char | tar::EntryType::Block => MemberKind::Device,
                tar::EntryType::Fifo => MemberKind::Fifo,
                other => MemberKind::Other(other.as_byte()),
            };
            let member = match sparse {
                Some(map) => {
                    let mut reader = SparseReader::open(&mut entry, map, &name)?;
                    let m = Member {
                        name,
                        kind: member_kind,
                        mode,
                        size: reader.size,
                    };
                    visit(&m, &mut reader)?;
                    while read_full(&mut reader, &mut skip).map_err(|e| describe(&e))? > 0 {}
                    continue;
                }
                None => Member {
                    name,
                    size: if member_kind.is_file() {
                        entry.size()
                    } else {
                        0
                    },
                    kind: member_kind,
                    mode,
                },
            };
            visit(&member, &mut entry)?;
            // Skipped bytes go through our large buffer: the tar crate's own skip copies
            // through 8 KiB, which makes inflate ~25% slower on skipped data.
            while read_full(&mut entry, &mut skip).map_err(|e| describe(&e))? > 0 {}
        }
    }
    // Read to the end of the compressed stream: this checks the gzip/xz/zstd trailer (CRC,
    // length), and anything after it is an error rather than silently ignored.
    io::copy(&mut limited, &mut io::sink()).map_err(|e| describe(&e))?;
    Ok(())
}

/// A PAX sparse member's map, as its extended header gives it (GNU tar's formats 0.0, 0.1
/// and 1.0; for 1.0 the map is at the start of the member's data).
struct PaxSparse {
    /// `GNU.sparse.name` (0.1, 1.0): the real name; the header's is `…/GNUSparseFile.N/…`.
    name: Option<Vec<u8>>,
    real_size: u64,
    /// `None` for 1.0: the map is read from the data.
    blocks: Option<Vec<(u64, u64)>>,
}

/// Reads the `GNU.sparse.*` records of a member's PAX header; `None` for a member that is
/// not sparse.
fn pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<PaxSparse>, String> {
    let Some(exts) = entry.pax_extensions().map_err(|e| describe(&e))? else {
        return Ok(None);
    };
    let mut any = false;
    let mut name = None;
    let (mut major, mut minor) = (None, None);
    let mut real_size = None;
    let mut numblocks = None;
    let mut pairs: Vec<u64> = Vec::new();
    let mut map = None;
    // Collected first: the records borrow the entry.
    let records: Vec<(String, Vec<u8>)> = exts
        .filter_map(|r| r.ok())
        .filter_map(|r| Some((r.key().ok()?.to_owned(), r.value_bytes().to_vec())))
        .filter(|(k, _)| k.starts_with("GNU.sparse."))
        .collect();
    if records.is_empty() {
        return Ok(None);
    }
    let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let bad = |what: &str| format!("member `{shown}` has a malformed sparse header ({what})");
    let num = |v: &[u8], key: &str| -> Result<u64, String> {
        std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("`{key}` is not a number")))
    };
    for (key, value) in &records {
        any = true;
        match key.as_str() {
            "GNU.sparse.name" => name = Some(value.clone()),
            "GNU.sparse.major" => major = Some(num(value, key)?),
            "GNU.sparse.minor" => minor = Some(num(value, key)?),
            "GNU.sparse.size" | "GNU.sparse.realsize" => real_size = Some(num(value, key)?),
            "GNU.sparse.numblocks" => numblocks = Some(num(value, key)?),
            "GNU.sparse.offset" | "GNU.sparse.numbytes" => {
                // 0.0: the pairs repeat in order, offset then size.
                let is_offset = key.ends_with("offset");
                if is_offset != pairs.len().is_multiple_of(2) {
                    return Err(bad("offsets and sizes out of turn"));
                }
                if pairs.len() / 2 >= MAX_MEMBERS {
                    return Err(bad("too many blocks"));
                }
                pairs.push(num(value, key)?);
            }
            "GNU.sparse.map" => map = Some(value.clone()),
            _ => {}
        }
    }
    if !any {
        return Ok(None);
    }
    let real_size = real_size.ok_or_else(|| bad("no real size"))?;
    let blocks = match (major, minor) {
        (Some(1), Some(0)) => None,
        (None, None) | (Some(0), _) => {
            let numbers = match &map {
                Some(m) => {
                    let text = std::str::from_utf8(m).map_err(|_| bad("the map is not text"))?;
                    if text.is_empty() {
                        Vec::new()
                    } else {
                        text.split(',')
                            .map(|v| num(v.as_bytes(), "GNU.sparse.map"))
                            .collect::<Result<Vec<u64>, String>>()?
                    }
                }
                None => pairs,
            };
            if numbers.len() % 2 == 1 {
                return Err(bad("an offset without a size"));
            }
            let blocks: Vec<(u64, u64)> = numbers.chunks(2).map(|c| (c[0], c[1])).collect();
            if let Some(n) = numblocks
                && n != blocks.len() as u64
            {
                return Err(bad(&format!(
                    "{n} blocks announced, {} listed",
                    blocks.len()
                )));
            }
            Some(blocks)
        }
        (Some(ma), Some(mi)) => {
            return Err(format!(
                "member `{shown}` is sparse in format {ma}.{mi}, which kbuild does not read (0.0, 0.1 and 1.0 are read)"
            ));
        }
        _ => return Err(bad("a major version without a minor one")),
    };
    Ok(Some(PaxSparse {
        name,
        real_size,
        blocks,
    }))
}

/// Expands a PAX sparse member: holes read as zeros, blocks from the member's data.
struct SparseReader<'r> {
    inner: &'r mut dyn Read,
    blocks: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<'r> SparseReader<'r> {
    /// Checks the map against the real size and the data the member holds (for 1.0, after
    /// reading the map from the data's start).
    fn open<R: Read>(
        entry: &'r mut tar::Entry<'_, R>,
        sparse: PaxSparse,
        name: &str,
    ) -> Result<SparseReader<'r>, String> {
        let mut data_len = entry.size();
        let blocks = match sparse.blocks {
            Some(b) => b,
            None => {
                let (blocks, used) = read_sparse_map(entry, data_len, name)?;
                data_len -= used;
                blocks
            }
        };
        let mut end = 0u64;
        let mut listed = 0u64;
        for &(off, len) in &blocks {
            if off < end {
                return Err(format!(
                    "member `{name}` has a sparse map whose blocks overlap or run backwards (at offset {off})"
                ));
            }
            end = off
                .checked_add(len)
                .filter(|e| *e <= sparse.real_size)
                .ok_or_else(|| {
                    format!(
                        "member `{name}` has a sparse map reaching past its size of {} bytes",
                        sparse.real_size
                    )
                })?;
            listed += len;
        }
        if listed != data_len {
            return Err(format!(
                "member `{name}` has a sparse map listing {listed} bytes of data, but it holds {data_len}"
            ));
        }
        Ok(SparseReader {
            inner: entry,
            blocks,
            next: 0,
            pos: 0,
            size: sparse.real_size,
        })
    }
}

/// Reads a sparse 1.0 map from the start of the member's data: decimal numbers, one per
/// line (the count, then offset and size per block), padded to 512 bytes. Returns the
/// blocks and the bytes the map took.
fn read_sparse_map(
    data: &mut dyn Read,
    data_len: u64,
    name: &str,
) -> Result<(Vec<(u64, u64)>, u64), String> {
    let bad = |what: &str| format!("member `{name}` has a malformed sparse map ({what})");
    let mut used = 0u64;
    let mut number = |used: &mut u64| -> Result<u64, String> {
        let mut digits = Vec::new();
        loop {
            if *used >= data_len {
                return Err(bad("it runs past the member's data"));
            }
            let mut b = [0u8; 1];
            data.read_exact(&mut b).map_err(|e| describe(&e))?;
            *used += 1;
            match b[0] {
                b'\n' if !digits.is_empty() => break,
                d @ b'0'..=b'9' if digits.len() < 20 => digits.push(d),
                _ => return Err(bad("not a decimal number per line")),
            }
        }
        std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a number too large"))
    };
    let count = number(&mut used)?;
    let mut blocks = Vec::new();
    for _ in 0..count {
        // Each block takes at least four bytes of the map, so `count` cannot make this loop
        // outlast the data.
        let off = number(&mut used)?;
        let len = number(&mut used)?;
        blocks.push((off, len));
    }
    let pad = (512 - used % 512) % 512;
    if used + pad > data_len {
        return Err(bad("it runs past the member's data"));
    }
    let skipped =
        io::copy(&mut (&mut *data).take(pad), &mut io::sink()).map_err(|e| describe(&e))?;
    if skipped < pad {
        return Err("the archive is truncated (unexpected end of data)".into());
    }
    Ok((blocks, used + pad))
}

impl Read for SparseReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size || out.is_empty() {
                return Ok(0);
            }
            let (off, len) = match self.blocks.get(self.next) {
                Some(&b) => b,
                None => (self.size, 0),
            };
            if self.pos < off {
                let n = (off - self.pos).min(out.len() as u64) as usize;
                out[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos < off + len {
                let want = (off + len - self.pos).min(out.len() as u64) as usize;
                let n = self.inner.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.next += 1;
        }
    }
}

/// Normalizes a member name; `Ok(None)` for a member that can never be selected: the
/// archive root (`./`) and names that are not UTF-8 (a recipe names members in UTF-8, and a
/// lossy conversion must not let `kube\xffctl` match `kube\u{FFFD}ctl`). Refuses absolute
/// names and `..` anywhere in the archive: such an archive is hostile or broken.
fn safe_name(raw: &[u8]) -> Result<Option<String>, String> {
    let shown = String::from_utf8_lossy(raw);
    if raw.first() == Some(&b'/') {
        return Err(format!("member `{shown}` has an absolute name"));
    }
    let mut parts = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(format!("member `{shown}` contains `..`")),
            _ => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let Ok(parts) = parts
        .iter()
        .map(|p| std::str::from_utf8(p))
        .collect::<Result<Vec<&str>, _>>()
    else {
        return Ok(None);
    };
    Ok(Some(parts.join("/")))
}

fn describe(e: &io::Error) -> String {
    // The tar crate reports a short read while skipping as a plain error mentioning EOF.
    let eof = e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().contains("unexpected EOF");
    if eof {
        "the archive is truncated (unexpected end of data)".into()
    } else {
        format!("the archive is corrupt: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(
            safe_name(b"./kubernetes/server/bin/kubectl")
                .unwrap()
                .unwrap(),
            "kubernetes/server/bin/kubectl"
        );
        assert_eq!(safe_name(b"./").unwrap(), None);
        assert!(safe_name(b"/etc/passwd").is_err());
        assert!(safe_name(b"a/../../x").is_err());
        assert_eq!(safe_name(b"a//b/").unwrap().unwrap(), "a/b");
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert_eq!(
            symlink_target("usr/bin/y", "x").as_deref(),
            Some("usr/bin/x")
        );
        assert_eq!(
            symlink_target("usr/bin/y", "../lib/./x").as_deref(),
            Some("usr/lib/x")
        );
        assert_eq!(symlink_target("usr/bin/y", "../../x").as_deref(), Some("x"));
        assert_eq!(symlink_target("usr/bin/y", "../../../x"), None);
        assert_eq!(symlink_target("usr/bin/y", "/usr/bin/x"), None);
        assert_eq!(symlink_target("y", ".."), None);
    }

    #[test]
    fn suggestions_prefer_the_same_trailing_path() {
        let m = |name: &str, kind: MemberKind| Member {
            name: name.into(),
            kind,
            mode: Some(0o644),
            size: 0,
        };
        let members = [
            m("package", MemberKind::Directory),
            m("package/README.md", MemberKind::File),
            m("package/bin/esbuild", MemberKind::File),
            m("package/package.json", MemberKind::File),
        ];
        assert_eq!(
            suggest("bin/esbuild", &members),
            [
                "package/bin/esbuild",
                "package/README.md",
                "package/package.json"
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn ar_headers() {
        let h = |s: &str| -> [u8; 60] { s.as_bytes().try_into().unwrap() };
        assert_eq!(
            parse_ar_header(&h(
                "data.tar.xz/    0           0     0     100644  1234      `\n"
            )),
            Ok(ArHeader {
                name: "data.tar.xz".into(),
                size: 1234
            })
        );
        assert!(
            parse_ar_header(&h(
                "data.tar.xz     0           0     0     100644  -1        `\n"
            ))
            .is_err()
        );
        assert!(
            parse_ar_header(&h(
                "a/b             0           0     0     100644  1         `\n"
            ))
            .is_err()
        );
        assert!(
            parse_ar_header(&h(
                "data.tar.xz     0           0     0     100644  1         xx"
            ))
            .is_err()
        );
    }
}
