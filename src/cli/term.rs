//! Terminal output: cargo-style status lines and a progress bar on stderr (only on a tty).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kbuild::observe::Observer;

pub struct Terminal {
    tty: bool,
    transfer: Mutex<Option<Transfer>>,
}

struct Transfer {
    label: String,
    bar: Option<ProgressBar>,
    bytes: u64,
    started: Instant,
}

impl Terminal {
    pub fn new() -> Terminal {
        Terminal {
            tty: std::io::stderr().is_terminal(),
            transfer: Mutex::new(None),
        }
    }

    /// Prints `verb message` right-aligned like cargo, in bold green on a terminal.
    pub fn status(&self, verb: &str, message: &str) {
        let line = if self.tty {
            format!("\x1b[1;32m{verb:>12}\x1b[0m {message}")
        } else {
            format!("{verb:>12} {message}")
        };
        let guard = self.transfer.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref().and_then(|t| t.bar.as_ref()) {
            Some(bar) => bar.suspend(|| errln!("{line}")),
            None => errln!("{line}"),
        }
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal::new()
    }
}

impl Observer for Terminal {
    fn status(&self, verb: &str, message: &str) {
        Terminal::status(self, verb, message);
    }

    fn transfer_start(&self, label: &str, total: Option<u64>) {
        let bar = self.tty.then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12.cyan.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix("Reading");
            bar
        });
        *self.transfer.lock().unwrap_or_else(|e| e.into_inner()) = Some(Transfer {
            label: label.to_owned(),
            bar,
            bytes: 0,
            started: Instant::now(),
        });
    }

    fn transfer_progress(&self, bytes: u64) {
        if let Some(t) = self
            .transfer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            t.bytes += bytes;
            if let Some(bar) = &t.bar {
                bar.inc(bytes);
            }
        }
    }

    fn transfer_end(&self) {
        let t = self
            .transfer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = t {
            if let Some(bar) = &t.bar {
                bar.finish_and_clear();
            }
            if t.bytes > 0 {
                let secs = t.started.elapsed().as_secs_f64().max(1e-6);
                let mib = t.bytes as f64 / (1 << 20) as f64;
                self.status(
                    "Read",
                    &format!(
                        "{}: {mib:.1} MiB in {secs:.2}s ({:.0} MiB/s)",
                        t.label,
                        mib / secs
                    ),
                );
            }
        }
    }
}
