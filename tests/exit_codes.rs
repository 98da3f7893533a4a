//! Exit codes scripts can trust: output that could not be written is a failure (`> /dev/full`),
//! a reader that went away (`| head`) is not and never a panic — on stdout or stderr — and a
//! switch runs to its end either way; the first switch of a root from a read-only store says
//! exactly which path must be writable and why.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::Run;
use common::world::*;

const FULL: &str = "error: cannot write to stdout: No space left on device (os error 28)\nhelp: the command ran to its end; only its output was lost\n";

/// Runs with stdout to `/dev/full`: (exit code, stderr with the sandbox path masked).
fn to_dev_full(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let out = w
        .std_command(&kbuild_bin(), args)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr)
        .unwrap()
        .replace(&w.sb.dir.display().to_string(), "$SANDBOX");
    (out.status.code(), err)
}

/// Which of stdout and stderr go to a pipe nobody reads (its read end closed before the
/// command starts, so the very first write fails with EPIPE).
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// Runs with `closed` going to a pipe without reader; the other stream is captured.
/// Returns (exit code, signal, captured stream).
fn with_closed(w: &World, closed: Closed, args: &[&str]) -> (Option<i32>, Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = w.std_command(&kbuild_bin(), args);
    match closed {
        Closed::Stdout => c.stdout(writer).stderr(Stdio::piped()),
        Closed::Stderr => c.stderr(writer).stdout(Stdio::piped()),
        Closed::Both => c.stdout(writer.try_clone().unwrap()).stderr(writer),
    };
    let out = c.output().unwrap();
    let captured = match closed {
        Closed::Stdout => out.stderr,
        Closed::Stderr => out.stdout,
        Closed::Both => Vec::new(),
    };
    (
        out.status.code(),
        out.status.signal(),
        String::from_utf8(captured)
            .unwrap()
            .replace(&w.sb.dir.display().to_string(), "$SANDBOX"),
    )
}

// ---------------------------------------------------------------------------------------------
// A failed write to stdout
// ---------------------------------------------------------------------------------------------

/// The example: `kbuild generations --json > /dev/full` exits 1 and says why.
#[test]
fn generations_json_to_dev_full_exits_non_zero() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    for args in [
        &["generations", "--json"][..],
        &["generations"],
        &["diff", "1", "1"],
    ] {
        assert_eq!(
            to_dev_full(&w, args),
            (Some(1), FULL.to_owned()),
            "{args:?}"
        );
    }
    // With somewhere to write, the same commands succeed.
    w.ok(&["generations", "--json"]);
}

/// `--help` and `--version` are output like any other: lost to a full disk, they exit 1; a
/// usage error still exits 2 (clap's code), and help that could be written exits 0.
#[test]
fn help_and_version_to_dev_full_exit_non_zero() {
    let w = World::new();
    for args in [
        &["--help"][..],
        &["--version"],
        &["switch", "--help"],
        &["help", "gc"],
    ] {
        assert_eq!(
            to_dev_full(&w, args),
            (Some(1), FULL.to_owned()),
            "{args:?}"
        );
        let out = w.std_command(&kbuild_bin(), args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
    }
    let (code, err) = to_dev_full(&w, &["switch", "--no-such-flag"]);
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: unexpected argument '--no-such-flag' found"),
        "{err}"
    );
}

