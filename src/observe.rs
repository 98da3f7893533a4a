//! How library operations report progress without printing: the CLI passes an [`Observer`].

/// Receives status and progress from long operations. Every method defaults to doing nothing.
pub trait Observer: Sync {
    /// A status line ("Fetching …", "Blocking waiting for file lock …").
    fn status(&self, _verb: &str, _message: &str) {}
    /// A download of `total` bytes (if known) starts.
    fn transfer_start(&self, _label: &str, _total: Option<u64>) {}
    /// `bytes` more bytes were read.
    fn transfer_progress(&self, _bytes: u64) {}
    /// The current download ended (successfully or not).
    fn transfer_end(&self) {}
}

/// An observer that ignores everything (tests, library callers that want silence).
pub struct Quiet;

impl Observer for Quiet {}
