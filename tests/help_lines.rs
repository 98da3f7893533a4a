//! Help that leads somewhere (issue 13, point 4): each `help:` line names a command that works
//! in the situation, checked on the exact messages of the real binary.

mod common;

use common::world::*;
use common::*;

fn with_env(sb: &Sandbox, args: &[&str]) -> Run {
    let mut c = sb.bare();
    c.args(args);
    sb.run(c)
}

#[test]
fn a_store_that_does_not_exist_is_called_that() {
    let sb = Sandbox::new();
    let r = with_env(&sb, &["--store", "nope", "diff"]);
    r.assert_error(
        "error: cannot open store `nope`\n  caused by: store `nope` does not exist\n\
         help: check `--store` (default `./store`, env KBUILD_STORE; absolute: `$SANDBOX/nope`); `kbuild build RECIPE` creates the store\n",
    );
}

#[test]
fn a_missing_lock_file_with_locked_is_called_missing_and_says_where_it_looked() {
    let sb = Sandbox::new();
    std::fs::remove_file(&sb.lock).unwrap();
    let help = "help: point `--lock-file PATH` at the project's lock file, or pin the inputs from local copies without the network: `kbuild build RECIPE --override-input NAME=file:///path/to/file --write-lock`\n";
    let r = sb.kbuild(&["build", "master", "--locked"]);
    r.assert_error(&format!(
        "error: cannot build master\n  caused by: the lock file `$SANDBOX/flake-like.lock.json` is missing, and `--locked` was given\n{help}"
    ));
    // A recipes directory elsewhere: the lock file is looked for beside it, and it says so.
    let elsewhere = sb.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut c = sb.bare();
    c.current_dir(&elsewhere).args([
        "--store",
        sb.store.to_str().unwrap(),
        "--recipes",
        sb.recipes.to_str().unwrap(),
        "build",
        "master",
        "--locked",
    ]);
    let r = sb.run(c);
    r.assert_error(&format!(
        "error: cannot build master\n  caused by: the lock file `$SANDBOX/flake-like.lock.json` is missing, and `--locked` was given (looked for beside the recipes directory `$SANDBOX/recipes`)\n{help}"
    ));
}

#[test]
fn a_failed_download_says_what_to_do_and_offline_never_announces_a_fetch() {
    let server = Server::start();
    let sb = Sandbox::local(&server); // nothing served: 404
    let r = sb.kbuild(&["build", "master"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr().ends_with(
            "help: add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input kubernetes-server=file:///path/to/file` (add `--offline` to be sure nothing is fetched)\n"
        ),
        "{}",
        r.stderr()
    );

    // The repository's recipes and lock file, offline, nothing in the store.
    let sb = Sandbox::new();
    let r = sb.kbuild(&["build", "master", "--offline"]);
    r.assert_error(
        "error: cannot build master\n  caused by: cannot fetch input `kubernetes-server`\n  caused by: `https://dl.k8s.io/v1.6.0/kubernetes-server-linux-amd64.tar.gz` needs the network, and `--offline` was given\n\
         help: build once with network access, or point the input at a local copy: `--override-input kubernetes-server=file:///path/to/file`\n",
    );
}

#[test]
fn lock_and_update_accept_override_input_and_pin_the_file_read() {
    let server = Server::start();
    let sb = Sandbox::local(&server); // nothing served, no lock file
    let f = fixture();
    let url = write_fixture(&sb, "copy", &f.gz);
    let r = sb.kbuild(&[
        "lock",
        "--offline",
        "--override-input",
        &format!("{INPUT}={url}"),
    ]);
    r.assert_success();
    // Pinned under the recipe's URL, with the hash of the file read; nothing fetched.
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[&sb.input_url()],
            &f.sha256,
            Some(f.gz.len() as u64)
        )])
    );
    assert_eq!(server.request_count(), 0);

    // update re-reads it from the override (a new tarball on the local mirror).
    let changed = Tarball::kubernetes_server()
        .with_changed("kubernetes/server/bin/kube-proxy", b"new")
        .build(Compression::Gzip);
    let url2 = write_fixture(&sb, "copy2", &changed);
    let r = sb.kbuild(&[
        "update",
        INPUT,
        "--offline",
        "--override-input",
        &format!("{INPUT}={url2}"),
    ]);
    r.assert_success();
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[&sb.input_url()],
            &sha256_hex(&changed),
            Some(changed.len() as u64)
        )])
    );
    let r = sb.kbuild(&["lock", "--override-input", "nosuch=file:///x"]);
    r.assert_error(
        "error: cannot lock inputs\n  caused by: `--override-input nosuch=…`: no loaded recipe declares an input `nosuch`\nhelp: declared inputs: kubernetes-server\n",
    );
}