/// A switch whose plan cannot be printed still switches the root completely (its unit
/// actions are not cut short), then exits 1.
#[test]
fn a_switch_to_dev_full_completes_then_exits_non_zero() {
    let w = World::new();
    let base = w.base();
    let g1 = w.build(&["master"], &[], 1);
    let (code, err) = to_dev_full(&w, &["switch"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!("    Switched root `$SANDBOX/host` to generation 1\n{FULL}")
    );
    w.assert_root(
        &w.expect(&base, &g1, &MASTER_DIRS, &[]),
        &g1,
        "after the switch",
    );
    // A command that fails before writing anything reports its own error only.
    let (code, err) = to_dev_full(&w, &["switch", "9"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "error: cannot switch root `$SANDBOX/host`\n  caused by: generation 9 does not exist in this store\nhelp: `kbuild generations` lists them\n"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// A reader that went away
// ---------------------------------------------------------------------------------------------

/// The example through a real shell pipeline: `kbuild switch --dry-run 2>&1 | head -3`
/// (and `build … 2>&1 | head -1`): kbuild exits 0, never 101.
#[test]
fn dry_run_piped_into_head_exits_zero() {
    let w = World::new();
    let r = w.sb.run({
        let mut c = assert_cmd::Command::new("bash");
        let kbuild = w.std_command(&kbuild_bin(), &["build", "master"]);
        let line = shell_line(&kbuild);
        c.args([
            "-c",
            &format!("{line} 2>&1 | head -1; echo \"kbuild exit: ${{PIPESTATUS[0]}}\""),
        ])
        .current_dir(&w.sb.dir);
        c
    });
    assert_eq!(r.code, Some(0));
    assert_eq!(
        r.stdout(),
        format!(
            "     Reading kubernetes-server from file://$SANDBOX/pinned/{TARBALL}\nkbuild exit: 0\n"
        )
    );
    let r = w.sb.run({
        let mut c = assert_cmd::Command::new("bash");
        let line = shell_line(&w.std_command(&kbuild_bin(), &["switch", "--dry-run"]));
        c.args([
            "-c",
            &format!("{line} 2>&1 | head -3; echo \"kbuild exit: ${{PIPESTATUS[0]}}\""),
        ]);
        c
    });
    assert_eq!(
        r.stdout(),
        "root $SANDBOX/host: nothing -> generation 1\n  prerequisites: 5 present\n  add     /etc/kubernetes/apiserver\nkbuild exit: 0\n"
    );
}

/// `Command` → one shell-quoted line.
fn shell_line(c: &Command) -> String {
    let q = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', "'\\''"));
    let mut parts = vec![];
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            parts.push(format!("{}={}", k.to_str().unwrap(), q(v)));
        }
    }
    parts.insert(0, "env -i".to_owned());
    parts.push(q(c.get_program()));
    parts.extend(c.get_args().map(q));
    parts.join(" ")
}

/// Deterministic broken pipes: stdout, stderr or both go to a pipe whose reader is gone
/// before kbuild writes its first byte. Every command finishes with its own exit code —
/// never 101 (a panic), never a signal — and a switch still changes the root completely.
#[test]
fn closed_stdout_or_stderr_never_panics_and_a_switch_still_completes() {
    for closed in [Closed::Stdout, Closed::Stderr, Closed::Both] {
        let w = World::new();
        let base = w.base();
        let (code, signal, _) = with_closed(&w, closed, &["build", "master"]);
        assert_eq!((code, signal), (Some(0), None), "{closed:?}: build");
        let g1 = Gen {
            number: 1,
            rootfs: w
                .ok(&["generations", "--json"])
                .stdout
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("\"path\": \"")
                        .map(|p| std::path::PathBuf::from(p.trim_end_matches("\",")))
                })
                .unwrap(),
        };
        for (args, expected) in [
            (&["switch", "--dry-run"][..], Some(0)),
            (&["generations"], Some(0)),
            (&["generations", "--json"], Some(0)),
            (&["--help"], Some(0)),
            (&["switch", "9"], Some(1)),
            (&["verify", "--root", "/nonexistent-root"], Some(1)),
        ] {
            let (code, signal, _) = with_closed(&w, closed, args);
            assert_eq!((code, signal), (expected, None), "{closed:?}: {args:?}");
        }
        let (code, signal, captured) = with_closed(&w, closed, &["switch"]);
        assert_eq!((code, signal), (Some(0), None), "{closed:?}: switch");
        match closed {
            Closed::Stdout => assert_eq!(
                captured,
                "    Switched root `$SANDBOX/host` to generation 1\n"
            ),
            Closed::Stderr => assert!(
                captured.starts_with("root $SANDBOX/host: nothing -> generation 1\n"),
                "{captured}"
            ),
            Closed::Both => {}
        }
        w.assert_root(
            &w.expect(&base, &g1, &MASTER_DIRS, &[]),
            &g1,
            &format!("{closed:?}: after the switch"),
        );
        assert!(!w.root.join("etc/.kbuild/journal.json").exists());
    }
}

// ---------------------------------------------------------------------------------------------
// A read-only store
// ---------------------------------------------------------------------------------------------

/// Runs kbuild with the store bind-mounted read-only onto itself, in a private mount
/// namespace (so the mount ends with the command, and this works as root, where `chmod`
/// would not stop a write).
fn read_only_store(w: &World, args: &[&str]) -> Run {
    let store = w.store();
    let q = |p: &Path| format!("'{}'", p.display());
    let script = format!(
        "mount --bind {s} {s} && mount -o remount,bind,ro {s} && exec {k} --store {s} --recipes {r} --lock-file {l} --root {root} \"$@\"",
        s = q(&store),
        k = q(&kbuild_bin()),
        r = q(&w.sb.recipes),
        l = q(&w.sb.lock),
        root = q(&w.root),
    );
    let mut c = assert_cmd::Command::new("unshare");
    c.args(["--map-root-user", "--mount", "sh", "-c", &script, "sh"])
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", &w.sb.home)
        .current_dir(&w.sb.dir)
        .timeout(std::time::Duration::from_secs(60));
    w.sb.run(c)
}

