//! Fetch, verify and unpack an archive input in one pass over its bytes.
//!
//! ```text
//!  source ──► [reader thread: sha256|sha512, tee] ──chunks──► [decoder: gzip|zstd|xz|tar]
//!                       │                                       │ tar entries (progress)
//!                       ▼              kept members' bytes ◄─────┘
//!           the archive itself                 ▼
//!           (kept, see `Request::keep`)  [writer thread: BLAKE3 + write + fsync]
//! ```
//!
//! The three stages overlap on two cores; buffers are recycled through bounded channels so
//! memory stays constant whatever the archive size. Nothing leaves the scratch directory
//! unless the whole stream's sha256 matches the pin: the caller renames outputs into the
//! store only after [`fetch_and_unpack`] returns. Member names are checked as Python's
//! tarfile "data" filter does (PEP 706): absolute names and `..` are refused, a selected
//! member must be a regular file, modes collapse to 0444/0555 (the recipe's `mode`, or the
//! archive's x bits without one), owners and times are dropped.

use std::collections::BTreeMap;
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
    #[error("input `{input}` from `{url}` lacks {}", list(missing))]
    MissingMembers {
        input: String,
        url: String,
        missing: Vec<String>,
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
            UnpackError::MissingMembers { .. } => Some(
                "check the `member` paths in the recipe (list the archive with `tar tzf`)".into(),
            ),
            UnpackError::Fetch {
                source: FetchError::Offline { .. },
                input,
            } => Some(format!(
                "build once with network access, or point the input at a local copy: `--override-input {input}=file:///path/to/file`"
            )),
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
    /// builds need no network, and reading it costs no second pass.
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
            let what = if fetch::is_network(url) {
                "Fetching"
            } else {
                "Reading"
            };
            observer.status(what, &format!("{} from {url}", req.input));
            let result = unpack_once(req, url, &dir, observer);
            observer.transfer_end(req.input);
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

fn unpack_once(
    req: &Request<'_>,
    url: &str,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, Attempt> {
    let input = req.input;
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
    run(req, url, opened.reader, scratch, observer)
}

/// Unpacks an archive from any reader, in one attempt (no mirrors, no retries): the entry
/// point for the fuzzer and for callers that already hold the bytes. `label` stands for the
/// URL in messages.
pub fn unpack_reader(
    req: &Request<'_>,
    label: &str,
    reader: Box<dyn Read + Send>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, UnpackError> {
    run(req, label, reader, scratch, observer).map_err(|a| match a {
        Attempt::Transient(e) | Attempt::Final(e) => e,
    })
}

/// The pipeline itself, over an opened source.
fn run(
    req: &Request<'_>,
    url: &str,
    source: Box<dyn Read + Send>,
    scratch: &Path,
    observer: &dyn Observer,
) -> Result<Unpacked, Attempt> {
    let input = req.input;
    let archive_err = |message: String| UnpackError::Archive {
        input: input.to_owned(),
        url: url.to_owned(),
        message,
    };

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
            bytes: req.expected_size.unwrap_or(req.max_unpacked),
            pinned: req.expected_size.is_some(),
        };
        let algo = req.expected.map_or(req.algo, Pin::algo);
        let keep = req.keep.then(|| scratch.join("archive"));
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
        let decoded = decode_stage(&mut chan, req, &w_tx, &wfree_rx, scratch);
        drop(w_tx);
        // After an archive error, read the rest (bounded by the pinned size) so the sha256
        // covers the whole file: a corrupt archive that is also the wrong file is reported as
        // a hash mismatch. Without a pinned size there is nothing to compare, and an endless
        // source must not be read forever: stop right away.
        let drained = if decoded.is_ok() || req.expected_size.is_some() {
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
        if let Some(expected) = req.expected
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
        let found = decoded.map_err(|m| Attempt::Final(archive_err(m)))?;
        let mut by_member: BTreeMap<String, Extracted> = BTreeMap::new();
        for f in files {
            // Duplicate members: the later one wins, as when tar extracts over itself.
            by_member.insert(f.wanted.member.clone(), f);
        }
        let missing: Vec<String> = req
            .wanted
            .iter()
            .filter(|w| !found.contains_key(&w.member))
            .map(|w| w.member.clone())
            .collect();
        if !missing.is_empty() {
            return Err(Attempt::Final(UnpackError::MissingMembers {
                input: input.to_owned(),
                url: url.to_owned(),
                missing,
            }));
        }
        Ok(Unpacked {
            url: url.to_owned(),
            pin,
            size,
            files: by_member.into_values().collect(),
            kept: keep,
        })
    })
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
    Begin {
        wanted: Wanted,
        executable: bool,
        path: PathBuf,
    },
    Data(Vec<u8>),
    End,
    /// A buffer the decoder borrowed and hands back to the pool.
    Recycle(Vec<u8>),
}

/// Bytes written between two writeback kicks (see `write_stage`).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Writes kept members, hashing them with BLAKE3 on the way, and syncs each one.
///
/// Durability costs about as much as decoding here (the binaries are hundreds of MB), so
/// writeback is started every few MB with `fadvise(DONTNEED)`, which queues dirty pages
/// without waiting; the final `fdatasync` then only waits for the tail. The disk works in
/// parallel with the decoder instead of after it.
fn write_stage(rx: Receiver<WriterMsg>, free: SyncSender<Vec<u8>>) -> io::Result<Vec<Extracted>> {
    struct Open {
        file: fs_err::File,
        hasher: blake3::Hasher,
        kicked: u64,
        ex: Extracted,
    }
    let mut done = Vec::new();
    let mut current: Option<Open> = None;
    for msg in rx {
        match msg {
            WriterMsg::Begin {
                wanted,
                executable,
                path,
            } => {
                let mode = if executable { 0o555 } else { 0o444 };
                use fs_err::os::unix::fs::OpenOptionsExt;
                let file = fs_err::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode | 0o200)
                    .open(&path)?;
                current = Some(Open {
                    file,
                    hasher: blake3::Hasher::new(),
                    kicked: 0,
                    ex: Extracted {
                        wanted,
                        executable,
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
            WriterMsg::Recycle(buf) => {
                let _ = free.try_send(buf);
            }
            WriterMsg::End => {
                let mut o = current.take().expect("Begin comes before End");
                o.file.sync_data()?;
                o.ex.blake3 = Digest(*o.hasher.finalize().as_bytes());
                done.push(o.ex);
            }
        }
    }
    Ok(done)
}

/// Decompresses and walks the tar stream, sending kept members to the writer. Returns the
/// kept member names found, or a message describing what is wrong with the archive.
fn decode_stage(
    chan: &mut ChannelReader<'_>,
    req: &Request<'_>,
    to_writer: &SyncSender<WriterMsg>,
    free: &Receiver<Vec<u8>>,
    scratch: &Path,
) -> Result<BTreeMap<String, ()>, String> {
    let magic = chan.fill_buf().map_err(|e| e.to_string())?.to_vec();
    let decoder: Box<dyn Read + '_> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(&mut *chan))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(&mut *chan).map_err(|e| e.to_string())?)
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(&mut *chan))
    } else if magic.len() >= 262 && &magic[257..262] == b"ustar" {
        Box::new(&mut *chan)
    } else {
        return Err("is not a tar archive (gzip, zstd, xz or plain)".into());
    };
    let mut limited = Limited {
        inner: decoder,
        left: req.max_unpacked,
        limit: req.max_unpacked,
    };
    let wanted: BTreeMap<&str, &Wanted> =
        req.wanted.iter().map(|w| (w.member.as_str(), w)).collect();
    let mut found = BTreeMap::new();
    let mut serial = 0usize;
    {
        let mut archive = tar::Archive::new(&mut limited);
        let entries = archive.entries().map_err(|e| describe(&e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| describe(&e))?;
            let raw = entry.path_bytes().into_owned();
            let name = safe_name(&raw)?;
            let Some(name) = name else { continue };
            let Some(w) = wanted.get(name.as_str()) else {
                // Read skipped members through our large buffer: the tar crate's own skip
                // copies through 8 KiB, which makes inflate ~25% slower on skipped data.
                let mut buf = free.recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.resize(CHUNK, 0);
                while read_full(&mut entry, &mut buf).map_err(|e| describe(&e))? > 0 {}
                let _ = to_writer.send(WriterMsg::Recycle(buf));
                continue;
            };
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(format!(
                    "member `{name}` is {}, not a regular file",
                    describe_kind(kind)
                ));
            }
            // Only the x bits count: setuid/setgid/sticky and write bits never reach the store.
            let executable = match w.mode {
                ModeRule::Fixed(x) => x,
                ModeRule::FromArchive => {
                    let mode = entry.header().mode().map_err(|e| {
                        format!("member `{name}` has an unreadable mode: {}", describe(&e))
                    })?;
                    mode & 0o111 != 0
                }
            };
            serial += 1;
            let path = scratch.join(format!("member-{serial}"));
            if to_writer
                .send(WriterMsg::Begin {
                    wanted: (*w).clone(),
                    executable,
                    path,
                })
                .is_err()
            {
                return Err("the writer stopped".into());
            }
            loop {
                let mut buf = free.recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.resize(CHUNK, 0);
                let n = read_full(&mut entry, &mut buf).map_err(|e| describe(&e))?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                if to_writer.send(WriterMsg::Data(buf)).is_err() {
                    return Err("the writer stopped (see the I/O error)".into());
                }
            }
            if to_writer.send(WriterMsg::End).is_err() {
                return Err("the writer stopped (see the I/O error)".into());
            }
            found.insert(name, ());
        }
    }
    // Read to the end of the compressed stream: this checks the gzip/xz/zstd trailer (CRC,
    // length), and anything after it is an error rather than silently ignored.
    io::copy(&mut limited, &mut io::sink()).map_err(|e| describe(&e))?;
    Ok(found)
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

fn describe_kind(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Directory => "a directory",
        tar::EntryType::Symlink => "a symbolic link",
        tar::EntryType::Link => "a hard link",
        tar::EntryType::Char | tar::EntryType::Block => "a device node",
        tar::EntryType::Fifo => "a FIFO",
        _ => "a special entry",
    }
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
}
