//! Replays `fuzz/regressions/<target>/<name>` through the same checks as the fuzz targets in
//! `fuzz/fuzz_targets/`, plus the exact outcome each input must have. A crash the fuzzers find
//! is saved there under a name saying what it is, and gets a row below. (So far the fuzzers
//! found no crash; the inputs here are hand-made edge cases of the same kinds.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kbuild::observe::Quiet;
use kbuild::unpack::{ModeRule, Request, Wanted, unpack_reader};

/// What an input must do: succeed, or fail with a message containing the text.
enum Expect {
    Ok,
    Err(&'static str),
}

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target)
}

fn check<T, E: std::fmt::Display>(name: &str, got: Result<T, E>, expect: &Expect) {
    match (got, expect) {
        (Ok(_), Expect::Ok) => {}
        (Err(e), Expect::Err(text)) => {
            assert!(e.to_string().contains(text), "{name}: `{e}` lacks `{text}`")
        }
        (Ok(_), Expect::Err(text)) => panic!("{name}: succeeded, expected an error with `{text}`"),
        (Err(e), Expect::Ok) => panic!("{name}: failed: {e}"),
    }
}

/// Every file in the directory has a row, and every row a file.
fn assert_covered(target: &str, rows: &[(&str, Expect)]) {
    let mut files: Vec<String> = std::fs::read_dir(dir(target))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut named: Vec<String> = rows.iter().map(|(n, _)| (*n).to_owned()).collect();
    named.sort();
    assert_eq!(
        files, named,
        "fuzz/regressions/{target} and its table differ"
    );
}

#[test]
fn recipe_regressions() {
    let rows = [
        ("deep-nesting.toml", Expect::Err("recursion")),
        ("ipv6-host-route.toml", Expect::Ok),
        ("nul-in-target.toml", Expect::Err("control character")),
    ];
    assert_covered("recipe", &rows);
    for (name, expect) in &rows {
        let text = std::fs::read_to_string(dir("recipe").join(name)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("fuzz.toml"), &text).unwrap();
        let got = kbuild::recipe::load(tmp.path(), &["fuzz".to_owned()]);
        if let Ok(set) = &got {
            let _ = kbuild::recipe::resolve_variables(set, &[]);
        }
        check(name, got, expect);
    }
}

#[test]
fn template_regressions() {
    let rows = [
        ("huge-range.j2", Expect::Err("range")),
        ("huge-repeat.j2", Expect::Err("")),
        (
            "unclosed-quote.j2",
            Expect::Err("does not close on its line"),
        ),
    ];
    assert_covered("template", &rows);
    let vars: BTreeMap<String, String> = [("IP".to_owned(), "10.72.84.160".to_owned())].into();
    for (name, expect) in &rows {
        let text = std::fs::read_to_string(dir("template").join(name)).unwrap();
        let got = kbuild::render::render_traced(name, &text, &vars).and_then(|out| {
            kbuild::render::check_format(
                name,
                "/etc/x",
                &out,
                &text,
                &vars,
                kbuild::recipe::FileFormat::Env,
            )
        });
        check(name, got, expect);
    }
}

/// The invariants the `envfile` fuzz target checks: one flag per byte, kept names valid, and
/// a file without faults means the environment that kbuild's quoting writes back.
fn envfile_invariants(name: &str, text: &str) -> kbuild::envfile::Reading {
    let r = kbuild::envfile::read(text);
    assert_eq!(r.literal.len(), text.len(), "{name}");
    for a in &r.assignments {
        assert!(kbuild::envfile::is_valid_name(&a.key), "{name}: {a:?}");
    }
    if r.faults.is_empty() {
        let again: String = r
            .assignments
            .iter()
            .map(|a| format!("{}={}\n", a.key, kbuild::envfile::quote(&a.value)))
            .collect();
        let r2 = kbuild::envfile::read(&again);
        assert_eq!(r2.faults, vec![], "{name}: {again:?}");
        assert_eq!(r2.environment(), r.environment(), "{name}");
    }
    r
}

