//! Store faults: a full disk during a build, objects deleted or modified behind kbuild's back,
//! scratch entries left by a killed build, a read-only store.
//!
//! A full disk is a tmpfs of a few hundred KB mounted as the store (this suite runs as root,
//! as CI does); where mounting is refused the `KBUILD_FAULT_ENOSPC=1` hook stands in, and the
//! test prints which path it took. Likewise a read-only store is a read-only bind mount, or
//! `chattr +i` where mounting is refused. Every mount is undone when the test ends. The case
//! table is `hostile::STORE`.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use hostile::*;

/// A sandbox whose kubernetes-server input is a pinned `file://` copy of the fixture.
fn pinned() -> (Sandbox, String) {
    let sb = Sandbox::new();
    let f = fixture();
    let url = write_archive(&sb, "pinned", &f.gz);
    let common = sb.recipes.join("kube-common.toml");
    let text = std::fs::read_to_string(&common).unwrap();
    std::fs::write(&common, text.replace(UPSTREAM_URL, &url)).unwrap();
    sb.write_lock(&[(INPUT, &[&url], &f.sha256, Some(f.gz.len() as u64))]);
    let shown = url.replace(&sb.dir.display().to_string(), "$SANDBOX");
    (sb, shown)
}

/// The store object whose name ends with `-NAME` (a member or rendered file, or the rootfs).
fn object_named(store: &Path, name: &str) -> String {
    let found: Vec<String> = objects(store)
        .into_iter()
        .filter(|o| o[33..] == *name)
        .collect();
    assert_eq!(found.len(), 1, "objects named {name}: {found:?}");
    found[0].clone()
}

