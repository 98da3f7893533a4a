//! Any bytes as a lock file: parse errors are fine; whatever parses must round-trip exactly.
#![no_main]

use std::path::Path;

use kbuild::lockfile::LockFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lock) = LockFile::parse(Path::new("fuzz.lock.json"), text) {
        let bytes = lock.to_bytes();
        let again = LockFile::parse(Path::new("fuzz.lock.json"), std::str::from_utf8(&bytes).unwrap())
            .expect("what kbuild writes, kbuild reads");
        assert_eq!(again, lock);
        assert_eq!(again.to_bytes(), bytes);
    }
});
