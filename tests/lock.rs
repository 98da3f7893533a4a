//! `kbuild lock` and `kbuild update`: pinning inputs, and builds from the pins alone.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

const TOOLS_PATH: &str = "/a-tools.tar.gz";

/// A second input, declared last (in `zz-tools.toml`) but sorting first (`a-tools`).
fn tools() -> Vec<u8> {
    Tarball {
        entries: vec![
            Entry::Dir("tools/".into()),
            Entry::File {
                path: "tools/README".into(),
                mode: 0o644,
                bytes: b"not used by master\n".to_vec(),
            },
        ],
    }
    .build(Compression::Gzip)
}

fn sandbox_with_two_inputs(server: &Server) -> Sandbox {
    server.serve(TARBALL_PATH, &fixture().gz);
    server.serve(TOOLS_PATH, &tools());
    let sb = Sandbox::local(server);
    sb.write_recipe(
        "zz-tools",
        &format!(
            "description = \"extra tools, not part of master\"\n\n[inputs.a-tools]\nurl = \"{}\"\n",
            server.url(TOOLS_PATH)
        ),
    );
    sb
}

fn mtime(p: &std::path::Path) -> (i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

#[test]
fn lock_pins_every_input_then_locked_offline_build_needs_no_server() {
    let server = Server::start();
    let sb = sandbox_with_two_inputs(&server);
    assert_eq!(sb.lock_bytes(), None);

    let r = sb.kbuild(&["lock"]);
    r.assert_success();
    assert_eq!(r.stdout, "");
    let k8s = server.url(TARBALL_PATH);
    let tools_url = server.url(TOOLS_PATH);
    // The two inputs are fetched at once: their lines interleave in any order.
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    let stderr = r.stderr();
    let (fetches, rest) = stderr.split_at(stderr.match_indices('\n').nth(3).unwrap().0 + 1);
    assert_eq!(
        sorted(fetches),
        sorted(&format!(
            "{}{}",
            fetched("$SERVER/a-tools.tar.gz", tools().len()).replace(INPUT, "a-tools"),
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            ),
        ))
    );
    assert_eq!(
        rest,
        format!(
            "     Locking a-tools sha256 {}\n     Locking kubernetes-server sha256 {}\n       Wrote `$SANDBOX/flake-like.lock.json`\n",
            sha256_hex(&tools()),
            fixture().sha256,
        )
    );
    let expected_lock = lock_json(&[
        (
            "a-tools",
            &[&tools_url],
            &sha256_hex(&tools()),
            Some(tools().len() as u64),
        ),
        (
            INPUT,
            &[&k8s],
            &fixture().sha256,
            Some(fixture().gz.len() as u64),
        ),
    ]);
    let written = String::from_utf8(sb.lock_bytes().unwrap()).unwrap();
    assert_eq!(written, expected_lock);
    assert!(written.find("\"a-tools\"").unwrap() < written.find("\"kubernetes-server\"").unwrap());
    assert_eq!(server.request_count(), 2);
    let lock_mtime = mtime(&sb.lock);

    // The pins (and the store) are enough: no server contact.
    let r = sb.kbuild(&["build", "master", "--locked", "--offline"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Built generation 1\n");
    assert_eq!(server.request_count(), 2);
    let rootfs = r.rootfs();
    assert_eq!(
        std::fs::read(rootfs.join("usr/local/bin/kube-apiserver")).unwrap(),
        fixture().tarball.member(&bin_member("kube-apiserver"))
    );
    assert_eq!(sb.lock_bytes().unwrap(), expected_lock.as_bytes());

    // Locking again rewrites nothing and fetches nothing.
    let r = sb.kbuild(&["lock"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        "       Fresh `$SANDBOX/flake-like.lock.json` is up to date\n"
    );
    assert_eq!(server.request_count(), 2);
    assert_eq!(sb.lock_bytes().unwrap(), expected_lock.as_bytes());
    assert_eq!(mtime(&sb.lock), lock_mtime, "the lock file was rewritten");
}

#[test]
fn lock_removes_pins_no_recipe_declares() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let k8s = server.url(TARBALL_PATH);
    let stale = "ef".repeat(32);
    sb.write_lock(&[
        (
            INPUT,
            &[&k8s],
            &fixture().sha256,
            Some(fixture().gz.len() as u64),
        ),
        (
            "etcd",
            &["https://example.invalid/etcd.tar.gz"],
            &stale,
            None,
        ),
    ]);
    let r = sb.kbuild(&["lock"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        "    Removing etcd (no recipe declares it)\n       Wrote `$SANDBOX/flake-like.lock.json`\n"
    );
    assert_eq!(
        server.request_count(),
        0,
        "an existing pin was fetched again"
    );
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[&k8s],
            &fixture().sha256,
            Some(fixture().gz.len() as u64)
        )])
    );
}