/// Removes a store object as an administrator would: directories made writable, files left
/// alone (a rootfs's files are hardlinks to other objects).
fn remove_object(path: &Path) {
    if path.is_dir() {
        for e in common::walk_any(path) {
            let e = e.unwrap();
            if e.file_type().is_dir() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        std::fs::remove_dir_all(path).unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
}

/// Every file in the store's objects is read-only (0444, or 0555 when executable) and every
/// directory 0555: the store's invariant.
#[track_caller]
fn assert_objects_read_only(store: &Path) {
    let mut wrong = Vec::new();
    for o in objects(store) {
        for e in common::walk_any(store.join(&o)) {
            let e = e.unwrap();
            let mode = e.metadata().unwrap().mode() & 0o7777;
            let ok = if e.file_type().is_dir() {
                mode == 0o555
            } else if e.file_type().is_file() {
                mode == 0o444 || mode == 0o555
            } else {
                true
            };
            if !ok {
                wrong.push(format!(
                    "{} {mode:o}",
                    e.path().strip_prefix(store).unwrap().display()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "store objects that are not read-only: {wrong:#?}"
    );
}

/// Checks the run `r`, which printed `output`, against case `case` of `hostile::STORE`.
#[track_caller]
fn check(case: &str, r: &Run, output: &str) {
    check_case(STORE, case, outcome_of(r, false), output);
}

/// The store holds no `.tmp-*` entry and `kbuild verify` finds it sound.
#[track_caller]
fn assert_sound(sb: &Sandbox) {
    assert_no_tmp(&sb.store);
    verify_ok(sb);
}

/// `kbuild gc` succeeds, quietly, removing exactly one temporary entry (and keeping the
/// one archive the build kept). The run.
#[track_caller]
fn gc_removes_one_tmp_entry(sb: &Sandbox, freed: &str) -> Run {
    let g = sb.kbuild(&["gc"]);
    g.assert_success();
    assert_eq!(
        (g.stdout.as_str(), g.stderr.as_str()),
        (
            format!(
                "0 generations, 0 objects and 1 temporary entry removed, {freed} freed\n{}",
                gc_archives_line(1, fixture().gz.len())
            )
            .as_str(),
            ""
        )
    );
    g
}

fn verify_ok(sb: &Sandbox) {
    let v = verify(sb);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
}

/// `kbuild verify`'s status line without its timing: `    Verified N objects`.
fn verified_count(stderr: &str) -> String {
    let line = stderr.lines().next().unwrap_or_default();
    line.split(',').next().unwrap_or_default().to_owned()
}

fn set_mtime(path: &Path, secs: i64) {
    use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, utimensat};
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// What a build says after re-creating the missing object `name` of generation 1.
fn restored(name: &str) -> String {
    format!(
        "     Rebuilt {name} (it was missing from the store)\n    Restored generation 1: its objects are complete again\n"
    )
}

/// `kbuild verify`'s line for object `name` whose content now hashes to `now`.
fn corrupt(name: &str, now: &str) -> String {
    format!(
        "corrupt  {name}: content hash is {now}, its name says {} (`kbuild verify --repair` repairs it)\n",
        &name[..32]
    )
}

/// The error of `build master` refusing store object `name`, whose mtime changed.
fn modified_mtime(name: &str) -> String {
    format!(
        "error: cannot build master\n  caused by: store object `$SANDBOX/store/{name}` was modified after it was added (its modification time changed)\n{MODIFIED_HELP}"
    )
}

const MODIFIED_HELP: &str = "help: run `kbuild verify --repair`: it replaces damaged objects with copies rebuilt from their sources\n";

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_full_while_extracting() {
    let (sb, url) = pinned();
    let gz_len = fixture().gz.len();
    // kube-apiserver alone (1.3 MB) does not fit in 400 KB.
    let mount = Mounted::tmpfs(&sb.store, "400k");
    let (r, expected_cause) = match &mount {
        Ok(_) => {
            eprintln!("full disk: a 400 KB tmpfs mounted as the store");
            (
                sb.kbuild(&["build", "master"]),
                "failed to write to file `$SANDBOX/store/.tmp-work-XXXXXX/attempt-1/member-1`: No space left on device (os error 28)",
            )
        }
        Err(e) => {
            eprintln!("full disk: mounting refused ({e}); using KBUILD_FAULT_ENOSPC=1");
            (
                kbuild_env(&sb, &[("KBUILD_FAULT_ENOSPC", "1")], &["build", "master"]),
                "failed to write `$SANDBOX/store/.tmp-work-XXXXXX/attempt-1/member-1`: No space left on device (os error 28)",
            )
        }
    };
    let stderr = mask_tmp(&r.stderr());
    assert_eq!(
        (r.code, r.stdout.as_str(), stderr.as_str()),
        (
            Some(1),
            "",
            format!(
                "{}error: cannot build master\n  caused by: cannot write extracted files\n  caused by: {expected_cause}\n",
                transfer(&url, gz_len)
            )
            .as_str()
        )
    );
    assert_eq!(objects(&sb.store), Default::default(), "a partial object");
    assert_no_tmp(&sb.store);
    assert_eq!(
        std::fs::read_dir(sb.store.join(".kbuild/index"))
            .unwrap()
            .count(),
        0
    );
    check("disk_full_while_extracting", &r, &stderr);
    drop(mount);
}

/// The disk fills up at every stage of a build in turn — extracting members, writing their
/// metadata, rendering files, assembling the rootfs, recording the generation: each build
/// either succeeds or fails naming ENOSPC, and never leaves a `.tmp-*` entry or an object
/// that does not verify.
#[test]
fn disk_full_at_every_stage_leaves_a_valid_store() {
    let sizes = [
        "16k", "64k", "256k", "1300k", "1360k", "1380k", "1400k", "1420k", "1440k", "1460k",
        "1480k", "1500k", "1540k", "1600k", "2m",
        // The kept archive (1.6 MiB) is written beside the members.
        "2800k", "2900k", "3000k", "3100k", "3200k", "3300k", "3400k", "3600k", "8m",
    ];
    let mut outcomes = Vec::new();
    let mut last = None;
    for size in sizes {
        let (sb, _) = pinned();
        let mount = match Mounted::tmpfs(&sb.store, size) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("full disk: mounting refused ({e}); using KBUILD_FAULT_ENOSPC=1");
                let r = kbuild_env(&sb, &[("KBUILD_FAULT_ENOSPC", "1")], &["build", "master"]);
                assert_eq!(r.code, Some(1));
                assert!(r.stderr.contains("No space left on device (os error 28)"));
                assert_sound(&sb);
                check_case(
                    STORE,
                    "disk_full_at_every_stage_leaves_a_valid_store",
                    hostile::Outcome::Success,
                    "",
                );
                return;
            }
        };
        let r = sb.kbuild(&["build", "master"]);
        match r.code {
            Some(0) => {
                let rootfs = r.rootfs();
                assert!(rootfs.join("usr/local/bin/kube-apiserver").is_file());
                outcomes.push((size, "built".to_owned()));
            }
            Some(1) => {
                assert!(
                    r.stderr.contains("No space left on device (os error 28)"),
                    "size {size}: {}",
                    r.stderr
                );
                let cause = r.stderr.lines().last().unwrap_or_default().to_owned();
                outcomes.push((
                    size,
                    mask_tmp(&cause.replace(&sb.dir.display().to_string(), "$SANDBOX")),
                ));
            }
            other => panic!("size {size}: exit {other:?}\n{}", r.stderr),
        }
        assert_sound(&sb);
        assert_objects_read_only(&sb.store);
        last = Some(r);
        drop(mount);
    }
    eprintln!("full disk at every stage (tmpfs size → outcome):");
    for (size, o) in &outcomes {
        eprintln!("  {size:>6} {o}");
    }
    let failed = outcomes.iter().filter(|(_, o)| o != "built").count();
    assert!(failed >= 3, "too few sizes failed: {outcomes:?}");
    assert_eq!(outcomes.last().unwrap().1, "built");
    // The failures happened at different places.
    let places: std::collections::BTreeSet<&String> = outcomes
        .iter()
        .filter(|(_, o)| o != "built")
        .map(|(_, o)| o)
        .collect();
    assert!(places.len() >= 2, "{outcomes:?}");
    check(
        "disk_full_at_every_stage_leaves_a_valid_store",
        last.as_ref().unwrap(),
        "",
    );
}

// ---------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------

#[test]
fn deleted_member_object_is_recreated() {
    let (sb, _) = pinned();
    let rootfs = sb.build_ok(&[]);
    let kubectl = object_named(&sb.store, "kubectl");
    let bytes = std::fs::read(sb.store.join(&kubectl)).unwrap();
    std::fs::remove_file(sb.store.join(&kubectl)).unwrap();

    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    // Re-created, and said so (issue 7: not "Fresh … up to date").
    assert_eq!(
        r.stderr(),
        format!(
            "{}{}",
            // From the archive the store kept, not from the pinned URL.
            transfer(
                &format!("file://$SANDBOX/store/{}", kept_fixture()),
                fixture().gz.len()
            ),
            restored(&kubectl)
        )
    );
    assert_eq!(r.rootfs(), rootfs);
    let again = sb.store.join(&kubectl);
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    let m = std::fs::metadata(&again).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o555, 1));
    assert_sound(&sb);
    assert_objects_read_only(&sb.store);
    check("deleted_member_object_is_recreated", &r, &r.stderr);
}

#[test]
fn deleted_rootfs_object_is_reassembled() {
    let (sb, _) = pinned();
    let rootfs = sb.build_ok(&[]);
    let before = shape(&listing(&rootfs));
    // Deleting needs write permission on the directories only: the files are hardlinks to
    // other objects, whose modes must not change.
    remove_object(&rootfs);

    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    // From the store alone: nothing read; re-created, and said so.
    let name = rootfs.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(r.stderr(), restored(&name));
    assert_eq!(r.rootfs(), rootfs);
    assert_eq!(shape(&listing(&rootfs)), before);
    assert_sound(&sb);
    assert_objects_read_only(&sb.store);
    check("deleted_rootfs_object_is_reassembled", &r, &r.stderr);
}

#[test]
fn flipped_byte_is_found_by_verify_and_refused_by_build() {
    let (sb, _) = pinned();
    let rootfs = sb.build_ok(&[]);
    let kubectl = object_named(&sb.store, "kubectl");
    let rootfs_name = rootfs.file_name().unwrap().to_string_lossy().into_owned();
    let count = objects(&sb.store).len();
    flip_byte(&sb.store.join(&kubectl), 100);

    // verify names both objects holding the inode: the member and the rootfs.
    let bytes = std::fs::read(sb.store.join(&kubectl)).unwrap();
    let kubectl_now = kbuild::store::Node::file(&bytes, true)
        .digest()
        .store_hash();
    let rootfs_now = tree_node(&rootfs).digest().store_hash();
    let mut expected = [
        corrupt(&kubectl, &kubectl_now),
        corrupt(&rootfs_name, &rootfs_now),
    ];
    expected.sort();
    let v = verify(&sb);
    assert_eq!(
        (v.code, v.stdout.as_str(), verified_count(&v.stderr)),
        (
            Some(1),
            expected.concat().as_str(),
            format!("    Verified {count} objects")
        ),
        "{v:?}"
    );
    assert!(
        v.stderr
            .ends_with("\nerror: verification found 2 problem(s)\nhelp: `kbuild verify --repair` replaces damaged objects with good copies rebuilt from their sources, re-creates missing ones and drops wrong push cache entries; then `kbuild verify` again\n"),
        "{}",
        v.stderr
    );

    // A build using the object refuses it.
    let before = store_shape(&sb.store);
    let r = sb.kbuild(&["build", "master"]);
    let msg = modified_mtime(&kubectl);
    r.assert_error(&msg);
    assert_eq!(store_shape(&sb.store), before);
    check(
        "flipped_byte_is_found_by_verify_and_refused_by_build",
        &r,
        &r.stderr(),
    );

    // Following the help literally: `kbuild verify --repair` replaces both objects (issue 7:
    // it used to delete them) by copies rebuilt from generation 1's sources, each in one
    // step; they never leave their names. The next build reuses them, and the store is as
    // valid as before: every object read-only, modes of shared inodes untouched.
    // (The sandbox's KBUILD_ROOT names a root; it must exist for verify to check it.)
    std::fs::create_dir_all(sb.dir.join("root")).unwrap();
    let v = sb.kbuild(&["verify", "--repair"]);
    assert_eq!(
        (v.code, v.stdout.as_str()),
        (
            Some(0),
            format!("{}ok\n", expected.concat())
                .replace(" (`kbuild verify --repair` repairs it)", "")
                .as_str()
        ),
        "what --repair fixed is no longer a problem: {v:?}"
    );
    let mut replaced: Vec<String> = v.stderr().lines().skip(3).map(str::to_owned).collect();
    replaced.sort();
    let mut expected_replaced = vec![
        format!("    Replaced {kubectl} (by a good copy rebuilt from generation 1's sources)"),
        format!("    Replaced {rootfs_name} (by a good copy rebuilt from generation 1's sources)"),
    ];
    expected_replaced.sort();
    assert_eq!(replaced, expected_replaced, "{}", v.stderr());
    assert!(
        v.stderr().contains(&transfer(
            &format!("file://$SANDBOX/store/{}", kept_fixture()),
            fixture().gz.len()
        )),
        "{}",
        v.stderr()
    );
    assert_eq!(objects(&sb.store).len(), count);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Fresh generation 1 is up to date\n");
    verify_ok(&sb);
    assert_objects_read_only(&sb.store);
}

#[test]
fn flipped_byte_with_restored_mtime_is_found_by_verify() {
    let (sb, _) = pinned();
    let rootfs = sb.build_ok(&[]);
    let apiserver = object_named(&sb.store, "kube-apiserver");
    let path = sb.store.join(&apiserver);
    let size = std::fs::metadata(&path).unwrap().len();
    // Deep inside, past the first MiB; size and mtime as they were.
    flip_byte(&path, size - 7);
    set_mtime(&path, 1);
    let v = verify(&sb);
    assert_eq!(v.code, Some(1), "{v:?}");
    let rootfs_name = rootfs.file_name().unwrap().to_string_lossy().into_owned();
    let named: Vec<&str> = v
        .stdout
        .lines()
        .map(|l| l.trim_start_matches("corrupt  ").split(':').next().unwrap())
        .collect();
    let mut expected = vec![apiserver.as_str(), rootfs_name.as_str()];
    expected.sort();
    assert_eq!(named, expected, "{}", v.stdout);
    check(
        "flipped_byte_with_restored_mtime_is_found_by_verify",
        &v,
        &v.stdout,
    );
}

#[test]
fn object_replaced_by_a_symlink_is_found_by_verify() {
    let s = Sentinel::new();
    let (sb, _) = pinned();
    sb.build_ok(&[]);
    let kubectl = object_named(&sb.store, "kubectl");
    let path = sb.store.join(&kubectl);
    // The planted target even has the right bytes.
    std::fs::copy(&path, s.path().join("kubectl")).unwrap();
    let sentinel_before = s.snapshot();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(s.path().join("kubectl"), &path).unwrap();

    let v = verify(&sb);
    assert_eq!(v.code, Some(1), "{v:?}");
    let target = s
        .path()
        .join("kubectl")
        .into_os_string()
        .into_encoded_bytes();
    let now = kbuild::store::Node::Symlink { target }
        .digest()
        .store_hash();
    assert!(v.stdout.contains(&corrupt(&kubectl, &now)), "{}", v.stdout);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(&modified_mtime(&kubectl));
    s.assert_untouched(&sentinel_before);
    check(
        "object_replaced_by_a_symlink_is_found_by_verify",
        &r,
        &r.stderr(),
    );
}

// ---------------------------------------------------------------------------------------------
// Crashes and permissions
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_tmp_entry_is_ignored_and_collected() {
    let (sb, _) = pinned();
    sb.build_ok(&[]);
    // What a build killed while extracting leaves: a read-only scratch dir with a member.
    let stale = sb.store.join(".tmp-stale0");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("member-1"), b"#!half a binary").unwrap();
    std::fs::set_permissions(
        stale.join("member-1"),
        std::fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o555)).unwrap();

    let r = sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Built generation 2\n");
    assert!(
        stale.join("member-1").is_file(),
        "a build touched the stale entry"
    );
    verify_ok(&sb);

    let g = gc_removes_one_tmp_entry(&sb, "15 B");
    assert!(!stale.exists());
    assert_sound(&sb);
    check("stale_tmp_entry_is_ignored_and_collected", &r, &g.stdout);
}

