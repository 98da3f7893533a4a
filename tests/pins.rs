//! Pins as upstream publishes them (issue 9, point 5): `sha256 = "<hex>"`, `sha512 = "<hex>"`
//! or an SRI `hash = "sha512-<base64>"` in a recipe; the lock entry records the algorithm;
//! lock files written before keep working byte for byte; a download larger than the pinned
//! size stops right after it.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use sha2::{Digest as _, Sha512};

const MEMBER: &str = "kubernetes/server/bin/kubectl";
const PATH: &str = "/kubernetes-server-linux-amd64.tar.gz";

fn sha512_hex(bytes: &[u8]) -> String {
    Sha512::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Standard base64 with padding (as SRI strings are written), written here independently of
/// kbuild's decoder.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A sandbox whose only recipe, `tool`, selects kubectl from the fixture served by `server`,
/// pinned by `pin` (a TOML line, or empty). No lock file.
fn sandbox(server: &Server, pin: &str) -> Sandbox {
    server.serve(PATH, &fixture().gz);
    let sb = Sandbox::local(server);
    for e in std::fs::read_dir(&sb.recipes).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::remove_file(p).unwrap();
        }
    }
    write_tool(&sb, &server.url(PATH), pin);
    sb
}

fn write_tool(sb: &Sandbox, url: &str, pin: &str) {
    sb.write_recipe(
        "tool",
        &format!(
            "[inputs.server]\nurl = \"{url}\"\n{pin}\n\n[files.\"/usr/local/bin/kubectl\"]\ninput = \"server\"\nmember = \"{MEMBER}\"\n"
        ),
    );
}

/// The stderr lines of fetching the `server` input from the test server.
fn fetched_server() -> String {
    format!(
        "    Fetching server from $SERVER{PATH}\n        Read server: {:.1} MiB in $TIME\n",
        fixture().gz.len() as f64 / (1u64 << 20) as f64
    )
}

/// The lock file kbuild writes for the one input `server` pinned with `key` = `hex`.
fn lock_with(key: &str, hex: &str, url: &str, size: usize) -> String {
    format!(
        "{{\n  \"inputs\": {{\n    \"server\": {{\n      \"{key}\": \"{hex}\",\n      \"size\": {size},\n      \"urls\": [\n        \"{url}\"\n      ]\n    }}\n  }},\n  \"version\": 1\n}}\n"
    )
}

fn built(sb: &Sandbox, r: &Run) -> Vec<u8> {
    r.assert_success();
    std::fs::read(r.rootfs().join("usr/local/bin/kubectl")).unwrap_or_else(|e| {
        panic!("{e}: {}", sb.dir.display());
    })
}

// ---------------------------------------------------------------------------------------------
// Bad pins: exact errors with file:line:column
// ---------------------------------------------------------------------------------------------

fn bad_pin(pin: &str, expected: &str) {
    let server = Server::start();
    let sb = sandbox(&server, pin);
    sb.kbuild(&["build", "tool"]).assert_error(expected);
    assert_eq!(server.request_count(), 0, "nothing fetched for a bad pin");
    assert!(sb.lock_bytes().is_none(), "no lock file written");
}

#[test]
fn two_pin_forms_are_refused_at_the_second() {
    let hex = &fixture().sha256;
    bad_pin(
        &format!("sha256 = \"{hex}\"\nhash = \"sha256-{}\"", base64(&[0; 32])),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:4:8: input `server` has both `sha256` and `hash`; give one pin\n\
         help: keep the pin upstream publishes (`sha512 = \"…\"`, or `hash = \"sha512-…\"`) and delete the other, then run `kbuild build` again\n",
    );
}

#[test]
fn sha256_and_sha512_together_are_refused() {
    bad_pin(
        &format!(
            "sha512 = \"{}\"\nsha256 = \"{}\"",
            sha512_hex(&fixture().gz),
            fixture().sha256
        ),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:4:10: input `server` has both `sha512` and `sha256`; give one pin\n\
         help: keep the pin upstream publishes (`sha512 = \"…\"`, or `hash = \"sha512-…\"`) and delete the other, then run `kbuild build` again\n",
    );
}

