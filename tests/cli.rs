//! Global options: before or after the subcommand, from the environment, and their defaults.

mod common;

use std::path::Path;

use common::*;

/// Runs `build master` with `args` and `env` (nothing else) and returns the rootfs printed.
fn build_with(sb: &Sandbox, args: &[&str], env: &[(&str, &Path)]) -> std::path::PathBuf {
    let mut c = sb.bare();
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args);
    let r = sb.run(c);
    r.assert_success();
    r.rootfs()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn global_options_before_or_after_the_subcommand() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let (store, recipes, lock) = (s(&sb.store), s(&sb.recipes), s(&sb.lock));
    let alt_store = sb.dir.join("alt store");
    let alt = s(&alt_store);

    let before = build_with(
        &sb,
        &[
            "--store",
            store,
            "--recipes",
            recipes,
            "--lock-file",
            lock,
            "build",
            "master",
        ],
        &[],
    );
    assert_eq!(before.parent().unwrap(), sb.store);

    let after = build_with(
        &sb,
        &[
            "build",
            "master",
            "--store",
            alt,
            "--recipes",
            recipes,
            "--lock-file",
            lock,
        ],
        &[],
    );
    assert_eq!(
        after.parent().unwrap(),
        alt_store,
        "--store after the subcommand"
    );
    assert_eq!(after.file_name(), before.file_name());

    let mixed = build_with(
        &sb,
        &[
            "--recipes=".to_owned() + recipes,
            "build".into(),
            "--offline".into(),
            "master".into(),
            "--store=".to_owned() + alt,
            "--locked".into(),
            "--lock-file".into(),
            lock.into(),
        ]
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(mixed, after);
    // Two stores were filled, one download each; the offline build used the store.
    assert_eq!(server.request_count(), 2);
}

#[test]
fn store_and_recipes_from_the_environment() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let lock_before = sb.lock_bytes();
    // No options at all: the lock file defaults to the recipes directory's parent.
    let rootfs = build_with(
        &sb,
        &["build", "master"],
        &[("KBUILD_STORE", &sb.store), ("KBUILD_RECIPES", &sb.recipes)],
    );
    assert_eq!(rootfs.parent().unwrap(), sb.store);
    assert!(rootfs.join("usr/local/bin/kubectl").is_file());
    assert_eq!(
        sb.lock_bytes(),
        lock_before,
        "the default lock file was used"
    );
    assert_eq!(server.request_count(), 1);

    // Options win over the environment.
    let other = sb.dir.join("other-store");
    let r = build_with(
        &sb,
        &["build", "master", "--store", s(&other)],
        &[
            ("KBUILD_STORE", &sb.dir.join("ignored")),
            ("KBUILD_RECIPES", &sb.recipes),
        ],
    );
    assert_eq!(r.parent().unwrap(), other);
    assert!(!sb.dir.join("ignored").exists());

    // KBUILD_LOCK_FILE: a lock elsewhere, pinning the same input.
    let lock2 = sb.dir.join("elsewhere.lock.json");
    std::fs::copy(&sb.lock, &lock2).unwrap();
    // The default lock is gone: were it read, `--locked` would fail for lack of a pin.
    std::fs::remove_file(&sb.lock).unwrap();
    let r = build_with(
        &sb,
        &["build", "master", "--locked", "--offline"],
        &[
            ("KBUILD_STORE", &sb.store),
            ("KBUILD_RECIPES", &sb.recipes),
            ("KBUILD_LOCK_FILE", &lock2),
        ],
    );
    assert_eq!(r, rootfs);
}

#[test]
fn defaults_are_relative_to_the_working_directory() {
    // `store` and `recipes` in the working directory, the lock beside `recipes`.
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let mut c = sb.bare();
    c.args(["build", "master"]);
    let r = sb.run(c);
    r.assert_success();
    let rootfs = r.rootfs();
    assert_eq!(rootfs.parent().unwrap(), sb.dir.join("store"));
    assert_eq!(r.stdout, format!("{}\n", rootfs.display()));

    let mut c = sb.bare();
    c.args(["generations", "--json"]);
    let r = sb.run(c);
    r.assert_success();
    let gens: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0]["path"], rootfs.display().to_string());
}

#[test]
fn version_and_usage_errors() {
    let sb = Sandbox::new();
    let mut c = sb.bare();
    c.arg("--version");
    let r = sb.run(c);
    r.assert_success();
    assert_eq!(r.stdout, format!("kbuild {}\n", env!("CARGO_PKG_VERSION")));

    let mut c = sb.bare();
    c.arg("build");
    let r = sb.run(c);
    assert_eq!(r.code, Some(2), "missing recipe name");
    assert!(
        r.stderr.starts_with(
            "error: the following required arguments were not provided:\n  <RECIPE>...\n"
        ),
        "{}",
        r.stderr
    );

    let mut c = sb.bare();
    c.arg("frobnicate");
    let r = sb.run(c);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .starts_with("error: unrecognized subcommand 'frobnicate'\n"),
        "{}",
        r.stderr
    );
    assert!(!sb.dir.join("store").exists());
}