/// review18 MED-10: a `.tmp-*` entry that is a symlink to a directory outside the store is
/// unlinked by gc, never followed: the directory keeps its modes and its files, and gc
/// succeeds instead of failing on a path-less error.
#[test]
fn gc_unlinks_a_tmp_symlink_without_following_it() {
    let (sb, _) = pinned();
    sb.build_ok(&[]);
    let victim = sb.dir.join("victim");
    std::fs::create_dir_all(victim.join("sub")).unwrap();
    std::fs::write(victim.join("sub/g"), b"not the store's").unwrap();
    std::fs::set_permissions(victim.join("sub"), std::fs::Permissions::from_mode(0o500)).unwrap();
    let link = sb.store.join(".tmp-gc-evil");
    std::os::unix::fs::symlink(&victim, &link).unwrap();

    gc_removes_one_tmp_entry(&sb, "0 B");
    assert!(link.symlink_metadata().is_err(), "the symlink stayed");
    let mode = victim.join("sub").metadata().unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o500, "gc chmod-ed a directory outside the store");
    assert_eq!(
        std::fs::read(victim.join("sub/g")).unwrap(),
        b"not the store's"
    );
    std::fs::set_permissions(victim.join("sub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_sound(&sb);
}

/// review18 LOW: the sweep of a writer says what a small dead scratch entry freed in bytes,
/// not `0.0 MiB`; a `.tmp-work-*` symlink is no scratch entry: left alone, not followed.
#[test]
fn the_sweep_counts_a_small_entry_in_bytes_and_leaves_a_symlink_alone() {
    let (sb, _) = pinned();
    sb.build_ok(&[]);
    let dead = sb.store.join(".tmp-work-dead00");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("member-1"), b"12345").unwrap();
    let victim = sb.dir.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("g"), b"not the store's").unwrap();
    let link = sb.store.join(".tmp-work-evil00");
    std::os::unix::fs::symlink(&victim, &link).unwrap();

    let r = sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        "     Removed 1 temporary entry a killed kbuild left, 5 B freed\n       Built generation 2\n"
    );
    assert!(!dead.exists());
    assert!(link.symlink_metadata().unwrap().is_symlink());
    assert_eq!(std::fs::read(victim.join("g")).unwrap(), b"not the store's");
}

