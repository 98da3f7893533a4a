//! A store is known by what it is (its id, `store/.kbuild/id`), not by where it is: moved
//! with a symlink left behind, moved without one, reached through a bind mount, or written by
//! an older kbuild (state version 1, no id), the store keeps its roots — gc keeps what they
//! use, `generations` marks their generation, `switch` re-points a flip point left in the old
//! place (a `repair` in the plan) — while a root of another store is refused with a help line
//! naming a `--store` that works, never the one just given.

mod common;

use std::path::Path;

use common::world::*;
use common::{fixture, gc_archives_line};

/// What `gc` says when it removes nothing: the store keeps the world's one input archive.
fn nothing() -> String {
    format!(
        "0 generations, 0 objects and 0 temporary entries removed, 0 B freed\n{}",
        gc_archives_line(1, fixture().gz.len())
    )
}

/// `switch 1`'s plan for a root whose flip point still points into the store's old place.
const REPOINTED: &str = "root $SANDBOX/host: generation 1 -> generation 1\n  prerequisites: 5 present\n  repair  /etc/.kbuild/current (points into `$SANDBOX/store`; the store is at `$SANDBOX/data/store` now)\n";

/// The root after switching to `g` when the store is at `store` (rootfs paths follow it).
fn expect_at(base: &Listing, g: &Gen, store: &Path) -> Listing {
    let g = Gen {
        number: g.number,
        rootfs: store.join(g.object()),
    };
    expect_in(store, base, &g, &MASTER_DIRS, &[])
}

/// Two generations, the root on the older one (gc --keep 1 would delete it if it forgot the
/// root).
fn two_generations_root_on_the_first() -> (World, Gen, Gen, Listing) {
    let w = World::new();
    let base = w.base();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    w.ok(&["switch", "1"]);
    let on_g1 = w.expect(&base, &g1, &MASTER_DIRS, &[]);
    w.assert_root(&on_g1, &g1, "after switch 1");
    (w, g1, g2, base)
}

fn mv(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(from, to).unwrap();
}

