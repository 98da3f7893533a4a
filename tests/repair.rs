//! Repair never breaks a root (issue 7, point 7): `verify --repair` replaces a damaged object
//! a generation uses by a good copy rebuilt from that generation's sources, in one step, or
//! leaves it in place and says what fixes it (exiting non-zero); damaged objects no generation
//! uses are deleted; `switch` and `rollback` refuse a generation with a modified object.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::world::*;
use common::*;

fn object(store: &Path, suffix: &str) -> String {
    let found: Vec<String> = store_objects(store)
        .into_iter()
        .filter(|o| o[33..] == *suffix)
        .collect();
    assert_eq!(found.len(), 1, "{suffix}: {found:?}");
    found[0].clone()
}

/// Every entry of every object: path, kind, mode, size, mtime, content hash of files.
fn store_listing(store: &Path) -> BTreeMap<String, Vec<String>> {
    store_objects(store)
        .into_iter()
        .map(|o| {
            let top = store.join(&o);
            let mut lines = Vec::new();
            for e in common::walk_any(&top).sort_by_file_name() {
                let e = e.unwrap();
                let m = e.path().symlink_metadata().unwrap();
                let rel = e.path().strip_prefix(&top).unwrap().display().to_string();
                let content = if m.is_file() {
                    blake3_hex(&std::fs::read(e.path()).unwrap())
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{rel} {:o} {} {content}",
                    m.mode() & 0o7777,
                    m.mtime()
                ));
            }
            (o, lines)
        })
        .collect()
}

