//! Any bytes written as a recipe: loading must return Ok or a located error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("fuzz.toml"), text).expect("write recipe");
    std::fs::create_dir(dir.path().join("templates")).expect("mkdir");
    std::fs::write(dir.path().join("templates/t.j2"), "{{ IP }}\n").expect("write template");
    if let Ok(set) = kbuild::recipe::load(dir.path(), &["fuzz".to_owned()]) {
        // Whatever loads must also resolve its variables without panicking.
        let _ = kbuild::recipe::resolve_variables(&set, &[]);
    }
});