/// The example: `mv store /data/store && ln -s /data/store store`, then `gc --keep 1`.
#[test]
fn a_store_moved_with_a_symlink_left_behind_keeps_its_roots() {
    let (w, g1, g2, base) = two_generations_root_on_the_first();
    let store = w.store();
    let moved = w.sb.dir.join("data/store");
    mv(&store, &moved);
    std::os::unix::fs::symlink(&moved, &store).unwrap();
    let before = w.listing();

    // Through the symlink (the path the root recorded) and through the new path alike, gc
    // keeps the active generation 1 and forgets nothing.
    for s in [&store, &moved] {
        let r = w.sb.run(w.cmd_store(
            s,
            &["--root", w.root.to_str().unwrap(), "gc", "--keep", "1"],
        ));
        assert_eq!(
            (r.code, r.stdout.as_str(), r.stderr.as_str()),
            (Some(0), nothing().as_str(), ""),
            "gc --store {}",
            s.display()
        );
        assert!(moved.join(g1.object()).is_dir());
        assert!(moved.join(g2.object()).is_dir());
    }
    assert_listing(&w.listing(), &before, "after gc");
    w.assert_resolves(&g1, "after gc");
    w.assert_generations(&[1, 2], Some(1));
    // The root still works: nothing to report.
    let r = w.ok(&["verify"]);
    assert_eq!(r.stdout, "ok\n");

    // Through the path just given (the symlink), the plan is not refused as "another store"
    // suggesting that same `--store`: it lists the repair.
    let r = w.ok(&["switch", "1", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        format!(
            "{REPOINTED}{}",
            common::world::master_checks("would not run")
        )
    );
    assert_listing(&w.listing(), &before, "after the dry run");
    // A switch from the moved store re-points the flip point at the store's new place, listed
    // as a repair, and changes nothing else.
    let r = w.run_store(&moved, &["switch", "1"]);
    r.assert_success();
    assert_eq!(
        r.stdout(),
        format!("{REPOINTED}{}", common::world::master_checks("not run"))
    );
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 1\n"
    );
    assert_listing(
        &w.listing(),
        &expect_at(&base, &g1, &moved),
        "after the repair",
    );
    // The symlink can go now: the root no longer needs the old path.
    std::fs::remove_file(&store).unwrap();
    let g1_moved = Gen {
        number: 1,
        rootfs: moved.join(g1.object()),
    };
    w.assert_resolves(&g1_moved, "without the symlink");
    let r = w.run_store(&moved, &["switch", "1"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Fresh generation 1 is already active\n");
}

/// Moved without a symlink: every link dangles. gc still keeps the generation the root
/// resolves to (same store id, same object name), `verify --root` names the switch that
/// re-points the flip point, and that switch mends the root.
#[test]
fn a_store_moved_without_a_symlink_keeps_its_roots_and_one_switch_mends_them() {
    let (w, g1, g2, base) = two_generations_root_on_the_first();
    let moved = w.sb.dir.join("data/store");
    mv(&w.store(), &moved);
    let root = w.root.to_str().unwrap();
    let r = w.run_store(&moved, &["gc", "--keep", "1"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), nothing().as_str(), "")
    );
    assert!(moved.join(g1.object()).is_dir());
    assert!(moved.join(g2.object()).is_dir());
    let r = w.run_store(&moved, &["generations"]);
    assert!(
        r.stdout.lines().nth(1).unwrap().starts_with("*   1 "),
        "{}",
        r.stdout
    );

    let r = w.run_store(&moved, &["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let first = r.stdout().lines().next().unwrap().to_owned();
    assert_eq!(
        first,
        "drift    $SANDBOX/host: /etc/.kbuild/current points into `$SANDBOX/store`, where the store no longer is (it is at `$SANDBOX/data/store` now): `kbuild switch 1 --store $SANDBOX/data/store --root $SANDBOX/host` re-points it"
    );
    assert_eq!(
        r.stderr().lines().last(),
        // One problem: the links dangling through the old path are not listed one by one.
        Some("error: verification found 1 problem(s)")
    );

    // The command verify named, exactly.
    let store_arg = moved.to_str().unwrap();
    let r = w.sb.run(w.cmd_store(
        &moved,
        &["switch", "1", "--store", store_arg, "--root", root],
    ));
    r.assert_success();
    assert_eq!(
        r.stdout(),
        format!("{REPOINTED}{}", common::world::master_checks("not run"))
    );
    assert_listing(
        &w.listing(),
        &expect_at(&base, &g1, &moved),
        "after the repair",
    );
    let r = w.run_store(&moved, &["verify"]);
    assert_eq!((r.code, r.stdout.as_str()), (Some(0), "ok\n"), "{r:?}");
    // And it goes on: generation 2, then gc drops generation 1 once nobody uses it.
    w.run_store(&moved, &["switch", "2"]).assert_success();
    let r = w.run_store(&moved, &["gc", "--keep", "1"]);
    assert!(
        r.stderr.starts_with("     Removed generation 1\n"),
        "{}",
        r.stderr
    );
    assert!(!moved.join(g1.object()).exists());
}

/// A root switched from another store (another id) is refused, and the help names that
/// store's `--store`, which works; `--adopt` takes the root over instead, after which the
/// first store's gc forgets it.
#[test]
fn a_root_of_another_store_is_refused_naming_that_store() {
    let (w, g1, _g2, base) = two_generations_root_on_the_first();
    let other = w.sb.dir.join("store-b");
    w.sb.run(w.cmd_store(&other, &["build", "master", "--set", "IP=10.0.0.7"]))
        .assert_success();
    let root = w.root.to_str().unwrap();
    let before = w.listing();
    for args in [&["switch"][..], &["switch", "--dry-run"]] {
        let mut a = vec!["--root", root];
        a.extend_from_slice(args);
        let r = w.sb.run(w.cmd_store(&other, &a));
        r.assert_error(
            "error: cannot switch root `$SANDBOX/host`\n  caused by: root `$SANDBOX/host` is managed from store `$SANDBOX/store`, not from `$SANDBOX/store-b` (another store)\nhelp: pass `--store $SANDBOX/store` to switch the root from its store, or `--adopt` to manage it from this store from now on\n"
                .replace("cannot switch", if args.len() == 2 { "cannot plan to switch" } else { "cannot switch" })
                .as_str(),
        );
    }
    assert_listing(&w.listing(), &before, "after the refusals");
    // The store the help names works.
    w.ok(&["switch", "2"]);
    // --adopt takes the root over; the first store's gc then forgets it.
    let r = w.run_store(&other, &["switch", "--adopt"]);
    r.assert_success();
    let g_other = Gen {
        number: 1,
        rootfs: std::fs::canonicalize(&other).unwrap().join(
            std::fs::read_link(w.root.join("etc/.kbuild/current"))
                .unwrap()
                .file_name()
                .unwrap(),
        ),
    };
    assert_listing(
        &w.listing(),
        &expect_at(&base, &g_other, &std::fs::canonicalize(&other).unwrap()),
        "after the takeover",
    );
    let r = w.ok(&["gc", "--keep", "1"]);
    let err = r.stderr();
    assert!(err.starts_with("     Removed generation 1\n"), "{err}");
    assert!(
        err.ends_with("      Forgot root `$SANDBOX/host` (gone, or managed from another store)\n"),
        "{err}"
    );
    assert!(!g1.rootfs.exists());
}

/// The store was replaced at the same path (deleted and built anew: another id). The help
/// must not suggest the `--store` just given; it says the store is gone or moved.
#[test]
fn a_store_replaced_at_the_same_path_is_not_suggested_again() {
    let (w, _g1, _g2, _base) = two_generations_root_on_the_first();
    let st = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&w.sb.store)
        .status()
        .unwrap();
    assert!(st.success());
    w.build(&["master"], &["--set", "IP=10.0.0.7"], 1);
    let before = w.listing();
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: root `$SANDBOX/host` is managed from store `$SANDBOX/store`, not from `$SANDBOX/store` (another store); that store is no longer there\nhelp: if that store moved, pass its new place as `--store`; to manage the root from this store from now on, pass `--adopt`\n",
    );
    assert_listing(&w.listing(), &before, "after the refusal");
    w.ok(&["switch", "--adopt"]);
    w.assert_generations(&[1], Some(1));
}

/// One store reached by two paths that do not canonicalize to each other: a bind mount (in a
/// private mount namespace, undone when the command ends). gc and `generations` through the
/// mount know the root.
#[test]
fn a_store_reached_through_a_bind_mount_keeps_its_roots() {
    let (w, g1, g2, _base) = two_generations_root_on_the_first();
    let mnt = w.sb.dir.join("mnt/store");
    std::fs::create_dir_all(&mnt).unwrap();
    let kbuild = assert_cmd::cargo::cargo_bin("kbuild");
    let script = format!(
        "mount --bind '{}' '{}' && exec '{}' --store '{}' --root '{}' \"$@\"",
        w.store().display(),
        mnt.display(),
        kbuild.display(),
        mnt.display(),
        w.root.display()
    );
    let run = |args: &[&str]| {
        let mut c = assert_cmd::Command::new("unshare");
        c.args(["--map-root-user", "--mount", "sh", "-c", &script, "sh"])
            .args(args)
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .timeout(std::time::Duration::from_secs(60));
        w.sb.run(c)
    };
    let probe = run(&["generations"]);
    assert_eq!(
        probe.code,
        Some(0),
        "this test needs `unshare --map-root-user --mount` and `mount --bind`: {probe:?}"
    );
    assert!(
        probe.stdout.lines().nth(1).unwrap().starts_with("*   1 "),
        "{}",
        probe.stdout
    );
    let r = run(&["gc", "--keep", "1"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), nothing().as_str(), "")
    );
    assert!(g1.rootfs.is_dir() && g2.rootfs.is_dir());
    w.assert_resolves(&g1, "after gc through the mount");
}

