//! Concurrency: eight `kbuild build` processes with different `--set IP=…` at once on one
//! store, together with a `kbuild gc` and a `kbuild switch`, for a bounded number of rounds.
//!
//! Afterwards the store verifies clean, every rootfs a build printed exists and is exactly
//! what a fresh build of the same variables gives, generation numbers are 1..=N without gaps
//! or duplicates, the concurrently switched root shows no drift, and every recorded
//! generation can be switched to on a fresh root. The case table is `hostile::CONCURRENT`.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;

use common::*;
use hostile::*;

const BUILDS: usize = 8;
const ROUNDS: usize = 3;

const PREREQS: [&str; 5] = [
    "etc/kubernetes/token.csv",
    "etc/kubernetes/ssl/ca.pem",
    "etc/kubernetes/ssl/ca-key.pem",
    "etc/kubernetes/ssl/kubernetes.pem",
    "etc/kubernetes/ssl/kubernetes-key.pem",
];

fn pinned() -> Sandbox {
    let sb = Sandbox::new();
    let f = fixture();
    let url = write_archive(&sb, "pinned", &f.gz);
    let common = sb.recipes.join("kube-common.toml");
    let text = std::fs::read_to_string(&common).unwrap();
    std::fs::write(&common, text.replace(UPSTREAM_URL, &url)).unwrap();
    sb.write_lock(&[(INPUT, &[&url], &f.sha256, Some(f.gz.len() as u64))]);
    sb
}

fn root_with_prereqs(dir: &Path) -> PathBuf {
    for p in PREREQS {
        let dest = dir.join(p);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, format!("{p}\n")).unwrap();
    }
    dir.to_owned()
}

struct Finished {
    what: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn finish(what: String, child: Child) -> Finished {
    let out = child.wait_with_output().unwrap();
    Finished {
        what,
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[track_caller]
fn assert_ok(f: &Finished) {
    assert_eq!(
        f.code,
        Some(0),
        "{} failed\n--- stdout\n{}--- stderr\n{}",
        f.what,
        f.stdout,
        f.stderr
    );
}

/// One round: BUILDS builds with distinct IPs, a gc, and (when `switch`) a switch, all
/// started before any is waited for. Returns IP → printed rootfs.
fn round(sb: &Sandbox, root: &Path, n: usize, switch: bool) -> BTreeMap<String, PathBuf> {
    let mut running: Vec<(String, Child)> = Vec::new();
    let mut ips = Vec::new();
    for i in 0..BUILDS {
        let ip = format!("10.72.{n}.{}", i + 1);
        running.push((
            format!("build IP={ip}"),
            sb.spawn(&["build", "master", "--set", &format!("IP={ip}")]),
        ));
        ips.push(ip);
        if i == BUILDS / 2 {
            running.push(("gc".into(), sb.spawn(&["gc"])));
            if switch {
                running.push((
                    "switch".into(),
                    sb.spawn(&["--root", root.to_str().unwrap(), "switch"]),
                ));
            }
        }
    }
    let done: Vec<Finished> = running
        .into_iter()
        .map(|(what, child)| finish(what, child))
        .collect();
    let mut built = BTreeMap::new();
    for f in &done {
        assert_ok(f);
        if let Some(ip) = f.what.strip_prefix("build IP=") {
            let path = PathBuf::from(f.stdout.lines().last().unwrap());
            built.insert(ip.to_owned(), path);
        }
    }
    assert_eq!(built.len(), ips.len());
    built
}

#[test]
fn builds_gc_and_switch_at_once_leave_a_consistent_store() {
    let sb = pinned();
    let root = root_with_prereqs(&sb.dir.join("host"));
    let mut built = BTreeMap::new();
    // Round 0 starts from an empty store, so the eight builds also unpack the input at once
    // (no switch yet: there may be no generation to switch to).
    built.extend(round(&sb, &root, 0, false));
    for n in 1..=ROUNDS {
        built.extend(round(&sb, &root, n, true));
    }

    // The store verifies clean, and has no scratch entry left.
    let v = verify(&sb);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
    assert_no_tmp(&sb.store);

    // Every printed rootfs is complete: exactly a fresh build's, under the same name.
    let fresh = pinned();
    for (ip, path) in &built {
        let r = fresh.kbuild(&["build", "master", "--set", &format!("IP={ip}")]);
        r.assert_success();
        let expected = r.rootfs();
        assert_eq!(path.file_name(), expected.file_name(), "IP={ip}");
        assert!(path.is_dir(), "{} is gone", path.display());
        assert_eq!(
            shape(&listing(path)),
            shape(&listing(&expected)),
            "IP={ip}: the rootfs differs from a fresh build's"
        );
    }

    // Generations 1..=N, one per build, each pointing at a rootfs that exists.
    let dir = sb.store.join(".kbuild/profiles/default");
    let mut numbers: Vec<u64> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    let total = (BUILDS * (ROUNDS + 1)) as u64;
    assert_eq!(numbers, (1..=total).collect::<Vec<_>>());
    let mut recorded = BTreeSet::new();
    for n in &numbers {
        let g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{n}.json"))).unwrap()).unwrap();
        let rootfs = g["rootfs"].as_str().unwrap().to_owned();
        assert!(sb.store.join(&rootfs).is_dir(), "generation {n}: {rootfs}");
        recorded.insert(rootfs);
    }
    let printed: BTreeSet<String> = built
        .values()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(recorded, printed);

    // The root switched during the rounds is consistent.
    let mut c = sb.bare();
    c.arg("--store")
        .arg(&sb.store)
        .arg("--root")
        .arg(&root)
        .arg("verify");
    let drift = sb.run(c);
    assert_eq!(
        (drift.code, drift.stdout.as_str()),
        (Some(0), "ok\n"),
        "{drift:?}"
    );

    // Every generation can be switched to.
    let other = root_with_prereqs(&sb.dir.join("other-host"));
    for n in &numbers {
        let r = sb.kbuild(&["--root", other.to_str().unwrap(), "switch", &n.to_string()]);
        r.assert_success();
        let g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{n}.json"))).unwrap()).unwrap();
        let current = std::fs::read_link(other.join("etc/.kbuild/current")).unwrap();
        assert_eq!(
            current.file_name().unwrap().to_string_lossy(),
            g["rootfs"].as_str().unwrap(),
            "generation {n}"
        );
    }
    check_case(
        CONCURRENT,
        "builds_gc_and_switch_at_once_leave_a_consistent_store",
        outcome_of(&v, false),
        &v.stdout,
    );
}

cases_tested!(CONCURRENT; builds_gc_and_switch_at_once_leave_a_consistent_store);
