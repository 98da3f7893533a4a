//! gc is crash-safe (issue 7, point 5): killed from outside at every deletion — every
//! `unlink`, `rmdir` and `rename` it issues, in turn, by `strace -e inject=…:signal=KILL` —
//! gc never leaves a partial object under its content name; the next build reuses only whole
//! objects (re-creating what is missing, and saying so), the switch to its result resolves
//! fully, and the next gc removes what the killed one left. Builds also refuse to reuse a
//! partial object left by an older kbuild: it is moved aside and rebuilt.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::world::*;
use common::*;

/// Whether strace can run here; without it the crash tests cannot kill gc at a deletion. CI
/// installs it (`.ci/run`), so there its absence is a failure.
fn strace_available() -> bool {
    let ok = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "strace is missing or cannot trace in CI (`.ci/run` installs it)"
        );
        eprintln!("SKIPPED: strace is not installed or ptrace is not permitted here");
    }
    ok
}

/// Every entry of a store object with what a partial deletion would change: kind, mode,
/// size, mtime (never inode numbers).
fn object_tree(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in common::walk_any(path).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(path).unwrap().display().to_string();
        let kind = if m.is_dir() {
            "dir"
        } else if m.is_file() {
            "file"
        } else {
            "link"
        };
        out.push(format!(
            "{rel} {kind} {:o} {} {}",
            m.mode() & 0o7777,
            if m.is_dir() { 0 } else { m.len() },
            m.mtime()
        ));
    }
    out
}

/// No `.tmp-*` entry in the store directory or its bookkeeping.
#[track_caller]
fn assert_no_tmp(store: &Path) {
    let mut found = Vec::new();
    for d in [
        "",
        ".kbuild",
        ".kbuild/meta",
        ".kbuild/index",
        ".kbuild/profiles/default",
    ] {
        for e in std::fs::read_dir(store.join(d)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if n.starts_with(".tmp-") {
                found.push(format!("{d}/{n}"));
            }
        }
    }
    assert!(found.is_empty(), "temporary entries left: {found:?}");
}

fn object_trees(store: &Path) -> BTreeMap<String, Vec<String>> {
    store_objects(store)
        .into_iter()
        .map(|o| (o.clone(), object_tree(&store.join(&o))))
        .collect()
}

/// The objects a generation needs: its rootfs and what the rootfs's metadata references.
fn closure(store: &Path, rootfs: &str) -> BTreeSet<String> {
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join(".kbuild/meta").join(format!("{rootfs}.json"))).unwrap(),
    )
    .unwrap();
    let mut out: BTreeSet<String> = meta["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    out.insert(rootfs.to_owned());
    out
}

fn cp(from: &Path, to: &Path) {
    let s = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(s.success());
}

fn rm(path: &Path) {
    if path.exists() {
        kbuild::fs::make_writable(path).unwrap();
        std::fs::remove_dir_all(path).unwrap();
    }
}

/// `kbuild gc ARGS` under strace, killed at the `n`th call of `syscall`. Returns whether gc
/// completed (the call never came).
fn gc_killed_at(w: &World, syscall: &str, n: usize, args: &[&str]) -> bool {
    let inject = format!("inject={syscall}:signal=KILL:when={n}");
    let strace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", &inject].map(OsStr::new);
    let mut gc = vec!["--root", w.root.to_str().unwrap(), "gc"];
    gc.extend_from_slice(args);
    let out = w
        .command_line(&strace, &kbuild_bin(), &w.sb.store, false, &gc)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {
            assert!(stdout.contains(" removed, "), "{stdout}");
            true
        }
        _ => {
            assert!(
                !stdout.contains(" removed, "),
                "killed, yet finished: {stdout}"
            );
            false
        }
    }
}