fn no_tmp(store: &Path) -> Vec<String> {
    top_level(store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// A second root with the master's prerequisites.
fn extra_root(w: &World, name: &str) -> PathBuf {
    let root = w.sb.dir.join(name);
    for (rel, bytes) in PREREQS {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    root
}

fn on_root(w: &World, root: &Path, args: &[&str]) -> Run {
    let mut c = w.cmd_without_root(&["--root", root.to_str().unwrap()]);
    c.args(args);
    w.sb.run(c)
}

fn corrupt_line(name: &str, now: &str) -> String {
    format!(
        "corrupt  {name}: content hash is {now}, its name says {}\n",
        &name[..32]
    )
}

/// `verify ARGS` (a repair) exits 0, printing `report` then `ok`, and says on stderr, after
/// its status line, exactly `done`.
#[track_caller]
fn assert_repaired(w: &World, args: &[&str], report: &str, done: &str) {
    let v = w.run(args);
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (Some(0), format!("{report}ok\n").as_str()),
        "{v:?}"
    );
    assert_eq!(v.stderr().lines().skip(1).collect::<Vec<_>>(), [done]);
}

const URL: &str = "file://$SANDBOX/pinned/kubernetes-server-linux-amd64.tar.gz";

/// A world whose root is on generation 1, `master`.
fn on_master() -> (World, Gen) {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.ok(&["switch"]);
    (w, g1)
}

/// A world with two generations of `master` (the second with another IP), no root on either.
fn two_masters() -> (World, Gen, Gen) {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    (w, g1, g2)
}

/// Where a repair reads the input from: the archive the store kept when it was first built.
fn kept_url() -> String {
    format!("file://$SANDBOX/store/{}", kept_fixture())
}

/// The example: one flipped byte in a binary three roots use. `verify --repair` used
/// to delete the whole active rootfs of all three, print `ok` and exit 0, and the next
/// offline build could not re-create it. Now both damaged objects (the member and the rootfs
/// sharing its inode) are replaced by good copies in one step each; every root keeps
/// resolving, now to the right bytes.
#[test]
fn repair_of_a_flipped_byte_replaces_objects_three_roots_use() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let roots = [
        w.root.clone(),
        extra_root(&w, "host2"),
        extra_root(&w, "host3"),
    ];
    for r in &roots {
        on_root(&w, r, &["switch"]).assert_success();
    }
    let store = w.sb.store.clone();
    let healthy = store_listing(&store);
    let kubectl = object(&store, "kubectl");
    let good = std::fs::read(store.join(&kubectl)).unwrap();
    flip_byte(&store.join(&kubectl), 100);
    let bad = std::fs::read(store.join(&kubectl)).unwrap();
    let mut corrupt = [
        corrupt_line(
            &kubectl,
            &kbuild::store::Node::file(&bad, true).digest().store_hash(),
        ),
        corrupt_line(&g1.object(), &tree_node(&g1.rootfs).digest().store_hash()),
    ];
    corrupt.sort();

    let v = w.run(&["verify", "--repair"]);
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (Some(0), format!("{}ok\n", corrupt.concat()).as_str()),
        "{v:?}"
    );
    let stderr = v.stderr();
    let (first, rest) = stderr.split_once('\n').unwrap();
    assert!(first.starts_with("    Verified 15 objects, "), "{stderr}");
    assert_eq!(
        rest,
        format!(
            "{}    Replaced {kubectl} (by a good copy rebuilt from generation 1's sources)\n    Replaced {} (by a good copy rebuilt from generation 1's sources)\n",
            fetched(&kept_url(), fixture().gz.len()),
            g1.object()
        )
    );
    // The store is exactly as before the damage; nothing is left aside.
    assert_eq!(store_listing(&store), healthy);
    assert_eq!(no_tmp(&store), Vec::<String>::new());
    for r in &roots {
        assert_resolves_in(r, &g1, "after the repair");
        assert_eq!(
            std::fs::read(r.join("usr/local/bin/kubectl")).unwrap(),
            good
        );
    }
    let b = w.ok(&["build", "master", "--offline", "--locked"]);
    assert_eq!(b.stderr(), "       Fresh generation 1 is up to date\n");
    let v = w.run(&["verify"]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
}

/// Without its sources (the input archive is gone, and the store's kept copy was dropped), a
/// damaged object a root uses is left in place — the roots keep working exactly as before —
/// and `--repair` exits non-zero naming the way out. Following it (`--override-input` with a
/// copy of the archive) repairs it, and keeps the archive again.
#[test]
fn repair_without_the_sources_leaves_objects_in_place_and_says_how() {
    let (w, g1) = on_master();
    let store = w.sb.store.clone();
    let healthy = store_listing(&store);
    w.ok(&["gc", "--drop-archives"]);
    let kubectl = object(&store, "kubectl");
    flip_byte(&store.join(&kubectl), 100);
    let bad = std::fs::read(store.join(&kubectl)).unwrap();
    let damaged = store_listing(&store);
    let root_before = w.listing();
    let archive = w.sb.dir.join("pinned").join(TARBALL);
    let elsewhere = w.sb.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(&archive, elsewhere.join(TARBALL)).unwrap();

    let v = w.run(&["verify", "--repair"]);
    let kubectl_now = kbuild::store::Node::file(&bad, true).digest().store_hash();
    let rootfs_now = tree_node(&g1.rootfs).digest().store_hash();
    let mut corrupt = [
        corrupt_line(&kubectl, &kubectl_now),
        corrupt_line(&g1.object(), &rootfs_now),
    ];
    corrupt.sort();
    let broken: Vec<String> = corrupt
        .iter()
        .map(|l| {
            format!(
                "broken   {} (left in place)\n",
                &l.trim_end()["corrupt  ".len()..]
            )
        })
        .collect();
    assert_eq!(v.code, Some(1), "{v:?}");
    assert_eq!(
        v.stdout(),
        format!(
            "{}failed   generation 1: cannot rebuild its damaged objects: cannot fetch input `{INPUT}`: `{URL}`: cannot read `$SANDBOX/pinned/{TARBALL}`: No such file or directory (os error 2)\n{}",
            corrupt.concat(),
            broken.concat()
        )
    );
    let stderr = v.stderr();
    let (_, rest) = stderr.split_once('\n').unwrap();
    assert_eq!(
        rest,
        format!(
            "     Reading kubernetes-server from file://$SANDBOX/pinned/kubernetes-server-linux-amd64.tar.gz\nerror: 2 damaged or missing object(s) are left as they are: no good copy could be rebuilt\n{}\n",
            unrepairable(
                1,
                "build a newer generation first (`kbuild build RECIPE`), then switch root `$SANDBOX/host` away from it (`kbuild switch --root $SANDBOX/host` goes to the newest), "
            )
        )
    );
    assert_eq!(store_listing(&store), damaged, "nothing moved");
    assert_eq!(no_tmp(&store), Vec::<String>::new());
    assert_listing(&w.listing(), &root_before, "after the failed repair");
    w.assert_resolves(&g1, "after the failed repair");

    // The way out, as the help says.
    let copy = format!("file://{}", elsewhere.join(TARBALL).display());
    let v = w.run(&[
        "verify",
        "--repair",
        "--override-input",
        &format!("{INPUT}={copy}"),
    ]);
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (Some(0), format!("{}ok\n", corrupt.concat()).as_str()),
        "{v:?}"
    );
    assert_eq!(store_listing(&store), healthy);
    assert_eq!(no_tmp(&store), Vec::<String>::new());
    w.assert_resolves(&g1, "after the repair");
}

