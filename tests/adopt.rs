//! Adopted originals are never lost: a kept original stays recorded until it is back in
//! place, renames into `adopted/` never replace what the disk holds, a restore that a file
//! made by hand blocks stops the switch before anything changes (naming both files and the
//! ways out), and the plan prints only what will happen.

mod common;

use common::world::*;

const ORIGINAL: &[u8] =
    b"# the host's own config\nKUBE_MASTER=\"--master=http://127.0.0.1:8080\"\n";
const KEPT: &str = "etc/.kbuild/adopted/etc/kubernetes/config";

/// A world whose root holds the host's own /etc/kubernetes/config; generation 1 is master
/// (which manages it), generation 2 manages only the scheduler file.
fn world() -> (World, Listing, Gen, Gen) {
    let w = World::new();
    std::fs::write(w.root.join("etc/kubernetes/config"), ORIGINAL).unwrap();
    let with_original = w.base();
    let g1 = w.build(&["master"], &[], 1);
    w.sb.write_recipe(
        "no-config",
        "[files.\"/etc/kubernetes/scheduler\"]\ntext = \"KUBE_SCHEDULER_ARGS=\\\"\\\"\\n\"\n",
    );
    let g2 = w.build(&["no-config"], &[], 2);
    assert!(!g2.managed().contains("/etc/kubernetes/config"));
    (w, with_original, g1, g2)
}

/// The root at generation 1 with the original adopted.
fn adopted_at_1(w: &World, with_original: &Listing, g1: &Gen) -> Listing {
    let mut without = with_original.clone();
    without.remove("etc/kubernetes/config");
    w.expect(
        &without,
        g1,
        &MASTER_DIRS,
        &[("/etc/kubernetes/config", ORIGINAL)],
    )
}

/// The root at generation 2 with the original back in place (`extra`: files the test made).
fn restored_at_2(w: &World, with_original: &Listing, g2: &Gen, extra: &[(&str, &[u8])]) -> Listing {
    let mut l = w.expect(with_original, g2, &[], &[]);
    for (p, b) in extra {
        l.file(p, b);
    }
    l
}