#[test]
fn sha512_of_the_wrong_length_is_refused() {
    // A sha256 digest given as `sha512`: the likeliest slip.
    bad_pin(
        &format!("sha512 = \"{}\"", fixture().sha256),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:3:10: `sha512` must be 128 hexadecimal digits\n",
    );
}

#[test]
fn sha512_with_a_non_hex_digit_is_refused() {
    let mut hex = sha512_hex(&fixture().gz);
    hex.replace_range(5..6, "g");
    bad_pin(
        &format!("sha512 = \"{hex}\""),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:3:10: `sha512` must be 128 hexadecimal digits\n",
    );
}

#[test]
fn sri_with_bad_base64_is_refused() {
    bad_pin(
        "hash = \"sha512-not*base64\"",
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:3:8: `hash`: `not*base64` is not valid base64\n",
    );
}

#[test]
fn sri_of_the_wrong_length_is_refused() {
    // A sha256 digest labelled sha512.
    let digest = Sha256Digest::of(&fixture().gz);
    bad_pin(
        &format!("hash = \"sha512-{}\"", base64(&digest)),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:3:8: `hash`: a sha512 digest is 64 bytes (88 base64 characters), this one has 32 bytes\n",
    );
}

#[test]
fn sri_with_an_unknown_algorithm_is_refused() {
    bad_pin(
        &format!("hash = \"sha384-{}\"", base64(&[7; 48])),
        "error: cannot build tool\n\
         \x20 caused by: $SANDBOX/recipes/tool.toml:3:8: `hash` uses the algorithm `sha384`; kbuild accepts `sha256-…` and `sha512-…`\n",
    );
}

#[test]
fn hex_given_as_hash_is_refused() {
    // Our own case: the hex digest pasted into `hash` without its algorithm.
    bad_pin(
        &format!("hash = \"{}\"", fixture().sha256),
        &format!(
            "error: cannot build tool\n\
             \x20 caused by: $SANDBOX/recipes/tool.toml:3:8: `hash` must be an SRI hash `sha512-<base64>` or `sha256-<base64>`, not `{}`\n",
            fixture().sha256
        ),
    );
}

struct Sha256Digest;

