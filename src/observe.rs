//! How library operations report progress without printing: the CLI passes an [`Observer`].
//!
//! Several inputs may be read at once (one thread each), so transfers are told apart by
//! their label, the input's name, which is unique within a build.

/// Receives status and progress from long operations. Every method defaults to doing nothing.
pub trait Observer: Sync {
    /// A status line ("Fetching …", "Blocking waiting for file lock …").
    fn status(&self, _verb: &str, _message: &str) {}
    /// Something went wrong that the operation worked around (shown as `warning: …`).
    fn warning(&self, _message: &str) {}
    /// A download of `total` bytes (if known), called `label`, starts.
    fn transfer_start(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more bytes of transfer `label` were consumed: read, and decoded as far as
    /// they go (progress follows decompression, not the network alone).
    fn transfer_progress(&self, _label: &str, _bytes: u64) {}
    /// Transfer `label` ended (successfully or not).
    fn transfer_end(&self, _label: &str) {}
}

/// `bytes` in binary units, one decimal (`12.3 MiB`); plain bytes below 1 KiB (`512 B`),
/// so that a small amount never reads `0.0 MiB`. For the sizes status lines give.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// An observer that ignores everything (tests, library callers that want silence).
pub struct Quiet;

impl Observer for Quiet {}