/// The example of the issue: the original adopted by `switch 1 --adopt`, then kbuild's link
/// replaced by hand with file B. `switch 2` (which no longer manages the path) must neither
/// drop the original nor pretend to restore it.
#[test]
fn a_restore_blocked_by_a_hand_made_file_stops_before_changing_anything() {
    let (w, with_original, g1, g2) = world();
    w.ok(&["switch", "1", "--adopt"]);
    w.assert_root(&adopted_at_1(&w, &with_original, &g1), &g1, "adopted");
    let config = w.root.join("etc/kubernetes/config");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, b"B, made by hand\n").unwrap();
    let before = full_listing(&w.root);
    let store_before = full_listing(&w.sb.store);

    let refusal = "  caused by: the original of `$SANDBOX/host/etc/kubernetes/config` adopted earlier cannot be restored: `$SANDBOX/host/etc/kubernetes/config` was made by hand and is in the way of the kept original `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config`; nothing was changed\nhelp: move the hand-made `$SANDBOX/host/etc/kubernetes/config` away (e.g. `mv $SANDBOX/host/etc/kubernetes/config $SANDBOX/host/etc/kubernetes/config.local`) and run the command again: the original comes back; or, to give up the original, delete `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config` first\n";
    // The plan says what would happen: no restore, no removal.
    let dry = w.run(&["switch", "2", "--dry-run"]);
    assert_eq!(dry.code, Some(1), "{dry:?}");
    assert_eq!(
        dry.stdout(),
        "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: master -> no-config\n  prerequisites: 0 present\n  change  /etc/kubernetes/scheduler\n  remove  /etc/kubernetes/apiserver\n  remove  /etc/kubernetes/controller-manager\n  remove  /etc/systemd/system/kube-apiserver.service\n  remove  /etc/systemd/system/kube-controller-manager.service\n  remove  /etc/systemd/system/kube-scheduler.service\n  remove  /etc/systemd/system/multi-user.target.wants/kube-apiserver.service\n  remove  /etc/systemd/system/multi-user.target.wants/kube-controller-manager.service\n  remove  /etc/systemd/system/multi-user.target.wants/kube-scheduler.service\n  remove  /usr/local/bin/kube-apiserver\n  remove  /usr/local/bin/kube-controller-manager\n  remove  /usr/local/bin/kube-proxy\n  remove  /usr/local/bin/kube-scheduler\n  remove  /usr/local/bin/kubectl\n  remove  /usr/local/bin/kubelet\n  leave   /etc/kubernetes/config (replaced by hand; no longer managed, left as it is)\n  cannot restore /etc/kubernetes/config: a file made by hand is in the way of the original kept in /etc/.kbuild/adopted/etc/kubernetes/config\n  stop    kube-apiserver.service (removed)\n  stop    kube-controller-manager.service (removed)\n  stop    kube-scheduler.service (removed)\nunit actions (would run: root is not `/`):\n  systemctl stop kube-apiserver.service\n  systemctl stop kube-controller-manager.service\n  systemctl stop kube-scheduler.service\n  systemctl daemon-reload\n"
    );
    assert_eq!(
        dry.stderr(),
        format!("error: a switch of root `$SANDBOX/host` would be refused\n{refusal}")
    );
    w.run(&["switch", "2"]).assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n{refusal}"
    ));
    assert_eq!(
        full_listing(&w.root),
        before,
        "the refused switch changed the root"
    );
    assert_eq!(full_listing(&w.sb.store), store_before);

    // A later `switch 1 --adopt` never moves B over A.
    w.run(&["switch", "1", "--adopt"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: `/etc/kubernetes/config` was replaced by hand, and an earlier original of it is already kept in `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config`\nhelp: kbuild keeps one original per path: move the hand-made `$SANDBOX/host/etc/kubernetes/config` away (e.g. `mv $SANDBOX/host/etc/kubernetes/config $SANDBOX/host/etc/kubernetes/config.local`) and run the command again; or, to give up the kept original, delete `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config` and run the command again with `--adopt`\n",
    );
    assert_eq!(full_listing(&w.root), before);

    // The way out the help names: B moved away, then the switch restores A.
    std::fs::rename(&config, w.root.join("etc/kubernetes/config.local")).unwrap();
    let r = w.ok(&["switch", "2"]);
    assert!(
        r.stdout
            .contains("  restore /etc/kubernetes/config (the original adopted earlier)\n"),
        "{}",
        r.stdout
    );
    w.assert_root(
        &restored_at_2(
            &w,
            &with_original,
            &g2,
            &[("etc/kubernetes/config.local", b"B, made by hand\n")],
        ),
        &g2,
        "restored",
    );
    assert_eq!(std::fs::read(&config).unwrap(), ORIGINAL);
}

/// The other way out: the kept original deleted on purpose. The switch then says it forgets
/// it, leaves the hand-made file, and goes on.
#[test]
fn deleting_the_kept_original_gives_it_up_and_the_plan_says_so() {
    let (w, with_original, g1, g2) = world();
    w.ok(&["switch", "1", "--adopt"]);
    w.assert_root(&adopted_at_1(&w, &with_original, &g1), &g1, "adopted");
    let config = w.root.join("etc/kubernetes/config");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, b"B\n").unwrap();
    std::fs::remove_file(w.root.join(KEPT)).unwrap();
    let r = w.ok(&["switch", "2"]);
    assert!(
        r.stdout.contains(
            "  leave   /etc/kubernetes/config (replaced by hand; no longer managed, left as it is)\n  forget  /etc/kubernetes/config (its original, kept in /etc/.kbuild/adopted/etc/kubernetes/config, is gone)\n"
        ),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("restore"), "{}", r.stdout);
    let expected = restored_at_2(
        &w,
        &with_original,
        &g2,
        &[("etc/kubernetes/config", b"B\n")],
    );
    w.assert_root(&expected, &g2, "given up");
}