impl Sha256Digest {
    fn of(bytes: &[u8]) -> Vec<u8> {
        sha2::Sha256::digest(bytes).to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// Good pins: build, lock with the algorithm's key
// ---------------------------------------------------------------------------------------------

fn builds_and_locks(pin: &str, key: &str, hex: &str) {
    let server = Server::start();
    let sb = sandbox(&server, pin);
    let r = sb.kbuild(&["build", "tool"]);
    assert_eq!(built(&sb, &r), fixture().tarball.member(MEMBER));
    let url = server.url(PATH);
    assert_eq!(
        r.stderr(),
        format!(
            "{}     Locking server {key} {hex}\n       Wrote `$SANDBOX/flake-like.lock.json`\n       Built generation 1\n",
            fetched_server()
        )
    );
    let lock = lock_with(key, hex, &url, fixture().gz.len());
    assert_eq!(String::from_utf8(sb.lock_bytes().unwrap()).unwrap(), lock);
    // Rebuilt from the store, under `--locked`, nothing fetched, the lock untouched.
    let again = sb.kbuild(&["build", "tool", "--locked", "--offline"]);
    again.assert_success();
    assert_eq!(again.stderr(), "       Fresh generation 1 is up to date\n");
    assert_eq!(server.request_count(), 1);
    assert_eq!(String::from_utf8(sb.lock_bytes().unwrap()).unwrap(), lock);
    // `kbuild lock` keeps the entry as it is.
    let l = sb.kbuild(&["lock"]);
    l.assert_success();
    assert_eq!(
        l.stderr(),
        "       Fresh `$SANDBOX/flake-like.lock.json` is up to date\n"
    );
}

#[test]
fn sha512_pin_builds_and_locks_sha512() {
    let hex = sha512_hex(&fixture().gz);
    builds_and_locks(&format!("sha512 = \"{hex}\""), "sha512", &hex);
}

#[test]
fn sha512_pin_in_upper_case_is_locked_lower_case() {
    let hex = sha512_hex(&fixture().gz);
    builds_and_locks(
        &format!("sha512 = \"{}\"", hex.to_ascii_uppercase()),
        "sha512",
        &hex,
    );
}

#[test]
fn sri_sha512_pin_builds_and_locks_sha512() {
    // npm's `integrity` field, as `npm view @esbuild/linux-x64 dist.integrity` prints it.
    let digest = Sha512::digest(&fixture().gz);
    builds_and_locks(
        &format!("hash = \"sha512-{}\"", base64(&digest)),
        "sha512",
        &sha512_hex(&fixture().gz),
    );
}

#[test]
fn sri_sha256_pin_builds_and_locks_sha256() {
    let digest = Sha256Digest::of(&fixture().gz);
    builds_and_locks(
        &format!("hash = \"sha256-{}\"", base64(&digest)),
        "sha256",
        &fixture().sha256,
    );
}

/// The help for a wrong pin written in the recipe: set the actual hash, in the recipe's own
/// form (`key`, `written`), at the pin's line — `kbuild update` would fail the same way.
fn recipe_pin_help(key: &str, written: &str) -> String {
    format!(
        "help: the recipe's pin is what the file must match (an override or a mirror too): fix the mirror, or, if the new file is trusted, set `{key} = \"{written}\"` at $SANDBOX/recipes/tool.toml:3:10 and run `kbuild build` again\n"
    )
}

/// Review finding 6: a wrong pin in the recipe names the recipe line, for `build` and
/// `update` alike (no loop through `kbuild update`).
#[test]
fn wrong_sha512_is_a_mismatch_naming_the_recipe_line() {
    let server = Server::start();
    let other = sha512_hex(b"another file");
    let actual = sha512_hex(&fixture().gz);
    let sb = sandbox(&server, &format!("sha512 = \"{other}\""));
    let cause = format!(
        "\x20 caused by: sha512 mismatch for input `server` from `$SERVER{PATH}`: the recipe pins it ($SANDBOX/recipes/tool.toml:3:10)\n\
         \x20 expected: {other}\n\
         \x20   actual: {actual}\n{}",
        recipe_pin_help("sha512", &actual)
    );
    sb.kbuild(&["build", "tool"]).assert_error(&format!(
        "{}error: cannot build tool\n{cause}",
        fetched_server()
    ));
    sb.kbuild(&["update", "server"]).assert_error(&format!(
        "{}error: cannot update inputs\n{cause}",
        fetched_server()
    ));
    assert!(sb.lock_bytes().is_none());
    // Doing what the help says builds.
    write_tool(&sb, &server.url(PATH), &format!("sha512 = \"{actual}\""));
    let b = sb.kbuild(&["build", "tool"]);
    assert_eq!(built(&sb, &b), fixture().tarball.member(MEMBER));
}

/// Review findings 6 and 13: a wrong SRI pin is shown as SRI, the form the recipe holds.
#[test]
fn wrong_sri_pin_is_shown_as_sri() {
    let server = Server::start();
    let other = format!("sha512-{}", base64(&Sha512::digest(b"another file")));
    let actual = format!("sha512-{}", base64(&Sha512::digest(&fixture().gz)));
    let sb = sandbox(&server, &format!("hash = \"{other}\""));
    sb.kbuild(&["build", "tool"]).assert_error(&format!(
        "{}error: cannot build tool\n\
         \x20 caused by: sha512 mismatch for input `server` from `$SERVER{PATH}`: the recipe pins it ($SANDBOX/recipes/tool.toml:3:8)\n\
         \x20 expected: {other}\n\
         \x20   actual: {actual}\n{}",
        fetched_server(),
        recipe_pin_help("hash", &actual).replace("tool.toml:3:10", "tool.toml:3:8")
    ));
}

/// A tarball with the fixture's member names but another kubectl: a tampered mirror.
fn tampered() -> Vec<u8> {
    Tarball::kubernetes_server()
        .with_changed(MEMBER, b"tampered kubectl\n")
        .build(Compression::Gzip)
}

/// Review finding 1: a pin written in the recipe is checked against an `--override-input`
/// file, with or without `--write-lock`; the right file builds and is locked with it.
#[test]
fn override_input_must_match_the_recipe_pin() {
    let server = Server::start();
    let hex512 = sha512_hex(&fixture().gz);
    let sb = sandbox(
        &server,
        &format!("sha512 = \"{}\"", hex512.to_ascii_uppercase()),
    );
    let bad = sb.dir.join("k2.tar.gz");
    let bad_bytes = tampered();
    std::fs::write(&bad, &bad_bytes).unwrap();
    let arg = format!("server=file://{}", bad.display());
    for extra in [&[][..], &["--write-lock"][..]] {
        let mut args = vec!["build", "tool", "--override-input", &arg];
        args.extend_from_slice(extra);
        sb.kbuild(&args).assert_error(&format!(
            "     Reading server from file://$SANDBOX/k2.tar.gz\n        Read server: {:.1} MiB in $TIME\n\
             error: cannot build tool\n\
             \x20 caused by: sha512 mismatch for input `server` from `file://$SANDBOX/k2.tar.gz`: the recipe pins it ($SANDBOX/recipes/tool.toml:3:10)\n\
             \x20 expected: {hex512}\n\
             \x20   actual: {}\n{}",
            bad_bytes.len() as f64 / (1u64 << 20) as f64,
            sha512_hex(&bad_bytes),
            recipe_pin_help("sha512", &sha512_hex(&bad_bytes))
        ));
        assert!(sb.lock_bytes().is_none(), "{extra:?}: no lock written");
        assert!(
            !sb.dir.join("profiles").exists() || !sb.dir.join("profiles/default/1.json").exists()
        );
    }
    assert_eq!(server.request_count(), 0);
    // The right file (a local mirror) builds, and `--write-lock` locks the recipe's pin under
    // the recipe's URL.
    let good = sb.dir.join("k.tar.gz");
    std::fs::write(&good, &fixture().gz).unwrap();
    let arg = format!("server=file://{}", good.display());
    let r = sb.kbuild(&["build", "tool", "--override-input", &arg, "--write-lock"]);
    assert_eq!(built(&sb, &r), fixture().tarball.member(MEMBER));
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_with("sha512", &hex512, &server.url(PATH), fixture().gz.len())
    );
    assert_eq!(server.request_count(), 0);
}

/// A pin only in the lock file is not a trust anchor: an override with `--write-lock`
/// re-pins it (the documented way to move to a new file from a local copy).
#[test]
fn override_with_write_lock_repins_a_lock_only_pin() {
    let server = Server::start();
    let sb = sandbox(&server, "");
    sb.kbuild(&["lock"]).assert_success();
    let other = sb.dir.join("k2.tar.gz");
    let other_bytes = tampered();
    std::fs::write(&other, &other_bytes).unwrap();
    let arg = format!("server=file://{}", other.display());
    let r = sb.kbuild(&["build", "tool", "--override-input", &arg, "--write-lock"]);
    assert_eq!(built(&sb, &r), b"tampered kubectl\n");
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_with(
            "sha256",
            &sha256_hex(&other_bytes),
            &server.url(PATH),
            other_bytes.len()
        )
    );
}

