//! Terminal output: cargo-style status lines and one progress bar per input being read, on
//! stderr (bars only on a tty).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kbuild::observe::Observer;

pub struct Terminal {
    tty: bool,
    /// Whether SGR colour codes may be written to stderr (see [`colour`]).
    colour: bool,
    /// Draws every bar; status lines are printed above them.
    bars: MultiProgress,
    /// The transfers in progress, by label (input name): several inputs are read at once.
    transfers: Mutex<BTreeMap<String, Transfer>>,
}

struct Transfer {
    bar: Option<ProgressBar>,
    bytes: u64,
    started: Instant,
}

impl Terminal {
    pub fn new(choice: ColorChoice) -> Terminal {
        let tty = std::io::stderr().is_terminal();
        Terminal {
            tty,
            colour: colour(choice, tty),
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            transfers: Mutex::new(BTreeMap::new()),
        }
    }

    /// Prints `verb message` right-aligned like cargo, in bold green on a terminal.
    pub fn status(&self, verb: &str, message: &str) {
        let line = if self.colour {
            format!("\x1b[1;32m{verb:>12}\x1b[0m {message}")
        } else {
            format!("{verb:>12} {message}")
        };
        self.line(&line);
    }

    /// Prints one line on stderr, above the progress bars when any are drawn (so a bar
    /// redraw does not overwrite it).
    fn line(&self, line: &str) {
        let busy = self
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|t| t.bar.is_some());
        if busy {
            self.bars.suspend(|| errln!("{line}"));
        } else {
            errln!("{line}");
        }
    }
}

impl Terminal {
    /// After Ctrl-C: removes the progress bars from the screen so the shell prompt starts on
    /// a clean line.
    pub fn clear(&self) {
        let _ = self.bars.clear();
    }
}

/// `--color`: when status lines and bars may be coloured.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set to a non-empty value
    #[default]
    Auto,
    /// Always colour, even into a pipe or with NO_COLOR set
    Always,
    /// Never colour
    Never,
}

/// Whether to colour a stream that is (`tty`) or is not a terminal: an explicit `--color`
/// wins; otherwise a terminal is coloured unless `NO_COLOR` is set to anything non-empty
/// (no-color.org).
pub fn colour(choice: ColorChoice, tty: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

impl Observer for Terminal {
    fn status(&self, verb: &str, message: &str) {
        Terminal::status(self, verb, message);
    }

    fn warning(&self, message: &str) {
        self.line(&format!("warning: {message}"));
    }

    fn transfer_start(&self, label: &str, total: Option<u64>) {
        let bar = self.tty.then(|| {
            let bar = self.bars.add(ProgressBar::new(total.unwrap_or(0)));
            if total.is_none() {
                bar.unset_length();
            }
            bar.set_style(
                ProgressStyle::with_template(if self.colour {
                    "{prefix:>12.cyan.bold} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} {msg}"
                } else {
                    "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} {msg}"
                })
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix("Reading");
            bar.set_message(label.to_owned());
            bar
        });
        let mut transfers = self.transfers.lock().unwrap_or_else(|e| e.into_inner());
        transfers.insert(
            label.to_owned(),
            Transfer {
                bar,
                bytes: 0,
                started: Instant::now(),
            },
        );
    }

    fn transfer_progress(&self, label: &str, bytes: u64) {
        if let Some(t) = self
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(label)
        {
            t.bytes += bytes;
            if let Some(bar) = &t.bar {
                bar.inc(bytes);
            }
        }
    }

    fn transfer_end(&self, label: &str) {
        let t = self
            .transfers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(label);
        if let Some(t) = t {
            if let Some(bar) = &t.bar {
                bar.finish_and_clear();
                self.bars.remove(bar);
            }
            if t.bytes > 0 {
                // Bytes the decoder consumed over the time until it had: the rate of the
                // whole pipeline, as the bar showed it.
                let secs = t.started.elapsed().as_secs_f64().max(1e-6);
                let mib = t.bytes as f64 / (1 << 20) as f64;
                self.status(
                    "Read",
                    &format!(
                        "{label}: {mib:.1} MiB in {secs:.2}s ({:.0} MiB/s)",
                        mib / secs
                    ),
                );
            }
        }
    }
}
