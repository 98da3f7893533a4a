//! End-to-end activation: `kbuild switch`, `rollback`, `generations`, `diff`, `gc` and
//! `verify` driving the real binary against temp roots (never the host's `/`).
//!
//! Every world is a sandbox (recipes, store, lock file) whose kubernetes-server input is a
//! local `file://` copy of the fixture, pinned in the lock file, plus a temp root
//! (`$SANDBOX/host`) holding the master's host prerequisites. Root listings are exact: every
//! path below the root with its type, a symlink's target text and a file's bytes.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::world::*;
use common::*;

// ---------------------------------------------------------------------------------------------
// 1. switch → rollback → switch N round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn switch_rollback_and_switch_n_round_trip() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    let g3 = w.build(&["extra"], &[], 3);
    let master: BTreeSet<String> = MASTER_PATHS.iter().map(|p| p.to_string()).collect();
    assert_eq!(g1.managed(), master);
    assert_eq!(g2.managed(), master);
    let mut with_extra = master.clone();
    with_extra.insert("/etc/kubernetes/extra".into());
    assert_eq!(g3.managed(), with_extra);
    assert!(
        String::from_utf8(g2.bytes("/etc/kubernetes/apiserver"))
            .unwrap()
            .contains("https://10.0.0.2:2379")
    );

    let base = w.base();
    let at = |g: &Gen| w.expect(&base, g, &MASTER_DIRS, &[]);
    w.assert_generations(&[1, 2, 3], None);

    // `switch` without a number: the newest.
    let r = w.ok(&["switch"]);
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 3\n"
    );
    w.assert_root(&at(&g3), &g3, "after `switch`");
    assert_eq!(
        std::fs::read(w.root.join("etc/kubernetes/extra")).unwrap(),
        b"x\n"
    );
    w.assert_generations(&[1, 2, 3], Some(3));

    let r = w.ok(&["rollback"]);
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 2\n"
    );
    w.assert_root(&at(&g2), &g2, "after the first rollback");
    assert_eq!(
        std::fs::read(w.root.join("etc/kubernetes/apiserver")).unwrap(),
        g2.bytes("/etc/kubernetes/apiserver")
    );
    w.assert_generations(&[1, 2, 3], Some(2));

    w.ok(&["rollback"]);
    w.assert_root(&at(&g1), &g1, "after the second rollback");
    assert_ne!(
        std::fs::read(w.root.join("etc/kubernetes/apiserver")).unwrap(),
        g2.bytes("/etc/kubernetes/apiserver")
    );
    w.assert_generations(&[1, 2, 3], Some(1));

    // Nothing before generation 1: refused, nothing changes.
    let before = full_listing(&w.root);
    w.run(&["rollback"]).assert_error(
        "error: cannot roll back root `$SANDBOX/host`\n  caused by: there is no generation before 1 to roll back to\n",
    );
    assert_eq!(full_listing(&w.root), before);

    w.ok(&["switch", "3"]);
    w.assert_root(&at(&g3), &g3, "after `switch 3`");
    w.assert_generations(&[1, 2, 3], Some(3));

    w.ok(&["switch", "1"]);
    w.assert_root(&at(&g1), &g1, "after `switch 1`");
    w.assert_generations(&[1, 2, 3], Some(1));

    w.ok(&["switch", "2"]);
    w.assert_root(&at(&g2), &g2, "after `switch 2`");
    w.assert_generations(&[1, 2, 3], Some(2));

    // An unknown generation: refused, nothing changes.
    let before = full_listing(&w.root);
    w.run(&["switch", "9"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: generation 9 does not exist in this store\nhelp: `kbuild generations` lists them\n",
    );
    assert_eq!(full_listing(&w.root), before);
}

#[test]
fn generations_json_marks_the_active_generation() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    let active = |w: &World| -> Vec<(u64, bool)> {
        let r = w.ok(&["generations", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["number"].as_u64().unwrap(),
                    g.get("active") == Some(&serde_json::Value::Bool(true)),
                )
            })
            .collect()
    };
    assert_eq!(active(&w), [(1, false), (2, false)]);
    w.ok(&["switch", "1"]);
    assert_eq!(active(&w), [(1, true), (2, false)]);
    w.ok(&["switch"]);
    assert_eq!(active(&w), [(1, false), (2, true)]);
}

// ---------------------------------------------------------------------------------------------
// 2. Added and removed paths, and the directories kbuild created
// ---------------------------------------------------------------------------------------------

#[test]
fn removed_links_and_emptied_directories_go_other_directories_stay() {
    let w = World::new();
    w.master_plus(
        "wide",
        &[
            ("/etc/kubernetes/extra", "x\n"),
            ("/etc/extra-a/sub/one", "one\n"),
            ("/etc/extra-b/two", "two\n"),
            ("/etc/kubernetes/addons/three", "three\n"),
        ],
    );
    let wide = w.build(&["wide"], &[], 1);
    let master = w.build(&["master"], &[], 2);
    let base = w.base();

    w.ok(&["switch", "1"]);
    let wide_dirs = [
        &[
            "/etc/extra-a",
            "/etc/extra-a/sub",
            "/etc/extra-b",
            "/etc/kubernetes/addons",
        ],
        &MASTER_DIRS[..],
    ]
    .concat();
    w.assert_at(&base, &wide, &wide_dirs, "at the wide generation");

    // The user keeps a file in a directory kbuild created.
    std::fs::write(w.root.join("etc/extra-b/notes"), b"mine\n").unwrap();
    let mut base_with_notes = base.clone();
    base_with_notes.file("etc/extra-b/notes", b"mine\n");

    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: wide -> master\n  prerequisites: 5 present\n  remove  /etc/extra-a/sub/one\n  remove  /etc/extra-b/two\n  remove  /etc/kubernetes/addons/three\n  remove  /etc/kubernetes/extra\n{}",
            master_checks("not run")
        )
    );
    // Links gone; /etc/extra-a and /etc/kubernetes/addons (empty, kbuild's) gone; /etc/extra-b stays
    // (it holds the user's file) and stays recorded; /etc/kubernetes (the host's) stays.
    let mut dirs: Vec<&str> = MASTER_DIRS.to_vec();
    dirs.push("/etc/extra-b");
    w.assert_at(
        &base_with_notes,
        &master,
        &dirs,
        "after removing the extra paths",
    );

    // Once the user's file is gone, the next switch that no longer needs the directory
    // removes it.
    std::fs::remove_file(w.root.join("etc/extra-b/notes")).unwrap();
    w.ok(&["switch", "1"]);
    w.assert_at(&base, &wide, &wide_dirs, "back at the wide generation");
    w.ok(&["switch", "2"]);
    w.assert_at(&base, &master, &MASTER_DIRS, "at master again");

    // Back to nothing kbuild made but its state: the scheduler alone needs no apiserver
    // files, while /etc/kubernetes (not kbuild's) stays with the prerequisites.
    let sched = w.build(&["kube-scheduler"], &[], 3);
    w.ok(&["switch", "3"]);
    w.assert_at(&base, &sched, &MASTER_DIRS, "at the scheduler alone");
}