/// The first switch of a new root needs one write in the store: its record in the roots
/// registry, without which gc would delete the generation the root uses. From a read-only
/// store that switch (and its dry run) is refused, naming that path, and nothing changes;
/// once the root is registered, switches from the read-only store work.
#[test]
fn the_first_switch_from_a_read_only_store_names_the_registry() {
    let w = World::new();
    let base = w.base();
    let g1 = w.build(&["master"], &[], 1);
    let g2 = w.build(&["master"], &["--set", "IP=10.0.0.9"], 2);
    let probe = read_only_store(&w, &["generations"]);
    assert_eq!(
        probe.code,
        Some(0),
        "this test needs `unshare --map-root-user --mount` and bind mounts: {probe:?}"
    );
    let help = "help: gc keeps the generation a root uses only while the root is in this registry: make `$SANDBOX/store/.kbuild/roots` writable (the only place in the store a switch writes, once per root) and run the switch again\n";
    let r = read_only_store(&w, &["switch", "1"]);
    r.assert_error(&format!(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: cannot record root `$SANDBOX/host` in the store's roots registry `$SANDBOX/store/.kbuild/roots`; nothing was changed\n  caused by: failed to create directory `$SANDBOX/store/.kbuild/roots`: Read-only file system (os error 30)\n{help}"
    ));
    assert_listing(&w.listing(), &base, "after the refusal");
    let r = read_only_store(&w, &["switch", "1", "--dry-run"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout()
            .starts_with("root $SANDBOX/host: nothing -> generation 1\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stderr(),
        format!(
            "error: a switch of root `$SANDBOX/host` would be refused\n  caused by: cannot record root `$SANDBOX/host` in the store's roots registry `$SANDBOX/store/.kbuild/roots`; nothing was changed\n  caused by: Read-only file system (os error 30)\n{help}"
        )
    );
    assert_listing(&w.listing(), &base, "after the dry run");

    // Registered once (writable store), the root then switches from the read-only store.
    w.ok(&["switch", "1"]);
    let r = read_only_store(&w, &["switch", "2"]);
    r.assert_success();
    w.assert_root(
        &w.expect(&base, &g2, &MASTER_DIRS, &[]),
        &g2,
        "after switch 2 from the read-only store",
    );
    let r = read_only_store(&w, &["rollback"]);
    r.assert_success();
    w.assert_resolves(&g1, "after the rollback from the read-only store");
    // A record written by an older kbuild (no store id) counts as registered too.
    let records: Vec<_> = std::fs::read_dir(w.sb.store.join(".kbuild/roots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(records.len(), 1);
    let old = format!("{{\n  \"root\": \"{}\"\n}}\n", w.root.display());
    std::fs::write(&records[0], &old).unwrap();
    read_only_store(&w, &["switch", "2", "--dry-run"]).assert_success();
    read_only_store(&w, &["switch", "2"]).assert_success();
    w.assert_resolves(&g2, "after switch 2 with an old record");
    assert_eq!(std::fs::read_to_string(&records[0]).unwrap(), old);
}

/// A store written by an older kbuild has no id yet; the first switch gives it one. From a
/// read-only store that is refused (dry run alike), naming the directory and why.
#[test]
fn an_old_read_only_store_without_id_names_what_it_needs() {
    let w = World::new();
    let base = w.base();
    w.build(&["master"], &[], 1);
    std::fs::remove_file(w.sb.store.join(".kbuild/id")).unwrap();
    let probe = read_only_store(&w, &["generations"]);
    assert_eq!(
        probe.code,
        Some(0),
        "this test needs `unshare --map-root-user --mount`: {probe:?}"
    );
    let help = "help: a store written by an older kbuild gets its id once, on the first switch: make `$SANDBOX/store/.kbuild` writable for that switch (roots record the id to find the store wherever it is mounted)\n";
    let r = read_only_store(&w, &["switch"]);
    r.assert_error(&format!("error: cannot switch root `$SANDBOX/host`\n  caused by: cannot give store `$SANDBOX/store` its id `$SANDBOX/store/.kbuild/id`\n  caused by: failed to create a temporary file in `$SANDBOX/store/.kbuild`: Read-only file system (os error 30)\n{help}"));
    let r = read_only_store(&w, &["switch", "--dry-run"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr(),
        format!(
            "error: a switch of root `$SANDBOX/host` would be refused\n  caused by: cannot give store `$SANDBOX/store` its id `$SANDBOX/store/.kbuild/id`\n  caused by: Read-only file system (os error 30)\n{help}"
        )
    );
    assert_listing(&w.listing(), &base, "after the refusals");
    assert!(!w.sb.store.join(".kbuild/id").exists());
    // Writable, the same switch works and the store has its id.
    w.ok(&["switch"]);
    assert_eq!(store_id(&w.store()).len(), 32);
}
