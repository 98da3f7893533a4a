//! Any text read as a systemd environment file: never a panic; one flag per byte; every kept
//! name valid; a file without faults means the environment kbuild's quoting writes back.
//! (tests/fuzz_regressions.rs replays fuzz/regressions/envfile through the same checks.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let r = kbuild::envfile::read(text);
    assert_eq!(r.literal.len(), text.len());
    for a in &r.assignments {
        assert!(kbuild::envfile::is_valid_name(&a.key), "{a:?}");
    }
    if r.faults.is_empty() {
        let again: String = r
            .assignments
            .iter()
            .map(|a| format!("{}={}\n", a.key, kbuild::envfile::quote(&a.value)))
            .collect();
        let r2 = kbuild::envfile::read(&again);
        assert!(r2.faults.is_empty(), "{again:?}");
        assert_eq!(r2.environment(), r.environment());
    }
});