#[test]
fn a_root_without_etc_gets_every_directory_created_and_removed_again() {
    // The scheduler alone has no prerequisites: an empty root works, and kbuild creates
    // `/etc` itself. Switching to a generation without /usr files removes /usr again.
    let w = World::bare();
    w.sb.write_recipe(
        "etc-only",
        "[files.\"/etc/kubernetes/scheduler\"]\ntext = \"KUBE_SCHEDULER_ARGS=\\\"\\\"\\n\"\n",
    );
    let sched = w.build(&["kube-scheduler"], &[], 1);
    let etc_only = w.build(&["etc-only"], &[], 2);
    let base = Listing::default();
    w.ok(&["switch", "1"]);
    let dirs = [&["/etc", "/etc/kubernetes"], &MASTER_DIRS[..]].concat();
    w.assert_at(&base, &sched, &dirs, "at the scheduler");
    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        r.stdout(),
        "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: kube-scheduler -> etc-only\n  prerequisites: 0 present\n  change  /etc/kubernetes/scheduler\n  remove  /etc/kubernetes/config\n  remove  /etc/systemd/system/kube-scheduler.service\n  remove  /etc/systemd/system/multi-user.target.wants/kube-scheduler.service\n  remove  /usr/local/bin/kube-proxy\n  remove  /usr/local/bin/kube-scheduler\n  remove  /usr/local/bin/kubectl\n  remove  /usr/local/bin/kubelet\n  stop    kube-scheduler.service (removed)\nunit actions (not run: root is not `/`):\n  systemctl stop kube-scheduler.service\n  systemctl daemon-reload\n"
    );
    // `/etc` holds kbuild's own state, so it stays (recorded), as does /etc/kubernetes.
    w.assert_at(
        &base,
        &etc_only,
        &["/etc", "/etc/kubernetes"],
        "at /etc only",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Crash at every step of a switch, then recover
// ---------------------------------------------------------------------------------------------

/// Steps of the switch A → B below, in order: the journal, two directories, the flip, two new
/// links, two removed links, one emptied directory, the state.
const FAULT_STEPS: [&str; 10] = [
    "journal written",
    "mkdir",
    "mkdir",
    "flip",
    "link",
    "link",
    "unlink",
    "unlink",
    "rmdir",
    "state written",
];

/// A world at generation 1 (`master`), generation 2 (`extra`: master plus
/// `/etc/kubernetes/extra`, another IP) built beside it; with each its exact root.
fn at_master_before_extra() -> (World, (Listing, Gen), (Listing, Gen)) {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let a = w.build(&["master"], &[], 1);
    let b = w.build(&["extra"], &["--set", "IP=10.0.0.9"], 2);
    let base = w.base();
    let la = w.expect(&base, &a, &MASTER_DIRS, &[]);
    let lb = w.expect(&base, &b, &MASTER_DIRS, &[]);
    w.ok(&["switch", "1"]);
    (w, (la, a), (lb, b))
}

/// After a fault (`when`) in the switch from A to B: `switch 2` ends exactly at B, then
/// `switch 1` exactly at A again. The run of `switch 2`.
fn there_and_back(w: &World, a: (&Listing, &Gen), b: (&Listing, &Gen), when: &str) -> Run {
    let r = w.ok(&["switch", "2"]);
    w.assert_root(b.0, b.1, &format!("{when}, then `switch 2`"));
    w.ok(&["switch", "1"]);
    w.assert_root(a.0, a.1, &format!("{when}, then back to A"));
    r
}

#[test]
fn a_crash_at_any_step_leaves_a_consistent_root_that_the_next_command_completes() {
    let w = World::new();
    w.master_plus(
        "fault-a",
        &[
            ("/etc/kubernetes/only-a", "a\n"),
            ("/etc/only-a/file", "in a\n"),
            ("/etc/kubernetes/shared", "shared a\n"),
        ],
    );
    w.master_plus(
        "fault-b",
        &[
            ("/etc/kubernetes/only-b", "b\n"),
            ("/etc/only-b/sub/file", "in b\n"),
            ("/etc/kubernetes/shared", "shared b\n"),
        ],
    );
    let a = w.build(&["fault-a"], &[], 1);
    // B also changes /etc/kubernetes/config and apiserver (IP).
    let b = w.build(&["fault-b"], &["--set", "IP=10.0.0.9"], 2);
    for p in [
        "/etc/kubernetes/config",
        "/etc/kubernetes/apiserver",
        "/etc/kubernetes/shared",
    ] {
        assert_ne!(a.bytes(p), b.bytes(p), "{p}");
    }
    let base = w.base();
    let mut dirs_a = MASTER_DIRS.to_vec();
    dirs_a.push("/etc/only-a");
    let mut dirs_b = MASTER_DIRS.to_vec();
    dirs_b.extend(["/etc/only-b", "/etc/only-b/sub"]);
    let la = w.expect(&base, &a, &dirs_a, &[]);
    let lb = w.expect(&base, &b, &dirs_b, &[]);

    w.ok(&["switch", "1"]);
    w.assert_root(&la, &a, "at A");

    let mut steps = Vec::new();
    for n in 1.. {
        let when = format!("crash at step {n}");
        let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", &n.to_string())]);
        if r.code == Some(0) {
            assert!(!r.stderr.contains("fault injected"), "{}", r.stderr);
            w.assert_root(&lb, &b, "after the switch that ran to the end");
            break;
        }
        assert!(n <= 30, "still crashing at step {n}");
        assert_eq!(
            r.code, None,
            "{when}: killed by SIGABRT, not an exit code: {r:?}"
        );
        steps.push(fault_step(&r, n));
        assert_crashed_between(&w, &a, &b, &la, &lb, &when);

        // A crashed switch is drift.
        let v = w.run(&["verify"]);
        assert_eq!(v.code, Some(1), "{when}: {v:?}");
        assert!(
            v.stdout().contains(
                "drift    $SANDBOX/host: an interrupted switch from generation 1 to generation 2 is pending (`kbuild switch 2` completes it)\n"
            ),
            "{when}: {}",
            v.stdout
        );

        if n % 2 == 1 {
            // `switch 2` completes the interrupted switch, which is all it was asked to do.
            there_and_back(&w, (&la, &a), (&lb, &b), &when);
        } else {
            // `rollback` completes it, then rolls back from B to A.
            // The interrupted switch's unit actions are carried out (here: printed) too.
            let r = w.ok(&["rollback"]);
            assert_eq!(
                r.stderr(),
                "   Completed an interrupted switch; running its unit actions\n    Switched root `$SANDBOX/host` to generation 1\n",
                "{when}"
            );
            w.assert_root(&la, &a, &format!("{when}, then `rollback`"));
        }
    }
    assert_eq!(steps, FAULT_STEPS, "the steps crashed at");
    assert!(steps.len() >= 5);
}

/// `KBUILD_FAULT_FAIL_AT=N` (the N-th step fails with an I/O error, as on a full disk; the
/// hook the health gate's container tier uses): the switch exits 1 naming the step, leaves
/// its journal and a root on one generation or the other, and the next switch completes it.
#[test]
fn a_switch_that_fails_part_way_is_completed_by_the_next() {
    let (w, (la, a), (lb, b)) = at_master_before_extra();
    let mut steps = Vec::new();
    for n in 1.. {
        let when = format!("failure at step {n}");
        let r = w.run_env(
            &["switch", "2"],
            &[("KBUILD_FAULT_FAIL_AT", &n.to_string())],
        );
        if r.code == Some(0) {
            w.assert_root(&lb, &b, "after the switch that ran to the end");
            break;
        }
        assert!(n <= 10, "still failing at step {n}: {r:?}");
        assert_eq!(r.code, Some(1), "{when}: {r:?}");
        let prefix = format!("  caused by: failure injected at step {n} (");
        let step = r
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{when}: {}", r.stderr));
        steps.push(
            step.trim_end_matches(") by KBUILD_FAULT_FAIL_AT")
                .to_owned(),
        );
        assert!(
            w.root.join("etc/.kbuild/journal.json").is_file(),
            "{when}: the journal is left"
        );
        assert_crashed_between(&w, &a, &b, &la, &lb, &when);
        let r = there_and_back(&w, (&la, &a), (&lb, &b), &when);
        assert!(
            r.stderr
                .starts_with("   Completed an interrupted switch; running its unit actions\n"),
            "{when}: {}",
            r.stderr
        );
    }
    assert_eq!(steps, ["journal written", "flip", "link", "state written"]);
}

#[test]
fn a_crash_during_recovery_is_recovered_too() {
    let (w, (la, a), (lb, b)) = at_master_before_extra();
    // Crash right after the flip (step 1 is the journal), then crash the rollback while it
    // completes the interrupted switch (its steps: the new link, the state)...
    let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", "2")]);
    assert_eq!(r.code, None, "{r:?}");
    assert!(
        r.stderr
            .contains("kbuild: fault injected at step 2 (flip)\n"),
        "{r:?}"
    );
    assert_crashed_between(&w, &a, &b, &la, &lb, "first crash");
    let r = w.run_env(&["rollback"], &[("KBUILD_FAULT_AT", "2")]);
    assert_eq!(r.code, None, "{r:?}");
    assert!(
        r.stderr
            .contains("kbuild: fault injected at step 2 (state written)\n"),
        "{r:?}"
    );
    assert_crashed_between(&w, &a, &b, &la, &lb, "second crash");
    // ... and the next command still ends where it was asked to.
    w.ok(&["rollback"]);
    w.assert_root(&la, &a, "after the second rollback");
}

// ---------------------------------------------------------------------------------------------
// 4. Unmanaged files: refused, or adopted and restored
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unmanaged_file_in_the_way_is_refused_and_nothing_changes() {
    let w = World::new();
    std::fs::write(
        w.root.join("etc/kubernetes/config"),
        b"# the host's own config\n",
    )
    .unwrap();
    w.build(&["master"], &[], 1);
    let before = full_listing(&w.root);
    let before_store = full_listing(&w.sb.store);
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /etc/kubernetes/config\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(full_listing(&w.root), before, "the root changed");
    assert!(!w.root.join("etc/.kbuild").exists());
    assert_eq!(full_listing(&w.sb.store), before_store, "the store changed");

    // Two in the way: both named.
    std::fs::create_dir(w.root.join("usr")).unwrap();
    std::fs::create_dir_all(w.root.join("usr/local/bin")).unwrap();
    std::os::unix::fs::symlink("/opt/kubectl", w.root.join("usr/local/bin/kubectl")).unwrap();
    let before = full_listing(&w.root);
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: these paths in root `$SANDBOX/host` exist and are not managed by kbuild; nothing was changed:\n  /etc/kubernetes/config\n  /usr/local/bin/kubectl\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(full_listing(&w.root), before, "the root changed");
    assert!(!w.root.join("etc/.kbuild").exists());
}

#[test]
fn adopted_originals_are_kept_and_restored_when_no_longer_managed() {
    let w = World::new();
    let original = b"# the host's own config\nKUBE_MASTER=\"--master=http://127.0.0.1:8080\"\n";
    std::fs::write(w.root.join("etc/kubernetes/config"), original).unwrap();
    let base = w.base();
    let master = w.build(&["master"], &[], 1);
    // A generation without /etc/kubernetes/config (nothing imports kube-common).
    w.sb.write_recipe(
        "no-config",
        "[files.\"/etc/kubernetes/scheduler\"]\ntext = \"KUBE_SCHEDULER_ARGS=\\\"\\\"\\n\"\n",
    );
    let no_config = w.build(&["no-config"], &[], 2);
    assert!(!no_config.managed().contains("/etc/kubernetes/config"));

    let dry = w.run(&["switch", "1", "--dry-run"]);
    assert_eq!(dry.code, Some(1), "{dry:?}");
    assert!(
        dry.stdout()
            .contains("  unmanaged, in the way: /etc/kubernetes/config\n"),
        "{}",
        dry.stdout
    );
    let dry = w.ok(&["switch", "1", "--dry-run", "--adopt"]);
    assert!(
        dry.stdout().contains(
            "  adopt   /etc/kubernetes/config (original kept in /etc/.kbuild/adopted/etc/kubernetes/config)\n"
        ),
        "{}",
        dry.stdout
    );

    w.ok(&["switch", "1", "--adopt"]);
    let mut without_config = base.clone();
    without_config.remove("etc/kubernetes/config");
    w.assert_root(
        &w.expect(
            &without_config,
            &master,
            &MASTER_DIRS,
            &[("/etc/kubernetes/config", original)],
        ),
        &master,
        "after adopting",
    );

    // The generation without config: the original comes back, byte for byte.
    let r = w.ok(&["switch", "2"]);
    assert!(
        r.stdout()
            .contains("  restore /etc/kubernetes/config (the original adopted earlier)\n"),
        "{}",
        r.stdout
    );
    let mut expected = w.expect(&without_config, &no_config, &[], &[]);
    expected.file("etc/kubernetes/config", original);
    // The emptied directories that held the original in `adopted/` may stay.
    for d in [
        "etc/.kbuild/adopted/etc",
        "etc/.kbuild/adopted/etc/kubernetes",
    ] {
        if w.root.join(d).is_dir() {
            expected.dir(d);
        }
    }
    w.assert_root(&expected, &no_config, "after the original was restored");
    assert_eq!(
        std::fs::read(w.root.join("etc/kubernetes/config")).unwrap(),
        original
    );

    // The restored file is the host's again: a switch back to master refuses to replace it.
    let before = full_listing(&w.root);
    let r = w.run(&["switch", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr()
            .contains("not managed by kbuild; nothing was changed:\n  /etc/kubernetes/config\n"),
        "{}",
        r.stderr
    );
    assert_eq!(full_listing(&w.root), before);
}

#[test]
fn a_managed_link_replaced_by_hand_is_refused_like_any_unmanaged_file() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    w.ok(&["switch", "1"]);
    let config = w.root.join("etc/kubernetes/config");
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, b"edited by hand\n").unwrap();
    let before = full_listing(&w.root);
    w.run(&["switch", "2"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /etc/kubernetes/config\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(full_listing(&w.root), before);
}

// ---------------------------------------------------------------------------------------------
// 5. Missing prerequisites
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_prerequisites_are_listed_and_nothing_changes() {
    let w = World::bare();
    w.build(&["master"], &[], 1);
    // An empty root: all five missing.
    let before = full_listing(&w.root);
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: missing host prerequisites under `$SANDBOX/host`: /etc/kubernetes/ssl/ca-key.pem, /etc/kubernetes/ssl/ca.pem, /etc/kubernetes/ssl/kubernetes-key.pem, /etc/kubernetes/ssl/kubernetes.pem, /etc/kubernetes/token.csv\nhelp: create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)\n",
    );
    assert_eq!(full_listing(&w.root), before);

    // Some present: the others named.
    w.write_prereqs();
    std::fs::remove_file(w.root.join("etc/kubernetes/ssl/ca-key.pem")).unwrap();
    std::fs::remove_file(w.root.join("etc/kubernetes/token.csv")).unwrap();
    let before = full_listing(&w.root);
    let before_store = full_listing(&w.sb.store);
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: missing host prerequisites under `$SANDBOX/host`: /etc/kubernetes/ssl/ca-key.pem, /etc/kubernetes/token.csv\nhelp: create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)\n",
    );
    assert_eq!(full_listing(&w.root), before);
    assert!(!w.root.join("etc/.kbuild").exists());
    assert_eq!(full_listing(&w.sb.store), before_store);
    // The dry run shows the plan and fails as the switch would.
    let dry = w.run(&["switch", "--dry-run"]);
    assert_eq!(dry.code, Some(1), "{dry:?}");
    assert!(
        dry.stdout().contains(
            "  prerequisite missing: /etc/kubernetes/ssl/ca-key.pem\n  prerequisite missing: /etc/kubernetes/token.csv\n"
        ),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stderr().starts_with(
            "error: a switch of root `$SANDBOX/host` would be refused\n  caused by: missing host prerequisites"
        ),
        "{}",
        dry.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Unit actions
// ---------------------------------------------------------------------------------------------

/// The plan's unit lines and the systemctl section of a switch's (or dry-run's) stdout.
fn unit_output(stdout: &str) -> String {
    let mut out = String::new();
    let mut in_section = false;
    for line in stdout.lines() {
        if line.starts_with("unit actions (") {
            in_section = true;
        }
        // The health checks listed after them are not unit actions (tests/health.rs).
        if line.starts_with("health checks (") {
            in_section = false;
            continue;
        }
        if in_section
            || ["  start   ", "  stop    ", "  restart "]
                .iter()
                .any(|p| line.starts_with(p))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The unit section of `kbuild diff A B`.
fn diff_units(w: &World, a: u64, b: u64) -> String {
    let r = w.ok(&["diff", &a.to_string(), &b.to_string()]);
    let header = format!("unit actions of a switch {a} -> {b}:\n");
    match r.stdout.find(&header) {
        Some(i) => r.stdout[i..].to_owned(),
        None => String::new(),
    }
}

const NOT_RUN: &str = "unit actions (not run: root is not `/`):\n  systemctl daemon-reload\n";

#[test]
fn unit_actions_follow_exactly_the_files_each_unit_reads() {
    let w = World::new();
    let sets = ["--set", "ETCD2=10.0.0.2", "--set", "IP=10.0.0.9"];
    let g1 = w.build(&["master"], &[], 1);
    w.build(&["kube-scheduler"], &[], 2);
    let g3 = w.build(&["master"], &[], 3);
    assert_eq!(g3.rootfs, g1.rootfs);
    w.build(&["master"], &sets[..2], 4);
    w.build(&["master"], &sets, 5);
    // A unit file changes, nothing else.
    let unit = w.sb.recipes.join("templates/kube-scheduler.service.j2");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(&unit, format!("{text}# tuned by the operator\n")).unwrap();
    w.build(&["master"], &sets, 6);
    // The kube-scheduler binary changes, nothing else.
    let member = bin_member("kube-scheduler");
    let mut patched = binary_contents("kube-scheduler");
    patched.extend_from_slice(b"patched");
    let other = Tarball::kubernetes_server().with_changed(&member, &patched);
    let other_url = write_fixture(&w.sb, "other", &other.build(Compression::Gzip));
    let over = format!("{INPUT}={other_url}");
    let mut with_over = sets.to_vec();
    with_over.extend(["--override-input", &over]);
    w.build(&["master"], &with_over, 7);
    // A file no unit reads.
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    w.build(&["extra"], &with_over, 8);

    // Each step: what `switch` prints (not run, the root is not `/`) and what `diff` says.
    let steps: [(u64, u64, &str, &str); 7] = [
        (
            1,
            2,
            "  stop    kube-apiserver.service (removed)\n  stop    kube-controller-manager.service (removed)\n",
            "",
        ),
        (
            2,
            3,
            "  start   kube-apiserver.service (new)\n  start   kube-controller-manager.service (new)\n",
            "  systemctl start kube-apiserver.service\n  systemctl start kube-controller-manager.service\n",
        ),
        (
            3,
            4,
            "  restart kube-apiserver.service (/etc/kubernetes/apiserver changed)\n",
            "  systemctl restart kube-apiserver.service\n",
        ),
        (
            4,
            5,
            "  restart kube-apiserver.service (/etc/kubernetes/config, /etc/kubernetes/apiserver changed)\n  restart kube-controller-manager.service (/etc/kubernetes/config changed)\n  restart kube-scheduler.service (/etc/kubernetes/config changed)\n",
            "  systemctl restart kube-apiserver.service\n  systemctl restart kube-controller-manager.service\n  systemctl restart kube-scheduler.service\n",
        ),
        (
            5,
            6,
            "  restart kube-scheduler.service (/etc/systemd/system/kube-scheduler.service changed)\n",
            "  systemctl restart kube-scheduler.service\n",
        ),
        (
            6,
            7,
            "  restart kube-scheduler.service (/usr/local/bin/kube-scheduler changed)\n",
            "  systemctl restart kube-scheduler.service\n",
        ),
        (7, 8, "", ""),
    ];

    // From nothing: every unit is new.
    let r = w.ok(&["switch", "1"]);
    assert_eq!(
        unit_output(&r.stdout),
        format!(
            "  start   kube-apiserver.service (new)\n  start   kube-controller-manager.service (new)\n  start   kube-scheduler.service (new)\n{NOT_RUN}  systemctl start kube-apiserver.service\n  systemctl start kube-controller-manager.service\n  systemctl start kube-scheduler.service\n"
        )
    );
    for (a, b, plan, commands) in steps {
        let diff = diff_units(&w, a, b);
        let r = w.ok(&["switch", &b.to_string()]);
        if plan.is_empty() {
            assert_eq!(
                unit_output(&r.stdout),
                "",
                "switch {a} -> {b}:\n{}",
                r.stdout
            );
            assert_eq!(diff, "", "diff {a} {b}");
            continue;
        }
        if a == 1 {
            // Stops: the systemctl order is checked on its own below.
            assert!(unit_output(&r.stdout).starts_with(plan), "{}", r.stdout);
        } else {
            assert_eq!(
                unit_output(&r.stdout),
                format!("{plan}{NOT_RUN}{commands}"),
                "switch {a} -> {b}"
            );
        }
        assert_eq!(
            diff,
            format!("unit actions of a switch {a} -> {b}:\n{plan}"),
            "diff {a} {b}"
        );
    }

    // The full output of two of them.
    w.ok(&["switch", "3"]);
    let r = w.ok(&["switch", "4"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 3 -> generation 4\n  prerequisites: 5 present\n  change  /etc/kubernetes/apiserver\n  restart kube-apiserver.service (/etc/kubernetes/apiserver changed)\n{NOT_RUN}  systemctl restart kube-apiserver.service\n{}",
            master_checks("not run"),
        )
    );
    w.ok(&["switch", "6"]);
    // `diff` with no argument: from the root's active generation to the newest.
    let r = w.ok(&["diff"]);
    let sched = |bytes: &[u8]| (bytes.len(), blake3_hex(bytes)[..16].to_owned());
    let (old, new) = (sched(&binary_contents("kube-scheduler")), sched(&patched));
    assert_eq!(
        r.stdout(),
        format!(
            "generation 6 -> 8\nadded    /etc/kubernetes/extra\nchanged  /usr/local/bin/kube-scheduler (binary: {} bytes blake3 {}… -> {} bytes blake3 {}…)\nunit actions of a switch 6 -> 8:\n  restart kube-scheduler.service (/usr/local/bin/kube-scheduler changed)\n",
            old.0, old.1, new.0, new.1
        )
    );
}

#[test]
fn printed_systemctl_commands_follow_the_order_they_run_in() {
    // docs/switch.md: stops and disables run before the flip (while the unit files exist),
    // then daemon-reload, then starts and restarts. The commands printed as not run must be
    // in that order too, or an operator replaying them disables units whose files are gone.
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["kube-scheduler"], &[], 2);
    w.ok(&["switch", "1"]);
    let dry = w.ok(&["switch", "2", "--dry-run"]);
    let expected = "  stop    kube-apiserver.service (removed)\n  stop    kube-controller-manager.service (removed)\nunit actions (would run: root is not `/`):\n  systemctl stop kube-apiserver.service\n  systemctl stop kube-controller-manager.service\n  systemctl daemon-reload\n";
    assert_eq!(unit_output(&dry.stdout), expected);
    let r = w.ok(&["switch", "2"]);
    assert_eq!(
        unit_output(&r.stdout),
        expected.replace("would run", "not run")
    );
}

// ---------------------------------------------------------------------------------------------
// 7. --dry-run changes nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_prints_the_plan_and_changes_nothing_in_the_root_or_the_store() {
    let w = World::new();
    w.master_plus("with-a", &[("/etc/kubernetes/only-a", "a\n")]);
    w.master_plus("with-b", &[("/etc/kubernetes/only-b", "b\n")]);
    w.build(&["with-a"], &[], 1);
    w.build(&["with-b"], &["--set", "ETCD2=10.0.0.2"], 2);

    // On a root never switched: nothing is created, not even etc/.kbuild.
    let (root0, store0) = (full_listing(&w.root), full_listing(&w.sb.store));
    let r = w.ok(&["switch", "--dry-run"]);
    assert_eq!(r.stderr, "");
    assert!(
        r.stdout().starts_with(
            "root $SANDBOX/host: nothing -> generation 2\n  prerequisites: 5 present\n  add     /etc/kubernetes/apiserver\n"
        ),
        "{}",
        r.stdout
    );
    assert_eq!(full_listing(&w.root), root0, "the root changed");
    assert_eq!(full_listing(&w.sb.store), store0, "the store changed");

    w.ok(&["switch", "1"]);
    let (root1, store1) = (full_listing(&w.root), full_listing(&w.sb.store));
    let r = w.ok(&["switch", "2", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 1 -> generation 2\n  recipes: with-a -> with-b\n  prerequisites: 5 present\n  add     /etc/kubernetes/only-b\n  change  /etc/kubernetes/apiserver\n  remove  /etc/kubernetes/only-a\n  restart kube-apiserver.service (/etc/kubernetes/apiserver changed)\nunit actions (would run: root is not `/`):\n  systemctl daemon-reload\n  systemctl restart kube-apiserver.service\n{}",
            master_checks("would not run")
        )
    );
    assert_eq!(r.stderr, "");
    assert_eq!(full_listing(&w.root), root1, "the root changed");
    assert_eq!(full_listing(&w.sb.store), store1, "the store changed");

    // The same plan is what the switch then does.
    let real = w.ok(&["switch", "2"]);
    assert_eq!(
        real.stdout(),
        r.stdout()
            .replace("would run", "not run")
            .replace("would not run", "not run")
    );
    let (root2, store2) = (full_listing(&w.root), full_listing(&w.sb.store));
    let r = w.ok(&["rollback", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 2 -> generation 1\n  recipes: with-b -> with-a\n  prerequisites: 5 present\n  add     /etc/kubernetes/only-a\n  change  /etc/kubernetes/apiserver\n  remove  /etc/kubernetes/only-b\n  restart kube-apiserver.service (/etc/kubernetes/apiserver changed)\nunit actions (would run: root is not `/`):\n  systemctl daemon-reload\n  systemctl restart kube-apiserver.service\n{}",
            master_checks("would not run")
        )
    );
    assert_eq!(full_listing(&w.root), root2, "the root changed");
    assert_eq!(full_listing(&w.sb.store), store2, "the store changed");

    // The active generation: nothing to do.
    let r = w.ok(&["switch", "2", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        "root $SANDBOX/host: generation 2 -> generation 2\n  prerequisites: 5 present\n  nothing to do\n"
    );
    assert_eq!(full_listing(&w.root), root2, "the root changed");
    assert_eq!(full_listing(&w.sb.store), store2, "the store changed");
}

// ---------------------------------------------------------------------------------------------
// 8. gc --keep
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_keeps_the_newest_generations_and_the_active_one_and_exactly_their_objects() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    let g3 = w.build(&["extra"], &["--set", "IP=10.0.0.9"], 3);
    w.ok(&["switch", "1"]);
    let store = w.store();
    let before = store_objects(&store);
    let keep: BTreeSet<String> = reachable(&store, &g1)
        .union(&reachable(&store, &g3))
        .cloned()
        .collect();
    // Only generation 2's rootfs and its apiserver are reached from nothing else.
    let apiserver2 = object_name(
        &kbuild::store::Node::file(&g2.bytes("/etc/kubernetes/apiserver"), false),
        "apiserver",
    );
    let gone: BTreeSet<String> = before.difference(&keep).cloned().collect();
    assert_eq!(gone, BTreeSet::from([g2.object(), apiserver2.clone()]));

    let r = w.ok(&["gc", "--keep", "1"]);
    let mut deleted: Vec<&String> = gone.iter().collect();
    deleted.sort();
    let mut expected_err = String::from("     Removed generation 2\n");
    for o in &deleted {
        expected_err.push_str(&format!("     Deleted {o}\n"));
    }
    assert_eq!(r.stderr, expected_err);
    assert_eq!(
        r.stdout,
        format!(
            "1 generation, 2 objects and 0 temporary entries removed, 2.6 KiB freed\n{}",
            gc_archives_line(1, fixture().gz.len())
        )
    );
    assert_eq!(store_objects(&store), keep);
    assert!(!g2.rootfs.exists());
    // Their metadata went with them; the kept objects' stayed.
    let meta = |o: &str| store.join(".kbuild/meta").join(format!("{o}.json"));
    for o in &gone {
        assert!(!meta(o).exists(), "metadata of {o}");
    }
    for o in &keep {
        assert!(meta(o).is_file(), "metadata of {o}");
    }
    // The active generation 1 stays, though beyond the newest one.
    w.assert_generations(&[1, 3], Some(1));
    w.assert_resolves(&g1, "after gc");
    w.ok(&["verify"]);

    // Once the root moves on, generation 1 goes too, with every object only it reached.
    w.ok(&["switch", "3"]);
    let before = store_objects(&store);
    let keep3 = reachable(&store, &g3);
    let gone: BTreeSet<String> = before.difference(&keep3).cloned().collect();
    assert!(gone.contains(&g1.object()));
    let r = w.ok(&["gc", "--keep", "1"]);
    assert!(
        r.stderr.starts_with("     Removed generation 1\n"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stdout,
        format!(
            "1 generation, {} and 0 temporary entries removed, 3.3 KiB freed\n{}",
            match gone.len() {
                1 => "1 object".to_owned(),
                n => format!("{n} objects"),
            },
            gc_archives_line(1, fixture().gz.len())
        )
    );
    assert_eq!(store_objects(&store), keep3);
    w.assert_generations(&[3], Some(3));
    w.assert_resolves(&g3, "after the second gc");
    w.ok(&["verify"]);

    // Nothing more to collect.
    let r = w.ok(&["gc", "--keep", "1"]);
    assert_eq!(r.stderr, "");
    assert_eq!(
        r.stdout,
        format!(
            "0 generations, 0 objects and 0 temporary entries removed, 0 B freed\n{}",
            gc_archives_line(1, fixture().gz.len())
        )
    );
    // The root still switches and rolls back within what is left.
    w.run(&["rollback"]).assert_error(
        "error: cannot roll back root `$SANDBOX/host`\n  caused by: there is no generation before 3 to roll back to\n",
    );
}

#[test]
fn gc_without_keep_only_removes_unreachable_objects() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.ok(&["switch"]);
    let store = w.store();
    // An abandoned object: in the store, reached by no generation.
    let stray = store.join("0123456789abcdef0123456789abcdef-stray");
    std::fs::write(&stray, b"stray\n").unwrap();
    let before = store_objects(&store);
    let r = w.ok(&["gc"]);
    assert_eq!(
        r.stderr,
        "     Deleted 0123456789abcdef0123456789abcdef-stray\n"
    );
    assert_eq!(
        r.stdout,
        format!(
            "0 generations, 1 object and 0 temporary entries removed, 6 B freed\n{}",
            gc_archives_line(1, fixture().gz.len())
        )
    );
    let mut expected = before.clone();
    expected.remove("0123456789abcdef0123456789abcdef-stray");
    assert_eq!(store_objects(&store), expected);
    assert_eq!(store_objects(&store), reachable(&store, &g1));
    w.assert_generations(&[1], Some(1));
}

// ---------------------------------------------------------------------------------------------
// 9. verify: store objects, and drift of a root
// ---------------------------------------------------------------------------------------------

/// `    Verified N objects, X MiB in Ys (Z GB/s)`, with the numbers after N masked.
fn verified_line(stderr: &str) -> String {
    let line = stderr.lines().next().unwrap_or_default();
    match line.find(" objects, ") {
        Some(i) => format!("{} objects, …", &line[..i]),
        None => line.to_owned(),
    }
}

#[test]
fn verify_finds_a_flipped_byte_and_names_the_corrupt_objects() {
    let w = World::new();
    let g = w.build(&["master"], &[], 1);
    w.ok(&["switch"]);
    let store = w.store();
    let n = store_objects(&store).len();

    let r = w.sb.run(w.cmd_without_root(&["verify"]));
    r.assert_success();
    assert_eq!(r.stdout, "ok\n");
    assert_eq!(
        verified_line(&r.stderr),
        format!("    Verified {n} objects, …")
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let r = w.ok(&["verify"]); // with --root: no drift either
    assert_eq!(r.stdout, "ok\n");

    // Flip one byte of the `config` object; the rootfs hardlinks the same inode.
    let config = g.bytes("/etc/kubernetes/config");
    let object = object_name(&kbuild::store::Node::file(&config, false), "config");
    let path = store.join(&object);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
    let mut flipped = config.clone();
    flipped[10] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();

    let object_now = kbuild::store::Node::file(&flipped, false)
        .digest()
        .store_hash();
    let rootfs_now = tree_node(&g.rootfs).digest().store_hash();
    let mut lines = [
        format!(
            "corrupt  {object}: content hash is {object_now}, its name says {} (`kbuild verify --repair` repairs it)\n",
            &object[..32]
        ),
        format!(
            "corrupt  {}: content hash is {rootfs_now}, its name says {} (`kbuild verify --repair` repairs it)\n",
            g.object(),
            &g.object()[..32]
        ),
    ];
    lines.sort();
    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.stdout, lines.concat());
    assert_eq!(
        r.stderr.lines().nth(1),
        Some("error: verification found 2 problem(s)"),
        "{}",
        r.stderr
    );

    // Put the byte back: clean again.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o200)).unwrap();
    std::fs::write(&path, &config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

#[test]
fn verify_with_a_root_reports_links_edited_by_hand_as_drift() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.ok(&["switch"]);
    let k = w.root.join("etc/kubernetes");
    std::fs::remove_file(k.join("config")).unwrap();
    std::os::unix::fs::symlink("/etc/kubernetes/config.local", k.join("config")).unwrap();

    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stdout(),
        "drift    $SANDBOX/host: link changed: /etc/kubernetes/config -> /etc/kubernetes/config.local (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/config and puts kbuild's link back)\n"
    );
    assert_eq!(
        r.stderr.lines().nth(1),
        Some("error: verification found 1 problem(s)"),
        "{}",
        r.stderr
    );

    std::fs::remove_file(k.join("controller-manager")).unwrap();
    std::fs::write(k.join("controller-manager"), b"edited\n").unwrap();
    std::fs::remove_file(k.join("scheduler")).unwrap();
    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stdout(),
        "drift    $SANDBOX/host: link changed: /etc/kubernetes/config -> /etc/kubernetes/config.local (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/config and puts kbuild's link back)\ndrift    $SANDBOX/host: replaced by a file: /etc/kubernetes/controller-manager (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/kubernetes/controller-manager and puts kbuild's link back)\ndrift    $SANDBOX/host: removed: /etc/kubernetes/scheduler (`kbuild switch 1` repairs it)\n"
    );
    assert!(
        r.stderr
            .ends_with("error: verification found 3 problem(s)\n"),
        "{}",
        r.stderr
    );

    // Without an explicit root, only the store is verified.
    let r = w.sb.run(w.cmd_without_root(&["verify"]));
    r.assert_success();
    assert_eq!(r.stdout, "ok\n");
}

