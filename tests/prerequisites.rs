//! Prerequisites are what they claim (issue 7, point 4): a prerequisite is a readable regular
//! file after following links, and links are followed inside the root, as `chroot ROOT`
//! would; a recipe cannot install a path that is also a prerequisite; a private key that
//! group or others can read is warned about.
//!
//! Most cases use a recipe `secret`: one file (`/etc/app.conf`) and one prerequisite,
//! `/etc/kubernetes/token.csv`. Every check runs twice: with `openat2(RESOLVE_IN_ROOT)` and
//! with the walk by hand kbuild falls back to without it (`KBUILD_FAULT_NO_OPENAT2=1`).

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::Run;
use common::world::*;
use hostile::*;

const TOKEN: &str = "etc/kubernetes/token.csv";

/// The `help:` line for each kind of reason (one kind present: its fix alone).
const HELP: &str = "help: create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)\n";
const LINK_HELP: &str = "help: fix the symlink: it is followed inside the root, as `chroot ROOT` would, so what it leads to must exist there\n";
const DIR_HELP: &str =
    "help: remove the directory (what a failed bind mount leaves) and put the file in its place\n";
const NOT_FILE_HELP: &str = "help: remove what is not a file and put the file in its place\n";
const ON_THE_WAY_HELP: &str =
    "help: replace the file on the way with the directory that holds the prerequisite\n";
const UNREADABLE_HELP: &str = "help: make the file readable by the user running kbuild (`chmod`, `chown`), and its directories searchable\n";

/// Both ways of resolving a prerequisite: `openat2`, and the walk by hand.
const WAYS: [&[(&str, &str)]; 2] = [&[], &[("KBUILD_FAULT_NO_OPENAT2", "1")]];

const SECRET: &str = "prerequisites = [\"/etc/kubernetes/token.csv\"]\n\n[files.\"/etc/app.conf\"]\ntext = \"x\\n\"\n";

/// A world with the recipe `secret` built as generation 1, and an empty root.
fn world() -> (World, Gen) {
    let w = World::bare();
    w.sb.write_recipe("secret", SECRET);
    let g = w.build(&["secret"], &[], 1);
    (w, g)
}