#[test]
fn build_killed_mid_fetch_leaves_only_a_tmp_entry() {
    let server = EvilServer::start();
    let path = TARBALL_PATH;
    let gz = fixture().gz.clone();
    // The first 1.1 MiB reach the build: its keeper saves them and its decoder starts on the
    // first member; then the server goes silent and the build is killed.
    server.script(
        path,
        vec![
            Reply::StallAfter {
                body: gz.clone(),
                keep: (1 << 20) + (100 << 10),
                stall: Duration::from_secs(60),
            },
            Reply::Body(gz.clone()),
        ],
    );
    let sb = Sandbox::new();
    let url = server.url(path);
    let common = sb.recipes.join("kube-common.toml");
    let text = std::fs::read_to_string(&common).unwrap();
    std::fs::write(&common, text.replace(UPSTREAM_URL, &url)).unwrap();
    let f = fixture();
    sb.write_lock(&[(INPUT, &[&url], &f.sha256, Some(f.gz.len() as u64))]);

    let mut child = sb.spawn(&["build", "master"]);
    let started = Instant::now();
    // Killed once the scratch entry holds bytes, not only once it exists: files are created
    // before their first chunk is written (stop 18's red CI run killed it between the two).
    let member = loop {
        let found = tmp_entries(&sb.store)
            .into_iter()
            .map(PathBuf::from)
            .find(|t| t.join("attempt-1/member-1").exists())
            .map(|t| {
                let bytes = file_bytes(&t);
                (t, bytes)
            });
        if let Some((t, bytes)) = &found
            && *bytes > 0
        {
            break t.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the build never started extracting: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(objects(&sb.store), Default::default());
    let left = tmp_entries(&sb.store);
    assert_eq!(left, [member.display().to_string()], "{left:?}");

    // All it wrote before it was killed (more than the poll saw, maybe).
    let bytes = file_bytes(&member);

    // The killed build's lock on its scratch entry died with it: the next build removes the
    // entry and says what it freed (review13 LOW-10).
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert!(
        r.stderr().contains(&format!(
            "Removed 1 temporary entry a killed kbuild left, {} freed\n",
            human_bytes(bytes)
        )),
        "{}",
        r.stderr
    );
    assert!(!member.exists(), "the scratch entry of a dead build stayed");
    assert_sound(&sb);

    let g = sb.kbuild(&["gc"]);
    g.assert_success();
    assert!(
        g.stdout
            .starts_with("0 generations, 0 objects and 0 temporary entries removed, 0 B freed\n"),
        "{}",
        g.stdout
    );
    assert_sound(&sb);
    assert_eq!(server.count(path), 2);
    check(
        "build_killed_mid_fetch_leaves_only_a_tmp_entry",
        &r,
        &g.stdout,
    );
}

#[test]
fn read_only_store_is_a_clear_error() {
    let (sb, _) = pinned();
    sb.build_ok(&[]);
    let before = store_shape(&sb.store);
    let (r, expected) = match Mounted::read_only(&sb.store) {
        Ok(m) => {
            eprintln!("read-only store: a read-only bind mount");
            let r = sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"]);
            drop(m);
            (
                r,
                "error: cannot build master\n  caused by: failed to create a build directory in `$SANDBOX/store`: Read-only file system (os error 30)\n",
            )
        }
        Err(e) => {
            eprintln!("read-only store: mounting refused ({e}); using chattr +i");
            let mut dirs = vec![sb.store.clone(), sb.store.join(".kbuild")];
            for d in ["index", "meta", "profiles", "profiles/default"] {
                dirs.push(sb.store.join(".kbuild").join(d));
            }
            let guard = Immutable::new(&dirs).expect("neither a mount nor chattr +i works");
            let r = sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"]);
            drop(guard);
            (
                r,
                "error: cannot build master\n  caused by: failed to create a build directory in `$SANDBOX/store`: Operation not permitted (os error 1)\n",
            )
        }
    };
    r.assert_error(&mask_tmp(expected));
    assert_eq!(store_shape(&sb.store), before);
    assert_no_tmp(&sb.store);
    // Writable again: the same build works.
    sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"])
        .assert_success();
    check("read_only_store_is_a_clear_error", &r, &r.stderr());
}

/// A rootfs, or its `etc/`, replaced by a symlink to a copy with the right files even, is
/// never read through: export (so push), diff, show and switch refuse it as damage with the
/// help to repair it, nothing is exported, and the root is left as it was (review19 MED-3/4:
/// export and push shipped a rootfs whose `etc/` was a link; show listed what it pointed at).
#[test]
fn a_rootfs_replaced_by_a_symlink_is_never_followed() {
    for (plant, what) in [
        ("", "the object is not a directory"),
        ("etc", "`etc` is not a directory"),
    ] {
        let s = Sentinel::new();
        let w = common::world::World::new();
        let g1 = w.build(&["master"], &[], 1);
        w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
        w.ok(&["switch", "2"]);
        let planted = match plant {
            "" => g1.rootfs.clone(),
            _ => g1.rootfs.join(plant),
        };
        let copy = s.path().join("copy");
        std::fs::rename(&planted, &copy).unwrap();
        std::os::unix::fs::symlink(&copy, &planted).unwrap();
        let before = (s.snapshot(), w.listing());

        let cause = format!(
            "  caused by: store object `$SANDBOX/store/{}` was modified after it was added ({what})\n{MODIFIED_HELP}",
            g1.object()
        );
        let out = w.sb.dir.join("usb");
        for (args, first) in [
            (
                &["export", "1", "--output", out.to_str().unwrap()][..],
                "cannot export generation 1 of profile `default` to `$SANDBOX/usb`",
            ),
            (&["diff", "1", "2"], "cannot compare generations"),
            (
                &["show", "1"],
                "cannot read the rootfs of generation 1 of profile `default`",
            ),
            (&["switch", "1"], "cannot switch root `$SANDBOX/host`"),
        ] {
            w.run(args)
                .assert_error(&format!("error: {first}\n{cause}"));
        }
        assert!(!out.exists(), "{plant:?}");
        s.assert_untouched(&before.0);
        assert_eq!(w.listing(), before.1, "{plant:?}: the root changed");
    }
}

/// A generation record copied or renamed by hand (review19 HIGH-1: `cp 2.json 1.json`, then
/// `gc --keep 1` deleted generation 2 and all its objects, and `switch 1` planned 2): every
/// command that reads it refuses, naming the record, and nothing is removed.
#[test]
fn a_generation_record_under_another_number_is_refused_not_collected() {
    let w = common::world::World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "IP=10.72.84.170"], 2);
    let records = w.store().join(".kbuild/profiles/default");
    // And a link to a copy outside the store, as the review did: the same refusal.
    let copy = w.sb.dir.join("copy-of-2.json");
    std::fs::copy(records.join("2.json"), &copy).unwrap();
    for plant in ["copy", "link"] {
        std::fs::remove_file(records.join("1.json")).unwrap();
        match plant {
            "copy" => drop(std::fs::copy(&copy, records.join("1.json")).unwrap()),
            _ => std::os::unix::fs::symlink(&copy, records.join("1.json")).unwrap(),
        }
        let before = listing(&w.store());
        let cause = "generation record `$SANDBOX/store/.kbuild/profiles/default/1.json` says it is generation 2, but its name says 1\nhelp: the record was copied or renamed by hand (kbuild writes `N.json` for generation N); nothing was changed: move `$SANDBOX/store/.kbuild/profiles/default/1.json` back to `2.json`, or remove it if generation 2 has its own record\n";
        for (args, first) in [
            (
                &["gc", "--keep", "1"][..],
                "error: garbage collection failed\n  caused by: ",
            ),
            (
                &["switch", "1"],
                "error: cannot switch root `$SANDBOX/host`\n  caused by: ",
            ),
            (
                &["generations"],
                "error: cannot list generations\n  caused by: ",
            ),
        ] {
            let r = w.run(args);
            assert_eq!(
                (r.code, r.stderr()),
                (Some(1), format!("{first}{cause}")),
                "{plant}: {args:?}"
            );
        }
        // verify checks the objects first (its "Verified" line), then stops at the record.
        let r = w.run(&["verify"]);
        assert_eq!(r.code, Some(1), "{plant}: {r:?}");
        assert!(
            r.stderr().ends_with(&format!("\nerror: {cause}")),
            "{plant}: {r:?}"
        );
        assert_eq!(listing(&w.store()), before, "{plant}: the store changed");
    }
}

cases_tested!(STORE;
    disk_full_while_extracting,
    disk_full_at_every_stage_leaves_a_valid_store,
    deleted_member_object_is_recreated,
    deleted_rootfs_object_is_reassembled,
    flipped_byte_is_found_by_verify_and_refused_by_build,
    flipped_byte_with_restored_mtime_is_found_by_verify,
    object_replaced_by_a_symlink_is_found_by_verify,
    stale_tmp_entry_is_ignored_and_collected,
    build_killed_mid_fetch_leaves_only_a_tmp_entry,
    read_only_store_is_a_clear_error,
);

/// The bytes of the files below `dir`.
fn file_bytes(dir: &Path) -> u64 {
    common::walk_any(dir)
        .into_iter()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