// ---------------------------------------------------------------------------------------------
// 10. Concurrent switches, and switching to the active generation
// ---------------------------------------------------------------------------------------------

fn wait_output(child: std::process::Child) -> (Option<i32>, String, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn two_concurrent_switches_on_one_root_both_finish_consistently() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    let base = w.base();
    let root = w.root.display().to_string();
    let blocking = format!("    Blocking waiting for file lock on root `{root}`");
    for round in 0..3 {
        let (x, y) = if round % 2 == 0 {
            ("1", "2")
        } else {
            ("2", "1")
        };
        let (a, b) = (w.spawn(&["switch", x]), w.spawn(&["switch", y]));
        for (code, _stdout, stderr) in [wait_output(a), wait_output(b)] {
            assert_eq!(code, Some(0), "round {round}: {stderr}");
            for line in stderr.lines() {
                assert!(
                    line == blocking
                        || line == format!("    Switched root `{root}` to generation 1")
                        || line == format!("    Switched root `{root}` to generation 2")
                        || line.starts_with("       Fresh generation "),
                    "round {round}: {line:?}"
                );
            }
        }
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.root.join("etc/.kbuild/state.json")).unwrap())
                .unwrap();
        let current = std::fs::read_link(w.root.join("etc/.kbuild/current")).unwrap();
        let g = if current == g1.rootfs { &g1 } else { &g2 };
        assert_eq!(current, g.rootfs, "round {round}");
        assert_eq!(state["generation"], g.number, "round {round}");
        w.assert_at(&base, g, &MASTER_DIRS, &format!("round {round}"));
        assert!(!w.root.join("etc/.kbuild/journal.json").exists());
    }
}