#[test]
fn lock_file_errors_point_at_a_real_line_and_column() {
    let sb = Sandbox::new();
    std::fs::write(&sb.lock, "{\n  \"inputs\": {},\n  \"version\": 1\n").unwrap();
    let r = sb.kbuild(&["build", "master", "--offline"]);
    r.assert_error(
        "error: cannot build master\n  caused by: $SANDBOX/flake-like.lock.json:3:15: invalid lock file: EOF while parsing an object\n\
         help: fix the file by hand at that line and column, or delete it and pin the inputs again: `kbuild lock` (without the network: `kbuild lock --override-input NAME=file:///path/to/file`)\n",
    );
}

#[test]
fn template_errors_give_line_and_column_and_an_unknown_filter_lists_the_available_ones() {
    let sb = Sandbox::new();
    sb.write_template("templates/scheduler.j2", "a\nb {{ IP | nosuch }}\n");
    let r = sb.kbuild(&["build", "master", "--offline"]);
    r.assert_error(&format!(
        "error: cannot build master\n  caused by: $SANDBOX/recipes/templates/scheduler.j2:2:11: unknown filter: filter nosuch is unknown\n\
         help: available filters: {}; fix the template, then run `kbuild build` again\n",
        kbuild::render::FILTERS.join(", ")
    ));
    sb.write_template("templates/scheduler.j2", "a\nb {{ IP \n");
    let r = sb.kbuild(&["build", "master", "--offline"]);
    r.assert_error(
        "error: cannot build master\n  caused by: $SANDBOX/recipes/templates/scheduler.j2:2:6: syntax error: unexpected end of input, expected end of variable block\n",
    );
}

#[test]
fn every_listed_filter_exists() {
    let w = World::new();
    // Each filter applied once in a literal text (rendered as a template): an unknown one
    // fails the build.
    let uses: Vec<String> = kbuild::render::FILTERS
        .iter()
        .map(|f| match *f {
            "attr" => "{{ {'x': 1} | attr('x') }}".to_owned(),
            "batch" | "slice" => format!("{{{{ [1] | {f}(1) }}}}"),
            "format" => "{{ '%s' | format(IP) }}".to_owned(),
            "replace" => "{{ IP | replace('a', 'b') }}".to_owned(),
            "groupby" | "selectattr" | "rejectattr" => format!("{{{{ [] | {f}('x') }}}}"),
            "map" => "{{ [] | map('upper') }}".to_owned(),
            "dictsort" | "items" => format!("{{{{ {{}} | {f} }}}}"),
            "first" | "last" | "max" | "min" => format!("{{{{ [1] | {f} }}}}"),
            "select" | "reject" | "sum" | "chain" | "zip" | "unique" | "sort" | "reverse"
            | "list" | "join" | "length" | "count" => {
                format!("{{{{ [] | {f} }}}}")
            }
            "abs" | "round" | "int" | "float" | "bool" => format!("{{{{ 1 | {f} }}}}"),
            _ => format!("{{{{ IP | {f} }}}}"),
        })
        .collect();
    w.master_plus("filters", &[("/etc/kubernetes/filters", &uses.join("\n"))]);
    w.build(&["filters"], &[], 1);
}

#[test]
fn help_lists_global_options_apart_and_every_command_has_examples() {
    let sb = Sandbox::new();
    let commands = [
        "build",
        "lock",
        "update",
        "inputs",
        "generations",
        "switch",
        "rollback",
        "check",
        "diff",
        "gc",
        "verify",
        "export",
        "import",
        "push",
        "pull",
        "completions",
        "man",
    ];
    for c in commands {
        let r = with_env(&sb, &[c, "--help"]);
        r.assert_success();
        let out = r.stdout;
        let global = out
            .find("\nGlobal options:\n")
            .unwrap_or_else(|| panic!("{c}: {out}"));
        let store = out.find("--store <DIR>").unwrap();
        assert!(
            store > global,
            "{c}: --store listed among its own options:\n{out}"
        );
        assert!(
            out.contains("\nExamples:\n  kbuild "),
            "{c}: no examples:\n{out}"
        );
    }
    let out = with_env(&sb, &["gc", "--help"]).stdout;
    assert!(
        out.contains("Without --keep no generation is removed"),
        "{out}"
    );
    for c in ["switch", "rollback"] {
        let out = with_env(&sb, &[c, "--help"]).stdout;
        assert!(
            out.contains("Print the plan (files, prerequisites, unit actions as \"would run\") and change nothing"),
            "{c}: {out}"
        );
        assert!(
            out.contains("as \"not run\" (after a switch) or \"would run\" (with --dry-run)"),
            "{c}: {out}"
        );
        assert!(
            out.contains("--no-rollback") && out.contains("health gate"),
            "{c}: {out}"
        );
    }
    let out = with_env(&sb, &["check", "--help"]).stdout;
    assert!(
        out.contains("elsewhere they are listed as \"not run\"\n(never as passed)"),
        "{out}"
    );
}