/// The store object holding `g`'s rendered `/etc/kubernetes/apiserver` (the one whose inode
/// the rootfs's file shares).
fn apiserver_object(store: &Path, g: &Gen) -> String {
    let ino = std::fs::metadata(g.rootfs.join("etc/kubernetes/apiserver"))
        .unwrap()
        .ino();
    store_objects(store)
        .into_iter()
        .find(|o| {
            o.ends_with("-apiserver") && std::fs::metadata(store.join(o)).unwrap().ino() == ino
        })
        .unwrap_or_else(|| panic!("no object shares generation {}'s apiserver", g.number))
}

/// `switch` refused nothing: it activated a generation with a modified object and exited 0.
/// Now it refuses, names the object and the fix, and leaves the root alone; the fix works.
/// `rollback` likewise.
#[test]
fn switch_and_rollback_refuse_a_generation_with_a_modified_object() {
    let (w, g1, g2) = two_masters();
    w.ok(&["switch", "1"]);
    let on_1 = w.listing();
    let store = w.sb.store.clone();
    // gen 2's own rendered apiserver config (gen 1 has another).
    let apiserver2 = std::fs::read_link(g2.rootfs.join("etc/kubernetes/apiserver")).ok();
    assert_eq!(apiserver2, None, "rootfs files are hardlinks, not links");
    let obj2 = apiserver_object(&store, &g2);
    flip_byte(&store.join(&obj2), 10);

    w.run(&["switch", "2"]).assert_error(&modified(
        "switch",
        &obj2,
        "its modification time changed",
    ));
    assert_listing(&w.listing(), &on_1, "after the refused switch");
    w.assert_resolves(&g1, "after the refused switch");

    // The fix the help names: offline, from gen 2's recipes alone.
    let v = repaired_offline(&w);
    assert_eq!(
        v.stderr().lines().skip(1).collect::<Vec<_>>(),
        [
            format!("    Replaced {obj2} (by a good copy rebuilt from generation 2's sources)"),
            format!(
                "    Replaced {} (by a good copy rebuilt from generation 2's sources)",
                g2.object()
            ),
        ]
    );
    w.ok(&["switch", "2"]);
    w.assert_resolves(&g2, "after the repair");

    // rollback to a generation with a modified object: refused, root untouched.
    let on_2 = w.listing();
    let obj1 = apiserver_object(&store, &g1);
    flip_byte(&store.join(&obj1), 10);
    w.run(&["rollback"]).assert_error(&modified(
        "roll back",
        &obj1,
        "its modification time changed",
    ));
    assert_listing(&w.listing(), &on_2, "after the refused rollback");
}

/// Designed case: damage only the rootfs's own file (`kbuild.json`, not shared with any
/// other object) with the input archive gone. The rootfs is rebuilt from the store's member
/// objects alone and exchanged in one step; nothing is fetched.
#[test]
fn repair_of_a_rootfs_needs_only_the_store() {
    let (w, g1) = on_master();
    let store = w.sb.store.clone();
    let healthy = store_listing(&store);
    std::fs::remove_file(w.sb.dir.join("pinned").join(TARBALL)).unwrap();
    flip_byte(&g1.rootfs.join("kbuild.json"), 3);
    let now = tree_node(&g1.rootfs).digest().store_hash();

    assert_repaired(
        &w,
        &["verify", "--repair"],
        &corrupt_line(&g1.object(), &now),
        &format!(
            "    Replaced {} (by a good copy rebuilt from generation 1's sources)",
            g1.object()
        ),
    );
    assert_eq!(store_listing(&store), healthy);
    w.assert_resolves(&g1, "after the repair");
}

