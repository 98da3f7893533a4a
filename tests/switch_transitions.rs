//! Paths that change type between generations (a file in one, a directory in the other, at
//! depth 1 and 3, with and without adopted originals), crashes at every step of such
//! switches, and roots left by interrupted or failed switches: kbuild itself completes or
//! undoes them, and every problem `verify --root` reports names the command that repairs it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::world::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `dirs` plus MASTER_DIRS, as `expect` wants them.
fn with_master(dirs: &[&'static str]) -> Vec<&'static str> {
    let mut v = MASTER_DIRS.to_vec();
    v.extend_from_slice(dirs);
    v
}

/// The root at `g`: `w.expect(base, g, created)`, plus originals kept in `adopted/` (`kept`:
/// path inside the root → what is kept) recorded in state.json.
fn at(w: &World, base: &Listing, g: &Gen, created: &[&str], kept: &[(&str, Item)]) -> Listing {
    let mut l = w.expect(base, g, created, &[]);
    for (p, item) in kept {
        let rel = format!("etc/.kbuild/adopted{p}");
        match item {
            Item::File(b) => l.file(&rel, b),
            Item::Dir => l.dir(&rel),
            Item::Link(t) => l.link(&rel, t),
        }
    }
    let adopted: Vec<&str> = kept.iter().map(|(p, _)| *p).collect();
    l.file(
        "etc/.kbuild/state.json",
        state_json(&w.store(), g, &g.managed(), created, &adopted).as_bytes(),
    );
    l
}

/// Where an adopted original may be during a crash: in exactly one of its two places, whole.
fn assert_original_once(w: &World, path: &str, original: &Item, when: &str) {
    let rel = path.trim_start_matches('/');
    let listing = w.listing();
    let kept_rel = format!("etc/.kbuild/adopted{path}");
    // A directory original is recognised by the host's file in it.
    let is_original = |p: &str| match original {
        Item::Dir => listing.0.contains_key(&format!("{p}/mine.yaml")),
        _ => listing.0.get(p) == Some(original),
    };
    let (at_path, kept) = (is_original(rel), is_original(&kept_rel));
    assert!(
        at_path ^ kept,
        "{when}: the original of {path} at its path: {at_path}, kept: {kept}"
    );
    if let Item::Dir = original {
        // A kept directory keeps its contents.
        let inside = if at_path { rel.to_owned() } else { kept_rel };
        assert_eq!(
            listing.0.get(&format!("{inside}/mine.yaml")),
            Some(&Item::File(b"the host's own\n".to_vec())),
            "{when}"
        );
    }
}

/// Crashes `switch <b>` from `a` at every step; after each crash checks the root, then lets
/// the next command finish: odd steps `switch <b>` (then back with `switch <a>`), even steps
/// `switch <a>` (which completes the interrupted switch, then goes back). Returns the steps.
fn crash_every_step(
    w: &World,
    (a, la): (&Gen, &Listing),
    (b, lb): (&Gen, &Listing),
    adopt: Option<(&str, &Item)>,
) -> Vec<String> {
    let (na, nb) = (a.number.to_string(), b.number.to_string());
    w.ok(&["switch", &na]);
    w.assert_root(la, a, "before the crashes");
    let mut steps = Vec::new();
    for n in 1.. {
        let when = format!("{na} -> {nb}, crash at step {n}");
        let r = w.run_env(&["switch", &nb], &[("KBUILD_FAULT_AT", &n.to_string())]);
        if r.code == Some(0) {
            assert!(!r.stderr.contains("fault injected"), "{}", r.stderr);
            w.assert_root(lb, b, &format!("{na} -> {nb} ran to the end"));
            w.ok(&["switch", &na]);
            w.assert_root(la, a, &format!("{na} -> {nb} -> {na}"));
            break;
        }
        assert!(n <= 40, "still crashing at step {n}");
        assert_eq!(r.code, None, "{when}: {r:?}");
        steps.push(fault_step(&r, n));
        assert_crashed_between(w, a, b, la, lb, &when);
        if let Some((p, original)) = adopt {
            assert_original_once(w, p, original, &when);
        }
        // verify names the command that finishes it.
        let v = w.run(&["verify"]);
        assert_eq!(v.code, Some(1), "{when}: {v:?}");
        assert_eq!(
            v.stdout(),
            format!(
                "drift    $SANDBOX/host: an interrupted switch from generation {na} to generation {nb} is pending (`kbuild switch {nb}` completes it)\n"
            ),
            "{when}"
        );
        if n % 2 == 1 {
            let r = w.ok(&["switch", &nb]);
            assert_eq!(
                r.stderr(),
                "   Completed an interrupted switch; running its unit actions\n       Fresh generation ".to_owned()
                    + &nb
                    + " is already active\n",
                "{when}"
            );
            w.assert_root(lb, b, &format!("{when}, then `switch {nb}`"));
            assert_eq!(w.run(&["verify"]).stdout, "ok\n", "{when}");
        }
        let r = w.run(&["switch", &na]);
        assert_eq!(r.code, Some(0), "{when}, then `switch {na}`: {r:?}");
        w.assert_root(la, a, &format!("{when}, then back at {na}"));
    }
    steps
}

// ---------------------------------------------------------------------------------------------
// 1. A file in one generation, a directory in the other
// ---------------------------------------------------------------------------------------------

/// The example of the issue: generation 1 manages the file /etc/kubernetes/addons, generation
/// 2 manages /etc/kubernetes/addons/dns.yaml.
#[test]
fn a_file_becomes_a_directory_and_back_by_switch_and_rollback() {
    let w = World::new();
    w.master_plus("addons-file", &[("/etc/kubernetes/addons", "file\n")]);
    w.master_plus(
        "addons-dir",
        &[("/etc/kubernetes/addons/dns.yaml", "dns\n")],
    );
    let g1 = w.build(&["addons-file"], &[], 1);
    let g2 = w.build(&["addons-dir"], &[], 2);
    let base = w.base();
    let l1 = at(&w, &base, &g1, &MASTER_DIRS, &[]);
    let l2 = at(
        &w,
        &base,
        &g2,
        &with_master(&["/etc/kubernetes/addons"]),
        &[],
    );

    w.ok(&["switch", "1"]);
    w.assert_root(&l1, &g1, "at 1");
    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: addons-file -> addons-dir\n  prerequisites: 5 present\n  add     /etc/kubernetes/addons/dns.yaml\n  remove  /etc/kubernetes/addons\n{}",
            master_checks("not run")
        )
    );
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 2\n"
    );
    w.assert_root(&l2, &g2, "after switch 2");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");

    // Back: the directory kbuild made, holding only kbuild's link, is kbuild's (and so is
    // the temporary link a power loss may leave while a link is replaced).
    std::os::unix::fs::symlink(
        "../../../etc/.kbuild/current/etc/kubernetes/addons/dns.yaml",
        w.root.join("etc/kubernetes/addons/.dns.yaml.kbuild-tmp"),
    )
    .unwrap();
    let r = w.ok(&["rollback"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 2 -> generation 1\n  recipes: addons-dir -> addons-file\n  prerequisites: 5 present\n  add     /etc/kubernetes/addons\n  remove  /etc/kubernetes/addons/dns.yaml\n{}",
            master_checks("not run")
        )
    );
    w.assert_root(&l1, &g1, "after rollback");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");

    // And with `--adopt` too: kbuild never adopts its own entries.
    w.ok(&["switch", "2"]);
    let r = w.ok(&["switch", "1", "--adopt"]);
    assert!(!r.stdout.contains("adopt "), "{}", r.stdout);
    w.assert_root(&l1, &g1, "after switch 1 --adopt");
    w.ok(&["switch", "2", "--adopt"]);
    w.assert_root(&l2, &g2, "after switch 2 --adopt");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