#[test]
fn a_switch_waits_for_the_root_lock() {
    use std::io::BufRead;
    let w = World::new();
    let g = w.build(&["master"], &[], 1);
    let base = w.base();
    // Hold the root's lock (a flock on the root directory) as another switch would.
    let dir = std::fs::File::open(&w.root).unwrap();
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut child = w.spawn(&["switch"]);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let root = w.root.display().to_string();
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        first,
        format!("    Blocking waiting for file lock on root `{root}`")
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "did not wait for the lock"
    );
    assert_eq!(w.listing(), base, "changed the root without the lock");
    rustix::fs::flock(&dir, rustix::fs::FlockOperation::Unlock).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)).unwrap(),
        format!("    Switched root `{root}` to generation 1")
    );
    w.assert_at(&base, &g, &MASTER_DIRS, "after the lock was released");
}

#[test]
fn switching_to_the_active_generation_changes_nothing() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    w.ok(&["switch", "1"]);
    let (root, store) = (full_listing(&w.root), full_listing(&w.sb.store));
    std::thread::sleep(Duration::from_millis(20)); // any write would show in an mtime
    for args in [&["switch", "1"][..], &["switch", "1", "--adopt"][..]] {
        let r = w.ok(args);
        assert_eq!(r.stdout, "", "{args:?}");
        assert_eq!(
            r.stderr, "       Fresh generation 1 is already active\n",
            "{args:?}"
        );
        assert_eq!(full_listing(&w.root), root, "{args:?}: the root changed");
        assert_eq!(
            full_listing(&w.sb.store),
            store,
            "{args:?}: the store changed"
        );
    }
    w.ok(&["switch"]);
    let (root, store) = (full_listing(&w.root), full_listing(&w.sb.store));
    let r = w.ok(&["switch"]);
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "       Fresh generation 2 is already active\n");
    assert_eq!(full_listing(&w.root), root, "the root changed");
    assert_eq!(full_listing(&w.sb.store), store, "the store changed");
}

