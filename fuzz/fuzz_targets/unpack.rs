//! Any bytes as an archive input: extraction must return Ok or an error, never panic, and
//! never create anything outside its scratch directory.
#![no_main]

use kbuild::observe::Quiet;
use kbuild::unpack::{ModeRule, Request, Wanted, unpack_reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("temp dir");
    let scratch = outer.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let wanted = [
        Wanted { member: "kubernetes/server/bin/kubectl".into(), mode: ModeRule::Fixed(true) },
        Wanted { member: "a".into(), mode: ModeRule::FromArchive },
    ];
    let req = Request {
        input: "fuzz",
        urls: &[],
        expected: None,
            algo: kbuild::pin::Algo::Sha256,
        wanted: &wanted,
        offline: true,
        max_unpacked: 64 << 20,
        expected_size: None,
        keep: false,
    };
    let result = unpack_reader(&req, "fuzz://input", Box::new(std::io::Cursor::new(data.to_vec())), &scratch, &Quiet);
    // Nothing may appear beside the scratch directory, and inside it only plain files.
    let beside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("scratch")]);
    for e in std::fs::read_dir(&scratch).unwrap() {
        let ft = e.unwrap().file_type().unwrap();
        assert!(ft.is_file(), "only regular files are extracted");
    }
    if let Ok(u) = result {
        for f in &u.files {
            assert!(f.path.starts_with(&scratch));
        }
    }
});
