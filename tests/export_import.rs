//! `kbuild export` and `kbuild import`: a generation leaves one store as an OCI image layout
//! and lands in another, checked object by object, and switches there with no recipes and no
//! network. Hostile layouts (a flipped byte, an escaping path, an absurd size) are refused
//! with nothing added.

mod common;

use std::path::{Path, PathBuf};

use common::world::*;
use common::*;

/// Runs kbuild on `store` with no recipes directory and no lock file (an air-gapped host).
fn host(w: &World, store: &Path, args: &[&str]) -> Run {
    let mut c = w.command_line(&[], &kbuild_bin(), store, false, args);
    c.arg("--recipes").arg(w.sb.dir.join("no-recipes-here"));
    w.sb.run(assert_cmd::Command::from_std(c))
}

/// `kbuild ARGS` on the host whose store is `store` (see [`host`]), which must succeed.
#[track_caller]
fn host_ok(w: &World, store: &Path, args: &[&str]) -> Run {
    let r = host(w, store, args);
    r.assert_success();
    r
}

/// A world whose store holds generation 1 of `master`.
fn built_master() -> World {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w
}

fn export(w: &World, dir: &Path) -> String {
    let r = w.run(&["export", "--output", dir.to_str().unwrap()]);
    r.assert_success();
    r.stdout.trim().to_owned()
}

/// `kbuild export --output OUTPUT` run in `dir`, which must be refused (exit 1, nothing on
/// stdout) with `cause` and `help`; the error names the output as given (`$SANDBOX/…` for a
/// path in the sandbox).
#[track_caller]
fn assert_export_refused(w: &World, dir: &Path, output: &str, cause: &str, help: &str) {
    let mut c = w.cmd(&["export", "--output", output]);
    c.current_dir(dir);
    let shown = output.replace(w.sb.dir.to_str().unwrap(), "$SANDBOX");
    w.sb.run(c).assert_error(&format!(
        "error: cannot export generation 1 of profile `default` to `{shown}`\n  caused by: {cause}\nhelp: {help}\n"
    ));
}

/// Store entries that are objects (no bookkeeping, no temp entries).
fn objects(store: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(store) else {
        return vec![];
    };
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

fn index_manifest(dir: &Path) -> (String, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let m = std::fs::read(blob(dir, &digest)).unwrap();
    (digest, serde_json::from_slice(&m).unwrap())
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// Rewrites the config of the layout at `dir` with `edit`, and the manifest and index around
/// it, so that only the edit is wrong (every digest matches).
fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let (_, mut manifest) = index_manifest(dir);
    let cdigest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(dir, &cdigest)).unwrap()).unwrap();
    edit(&mut config);
    let bytes = serde_json::to_vec(&config).unwrap();
    let d = format!("sha256:{}", sha256_hex(&bytes));
    std::fs::write(blob(dir, &d), &bytes).unwrap();
    manifest["config"]["digest"] = d.into();
    manifest["config"]["size"] = bytes.len().into();
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let md = format!("sha256:{}", sha256_hex(&mbytes));
    std::fs::write(blob(dir, &md), &mbytes).unwrap();
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"] = md.into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn an_imported_generation_switches_rolls_back_and_verifies_with_no_recipes() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    let out = w.sb.dir.join("usb");
    export(&w, &out);
    assert!(out.join("oci-layout").is_file());
    let (_, manifest) = index_manifest(&out);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.kbuild.generation.v1+json"
    );

    // The second host: an empty store, its own root with the prerequisites.
    let store2 = w.sb.dir.join("store2");
    let root2 = w.sb.dir.join("host2");
    for (rel, bytes) in PREREQS {
        let p = root2.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let r = host_ok(&w, &store2, &["import", out.to_str().unwrap()]);
    let rootfs2 = PathBuf::from(r.stdout.trim());
    assert_eq!(
        rootfs2.file_name(),
        g2.rootfs.file_name(),
        "same rootfs name"
    );
    assert!(
        r.stderr
            .contains("already in the store; profile default, generation 1"),
        "{}",
        r.stderr
    );
    // Every file of the rootfs is the same bytes, and a hardlink to an object.
    for rel in ["usr/local/bin/kube-apiserver", "etc/kubernetes/apiserver"] {
        assert_eq!(
            std::fs::read(rootfs2.join(rel)).unwrap(),
            std::fs::read(g2.rootfs.join(rel)).unwrap(),
            "{rel}"
        );
    }
    use std::os::unix::fs::MetadataExt as _;
    let md = std::fs::metadata(rootfs2.join("usr/local/bin/kube-apiserver")).unwrap();
    assert!(md.nlink() >= 2, "the rootfs links its objects");

    let root2s = root2.to_str().unwrap();
    host_ok(&w, &store2, &["verify"]);
    host_ok(&w, &store2, &["--root", root2s, "switch"]);
    assert!(
        String::from_utf8(std::fs::read(root2.join("etc/kubernetes/apiserver")).unwrap())
            .unwrap()
            .contains("https://10.0.0.2:2379")
    );
    // Generation 1 too, then roll back to it.
    let out1 = w.sb.dir.join("usb1");
    w.run(&["export", "1", "--output", out1.to_str().unwrap()])
        .assert_success();
    let r = host_ok(&w, &store2, &["import", out1.to_str().unwrap()]);
    assert_eq!(
        PathBuf::from(r.stdout.trim()).file_name(),
        g1.rootfs.file_name()
    );
    host_ok(&w, &store2, &["--root", root2s, "switch", "2"]);
    host_ok(&w, &store2, &["--root", root2s, "rollback"]);
    host_ok(&w, &store2, &["--root", root2s, "verify"]);

    // Importing again adds nothing and records nothing new.
    let r = host_ok(&w, &store2, &["import", out1.to_str().unwrap()]);
    r.assert_stderr_has("Imported 0 new objects");
    r.assert_stderr_has("(unchanged");
}