/// A directory kbuild made that holds a file of the host is not kbuild's to remove: the
/// switch that needs a link there refuses, names it, and changes nothing. `--adopt` keeps the
/// directory (with the host's file) aside; generation 2 then gets a new directory, and the
/// kept one comes back when neither generation manages the path.
#[test]
fn a_directory_holding_a_hand_made_file_is_refused_then_adopted_whole() {
    let w = World::new();
    w.master_plus("addons-file", &[("/etc/kubernetes/addons", "file\n")]);
    w.master_plus(
        "addons-dir",
        &[("/etc/kubernetes/addons/dns.yaml", "dns\n")],
    );
    w.build(&["addons-file"], &[], 1);
    let g2 = w.build(&["addons-dir"], &[], 2);
    let g3 = w.build(&["master"], &[], 3);
    let base = w.base();
    w.ok(&["switch", "2"]);
    std::fs::write(
        w.root.join("etc/kubernetes/addons/mine.yaml"),
        b"the host's own\n",
    )
    .unwrap();
    let before = full_listing(&w.root);
    w.run(&["switch", "1"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /etc/kubernetes/addons\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(full_listing(&w.root), before);

    w.ok(&["switch", "1", "--adopt"]);
    let g1 = Gen {
        number: 1,
        rootfs: std::fs::read_link(w.root.join("etc/.kbuild/current")).unwrap(),
    };
    let mine = (
        "/etc/kubernetes/addons/mine.yaml",
        Item::File(b"the host's own\n".to_vec()),
    );
    let kept = [("/etc/kubernetes/addons", Item::Dir)];
    let mut l1 = at(&w, &base, &g1, &MASTER_DIRS, &kept);
    l1.file(
        &format!("etc/.kbuild/adopted{}", mine.0),
        b"the host's own\n",
    );
    w.assert_root(&l1, &g1, "after adopting the directory");

    // Generation 2 again: a new directory of kbuild's; the adopted one stays kept.
    w.ok(&["switch", "2"]);
    let mut l2 = at(
        &w,
        &base,
        &g2,
        &with_master(&["/etc/kubernetes/addons"]),
        &kept,
    );
    l2.file(
        &format!("etc/.kbuild/adopted{}", mine.0),
        b"the host's own\n",
    );
    w.assert_root(&l2, &g2, "at 2 with the directory kept");

    // Neither manages it: the directory comes back with the host's file in it.
    let r = w.ok(&["switch", "3"]);
    assert!(
        r.stdout
            .contains("  restore /etc/kubernetes/addons (the original adopted earlier)\n"),
        "{}",
        r.stdout
    );
    let mut l3 = at(&w, &base, &g3, &MASTER_DIRS, &[]);
    l3.file(mine.0.trim_start_matches('/'), b"the host's own\n");
    w.assert_root(&l3, &g3, "at 3, the directory restored");
}

/// file -> directory and back at depth 1 (`/etc/kubernetes/x` vs `/etc/kubernetes/x/y/z/f`)
/// and depth 3 (`/etc/kubernetes/a/b/c` vs `/etc/kubernetes/a/b/c/d/e.yaml`), crashing every
/// step of each direction.
#[test]
fn type_changes_at_depth_1_and_3_survive_a_crash_at_every_step() {
    let w = World::new();
    w.master_plus(
        "files",
        &[
            ("/etc/kubernetes/x", "x file\n"),
            ("/etc/kubernetes/a/b/c", "c file\n"),
        ],
    );
    w.master_plus(
        "dirs",
        &[
            ("/etc/kubernetes/x/y/z/f", "f\n"),
            ("/etc/kubernetes/a/b/c/d/e.yaml", "e\n"),
        ],
    );
    let files = w.build(&["files"], &[], 1);
    let dirs = w.build(&["dirs"], &[], 2);
    let base = w.base();
    let lf = at(
        &w,
        &base,
        &files,
        &with_master(&["/etc/kubernetes/a", "/etc/kubernetes/a/b"]),
        &[],
    );
    let ld = at(
        &w,
        &base,
        &dirs,
        &with_master(&[
            "/etc/kubernetes/a",
            "/etc/kubernetes/a/b",
            "/etc/kubernetes/a/b/c",
            "/etc/kubernetes/a/b/c/d",
            "/etc/kubernetes/x",
            "/etc/kubernetes/x/y",
            "/etc/kubernetes/x/y/z",
        ]),
        &[],
    );
    // Links go before the directories take their place; directories are emptied of kbuild's
    // links and removed before links take theirs.
    let steps = crash_every_step(&w, (&files, &lf), (&dirs, &ld), None);
    assert_eq!(
        steps,
        [
            "journal written",
            "unlink",
            "unlink",
            "mkdir",
            "mkdir",
            "mkdir",
            "mkdir",
            "mkdir",
            "flip",
            "link",
            "link",
            "state written"
        ]
    );
    let steps = crash_every_step(&w, (&dirs, &ld), (&files, &lf), None);
    assert_eq!(
        steps,
        [
            "journal written",
            "unlink",
            "unlink",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "flip",
            "link",
            "link",
            "state written"
        ]
    );
}

/// The same transitions when the file kbuild manages replaced a host original (adopted), and
/// when the host's original was a directory: the original stays kept while either generation
/// manages the path, through every crash, and comes back when neither does.
#[test]
fn type_changes_with_adopted_originals_survive_a_crash_at_every_step() {
    // At depth 1, and at depth 3 below directories of the host's.
    for path in ["/etc/kubernetes/addons", "/etc/kubernetes/a/b/c"] {
        for original_is_dir in [false, true] {
            adopted_original_through_type_changes(path, original_is_dir);
        }
    }
}

fn adopted_original_through_type_changes(path: &'static str, original_is_dir: bool) {
    let when = format!(
        "{path}, original is a {}",
        if original_is_dir { "directory" } else { "file" }
    );
    let w = World::new();
    let rel = path.trim_start_matches('/');
    let dns = format!("{path}/dns.yaml");
    w.master_plus("as-file", &[(path, "file\n")]);
    w.master_plus("as-dir", &[(&dns, "dns\n")]);
    std::fs::create_dir_all(w.root.join(rel).parent().unwrap()).unwrap();
    let original = if original_is_dir {
        std::fs::create_dir(w.root.join(rel)).unwrap();
        std::fs::write(w.root.join(rel).join("mine.yaml"), b"the host's own\n").unwrap();
        Item::Dir
    } else {
        std::fs::write(w.root.join(rel), b"the host's file\n").unwrap();
        Item::File(b"the host's file\n".to_vec())
    };
    let with_original = w.base();
    let g1 = w.build(&["as-file"], &[], 1);
    let g2 = w.build(&["as-dir"], &[], 2);
    let g3 = w.build(&["master"], &[], 3);
    let mut base = with_original.clone();
    base.remove(&format!("{rel}/mine.yaml"));
    base.remove(rel);
    let kept = [(path, original.clone())];
    let add_contents = |l: &mut Listing| {
        if original_is_dir {
            l.file(
                &format!("etc/.kbuild/adopted{path}/mine.yaml"),
                b"the host's own\n",
            );
        }
    };
    let mut l1 = at(&w, &base, &g1, &MASTER_DIRS, &kept);
    add_contents(&mut l1);
    let mut l2 = at(&w, &base, &g2, &with_master(&[path]), &kept);
    add_contents(&mut l2);

    w.ok(&["switch", "1", "--adopt"]);
    w.assert_root(&l1, &g1, &format!("{when}: adopted at 1"));
    // The original stays kept while either generation manages the path.
    let steps = crash_every_step(&w, (&g1, &l1), (&g2, &l2), Some((path, &original)));
    assert_eq!(
        steps,
        [
            "journal written",
            "unlink",
            "mkdir",
            "flip",
            "link",
            "state written"
        ],
        "{when}"
    );
    let steps = crash_every_step(&w, (&g2, &l2), (&g1, &l1), Some((path, &original)));
    assert_eq!(
        steps,
        [
            "journal written",
            "unlink",
            "rmdir",
            "flip",
            "link",
            "state written"
        ],
        "{when}"
    );
    // From generation 2 (a directory of kbuild's where the original was) to one that
    // manages neither: the original comes back.
    w.ok(&["switch", "2"]);
    let r = w.ok(&["switch", "3"]);
    assert!(
        r.stdout().contains(&format!(
            "  restore {path} (the original adopted earlier)\n"
        )),
        "{when}: {}",
        r.stdout
    );
    let l3 = at(&w, &with_original, &g3, &MASTER_DIRS, &[]);
    w.assert_root(&l3, &g3, &format!("{when}: restored at 3"));
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n", "{when}");
}

// ---------------------------------------------------------------------------------------------
// 3. No wedged roots
// ---------------------------------------------------------------------------------------------

/// Deletes a store object (read-only directories included), as a user or a broken disk might.
fn remove_object(path: &Path) {
    for e in common::walk_any(path) {
        let e = e.unwrap();
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    std::fs::remove_dir_all(path).unwrap();
}

/// Crashes `switch <to>` at step `n` (which must be `step`).
fn crash(w: &World, args: &[&str], n: u64, step: &str) {
    let r = w.run_env(args, &[("KBUILD_FAULT_AT", &n.to_string())]);
    assert_eq!(r.code, None, "{r:?}");
    assert_eq!(fault_step(&r, n), step);
}

/// The drift lines of `verify` (its stdout without the store's own findings).
fn drift_lines(w: &World) -> String {
    w.run(&["verify"])
        .stdout()
        .lines()
        .filter(|l| l.starts_with("drift "))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn an_interrupted_switch_whose_target_is_gone_from_the_store_is_undone() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["extra"], &["--set", "IP=10.0.0.9"], 2);
    let base = w.base();
    let l1 = at(&w, &base, &g1, &MASTER_DIRS, &[]);
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 3, "link");
    remove_object(&g2.rootfs);

    assert_eq!(
        drift_lines(&w),
        format!(
            "drift    $SANDBOX/host: an interrupted switch from generation 1 to generation 2 is pending (it cannot be completed (rootfs `$SANDBOX/store/{}` of generation 2 is missing from the store): `kbuild switch 1` undoes it)\n",
            g2.object()
        )
    );
    let dry = w.ok(&["switch", "1", "--dry-run"]);
    assert_eq!(
        dry.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 1\n  an interrupted switch is undone first (it cannot be completed)\n  prerequisites: 5 present\n{}",
            master_checks("would not run")
        )
    );
    let r = w.ok(&["switch", "1"]);
    assert_eq!(
        r.stderr(),
        format!(
            "      Undone an interrupted switch, which could not be completed (rootfs `$SANDBOX/store/{}` of generation 2 is missing from the store); the root is back on generation 1\n       Fresh generation 1 is already active\n",
            g2.object()
        )
    );
    // The units it had restarted go back too (here printed: the root is not `/`).
    assert_eq!(
        r.stdout(),
        "unit actions (not run: root is not `/`):\n  systemctl daemon-reload\n  systemctl restart kube-apiserver.service\n  systemctl restart kube-controller-manager.service\n  systemctl restart kube-scheduler.service\n"
    );
    w.assert_root(&l1, &g1, "undone");
    assert_eq!(drift_lines(&w), "");
}

