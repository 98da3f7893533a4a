//! Issue 9, point 4: `kbuild inputs` lists the recipes' inputs (name, whether the archive is
//! kept in the store, pin, URL) and `kbuild inputs NAME --members` an archive's members
//! (type, mode, size, name) for every supported format, fetched as a build fetches them
//! (pin checked, `--offline` and `--override-input` honoured).

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Sandbox, Server, sha256_hex};

fn sh(dir: &Path, program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn bare_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::remove_dir_all(&sb.recipes).unwrap();
    std::fs::create_dir(&sb.recipes).unwrap();
    let _ = std::fs::remove_file(&sb.lock);
    sb
}

/// A small tree: a directory, a 0755 file, a hard link to it, a symlink to it, a 0644
/// sparse file of 1 MiB with 4 KiB of data.
fn tree(d: &Path) {
    std::fs::create_dir(d.join("pkg")).unwrap();
    std::fs::write(d.join("pkg/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(d.join("pkg/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::hard_link(d.join("pkg/tool"), d.join("pkg/tool-hard")).unwrap();
    std::os::unix::fs::symlink("tool", d.join("pkg/alias")).unwrap();
    let mut f = std::fs::File::create(d.join("pkg/sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all(&[7u8; 4096]).unwrap();
    drop(f);
    std::fs::set_permissions(d.join("pkg/sparse"), std::fs::Permissions::from_mode(0o644)).unwrap();
}

const ORDER: [&str; 5] = [
    "pkg",
    "pkg/tool",
    "pkg/tool-hard",
    "pkg/alias",
    "pkg/sparse",
];

fn recipe(name: &str, url: &str, sha: Option<&str>) -> String {
    let mut s = format!("[inputs.{name}]\nurl = \"{url}\"\n");
    if let Some(h) = sha {
        s.push_str(&format!("sha256 = \"{h}\"\n"));
    }
    s
}

#[test]
fn inputs_lists_name_store_pin_and_url() {
    let sb = bare_sandbox();
    let pinned = "a".repeat(64);
    let in_recipe = "b".repeat(64);
    sb.write_recipe(
        "one",
        &format!(
            "{}\n{}",
            recipe(
                "etcd-server",
                "https://deb.debian.org/etcd-server.deb",
                None
            ),
            recipe(
                "esbuild",
                "https://registry.npmjs.org/esbuild.tgz",
                Some(&in_recipe)
            )
        ),
    );
    sb.write_recipe(
        "two",
        &format!(
            "{}mirrors = [\"file:///srv/mirror/k.tar.gz\"]\n",
            recipe("kubernetes-server", "https://dl.k8s.io/k.tar.gz", None)
        ),
    );
    sb.write_lock(&[(
        "kubernetes-server",
        &["https://dl.k8s.io/k.tar.gz", "file:///srv/mirror/k.tar.gz"],
        &pinned,
        Some(1234),
    )]);
    let r = sb.kbuild(&["inputs"]);
    r.assert_success();
    let pad = |s: &str| format!("{s:<71}");
    assert_eq!(
        r.stdout,
        format!(
            "NAME               STORE     {}  URL\n\
             esbuild            not kept  {}  https://registry.npmjs.org/esbuild.tgz\n\
             etcd-server        not kept  {}  https://deb.debian.org/etcd-server.deb\n\
             kubernetes-server  not kept  {}  https://dl.k8s.io/k.tar.gz file:///srv/mirror/k.tar.gz\n",
            pad("PIN"),
            pad(&format!("sha256:{in_recipe}")),
            pad("unpinned"),
            pad(&format!("sha256:{pinned}")),
        )
    );
    assert_eq!(r.stderr, "");

    // One input by name; an unknown name lists the known ones.
    let r = sb.kbuild(&["inputs", "esbuild"]);
    r.assert_success();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(r.stdout.lines().nth(1).unwrap().starts_with("esbuild "));
    sb.kbuild(&["inputs", "etcd"]).assert_error(
        "error: cannot list the inputs\n  caused by: no recipe in the recipes directory declares an input `etcd`\nhelp: declared inputs: esbuild, etcd-server, kubernetes-server\n",
    );
}

/// `--members` for a tarball (GNU sparse, hard link, symlink): exact lines.
#[test]
fn members_of_a_tarball_with_type_mode_size_and_links() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    tree(d);
    let mut args = vec![
        "--sparse",
        "--format=gnu",
        "--no-recursion",
        "-cJf",
        "t.tar.xz",
    ];
    args.extend_from_slice(&ORDER);
    sh(d, "tar", &args);
    let bytes = std::fs::read(d.join("t.tar.xz")).unwrap();
    let server = Server::start();
    server.serve("/t.tar.xz", &bytes);
    let sb = bare_sandbox();
    sb.write_recipe(
        "t",
        &recipe("t", &server.url("/t.tar.xz"), Some(&sha256_hex(&bytes))),
    );
    let r = sb.kbuild(&["inputs", "t", "--members"]);
    r.assert_success();
    assert_eq!(
        r.stdout,
        "dir      0755       0 pkg\n\
         file     0755      20 pkg/tool\n\
         hardlink 0755       0 pkg/tool-hard link to pkg/tool\n\
         symlink  0777       0 pkg/alias -> tool\n\
         sparse   0644 1048576 pkg/sparse\n"
    );
    assert_eq!(
        r.stderr().replace(server.base(), "$SERVER"),
        "    Fetching t from $SERVER/t.tar.xz\n        Read t: 0.0 MiB in $TIME\n"
    );
    // The archive is kept, as a build keeps it (review finding 9): the build that follows
    // needs no network.
    let kept = common::kept_name("sha256", &sha256_hex(&bytes), "t.tar.xz");
    assert_eq!(common::top_level(&sb.store), [".kbuild", kept.as_str()]);
    sb.write_recipe(
        "t",
        &format!(
            "{}\n[files.\"/usr/local/bin/tool\"]\ninput = \"t\"\nmember = \"pkg/tool\"\n",
            recipe("t", &server.url("/t.tar.xz"), Some(&sha256_hex(&bytes)))
        ),
    );
    let b = sb.kbuild(&["build", "t", "--offline"]);
    b.assert_success();
    assert_eq!(
        std::fs::read(b.rootfs().join("usr/local/bin/tool")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(server.request_count(), 1, "the archive was fetched once");
}

/// Every supported format lists the names `tar -t` / `dpkg-deb -c` show (without `./`).
#[test]
fn members_of_every_format_match_the_tools_listing() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    tree(d);
    let mut made: Vec<(String, Vec<u8>, Vec<String>)> = Vec::new();
    let normalize = |s: &str| -> Option<String> {
        let t = s.trim_start_matches("./").trim_end_matches('/');
        (!t.is_empty()).then(|| t.to_owned())
    };
    for (file, opts) in [
        ("gnu.tar.gz", vec!["--format=gnu", "-z"]),
        ("p00.tar", vec!["--format=posix", "--sparse-version=0.0"]),
        (
            "p01.tar.zst",
            vec!["--format=posix", "--sparse-version=0.1", "--zstd"],
        ),
        (
            "p10.tar.xz",
            vec!["--format=posix", "--sparse-version=1.0", "-J"],
        ),
    ] {
        let mut args = vec!["--sparse", "--no-recursion"];
        args.extend(opts);
        args.extend(["-cf", file]);
        args.extend_from_slice(&ORDER);
        sh(d, "tar", &args);
        let names = String::from_utf8(sh(d, "tar", &["-tf", file])).unwrap();
        made.push((
            file.to_owned(),
            std::fs::read(d.join(file)).unwrap(),
            names.lines().filter_map(normalize).collect(),
        ));
    }
    let root = d.join("debroot");
    std::fs::create_dir(&root).unwrap();
    tree(&root);
    std::fs::create_dir(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: t\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n",
    )
    .unwrap();
    sh(
        d,
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zzstd",
            "--build",
            "debroot",
            "t.deb",
        ],
    );
    let listing = String::from_utf8(sh(d, "dpkg-deb", &["-c", "t.deb"])).unwrap();
    let names = listing
        .lines()
        .filter_map(|l| {
            // `-rwxr-xr-x root/root 21 2026-… ./pkg/tool` (links end ` -> x` / ` link to x`).
            let name = l.split_whitespace().nth(5)?;
            normalize(name)
        })
        .collect();
    made.push((
        "t.deb".into(),
        std::fs::read(d.join("t.deb")).unwrap(),
        names,
    ));

    let server = Server::start();
    let sb = bare_sandbox();
    let mut text = String::new();
    for (file, bytes, _) in &made {
        server.serve(&format!("/{file}"), bytes);
        text.push_str(&recipe(
            &file.replace('.', "-"),
            &server.url(&format!("/{file}")),
            Some(&sha256_hex(bytes)),
        ));
    }
    sb.write_recipe("all", &text);
    for (file, _, names) in &made {
        let r = sb.kbuild(&["inputs", &file.replace('.', "-"), "--members"]);
        r.assert_success();
        let listed: Vec<String> = r
            .stdout
            .lines()
            .map(|l| {
                let name = l.split_whitespace().nth(3).unwrap();
                name.to_owned()
            })
            .collect();
        assert_eq!(&listed, names, "{file}");
        let sparse = r
            .stdout
            .lines()
            .find(|l| l.ends_with(" pkg/sparse"))
            .unwrap();
        let kind = if file.ends_with(".deb") {
            "file  "
        } else {
            "sparse"
        };
        assert_eq!(
            sparse,
            format!("{kind}   0644 1048576 pkg/sparse"),
            "{file}"
        );
    }
}

/// `--members` fetches as a build does: `--offline` refuses the network with a help that
/// works, `--override-input` reads a local copy, and the pin is checked.
#[test]
fn members_honour_offline_override_and_the_pin() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    tree(d);
    let mut args = vec!["--no-recursion", "-czf", "t.tar.gz"];
    args.extend_from_slice(&ORDER);
    sh(d, "tar", &args);
    let bytes = std::fs::read(d.join("t.tar.gz")).unwrap();
    let sha = sha256_hex(&bytes);
    let sb = bare_sandbox();
    let url = "http://127.0.0.1:9/t.tar.gz";
    sb.write_recipe("t", &recipe("t", url, Some(&sha)));

    sb.kbuild(&["inputs", "t", "--members", "--offline"]).assert_error(&format!(
        "error: cannot list the members of input `t`\n  caused by: cannot fetch input `t`\n  caused by: `{url}` needs the network, and `--offline` was given\nhelp: build once with network access, or point the input at a local copy: `--override-input t=file:///path/to/file`\n"
    ));

    let local = d.join("t.tar.gz");
    let r = sb.kbuild(&[
        "inputs",
        "t",
        "--members",
        "--offline",
        "--override-input",
        &format!("t=file://{}", local.display()),
    ]);
    r.assert_success();
    assert_eq!(r.stdout.lines().count(), 5, "{}", r.stdout);
    assert!(
        r.stdout.contains("file     0644 1048576 pkg/sparse\n"),
        "{}",
        r.stdout
    );
    // The override's file is kept under the recipe's pin and URL name (review finding 9).
    let kept = common::kept_name("sha256", &sha, "t.tar.gz");
    assert_eq!(common::top_level(&sb.store), [".kbuild", kept.as_str()]);

    // Another file at the pinned URL (a fresh store: nothing kept): the listing is refused,
    // as a build would be, naming the recipe's pin.
    let sb = bare_sandbox();
    let server = Server::start();
    server.serve("/t.tar.gz", b"\x1f\x8b not the pinned file");
    sb.write_recipe("t", &recipe("t", &server.url("/t.tar.gz"), Some(&sha)));
    let r = sb.kbuild(&["inputs", "t", "--members"]);
    assert_eq!(r.code, Some(1));
    let err = r.stderr().replace(server.base(), "$SERVER");
    assert!(
        err.ends_with(&format!(
            "error: cannot list the members of input `t`\n  caused by: sha256 mismatch for input `t` from `$SERVER/t.tar.gz`: the recipe pins it ($SANDBOX/recipes/t.toml:3:10)\n  expected: {sha}\n    actual: {actual}\nhelp: the recipe's pin is what the file must match (an override or a mirror too): fix the mirror, or, if the new file is trusted, set `sha256 = \"{actual}\"` at $SANDBOX/recipes/t.toml:3:10 and run `kbuild build` again\n",
            actual = sha256_hex(b"\x1f\x8b not the pinned file")
        )),
        "{err}"
    );
    assert_eq!(r.stdout, "");

    // An override naming an input no recipe declares.
    sb.kbuild(&[
        "inputs",
        "t",
        "--members",
        "--override-input",
        "nope=file:///x",
    ])
    .assert_error(
        "error: cannot list the members of input `t`\n  caused by: `--override-input nope=…`: no loaded recipe declares an input `nope`\nhelp: declared inputs: t\n",
    );
}

#[test]
fn help_has_examples_and_members_needs_a_name() {
    let sb = bare_sandbox();
    let r = sb.kbuild(&["inputs", "--help"]);
    r.assert_success();
    assert!(
        r.stdout
            .contains("Examples:\n  kbuild inputs\n  kbuild inputs etcd-server --members\n"),
        "{}",
        r.stdout
    );
    let r = sb.kbuild(&["inputs", "--members"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--members"), "{}", r.stderr);
}

/// After a build keeps the archive, `kbuild inputs` says so and `--members` reads the kept
/// copy: no network (`--offline`, and the server sees no new request).
#[test]
fn a_kept_archive_is_shown_and_listed_without_the_network() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    tree(d);
    let mut args = vec!["--no-recursion", "-cJf", "t.tar.xz"];
    args.extend_from_slice(&ORDER);
    sh(d, "tar", &args);
    let bytes = std::fs::read(d.join("t.tar.xz")).unwrap();
    let sha = sha256_hex(&bytes);
    let server = Server::start();
    server.serve("/t.tar.xz", &bytes);
    let sb = bare_sandbox();
    let url = server.url("/t.tar.xz");
    sb.write_recipe(
        "t",
        &format!(
            "{}\n[files.\"/usr/local/bin/tool\"]\ninput = \"t\"\nmember = \"pkg/tool\"\n",
            recipe("t", &url, Some(&sha))
        ),
    );
    let before = sb.kbuild(&["inputs"]);
    before.assert_success();
    assert!(
        before
            .stdout
            .contains(&format!("t     not kept  sha256:{sha}  {url}\n")),
        "{}",
        before.stdout
    );
    sb.kbuild(&["build", "t"]).assert_success();
    assert_eq!(server.request_count(), 1);

    let after = sb.kbuild(&["inputs"]);
    after.assert_success();
    assert_eq!(
        after.stdout,
        format!(
            "NAME  STORE     {:<71}  URL\nt     kept      sha256:{sha}  {url}\n",
            "PIN"
        )
    );
    let r = sb.kbuild(&["inputs", "t", "--members", "--offline"]);
    r.assert_success();
    assert_eq!(r.stdout.lines().count(), 5, "{}", r.stdout);
    assert!(
        r.stderr.starts_with("     Reading t from file://"),
        "{}",
        r.stderr
    );
    assert_eq!(
        server.request_count(),
        1,
        "the kept copy was read, not the URL"
    );
}