#[test]
fn two_stores_that_built_the_same_recipes_export_the_same_manifest() {
    let a = World::new();
    let b = World::new();
    a.build(&["master"], &[], 1);
    b.build(&["master"], &[], 1);
    let (da, db) = (a.sb.dir.join("out"), b.sb.dir.join("out"));
    let digest_a = export(&a, &da);
    let digest_b = export(&b, &db);
    assert!(digest_a.starts_with("sha256:"), "{digest_a}");
    assert_eq!(digest_a, digest_b);
    assert_eq!(
        std::fs::read(da.join("index.json")).unwrap(),
        std::fs::read(db.join("index.json")).unwrap()
    );
    let list = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&da), list(&db));
}

#[test]
fn a_flipped_byte_in_an_object_blob_is_refused_and_nothing_is_added() {
    let w = built_master();
    let out = w.sb.dir.join("usb");
    export(&w, &out);
    let (_, manifest) = index_manifest(&out);
    let layers = manifest["layers"].as_array().unwrap();
    let biggest = layers
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap();
    let digest = biggest["digest"].as_str().unwrap();
    let path = blob(&out, digest);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let store2 = w.sb.dir.join("store2");
    let r = host(&w, &store2, &["import", out.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    r.assert_stderr_has(&format!("blob `{digest}` of object `"));
    r.assert_stderr_has("does not match its digest");
    assert!(
        r.stderr.contains("help: nothing was added to the store; the layout was damaged after the export (a bad copy or medium): copy it again, or export again\n"),
        "{}",
        r.stderr
    );
    assert_eq!(objects(&store2), Vec::<String>::new());
    assert!(!store2.join(".kbuild/profiles/default").exists());
}

/// Adds a symbolic link `path` → `target` to the rootfs tree of an exported config.
fn add_link(config: &mut serde_json::Value, path: &str, target: &str) {
    config["rootfs"]["tree"][path] = serde_json::json!({"type": "symlink", "target": target});
}

/// A change made to an exported config.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn hostile_configs_are_refused_before_any_object_is_read() {
    let w = built_master();
    let cases: [(&str, Edit, &str); 6] = [
        (
            "object",
            Box::new(|c| c["objects"][0]["name"] = "../../../etc/passwd".into()),
            "its config is not a kbuild generation: `../../../etc/passwd` is not a store object name",
        ),
        (
            "escape",
            Box::new(|c| {
                let tree = c["rootfs"]["tree"].as_object_mut().unwrap();
                let (k, v) = tree.iter().find(|(_, v)| v["type"] == "object").unwrap();
                let (k, v) = (k.clone(), v.clone());
                tree.remove(&k);
                tree.insert("../../etc/cron.d/x".into(), v);
            }),
            "rootfs path `../../etc/cron.d/x` is not a plain relative path",
        ),
        (
            "absurd",
            Box::new(|c| c["objects"][0]["size"] = (1u64 << 50).into()),
            "declares 1125899906842624 bytes (at most 4294967296)",
        ),
        (
            "link",
            Box::new(|c| add_link(c, "etc/evil", "../../../etc/shadow")),
            "rootfs link `etc/evil` → `../../../etc/shadow` points outside the rootfs",
        ),
        (
            // Lexically `chain-b` stays at the top; the kernel follows `chain-a` (= etc) first
            // and climbs out (review 11 finding 3).
            "chain",
            Box::new(|c| {
                add_link(c, "etc/chain-a", "../etc");
                add_link(c, "etc/chain-b", "chain-a/../..");
            }),
            "rootfs link `etc/chain-b` → `chain-a/../..` points outside the rootfs or loops",
        ),
        (
            "name",
            Box::new(|c| {
                let x = c["objects"][0]["executable"].as_bool().unwrap();
                c["objects"][0]["executable"] = (!x).into();
            }),
            "its declared content does not hash to its name",
        ),
    ];
    let store2 = w.sb.dir.join("store2");
    for (name, edit, expected) in cases {
        let out = w.sb.dir.join(name);
        export(&w, &out);
        edit_config(&out, edit);
        let r = host(&w, &store2, &["import", out.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "{name}: {}", r.stderr);
        assert!(r.stderr.contains(expected), "{name}: {}", r.stderr);
        assert!(
            !store2.exists(),
            "{name}: no store is made for a refused layout"
        );
    }
    let r = host(
        &w,
        &store2,
        &["import", w.sb.dir.join("nothing").to_str().unwrap()],
    );
    r.assert_error(
        "error: cannot import `$SANDBOX/nothing`\n  caused by: layout directory `$SANDBOX/nothing` does not exist\nhelp: give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)\n",
    );
    assert!(!store2.exists());
}

/// A layout's blobs must be regular files: a FIFO named as the config blocked import forever,
/// a symlink could point anywhere on the host (review 11 finding 9).
#[test]
fn import_refuses_a_fifo_or_a_symlink_among_the_blobs() {
    let w = built_master();
    let store2 = w.sb.dir.join("store2");
    for kind in ["fifo", "symlink"] {
        let out = w.sb.dir.join(kind);
        export(&w, &out);
        let (_, manifest) = index_manifest(&out);
        let digest = match kind {
            "fifo" => manifest["config"]["digest"].as_str().unwrap(),
            _ => manifest["layers"][0]["digest"].as_str().unwrap(),
        }
        .to_owned();
        let path = blob(&out, &digest);
        if kind == "fifo" {
            std::fs::remove_file(&path).unwrap();
            let st = std::process::Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap();
            assert!(st.success());
        } else {
            // The same bytes, elsewhere: the link is refused, not its target.
            let moved = w.sb.dir.join("elsewhere");
            std::fs::rename(&path, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, &path).unwrap();
        }
        let mut c = w.command_line(
            &[],
            &kbuild_bin(),
            &store2,
            false,
            &["import", out.to_str().unwrap()],
        );
        c.arg("--recipes").arg(w.sb.dir.join("no-recipes-here"));
        let mut c = assert_cmd::Command::from_std(c);
        c.timeout(std::time::Duration::from_secs(60));
        let r = w.sb.run(c);
        assert_eq!(r.code, Some(1), "{kind}: {}", r.stderr);
        let what = if kind == "fifo" {
            "a FIFO"
        } else {
            "a symbolic link"
        };
        let expected = format!(
            "`{}`: it is {what}; a layout's files must be regular files",
            path.display()
        );
        assert!(
            r.stderr
                .starts_with(&format!("error: cannot import `{}`\n", out.display())),
            "{kind}: {}",
            r.stderr
        );
        assert!(r.stderr.contains(&expected), "{kind}: {}", r.stderr);
        assert_eq!(objects(&store2), Vec::<String>::new(), "{kind}");
        assert!(!store2.join(".kbuild/profiles/default").exists(), "{kind}");
    }
}

#[test]
fn export_refuses_a_directory_that_is_not_empty() {
    let w = built_master();
    let out = w.sb.dir.join("full");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine\n").unwrap();
    assert_export_refused(
        &w,
        &w.sb.dir,
        out.to_str().unwrap(),
        "export directory `$SANDBOX/full` already exists and is not empty (it holds `notes.txt`)",
        "export into a new or empty directory, or remove this one first (`rm -r $SANDBOX/full`)",
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine\n"
    );
    assert!(
        !w.sb.dir.join("full.kbuild-tmp").exists(),
        "no staging left"
    );

    // A finished export is an OCI layout: a second export to it says so.
    let done = w.sb.dir.join("done");
    export(&w, &done);
    assert_export_refused(
        &w,
        &w.sb.dir,
        done.to_str().unwrap(),
        "export directory `$SANDBOX/done` already exists and is not empty (it holds `blobs`, `index.json`, `oci-layout`: an OCI layout already, an earlier export?)",
        "export into a new or empty directory, or remove this one first (`rm -r $SANDBOX/done`)",
    );

    // An empty directory made for it is fine (replaced by the complete layout).
    let empty = w.sb.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    export(&w, &empty);
    assert!(empty.join("index.json").is_file());
}

/// Every path under `dir`, relative, sorted.
fn layout_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = common::walk_any(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn an_export_killed_at_any_step_leaves_no_output_and_the_rerun_completes() {
    let w = built_master();
    let out = w.sb.dir.join("usb");
    let staging = w.sb.dir.join("usb.kbuild-tmp");
    let reference = w.sb.dir.join("reference");
    export(&w, &reference);
    let mut steps = Vec::new();
    for n in 1.. {
        let r = w.run_env(
            &["export", "--output", out.to_str().unwrap()],
            &[("KBUILD_FAULT_AT", &n.to_string())],
        );
        if r.code == Some(0) {
            break;
        }
        assert!(n <= 40, "still crashing at step {n}");
        // Aborted as by `kill -9`: no destructor, no Ctrl-C cleanup ran.
        assert_eq!(r.code, None, "step {n}: {r:?}");
        steps.push(fault_step(&r, n));
        assert!(
            out.symlink_metadata().is_err(),
            "step {n}: `usb` is visible before the export completed"
        );
        assert!(staging.is_dir(), "step {n}: the killed export's staging");
    }
    // Killed after every object blob (13 objects), and once with the layout whole but not
    // yet renamed; each rerun emptied the leftover of the one before.
    assert_eq!(steps.len(), 14, "{steps:?}");
    assert_eq!(
        steps.last().unwrap(),
        "export: the layout written, not yet renamed"
    );
    assert!(!staging.exists(), "the completed export leaves no staging");
    assert_eq!(
        layout_files(&out),
        layout_files(&reference),
        "nothing of the killed runs is left in the layout"
    );
    assert_eq!(
        std::fs::read(out.join("index.json")).unwrap(),
        std::fs::read(reference.join("index.json")).unwrap()
    );
    let store2 = w.sb.dir.join("store2");
    host_ok(&w, &store2, &["import", out.to_str().unwrap()]);
    host_ok(&w, &store2, &["verify"]);
}

/// An output directory that exists and is empty (a mounted USB stick, a directory the
/// operator made in a place only root can write) cannot be replaced by a rename: the export
/// stages inside it and moves `index.json` in last. Killed mid-way, it holds only the
/// staging directory, which import refuses as no layout and the next export reuses.
#[test]
fn an_export_into_an_existing_empty_directory_killed_midway_is_no_layout_and_the_rerun_completes() {
    let w = built_master();
    let out = w.sb.dir.join("stick");
    std::fs::create_dir(&out).unwrap();
    let store2 = w.sb.dir.join("store2");
    let top = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for n in [3, 14] {
        let r = w.run_env(
            &["export", "--output", out.to_str().unwrap()],
            &[("KBUILD_FAULT_AT", &n.to_string())],
        );
        assert_eq!(r.code, None, "step {n}: {r:?}");
        assert_eq!(top(&out), [".kbuild-tmp"], "step {n}");
        let r = host(&w, &store2, &["import", out.to_str().unwrap()]);
        assert_eq!(r.code, Some(1), "step {n}: {r:?}");
        r.assert_stderr_has("is no OCI layout: an export to it was interrupted (it left `");
    }
    export(&w, &out);
    assert_eq!(top(&out), ["blobs", "index.json", "oci-layout"]);
    host_ok(&w, &store2, &["import", out.to_str().unwrap()]);
}

#[test]
fn an_export_waits_for_the_one_holding_its_staging_and_empties_a_leftover() {
    let w = built_master();
    let out = w.sb.dir.join("usb");
    let staging = w.sb.dir.join("usb.kbuild-tmp");
    // An export holding the staging directory (a flock on it, as a running one has) until
    // the second export says it waits for it: no timing guess (a `flock(1)` holder given
    // 200 ms may not hold the lock yet on a loaded machine, and then nothing waits).
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join("junk-of-a-killed-export"), "x").unwrap();
    let holder = std::fs::File::open(&staging).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut child = w.spawn(&["export", "--output", out.to_str().unwrap()]);
    let mut stderr = StderrLines::of(&mut child);
    stderr.wait_for("Blocking waiting for file lock on the export to `");
    assert!(child.try_wait().unwrap().is_none(), "did not wait");
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::Unlock).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", stderr.all());
    assert!(!staging.exists());
    assert!(
        !out.join("junk-of-a-killed-export").exists(),
        "the leftover was emptied, not shipped"
    );
    // The one that waited behind a finished export finds its output there.
    let again = w.run(&["export", "--output", out.to_str().unwrap()]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("already exists and is not empty"));
}

#[test]
fn import_records_in_the_exported_profile_or_the_one_named() {
    let w = World::new();
    w.ok(&["build", "master", "--profile", "master-1"]);
    let out = w.sb.dir.join("usb");
    let r = w.run(&[
        "export",
        "--profile",
        "master-1",
        "--output",
        out.to_str().unwrap(),
    ]);
    r.assert_success();
    assert!(
        r.stderr.contains("as `master-1-1`"),
        "the layout names it <profile>-<generation>: {}",
        r.stderr
    );
    let store2 = w.sb.dir.join("store2");
    let r = host_ok(&w, &store2, &["import", out.to_str().unwrap()]);
    r.assert_stderr_has("profile master-1, generation 1");
    let r = host_ok(
        &w,
        &store2,
        &["import", out.to_str().unwrap(), "--profile", "staging"],
    );
    assert!(
        r.stderr.contains(
            "Imported 0 new objects, 13 already in the store; profile staging, generation 1"
        ),
        "{}",
        r.stderr
    );
    let listed = host_ok(&w, &store2, &["generations", "--all"]);
    assert!(
        listed.stdout.contains("master-1") && listed.stdout.contains("staging"),
        "{}",
        listed.stdout
    );
}

/// Importing a generation a store already has (every object, the rootfs, the profile's
/// newest generation) needs no write access: into a read-only store it succeeds as a no-op
/// and says so. What would record something is still refused, with the `help:` line, and
/// the store is left as it was.
#[test]
fn import_into_a_read_only_store_that_has_the_generation_is_a_no_op() {
    let w = built_master();
    let out = w.sb.dir.join("usb");
    export(&w, &out);
    let store2 = w.sb.dir.join("store2");
    host_ok(&w, &store2, &["import", out.to_str().unwrap()]);
    let before = full_listing(&store2);

    let r = w.run_read_only_store(&store2, &["import", out.to_str().unwrap()]);
    r.assert_success();
    assert!(
        r.stderr.contains(
            "Imported 0 new objects, 13 already in the store; profile default, generation 1 (unchanged: it was the newest already)"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.trim().starts_with(store2.to_str().unwrap()),
        "{}",
        r.stdout
    );

    // Into another profile it would record a generation: refused, naming the fix.
    let r = w.run_read_only_store(
        &store2,
        &["import", out.to_str().unwrap(), "--profile", "other"],
    );
    assert_eq!(r.code, Some(1), "{r:?}");
    r.assert_stderr_has("\nhelp: the store cannot be written here");
    assert_eq!(full_listing(&store2), before, "the store changed");
}

/// `--output .` (or `..`, `dir/..`, a symbolic link) naming an existing empty directory — a
/// mounted stick after `cd /media/usb` — is exported into; what cannot receive an export is
/// refused with a message that says what it is, and `rm -r` is never offered for the current
/// directory or one above it (review13 MED-1, LOW-2, LOW-11).
#[test]
fn export_outputs_named_by_dot_links_files_and_missing_parents() {
    let w = built_master();
    let in_dir = |dir: &Path, output: &str| {
        let mut c = w.cmd(&["export", "--output", output]);
        c.current_dir(dir);
        w.sb.run(c)
    };
    let top = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let layout = ["blobs", "index.json", "oci-layout"];

    let dot = w.sb.dir.join("dot");
    std::fs::create_dir(&dot).unwrap();
    in_dir(&dot, ".").assert_success();
    assert_eq!(top(&dot), layout);
    // Readable by all, as its blobs are (an export made as root, imported as another user).
    for name in ["index.json", "oci-layout"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dot.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{name}");
    }
    // A symbolic link to an empty directory is that directory.
    let target = w.sb.dir.join("mnt");
    std::fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&target, w.sb.dir.join("lnk")).unwrap();
    in_dir(&w.sb.dir, "lnk").assert_success();
    assert_eq!(top(&target), layout);

    // What cannot receive an export: run in (directory, `--output`), the cause and the help.
    let up = w.sb.dir.join("up");
    std::fs::create_dir_all(up.join("sub")).unwrap();
    let twice = w.sb.dir.join("twice");
    std::fs::create_dir_all(twice.join("x")).unwrap();
    std::fs::write(w.sb.dir.join("afile"), "x").unwrap();
    std::os::unix::fs::symlink("nonexist", w.sb.dir.join("dl")).unwrap();
    let choose = "choose another directory: a new or empty one";
    for (dir, output, cause, help) in [
        // Again: not empty now, and `rm -r .` is no advice to give.
        (
            &dot,
            ".",
            "export directory `.` already exists and is not empty (it holds `blobs`, `index.json`, `oci-layout`: an OCI layout already, an earlier export?)",
            choose,
        ),
        (
            &up.join("sub"),
            "..",
            "export directory `..` already exists and is not empty (it holds `sub`)",
            choose,
        ),
        (
            &twice,
            "x/..",
            "export directory `x/..` already exists and is not empty (it holds `x`)",
            choose,
        ),
        (
            &w.sb.dir,
            "afile",
            "export directory `afile` is a file, not a directory",
            choose,
        ),
        (
            &w.sb.dir,
            "dl",
            "export directory `dl` is a symbolic link to `nonexist`, which does not exist",
            choose,
        ),
        (
            &w.sb.dir,
            "nope/a/b",
            "the parent `nope/a` of export directory `nope/a/b` does not exist",
            "make it first (`mkdir -p nope/a`), or choose another directory",
        ),
    ] {
        assert_export_refused(&w, dir, output, cause, help);
    }
    assert!(!w.sb.dir.join("nope").exists());
}