// ---------------------------------------------------------------------------------------------
// 11. The generated unit files pass `systemd-analyze verify`
// ---------------------------------------------------------------------------------------------

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `systemd-analyze verify --man=no FILES…` in `dir`: (exit code, output lines).
fn systemd_analyze(tool: &Path, dir: &Path, files: &[&str]) -> (Option<i32>, Vec<String>) {
    let out = std::process::Command::new(tool)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("SYSTEMD_LOG_COLOR", "0")
        .current_dir(dir)
        .arg("verify")
        .arg("--man=no")
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        text.lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

#[test]
fn generated_unit_files_pass_systemd_analyze_verify() {
    let Some(tool) = find_on_path("systemd-analyze") else {
        eprintln!("note: systemd-analyze is not installed; skipping the unit file check");
        return;
    };
    let w = World::new();
    let g = w.build(&["master"], &[], 1);
    let dir = w.sb.dir.join("units");
    std::fs::create_dir(&dir).unwrap();
    for u in UNITS {
        std::fs::write(dir.join(u), g.bytes(&format!("/etc/systemd/system/{u}"))).unwrap();
    }
    // The one complaint allowed: the ExecStart binary is not installed on this host (the
    // rootfs provides it under /usr/local/bin, which the check cannot see).
    let missing_binary = |u: &str| {
        let bin = format!("/usr/local/bin/{}", u.trim_end_matches(".service"));
        (!Path::new(&bin).exists())
            .then(|| format!("{u}: Command {bin} is not executable: No such file or directory"))
    };
    let (code, lines) = systemd_analyze(&tool, &dir, &UNITS);
    let expected: Vec<String> = UNITS.iter().filter_map(|u| missing_binary(u)).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        expected,
        "systemd-analyze verify:\n{}",
        lines.join("\n")
    );
    assert_eq!(code, Some(if expected.is_empty() { 0 } else { 1 }));

    // The check notices a broken unit in this environment (or it proves nothing).
    let broken = String::from_utf8(g.bytes("/etc/systemd/system/kube-scheduler.service"))
        .unwrap()
        .replace(
            "Restart=on-failure",
            "Restart=on-failur\nLimitNOFILES=65536",
        );
    std::fs::write(dir.join("broken.service"), broken).unwrap();
    let (_, lines) = systemd_analyze(&tool, &dir, &["broken.service"]);
    let complaints: Vec<&String> = lines
        .iter()
        .filter(|l| !l.contains("is not executable"))
        .collect();
    assert_eq!(complaints.len(), 2, "{lines:?}");
    assert!(
        complaints.iter().any(|l| l.contains("LimitNOFILES")),
        "{lines:?}"
    );
    assert!(
        complaints.iter().any(|l| l.contains("on-failur")),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Interrupted switches seen by the other commands
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_runs_after_a_crash_plan_from_the_interrupted_switchs_target() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    w.build(&["master"], &[], 1);
    w.build(&["extra"], &[], 2);
    w.ok(&["switch", "1"]);
    let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", "2")]);
    assert!(
        r.stderr.contains("fault injected at step 2 (flip)"),
        "{r:?}"
    );
    let (root, store) = (full_listing(&w.root), full_listing(&w.sb.store));

    // `switch 1` would complete 1 -> 2, then go 2 -> 1.
    let r = w.ok(&["switch", "1", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 2 -> generation 1\n  an interrupted switch is completed first\n  recipes: extra -> master\n  prerequisites: 5 present\n  remove  /etc/kubernetes/extra\n{}",
            master_checks("would not run")
        )
    );
    assert_eq!(full_listing(&w.root), root);
    assert_eq!(full_listing(&w.sb.store), store);
    // So would `rollback`: it rolls back from the generation the crashed switch targeted.
    let r = w.run(&["rollback", "--dry-run"]);
    assert_eq!(
        r.stdout(),
        format!(
            "root $SANDBOX/host: generation 2 -> generation 1\n  an interrupted switch is completed first\n  recipes: extra -> master\n  prerequisites: 5 present\n  remove  /etc/kubernetes/extra\n{}",
            master_checks("would not run")
        ),
        "rollback --dry-run after a crash: {r:?}"
    );
    assert_eq!(r.code, Some(0));
    assert_eq!(full_listing(&w.root), root);
    assert_eq!(full_listing(&w.sb.store), store);
}

#[test]
fn gc_after_a_crash_keeps_both_generations_of_the_interrupted_switch() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let a = w.build(&["master"], &[], 1);
    let b = w.build(&["extra"], &["--set", "IP=10.0.0.9"], 2);
    w.build(&["master"], &["--set", "IP=10.0.0.10"], 3);
    let base = w.base();
    w.ok(&["switch", "1"]);
    // Crash right after the flip: `current` already names generation 2's rootfs.
    let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", "2")]);
    assert!(
        r.stderr.contains("fault injected at step 2 (flip)"),
        "{r:?}"
    );
    w.ok(&["gc", "--keep", "1"]);
    assert!(
        b.rootfs.is_dir(),
        "gc deleted the rootfs the root's flip point names (generation 2)"
    );
    w.assert_generations(&[1, 2, 3], Some(1));
    w.ok(&["switch", "2"]);
    w.assert_at(&base, &b, &MASTER_DIRS, "after recovery");
    assert!(a.rootfs.is_dir());
}

