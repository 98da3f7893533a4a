//! Several inputs at once (issue 9, point 6): a recipe set with several inputs fetches them
//! concurrently, at most four at a time, each reported on its own lines; a failing input
//! fails the build without losing what the others fetched.

mod common;

use std::sync::atomic::Ordering;

use common::world::store_objects;
use common::*;

/// A small archive of its own for input `name`: one executable member `NAME/bin`, with
/// enough incompressible bytes that a paced download takes a while.
fn archive(name: &str) -> (Vec<u8>, Vec<u8>) {
    let bin = noise(name, 1 << 20);
    let tar = Tarball {
        entries: vec![
            Entry::Dir(format!("{name}/")),
            Entry::File {
                path: format!("{name}/bin"),
                mode: 0o755,
                bytes: bin.clone(),
            },
        ],
    }
    .build(Compression::Gzip);
    (tar, bin)
}

/// A sandbox whose only recipe, `set`, selects `NAME/bin` from each of `names`, served by
/// `server` at `/NAME.tar.gz` (pinned in the recipe with `pin(name, bytes)`), paced so each
/// download takes about half a second.
fn sandbox(
    server: &Server,
    names: &[&str],
    pin: impl Fn(&str, &[u8]) -> String,
) -> (Sandbox, Vec<Vec<u8>>) {
    let sb = Sandbox::local(server);
    for e in std::fs::read_dir(&sb.recipes).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let mut text = String::new();
    let mut bins = Vec::new();
    for name in names {
        let (tar, bin) = archive(name);
        server.serve(&format!("/{name}.tar.gz"), &tar);
        text.push_str(&format!(
            "[inputs.{name}]\nurl = \"{}\"\nsha256 = \"{}\"\n\n[files.\"/usr/local/bin/{name}\"]\ninput = \"{name}\"\nmember = \"{name}/bin\"\n\n",
            server.url(&format!("/{name}.tar.gz")),
            pin(name, &tar)
        ));
        bins.push(bin);
    }
    sb.write_recipe("set", &text);
    // ~1 MiB in 16 chunks of 64 KiB, 30 ms each: about half a second per input.
    server.stats.pause_us.store(30_000, Ordering::SeqCst);
    (sb, bins)
}

fn lines_sorted(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn two_inputs_are_fetched_at_once() {
    let server = Server::start();
    let (sb, bins) = sandbox(&server, &["alpha", "beta"], |_, b| sha256_hex(b));
    server.stats.gate.store(2, Ordering::SeqCst);
    let r = sb.kbuild(&["build", "set"]);
    r.assert_success();
    assert_eq!(server.stats.max_active(), 2, "the two requests overlapped");
    for (name, bin) in ["alpha", "beta"].iter().zip(&bins) {
        assert_eq!(
            &std::fs::read(r.rootfs().join("usr/local/bin").join(name)).unwrap(),
            bin
        );
    }
    // Each input has its own lines; which finishes first is up to the scheduler.
    let stderr = r.stderr();
    let (transfers, rest) = stderr.split_at(
        stderr
            .match_indices('\n')
            .nth(3)
            .map(|(i, _)| i + 1)
            .unwrap(),
    );
    let size = |name: &str| archive(name).0.len() as f64 / (1u64 << 20) as f64;
    assert_eq!(
        lines_sorted(transfers),
        lines_sorted(&format!(
            "    Fetching alpha from $SERVER/alpha.tar.gz\n    Fetching beta from $SERVER/beta.tar.gz\n        Read alpha: {:.1} MiB in $TIME\n        Read beta: {:.1} MiB in $TIME\n",
            size("alpha"),
            size("beta")
        ))
    );
    assert_eq!(
        rest,
        format!(
            "     Locking alpha sha256 {}\n     Locking beta sha256 {}\n       Wrote `$SANDBOX/flake-like.lock.json`\n       Built generation 1\n",
            sha256_hex(&archive("alpha").0),
            sha256_hex(&archive("beta").0)
        )
    );
}

#[test]
fn at_most_four_inputs_are_fetched_at_once() {
    let server = Server::start();
    let names = ["a1", "a2", "a3", "a4", "a5", "a6"];
    let (sb, _) = sandbox(&server, &names, |_, b| sha256_hex(b));
    server.stats.gate.store(4, Ordering::SeqCst);
    sb.kbuild(&["build", "set"]).assert_success();
    assert_eq!(server.stats.max_active(), 4);
    assert_eq!(server.request_count(), 6);
}

/// One input fails its pin while the other is fetched beside it: the build fails naming the
/// failing one, and the other's archive and member are in the store for the next build.
#[test]
fn a_failing_input_keeps_what_the_other_fetched() {
    let server = Server::start();
    let wrong = "0".repeat(64);
    let (sb, _) = sandbox(&server, &["alpha", "beta"], |n, b| {
        if n == "beta" {
            wrong.clone()
        } else {
            sha256_hex(b)
        }
    });
    server.stats.gate.store(2, Ordering::SeqCst);
    let r = sb.kbuild(&["build", "set"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(server.stats.max_active(), 2);
    let stderr = r.stderr();
    assert!(
        stderr.ends_with(&format!(
            "error: cannot build set\n\
             \x20 caused by: sha256 mismatch for input `beta` from `$SERVER/beta.tar.gz`: the recipe pins it ($SANDBOX/recipes/set.toml:11:10)\n\
             \x20 expected: {wrong}\n\
             \x20   actual: {actual}\n\
             help: the recipe's pin is what the file must match (an override or a mirror too): fix the mirror, or, if the new file is trusted, set `sha256 = \"{actual}\"` at $SANDBOX/recipes/set.toml:11:10 and run `kbuild build` again\n",
            actual = sha256_hex(&archive("beta").0)
        )),
        "{stderr}"
    );
    let kept_alpha = kept_name("sha256", &sha256_hex(&archive("alpha").0), "alpha.tar.gz");
    let objects = store_objects(&sb.store);
    assert!(objects.contains(&kept_alpha), "{objects:?}");
    assert_eq!(objects.len(), 2, "alpha's archive and member: {objects:?}");
}
