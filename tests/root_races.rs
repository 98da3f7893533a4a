//! Root races: symlinks planted in a `--root` where a switch is about to create a directory or
//! a link — `etc/kubernetes`, `etc/systemd/system`, `usr/local/bin`, `etc/.kbuild` and others —
//! all pointing at a sentinel directory in `/tmp`.
//!
//! A switch must refuse with a message naming the planted path and change nothing: the root
//! (every entry, with modes and mtimes) and the sentinel are exactly as before. Where kbuild
//! legitimately replaces what was planted (a link at a managed path with `--adopt`, a stale
//! flip point), it moves or replaces the link itself and never writes through it. The case
//! table is `hostile::ROOT`.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::*;
use hostile::*;

/// The master's host prerequisites (relative to a root).
const PREREQS: [&str; 5] = [
    "etc/kubernetes/token.csv",
    "etc/kubernetes/ssl/ca.pem",
    "etc/kubernetes/ssl/ca-key.pem",
    "etc/kubernetes/ssl/kubernetes.pem",
    "etc/kubernetes/ssl/kubernetes-key.pem",
];

struct World {
    sb: Sandbox,
    root: PathBuf,
    sentinel: Sentinel,
}

impl World {
    /// A pinned `file://` fixture, generation 1 built, an empty root `$SANDBOX/host`, and a
    /// sentinel holding copies of the prerequisites (so a root whose `etc` or
    /// `etc/kubernetes` leads there passes the prerequisite check).
    fn new() -> World {
        let sb = Sandbox::new();
        let f = fixture();
        let url = write_archive(&sb, "pinned", &f.gz);
        let common = sb.recipes.join("kube-common.toml");
        let text = std::fs::read_to_string(&common).unwrap();
        std::fs::write(&common, text.replace(UPSTREAM_URL, &url)).unwrap();
        sb.write_lock(&[(INPUT, &[&url], &f.sha256, Some(f.gz.len() as u64))]);
        sb.build_ok(&[]);
        let root = sb.dir.join("host");
        std::fs::create_dir(&root).unwrap();
        let sentinel = Sentinel::new();
        for p in PREREQS {
            for base in [sentinel.path().to_owned(), sentinel.path().join("etc")] {
                let rel = if base.ends_with("etc") {
                    p.trim_start_matches("etc/")
                } else {
                    p.trim_start_matches("etc/kubernetes/")
                };
                let dest = base.join(rel);
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::write(dest, format!("{p} (sentinel copy)\n")).unwrap();
            }
        }
        World { sb, root, sentinel }
    }

    /// The prerequisites, as real files in the root (skipping those under `except`).
    fn prereqs(&self, except: &str) {
        for p in PREREQS {
            if !except.is_empty() && p.starts_with(except) {
                continue;
            }
            let dest = self.root.join(p);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::write(dest, format!("{p}\n")).unwrap();
        }
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.root.join(rel)).unwrap();
    }

    /// Plants `rel` → `target`.
    fn plant(&self, rel: &str, target: &Path) {
        symlink(target, self.root.join(rel)).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut full = vec!["--root", self.root.to_str().unwrap()];
        full.extend_from_slice(args);
        self.sb.kbuild(&full)
    }
}

fn root_listing(root: &Path) -> Vec<Listed> {
    listing(root)
}

/// A switch that must be refused because of `rel`: the exact error, and neither the root
/// nor the sentinel changed.
#[track_caller]
fn refused(case: &str, w: &World, rel: &str) {
    let root_before = root_listing(&w.root);
    let sentinel_before = w.sentinel.snapshot();
    let r = w.run(&["switch"]);
    r.assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: `$SANDBOX/host/{rel}` is a symlink or not a directory; kbuild will not write through it\nhelp: kbuild needs a real directory at `$SANDBOX/host/{rel}`: move what is there away and run the command again\n"
    ));
    assert_eq!(root_listing(&w.root), root_before, "the root changed");
    w.sentinel.assert_untouched(&sentinel_before);
    // --adopt does not change that.
    let r2 = w.run(&["switch", "--adopt"]);
    assert_eq!(r2.code, Some(1), "{r2:?}");
    assert_eq!(root_listing(&w.root), root_before, "the root changed");
    w.sentinel.assert_untouched(&sentinel_before);
    check_case(ROOT, case, outcome_of(&r, false), &r.stderr());
}

#[test]
fn etc_kubernetes_is_a_symlink() {
    let w = World::new();
    w.mkdir("etc");
    w.plant("etc/kubernetes", w.sentinel.path());
    refused("etc_kubernetes_is_a_symlink", &w, "etc/kubernetes");
}

#[test]
fn etc_systemd_system_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("etc/systemd");
    w.plant("etc/systemd/system", w.sentinel.path());
    refused("etc_systemd_system_is_a_symlink", &w, "etc/systemd/system");
}

#[test]
fn usr_local_bin_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("usr/local");
    w.plant("usr/local/bin", w.sentinel.path());
    refused("usr_local_bin_is_a_symlink", &w, "usr/local/bin");
}