#[test]
fn a_root_whose_first_switch_was_recovered_is_known_to_gc() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    let base = w.base();
    // The root's very first switch crashes after the journal is written...
    let r = w.run_env(&["switch", "1"], &[("KBUILD_FAULT_AT", "1")]);
    assert!(
        r.stderr
            .contains("fault injected at step 1 (journal written)"),
        "{r:?}"
    );
    // ... and `switch 1` completes it, with its unit actions (nothing else to do).
    let r = w.ok(&["switch", "1"]);
    assert_eq!(
        r.stderr,
        "   Completed an interrupted switch; running its unit actions\n       Fresh generation 1 is already active\n"
    );
    assert!(
        r.stdout.contains("systemctl start kube-apiserver.service"),
        "{}",
        r.stdout
    );
    w.assert_at(&base, &g1, &MASTER_DIRS, "after recovery");
    // Generation 1 is active on the root: gc keeps it.
    w.ok(&["gc", "--keep", "1"]);
    w.assert_generations(&[1, 2], Some(1));
    w.assert_resolves(&g1, "after gc");
}

#[test]
fn gc_keeps_the_active_generation_of_every_root() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    let g3 = w.build(&["master"], &["--set", "IP=10.0.0.10"], 3);
    w.ok(&["switch", "1"]);
    let other = w.sb.dir.join("other-host");
    for (rel, bytes) in PREREQS {
        let p = other.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let other_root = other.to_str().unwrap();
    w.sb.run(w.cmd_without_root(&["--root", other_root, "switch", "2"]))
        .assert_success();
    let r = w.ok(&["gc", "--keep", "1"]);
    assert_eq!(
        r.stdout,
        format!(
            "0 generations, 0 objects and 0 temporary entries removed, 0 B freed\n{}",
            gc_archives_line(1, fixture().gz.len())
        )
    );
    w.assert_generations(&[1, 2, 3], Some(1));
    for g in [&g1, &g2, &g3] {
        assert!(g.rootfs.is_dir(), "generation {}", g.number);
    }
    // The other root goes away: its generation is no longer anyone's.
    std::fs::remove_dir_all(&other).unwrap();
    let r = w.ok(&["gc", "--keep", "1"]);
    assert!(
        r.stderr.starts_with("     Removed generation 2\n"),
        "{}",
        r.stderr
    );
    w.assert_generations(&[1, 3], Some(1));
    assert!(!g2.rootfs.exists());
}

