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
        "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: master -> no-config\n  prerequisites: 0 present\n  change  /etc/kubernetes/scheduler\n  remove  /etc/kubernetes/apiserver\n  remove  /etc/kubernetes/controller-manager\n  remove  /etc/systemd/system/kube-apiserver.service\n  remove  /etc/systemd/system/kube-controller-manager.service\n  remove  /etc/systemd/system/kube-scheduler.service\n  remove  /usr/local/bin/kube-apiserver\n  remove  /usr/local/bin/kube-controller-manager\n  remove  /usr/local/bin/kube-proxy\n  remove  /usr/local/bin/kube-scheduler\n  remove  /usr/local/bin/kubectl\n  remove  /usr/local/bin/kubelet\n  leave   /etc/kubernetes/config (replaced by hand; no longer managed, left as it is)\n  cannot restore /etc/kubernetes/config: a file made by hand is in the way of the original kept in /etc/.kbuild/adopted/etc/kubernetes/config\n  stop    kube-apiserver.service (removed)\n  stop    kube-controller-manager.service (removed)\n  stop    kube-scheduler.service (removed)\nunit actions (would run: root is not `/`):\n  systemctl stop kube-apiserver.service\n  systemctl disable kube-apiserver.service\n  systemctl stop kube-controller-manager.service\n  systemctl disable kube-controller-manager.service\n  systemctl stop kube-scheduler.service\n  systemctl disable kube-scheduler.service\n  systemctl daemon-reload\n"
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
        "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: extra -> master\n  prerequisites: 5 present\n  leave   /etc/kubernetes/extra (replaced by hand; no longer managed, left as it is)\n"
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
            "restore",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "rmdir",
            "state written"
        ]
    );
}