/// Designed case: damaged objects no generation uses (generation 1's record is gone, as a gc
/// killed after its first step leaves it) are deleted, as before; the objects generation 2
/// uses are untouched.
#[test]
fn repair_deletes_damaged_objects_no_generation_uses() {
    let (w, g1, g2) = two_masters();
    w.ok(&["switch"]);
    let store = w.sb.store.clone();
    std::fs::remove_file(store.join(".kbuild/profiles/default/1.json")).unwrap();
    let before = store_listing(&store);
    flip_byte(&g1.rootfs.join("kbuild.json"), 3);
    let now = tree_node(&g1.rootfs).digest().store_hash();

    assert_repaired(
        &w,
        &["verify", "--repair"],
        &corrupt_line(&g1.object(), &now),
        &format!(
            "     Deleted {} (damaged, and no generation uses it)",
            g1.object()
        ),
    );
    let mut expected = before;
    expected.remove(&g1.object());
    assert_eq!(store_listing(&store), expected);
    assert_eq!(no_tmp(&store), Vec::<String>::new());
    w.assert_resolves(&g2, "after the repair");
}

/// Designed case: what the old `--repair` left behind — the active rootfs deleted, every
/// managed path of the root dangling. `verify` reports the generation; `verify --repair`
/// re-creates the rootfs from generation 1's sources (the store alone here) and the root
/// resolves again.
#[test]
fn repair_recreates_a_missing_rootfs_a_root_uses() {
    let (w, g1) = on_master();
    let store = w.sb.store.clone();
    let healthy = store_listing(&store);
    kbuild::fs::remove_tree(&g1.rootfs).unwrap();
    let missing = format!(
        "missing  generation 1: rootfs {} is not in the store\n",
        g1.object()
    );
    let v = w.sb.run(w.cmd_without_root(&["verify"]));
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (
            Some(1),
            missing
                .replace("\n", " (`kbuild verify --repair` repairs it)\n")
                .as_str()
        ),
        "{v:?}"
    );

    assert_repaired(
        &w,
        &["verify", "--repair", "--offline"],
        &missing,
        &format!(
            "     Rebuilt {} (it was missing; rebuilt from generation 1's sources)",
            g1.object()
        ),
    );
    assert_eq!(store_listing(&store), healthy);
    w.assert_resolves(&g1, "after the repair");
}