/// The first switch of a root, interrupted, with its target gone: undone to an unmanaged
/// root, from where the next switch starts afresh.
#[test]
fn an_interrupted_first_switch_is_undone_to_an_unmanaged_root() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["extra"], &[], 2);
    let base = w.base();
    crash(&w, &["switch", "2"], 4, "mkdir");
    remove_object(&g2.rootfs);
    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stderr()
            .contains("the root is back on no generation (unmanaged again)\n"),
        "{}",
        r.stderr
    );
    w.assert_root(&at(&w, &base, &g1, &MASTER_DIRS, &[]), &g1, "at 1");
}

/// After a crash, a file made by hand where the switch was going to put a link: recovery
/// cannot complete the switch, so it undoes it (nothing of the user's is replaced), and the
/// requested switch then refuses as usual.
#[test]
fn a_hand_made_file_in_the_way_of_recovery_makes_it_undo_the_switch() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["extra"], &[], 2);
    let mut base = w.base();
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 2, "flip");
    std::fs::write(w.root.join("etc/kubernetes/extra"), b"by hand\n").unwrap();
    base.file("etc/kubernetes/extra", b"by hand\n");
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: an interrupted switch from generation 1 to generation 2 is pending (it cannot be completed (`$SANDBOX/host/etc/kubernetes/extra` is in the way: kbuild's link goes there): `kbuild switch 1` undoes it)\n"
    );

    let r = w.run(&["switch", "2"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr(),
        "      Undone an interrupted switch, which could not be completed (`$SANDBOX/host/etc/kubernetes/extra` is in the way: kbuild's link goes there); the root is back on generation 1\nerror: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /etc/kubernetes/extra\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n"
    );
    let l1 = at(&w, &base, &g1, &MASTER_DIRS, &[]);
    w.assert_root(&l1, &g1, "undone");
    // The way the refusal names works.
    w.ok(&["switch", "2", "--adopt"]);
    let mut without = base.clone();
    without.remove("etc/kubernetes/extra");
    w.assert_root(
        &at(
            &w,
            &without,
            &g2,
            &MASTER_DIRS,
            &[("/etc/kubernetes/extra", Item::File(b"by hand\n".to_vec()))],
        ),
        &g2,
        "adopted",
    );
}

/// A file made by hand where both the switch and its undoing need the path (kbuild's link
/// before, the original adopted earlier after): the error says so and how to get out, every
/// other command still works (and a failed recovery changes nothing), and the way out works.
#[test]
fn a_switch_that_can_neither_complete_nor_undo_names_the_way_out() {
    let w = World::new();
    w.master_plus(
        "one",
        &[
            ("/etc/kubernetes/extra", "x\n"),
            ("/etc/kubernetes/only-1", "1\n"),
        ],
    );
    let original = b"the host's extra\n";
    std::fs::write(w.root.join("etc/kubernetes/extra"), original).unwrap();
    let with_original = w.base();
    let mut base = with_original.clone();
    base.remove("etc/kubernetes/extra");
    let g1 = w.build(&["one"], &[], 1);
    let g2 = w.build(&["master"], &[], 2);
    w.ok(&["switch", "1", "--adopt"]);
    let kept = [("/etc/kubernetes/extra", Item::File(original.to_vec()))];
    let l1 = at(&w, &base, &g1, &MASTER_DIRS, &kept);
    w.assert_root(&l1, &g1, "adopted at 1");
    // Crash after both links went, before the original came back...
    crash(&w, &["switch", "2"], 4, "unlink");
    // ... and a file made by hand where the original goes.
    std::fs::write(w.root.join("etc/kubernetes/extra"), b"B\n").unwrap();
    let stuck = full_listing(&w.root);
    let r = w.run(&["switch", "2"]);
    r.assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: cannot complete the interrupted switch from generation 1 to generation 2 (`$SANDBOX/host/etc/kubernetes/extra` is in the way: the original adopted earlier, kept in `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/extra`, goes back there), nor undo it (`$SANDBOX/host/etc/kubernetes/extra` is in the way: kbuild's link goes there)\nhelp: move `$SANDBOX/host/etc/kubernetes/extra` away, then `kbuild switch 2` completes it\n",
    );
    assert_eq!(
        full_listing(&w.root),
        stuck,
        "a failed recovery changed the root"
    );
    // The original is still kept.
    assert_eq!(
        std::fs::read(w.root.join("etc/.kbuild/adopted/etc/kubernetes/extra")).unwrap(),
        original
    );
    // Other commands still work, and name the way out.
    w.ok(&["generations"]);
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: an interrupted switch from generation 1 to generation 2 is pending (cannot complete the interrupted switch from generation 1 to generation 2 (`$SANDBOX/host/etc/kubernetes/extra` is in the way: the original adopted earlier, kept in `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/extra`, goes back there), nor undo it (`$SANDBOX/host/etc/kubernetes/extra` is in the way: kbuild's link goes there): move `$SANDBOX/host/etc/kubernetes/extra` away, then `kbuild switch 2` completes it)\n"
    );
    let r = w.run(&["switch", "1", "--dry-run"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr().starts_with("error: cannot plan to switch root `$SANDBOX/host`\n  caused by: cannot complete the interrupted switch"),
        "{}",
        r.stderr
    );
    let r = w.run(&["rollback"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        full_listing(&w.root),
        stuck,
        "a failed recovery changed the root"
    );

    std::fs::rename(
        w.root.join("etc/kubernetes/extra"),
        w.root.join("etc/kubernetes/extra.local"),
    )
    .unwrap();
    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        r.stderr(),
        "   Completed an interrupted switch; running its unit actions\n       Fresh generation 2 is already active\n"
    );
    let mut l2 = at(&w, &with_original, &g2, &MASTER_DIRS, &[]);
    l2.file("etc/kubernetes/extra.local", b"B\n");
    w.assert_root(&l2, &g2, "completed");
    assert_eq!(drift_lines(&w), "");
}

#[test]
fn a_corrupt_journal_or_state_names_the_way_out_and_it_works() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["extra"], &[], 2);
    let base = w.base();
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 2, "flip");
    let journal = w.root.join("etc/.kbuild/journal.json");
    std::fs::write(&journal, b"{\"version\": 1, \"fr").unwrap();
    let r = w.run(&["switch", "2"]);
    r.assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: corrupt activation state `$SANDBOX/host/etc/.kbuild/journal.json`\n  caused by: EOF while parsing a string at line 1 column 18\nhelp: the interrupted switch it records cannot be read: move it away (`mv $SANDBOX/host/etc/.kbuild/journal.json $SANDBOX/host/etc/.kbuild/journal.json.bad`), then `kbuild switch N` puts the root on generation N (kbuild's links are recognised); `kbuild verify --root DIR` lists anything left\n",
    );
    std::fs::rename(&journal, journal.with_extension("json.bad")).unwrap();
    w.ok(&["switch", "2"]);
    let mut l2 = at(&w, &base, &g2, &MASTER_DIRS, &[]);
    l2.file("etc/.kbuild/journal.json.bad", b"{\"version\": 1, \"fr");
    w.assert_root(&l2, &g2, "after the corrupt journal");
    assert_eq!(drift_lines(&w), "");

    // A corrupt state: the same way out; kbuild's links are recognised as its own.
    let state = w.root.join("etc/.kbuild/state.json");
    std::fs::write(&state, b"not json").unwrap();
    let r = w.run(&["switch", "1"]);
    r.assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: corrupt activation state `$SANDBOX/host/etc/.kbuild/state.json`\n  caused by: expected ident at line 1 column 2\nhelp: move it away (`mv $SANDBOX/host/etc/.kbuild/state.json $SANDBOX/host/etc/.kbuild/state.json.bad`), then `kbuild switch N` records the root again on generation N (kbuild's own links, its directories and the originals kept in /etc/.kbuild/adopted are recognised; nothing else is replaced)\n",
    );
    let v = w.run(&["verify"]);
    assert_eq!(v.code, Some(1), "{v:?}");
    assert!(v.stderr().contains("help: move it away"), "{}", v.stderr);
    std::fs::rename(&state, state.with_extension("json.bad")).unwrap();
    w.ok(&["switch", "1"]);
    // The directories holding only kbuild's links are known as its own again.
    let mut l1 = at(&w, &base, &g1, &MASTER_DIRS, &[]);
    l1.file("etc/.kbuild/journal.json.bad", b"{\"version\": 1, \"fr");
    l1.file("etc/.kbuild/state.json.bad", b"not json");
    w.assert_root(&l1, &g1, "after the corrupt state");
    assert_eq!(drift_lines(&w), "");
}

