//! Fault injection for crash-safety tests: with `KBUILD_FAULT_AT=N` in the environment the
//! process aborts (no destructors, like `kill -9`) at the N-th step of a switch. The tests
//! run a switch with N = 1, 2, … until one completes, checking the root after every crash
//! and after the recovery that follows. With `KBUILD_FAULT_FAIL_AT=N` the N-th step fails
//! instead, with an I/O error (as on a full disk): the switch returns its error with its
//! journal left, as a real failure part-way leaves it. Without the variables this costs two
//! env lookups.
//!
//! With `KBUILD_FAULT_PAUSE=NAME`, the thread that reaches the point named `NAME` (a
//! [`point`], or a [`pause`] that is no step) says so on stderr and sleeps until the process
//! is killed or interrupted: for tests of what another process, or a Ctrl-C, does meanwhile.

use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static STEP: AtomicU64 = AtomicU64::new(0);

fn target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| std::env::var("KBUILD_FAULT_AT").ok()?.parse().ok())
}

/// Marks a step boundary named `what`.
pub fn point(what: &str) {
    pause(what);
    let Some(target) = target() else { return };
    let n = STEP.fetch_add(1, Ordering::SeqCst) + 1;
    if n == target {
        // Never a panic on a closed stderr: the abort must happen at this very step.
        let _ = writeln!(
            std::io::stderr(),
            "kbuild: fault injected at step {n} ({what})"
        );
        std::process::abort();
    }
}

/// Marks a step boundary of a switch named `what`: [`point`], and with
/// `KBUILD_FAULT_FAIL_AT=N`, the N-th such boundary fails (counted with [`point`]'s steps).
/// Errors: the injected failure, naming the step.
pub fn step(what: &str) -> std::io::Result<()> {
    static FAIL: OnceLock<Option<u64>> = OnceLock::new();
    point(what);
    let Some(fail) = *FAIL.get_or_init(|| std::env::var("KBUILD_FAULT_FAIL_AT").ok()?.parse().ok())
    else {
        return Ok(());
    };
    // `point` counts only under `KBUILD_FAULT_AT`; this one counts its own.
    static FAIL_STEP: AtomicU64 = AtomicU64::new(0);
    let n = FAIL_STEP.fetch_add(1, Ordering::SeqCst) + 1;
    if n == fail {
        return Err(std::io::Error::other(format!(
            "failure injected at step {n} ({what}) by KBUILD_FAULT_FAIL_AT"
        )));
    }
    Ok(())
}

/// With `KBUILD_FAULT_ENOSPC=1`, writes of extracted archive members fail as on a full disk
/// (for tests where no small filesystem can be mounted).
pub fn disk_full() -> Option<std::io::Error> {
    static ON: OnceLock<bool> = OnceLock::new();
    ON.get_or_init(|| std::env::var_os("KBUILD_FAULT_ENOSPC").is_some_and(|v| v == "1"))
        .then(|| std::io::Error::from_raw_os_error(28 /* ENOSPC */))
}

/// With `KBUILD_FAULT_NO_OPENAT2=1`, prerequisites are resolved without `openat2(2)`, as on a
/// kernel before 5.6 or under a seccomp filter that refuses it (so the tests run both ways).
pub fn no_openat2() -> bool {
    std::env::var_os("KBUILD_FAULT_NO_OPENAT2").is_some_and(|v| v == "1")
}

/// Marks a place named `what` where a test may pause the process (`KBUILD_FAULT_PAUSE`, see
/// the module docs) without counting it as a step of `KBUILD_FAULT_AT`.
pub fn pause(what: &str) {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    let name = NAME.get_or_init(|| std::env::var("KBUILD_FAULT_PAUSE").ok());
    if name.as_deref() != Some(what) {
        return;
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let _ = writeln!(std::io::stderr(), "kbuild: paused at `{what}`");
    });
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