/// Review finding 10: the lock pins sha256, the recipe now upstream's sha512. An override of
/// another file with `--write-lock` is a mismatch against the recipe (the lock is not blamed
/// for a hash it does not hold); after a plain override build of the right file, the
/// offline build re-pins the lock with sha512 and keeps the entry's `size`.
#[test]
fn repinning_sha256_to_sha512_blames_the_recipe_and_keeps_the_size() {
    let server = Server::start();
    let hex512 = sha512_hex(&fixture().gz);
    let sb = sandbox(&server, "");
    sb.kbuild(&["lock"]).assert_success();
    let url = server.url(PATH);
    write_tool(&sb, &url, &format!("sha512 = \"{hex512}\""));
    let bad = sb.dir.join("k2.tar.gz");
    let bad_bytes = tampered();
    std::fs::write(&bad, &bad_bytes).unwrap();
    let arg = format!("server=file://{}", bad.display());
    sb.kbuild(&["build", "tool", "--override-input", &arg, "--write-lock"])
        .assert_error(&format!(
            "     Reading server from file://$SANDBOX/k2.tar.gz\n        Read server: {:.1} MiB in $TIME\n\
             error: cannot build tool\n\
             \x20 caused by: sha512 mismatch for input `server` from `file://$SANDBOX/k2.tar.gz`: the recipe pins it ($SANDBOX/recipes/tool.toml:3:10)\n\
             \x20 expected: {hex512}\n\
             \x20   actual: {}\n{}",
            bad_bytes.len() as f64 / (1u64 << 20) as f64,
            sha512_hex(&bad_bytes),
            recipe_pin_help("sha512", &sha512_hex(&bad_bytes))
        ));
    let sha256_lock = lock_with("sha256", &fixture().sha256, &url, fixture().gz.len());
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        sha256_lock
    );

    let good = sb.dir.join("k.tar.gz");
    std::fs::write(&good, &fixture().gz).unwrap();
    let arg = format!("server=file://{}", good.display());
    sb.kbuild(&["build", "tool", "--override-input", &arg])
        .assert_success();
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        sha256_lock
    );
    let r = sb.kbuild(&["build", "tool", "--offline"]);
    r.assert_success();
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_with("sha512", &hex512, &url, fixture().gz.len())
    );
    assert_eq!(server.request_count(), 1, "only `kbuild lock` fetched");
}