/// Every problem `verify --root` reports names a command; running it leaves no drift.
#[test]
fn every_drift_names_the_command_that_repairs_it() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    let base = w.base();
    let l1 = at(&w, &base, &g1, &MASTER_DIRS, &[]);
    w.ok(&["switch", "1"]);
    let k = w.root.join("etc/kubernetes");
    let repaired = |what: &str, args: &[&str]| {
        w.ok(args);
        assert_eq!(drift_lines(&w), "", "after repairing {what}");
        assert_eq!(w.run(&["verify"]).stdout, "ok\n", "after repairing {what}");
    };

    // A link removed.
    std::fs::remove_file(k.join("scheduler")).unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: removed: /etc/kubernetes/scheduler (`kbuild switch 1` repairs it)\n"
    );
    repaired("a removed link", &["switch", "1"]);
    w.assert_root(&l1, &g1, "removed link repaired");

    // A link changed, and one replaced by a file: adopted, kbuild's links back.
    std::fs::remove_file(k.join("config")).unwrap();
    std::os::unix::fs::symlink("config.local", k.join("config")).unwrap();
    std::fs::remove_file(k.join("apiserver")).unwrap();
    std::fs::write(k.join("apiserver"), b"edited\n").unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: replaced by a file: /etc/kubernetes/apiserver (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/apiserver and puts kbuild's link back)\ndrift    $SANDBOX/host: link changed: /etc/kubernetes/config -> config.local (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/config and puts kbuild's link back)\n"
    );
    repaired("a changed link and a file", &["switch", "1", "--adopt"]);
    let kept = [
        (
            "/etc/kubernetes/apiserver",
            Item::File(b"edited\n".to_vec()),
        ),
        ("/etc/kubernetes/config", Item::Link("config.local".into())),
    ];
    w.assert_root(&at(&w, &base, &g1, &MASTER_DIRS, &kept), &g1, "adopted");

    // Replaced again where an original is kept already: move it away, then switch.
    std::fs::remove_file(k.join("apiserver")).unwrap();
    std::fs::write(k.join("apiserver"), b"edited again\n").unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: replaced by a file: /etc/kubernetes/apiserver (an original of it is kept in /etc/.kbuild/adopted/etc/kubernetes/apiserver already: move this one away, then `kbuild switch 1` repairs it)\n"
    );
    std::fs::rename(k.join("apiserver"), w.sb.dir.join("apiserver.mine")).unwrap();
    repaired("a file over an adopted path", &["switch", "1"]);
    w.assert_root(&at(&w, &base, &g1, &MASTER_DIRS, &kept), &g1, "repaired");

    // The flip point moved, or gone.
    let current = w.root.join("etc/.kbuild/current");
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(&g2.rootfs, &current).unwrap();
    assert_eq!(
        drift_lines(&w),
        format!(
            "drift    $SANDBOX/host: /etc/.kbuild/current points to `$SANDBOX/store/{}` instead of `$SANDBOX/store/{}` (`kbuild switch 1` repairs it)\n",
            g2.object(),
            g1.object()
        )
    );
    repaired("a moved flip point", &["switch", "1"]);
    std::fs::remove_file(&current).unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: /etc/.kbuild/current is missing (`kbuild switch 1` repairs it)\n"
    );
    repaired("a missing flip point", &["switch", "1"]);
    w.assert_root(
        &at(&w, &base, &g1, &MASTER_DIRS, &kept),
        &g1,
        "flip point back",
    );

    // A directory on the way replaced by a link (kbuild never goes through it): move it
    // away, then switch.
    let systemd = w.root.join("etc/systemd");
    std::fs::rename(&systemd, w.sb.dir.join("systemd.elsewhere")).unwrap();
    std::os::unix::fs::symlink(w.sb.dir.join("systemd.elsewhere"), &systemd).unwrap();
    // Every path below it: the unit files and their enablement links.
    let below: String = MASTER_PATHS
        .iter()
        .filter(|p| p.starts_with("/etc/systemd/"))
        .map(|p| {
            format!(
                "drift    $SANDBOX/host: {p}: `$SANDBOX/host/etc/systemd` is a symlink or not a directory; kbuild will not write through it (move that away, then `kbuild switch 1` repairs it)\n"
            )
        })
        .collect();
    assert_eq!(drift_lines(&w), below);
    std::fs::remove_file(&systemd).unwrap();
    repaired("a directory replaced by a link", &["switch", "1"]);
    w.assert_root(
        &at(&w, &base, &g1, &MASTER_DIRS, &kept),
        &g1,
        "directory back",
    );

    // A file gone from the active rootfs: a dangling link.
    let scheduler = g1.rootfs.join("etc/kubernetes/scheduler");
    std::fs::set_permissions(
        g1.rootfs.join("etc/kubernetes"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::remove_file(&scheduler).unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: dangling: /etc/kubernetes/scheduler (generation 1's rootfs lacks it; `kbuild switch 2` puts the root on generation 2, the newest other one present)\n"
    );
    w.ok(&["switch", "2"]);
    assert_eq!(drift_lines(&w), "", "after leaving the broken generation");
    // Back to the damaged generation is refused (issue 7, point 7), naming the fix; the fix
    // re-creates its rootfs.
    let r = w.run(&["switch", "1"]);
    r.assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: store object `$SANDBOX/store/{}` was modified after it was added (`etc/kubernetes/scheduler` is missing)\nhelp: run `kbuild verify --repair`: it replaces damaged objects with copies rebuilt from their sources\n",
        g1.object()
    ));
    w.ok(&["verify", "--repair"]);

    // The active rootfs gone from the store.
    w.ok(&["switch", "1"]);
    remove_object(&g1.rootfs);
    assert_eq!(
        drift_lines(&w),
        format!(
            "drift    $SANDBOX/host: the active rootfs `$SANDBOX/store/{}` of generation 1 is missing from the store (`kbuild switch 2` puts the root on generation 2, the newest other one present)\n",
            g1.object()
        )
    );
    w.ok(&["switch", "2"]);
    assert_eq!(drift_lines(&w), "");
    w.assert_root(&at(&w, &base, &g2, &MASTER_DIRS, &kept), &g2, "at 2");
}