#[test]
fn update_repins_a_changed_upstream_file() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let gen1 = sb.build_ok(&[]);
    let k8s = server.url(TARBALL_PATH);

    let newer = fixture()
        .tarball
        .clone()
        .with_changed(&bin_member("kubectl"), b"#!fake kubectl v1.6.1\n")
        .build(Compression::Gzip);
    server.serve(TARBALL_PATH, &newer);

    let r = sb.kbuild(&["update", INPUT]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}    Updating kubernetes-server sha256 {} -> {}\n       Wrote `$SANDBOX/flake-like.lock.json`\n",
            fetched("$SERVER/kubernetes-server-linux-amd64.tar.gz", newer.len()),
            fixture().sha256,
            sha256_hex(&newer),
        )
    );
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[&k8s],
            &sha256_hex(&newer),
            Some(newer.len() as u64)
        )])
    );
    let requests = server.request_count();

    // The next build uses the new pin, from the store.
    let r = sb.kbuild(&["build", "master", "--offline", "--locked"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Built generation 2\n");
    assert_eq!(server.request_count(), requests);
    let gen2 = r.rootfs();
    assert_ne!(gen1, gen2);
    assert_eq!(
        std::fs::read(gen2.join("usr/local/bin/kubectl")).unwrap(),
        b"#!fake kubectl v1.6.1\n"
    );
}

#[test]
fn update_of_an_unknown_input() {
    let sb = Sandbox::new();
    let lock_before = sb.lock_bytes();
    let r = sb.kbuild(&["update", "etcd"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.first(), Some(&"error: cannot update inputs"));
    assert!(r.stderr.contains("`etcd`"), "{}", r.stderr);
    // The user ran `kbuild update`, not a build with `--override-input`.
    assert!(
        !r.stderr.contains("--override-input"),
        "the error talks about an option that was not used:\n{}",
        r.stderr
    );
    assert_eq!(
        lines.last(),
        Some(&"help: declared inputs: kubernetes-server")
    );
    assert_eq!(sb.lock_bytes(), lock_before);
}

#[test]
fn lock_with_a_broken_recipe_elsewhere_in_the_directory() {
    // `lock` reads every recipe in the directory, even ones no build uses.
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    sb.write_recipe("zz-draft", "description = \"unfinished\n");
    let before = sb.lock_bytes();
    let r = sb.kbuild(&["lock"]);
    r.assert_error(
        "error: cannot lock inputs\n\
         \x20 caused by: $SANDBOX/recipes/zz-draft.toml:1:26: invalid basic string, expected `\"`\n",
    );
    assert_eq!(sb.lock_bytes(), before);
    assert_eq!(server.request_count(), 0);
}

/// The air-gapped workflow: a verified local copy pins the upstream URL, after which builds
/// run `--locked --offline` from the store alone.
#[test]
fn write_lock_pins_an_overridden_input_under_the_recipe_url() {
    let sb = Sandbox::new();
    let copy = sb.dir.join("kubernetes-server-linux-amd64.tar.gz");
    std::fs::write(&copy, &fixture().gz).unwrap();
    let url = format!("file://{}", copy.display());

    // Without --write-lock the lock file is left alone.
    let before = sb.lock_bytes();
    sb.kbuild(&[
        "build",
        "master",
        "--override-input",
        &format!("{INPUT}={url}"),
    ])
    .assert_success();
    assert_eq!(sb.lock_bytes(), before);

    // With it, the pin is the file read, under the recipe's (upstream) URL.
    sb.kbuild(&[
        "build",
        "master",
        "--override-input",
        &format!("{INPUT}={url}"),
        "--write-lock",
    ])
    .assert_success();
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[UPSTREAM_URL],
            &fixture().sha256,
            Some(fixture().gz.len() as u64),
        )])
    );
    let r = sb.kbuild(&["build", "master", "--locked", "--offline"]);
    r.assert_success();
    assert!(
        r.stderr().contains("Fresh generation 1 is up to date"),
        "{}",
        r.stderr()
    );

    // --write-lock needs an override; --locked and --write-lock exclude each other.
    let r = sb.kbuild(&["build", "master", "--write-lock"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr());
}

