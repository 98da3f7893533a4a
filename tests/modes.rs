//! Issue 9, point 2: modes that run. Without `mode` a member keeps its archive's executable
//! bit (any x bit → 0555, none → 0444); with `mode` the recipe wins; setuid, setgid, sticky
//! and write bits never reach the store.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use common::world::{World, is_kept_archive, store_objects};
use common::{Compression, Entry, Tarball, object_name, sha256_hex};
use kbuild::store::Node;

const SCRIPT: &[u8] = b"#!/bin/sh\necho ok\n";
const DATA: &[u8] = b"plain data\n";
const SPECIAL: &[u8] = b"#!/bin/sh\necho special\n";

/// A tarball with a 0755 script, a 0644 file and a 06777 (setuid, setgid, world-writable)
/// script, plus a 01666 (sticky, writable, no x) file.
fn archive() -> Vec<u8> {
    let file = |path: &str, mode: u32, bytes: &[u8]| Entry::File {
        path: path.into(),
        mode,
        bytes: bytes.to_vec(),
    };
    Tarball {
        entries: vec![
            Entry::Dir("tools/".into()),
            file("tools/run.sh", 0o755, SCRIPT),
            file("tools/data.txt", 0o644, DATA),
            file("tools/special.sh", 0o6777, SPECIAL),
            file("tools/sticky.txt", 0o1666, DATA),
        ],
    }
    .build(Compression::Gzip)
}

/// A world whose recipe `tools` selects members of [`archive`], each with `mode` or none.
fn world(files: &[(&str, &str, Option<&str>)]) -> World {
    let w = World::bare();
    let bytes = archive();
    let path = w.sb.dir.join("tools.tar.gz");
    std::fs::write(&path, &bytes).unwrap();
    let mut text = format!(
        "[inputs.tools]\nurl = \"file://{}\"\nsha256 = \"{}\"\n",
        path.display(),
        sha256_hex(&bytes)
    );
    for (target, member, mode) in files {
        text.push_str(&format!(
            "\n[files.\"{target}\"]\ninput = \"tools\"\nmember = \"{member}\"\n"
        ));
        if let Some(m) = mode {
            text.push_str(&format!("mode = \"{m}\"\n"));
        }
    }
    w.sb.write_recipe("tools", &text);
    w
}

/// The store's member objects (not the rootfs, nor the kept archive) with their modes.
fn members(w: &World, g_object: &str) -> BTreeSet<(String, u32)> {
    store_objects(&w.sb.store)
        .into_iter()
        .filter(|n| n != g_object && !is_kept_archive(&w.sb.store, n))
        .map(|n| {
            let mode = std::fs::metadata(w.sb.store.join(&n))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            (n, mode)
        })
        .collect()
}

fn object(bytes: &[u8], executable: bool, name: &str) -> (String, u32) {
    (
        object_name(&Node::file(bytes, executable), name),
        if executable { 0o555 } else { 0o444 },
    )
}

#[test]
fn without_mode_the_archive_x_bit_is_kept_and_the_binary_runs_from_the_root() {
    let w = world(&[
        ("/usr/local/bin/run", "tools/run.sh", None),
        ("/etc/tools/data.txt", "tools/data.txt", None),
    ]);
    let g = w.build(&["tools"], &[], 1);
    let expected: BTreeSet<_> = [
        object(SCRIPT, true, "run.sh"),
        object(DATA, false, "data.txt"),
    ]
    .into();
    assert_eq!(members(&w, &g.object()), expected);
    // Inside the rootfs the same objects (hard links), with the same modes.
    let mode = |rel: &str| {
        std::fs::metadata(g.rootfs.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/bin/run"), 0o555);
    assert_eq!(mode("etc/tools/data.txt"), 0o444);

    w.ok(&["switch"]);
    let out = std::process::Command::new(w.root.join("usr/local/bin/run"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ok\n");
    let err = std::process::Command::new(w.root.join("etc/tools/data.txt"))
        .output()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);

    // A rebuild finds the members through the index: the same store, no new objects.
    let before = store_objects(&w.sb.store);
    let again = w.ok(&["build", "tools"]);
    assert_eq!(again.rootfs(), g.rootfs);
    assert_eq!(store_objects(&w.sb.store), before);
}

#[test]
fn an_explicit_mode_wins_over_the_archive() {
    let w = world(&[
        ("/usr/local/bin/run", "tools/run.sh", Some("0444")),
        ("/etc/tools/data.txt", "tools/data.txt", Some("0555")),
    ]);
    let g = w.build(&["tools"], &[], 1);
    let expected: BTreeSet<_> = [
        object(SCRIPT, false, "run.sh"),
        object(DATA, true, "data.txt"),
    ]
    .into();
    assert_eq!(members(&w, &g.object()), expected);
}

#[test]
fn an_explicit_mode_after_a_default_one_is_not_answered_from_the_index() {
    // The same member first without mode (archive: 0755 → 0555), then with `mode = "0444"`:
    // the second build must not reuse the first's index entry.
    let w = world(&[("/usr/local/bin/run", "tools/run.sh", None)]);
    let g1 = w.build(&["tools"], &[], 1);
    let text = std::fs::read_to_string(w.sb.recipes.join("tools.toml")).unwrap();
    w.sb.write_recipe(
        "tools",
        &text.replace(
            "member = \"tools/run.sh\"\n",
            "member = \"tools/run.sh\"\nmode = \"0444\"\n",
        ),
    );
    let g2 = w.build(&["tools"], &[], 2);
    let expected: BTreeSet<_> = [
        object(SCRIPT, true, "run.sh"),
        object(SCRIPT, false, "run.sh"),
    ]
    .into();
    let objects: BTreeSet<_> = members(&w, &g1.object())
        .into_iter()
        .filter(|(n, _)| *n != g2.object())
        .collect();
    assert_eq!(objects, expected);
    let m = std::fs::metadata(g2.rootfs.join("usr/local/bin/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(m & 0o7777, 0o444);
}

#[test]
fn setuid_setgid_sticky_and_write_bits_are_dropped() {
    let w = world(&[
        ("/usr/local/bin/special", "tools/special.sh", None),
        ("/etc/tools/sticky.txt", "tools/sticky.txt", None),
    ]);
    let g = w.build(&["tools"], &[], 1);
    let expected: BTreeSet<_> = [
        object(SPECIAL, true, "special.sh"),
        object(DATA, false, "sticky.txt"),
    ]
    .into();
    assert_eq!(members(&w, &g.object()), expected);
}