/// Sets `path`'s mtime back to the store's constant (what a hostile host can do to hide a
/// write from a check of mtimes alone).
fn hide_mtime(path: &Path) {
    let s = std::process::Command::new("touch")
        .args(["-h", "-d", "@1"])
        .arg(path)
        .status()
        .unwrap();
    assert!(s.success());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Truncates the read-only store file `path` to `len` bytes behind the store's back: made
/// `writable` (its mode plus the owner's write bit) for the write, read-only again, its mtime
/// set back.
fn truncate_hidden(path: &Path, len: u64, writable: u32) {
    set_mode(path, writable);
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
    set_mode(path, writable & !0o222);
    hide_mtime(path);
}

/// Deletes `name` from the read-only store directory `dir` behind the store's back, its
/// mtime set back.
fn remove_hidden(dir: &Path, name: &str) {
    set_mode(dir, 0o755);
    std::fs::remove_file(dir.join(name)).unwrap();
    set_mode(dir, 0o555);
    hide_mtime(dir);
}

/// The error of a `verb` (`switch`, `roll back`, `plan to switch`) on the sandbox's root
/// refused because store object `object` was modified: `why` says how.
fn modified(verb: &str, object: &str, why: &str) -> String {
    format!(
        "error: cannot {verb} root `$SANDBOX/host`\n  caused by: store object `$SANDBOX/store/{object}` was modified after it was added ({why})\nhelp: run `kbuild verify --repair`: it replaces damaged objects with copies rebuilt from their sources\n"
    )
}

/// `verify --repair --offline`, which must exit 0.
#[track_caller]
fn repaired_offline(w: &World) -> Run {
    let v = w.run(&["verify", "--repair", "--offline"]);
    assert_eq!(v.code, Some(0), "{v:?}");
    v
}

/// Review finding F1: a binary shared by every generation truncated to 1000 bytes, its mtime
/// set back. `build` refused to reuse it; `switch` and `rollback` exited 0 and put a 1000-byte
/// kubectl into the root. Now both refuse with the object, what is wrong and the fix, and the
/// root is unchanged; the fix works and the switch then succeeds.
#[test]
fn switch_and_rollback_refuse_a_truncated_binary_with_its_mtime_reset() {
    let (w, g1, g2) = two_masters();
    w.ok(&["switch", "1"]);
    w.ok(&["switch", "2"]);
    let on_2 = w.listing();
    let store = w.sb.store.clone();
    let kubectl = object(&store, "kubectl");
    let path = store.join(&kubectl);
    let size = std::fs::metadata(&path).unwrap().len();
    truncate_hidden(&path, 1000, 0o755);

    let why = format!("its size is 1000 bytes, not {size}");
    let refused = |verb: &str| modified(verb, &kubectl, &why);
    w.run(&["switch", "1", "--dry-run"])
        .assert_error(&refused("plan to switch"));
    w.run(&["switch", "1"]).assert_error(&refused("switch"));
    w.run(&["rollback"]).assert_error(&refused("roll back"));
    assert_listing(&w.listing(), &on_2, "after the refused switch and rollback");
    w.assert_resolves(&g2, "after the refused switch and rollback");

    // The fix the help names, offline (the pinned input is at hand); then the switch works.
    repaired_offline(&w);
    w.ok(&["rollback"]);
    w.assert_resolves(&g1, "after the repair and rollback");
    assert_eq!(std::fs::metadata(store.join(&kubectl)).unwrap().len(), size);
}

/// Review finding F1, second example: a file deleted from a rootfs and its directory's mtime
/// set back. `switch` exited 0 and removed the root's link to it; now `switch` (and its dry
/// run) refuses, naming the object and the missing file; `verify` finds it by hashing and
/// names the repair, which works.
#[test]
fn switch_refuses_a_rootfs_missing_a_file_with_its_mtime_reset() {
    let (w, g1, g2) = two_masters();
    w.ok(&["switch", "1"]);
    let on_1 = w.listing();
    let bin = g2.rootfs.join("usr/local/bin");
    remove_hidden(&bin, "kubelet");

    let refused = |verb: &str| modified(verb, &g2.object(), "`usr/local/bin/kubelet` is missing");
    w.run(&["switch", "2", "--dry-run"])
        .assert_error(&refused("plan to switch"));
    w.run(&["switch", "2"]).assert_error(&refused("switch"));
    assert_listing(&w.listing(), &on_1, "after the refused switch");

    // verify hashes, so a reset mtime hides nothing; it names the repair (F5).
    let now = tree_node(&g2.rootfs).digest().store_hash();
    let v = w.run(&["verify"]);
    assert_eq!(
        (v.code, v.stdout()),
        (
            Some(1),
            format!(
                "corrupt  {}: content hash is {now}, its name says {} (`kbuild verify --repair` repairs it)\n",
                g2.object(),
                &g2.object()[..32]
            )
        ),
        "{v:?}"
    );
    assert_eq!(
        v.stderr().lines().skip(1).collect::<Vec<_>>(),
        [
            "error: verification found 1 problem(s)",
            "help: `kbuild verify --repair` replaces damaged objects with good copies rebuilt from their sources, re-creates missing ones and drops wrong push cache entries; then `kbuild verify` again",
        ]
    );
    repaired_offline(&w);
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
    w.ok(&["switch", "2"]);
    w.assert_resolves(&g2, "after the repair");
    w.ok(&["switch", "1"]);
    w.assert_resolves(&g1, "back on generation 1");
}

/// Review finding F1 (the q0 case): a root whose record lacks a file its active generation
/// has (what a switch to a damaged rootfs left before switches checked it). `verify --root`
/// said ok; now it names the file and the switch that links it, and that switch works.
#[test]
fn verify_root_reports_files_of_the_active_generation_the_root_does_not_link() {
    let (w, g1) = on_master();
    let healthy = w.listing();
    let state_path = w.root.join("etc/.kbuild/state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let managed = state["managed"].as_array_mut().unwrap();
    managed.retain(|p| p != "/usr/local/bin/kubelet");
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    std::fs::remove_file(w.root.join("usr/local/bin/kubelet")).unwrap();

    let v = w.run(&["verify"]);
    assert_eq!(
        (v.code, v.stdout()),
        (
            Some(1),
            "drift    $SANDBOX/host: not linked: /usr/local/bin/kubelet (generation 1 has it; `kbuild switch 1` repairs it)\n".to_owned()
        ),
        "{v:?}"
    );
    let dry = w.ok(&["switch", "1", "--dry-run"]);
    assert!(
        dry.stdout.contains("  add     /usr/local/bin/kubelet\n"),
        "{dry:?}"
    );
    w.ok(&["switch", "1"]);
    assert_listing(&w.listing(), &healthy, "after the switch verify named");
    w.assert_resolves(&g1, "after the switch verify named");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

/// The `help:` line after a failed repair of generation `generation`, whose recipes changed
/// since: `first` is what must happen before the gc that drops it.
fn unrepairable(generation: u64, first: &str) -> String {
    format!(
        "help: make the generation's inputs readable again (at their locked URLs, or with `kbuild verify --repair --override-input NAME=URL`) and run `kbuild verify --repair` again; if generation {generation} cannot be rebuilt (its recipes changed since): {first}then `kbuild gc --keep 1` drops it (with the older generations no root is on), then `kbuild verify --repair`"
    )
}

/// `verify --repair --offline` exits 1, its last line exactly `help`.
#[track_caller]
fn assert_repair_fails_with(w: &World, help: &str) {
    let v = w.run(&["verify", "--repair", "--offline"]);
    assert_eq!(v.code, Some(1), "{v:?}");
    assert_eq!(v.stderr().lines().last().unwrap(), help);
}

/// Review finding F3: the help after a generation that cannot be rebuilt (its recipe changed
/// since) named `kbuild gc` without `--keep`, which dropped nothing, and `verify --repair`
/// failed forever. Now it names the exact commands; following them makes the repair exit 0.
#[test]
fn help_for_an_unrepairable_generation_names_commands_that_work() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.master_plus("extra", &[("/etc/kubernetes/extra", "one\n")]);
    let g2 = w.build(&["extra"], &[], 2);
    w.ok(&["switch", "1"]);
    // The recipe changes: generation 2's rootfs can no longer be rebuilt from it.
    w.master_plus("extra", &[("/etc/kubernetes/extra", "two\n")]);
    flip_byte(&g2.rootfs.join("etc/kubernetes/extra"), 0);

    assert_repair_fails_with(
        &w,
        &unrepairable(
            2,
            "build a newer generation first (`kbuild build RECIPE`), ",
        ),
    );
    // Following it.
    let g3 = w.build(&["extra"], &["--offline"], 3);
    let gc = w.ok(&["gc", "--keep", "1"]);
    assert!(gc.stderr.contains("Removed generation 2"), "{gc:?}");
    repaired_offline(&w);
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
    w.assert_resolves(&g1, "the root stays on generation 1");
    w.ok(&["switch"]);
    w.assert_resolves(&g3, "after the switch to the new generation");
}

/// Designed case (F3): the generation that cannot be rebuilt is the one a root is on, and
/// not the newest: the help names that root's switch, then the exact gc.
#[test]
fn help_names_the_root_on_an_unrepairable_generation() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "one\n")]);
    let g1 = w.build(&["extra"], &[], 1);
    let g2 = w.build(&["master"], &[], 2);
    w.ok(&["switch", "1"]);
    w.master_plus("extra", &[("/etc/kubernetes/extra", "two\n")]);
    flip_byte(&g1.rootfs.join("etc/kubernetes/extra"), 0);
    assert_repair_fails_with(
        &w,
        &unrepairable(
            1,
            "switch root `$SANDBOX/host` away from it (`kbuild switch --root $SANDBOX/host` goes to the newest), ",
        ),
    );
    w.ok(&["switch"]);
    w.ok(&["gc", "--keep", "1"]);
    repaired_offline(&w);
    w.assert_resolves(&g2, "on generation 2");
}