#[test]
fn usr_local_bin_is_a_dangling_symlink() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("usr/local");
    w.plant("usr/local/bin", &w.sentinel.path().join("not-yet"));
    refused("usr_local_bin_is_a_dangling_symlink", &w, "usr/local/bin");
    assert!(!w.sentinel.path().join("not-yet").exists());
}

#[test]
fn usr_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.plant("usr", w.sentinel.path());
    refused("usr_is_a_symlink", &w, "usr");
}

#[test]
fn etc_is_a_symlink() {
    let w = World::new();
    w.plant("etc", &w.sentinel.path().join("etc"));
    refused("etc_is_a_symlink", &w, "etc");
}

#[test]
fn etc_kbuild_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.plant("etc/.kbuild", w.sentinel.path());
    refused("etc_kbuild_is_a_symlink", &w, "etc/.kbuild");
}

/// `etc/.kbuild` leads to a directory holding a journal of an "interrupted switch": kbuild
/// must not act on state read through the link (here: directories to create in the root).
#[test]
fn journal_planted_behind_a_symlinked_state_dir() {
    let w = World::new();
    w.prereqs("");
    let state = |dirs: &[&str]| {
        serde_json::json!({
            "version": 1, "store": null, "generation": null, "rootfs": null,
            "managed": [], "created_dirs": dirs, "adopted": []
        })
    };
    let mut to = state(&["/etc/planted-by-journal", "/usr/planted-by-journal"]);
    to["rootfs"] = serde_json::json!(w.sentinel.path());
    let journal = serde_json::json!({ "version": 1, "from": state(&[]), "to": to });
    std::fs::write(
        w.sentinel.path().join("journal.json"),
        serde_json::to_vec_pretty(&journal).unwrap(),
    )
    .unwrap();
    w.plant("etc/.kbuild", w.sentinel.path());
    refused(
        "journal_planted_behind_a_symlinked_state_dir",
        &w,
        "etc/.kbuild",
    );
    assert!(!w.root.join("etc/planted-by-journal").exists());
}

#[test]
fn etc_kbuild_adopted_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("etc/.kbuild");
    w.plant("etc/.kbuild/adopted", w.sentinel.path());
    // kbuild's own entry of the wrong kind: named, with the exact way out, before anything
    // is written (with or without `--adopt`).
    let root_before = root_listing(&w.root);
    let sentinel_before = w.sentinel.snapshot();
    let mut first = None;
    for args in [&["switch"][..], &["switch", "--adopt"]] {
        let r = w.run(args);
        r.assert_error(
            "error: cannot switch root `$SANDBOX/host`\n  caused by: kbuild's own entry `$SANDBOX/host/etc/.kbuild/adopted` is a symlink, which kbuild never makes; nothing was changed\nhelp: move it away (`mv $SANDBOX/host/etc/.kbuild/adopted $SANDBOX/host/etc/.kbuild/adopted.bad`), then run the command again\n",
        );
        assert_eq!(root_listing(&w.root), root_before, "the root changed");
        w.sentinel.assert_untouched(&sentinel_before);
        first.get_or_insert(r);
    }
    let r = first.unwrap();
    check_case(
        ROOT,
        "etc_kbuild_adopted_is_a_symlink",
        outcome_of(&r, false),
        &r.stderr(),
    );
}

/// A link planted at a path kbuild manages is an unmanaged file like any other.
#[test]
fn managed_file_path_is_a_symlink() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("usr/local/bin");
    std::fs::write(w.sentinel.path().join("kubectl"), b"#!planted\n").unwrap();
    w.plant("usr/local/bin/kubectl", &w.sentinel.path().join("kubectl"));
    let root_before = root_listing(&w.root);
    let sentinel_before = w.sentinel.snapshot();
    let r = w.run(&["switch"]);
    r.assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: this path in root `$SANDBOX/host` exists and is not managed by kbuild; nothing was changed:\n  /usr/local/bin/kubectl\nhelp: move the files away, or pass `--adopt` to keep them in /etc/.kbuild/adopted (restored when kbuild stops managing the path)\n",
    );
    assert_eq!(root_listing(&w.root), root_before);
    w.sentinel.assert_untouched(&sentinel_before);
    check_case(
        ROOT,
        "managed_file_path_is_a_symlink",
        outcome_of(&r, false),
        &r.stderr(),
    );
}

/// With `--adopt`, the planted link itself is kept aside (not what it points to), and
/// kbuild's link takes its place.
#[test]
fn managed_file_symlink_is_adopted_not_followed() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("usr/local/bin");
    let target = w.sentinel.path().join("kubectl");
    std::fs::write(&target, b"#!planted\n").unwrap();
    w.plant("usr/local/bin/kubectl", &target);
    let sentinel_before = w.sentinel.snapshot();
    let r = w.run(&["switch", "--adopt"]);
    r.assert_success();
    let kept = w.root.join("etc/.kbuild/adopted/usr/local/bin/kubectl");
    assert_eq!(std::fs::read_link(&kept).unwrap(), target);
    assert_eq!(
        std::fs::read_link(w.root.join("usr/local/bin/kubectl")).unwrap(),
        Path::new("../../../etc/.kbuild/current/usr/local/bin/kubectl")
    );
    w.sentinel.assert_untouched(&sentinel_before);
    check_case(
        ROOT,
        "managed_file_symlink_is_adopted_not_followed",
        outcome_of(&r, true),
        &r.stderr(),
    );
}