#[test]
fn refusals_leave_no_trace_a_symlinked_parent_is_never_written_through() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    // /usr/local is a link elsewhere (to a directory outside the root).
    let elsewhere = w.sb.dir.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("bin")).unwrap();
    std::fs::create_dir(w.root.join("usr")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.root.join("usr/local")).unwrap();
    let before = full_listing(&w.root);
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: `$SANDBOX/host/usr/local` is a symlink or not a directory; kbuild will not write through it\nhelp: kbuild needs a real directory at `$SANDBOX/host/usr/local`: move what is there away and run the command again\n",
    );
    assert_eq!(full_listing(&w.root), before);
    assert!(!w.root.join("etc/.kbuild").exists());
    assert_eq!(std::fs::read_dir(elsewhere.join("bin")).unwrap().count(), 0);
    // --adopt does not change that.
    let r = w.run(&["switch", "--adopt"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(full_listing(&w.root), before);
    assert_eq!(std::fs::read_dir(elsewhere.join("bin")).unwrap().count(), 0);
}

#[test]
fn a_crash_while_adopting_never_loses_the_original() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    let a = w.build(&["master"], &[], 1);
    let b = w.build(&["extra"], &[], 2);
    let original: &[u8] = b"the host's own extra\n";
    let extra = w.root.join("etc/kubernetes/extra");
    let kept = w.root.join("etc/.kbuild/adopted/etc/kubernetes/extra");
    w.ok(&["switch", "1"]);
    std::fs::write(&extra, original).unwrap();
    let base = {
        let mut l = w.base();
        for p in [
            "etc/.kbuild",
            "etc/.kbuild/adopted",
            "etc/.kbuild/current",
            "etc/.kbuild/state.json",
        ] {
            l.remove(p);
        }
        for p in MASTER_PATHS {
            l.remove(p.trim_start_matches('/'));
        }
        for d in MASTER_DIRS.iter().rev() {
            l.remove(d.trim_start_matches('/'));
        }
        l
    };
    let mut without = base.clone();
    without.remove("etc/kubernetes/extra");
    let lb = w.expect(
        &without,
        &b,
        &MASTER_DIRS,
        &[("/etc/kubernetes/extra", original)],
    );
    // Back at A, the original is in its place again (the emptied directories that held it
    // in `adopted/` may stay).
    let at_a = |w: &World| {
        let mut l = w.expect(&base, &a, &MASTER_DIRS, &[]);
        for d in [
            "etc/.kbuild/adopted/etc",
            "etc/.kbuild/adopted/etc/kubernetes",
        ] {
            if w.root.join(d).is_dir() {
                l.dir(d);
            }
        }
        l
    };
    w.assert_root(&at_a(&w), &a, "at A with the host's file");

    let mut steps = Vec::new();
    for n in 1.. {
        let when = format!("crash at step {n}");
        let r = w.run_env(
            &["switch", "2", "--adopt"],
            &[("KBUILD_FAULT_AT", &n.to_string())],
        );
        if r.code == Some(0) {
            w.assert_root(&lb, &b, "after the adopting switch");
            break;
        }
        assert!(n <= 20, "still crashing at step {n}");
        assert_eq!(r.code, None, "{when}: {r:?}");
        steps.push(fault_step(&r, n));
        // The original is in exactly one place, whole.
        let at_path = std::fs::symlink_metadata(&extra)
            .ok()
            .filter(|m| m.is_file())
            .map(|_| std::fs::read(&extra).unwrap());
        let aside = std::fs::read(&kept).ok();
        match (at_path, aside) {
            (Some(x), None) | (None, Some(x)) => assert_eq!(x, original, "{when}"),
            other => panic!("{when}: original at path / aside: {other:?}"),
        }
        if n % 2 == 1 {
            w.ok(&["switch", "2"]);
            w.assert_root(&lb, &b, &format!("{when}, then `switch 2`"));
            w.ok(&["switch", "1"]);
        } else {
            w.ok(&["rollback"]);
        }
        w.assert_root(&at_a(&w), &a, &format!("{when}, then back at A"));
        assert_eq!(std::fs::read(&extra).unwrap(), original, "{when}");
    }
    assert_eq!(
        steps,
        ["journal written", "adopt", "flip", "link", "state written"]
    );
}