#[test]
fn lock_and_update_pin_with_the_recipes_algorithm() {
    let server = Server::start();
    let hex512 = sha512_hex(&fixture().gz);
    // No pin in the recipe: `kbuild lock` pins sha256 (the default).
    let sb = sandbox(&server, "");
    let l = sb.kbuild(&["lock"]);
    l.assert_success();
    assert_eq!(
        l.stderr(),
        format!(
            "{}     Locking server sha256 {}\n       Wrote `$SANDBOX/flake-like.lock.json`\n",
            fetched_server(),
            fixture().sha256
        )
    );
    let url = server.url(PATH);
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_with("sha256", &fixture().sha256, &url, fixture().gz.len())
    );
    // The recipe now carries upstream's sha512: `--locked` refuses (the lock would change),
    // `kbuild update` re-pins with sha512 (fetching: the kept archive is known by its
    // sha256 only).
    write_tool(&sb, &url, &format!("sha512 = \"{hex512}\""));
    sb.kbuild(&["build", "tool", "--locked"]).assert_error(
        "error: cannot build tool\n\
         \x20 caused by: the lock file `$SANDBOX/flake-like.lock.json` would change (recipe `tool` ($SANDBOX/recipes/tool.toml:1:9) pins input `server` with sha512, the lock file with sha256), and `--locked` was given\n\
         help: run `kbuild lock` (or the build without `--locked`) and commit the lock file\n",
    );
    let u = sb.kbuild(&["update", "server"]);
    u.assert_success();
    assert_eq!(
        u.stderr(),
        format!(
            "{}    Updating server sha256 {} -> sha512 {hex512}\n       Wrote `$SANDBOX/flake-like.lock.json`\n",
            fetched_server(),
            fixture().sha256
        )
    );
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_with("sha512", &hex512, &url, fixture().gz.len())
    );
    let b = sb.kbuild(&["build", "tool", "--locked"]);
    assert_eq!(built(&sb, &b), fixture().tarball.member(MEMBER));
}

// ---------------------------------------------------------------------------------------------
// Existing lock files and stores
// ---------------------------------------------------------------------------------------------

/// A lock file written before sha512 existed (only `sha256`) builds unchanged, and stays
/// byte-identical through build, `--locked` build and `kbuild lock`.
#[test]
fn old_sha256_lock_file_works_byte_identically() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let before = sb.lock_bytes().unwrap();
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert_eq!(sb.lock_bytes().unwrap(), before);
    sb.kbuild(&["build", "master", "--locked"]).assert_success();
    assert_eq!(sb.lock_bytes().unwrap(), before);
    // The repository's own lock file (no size) reads and writes back byte for byte too.
    let repo = std::fs::read(repo_dir().join("flake-like.lock.json")).unwrap();
    let parsed = kbuild::lockfile::LockFile::parse(
        std::path::Path::new("l"),
        std::str::from_utf8(&repo).unwrap(),
    )
    .unwrap();
    assert_eq!(parsed.to_bytes(), repo);
}