// ---------------------------------------------------------------------------------------------
// Review findings: dry runs after a crash, kbuild's own entries of the wrong kind, repairs
// that name the store
// ---------------------------------------------------------------------------------------------

/// The lines of a failed run that say why and what to do (`caused by:` and `help:`), which a
/// dry run and the real command share.
fn reasons(r: &common::Run) -> Vec<String> {
    r.stderr()
        .lines()
        .filter(|l| l.starts_with("  caused by: ") || l.starts_with("help: "))
        .map(str::to_owned)
        .collect()
}

/// For a crash of `switch <crashed>` at every step (from the root `reset` leaves), each of
/// `then` run as `--dry-run` predicts what the real command does: the same exit code and,
/// when refused, the same reason. Returns the number of steps and of refusals.
fn dry_run_agrees_after_every_crash(
    w: &World,
    reset: &[&[&str]],
    crashed: &str,
    then: &[&[&str]],
) -> (u64, usize) {
    let mut refused = 0;
    for n in 1.. {
        assert!(n <= 40, "still crashing at step {n}");
        let mut finished = false;
        for args in then {
            for r in reset {
                w.ok(r);
            }
            let c = w.run_env(&["switch", crashed], &[("KBUILD_FAULT_AT", &n.to_string())]);
            if c.code == Some(0) {
                finished = true;
                break;
            }
            assert_eq!(c.code, None, "{c:?}");
            let when = format!(
                "`switch {crashed}` crashed at step {n}, then `{}`",
                args.join(" ")
            );
            let dry = w.run(&[*args, &["--dry-run"]].concat());
            let real = w.run(args);
            assert_eq!(
                dry.code, real.code,
                "{when}:\n--- dry run\n{}{}--- real\n{}{}",
                dry.stdout, dry.stderr, real.stdout, real.stderr
            );
            assert!(
                dry.code == Some(0) || dry.code == Some(1),
                "{when}: {dry:?}"
            );
            assert_eq!(reasons(&dry), reasons(&real), "{when}");
            assert!(!real.stderr.contains("os error"), "{when}: {}", real.stderr);
            refused += usize::from(real.code != Some(0));
        }
        if finished {
            return (n, refused);
        }
    }
    unreachable!()
}