#[test]
fn the_same_store_named_by_another_path_is_the_same_store() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    w.ok(&["switch", "1"]);
    // `<sandbox>/sub/../store` is the same directory.
    std::fs::create_dir(w.sb.dir.join("sub")).unwrap();
    let other = w.sb.dir.join("sub/../store");
    let root = w.root.to_str().unwrap();
    let r =
        w.sb.run(w.cmd_store(&other, &["--root", root, "switch", "2"]));
    r.assert_success();
    assert_eq!(
        std::fs::canonicalize(w.root.join("etc/.kbuild/current")).unwrap(),
        std::fs::canonicalize(&g2.rootfs).unwrap()
    );
    let r =
        w.sb.run(w.cmd_store(&other, &["--root", root, "generations"]));
    r.assert_success();
    assert!(
        r.stdout.lines().any(|l| l.starts_with("*   2  ")),
        "{}",
        r.stdout
    );
    // And back through the usual spelling.
    w.ok(&["rollback"]);
    w.assert_resolves(&g1, "after rolling back");
    w.assert_generations(&[1, 2], Some(1));
}

/// A managed link deleted by hand is put back by switching to the active generation
/// (reported by `verify --root` as drift before, clean after).
#[test]
fn switching_to_the_active_generation_repairs_a_deleted_link() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.ok(&["switch", "1"]);
    let healthy = w.listing();
    std::fs::remove_file(w.root.join("usr/local/bin/kubectl")).unwrap();
    let v = w.run(&["verify"]);
    assert_eq!(v.code, Some(1), "{v:?}");
    assert!(
        v.stdout.contains("removed: /usr/local/bin/kubectl"),
        "{}",
        v.stdout
    );

    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stdout
            .contains("  repair  /usr/local/bin/kubectl (changed or removed by hand)\n"),
        "{}",
        r.stdout
    );
    assert_listing(&w.listing(), &healthy, "after the repair");
    w.assert_resolves(&g1, "after the repair");
    assert_eq!(w.run(&["verify"]).code, Some(0));
}

/// `gc`, `verify` and `switch` never turn an arbitrary directory into a store.
#[test]
fn a_directory_that_is_not_a_store_is_refused() {
    let w = World::new();
    let dir = w.sb.dir.join("not-a-store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me\n").unwrap();
    std::fs::write(dir.join(".tmp-important"), "keep me too\n").unwrap();
    let before = full_listing(&dir);
    for args in [&["gc"][..], &["verify"], &["switch", "1"], &["generations"]] {
        let r = w.sb.run(w.cmd_store(&dir, args));
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert!(
            r.stderr()
                .contains("is not a kbuild store (it has no `.kbuild/version`)"),
            "{args:?}: {}",
            r.stderr
        );
    }
    // `build` refuses to make a store of a directory holding other files.
    let r = w.sb.run(w.cmd_store(&dir, &["build", "master"]));
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr().contains("help: the directory holds other files"),
        "{}",
        r.stderr
    );
    assert_eq!(full_listing(&dir), before);
}

/// gc forgets a root that no longer exists, and then no longer keeps its generation.
#[test]
fn gc_forgets_a_root_that_is_gone() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    w.ok(&["switch", "1"]);
    let r = w.ok(&["gc", "--keep", "1"]);
    assert!(!r.stderr.contains("Forgot"), "{}", r.stderr);
    w.assert_generations(&[1, 2], Some(1));

    let st = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&w.root)
        .status()
        .unwrap();
    assert!(st.success());
    let r = w.sb.run(w.cmd_without_root(&["gc", "--keep", "1"]));
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stderr()
            .contains("      Forgot root `$SANDBOX/host` (gone, or managed from another store)\n"),
        "{}",
        r.stderr()
    );
    assert!(
        r.stderr().contains("     Removed generation 1\n"),
        "{}",
        r.stderr()
    );
}