/// After a first switch, a directory kbuild created is swapped for a link to elsewhere (its
/// links moved along): the next switch refuses before changing anything.
#[test]
fn directory_replaced_by_a_symlink_after_a_switch() {
    let w = World::new();
    w.prereqs("");
    w.run(&["switch"]).assert_success();
    w.sb.build_ok(&["--set", "IP=10.72.84.170"]);
    let moved = w.sentinel.path().join("system");
    std::fs::rename(w.root.join("etc/systemd/system"), &moved).unwrap();
    w.plant("etc/systemd/system", &moved);
    refused(
        "directory_replaced_by_a_symlink_after_a_switch",
        &w,
        "etc/systemd/system",
    );
}

/// A flip point planted before the first switch is replaced (renamed over), not followed.
#[test]
fn flip_point_planted_before_the_first_switch() {
    let w = World::new();
    w.prereqs("");
    w.mkdir("etc/.kbuild");
    w.plant("etc/.kbuild/current", w.sentinel.path());
    let sentinel_before = w.sentinel.snapshot();
    let r = w.run(&["switch"]);
    r.assert_success();
    let rootfs = std::fs::read_link(w.root.join("etc/.kbuild/current")).unwrap();
    assert!(
        rootfs.starts_with(std::path::absolute(&w.sb.store).unwrap())
            && rootfs.to_string_lossy().ends_with("-rootfs-master"),
        "{}",
        rootfs.display()
    );
    assert_eq!(
        std::fs::canonicalize(w.root.join("usr/local/bin/kubectl")).unwrap(),
        std::fs::canonicalize(rootfs.join("usr/local/bin/kubectl")).unwrap()
    );
    w.sentinel.assert_untouched(&sentinel_before);
    check_case(
        ROOT,
        "flip_point_planted_before_the_first_switch",
        outcome_of(&r, true),
        &r.stderr(),
    );
}

/// The flip point repointed after a switch: `verify --root` reports it (and every managed
/// path now dangling), and the next switch replaces it without writing through it.
#[test]
fn flip_point_repointed_is_reported_as_drift() {
    let w = World::new();
    w.prereqs("");
    w.run(&["switch"]).assert_success();
    let current = w.root.join("etc/.kbuild/current");
    let rootfs = std::fs::read_link(&current).unwrap();
    std::fs::remove_file(&current).unwrap();
    w.plant("etc/.kbuild/current", w.sentinel.path());
    let sentinel_before = w.sentinel.snapshot();

    let mut c = w.sb.bare();
    c.arg("--store")
        .arg(&w.sb.store)
        .arg("--root")
        .arg(&w.root)
        .arg("verify");
    let r = w.sb.run(c);
    let stdout = w.sentinel.mask(&r.stdout());
    let expected = format!(
        "drift    $SANDBOX/host: /etc/.kbuild/current points to `/tmp/$SENTINEL` instead of `{}` (`kbuild switch 1` repairs it)\n",
        rootfs.display()
    )
    .replace(&w.sb.dir.display().to_string(), "$SANDBOX");
    // Every link dangles through the moved flip point: one problem, not one per link.
    assert_eq!((r.code, stdout.as_str()), (Some(1), expected.as_str()));
    assert!(
        r.stderr
            .ends_with("error: verification found 1 problem(s)\n"),
        "{}",
        r.stderr
    );

    // The next switch replaces the link itself.
    w.sb.build_ok(&["--set", "IP=10.72.84.170"]);
    w.run(&["switch"]).assert_success();
    let now = std::fs::read_link(&current).unwrap();
    assert_ne!(now, w.sentinel.path());
    assert!(now.to_string_lossy().ends_with("-rootfs-master"));
    w.sentinel.assert_untouched(&sentinel_before);
    check_case(
        ROOT,
        "flip_point_repointed_is_reported_as_drift",
        outcome_of(&r, false),
        &stdout,
    );
}

cases_tested!(ROOT;
    etc_kubernetes_is_a_symlink,
    etc_systemd_system_is_a_symlink,
    usr_local_bin_is_a_symlink,
    usr_local_bin_is_a_dangling_symlink,
    usr_is_a_symlink,
    etc_is_a_symlink,
    etc_kbuild_is_a_symlink,
    journal_planted_behind_a_symlinked_state_dir,
    etc_kbuild_adopted_is_a_symlink,
    managed_file_path_is_a_symlink,
    managed_file_symlink_is_adopted_not_followed,
    directory_replaced_by_a_symlink_after_a_switch,
    flip_point_planted_before_the_first_switch,
    flip_point_repointed_is_reported_as_drift,
);