/// Review finding 2: after a crash of a switch that changes a path's type, `switch X
/// --dry-run` and `switch X` agree, for X the origin, the target, another generation and
/// `rollback`, in both directions, at depth 1 and 3.
#[test]
fn after_a_crash_of_a_type_change_the_dry_run_predicts_the_real_command() {
    let w = World::new();
    w.master_plus(
        "files",
        &[
            ("/etc/kubernetes/addons", "file\n"),
            ("/etc/kb1", "kb1 file\n"),
        ],
    );
    w.master_plus(
        "dirs",
        &[
            ("/etc/kubernetes/addons/dns.yaml", "dns\n"),
            ("/etc/kb1/a/b/c", "c\n"),
        ],
    );
    w.build(&["master"], &[], 1);
    w.build(&["files"], &[], 2);
    w.build(&["dirs"], &[], 3);
    let then: &[&[&str]] = &[
        &["switch", "2"],
        &["switch", "3"],
        &["switch", "1"],
        &["rollback"],
    ];
    let (steps, _) = dry_run_agrees_after_every_crash(&w, &[&["switch", "2"]], "3", then);
    assert_eq!(steps, 12);
    let (steps, _) = dry_run_agrees_after_every_crash(&w, &[&["switch", "3"]], "2", then);
    assert_eq!(steps, 12);
}

/// Review finding 2, the other way: the root on the directories with an adopted original of
/// the path (kept while either generation manages it), a crash of the switch that gives it
/// back; the dry run refuses where the real command refuses.
#[test]
fn after_a_crash_that_restores_an_original_the_dry_run_predicts_the_real_command() {
    let w = World::new();
    w.master_plus("kb1-file", &[("/etc/kb1", "kb1 file\n")]);
    w.master_plus("kb1-dirs", &[("/etc/kb1/a/b/c", "c\n")]);
    w.build(&["master"], &[], 1);
    w.build(&["kb1-file"], &[], 2);
    w.build(&["kb1-dirs"], &[], 3);
    std::fs::write(w.root.join("etc/kb1"), b"ORIG\n").unwrap();
    let then: &[&[&str]] = &[
        &["switch", "3"],
        &["switch", "2"],
        &["switch", "1"],
        &["rollback"],
    ];
    let reset: &[&[&str]] = &[&["switch", "2", "--adopt"], &["switch", "3"]];
    let (steps, refused) = dry_run_agrees_after_every_crash(&w, reset, "1", then);
    assert!(steps > 5 && refused > 0, "{steps} {refused}");
    let reset: &[&[&str]] = &[&["switch", "2", "--adopt"]];
    dry_run_agrees_after_every_crash(&w, reset, "3", then);
}