/// Two generations of master (the root on the newest), then `gc --keep 1` killed at every
/// `unlink`, every `rmdir` and every `rename` in turn, from the same starting store.
#[test]
fn gc_killed_at_every_deletion_never_leaves_a_partial_object() {
    if !strace_available() {
        return;
    }
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    w.ok(&["switch"]);
    let store = w.sb.store.clone();
    let before = object_trees(&store);
    let g1_only: BTreeSet<String> = closure(&store, &g1.object())
        .difference(&closure(&store, &g2.object()))
        .cloned()
        .collect();
    assert_eq!(
        g1_only.len(),
        3,
        "gc deletes gen 1's rootfs and two rendered files"
    );
    let snap = w.sb.dir.join("snap");
    std::fs::create_dir(&snap).unwrap();
    cp(&store, &snap.join("store"));
    cp(&w.root, &snap.join("host"));

    let mut kills = BTreeMap::new();
    for syscall in ["unlink", "rmdir", "rename"] {
        for n in 1.. {
            rm(&store);
            rm(&w.root);
            cp(&snap.join("store"), &store);
            cp(&snap.join("host"), &w.root);
            if gc_killed_at(&w, syscall, n, &["--keep", "1"]) {
                kills.insert(syscall, n - 1);
                break;
            }
            let when = format!("gc killed at {syscall} #{n}");
            // Every object still under its name is exactly as it was.
            let now = object_trees(&store);
            for (name, tree) in &now {
                assert_eq!(Some(tree), before.get(name), "{when}: {name} changed");
            }
            let missing: BTreeSet<String> = before
                .keys()
                .filter(|o| !now.contains_key(*o))
                .cloned()
                .collect();
            assert!(missing.is_subset(&g1_only), "{when}: lost {missing:?}");
            let v = w.run(&["verify"]);
            assert_eq!(
                (v.code, v.stdout.as_str()),
                (Some(0), "ok\n"),
                "{when}: {v:?}"
            );

            // Both generations' recipes build offline from the store (gen 2's untouched,
            // gen 1's re-creating what gc removed), as generations 2 and 3.
            let r2 = w.run(&[
                "build",
                "master",
                "--set",
                "IP=10.72.84.170",
                "--offline",
                "--locked",
            ]);
            r2.assert_success();
            assert_eq!(r2.rootfs(), g2.rootfs, "{when}");
            assert_eq!(
                r2.stderr(),
                "       Fresh generation 2 is up to date\n",
                "{when}"
            );
            let r = w.run(&["build", "master", "--offline", "--locked"]);
            r.assert_success();
            assert_eq!(r.rootfs(), g1.rootfs, "{when}");
            assert_eq!(r.stderr(), "       Built generation 3\n", "{when}");
            assert_eq!(
                object_trees(&store),
                before,
                "{when}: the store after the builds"
            );

            // The switch to the re-created generation resolves fully.
            w.ok(&["switch", "3"]);
            w.assert_resolves(
                &Gen {
                    number: 3,
                    rootfs: g1.rootfs.clone(),
                },
                &when,
            );

            // The next gc removes what the killed one left, and only that.
            let g = w.run(&["gc"]);
            g.assert_success();
            assert_no_tmp(&store);
            assert_eq!(object_trees(&store), before, "{when}: after the next gc");
            let v = w.run(&["verify"]);
            assert_eq!(
                (v.code, v.stdout.as_str()),
                (Some(0), "ok\n"),
                "{when}: {v:?}"
            );
        }
    }
    eprintln!("gc killed at every deletion: {kills:?}");
    // gc deletes three objects: three renames, their directories and files, and bookkeeping.
    assert_eq!(kills["rename"], 3, "{kills:?}");
    assert!(kills["rmdir"] >= 5 && kills["unlink"] >= 14, "{kills:?}");

    // Finally the complete gc: exactly gen 2's objects are left.
    let g = w.run(&["gc", "--keep", "1"]);
    g.assert_success();
    let left: BTreeSet<String> = store_objects(&store);
    let mut expected = closure(&store, &g2.object());
    expected.extend(before.keys().filter(|o| !g1_only.contains(*o)).cloned());
    assert_eq!(left, expected);
    assert_no_tmp(&store);
}