fn parent(w: &World, rel: &str) -> std::path::PathBuf {
    let p = w.root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

fn link(w: &World, rel: &str, target: &str) {
    std::os::unix::fs::symlink(target, parent(w, rel)).unwrap();
}

fn file(w: &World, rel: &str, bytes: &[u8], mode: u32) {
    let p = parent(w, rel);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry below `dir` with its type, mode, owner, mtime, inode and, for a regular file,
/// its bytes (a FIFO or socket is never opened, unlike `full_listing`).
fn snapshot(dir: &std::path::Path) -> Vec<String> {
    common::walk_any(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let what = if e.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if e.file_type().is_file() {
                // Mode 000 files are read by root only; otherwise their size stands in.
                match std::fs::read(e.path()) {
                    Ok(b) => format!("{b:?}"),
                    Err(_) => format!("{} bytes", m.len()),
                }
            } else {
                format!("{:?}", e.file_type())
            };
            format!(
                "{} {:o} {}:{} {} {} {what}",
                e.path().display(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
                m.ino()
            )
        })
        .collect()
}

/// Checks the run `r` against case `case` of the table (see [`check_case`]).
#[track_caller]
fn check(case: &str, r: &Run) {
    check_case(PREREQUISITES, case, outcome_of(r, false), &r.stderr());
}

/// Writes a token the owner alone reads at `rel` in the root.
fn token_at(w: &World, rel: &str) {
    file(w, rel, b"t,u,1\n", 0o600);
}

fn refusal(what: &str, line: &str, help: &str) -> String {
    format!(
        "error: {what} root `$SANDBOX/host`{}\n  caused by: missing host prerequisites under `$SANDBOX/host`: {line}\n{help}",
        if what == "a switch of" {
            " would be refused"
        } else {
            ""
        }
    )
}

/// The switch and its dry run are refused both ways, naming the token as `line`, and change
/// nothing in the root, with `help`; the switch is the outcome of `case`.
#[track_caller]
fn missing(case: &str, w: &World, line: &str, help: &str) {
    let before = snapshot(&w.root);
    for env in WAYS {
        let r = w.run_env(&["switch"], env);
        r.assert_error(&refusal("cannot switch", line, help));
        check(case, &r);
        assert_eq!(snapshot(&w.root), before, "{env:?}");
        let dry = w.run_env(&["switch", "--dry-run"], env);
        assert_eq!(dry.code, Some(1), "{dry:?}");
        assert_eq!(
            dry.stdout(),
            format!(
                "root $SANDBOX/host: nothing -> generation 1\n  prerequisite missing: {line}\n  add     /etc/app.conf\n"
            ),
            "{env:?}"
        );
        assert_eq!(dry.stderr(), refusal("a switch of", line, help), "{env:?}");
        assert_eq!(snapshot(&w.root), before, "{env:?}");
    }
}

/// The token counts as present both ways: the dry run plans the switch, the switch (by
/// `openat2`) makes the root exactly `base` plus the generation, and the second way then
/// finds the generation active. The switch is the outcome of `case` (when given).
#[track_caller]
fn present(case: Option<&str>, w: &World, g: &Gen) {
    let base = w.listing();
    for env in WAYS {
        let dry = w.run_env(&["switch", "--dry-run"], env);
        assert_eq!(dry.code, Some(0), "{dry:?}");
        assert_eq!(
            dry.stdout(),
            "root $SANDBOX/host: nothing -> generation 1\n  prerequisites: 1 present\n  add     /etc/app.conf\n"
        );
        assert_eq!(dry.stderr(), "");
    }
    let r = w.run_env(&["switch"], WAYS[0]);
    r.assert_success();
    if let Some(case) = case {
        check(case, &r);
    }
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 1\n"
    );
    w.assert_root(&w.expect(&base, g, &[], &[]), g, "after the switch");
    let r = w.run_env(&["switch"], WAYS[1]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Fresh generation 1 is already active\n");
}

// ---------------------------------------------------------------------------------------------
// Not a regular file
// ---------------------------------------------------------------------------------------------

#[test]
fn a_directory_where_the_token_should_be_is_missing() {
    // What a bind mount of a file that did not exist on the host leaves behind.
    let (w, _) = world();
    std::fs::create_dir_all(w.root.join(TOKEN)).unwrap();
    missing(
        "a_directory_where_the_token_should_be_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a directory, not a file)",
        DIR_HELP,
    );
}

#[test]
fn a_fifo_is_missing_and_never_opened() {
    let (w, _) = world();
    let p = parent(&w, TOKEN);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    // Opening a FIFO for reading would block until a writer comes: the runs would time out.
    missing(
        "a_fifo_is_missing_and_never_opened",
        &w,
        "/etc/kubernetes/token.csv (a FIFO, not a file)",
        NOT_FILE_HELP,
    );
}

#[test]
fn a_socket_is_missing() {
    let (w, _) = world();
    let _listener = std::os::unix::net::UnixListener::bind(parent(&w, TOKEN)).unwrap();
    missing(
        "a_socket_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a socket, not a file)",
        NOT_FILE_HELP,
    );
}

#[test]
fn a_component_that_is_a_file_is_missing() {
    let (w, _) = world();
    file(&w, "etc/kubernetes", b"not a directory\n", 0o644);
    missing(
        "a_component_that_is_a_file_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a component of the path is not a directory)",
        ON_THE_WAY_HELP,
    );
}

#[test]
fn nothing_at_all_is_missing_without_a_reason() {
    let (w, _) = world();
    missing(
        "nothing_at_all_is_missing_without_a_reason",
        &w,
        "/etc/kubernetes/token.csv",
        HELP,
    );
}

// ---------------------------------------------------------------------------------------------
// Links: followed inside the root
// ---------------------------------------------------------------------------------------------

#[test]
fn a_dangling_link_is_missing_with_its_target() {
    let (w, _) = world();
    link(&w, TOKEN, "/secrets/token.csv");
    missing(
        "a_dangling_link_is_missing_with_its_target",
        &w,
        "/etc/kubernetes/token.csv (a symlink to `/secrets/token.csv`, which does not exist inside the root)",
        LINK_HELP,
    );
}

#[test]
fn a_link_loop_is_missing() {
    let (w, _) = world();
    link(&w, TOKEN, "loop-a");
    link(&w, "etc/kubernetes/loop-a", "token.csv");
    missing(
        "a_link_loop_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a symlink loop)",
        LINK_HELP,
    );
}

#[test]
fn an_absolute_link_is_followed_inside_the_root() {
    // The example: with `--root`, `/secrets/token.csv` is the root's, and a token
    // there is present (it used to be looked up on the host, and reported missing).
    let (w, g) = world();
    link(&w, TOKEN, "/secrets/token.csv");
    token_at(&w, "secrets/token.csv");
    assert!(!std::path::Path::new("/secrets/token.csv").exists());
    present(Some("an_absolute_link_is_followed_inside_the_root"), &w, &g);
}

#[test]
fn a_relative_link_is_followed_inside_the_root() {
    let (w, g) = world();
    link(&w, TOKEN, "../../secrets/token.csv");
    token_at(&w, "secrets/token.csv");
    present(Some("a_relative_link_is_followed_inside_the_root"), &w, &g);
}

#[test]
fn a_link_on_the_way_is_followed_inside_the_root() {
    // `etc/kubernetes` itself is a link to `/srv/k8s` (inside the root).
    let (w, g) = world();
    link(&w, "etc/kubernetes", "/srv/k8s");
    token_at(&w, "srv/k8s/token.csv");
    present(
        Some("a_link_on_the_way_is_followed_inside_the_root"),
        &w,
        &g,
    );
}

#[test]
fn dot_dot_never_climbs_above_the_root() {
    // Ten `..` from `etc/kubernetes` stop at the root, as in a chroot: the token is the
    // root's `/secrets/token.csv`.
    let (w, g) = world();
    link(&w, TOKEN, &format!("{}secrets/token.csv", "../".repeat(10)));
    token_at(&w, "secrets/token.csv");
    present(Some("dot_dot_never_climbs_above_the_root"), &w, &g);
}

#[test]
fn an_absolute_link_to_a_host_file_is_missing() {
    // The host's `/etc/hostname` exists; the root's does not. It used to count as present.
    let (w, g) = world();
    assert!(std::path::Path::new("/etc/hostname").is_file());
    link(&w, TOKEN, "/etc/hostname");
    missing(
        "an_absolute_link_to_a_host_file_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a symlink to `/etc/hostname`, which does not exist inside the root)",
        LINK_HELP,
    );
    // Once the root has its own `/etc/hostname`, that is what the link means.
    file(&w, "etc/hostname", b"m1\n", 0o644);
    present(None, &w, &g);
}

#[test]
fn a_link_escaping_the_root_to_a_host_file_is_missing() {
    // Absolute, and relative with `..` climbing out: both lead to `$SANDBOX/outside/token.csv`
    // on the host, which exists; inside the root they lead nowhere.
    let (w, _) = world();
    let outside = w.sb.dir.join("outside/token.csv");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, b"host token\n").unwrap();
    link(&w, TOKEN, outside.to_str().unwrap());
    missing(
        "a_link_escaping_the_root_to_a_host_file_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a symlink to `$SANDBOX/outside/token.csv`, which does not exist inside the root)",
        LINK_HELP,
    );
    std::fs::remove_file(w.root.join(TOKEN)).unwrap();
    link(&w, TOKEN, "../../../outside/token.csv");
    assert!(
        w.root.join(TOKEN).is_file(),
        "on the host the link resolves"
    );
    missing(
        "a_link_escaping_the_root_to_a_host_file_is_missing",
        &w,
        "/etc/kubernetes/token.csv (a symlink to `../../../outside/token.csv`, which does not exist inside the root)",
        LINK_HELP,
    );
}

// ---------------------------------------------------------------------------------------------
// Unreadable
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unreadable_token_is_missing() {
    // Mode 000 stops anyone without CAP_DAC_OVERRIDE. Run as root (as in CI), kbuild would
    // read it all the same, so there the runs are made as `nobody` (uid and gid 65534),
    // through a sandbox and store everyone may read.
    let (w, _) = world();
    file(&w, TOKEN, b"t,u,1\n", 0o000);
    let probe = w.sb.dir.join("probe");
    std::fs::write(&probe, b"").unwrap();
    let as_root = std::fs::metadata(&probe).unwrap().uid() == 0;
    // `nobody` may not reach the build's own binary (a checkout under a 0700 home): it runs a
    // copy inside the sandbox, which it can read.
    let bin = if as_root {
        let copy = w.sb.dir.join("kbuild");
        std::fs::copy(kbuild_bin(), &copy).unwrap();
        copy
    } else {
        kbuild_bin()
    };
    if as_root {
        for e in common::walk_any(&w.sb.dir) {
            let e = e.unwrap();
            let extra = if e.file_type().is_dir() {
                0o555
            } else if e.file_type().is_file() && e.path() != w.root.join(TOKEN) {
                0o444
            } else {
                continue;
            };
            let mode = e.metadata().unwrap().permissions().mode();
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode | extra))
                .unwrap();
        }
    }
    let before = snapshot(&w.root);
    let line = "/etc/kubernetes/token.csv (cannot be read: Permission denied (os error 13))";
    for env in WAYS {
        for (args, what) in [
            (&["switch"][..], "cannot switch"),
            (&["switch", "--dry-run"][..], "a switch of"),
        ] {
            let mut c = w.std_command(&bin, args);
            c.envs(env.iter().copied());
            if as_root {
                std::os::unix::process::CommandExt::uid(&mut c, 65534);
                std::os::unix::process::CommandExt::gid(&mut c, 65534);
            }
            let r = w.sb.run(assert_cmd::Command::from_std(c));
            assert_eq!(r.code, Some(1), "{args:?} {env:?}: {r:?}");
            assert_eq!(
                r.stderr(),
                refusal(what, line, UNREADABLE_HELP),
                "{args:?} {env:?}"
            );
            check("an_unreadable_token_is_missing", &r);
            assert_eq!(snapshot(&w.root), before);
        }
    }
    if as_root {
        eprintln!(
            "(running as root: the unreadable token was checked by kbuild running as nobody)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A target that is also a prerequisite: a recipe error at load time
// ---------------------------------------------------------------------------------------------

const LOAD_HELP: &str = "help: a prerequisite is a host file kbuild only checks and never installs: remove the file or the prerequisite from the recipe, then run `kbuild build` again\n";

/// `kbuild build NAME` must fail with exactly `cause` (the outcome of `case`), and change
/// neither the store nor the root (which holds a switched master).
#[track_caller]
fn build_refused(case: &str, w: &World, name: &str, cause: &str) {
    let store = full_listing(&w.sb.store);
    let root = snapshot(&w.root);
    let lock = w.sb.lock_bytes();
    let r = w.run(&["build", name]);
    r.assert_error(&format!(
        "error: cannot build {name}\n  caused by: {cause}\n{LOAD_HELP}"
    ));
    check(case, &r);
    assert_eq!(full_listing(&w.sb.store), store);
    assert_eq!(snapshot(&w.root), root);
    assert_eq!(w.sb.lock_bytes(), lock);
    w.assert_generations(&[1], Some(1));
}

/// A world whose root is switched to generation 1 (master).
fn master_world() -> World {
    let w = World::new();
    w.build(&["master"], &[], 1);
    w.ok(&["switch"]);
    w
}

/// A [`master_world`] in which recipe `name`, master plus `files`, is refused at load as
/// [`build_refused`] says: exactly `cause`, the outcome of `case`. The world.
#[track_caller]
fn target_refused(case: &str, name: &str, files: &[(&str, &str)], cause: &str) -> World {
    let w = master_world();
    w.master_plus(name, files);
    build_refused(case, &w, name, cause);
    w
}

#[test]
fn a_target_that_is_a_prerequisite_is_refused_at_load() {
    // The example: a recipe installing the master's token would copy it into the
    // world-readable store, and `switch --adopt` would move the host's token aside.
    let w = target_refused(
        "a_target_that_is_a_prerequisite_is_refused_at_load",
        "leak",
        &[("/etc/kubernetes/token.csv", "t,u,1\n")],
        "$SANDBOX/recipes/leak.toml:3:8: target `/etc/kubernetes/token.csv` is also a prerequisite (declared by recipe `kube-apiserver` ($SANDBOX/recipes/kube-apiserver.toml:5:5)); kbuild would copy the host's file into the world-readable store and move the original aside",
    );
    // Within one recipe too.
    let text = "prerequisites = [\"/etc/kubernetes/token.csv\"]\n\n[files.\"/etc/kubernetes/token.csv\"]\ntext = \"x\\n\"\n";
    w.sb.write_recipe("same", text);
    build_refused(
        "a_target_that_is_a_prerequisite_is_refused_at_load",
        &w,
        "same",
        "$SANDBOX/recipes/same.toml:3:8: target `/etc/kubernetes/token.csv` is also a prerequisite (declared by recipe `same` ($SANDBOX/recipes/same.toml:1:18)); kbuild would copy the host's file into the world-readable store and move the original aside",
    );
}

#[test]
fn a_target_inside_a_prerequisite_is_refused_at_load() {
    target_refused(
        "a_target_inside_a_prerequisite_is_refused_at_load",
        "inside",
        &[("/etc/kubernetes/token.csv/extra", "x\n")],
        "$SANDBOX/recipes/inside.toml:3:8: target `/etc/kubernetes/token.csv/extra` is inside prerequisite `/etc/kubernetes/token.csv` (declared by recipe `kube-apiserver` ($SANDBOX/recipes/kube-apiserver.toml:5:5)), which must be a file, not a directory",
    );
}

#[test]
fn a_prerequisite_inside_a_target_is_refused_at_load() {
    // `/etc/kubernetes/ssl` as a file would hide every key the master needs under it.
    target_refused(
        "a_prerequisite_inside_a_target_is_refused_at_load",
        "over",
        &[("/etc/kubernetes/ssl", "x\n")],
        "$SANDBOX/recipes/over.toml:3:8: prerequisite `/etc/kubernetes/ssl/ca-key.pem` (declared by recipe `kube-apiserver` ($SANDBOX/recipes/kube-apiserver.toml:7:5)) is inside target `/etc/kubernetes/ssl`, a file kbuild installs, so it could never exist",
    );
}

#[test]
fn a_prerequisite_in_kbuilds_state_is_refused_at_load() {
    let w = World::bare();
    w.sb.write_recipe("state", "prerequisites = [\"/etc/.kbuild/state.json\"]\n");
    let r = w.run(&["build", "state"]);
    r.assert_error(
        "error: cannot build state\n  caused by: $SANDBOX/recipes/state.toml:1:18: prerequisite `/etc/.kbuild/state.json` is inside kbuild's own state directory\n",
    );
    check("a_prerequisite_in_kbuilds_state_is_refused_at_load", &r);
    assert!(!w.sb.store.exists());
}

// ---------------------------------------------------------------------------------------------
// Private keys others can read
// ---------------------------------------------------------------------------------------------

const KEYS: &str = "prerequisites = [\n  \"/etc/kubernetes/ssl/ca.pem\",\n  \"/etc/kubernetes/ssl/ca-key.pem\",\n  \"/etc/kubernetes/ssl/server.key\",\n  \"/etc/kubernetes/ssl/bundle.pem\",\n  \"/etc/kubernetes/ssl/private.pem\",\n]\n\n[files.\"/etc/app.conf\"]\ntext = \"x\\n\"\n";

#[test]
fn a_private_key_others_can_read_is_warned_about_and_the_switch_proceeds() {
    let w = World::bare();
    w.sb.write_recipe("keys", KEYS);
    let g = w.build(&["keys"], &[], 1);
    // A certificate may be world-readable; keys are known by name or by their PEM header.
    file(
        &w,
        "etc/kubernetes/ssl/ca.pem",
        b"-----BEGIN CERTIFICATE-----\n",
        0o644,
    );
    file(&w, "etc/kubernetes/ssl/ca-key.pem", b"k\n", 0o644);
    // Owner-only: fine.
    file(&w, "etc/kubernetes/ssl/server.key", b"k\n", 0o600);
    // A certificate followed by its key.
    file(
        &w,
        "etc/kubernetes/ssl/bundle.pem",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nMHc\n",
        0o640,
    );
    // Through a link inside the root: the fix names the file itself.
    link(&w, "etc/kubernetes/ssl/private.pem", "/secrets/private.pem");
    file(
        &w,
        "secrets/private.pem",
        b"-----BEGIN PRIVATE KEY-----\nMIIE\n",
        0o604,
    );
    let warnings = [
        "private key /etc/kubernetes/ssl/bundle.pem is readable by group or others (mode 0640); fix: chmod 600 $SANDBOX/host/etc/kubernetes/ssl/bundle.pem",
        "private key /etc/kubernetes/ssl/ca-key.pem is readable by group or others (mode 0644); fix: chmod 600 $SANDBOX/host/etc/kubernetes/ssl/ca-key.pem",
        "private key /etc/kubernetes/ssl/private.pem is readable by group or others (mode 0604); fix: chmod 600 $SANDBOX/host/secrets/private.pem",
    ];
    let stderr: String = warnings.iter().map(|l| format!("warning: {l}\n")).collect();
    let plan: String = warnings
        .iter()
        .map(|l| format!("  warning: {l}\n"))
        .collect();
    let base = w.listing();
    for env in WAYS {
        let dry = w.run_env(&["switch", "--dry-run"], env);
        assert_eq!(dry.code, Some(0), "{dry:?}");
        assert_eq!(
            dry.stdout(),
            format!(
                "root $SANDBOX/host: nothing -> generation 1\n  prerequisites: 5 present\n{plan}  add     /etc/app.conf\n"
            )
        );
        assert_eq!(dry.stderr(), stderr);
    }
    let r = w.ok(&["switch"]);
    assert_eq!(
        r.stderr(),
        format!("{stderr}    Switched root `$SANDBOX/host` to generation 1\n")
    );
    check(
        "a_private_key_others_can_read_is_warned_about_and_the_switch_proceeds",
        &r,
    );
    w.assert_root(&w.expect(&base, &g, &[], &[]), &g, "after the switch");
    // Fixed as told: no warning.
    for p in [
        "etc/kubernetes/ssl/ca-key.pem",
        "etc/kubernetes/ssl/bundle.pem",
        "secrets/private.pem",
    ] {
        std::fs::set_permissions(w.root.join(p), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = w.ok(&["switch"]);
    assert_eq!(r.stderr(), "       Fresh generation 1 is already active\n");
}

#[test]
fn a_generation_that_installs_its_own_prerequisite_is_refused_at_switch() {
    // A generation recorded by a kbuild that did not refuse such recipes: switching to it
    // would adopt the host's file (and serve the store's copy in its place).
    let (w, _) = world();
    let record = w.sb.store.join(".kbuild/profiles/default/1.json");
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains("\"/etc/kubernetes/token.csv\""), "{text}");
    let forged = text.replace("\"/etc/kubernetes/token.csv\"", "\"/etc/app.conf\"");
    let perms = std::fs::metadata(&record).unwrap().permissions();
    std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&record, forged).unwrap();
    std::fs::set_permissions(&record, perms).unwrap();
    file(&w, "etc/app.conf", b"the host's own\n", 0o600);
    let line = "/etc/app.conf (this generation installs `/etc/app.conf` itself; rebuild it with `kbuild build`, which refuses a recipe that installs a prerequisite)";
    let before = snapshot(&w.root);
    for env in WAYS {
        let r = w.run_env(&["switch", "--adopt"], env);
        r.assert_error(&refusal(
            "cannot switch",
            line,
            "help: rebuild the generation with `kbuild build`\n",
        ));
        check(
            "a_generation_that_installs_its_own_prerequisite_is_refused_at_switch",
            &r,
        );
        assert_eq!(snapshot(&w.root), before);
    }
}

cases_tested!(PREREQUISITES;
    a_directory_where_the_token_should_be_is_missing,
    a_fifo_is_missing_and_never_opened,
    a_socket_is_missing,
    a_component_that_is_a_file_is_missing,
    nothing_at_all_is_missing_without_a_reason,
    a_dangling_link_is_missing_with_its_target,
    a_link_loop_is_missing,
    an_absolute_link_is_followed_inside_the_root,
    a_relative_link_is_followed_inside_the_root,
    a_link_on_the_way_is_followed_inside_the_root,
    dot_dot_never_climbs_above_the_root,
    an_absolute_link_to_a_host_file_is_missing,
    a_link_escaping_the_root_to_a_host_file_is_missing,
    an_unreadable_token_is_missing,
    a_target_that_is_a_prerequisite_is_refused_at_load,
    a_target_inside_a_prerequisite_is_refused_at_load,
    a_prerequisite_inside_a_target_is_refused_at_load,
    a_prerequisite_in_kbuilds_state_is_refused_at_load,
    a_private_key_others_can_read_is_warned_about_and_the_switch_proceeds,
    a_generation_that_installs_its_own_prerequisite_is_refused_at_switch,
    a_directory_link_to_a_host_directory_is_named_as_the_reason,
    a_dangling_directory_link_is_named_as_the_reason,
    a_link_to_a_link_climbing_out_names_every_hop,
    mixed_reasons_each_carry_their_own_and_the_help_lists_each_fix,
);

// ---------------------------------------------------------------------------------------------
// Every missing prerequisite carries its reason, whatever the components on the way are, and
// the help fits the reasons (review finding F4)
// ---------------------------------------------------------------------------------------------

/// A recipe `ssl` with `/etc/app.conf` and the prerequisites `prereqs`, built as generation 1
/// in an empty root.
fn ssl_world(prereqs: &[&str]) -> World {
    let w = World::bare();
    let list: Vec<String> = prereqs.iter().map(|p| format!("\"{p}\"")).collect();
    w.sb.write_recipe(
        "ssl",
        &format!(
            "prerequisites = [{}]\n\n[files.\"/etc/app.conf\"]\ntext = \"x\\n\"\n",
            list.join(", ")
        ),
    );
    w.build(&["ssl"], &[], 1);
    w
}

/// The switch and its dry run are refused both ways with exactly `lines` (in order) and
/// `help`, and nothing in the root changes; the switch is the outcome of `case`.
#[track_caller]
fn refused(case: &str, w: &World, lines: &[&str], help: &str) {
    let before = snapshot(&w.root);
    for env in WAYS {
        let r = w.run_env(&["switch"], env);
        r.assert_error(&refusal("cannot switch", &lines.join(", "), help));
        check(case, &r);
        assert_eq!(snapshot(&w.root), before, "{env:?}");
        let dry = w.run_env(&["switch", "--dry-run"], env);
        assert_eq!(dry.code, Some(1), "{dry:?}");
        let plan: String = lines
            .iter()
            .map(|l| format!("  prerequisite missing: {l}\n"))
            .collect();
        assert_eq!(
            dry.stdout(),
            format!("root $SANDBOX/host: nothing -> generation 1\n{plan}  add     /etc/app.conf\n"),
            "{env:?}"
        );
        assert_eq!(
            dry.stderr(),
            refusal("a switch of", &lines.join(", "), help),
            "{env:?}"
        );
        assert_eq!(snapshot(&w.root), before, "{env:?}");
    }
}

const CA: [&str; 2] = [
    "/etc/kubernetes/ssl/ca-key.pem",
    "/etc/kubernetes/ssl/ca.pem",
];

#[test]
fn a_directory_link_to_a_host_directory_is_named_as_the_reason() {
    // The host directory exists and holds both keys; inside the root the link leads nowhere.
    let w = ssl_world(&CA);
    let host = w.sb.dir.join("hostkeys");
    std::fs::create_dir_all(&host).unwrap();
    for f in ["ca-key.pem", "ca.pem"] {
        std::fs::write(host.join(f), b"k\n").unwrap();
    }
    link(&w, "etc/kubernetes/ssl", host.to_str().unwrap());
    assert!(
        w.root.join("etc/kubernetes/ssl/ca.pem").is_file(),
        "on the host it resolves"
    );
    let why = "(`/etc/kubernetes/ssl` is a symlink to `$SANDBOX/hostkeys`, which does not exist inside the root)";
    refused(
        "a_directory_link_to_a_host_directory_is_named_as_the_reason",
        &w,
        &[
            &format!("/etc/kubernetes/ssl/ca-key.pem {why}"),
            &format!("/etc/kubernetes/ssl/ca.pem {why}"),
        ],
        LINK_HELP,
    );
}

#[test]
fn a_dangling_directory_link_is_named_as_the_reason() {
    let w = ssl_world(&CA);
    link(&w, "etc/kubernetes/ssl", "/nonexistent");
    let why = "(`/etc/kubernetes/ssl` is a symlink to `/nonexistent`, which does not exist inside the root)";
    refused(
        "a_dangling_directory_link_is_named_as_the_reason",
        &w,
        &[
            &format!("/etc/kubernetes/ssl/ca-key.pem {why}"),
            &format!("/etc/kubernetes/ssl/ca.pem {why}"),
        ],
        LINK_HELP,
    );
}

#[test]
fn a_link_to_a_link_climbing_out_names_every_hop() {
    // `token.csv -> ../../x` exists inside the root (as a link); `x` climbs out to a host file
    // that exists. The hop that leads nowhere is the second: both are named.
    let (w, _) = world();
    let outside = w.sb.dir.join("outside/token.csv");
    std::fs::create_dir_all(outside.parent().unwrap()).unwrap();
    std::fs::write(&outside, b"host token\n").unwrap();
    link(&w, TOKEN, "../../x");
    link(&w, "x", "../outside/token.csv");
    assert!(
        w.root.join(TOKEN).is_file(),
        "on the host the links resolve"
    );
    refused(
        "a_link_to_a_link_climbing_out_names_every_hop",
        &w,
        &[
            "/etc/kubernetes/token.csv (a symlink to `../../x`, and `/x` is a symlink to `../outside/token.csv`, which does not exist inside the root)",
        ],
        LINK_HELP,
    );
}

#[test]
fn mixed_reasons_each_carry_their_own_and_the_help_lists_each_fix() {
    // `ssl -> /srv/keys` leads to a directory inside the root that holds `ca-key.pem` (as a
    // directory: a failed bind mount) but not `ca.pem`; the token simply does not exist.
    let w = ssl_world(&[CA[0], CA[1], "/etc/kubernetes/token.csv"]);
    link(&w, "etc/kubernetes/ssl", "/srv/keys");
    std::fs::create_dir_all(w.root.join("srv/keys/ca-key.pem")).unwrap();
    refused(
        "mixed_reasons_each_carry_their_own_and_the_help_lists_each_fix",
        &w,
        &[
            "/etc/kubernetes/ssl/ca-key.pem (a directory, not a file)",
            "/etc/kubernetes/ssl/ca.pem (`/etc/kubernetes/ssl` is a symlink to `/srv/keys`; `/srv/keys/ca.pem` does not exist inside the root)",
            "/etc/kubernetes/token.csv",
        ],
        "help: remove the directory (what a failed bind mount leaves) and put the file in its place; fix the symlink: it is followed inside the root, as `chroot ROOT` would, so what it leads to must exist there; create the ones that do not exist on the host (kbuild never copies secrets such as tokens and TLS keys into the store)\n",
    );
    // Once the root holds the files where the link leads, the switch goes through.
    std::fs::remove_dir(w.root.join("srv/keys/ca-key.pem")).unwrap();
    for f in ["srv/keys/ca-key.pem", "srv/keys/ca.pem", TOKEN] {
        file(&w, f, b"k\n", 0o600);
    }
    w.ok(&["switch"]);
    assert!(w.root.join("etc/app.conf").is_symlink());
}
