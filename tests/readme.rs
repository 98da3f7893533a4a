//! The README's walks run as a new user would type them (issue 13, point 6): every `sh` block
//! of README.md is either a walk, run here, or marked as skipped with its reason, so the README
//! cannot drift from the tool. The walks run in both orders, in a temp dir (`/tmp/` moved
//! into it), with no network, and the committed lock file is never rewritten.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The README's `sh` blocks: (marker, commands). The marker is the `<!-- readme-test: … -->`
/// comment on the line before the fence.
fn blocks() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_dir().join("README.md")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == "```sh" {
            let marker = i
                .checked_sub(1)
                .map(|p| lines[p])
                .and_then(|l| l.strip_prefix("<!-- readme-test: "))
                .and_then(|l| l.strip_suffix(" -->"))
                .unwrap_or_else(|| {
                    panic!(
                        "README.md line {}: a `sh` block without `<!-- readme-test: walk NAME -->` or `<!-- readme-test: skip (why) -->` before it",
                        i + 1
                    )
                })
                .to_owned();
            let end = (i + 1..lines.len())
                .find(|&j| lines[j] == "```")
                .expect("closed block");
            out.push((marker, lines[i + 1..end].join("\n") + "\n"));
            i = end;
        }
        i += 1;
    }
    out
}

fn walk(name: &str) -> String {
    let found: Vec<String> = blocks()
        .into_iter()
        .filter(|(m, _)| m == &format!("walk {name}"))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(found.len(), 1, "walk {name}");
    found[0].clone()
}

/// A new user's checkout: the recipes, the committed lock file, the hosts file and the fixture
/// maker, and
/// `kbuild` on PATH.
fn checkout() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kbuild-readme-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let copy = |rel: &str| {
        let to = d.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let status = Command::new("cp")
            .arg("-r")
            .arg(repo_dir().join(rel))
            .arg(&to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy("recipes");
    copy("flake-like.lock.json");
    copy("hosts.toml");
    copy("bench/make-fixture.py");
    for sub in ["bin", "home", "tmp"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("kbuild"), d.join("bin/kbuild"))
        .unwrap();
    dir
}

/// Runs one walk with bash, stopping at the first failing command.
fn run_walk(dir: &Path, name: &str) -> String {
    let script = walk(name).replace("/tmp/", &format!("{}/tmp/", dir.display()));
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &script])
        .env_clear()
        .env(
            "PATH",
            format!("{}/bin:/usr/local/bin:/usr/bin:/bin", dir.display()),
        )
        .env("HOME", dir.join("home"))
        // Never the network: a fetch from anywhere but a file fails at once.
        .env("KBUILD_HTTP_TIMEOUT", "1")
        .env("https_proxy", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .current_dir(dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "walk {name} failed:\n{script}\n--- stdout\n{}--- stderr\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !stderr.contains("Fetching"),
        "walk {name} used the network:\n{stderr}"
    );
    stderr
}

fn walks_in_order(order: &[&str]) {
    let dir = checkout();
    let d = dir.path();
    let committed = std::fs::read(repo_dir().join("flake-like.lock.json")).unwrap();
    for name in order {
        run_walk(d, name);
        assert_eq!(
            std::fs::read(d.join("flake-like.lock.json")).unwrap(),
            committed,
            "walk {name} rewrote the committed lock file"
        );
    }
    // The private lock file pins the stand-in, under the recipe's (upstream) URL.
    let private = std::fs::read_to_string(d.join("try.lock.json")).unwrap();
    let stand_in = std::fs::read(d.join("tmp/k.tar.gz")).unwrap();
    assert!(private.contains(&sha256_hex(&stand_in)), "{private}");
    assert!(private.contains(UPSTREAM_URL), "{private}");
    // The hosts walk leaves its root in master-2's profile, rolled back to master-2's first
    // generation, whose apiserver advertises master-2's address.
    let state = std::fs::read_to_string(d.join("tmp/m161/etc/.kbuild/state.json")).unwrap();
    assert!(state.contains("\"master-2\""), "{state}");
    let apiserver = std::fs::read_to_string(d.join("tmp/m161/etc/kubernetes/apiserver")).unwrap();
    assert!(apiserver.contains("10.72.84.161"), "{apiserver}");
    assert!(apiserver.contains("10.254.0.0/16"), "{apiserver}");
    // The switch walk ends rolled back, on a managed root.
    assert!(
        d.join("tmp/root/etc/.kbuild/current")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn every_sh_block_is_a_walk_or_says_why_it_is_skipped() {
    let b = blocks();
    let walks: Vec<&str> = b
        .iter()
        .filter_map(|(m, _)| m.strip_prefix("walk "))
        .collect();
    assert_eq!(walks, ["offline", "hosts", "switch"]);
    for (m, _) in &b {
        assert!(
            m.starts_with("walk ") || (m.starts_with("skip (") && m.ends_with(')')),
            "{m}"
        );
    }
}

#[test]
fn offline_walk_then_switch_walk() {
    walks_in_order(&["offline", "hosts", "switch"]);
}

#[test]
fn switch_walk_then_offline_walk() {
    walks_in_order(&["switch", "hosts", "offline"]);
}

#[test]
fn switching_slash_to_a_store_in_a_checkout_or_a_home_directory_is_warned_about() {
    let sb = Sandbox::new();
    // A store that does not exist: the warning comes first, then the refusal, and nothing
    // under the real `/` is read or written.
    let checkout = sb.dir.join("checkout");
    std::fs::create_dir_all(checkout.join(".git")).unwrap();
    let store = checkout.join("store");
    let run = |home: &Path| {
        let mut c = sb.bare();
        c.env("HOME", home).args([
            "--store",
            store.to_str().unwrap(),
            "--root",
            "/",
            "switch",
            "--dry-run",
        ]);
        sb.run(c)
    };
    let tail = "the host's /etc and /usr/local/bin will link into it, so moving or cleaning it breaks the host; use a store under /var/lib/kbuild/store (`KBUILD_STORE=/var/lib/kbuild/store`, see README \"Production layout\")\n\
                error: cannot open store `$SANDBOX/checkout/store`\n  caused by: store `$SANDBOX/checkout/store` does not exist\n";
    let r = run(&sb.home);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr().starts_with(&format!(
            "warning: `/` is switched to store `$SANDBOX/checkout/store`, inside the git checkout `$SANDBOX/checkout`: {tail}"
        )),
        "{}",
        r.stderr()
    );
    let r = run(&sb.dir);
    assert!(
        r.stderr().starts_with(&format!(
            "warning: `/` is switched to store `$SANDBOX/checkout/store`, inside the home directory `$SANDBOX`: {tail}"
        )),
        "{}",
        r.stderr()
    );
    // Another root: no warning.
    let mut c = sb.bare();
    c.args([
        "--store",
        store.to_str().unwrap(),
        "--root",
        sb.home.to_str().unwrap(),
        "switch",
        "--dry-run",
    ]);
    let r = sb.run(c);
    assert!(
        r.stderr().starts_with("error: cannot open store"),
        "{}",
        r.stderr()
    );
}