/// What the disk holds in `adopted/` counts, recorded or not: an original kept there by an
/// earlier kbuild (or by hand) is never replaced, and `--adopt` says why it stops.
#[test]
fn adopting_never_replaces_a_file_kept_on_disk_even_unrecorded() {
    let (w, _, _, _) = world();
    std::fs::create_dir_all(w.root.join(KEPT).parent().unwrap()).unwrap();
    std::fs::write(w.root.join(KEPT), b"A, kept earlier\n").unwrap();
    let before = full_listing(&w.root);
    w.run(&["switch", "1", "--adopt"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: `/etc/kubernetes/config` was replaced by hand, and an earlier original of it is already kept in `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config`\nhelp: kbuild keeps one original per path: move the hand-made `$SANDBOX/host/etc/kubernetes/config` away (e.g. `mv $SANDBOX/host/etc/kubernetes/config $SANDBOX/host/etc/kubernetes/config.local`) and run the command again; or, to give up the kept original, delete `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config` and run the command again with `--adopt`\n",
    );
    assert_eq!(full_listing(&w.root), before);
    assert_eq!(
        std::fs::read(w.root.join(KEPT)).unwrap(),
        b"A, kept earlier\n"
    );
}

/// A link of a path the new generation drops, replaced by hand (nothing adopted): the plan
/// says it is left as it is, not removed, and it is.
#[test]
fn a_dropped_path_replaced_by_hand_is_left_and_the_plan_says_so() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    w.build(&["extra"], &[], 1);
    let g2 = w.build(&["master"], &[], 2);
    let base = w.base();
    w.ok(&["switch", "1"]);
    let extra = w.root.join("etc/kubernetes/extra");
    std::fs::remove_file(&extra).unwrap();
    std::os::unix::fs::symlink("/opt/extra", &extra).unwrap();
    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: extra -> master\n  prerequisites: 5 present\n  leave   /etc/kubernetes/extra (replaced by hand; no longer managed, left as it is)\n{}",
            master_checks("not run")
        )
    );
    let mut expected = w.expect(&base, &g2, &MASTER_DIRS, &[]);
    expected.link("etc/kubernetes/extra", "/opt/extra");
    w.assert_root(&expected, &g2, "left");
}