/// Derivation keys of sha256 inputs are what they were before other algorithms existed (the
/// index entries of an existing store keep answering): the key of unpacking kubectl alone is
/// computed here with the `kbuild-drv-v1` formula of docs/store-format.md over the bare hex,
/// and the build's index holds exactly that entry.
#[test]
fn sha256_derivation_keys_are_unchanged() {
    let server = Server::start();
    let sb = sandbox(&server, &format!("sha256 = \"{}\"", fixture().sha256));
    let r = sb.kbuild(&["build", "tool"]);
    r.assert_success();
    let field = |b: &[u8]| {
        let mut v = (b.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let mut e = field(b"kbuild-drv-v1");
    e.extend(field(b"unpack"));
    e.extend(field(fixture().sha256.as_bytes()));
    e.extend(field(&1u64.to_le_bytes()));
    e.extend(field(MEMBER.as_bytes()));
    e.extend(field(&[2])); // no `mode`: the archive's x bit
    let key = blake3::hash(&e).to_hex().to_string();
    assert!(
        sb.store
            .join(".kbuild/index")
            .join(format!("{key}.json"))
            .exists(),
        "index entry {key} missing"
    );
}

// ---------------------------------------------------------------------------------------------
// A download larger than the pinned size stops right after it
// ---------------------------------------------------------------------------------------------

/// A wrong file much larger than the pin: with a `Content-Length`, it is refused before a
/// byte of the body is read; the server manages to send only what the socket buffers hold.
#[test]
fn oversized_download_with_a_length_is_refused_before_reading() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let size = fixture().gz.len();
    let big = noise("oversized", 64 << 20);
    server.serve(TARBALL_PATH, &big);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(&format!(
        "    Fetching {INPUT} from $SERVER{TARBALL_PATH}\n\
         error: cannot build master\n\
         \x20 caused by: cannot fetch input `{INPUT}`\n\
         \x20 caused by: `$SERVER{TARBALL_PATH}`: announces {} bytes, more than the pinned {size} (nothing was read)\n\
         help: add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input kubernetes-server=file:///path/to/file` (add `--offline` to be sure nothing is fetched)\n",
        big.len()
    ));
    // Once the server has noticed the closed connection, what it sent is final.
    server.stats.wait_idle();
    let sent = server.stats.sent();
    assert!(
        sent < 16 << 20,
        "the server sent {sent} of {} bytes",
        big.len()
    );
}

/// Without a `Content-Length` the body is read up to the pinned size and one byte more, and
/// no further: the build says where it stopped.
#[test]
fn oversized_download_without_a_length_stops_one_byte_past_the_pin() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let size = fixture().gz.len();
    let big = noise("oversized", 64 << 20);
    server.serve(TARBALL_PATH, &big);
    server.stats.no_length.store(true, Ordering::SeqCst);
    let r = sb.kbuild(&["build", "master"]);
    let stderr = r.stderr();
    let expected_tail = format!(
        "error: cannot build master\n\
         \x20 caused by: cannot fetch input `{INPUT}`\n\
         \x20 caused by: `$SERVER{TARBALL_PATH}`: delivers more than the pinned {size} bytes (reading stopped at byte {})\n\
         help: add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input kubernetes-server=file:///path/to/file` (add `--offline` to be sure nothing is fetched)\n",
        size + 1
    );
    assert_eq!(r.code, Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "    Fetching {INPUT} from $SERVER{TARBALL_PATH}\n"
        )) && stderr.ends_with(&expected_tail),
        "{stderr}"
    );
    server.stats.wait_idle();
    let sent = server.stats.sent();
    assert!(
        sent < size as u64 + (16 << 20),
        "the server sent {sent} of {} bytes",
        big.len()
    );
    // Nothing of the wrong file was kept.
    assert_eq!(
        common::world::store_objects(&sb.store),
        Default::default(),
        "no object"
    );
}