/// What gc before this fix left when killed mid-delete: a rootfs holding 11 of its 14 files
/// under its content name. The offline build used to reuse it ("Fresh"); now it is moved
/// aside, rebuilt and reported, and the switch to it resolves fully.
#[test]
fn build_rebuilds_a_partly_deleted_rootfs_instead_of_reusing_it() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let files = common::walk_any(&g1.rootfs)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(files, 14);
    let bin = g1.rootfs.join("usr/local/bin");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        std::fs::remove_file(bin.join(f)).unwrap();
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o555)).unwrap();

    let r = w.run(&["build", "master", "--offline", "--locked"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "     Rebuilt {} (the store's copy was incomplete or damaged: `usr/local/bin/kube-apiserver` is missing)\n    Restored generation 1: its objects are complete again\n",
            g1.object()
        )
    );
    assert_eq!(r.rootfs(), g1.rootfs);
    let files = common::walk_any(&g1.rootfs)
        .into_iter()
        .filter(|e| e.as_ref().unwrap().file_type().is_file())
        .count();
    assert_eq!(files, 14);
    // The partial copy waits, off its name, for the next gc.
    let aside: Vec<String> = top_level(&w.sb.store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-aside-"))
        .collect();
    assert_eq!(aside, [format!(".tmp-aside-{}-0", &g1.object()[..32])]);
    let v = w.run(&["verify"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
    w.ok(&["switch"]);
    w.assert_resolves(&g1, "after the rebuild");
    let g = w.ok(&["gc"]);
    assert_eq!(
        g.stdout,
        format!(
            "0 generations, 0 objects and 1 temporary entry removed, 1.1 KiB freed\n{}",
            gc_archives_line(1, fixture().gz.len())
        )
    );
    assert_no_tmp(&w.sb.store);
}

/// Designed case: a member object reused through the index must be whole too. `chmod a-x`
/// keeps its mtime and size (the build's tamper check passes) but changes what it is: the
/// build moves it and the rootfs sharing its inode aside, unpacks the member again from the
/// local input, and says so.
#[test]
fn build_rebuilds_a_member_object_of_the_wrong_shape() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let kubectl = store_objects(&w.sb.store)
        .into_iter()
        .find(|o| o.ends_with("-kubectl"))
        .unwrap();
    std::fs::set_permissions(
        w.sb.store.join(&kubectl),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    let r = w.run(&["build", "master", "--offline", "--locked"]);
    r.assert_success();
    // The archive the store kept at the first build, not the pinned URL.
    let url = format!("file://$SANDBOX/store/{}", kept_fixture());
    assert_eq!(
        r.stderr(),
        format!(
            "{}     Rebuilt {kubectl} (the store's copy was incomplete or damaged: the object has another executable bit)\n     Rebuilt {} (the store's copy was incomplete or damaged: `usr/local/bin/kubectl` has another executable bit)\n    Restored generation 1: its objects are complete again\n",
            fetched(&url, fixture().gz.len()),
            g1.object()
        )
    );
    let m = std::fs::metadata(w.sb.store.join(&kubectl)).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o555);
    let v = w.run(&["verify"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
    let g = w.ok(&["gc"]);
    assert!(
        g.stdout
            .starts_with("0 generations, 0 objects and 2 temporary entries removed, "),
        "{}",
        g.stdout
    );
    assert_no_tmp(&w.sb.store);
}

/// The store object whose inode `file` (in a rootfs) is.
fn object_of(store: &std::path::Path, file: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(file).unwrap().ino();
    let found: Vec<String> = store_objects(store)
        .into_iter()
        .filter(|o| std::fs::metadata(store.join(o)).unwrap().ino() == ino)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

/// Removes an object by hand (as a partial cleanup or a killed old gc could).
fn remove_object(store: &std::path::Path, object: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(store, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(store.join(object)).unwrap();
}

/// Review finding F6: an object an older generation needs, removed; a build that records a
/// new generation re-creates it and said only "Built generation 3". Now it says what it
/// re-created.
#[test]
fn build_of_a_new_generation_says_which_missing_objects_it_recreated() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    let store = w.sb.store.clone();
    let config = object_of(&store, &g1.rootfs.join("etc/kubernetes/config"));
    remove_object(&store, &config);
    let r = w.ok(&["build", "master", "--offline", "--locked"]);
    assert_eq!(
        r.stderr().lines().collect::<Vec<_>>(),
        [
            format!("     Rebuilt {config} (it was missing from the store)"),
            "       Built generation 3".to_owned(),
        ]
    );
    assert!(store.join(&config).is_file());
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

/// Designed case (F6): a binary every generation shares, gone; a build with a new setting
/// records a new generation (not the newest one's sources) and re-creates it: it says so.
#[test]
fn build_says_rebuilt_for_a_shared_object_when_recording_a_new_generation() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    let store = w.sb.store.clone();
    let kubectl = object_of(&store, &g1.rootfs.join("usr/local/bin/kubectl"));
    remove_object(&store, &kubectl);
    let r = w.ok(&[
        "build",
        "master",
        "--set",
        "IP=10.72.84.172",
        "--offline",
        "--locked",
    ]);
    let lines: Vec<String> = r
        .stderr()
        .lines()
        .filter(|l| !l.trim_start().starts_with("Read"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            format!("     Rebuilt {kubectl} (it was missing from the store)"),
            "       Built generation 3".to_owned(),
        ]
    );
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}