/// Review findings 1 and 9: kbuild's own entries of the wrong kind (`current` a directory or
/// a file, `state.json` or `journal.json` a directory, `adopted` a symlink or a file) are
/// named, with the fix, by every command before anything is written; `verify --root` reports
/// them; the fix works.
#[test]
fn kbuild_entries_of_the_wrong_kind_are_named_with_a_fix_that_works() {
    let w = World::new();
    w.master_plus("kb1-dirs", &[("/etc/kb1/a/b/c", "c\n")]);
    w.build(&["master"], &[], 1);
    let g2 = w.build(&["kb1-dirs"], &[], 2);
    let base = w.base();
    let l2 = at(
        &w,
        &base,
        &g2,
        &with_master(&["/etc/kb1", "/etc/kb1/a", "/etc/kb1/a/b"]),
        &[],
    );
    w.ok(&["switch", "2"]);
    let dot = w.root.join("etc/.kbuild");
    // Every command refuses with the same reason and changes nothing; verify reports it.
    let check = |what: &str, reason: &[&str]| {
        for args in [
            &["switch", "2"][..],
            &["switch", "1"],
            &["switch", "1", "--dry-run"],
            &["rollback"],
            &["rollback", "--dry-run"],
            &["switch", "2", "--adopt"],
        ] {
            let before = w.listing();
            let r = w.run(args);
            assert_eq!(r.code, Some(1), "{what}: {args:?}: {r:?}");
            assert_eq!(reasons(&r), reason, "{what}: {args:?}");
            assert_listing(
                &w.listing(),
                &before,
                &format!("{what}: {args:?} changed nothing"),
            );
        }
        let (caused, help) = (
            &reason[0]["  caused by: ".len()..],
            &reason[1]["help: ".len()..],
        );
        assert_eq!(
            drift_lines(&w),
            format!("drift    $SANDBOX/host: {caused} ({help})\n"),
            "{what}"
        );
    };
    let entry = |name: &str, kind: &str| {
        format!(
            "  caused by: kbuild's own entry `$SANDBOX/host/etc/.kbuild/{name}` is {kind}, which kbuild never makes; nothing was changed"
        )
    };

    // Finding 1: `current` an empty directory; `rmdir`, then `switch 2`.
    std::fs::remove_file(dot.join("current")).unwrap();
    std::fs::create_dir(dot.join("current")).unwrap();
    check(
        "current a directory",
        &[
            &entry("current", "a directory"),
            "help: remove it (`rmdir $SANDBOX/host/etc/.kbuild/current`), then `kbuild switch 2 --root $SANDBOX/host` puts kbuild's flip point back",
        ],
    );
    std::fs::remove_dir(dot.join("current")).unwrap();
    w.ok(&["switch", "2", "--root", &w.root.display().to_string()]);
    w.assert_root(&l2, &g2, "current back");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");

    // `current` a file: `mv`, then `switch 2`.
    std::fs::remove_file(dot.join("current")).unwrap();
    std::fs::write(dot.join("current"), b"x\n").unwrap();
    check(
        "current a file",
        &[
            &entry("current", "a file"),
            "help: move it away (`mv $SANDBOX/host/etc/.kbuild/current $SANDBOX/host/etc/.kbuild/current.bad`), then `kbuild switch 2 --root $SANDBOX/host` puts kbuild's flip point back",
        ],
    );
    std::fs::rename(dot.join("current"), dot.join("current.bad")).unwrap();
    w.ok(&["switch", "2"]);
    let mut l = l2.clone();
    l.file("etc/.kbuild/current.bad", b"x\n");
    w.assert_root(&l, &g2, "current back");
    std::fs::remove_file(dot.join("current.bad")).unwrap();

    // `journal.json` a directory (holding a file): `mv`, then `switch 2`.
    std::fs::create_dir(dot.join("journal.json")).unwrap();
    std::fs::write(dot.join("journal.json/x"), b"x\n").unwrap();
    check(
        "journal.json a directory",
        &[
            &entry("journal.json", "a directory"),
            "help: move it away (`mv $SANDBOX/host/etc/.kbuild/journal.json $SANDBOX/host/etc/.kbuild/journal.json.bad`), then `kbuild switch N --root $SANDBOX/host` puts the root on generation N (kbuild's links are recognised)",
        ],
    );
    std::fs::remove_dir_all(dot.join("journal.json")).unwrap();
    let r = w.ok(&["switch", "2"]);
    assert_eq!(r.stderr(), "       Fresh generation 2 is already active\n");
    w.assert_root(&l2, &g2, "journal gone");

    // `adopted` a symlink (kbuild never keeps originals behind one) and a file.
    std::fs::create_dir(w.sb.dir.join("elsewhere")).unwrap();
    std::fs::remove_dir(dot.join("adopted")).unwrap();
    std::os::unix::fs::symlink(w.sb.dir.join("elsewhere"), dot.join("adopted")).unwrap();
    check(
        "adopted a symlink",
        &[
            &entry("adopted", "a symlink"),
            "help: move it away (`mv $SANDBOX/host/etc/.kbuild/adopted $SANDBOX/host/etc/.kbuild/adopted.bad`), then run the command again",
        ],
    );
    std::fs::remove_file(dot.join("adopted")).unwrap();
    std::fs::write(dot.join("adopted"), b"x\n").unwrap();
    check(
        "adopted a file",
        &[
            &entry("adopted", "a file"),
            "help: move it away (`mv $SANDBOX/host/etc/.kbuild/adopted $SANDBOX/host/etc/.kbuild/adopted.bad`), then run the command again",
        ],
    );
    std::fs::remove_file(dot.join("adopted")).unwrap();
    w.ok(&["switch", "1"]);
    w.ok(&["switch", "2"]);
    w.assert_root(&l2, &g2, "adopted back");

    // `state.json` a directory: `rmdir`, then `switch 2` records the root again.
    std::fs::remove_file(dot.join("state.json")).unwrap();
    std::fs::create_dir(dot.join("state.json")).unwrap();
    check(
        "state.json a directory",
        &[
            &entry("state.json", "a directory"),
            "help: remove it (`rmdir $SANDBOX/host/etc/.kbuild/state.json`), then `kbuild switch N --root $SANDBOX/host` records the root again on generation N (kbuild's own links are recognised)",
        ],
    );
    std::fs::remove_dir(dot.join("state.json")).unwrap();
    // Without state.json, verify says so, naming the generation the flip point resolves to.
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: /etc/.kbuild/state.json is missing, though kbuild's flip point `current` is there (`kbuild switch 2` records the root again; kbuild's own links are recognised)\n"
    );
    w.ok(&["switch", "2"]);
    w.assert_resolves(&g2, "recorded again");
    assert_eq!(drift_lines(&w), "");
}

/// Review finding 3: an interrupted type change whose target left the store is undone by the
/// next command; its dry run says so (not "unmanaged, in the way" of kbuild's own directory),
/// and a switch to the missing generation is refused by both, naming the repair.
#[test]
fn the_dry_run_of_an_undo_predicts_it_and_a_missing_rootfs_names_its_repair() {
    let w = World::new();
    w.master_plus("addons-file", &[("/etc/kubernetes/addons", "file\n")]);
    w.master_plus(
        "addons-dir",
        &[("/etc/kubernetes/addons/dns.yaml", "dns\n")],
    );
    w.build(&["master"], &[], 1);
    let g2 = w.build(&["addons-file"], &[], 2);
    let g3 = w.build(&["addons-dir"], &[], 3);
    let l2 = at(&w, &w.base(), &g2, &MASTER_DIRS, &[]);
    w.ok(&["switch", "2"]);
    crash(&w, &["switch", "3"], 4, "flip");
    remove_object(&g3.rootfs);
    let journal = w.root.join("etc/.kbuild/journal.json");
    let missing = format!(
        "  caused by: rootfs `$SANDBOX/store/{}` of generation 3 is missing from the store\nhelp: `kbuild verify --repair` re-creates generation 3's rootfs from its sources (or build its recipes again with `kbuild build`); `kbuild generations` lists the others\n",
        g3.object()
    );
    let dry = w.ok(&["switch", "2", "--dry-run"]);
    assert_eq!(
        dry.stdout(),
        format!(
            "root $SANDBOX/host: generation 2 -> generation 2\n  an interrupted switch is undone first (it cannot be completed)\n  prerequisites: 5 present\n{}",
            master_checks("would not run")
        )
    );
    let dry = w.run(&["switch", "--dry-run"]);
    dry.assert_error(&format!(
        "error: cannot plan to switch root `$SANDBOX/host`\n{missing}"
    ));
    assert!(journal.exists(), "the dry runs changed nothing");
    let real = w.run(&["switch"]);
    real.assert_error(&format!(
        "      Undone an interrupted switch, which could not be completed (rootfs `$SANDBOX/store/{}` of generation 3 is missing from the store); the root is back on generation 2\nerror: cannot switch root `$SANDBOX/host`\n{missing}",
        g3.object()
    ));
    w.assert_root(&l2, &g2, "undone");
    let r = w.ok(&["switch", "2"]);
    assert_eq!(r.stderr(), "       Fresh generation 2 is already active\n");
}

