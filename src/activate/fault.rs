//! Fault injection for crash-safety tests: with `KBUILD_FAULT_AT=N` in the environment the
//! process aborts (no destructors, like `kill -9`) at the N-th step of a switch. The tests
//! run a switch with N = 1, 2, … until one completes, checking the root after every crash
//! and after the recovery that follows. Without the variable this costs one env lookup.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static STEP: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| std::env::var("KBUILD_FAULT_AT").ok()?.parse().ok())
}

/// Marks a step boundary named `what`.
pub fn point(what: &str) {
    let Some(target) = target() else { return };
    let n = STEP.fetch_add(1, Ordering::SeqCst) + 1;
    if n == target {
        eprintln!("kbuild: fault injected at step {n} ({what})");
        std::process::abort();
    }
}