#[test]
fn envfile_regressions() {
    // (file, faults expected: their text, or none).
    let rows = [
        (
            "comment-backslash.env",
            Expect::Err("a comment ends in a backslash"),
        ),
        ("continued-key.env", Expect::Err("is not KEY=VALUE")),
        ("crlf.env", Expect::Ok),
        ("escapes.env", Expect::Ok),
        ("nul.env", Expect::Err("a NUL byte")),
        ("open-quote-at-end.env", Expect::Err("never closes")),
    ];
    assert_covered("envfile", &rows);
    for (name, expect) in &rows {
        let bytes = std::fs::read(dir("envfile").join(name)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let r = envfile_invariants(name, &text);
        let got = match r.faults.first() {
            None => Ok(()),
            Some(f) => Err(f.to_string()),
        };
        check(name, got, expect);
    }
}

#[test]
fn lockfile_regressions() {
    let rows = [
        ("float-version.json", Expect::Err("has version 0")),
        ("max-size.json", Expect::Ok),
    ];
    assert_covered("lockfile", &rows);
    for (name, expect) in &rows {
        let text = std::fs::read_to_string(dir("lockfile").join(name)).unwrap();
        let got = kbuild::lockfile::LockFile::parse(Path::new(name), &text);
        if let Ok(lock) = &got {
            // What kbuild writes, kbuild reads back identically.
            let bytes = lock.to_bytes();
            let again = kbuild::lockfile::LockFile::parse(
                Path::new(name),
                std::str::from_utf8(&bytes).unwrap(),
            )
            .unwrap();
            assert_eq!(&again, lock, "{name}");
        }
        check(name, got, expect);
    }
}

#[test]
fn unpack_regressions() {
    let rows = [
        ("dotdot.tar", Expect::Err("contains `..`")),
        (
            "gzip-trailing-garbage.tar.gz",
            Expect::Err("the archive is corrupt"),
        ),
        (
            "hardlink-selected.tar",
            Expect::Err("is a hard link to `/etc/shadow`, outside the archive"),
        ),
        // The member is written as a plain file in the scratch directory, never through the
        // archive's symlink.
        ("symlink-then-member.tar", Expect::Ok),
        ("truncated.tar.gz", Expect::Err("truncated")),
    ];
    assert_covered("unpack", &rows);
    for (name, expect) in &rows {
        let bytes = std::fs::read(dir("unpack").join(name)).unwrap();
        let outer = tempfile::tempdir().unwrap();
        let scratch = outer.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let wanted = [Wanted {
            member: "kubernetes/server/bin/kubectl".into(),
            mode: ModeRule::Fixed(true),
        }];
        let req = Request {
            input: "fuzz",
            urls: &[],
            expected: None,
            algo: kbuild::pin::Algo::Sha256,
            wanted: if name.starts_with("symlink") || name.starts_with("hardlink") {
                &wanted
            } else {
                &[]
            },
            offline: true,
            max_unpacked: 64 << 20,
            expected_size: None,
            keep: false,
        };
        let got = unpack_reader(
            &req,
            "fuzz://input",
            Box::new(std::io::Cursor::new(bytes)),
            &scratch,
            &Quiet,
        );
        let beside: Vec<_> = std::fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("scratch")], "{name}");
        for e in walk(&scratch) {
            assert!(
                e.is_file() && !e.is_symlink(),
                "{name}: {} is not a plain file",
                e.display()
            );
        }
        if let Ok(u) = &got {
            assert_eq!(std::fs::read(&u.files[0].path).unwrap(), b"pwn", "{name}");
        }
        check(name, got, expect);
    }
}

/// The `deb` target's inputs (whole .deb files here): listed, and unpacked selecting
/// `kubernetes/server/bin/kubectl` (named `./kubernetes/...` inside).
#[test]
fn deb_regressions() {
    let rows = [
        ("bad-end-marker.deb", Expect::Err("lacks its end marker")),
        ("data-gzip.deb", Expect::Ok),
        ("no-data.deb", Expect::Err("without a `data.tar.*` member")),
        ("size-past-the-end.deb", Expect::Err("truncated")),
        ("truncated-header.deb", Expect::Err("truncated")),
    ];
    assert_covered("deb", &rows);
    for (name, expect) in &rows {
        let bytes = std::fs::read(dir("deb").join(name)).unwrap();
        let listed = kbuild::unpack::list_members(&bytes[..], 64 << 20);
        check(name, listed.clone(), expect);
        let outer = tempfile::tempdir().unwrap();
        let wanted = [Wanted {
            member: "kubernetes/server/bin/kubectl".into(),
            mode: ModeRule::FromArchive,
        }];
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
        let got = unpack_reader(
            &req,
            "fuzz://input",
            Box::new(std::io::Cursor::new(bytes.clone())),
            outer.path(),
            &Quiet,
        );
        if let Ok(u) = &got {
            assert_eq!(std::fs::read(&u.files[0].path).unwrap(), b"pwn", "{name}");
            assert!(u.files[0].executable, "{name}");
            assert_eq!(
                listed.unwrap().len(),
                1,
                "{name}: only the file is in the tar"
            );
        }
        check(name, got, expect);
    }
}

/// The `ar` reader never panics: every truncation and every single-byte change of a valid
/// .deb is listed or refused (a deterministic slice of what the `deb` fuzz target does).
#[test]
fn deb_truncations_and_byte_flips_never_panic() {
    let good = std::fs::read(dir("deb").join("data-gzip.deb")).unwrap();
    for len in 0..good.len() {
        let _ = kbuild::unpack::list_members(&good[..len], 1 << 20);
    }
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= flip;
            let _ = kbuild::unpack::list_members(&b[..], 1 << 20);
        }
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.symlink_metadata().unwrap().is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
