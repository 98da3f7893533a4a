//! `--json` output (issue 13, point 1): the real output of each command parsed with
//! serde_json, against the schemas of docs/json.md; `gc --dry-run` writes nothing and `diff
//! --exit-code` exits 1 on a difference.

mod common;

use common::world::*;
use common::*;
use serde_json::{Value, json};

fn parse(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Every file under the store, with its size: what "writes nothing" is checked against.
fn store_tree(store: &std::path::Path) -> Vec<(String, u64)> {
    common::walk_any(store)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let len = e.path().symlink_metadata().unwrap().len();
            let rel = e.path().strip_prefix(store).unwrap().display().to_string();
            (rel, if e.file_type().is_dir() { 0 } else { len })
        })
        .collect()
}

#[test]
fn diff_json_and_exit_code() {
    let w = World::new();
    w.master_plus("extra", &[("/etc/kubernetes/extra", "x\n")]);
    w.build(&["master"], &[], 1);
    w.build(&["extra"], &[], 2);
    let r = w.run(&["diff", "1", "2", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        parse(&r),
        json!({
            "version": 1,
            "from": 1,
            "to": 2,
            "changes": [{"change": "added", "path": "/etc/kubernetes/extra"}],
            "units": []
        })
    );
    // --exit-code: 1 when something differs (output as usual, no error message), 0 when not.
    let r = w.run(&["diff", "1", "2", "--exit-code"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stdout,
        "generation 1 -> 2\nadded    /etc/kubernetes/extra\n"
    );
    assert_eq!(r.stderr, "");
    let r = w.run(&["diff", "1", "1", "--exit-code", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        parse(&r),
        json!({"version": 1, "from": 1, "to": 1, "changes": [], "units": []})
    );
}

#[test]
fn switch_and_rollback_dry_run_json_is_the_whole_plan() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    let before = w.listing();
    let r = w.run(&["switch", "--dry-run", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let plan = parse(&r);
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["from"], Value::Null);
    assert_eq!(plan["to"], 2);
    assert_eq!(plan["from_profile"], Value::Null);
    assert_eq!(plan["to_profile"], "default");
    assert_eq!(plan["refused"], Value::Null);
    let added: Vec<&str> = plan["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(added, MASTER_PATHS.to_vec());
    assert!(
        plan["prerequisites"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["present"] == true)
    );
    assert!(!plan["prerequisites"].as_array().unwrap().is_empty());
    assert!(!plan["units"].as_array().unwrap().is_empty());
    assert!(!plan["systemctl"]["after"].as_array().unwrap().is_empty());
    assert_eq!(w.listing(), before, "a dry run changes nothing");

    w.ok(&["switch"]);
    let r = w.run(&["rollback", "--dry-run", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let plan = parse(&r);
    assert_eq!(
        (plan["from"].clone(), plan["to"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(plan["changed"], json!(["/etc/kubernetes/apiserver"]));
    assert_eq!(plan["added"], json!([]));

    // --json needs --dry-run.
    let r = w.run(&["switch", "--json"]);
    assert_eq!(r.code, Some(2));
}

#[test]
fn a_refused_plan_says_why_in_json_and_exits_1() {
    let w = World::bare();
    w.build(&["master"], &[], 1);
    let r = w.run(&["switch", "--dry-run", "--json"]);
    assert_eq!(r.code, Some(1));
    let plan = parse(&r);
    let refused = &plan["refused"];
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .starts_with("a switch of root `"),
        "{refused}"
    );
    assert!(refused["help"].is_string(), "{refused}");
    let p = &plan["prerequisites"][0];
    assert_eq!(p["present"], false);
    assert_eq!(p["missing"], p["path"]);
}

#[test]
fn verify_json_lists_problems() {
    let w = World::new();
    let g = w.build(&["master"], &[], 1);
    let r = w.run(&["verify", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = parse(&r);
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], true);
    assert_eq!(v["problems"], json!([]));
    assert!(v["objects"].as_u64().unwrap() > 0);

    flip_byte(&g.rootfs.join("etc/kubernetes/apiserver"), 0);
    let r = w.run(&["verify", "--json"]);
    assert_eq!(r.code, Some(1));
    let v = parse(&r);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().unwrap();
    // The file's object and the rootfs holding a hard link to it.
    assert_eq!(problems.len(), 2, "{v}");
    assert!(problems.iter().all(|p| p["kind"] == "corrupt"), "{v}");
    assert!(problems.iter().any(|p| p["object"] == g.object()), "{v}");
    assert!(
        problems
            .iter()
            .any(|p| p["object"].as_str().unwrap().ends_with("-apiserver")),
        "{v}"
    );
    assert!(
        r.stderr
            .contains("\nerror: verification found 2 problem(s)\nhelp: `kbuild verify --repair`"),
        "{}",
        r.stderr
    );
}

#[test]
fn gc_dry_run_lists_what_would_go_and_writes_nothing() {
    let w = World::new();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "ETCD2=10.0.0.2"], 2);
    w.build(&["master"], &["--set", "ETCD2=10.0.0.3"], 3);
    let before = store_tree(&w.sb.store);

    // Without --keep: every generation stays, nothing is unreachable.
    let r = w.run(&["gc", "--dry-run", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v = parse(&r);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["generations_removed"], json!([]));
    assert_eq!(v["objects_removed"], json!([]));

    let r = w.run(&["gc", "--dry-run", "--keep", "1", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let dry = parse(&r);
    assert_eq!(
        dry["generations_removed"],
        json!([
            {"profile": "default", "generation": 1},
            {"profile": "default", "generation": 2}
        ])
    );
    let objects = dry["objects_removed"].as_array().unwrap().clone();
    assert!(objects.contains(&json!(g1.object())) && objects.contains(&json!(g2.object())));
    assert_eq!(
        store_tree(&w.sb.store),
        before,
        "gc --dry-run wrote nothing"
    );

    // Plain text says "would".
    let r = w.run(&["gc", "--dry-run", "--keep", "1"]);
    assert!(
        r.stderr.contains("Would remove generation 1\n"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.starts_with("2 generations, "), "{}", r.stdout);
    assert!(r.stdout.contains(" would be removed, "), "{}", r.stdout);
    assert_eq!(store_tree(&w.sb.store), before);

    // The real gc removes exactly what the dry run listed.
    let r = w.run(&["gc", "--keep", "1", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let real = parse(&r);
    assert_eq!(real["dry_run"], false);
    assert_eq!(real["generations_removed"], dry["generations_removed"]);
    assert_eq!(real["objects_removed"], dry["objects_removed"]);
    assert_eq!(real["bytes_freed"], dry["bytes_freed"]);
    w.assert_generations(&[3], None);
}