/// Review finding F2: a switch to another generation with the same rootfs (nothing in the
/// root changes) kept the old number in the root's record. Now the plan says so and the root
/// is recorded on the generation asked for.
#[test]
fn switch_to_a_generation_with_the_same_files_records_its_number() {
    let (w, g1, g2) = two_masters();
    let g3 = w.build(&["master"], &[], 3);
    assert_eq!(
        g3.rootfs, g1.rootfs,
        "the same recipes make the same rootfs"
    );
    w.ok(&["switch", "1"]);
    let on_1 = w.listing();
    let dry = w.ok(&["switch", "3", "--dry-run"]);
    assert_eq!(
        dry.stdout(),
        "root $SANDBOX/host: generation 1 -> generation 3 (same files)\n  prerequisites: 5 present\n  nothing to do\n"
    );
    let s = w.ok(&["switch", "3"]);
    assert_eq!(
        s.stderr().lines().last().unwrap(),
        "    Switched root `$SANDBOX/host` to generation 3 (the same files as generation 1: only the record changed)"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.root.join("etc/.kbuild/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["generation"], 3);
    let mut now = w.listing();
    let mut before = on_1.clone();
    now.0.remove("etc/.kbuild/state.json");
    before.0.remove("etc/.kbuild/state.json");
    assert_listing(&now, &before, "only the record changed");
    assert_eq!(
        w.ok(&["switch", "3"]).stderr().lines().last().unwrap(),
        "       Fresh generation 3 is already active"
    );
    // rollback goes from 3 to 2 (it used to go from the recorded 1 to nothing).
    w.ok(&["rollback"]);
    w.assert_resolves(&g2, "after the rollback");
}

/// Review finding F2: `verify --root` suggested switching to the newest other generation
/// present even when that one is damaged (the switch then activated it). Now it suggests the
/// newest one that passes the switch's check, and that switch works.
#[test]
fn verify_root_suggests_only_an_intact_generation() {
    let (w, g1, g2) = two_masters();
    let g3 = w.build(&["master"], &["--set", "IP=10.72.84.171"], 3);
    w.ok(&["switch", "1"]);
    // Generation 3 damaged (a file gone, mtime reset); generation 1's rootfs moved away.
    let bin = g3.rootfs.join("usr/local/bin");
    remove_hidden(&bin, "kubelet");
    std::fs::rename(&g1.rootfs, w.sb.dir.join("moved-rootfs")).unwrap();

    let v = w.run(&["verify"]);
    assert_eq!(v.code, Some(1), "{v:?}");
    let drift: Vec<String> = v
        .stdout()
        .lines()
        .filter(|l| l.starts_with("drift"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        drift,
        [format!(
            "drift    $SANDBOX/host: the active rootfs `$SANDBOX/store/{}` of generation 1 is missing from the store (`kbuild switch 2` puts the root on generation 2, the newest other one present)",
            g1.object()
        )]
    );
    w.run(&["switch", "3"]).assert_error(&modified(
        "switch",
        &g3.object(),
        "`usr/local/bin/kubelet` is missing",
    ));
    w.ok(&["switch", "2"]);
    w.assert_resolves(&g2, "after the suggested switch");
}

/// Designed case (F1): metadata written by an older kbuild has no shape (a switch then checks
/// mtimes only). A build that reuses the rootfs records its shape (version 2) again, and from
/// then on a truncated file with its mtime reset is refused.
#[test]
fn old_metadata_gets_its_shape_from_the_next_build() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    w.ok(&["switch", "2"]);
    let meta_path =
        w.sb.store
            .join(".kbuild/meta")
            .join(format!("{}.json", g1.object()));
    let read = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap()
    };
    let mut meta = read();
    assert_eq!(meta["version"], 2);
    assert!(meta["shape"]["usr/local/bin/kubelet"].is_object(), "{meta}");
    let v2 = meta.clone();
    meta["version"] = 1.into();
    meta.as_object_mut().unwrap().remove("shape");
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();

    // The next build reusing the rootfs records the shape again.
    let r = w.ok(&["build", "master", "--offline"]);
    assert_eq!(r.rootfs(), g1.rootfs);
    assert_eq!(read(), v2);

    // Now a truncated file with its mtime reset is refused.
    let f = g1.rootfs.join("kbuild.json");
    let len = std::fs::metadata(&f).unwrap().len();
    truncate_hidden(&f, 1, 0o644);
    let before = w.listing();
    w.run(&["switch", "1"]).assert_error(&modified(
        "switch",
        &g1.object(),
        &format!("`kbuild.json` has 1 bytes, not {len}"),
    ));
    assert_listing(&w.listing(), &before, "after the refused switch");
}