/// A pin survives a change of URLs: a new location must serve the same file, or the build
/// stops with a hash mismatch; only `kbuild update` takes the new file.
#[test]
fn moving_the_url_keeps_the_pin() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    sb.build_ok(&[]);
    // The recipe now points at another file.
    let other = fixture()
        .tarball
        .clone()
        .with_changed(&bin_member("kubectl"), b"#!fake kubectl, another build\n")
        .build(Compression::Gzip);
    server.serve("/moved/k8s.tar.gz", &other);
    let common = sb.recipes.join("kube-common.toml");
    let text = std::fs::read_to_string(&common).unwrap();
    std::fs::write(
        &common,
        text.replace(&server.url(TARBALL_PATH), &server.url("/moved/k8s.tar.gz")),
    )
    .unwrap();
    // With the pinned content in the store, the new URL is not even read: the pin is what
    // identifies the input, and the lock records the new URL.
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert!(
        r.stderr().contains(
            "Updating kubernetes-server URLs to $SERVER/moved/k8s.tar.gz (sha256 unchanged)"
        ),
        "{}",
        r.stderr()
    );
    // On an empty store the new location must serve the pinned file.
    let st = std::process::Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&sb.store)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_dir_all(&sb.store).unwrap();
    let before = sb.lock_bytes();
    let r = sb.kbuild(&["build", "master", "--set", "IP=10.0.0.7"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr().contains(&format!(
            "sha256 mismatch for input `kubernetes-server` from `$SERVER/moved/k8s.tar.gz`\n  expected: {}",
            fixture().sha256
        )),
        "{}",
        r.stderr()
    );
    assert_eq!(sb.lock_bytes(), before, "the lock changed");
    // `update` re-pins, and says so.
    let r = sb.kbuild(&["update", INPUT]);
    r.assert_success();
    assert!(
        r.stderr().contains(&format!(
            "Updating kubernetes-server sha256 {} -> {}",
            fixture().sha256,
            sha256_hex(&other)
        )),
        "{}",
        r.stderr()
    );
}

/// `--locked` never rewrites the file, not even to reformat it or fill in a size.
#[test]
fn locked_build_never_rewrites_the_lock_file() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    // The same pins, formatted differently and without the size.
    let url = server.url(TARBALL_PATH);
    let compact = format!(
        "{{\"version\":1,\"inputs\":{{\"{INPUT}\":{{\"urls\":[\"{url}\"],\"sha256\":\"{}\"}}}}}}",
        fixture().sha256
    );
    std::fs::write(&sb.lock, &compact).unwrap();
    let r = sb.kbuild(&["build", "master", "--locked"]);
    r.assert_success();
    assert_eq!(std::fs::read_to_string(&sb.lock).unwrap(), compact);
}

/// After `master` was built, a recipe set wanting a subset of its members builds offline from
/// the store: every member is indexed on its own.
#[test]
fn a_subset_of_unpacked_members_needs_no_fetch() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    sb.build_ok(&[]);
    let before = server.request_count();
    let r = sb.kbuild(&["build", "kube-common", "--offline"]);
    r.assert_success();
    assert_eq!(
        server.request_count(),
        before,
        "the input was fetched again"
    );
}