/// Review finding 7c: a store moved (no symlink left) while a switch is pending: every repair
/// `verify --root` names carries the `--store` it needs, and running it works.
#[test]
fn every_repair_verify_names_for_a_moved_store_carries_its_store() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    w.build(&["master"], &[], 1);
    w.build(&["extra"], &[], 2);
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 3, "link");
    let moved = w.sb.dir.join("data/store");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(w.store(), &moved).unwrap();
    let root = w.root.to_str().unwrap();
    let v = w.sb.run(w.cmd_store(&moved, &["--root", root, "verify"]));
    assert_eq!(v.code, Some(1), "{v:?}");
    let drift: String = v
        .stdout()
        .lines()
        .filter(|l| l.starts_with("drift"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Either command works: the first completes the switch on its way back to 1.
    assert_eq!(
        drift,
        "drift    $SANDBOX/host: /etc/.kbuild/current points into `$SANDBOX/store`, where the store no longer is (it is at `$SANDBOX/data/store` now): `kbuild switch 1 --store $SANDBOX/data/store --root $SANDBOX/host` re-points it\ndrift    $SANDBOX/host: an interrupted switch from generation 1 to generation 2 is pending (`kbuild switch 2 --store $SANDBOX/data/store` completes it)\n"
    );
    let r =
        w.sb.run(w.cmd_store(&moved, &["--root", root, "switch", "2"]));
    r.assert_success();
    assert!(
        r.stderr().starts_with("   Completed an interrupted switch"),
        "{}",
        r.stderr
    );
    let v = w.sb.run(w.cmd_store(&moved, &["--root", root, "verify"]));
    assert_eq!(v.stdout, "ok\n", "{v:?}");
    // Moved again, a symlink left behind (the links resolve), and a link removed by hand: its
    // repair names the store's new place too, and works.
    std::fs::remove_file(w.root.join("etc/kubernetes/extra")).unwrap();
    let again = w.sb.dir.join("store2");
    std::fs::rename(&moved, &again).unwrap();
    std::os::unix::fs::symlink(&again, &moved).unwrap();
    let v = w.sb.run(w.cmd_store(&again, &["--root", root, "verify"]));
    assert_eq!(
        v.stdout(),
        "drift    $SANDBOX/host: removed: /etc/kubernetes/extra (`kbuild switch 2 --store $SANDBOX/store2` repairs it)\n"
    );
    w.sb.run(w.cmd_store(&again, &["--root", root, "switch", "2"]))
        .assert_success();
    let v = w.sb.run(w.cmd_store(&again, &["--root", root, "verify"]));
    assert_eq!(v.stdout, "ok\n", "{v:?}");
}

/// Review finding 1's loop: an interrupted switch that can be neither completed (a file made
/// by hand in the way) nor undone (its origin gone from the store). The help names only ways
/// that work here — no "neither generation is in the store" — and the one taken works.
#[test]
fn a_wedged_switch_whose_origin_left_the_store_names_ways_that_work() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["extra"], &["--set", "IP=10.0.0.9"], 2);
    let mut base = w.base();
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 2, "flip");
    std::fs::write(w.root.join("etc/kubernetes/extra"), b"by hand\n").unwrap();
    base.file("etc/kubernetes/extra", b"by hand\n");
    remove_object(&g1.rootfs);
    let wedged = format!(
        "  caused by: cannot complete the interrupted switch from generation 1 to generation 2 (`$SANDBOX/host/etc/kubernetes/extra` is in the way: kbuild's link goes there), nor undo it (rootfs `$SANDBOX/store/{}` of generation 1 is missing from the store)\nhelp: move `$SANDBOX/host/etc/kubernetes/extra` away, then `kbuild switch 2` completes it; or `kbuild verify --repair` re-creates generation 1's rootfs, then `kbuild switch 1` undoes it\n",
        g1.object()
    );
    for args in [
        &["switch", "2"][..],
        &["switch", "1", "--dry-run"],
        &["rollback"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert!(r.stderr().ends_with(&wedged), "{args:?}: {}", r.stderr());
    }
    // The second way: re-create generation 1, then undo.
    let r = w.run(&["verify", "--repair"]);
    assert!(r.stderr().contains("     Rebuilt "), "{r:?}");
    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stderr().starts_with("      Undone an interrupted switch"),
        "{}",
        r.stderr()
    );
    w.assert_root(&at(&w, &base, &g1, &MASTER_DIRS, &[]), &g1, "undone");
    let _ = g2;
}

/// Review finding 1 with a switch pending: the flip point replaced by a directory after a
/// crash. Every command names it (no journal is written, nothing loops); once it is removed,
/// the next switch completes the interrupted one.
#[test]
fn a_flip_point_made_a_directory_mid_switch_is_named_and_recovery_then_completes() {
    let w = World::new();
    w.master_plus("kb1-dirs", &[("/etc/kb1/a/b/c", "c\n")]);
    w.build(&["master"], &[], 1);
    let g2 = w.build(&["kb1-dirs"], &[], 2);
    let l2 = at(
        &w,
        &w.base(),
        &g2,
        &with_master(&["/etc/kb1", "/etc/kb1/a", "/etc/kb1/a/b"]),
        &[],
    );
    w.ok(&["switch", "1"]);
    crash(&w, &["switch", "2"], 5, "flip");
    let current = w.root.join("etc/.kbuild/current");
    let journal = std::fs::read(w.root.join("etc/.kbuild/journal.json")).unwrap();
    std::fs::remove_file(&current).unwrap();
    std::fs::create_dir(&current).unwrap();
    let reason = [
        "  caused by: kbuild's own entry `$SANDBOX/host/etc/.kbuild/current` is a directory, which kbuild never makes; nothing was changed",
        "help: remove it (`rmdir $SANDBOX/host/etc/.kbuild/current`), then `kbuild switch 1 --root $SANDBOX/host` puts kbuild's flip point back",
    ];
    for args in [
        &["switch", "2"][..],
        &["switch", "2", "--dry-run"],
        &["switch", "1"],
        &["rollback"],
        &["verify"],
    ] {
        let r = w.run(args);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        if args[0] == "verify" {
            assert_eq!(
                r.stdout(),
                format!(
                    "drift    $SANDBOX/host: {} ({})\n",
                    &reason[0]["  caused by: ".len()..],
                    &reason[1]["help: ".len()..]
                )
            );
        } else {
            assert_eq!(reasons(&r), reason, "{args:?}");
        }
        assert_eq!(
            std::fs::read(w.root.join("etc/.kbuild/journal.json")).unwrap(),
            journal,
            "{args:?} left the journal as it was"
        );
    }
    std::fs::remove_dir(&current).unwrap();
    let r = w.ok(&["switch", "1", "--root", w.root.to_str().unwrap()]);
    assert!(
        r.stderr().starts_with("   Completed an interrupted switch"),
        "{}",
        r.stderr()
    );
    w.ok(&["switch", "2"]);
    w.assert_root(&l2, &g2, "completed, then at 2");
    assert_eq!(drift_lines(&w), "");
}

/// Review finding 9: a managed link replaced by a directory made by hand is reported as a
/// directory (not "replaced by a file"), and the repair verify names keeps it whole.
#[test]
fn a_link_replaced_by_a_hand_made_directory_is_reported_as_one() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let base = w.base();
    w.ok(&["switch", "1"]);
    let p = w.root.join("etc/kubernetes/scheduler");
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("mine"), b"mine\n").unwrap();
    assert_eq!(
        drift_lines(&w),
        "drift    $SANDBOX/host: replaced by a directory: /etc/kubernetes/scheduler (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/scheduler and puts kbuild's link back)\n"
    );
    w.ok(&["switch", "1", "--adopt"]);
    let mut l1 = at(
        &w,
        &base,
        &g1,
        &MASTER_DIRS,
        &[("/etc/kubernetes/scheduler", Item::Dir)],
    );
    l1.file(
        "etc/.kbuild/adopted/etc/kubernetes/scheduler/mine",
        b"mine\n",
    );
    w.assert_root(&l1, &g1, "adopted whole");
    assert_eq!(drift_lines(&w), "");
}