/// A crash at every step of the switch that restores an original: the original is in exactly
/// one place, whole, and recorded (by the state or the journal's origin) while it is kept; the
/// next command brings it back.
#[test]
fn a_crash_at_every_step_of_a_restore_keeps_the_original_recorded() {
    let (w, with_original, g1, g2) = world();
    let l1 = adopted_at_1(&w, &with_original, &g1);
    let l2 = restored_at_2(&w, &with_original, &g2, &[]);
    let mut steps = Vec::new();
    for n in 1.. {
        w.ok(&["switch", "1", "--adopt"]);
        w.assert_root(&l1, &g1, "at 1");
        let when = format!("crash at step {n}");
        let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", &n.to_string())]);
        if r.code == Some(0) {
            w.assert_root(&l2, &g2, "ran to the end");
            break;
        }
        assert!(n <= 40, "still crashing at step {n}");
        assert_eq!(r.code, None, "{when}: {r:?}");
        steps.push(fault_step(&r, n));

        let at_path = std::fs::symlink_metadata(w.root.join("etc/kubernetes/config"))
            .is_ok_and(|m| m.is_file());
        let kept = w.root.join(KEPT).is_file();
        assert!(at_path ^ kept, "{when}: at its path {at_path}, kept {kept}");
        let bytes = std::fs::read(if kept {
            w.root.join(KEPT)
        } else {
            w.root.join("etc/kubernetes/config")
        })
        .unwrap();
        assert_eq!(bytes, ORIGINAL, "{when}");
        if kept {
            let journal: serde_json::Value = serde_json::from_slice(
                &std::fs::read(w.root.join("etc/.kbuild/journal.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(
                journal["from"]["adopted"],
                serde_json::json!(["/etc/kubernetes/config"]),
                "{when}: the kept original is not recorded"
            );
        }
        w.ok(&["switch", "2"]);
        w.assert_root(&l2, &g2, &format!("{when}, then `switch 2`"));
    }
    assert_eq!(
        steps,
        [
            "journal written",
            "unlink",
            "flip",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            "unlink",
            // The three enablement links (multi-user.target.wants/) and their directory.
            "unlink",
            "unlink",
            "unlink",
            "restore",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "state written"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A lost or stale record (state.json or journal.json moved away), and hand-made files where a
// directory goes. Generation 1 is master, 2 adds the file /etc/kb1, 3 the file
// /etc/kb1/a/b/c (so /etc/kb1 is a directory); ORIG is the host's own /etc/kb1.
// ---------------------------------------------------------------------------------------------

const ORIG: &[u8] = b"ORIG, made by hand\n";

struct Kb {
    w: World,
    /// On generation 1 with ORIG in place.
    l1: Listing,
    /// On generation 2, ORIG kept in adopted/.
    l2: Listing,
    /// On generation 3, ORIG kept in adopted/, /etc/kb1 a directory kbuild made.
    l3: Listing,
    g1: Gen,
    g2: Gen,
    g3: Gen,
}

fn kb_world() -> Kb {
    let w = World::new();
    w.master_plus("e1f", &[("/etc/kb1", "kb1 file\n")]);
    w.master_plus("e1d", &[("/etc/kb1/a/b/c", "kb1 deep\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["e1f"], &[], 2);
    let g3 = w.build(&["e1d"], &[], 3);
    std::fs::write(w.root.join("etc/kb1"), ORIG).unwrap();
    let base = w.base();
    let l1 = w.expect(&base, &g1, &MASTER_DIRS, &[]);
    let l2 = w.expect(&base, &g2, &MASTER_DIRS, &[("/etc/kb1", ORIG)]);
    let mut without = base.clone();
    without.remove("etc/kb1");
    let dirs3: Vec<&str> = MASTER_DIRS
        .iter()
        .copied()
        .chain(["/etc/kb1", "/etc/kb1/a", "/etc/kb1/a/b"])
        .collect();
    let mut l3 = w.expect(&without, &g3, &dirs3, &[]);
    l3.file("etc/.kbuild/adopted/etc/kb1", ORIG);
    l3.file(
        "etc/.kbuild/state.json",
        state_json(&w.store(), &g3, &g3.managed(), &dirs3, &["/etc/kb1"]).as_bytes(),
    );
    // The normal way there and back.
    w.ok(&["switch", "1"]);
    w.assert_root(&l1, &g1, "on 1");
    w.ok(&["switch", "2", "--adopt"]);
    w.assert_root(&l2, &g2, "on 2");
    w.ok(&["switch", "3"]);
    w.assert_root(&l3, &g3, "on 3");
    w.ok(&["switch", "1"]);
    w.assert_root(&l1, &g1, "back on 1");
    Kb {
        w,
        l1,
        l2,
        l3,
        g1,
        g2,
        g3,
    }
}

impl Kb {
    /// Every generation is reachable, and ORIG comes back on 1.
    #[track_caller]
    fn all_reachable(&self, extra: &[(&str, &[u8])], when: &str) {
        let with = |l: &Listing| {
            let mut l = l.clone();
            for (p, b) in extra {
                l.file(p, b);
            }
            l
        };
        let w = &self.w;
        w.ok(&["switch", "1"]);
        w.assert_root(&with(&self.l1), &self.g1, &format!("{when}: switch 1"));
        assert_eq!(std::fs::read(w.root.join("etc/kb1")).unwrap(), ORIG);
        w.ok(&["switch", "2", "--adopt"]);
        w.assert_root(&with(&self.l2), &self.g2, &format!("{when}: switch 2"));
        w.ok(&["switch", "3"]);
        w.assert_root(&with(&self.l3), &self.g3, &format!("{when}: switch 3"));
        w.ok(&["switch", "1"]);
        w.assert_root(
            &with(&self.l1),
            &self.g1,
            &format!("{when}: switch 1 again"),
        );
        assert_eq!(w.run(&["verify"]).code, Some(0), "{when}: verify");
    }
}

/// Review finding 4: a corrupt state.json moved away as its help says; the next `switch 2`
/// rebuilds the record from the disk (kbuild's links, its directories, ORIG in adopted/, the
/// generation of the flip point): no `change`, no `start`, and ORIG comes back on `switch 1`.
#[test]
fn a_corrupt_state_moved_away_is_rebuilt_from_the_disk_and_no_original_is_stranded() {
    let k = kb_world();
    let w = &k.w;
    w.ok(&["switch", "2", "--adopt"]);
    let state = w.root.join("etc/.kbuild/state.json");
    std::fs::write(&state, b"x\n").unwrap();
    let r = w.run(&["switch", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr().ends_with("help: move it away (`mv $SANDBOX/host/etc/.kbuild/state.json $SANDBOX/host/etc/.kbuild/state.json.bad`), then `kbuild switch N` records the root again on generation N (kbuild's own links, its directories and the originals kept in /etc/.kbuild/adopted are recognised; nothing else is replaced)\n"),
        "{}",
        r.stderr()
    );
    std::fs::rename(&state, w.sb.dir.join("state.json.bad")).unwrap();
    // Without a record, verify names the kept original and the switch that records it.
    assert_eq!(
        w.run(&["verify"])
            .stdout()
            .lines()
            .filter(|l| l.starts_with("drift"))
            .collect::<Vec<_>>(),
        [
            "drift    $SANDBOX/host: unrecorded original: /etc/.kbuild/adopted/etc/kb1 (kept for /etc/kb1; no record names it: `kbuild switch 2` records it again, and it comes back once kbuild no longer manages /etc/kb1)",
            "drift    $SANDBOX/host: /etc/.kbuild/state.json is missing, though kbuild's flip point `current` is there (`kbuild switch 2` records the root again; kbuild's own links are recognised)"
        ]
    );
    let dry = w.ok(&["switch", "2", "--dry-run"]);
    let plan = "root $SANDBOX/host: generation 2 -> generation 2\n  prerequisites: 5 present\n  record  the root's state again (rebuilt from the disk: kbuild's links, the directories holding only them, the originals in /etc/.kbuild/adopted)\n  keep    /etc/kb1 (original found in /etc/.kbuild/adopted/etc/kb1, recorded again)\n";
    assert_eq!(
        dry.stdout(),
        format!("{plan}{}", master_checks("would not run"))
    );
    let r = w.ok(&["switch", "2"]);
    assert_eq!(r.stdout(), format!("{plan}{}", master_checks("not run")));
    w.assert_root(&k.l2, &k.g2, "recorded again");
    k.all_reachable(&[], "after the record was rebuilt on 2");
}

/// Review finding 4, on generation 3: the record lost while /etc/kb1 is kbuild's directory
/// and ORIG is kept. `switch 3` writes back exactly the record that was lost.
#[test]
fn a_lost_state_on_a_type_changed_path_is_rebuilt_exactly() {
    let k = kb_world();
    let w = &k.w;
    w.ok(&["switch", "2", "--adopt"]);
    w.ok(&["switch", "3"]);
    w.assert_root(&k.l3, &k.g3, "on 3");
    std::fs::remove_file(w.root.join("etc/.kbuild/state.json")).unwrap();
    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout().contains("drift    $SANDBOX/host: unrecorded original: /etc/.kbuild/adopted/etc/kb1 (kept for /etc/kb1; no record names it: `kbuild switch 3` records it again, and it comes back once kbuild no longer manages /etc/kb1)\n"), "{}", r.stdout());
    let r = w.ok(&["switch", "3"]);
    assert!(
        !r.stdout.contains("change") && !r.stdout.contains("start"),
        "{}",
        r.stdout
    );
    w.assert_root(&k.l3, &k.g3, "recorded again");
    // Straight to 2 and 1 from the rebuilt record, too.
    std::fs::remove_file(w.root.join("etc/.kbuild/state.json")).unwrap();
    w.ok(&["switch", "2"]);
    w.assert_root(&k.l2, &k.g2, "2 from a lost record on 3");
    std::fs::remove_file(w.root.join("etc/.kbuild/state.json")).unwrap();
    let r = w.ok(&["rollback"]);
    assert!(
        r.stdout
            .contains("  restore /etc/kb1 (the original adopted earlier)\n"),
        "{}",
        r.stdout
    );
    w.assert_root(&k.l1, &k.g1, "rollback from a lost record on 2");
    k.all_reachable(&[], "after the record was rebuilt on 3");
}

/// Review finding 5, at every step: the switch 2 -> 3 cut short, its journal corrupt and moved
/// away as the help says. `switch 3` then finishes from what the disk holds (kbuild's
/// directory /etc/kb1 is kbuild's), and ORIG comes back on `switch 1`.
#[test]
fn a_journal_moved_away_at_every_step_forgets_nothing_kbuild_made() {
    let k = kb_world();
    let w = &k.w;
    let journal = w.root.join("etc/.kbuild/journal.json");
    for n in 1.. {
        w.ok(&["switch", "2", "--adopt"]);
        w.assert_root(&k.l2, &k.g2, "on 2");
        let when = format!("crash at step {n}");
        let r = w.run_env(&["switch", "3"], &[("KBUILD_FAULT_AT", &n.to_string())]);
        if r.code == Some(0) {
            w.assert_root(&k.l3, &k.g3, "ran to the end");
            w.ok(&["switch", "1"]);
            break;
        }
        assert!(n <= 40, "still crashing at step {n}");
        assert_eq!(r.code, None, "{when}: {r:?}");
        let bytes = std::fs::read(&journal).unwrap();
        std::fs::write(&journal, &bytes[..30]).unwrap();
        let r = w.run(&["switch", "3"]);
        assert_eq!(r.code, Some(1), "{when}: {r:?}");
        std::fs::rename(&journal, w.sb.dir.join("journal.json.bad")).unwrap();
        // kbuild's directory /etc/kb1 is never called hand-made.
        let v = w.run(&["verify"]);
        assert!(
            !v.stdout.contains("replaced by a file"),
            "{when}: {}",
            v.stdout
        );
        let r = w.run(&["switch", "3"]);
        assert_eq!(r.code, Some(0), "{when}: {r:?}");
        assert!(!r.stdout.contains("leave"), "{when}: {}", r.stdout);
        w.assert_root(&k.l3, &k.g3, &format!("{when}, then `switch 3`"));
        w.ok(&["switch", "1"]);
        w.assert_root(&k.l1, &k.g1, &format!("{when}, then `switch 1`"));
    }
    k.all_reachable(&[], "after every crash");
}

/// Review finding 6: a hand-made file where the new generation needs a directory. Refused
/// without `--adopt` (naming it, offering `--adopt`); with it, kept in adopted/ and restored
/// once no longer in the way — the very root the way through generation 2 gives.
#[test]
fn adopt_keeps_a_hand_made_file_where_a_directory_goes() {
    let k = kb_world();
    let w = &k.w;
    let before = full_listing(&w.root);
    w.run(&["switch", "3"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /etc/kb1\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(full_listing(&w.root), before);
    let dry = w.ok(&["switch", "3", "--adopt", "--dry-run"]);
    assert_eq!(
        dry.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 3\n  recipes: master -> e1d\n  prerequisites: 5 present\n  adopt   /etc/kb1 (original kept in /etc/.kbuild/adopted/etc/kb1)\n  add     /etc/kb1/a/b/c\n{}",
            master_checks("would not run")
        )
    );
    assert_eq!(full_listing(&w.root), before);
    w.ok(&["switch", "3", "--adopt"]);
    w.assert_root(&k.l3, &k.g3, "adopted where a directory goes");
    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stdout
            .contains("  restore /etc/kb1 (the original adopted earlier)\n"),
        "{}",
        r.stdout
    );
    w.assert_root(&k.l1, &k.g1, "restored");
    k.all_reachable(&[], "after adopting where a directory goes");
}

/// Of the same kind, deeper: the host's directory /etc/kb1 holds a file `a` where generation 3
/// needs the directory /etc/kb1/a; and a crash at every step of that adopting switch.
#[test]
fn adopt_keeps_a_deeper_hand_made_file_where_a_directory_goes_at_every_crash() {
    let k = kb_world();
    let w = &k.w;
    std::fs::remove_file(w.root.join("etc/kb1")).unwrap();
    std::fs::create_dir(w.root.join("etc/kb1")).unwrap();
    std::fs::write(w.root.join("etc/kb1/a"), b"A\n").unwrap();
    let on1 = w.listing();
    let mut on3 = w.expect(&on1, &k.g3, &MASTER_DIRS, &[]);
    on3.remove("etc/kb1/a");
    on3.dir("etc/kb1/a");
    on3.dir("etc/kb1/a/b");
    on3.link("etc/kb1/a/b/c", &link_text("/etc/kb1/a/b/c"));
    on3.file("etc/.kbuild/adopted/etc/kb1/a", b"A\n");
    let dirs: Vec<&str> = MASTER_DIRS
        .iter()
        .copied()
        .chain(["/etc/kb1/a", "/etc/kb1/a/b"])
        .collect();
    on3.file(
        "etc/.kbuild/state.json",
        state_json(&w.store(), &k.g3, &k.g3.managed(), &dirs, &["/etc/kb1/a"]).as_bytes(),
    );
    for n in 1.. {
        let when = format!("crash at step {n}");
        let r = w.run_env(
            &["switch", "3", "--adopt"],
            &[("KBUILD_FAULT_AT", &n.to_string())],
        );
        if r.code != Some(0) {
            assert!(n <= 40, "still crashing at step {n}");
            assert_eq!(r.code, None, "{when}: {r:?}");
            // The original is whole, in exactly one place.
            let kept = w.root.join("etc/.kbuild/adopted/etc/kb1/a");
            let at = w.root.join("etc/kb1/a");
            let bytes = std::fs::read(&kept)
                .or_else(|_| std::fs::read(&at))
                .unwrap();
            assert_eq!(bytes, b"A\n", "{when}");
            w.ok(&["switch", "3"]);
        }
        w.assert_root(&on3, &k.g3, &when);
        w.ok(&["switch", "1"]);
        assert_listing(&w.listing(), &on1, &format!("{when}: back on 1"));
        if r.code == Some(0) {
            break;
        }
    }
}

/// Review finding 7a: `rollback` takes `--adopt`, as its refusals suggest.
#[test]
fn rollback_takes_adopt_as_its_help_says() {
    let k = kb_world();
    let w = &k.w;
    // On 3 without ORIG; a hand-made file in kbuild's directory /etc/kb1/a/b.
    std::fs::remove_file(w.root.join("etc/kb1")).unwrap();
    w.ok(&["switch", "3"]);
    std::fs::write(w.root.join("etc/kb1/a/b/hand"), b"H\n").unwrap();
    let r = w.run(&["rollback"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr().contains("pass `--adopt`"), "{}", r.stderr());
    w.ok(&["rollback", "--adopt", "--dry-run"]);
    w.ok(&["rollback", "--adopt"]);
    assert_eq!(
        std::fs::read(w.root.join("etc/.kbuild/adopted/etc/kb1/a/b/hand")).unwrap(),
        b"H\n"
    );
}

/// Review finding 7b: the original of a path is kept and kbuild's link was replaced by hand.
/// The refusal does not suggest `--adopt` (it would be refused) but the ways that work, and
/// each works.
#[test]
fn a_path_whose_original_is_kept_is_never_offered_adopt() {
    let (w, with_original, g1, _g2) = world();
    w.ok(&["switch", "1", "--adopt"]);
    let config = w.root.join("etc/kubernetes/config");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, b"B\n").unwrap();
    let before = full_listing(&w.root);
    let refusal = "  caused by: `/etc/kubernetes/config` was replaced by hand, and an earlier original of it is already kept in `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config`\nhelp: kbuild keeps one original per path: move the hand-made `$SANDBOX/host/etc/kubernetes/config` away (e.g. `mv $SANDBOX/host/etc/kubernetes/config $SANDBOX/host/etc/kubernetes/config.local`) and run the command again; or, to give up the kept original, delete `$SANDBOX/host/etc/.kbuild/adopted/etc/kubernetes/config` and run the command again with `--adopt`\n";
    w.run(&["switch", "1"]).assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n{refusal}"
    ));
    w.run(&["switch", "1", "--adopt"]).assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n{refusal}"
    ));
    assert_eq!(full_listing(&w.root), before);
    // The first way out: the hand-made file moved away; kbuild's link comes back.
    std::fs::rename(&config, w.root.join("etc/kubernetes/config.local")).unwrap();
    w.ok(&["switch", "1"]);
    let mut l = adopted_at_1(&w, &with_original, &g1);
    l.file("etc/kubernetes/config.local", b"B\n");
    w.assert_root(&l, &g1, "link back");
    // The second: the kept original given up, the hand-made file adopted instead.
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, b"C\n").unwrap();
    std::fs::remove_file(w.root.join(KEPT)).unwrap();
    w.ok(&["switch", "1", "--adopt"]);
    assert_eq!(std::fs::read(w.root.join(KEPT)).unwrap(), b"C\n");
    assert_eq!(w.run(&["verify"]).code, Some(0));
}