/// A root switched by an older kbuild (state version 1, no `store_id`) from a store without an
/// id: still ours by path; the first switch gives the store its id; and after the old store
/// moved (no symlink) it is still recognised by its rootfs object.
#[test]
fn an_old_format_state_and_an_old_store_without_id_are_still_known() {
    let (w, g1, g2, base) = two_generations_root_on_the_first();
    let store = w.store();
    let state = w.root.join("etc/.kbuild/state.json");
    let v1 = std::fs::read_to_string(&state)
        .unwrap()
        .replace("\"version\": 2,", "\"version\": 1,")
        .replace(&format!("  \"store_id\": \"{}\",\n", store_id(&store)), "");
    assert!(
        !v1.contains("store_id") && v1.contains("\"version\": 1,"),
        "{v1}"
    );
    std::fs::write(&state, &v1).unwrap();
    std::fs::remove_file(store.join(".kbuild/id")).unwrap();
    for e in std::fs::read_dir(store.join(".kbuild/roots")).unwrap() {
        let p = e.unwrap().path();
        std::fs::write(
            &p,
            format!("{{\n  \"root\": \"{}\"\n}}\n", w.root.display()),
        )
        .unwrap();
    }

    // Read only: no id is made.
    w.assert_generations(&[1, 2], Some(1));
    let r = w.ok(&["gc", "--keep", "1"]);
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str()),
        (nothing().as_str(), "")
    );
    assert!(!store.join(".kbuild/id").exists());

    // The store moved without a symlink: the version 1 record names a path where nothing is;
    // the rootfs object it names is in this store, so the root is still this store's.
    let moved = w.sb.dir.join("data/store");
    mv(&store, &moved);
    let r = w.run_store(&moved, &["gc", "--keep", "1"]);
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (Some(0), nothing().as_str(), "")
    );
    assert!(moved.join(g1.object()).is_dir() && moved.join(g2.object()).is_dir());

    // The first switch gives the store its id and writes a version 2 state.
    let r = w.run_store(&moved, &["switch", "1"]);
    r.assert_success();
    assert_eq!(
        r.stdout(),
        format!("{REPOINTED}{}", common::world::master_checks("not run"))
    );
    assert_listing(
        &w.listing(),
        &expect_at(&base, &g1, &moved),
        "after the switch",
    );
    let id = store_id(&moved);
    let reg: Vec<String> = std::fs::read_dir(moved.join(".kbuild/roots"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        reg,
        [format!(
            "{{\n  \"root\": \"{}\",\n  \"store_id\": \"{id}\"\n}}\n",
            w.root.display()
        )]
    );
}

/// gc keeps what a root's flip point resolves to in this store even when the root's own
/// record cannot be read (a truncated `state.json`): the root is neither forgotten nor robbed.
#[test]
fn gc_keeps_what_the_flip_point_resolves_to_when_the_record_is_unreadable() {
    let (w, g1, g2, _base) = two_generations_root_on_the_first();
    std::fs::write(
        w.root.join("etc/.kbuild/state.json"),
        "{\n  \"version\": 2,\n",
    )
    .unwrap();
    let before = w.listing();
    let r = w.ok(&["gc", "--keep", "1"]);
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str()),
        (nothing().as_str(), "")
    );
    assert!(g1.rootfs.is_dir() && g2.rootfs.is_dir());
    assert_listing(&w.listing(), &before, "after gc");
    w.assert_resolves(&g1, "after gc");
}
