//! Network faults: a local HTTP server (std::net, one thread per connection) that misbehaves
//! on purpose — error statuses, connections cut mid-body, bodies shorter or longer than their
//! Content-Length, stalls, redirect loops, redirects off http(s), broken mirrors.
//!
//! Every case checks the exact stderr, the exit code, how many requests the server saw (so
//! retries are counted), and after a failure that nothing partial was kept: the store holds
//! no object and no `.tmp-*` entry, and the lock file is as it was. The case table is
//! `hostile::NETWORK`.
//!
//! Retries (3 attempts per URL, 0.5 s then 1 s apart) and timeouts (`KBUILD_HTTP_TIMEOUT=1`)
//! are real, so the cases that exercise them take a few seconds each.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::time::{Duration, Instant};

use common::*;
use hostile::*;

const PRIMARY: &str = "/k/kubernetes-server-linux-amd64.tar.gz";
const MIRROR: &str = "/mirror/kubernetes-server-linux-amd64.tar.gz";

/// A sandbox whose only recipe `net` takes kubectl from input `kubernetes-server` at `urls`
/// (the first the primary, the rest mirrors), pinned to the fixture in the lock file.
fn sandbox(urls: &[String]) -> Sandbox {
    sandbox_taking(urls, &["kubectl"])
}

/// Like [`sandbox`], taking `binaries` (of `kubernetes/server/bin/`) into `/usr/local/bin`.
fn sandbox_taking(urls: &[String], binaries: &[&str]) -> Sandbox {
    let sb = Sandbox::new();
    let mirrors: Vec<String> = urls[1..].iter().map(|u| toml_str(u)).collect();
    let mut recipe = format!(
        "[inputs.kubernetes-server]\nurl = {}\nmirrors = [{}]\n",
        toml_str(&urls[0]),
        mirrors.join(", ")
    );
    for b in binaries {
        recipe.push_str(&format!(
            "\n[files.\"/usr/local/bin/{b}\"]\ninput = \"kubernetes-server\"\nmember = \"kubernetes/server/bin/{b}\"\nmode = \"0555\"\n"
        ));
    }
    sb.write_recipe("net", &recipe);
    let f = fixture();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    sb.write_lock(&[(INPUT, &refs, &f.sha256, Some(f.gz.len() as u64))]);
    sb
}

fn gz() -> Vec<u8> {
    fixture().gz.clone()
}

fn run(sb: &Sandbox, server: &EvilServer, env: &[(&str, &str)]) -> (Run, String) {
    let r = kbuild_env(sb, env, &["build", "net"]);
    let stderr = r.stderr().replace(server.base(), "$SERVER");
    (r, stderr)
}

/// One build of `net` against an [`EvilServer`] that answers each URL with its scripted
/// replies in turn: what every case checks afterwards.
struct Served {
    server: EvilServer,
    sb: Sandbox,
    /// The lock file as it was before the build.
    lock: Option<Vec<u8>>,
    r: Run,
    /// The build's stderr, the server's address shown as `$SERVER`.
    stderr: String,
    /// How long the build alone took (not the sandbox's set-up).
    took: Duration,
}

impl Served {
    /// The primary URL alone, answering with `replies`.
    fn primary(replies: Vec<Reply>) -> Served {
        Served::scripted(vec![(PRIMARY, replies)], &[])
    }

    /// The primary URL, then one mirror, each answering with its replies.
    fn mirrored(primary: Vec<Reply>, mirror: Vec<Reply>) -> Served {
        Served::scripted(vec![(PRIMARY, primary), (MIRROR, mirror)], &[])
    }

    /// The primary URL alone with `KBUILD_HTTP_TIMEOUT=1`, its `replies` stalling: three
    /// attempts of about 1 s each, so the build takes at least 4 s and less than
    /// [`TIMEOUT_BOUND`].
    #[track_caller]
    fn primary_stalling(replies: Vec<Reply>) -> Served {
        let s = Served::scripted(vec![(PRIMARY, replies)], &[("KBUILD_HTTP_TIMEOUT", "1")]);
        let took = s.took;
        assert!(took < TIMEOUT_BOUND, "took {took:?}");
        assert!(took >= Duration::from_secs(4), "took {took:?}");
        s
    }

    /// The URLs in the order of `script` (the first the primary), each answering with its
    /// replies; the build runs with `env`.
    fn scripted(script: Vec<(&str, Vec<Reply>)>, env: &[(&str, &str)]) -> Served {
        let server = EvilServer::start();
        let urls: Vec<String> = script.iter().map(|(path, _)| server.url(path)).collect();
        for (path, replies) in script {
            server.script(path, replies);
        }
        let sb = sandbox(&urls);
        let lock = sb.lock_bytes();
        let started = Instant::now();
        let (r, stderr) = run(&sb, &server, env);
        let took = started.elapsed();
        Served {
            server,
            sb,
            lock,
            r,
            stderr,
            took,
        }
    }

    /// How many requests the primary URL and the mirror saw.
    fn requests(&self) -> (usize, usize) {
        (self.server.count(PRIMARY), self.server.count(MIRROR))
    }

    /// The build failed with exactly `expected` on stderr and kept nothing (see
    /// [`assert_failed`]), after `requests` requests to the primary URL and the mirror.
    #[track_caller]
    fn fails(&self, case: &str, expected: &str, requests: (usize, usize)) {
        assert_failed(case, &self.sb, &self.lock, &self.r, &self.stderr, expected);
        assert_eq!(self.requests(), requests, "case `{case}`: requests");
    }

    /// The build succeeded with exactly `expected` on stderr (see [`assert_built`]), after
    /// `requests` requests to the primary URL and the mirror.
    #[track_caller]
    fn builds(&self, case: &str, expected: &str, requests: (usize, usize)) {
        assert_built(case, &self.sb, &self.r, &self.stderr, expected);
        assert_eq!(self.requests(), requests, "case `{case}`: requests");
    }
}

/// The build failed: exit 1, exactly `expected` on stderr, no object, no `.tmp-*`, the lock
/// file untouched.
#[track_caller]
fn assert_failed(
    case: &str,
    sb: &Sandbox,
    lock: &Option<Vec<u8>>,
    r: &Run,
    stderr: &str,
    expected: &str,
) {
    assert_eq!(
        (r.code, r.stdout.as_str(), stderr),
        (Some(1), "", expected),
        "case `{case}`"
    );
    assert_bookkeeping_only(&sb.store, &format!("case `{case}`"));
    assert_eq!(&sb.lock_bytes(), lock, "the lock file changed");
    check_case(NETWORK, case, outcome_of(r, false), stderr);
}

/// The build succeeded and stored the fixture's kubectl.
#[track_caller]
fn assert_built(case: &str, sb: &Sandbox, r: &Run, stderr: &str, expected: &str) {
    assert_eq!((r.code, stderr), (Some(0), expected), "case `{case}`");
    let kubectl = r.rootfs().join("usr/local/bin/kubectl");
    assert_eq!(
        std::fs::read(kubectl).unwrap(),
        fixture().tarball.member("kubernetes/server/bin/kubectl")
    );
    assert_no_tmp(&sb.store);
    let v = verify(sb);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
    check_case(NETWORK, case, outcome_of(r, false), stderr);
}

/// `stderr` is `head`, then one `caused by:` line on the primary URL holding each of
/// `words`, then [`FETCH_HELP`]: for causes whose wording comes from the HTTP client.
#[track_caller]
fn assert_last_cause_names(stderr: &str, head: &str, words: &[&str], why: &str) {
    let last = stderr.strip_prefix(head);
    assert!(
        last.is_some_and(|last| last.starts_with(&format!("  caused by: `{U}`: "))
            && words.iter().all(|w| last.contains(w))
            && last.lines().count() == 2
            && last.ends_with(FETCH_HELP)),
        "{why}: the last cause does not name {words:?}:\n{stderr}"
    );
}

fn fetching(url: &str) -> String {
    transfer(url, 0)
}

/// The line kbuild prints before another attempt: the URL and what went wrong with it.
fn retrying(cause: &str, attempt: u32) -> String {
    format!("    Retrying `{U}`: {cause} (attempt {attempt} of 3)\n")
}

/// A stall once the body has started, and before the response headers.
const STALL_BODY: &str = "no data for 1 s (KBUILD_HTTP_TIMEOUT sets the limit, in seconds)";
const STALL_HEAD: &str = "no answer for 1 s (KBUILD_HTTP_TIMEOUT sets the limit, in seconds)";

fn failed(causes: &[&str]) -> String {
    let mut s = String::from("error: cannot build net\n");
    for c in causes {
        s.push_str(&format!("  caused by: {c}\n"));
    }
    // Every failed download says what to do (issue 13): a mirror or a local copy.
    s.push_str(FETCH_HELP);
    s
}

/// The stderr of a build whose one attempt at the primary URL failed with `cause`, not
/// worth a retry.
fn refused(cause: &str) -> String {
    format!(
        "{}{}",
        fetching(U),
        failed(&[
            "cannot fetch input `kubernetes-server`",
            &format!("`{U}`: {cause}")
        ])
    )
}

/// The stderr of a build whose three attempts at the primary URL each failed with `cause`.
fn gave_up(cause: &str) -> String {
    format!(
        "{f}{}{f}{}{f}{}",
        retrying(cause, 2),
        retrying(cause, 3),
        failed(&[
            "cannot fetch input `kubernetes-server`",
            &format!("`{U}`: {cause}")
        ]),
        f = fetching(U),
    )
}

const FETCH_HELP: &str = "help: add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input kubernetes-server=file:///path/to/file` (add `--offline` to be sure nothing is fetched)\n";

const BUILT: &str = "       Built generation 1\n";
const U: &str = "$SERVER/k/kubernetes-server-linux-amd64.tar.gz";
const M: &str = "$SERVER/mirror/kubernetes-server-linux-amd64.tar.gz";

// ---------------------------------------------------------------------------------------------
// Statuses
// ---------------------------------------------------------------------------------------------

#[test]
fn not_found_is_not_retried() {
    Served::primary(vec![Reply::Status(404)]).fails(
        "not_found_is_not_retried",
        &refused("HTTP status 404"),
        (1, 0),
    );
}

#[test]
fn forbidden_is_not_retried() {
    Served::primary(vec![Reply::Status(403)]).fails(
        "forbidden_is_not_retried",
        &refused("HTTP status 403"),
        (1, 0),
    );
}

#[test]
fn server_error_then_success_is_retried() {
    Served::primary(vec![Reply::Status(500), Reply::Body(gz())]).builds(
        "server_error_then_success_is_retried",
        &format!(
            "{}{}{}{BUILT}",
            fetching(U),
            retrying("HTTP status 500", 2),
            transfer(U, gz().len())
        ),
        (2, 0),
    );
}

#[test]
fn too_many_requests_then_success_is_retried() {
    Served::primary(vec![Reply::Status(429), Reply::Body(gz())]).builds(
        "too_many_requests_then_success_is_retried",
        &format!(
            "{}{}{}{BUILT}",
            fetching(U),
            retrying("HTTP status 429", 2),
            transfer(U, gz().len())
        ),
        (2, 0),
    );
}

#[test]
fn persistent_server_error_gives_up_after_three_attempts() {
    Served::primary(vec![Reply::Status(503)]).fails(
        "persistent_server_error_gives_up_after_three_attempts",
        &gave_up("HTTP status 503"),
        (3, 0),
    );
}

// ---------------------------------------------------------------------------------------------
// Broken transfers
// ---------------------------------------------------------------------------------------------

/// Every attempt's body is cut by `cut` (given the body and how much of it to send) at half
/// its length: less than one 1 MiB read arrives, so no `Read` line; three attempts fail.
#[track_caller]
fn cut_at_half(case: &str, cut: fn(Vec<u8>, usize) -> Reply) {
    let body = gz();
    let keep = body.len() / 2;
    assert!(keep < 1 << 20);
    Served::primary(vec![cut(body, keep)]).fails(
        case,
        &gave_up("reading failed: Peer disconnected"),
        (3, 0),
    );
}

#[test]
fn connection_closed_mid_body() {
    cut_at_half("connection_closed_mid_body", |body, keep| {
        Reply::CutChunked { body, keep }
    });
}

#[test]
fn body_shorter_than_content_length() {
    cut_at_half("body_shorter_than_content_length", |body, keep| {
        Reply::Cut { body, keep }
    });
}

#[test]
fn body_longer_than_content_length() {
    let mut body = gz();
    let declared = body.len();
    body.extend_from_slice(&noise("junk after the declared length", 4096));
    // Exactly Content-Length bytes are read (and hashed); what follows is not the body.
    Served::primary(vec![Reply::Declared { body, declared }]).builds(
        "body_longer_than_content_length",
        &format!("{}{BUILT}", transfer(U, declared)),
        (1, 0),
    );
}

#[test]
fn content_length_shorter_than_the_archive() {
    let body = gz();
    let declared = body.len() - 1000;
    let read = sha256_hex(&body[..declared]);
    // The bytes read are not the pinned file: a hash mismatch, not worth a retry.
    Served::primary(vec![Reply::Declared { body, declared }]).fails(
        "content_length_shorter_than_the_archive",
        &format!(
            "{}error: cannot build net\n  caused by: sha256 mismatch for input `kubernetes-server` from `{U}`\n  expected: {}\n    actual: {read}\nhelp: the file changed upstream or the mirror is wrong; if the new file is trusted, run `kbuild update kubernetes-server`\n",
            transfer(U, declared),
            fixture().sha256,
        ),
        (1, 0),
    );
}

#[test]
fn connection_closed_before_the_response() {
    Served::primary(vec![Reply::HangUp]).fails(
        "connection_closed_before_the_response",
        &gave_up("io: Peer disconnected"),
        (3, 0),
    );
}

#[test]
fn connection_closed_once_then_success() {
    Served::primary(vec![Reply::HangUp, Reply::Body(gz())]).builds(
        "connection_closed_once_then_success",
        &format!(
            "{}{}{}{BUILT}",
            fetching(U),
            retrying("io: Peer disconnected", 2),
            transfer(U, gz().len())
        ),
        (2, 0),
    );
}

/// A transfer cut after a kept member was already extracted, then a good retry: the retry
/// must start from a clean slate and succeed.
#[test]
fn body_cut_after_a_member_then_success() {
    let server = EvilServer::start();
    let body = gz();
    // More than one 1 MiB read: the first read reaches the decoder, which extracts
    // cloud-controller-manager (the first binary of the archive) before the cut shows.
    let keep = (1 << 20) + (200 << 10);
    assert!(keep < body.len());
    server.script(PRIMARY, vec![Reply::Cut { body, keep }, Reply::Body(gz())]);
    let sb = sandbox_taking(
        &[server.url(PRIMARY)],
        &["cloud-controller-manager", "kubectl"],
    );
    let (r, stderr) = run(&sb, &server, &[]);
    assert_built(
        "body_cut_after_a_member_then_success",
        &sb,
        &r,
        &stderr,
        &format!(
            "{}{}{}{BUILT}",
            transfer(U, 1 << 20),
            retrying("reading failed: Peer disconnected", 2),
            transfer(U, gz().len())
        ),
    );
    assert_eq!(
        std::fs::read(r.rootfs().join("usr/local/bin/cloud-controller-manager")).unwrap(),
        fixture()
            .tarball
            .member("kubernetes/server/bin/cloud-controller-manager")
    );
    assert_eq!(server.count(PRIMARY), 2);
}

/// Runs `kbuild build net ARGS`, killed after `limit`.
fn run_bounded(sb: &Sandbox, server: &EvilServer, args: &[&str], limit: Duration) -> (Run, String) {
    let mut c = sb.command(&[&["build", "net"], args].concat());
    c.timeout(limit);
    let r = sb.run(c);
    let stderr = r.stderr().replace(server.base(), "$SERVER");
    (r, stderr)
}

/// A server that never stops sending: the pin says how big the file is, and what cannot be
/// the pinned file must not be read forever.
#[test]
fn endless_body_is_cut_off() {
    let server = EvilServer::start();
    server.script(PRIMARY, vec![Reply::Endless]);
    let sb = sandbox(&[server.url(PRIMARY)]);
    let lock = sb.lock_bytes();
    let started = Instant::now();
    // Cut off after a few MiB, at once; the limit only tells that from reading forever.
    let (r, stderr) = run_bounded(&sb, &server, &[], Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(
        r.code,
        Some(1),
        "still reading after {took:?} (a run killed by the 60 s limit has no exit code)\n{stderr}"
    );
    assert!(
        stderr.starts_with(&fetching(U)) && stderr.contains("error: cannot build net\n"),
        "{stderr}"
    );
    assert_failed("endless_body_is_cut_off", &sb, &lock, &r, &stderr, &stderr);
}

/// The same from a local source that never ends (`file:///dev/zero`): after the first MiB it
/// is clearly not an archive, and kbuild must say so instead of hashing zeros forever.
#[test]
fn endless_file_is_cut_off() {
    let server = EvilServer::start();
    let sb = sandbox(&[server.url(PRIMARY)]);
    let lock = sb.lock_bytes();
    let started = Instant::now();
    let (r, stderr) = run_bounded(
        &sb,
        &server,
        &["--override-input", "kubernetes-server=file:///dev/zero"],
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    assert_eq!(
        r.code,
        Some(1),
        "still reading after {took:?} (a run killed by the 60 s limit has no exit code)\n{stderr}"
    );
    assert!(
        stderr.starts_with("     Reading kubernetes-server from file:///dev/zero\n"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: cannot build net\n  caused by: input `kubernetes-server` from `file:///dev/zero`: is neither a tar archive (gzip, zstd, xz or plain) nor a Debian package (.deb)\n"),
        "{stderr}"
    );
    assert_failed("endless_file_is_cut_off", &sb, &lock, &r, &stderr, &stderr);
    assert_eq!(server.requests(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

/// Three attempts of at most ~1 s each, 0.5 s and 1 s apart, plus process start-up: about
/// 4.5 s, ten times that for a loaded machine. Still far below what the default 30 s limit
/// (`KBUILD_HTTP_TIMEOUT` not read) would take: 90 s and more.
const TIMEOUT_BOUND: Duration = Duration::from_secs(45);

#[test]
fn server_stalls_after_the_headers() {
    let s = Served::primary_stalling(vec![Reply::StallAfter {
        body: gz(),
        keep: 64 << 10,
        stall: Duration::from_secs(60),
    }]);
    let attempt = fetching(U);
    // The same silence as before the headers, so the same advice: the message must name the
    // limit and the variable that sets it.
    let head = format!(
        "{attempt}{}{attempt}{}{attempt}{}",
        retrying(STALL_BODY, 2),
        retrying(STALL_BODY, 3),
        failed(&["cannot fetch input `kubernetes-server`"]).replace(FETCH_HELP, ""),
    );
    assert_last_cause_names(
        &s.stderr,
        &head,
        &["1 s", "KBUILD_HTTP_TIMEOUT"],
        "the timeout message does not name the limit",
    );
    s.fails("server_stalls_after_the_headers", &s.stderr, (3, 0));
}

#[test]
fn server_stalls_before_the_headers() {
    Served::primary_stalling(vec![Reply::StallBeforeHeaders(Duration::from_secs(60))]).fails(
        "server_stalls_before_the_headers",
        &gave_up(STALL_HEAD),
        (3, 0),
    );
}

// ---------------------------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------------------------

#[test]
fn redirect_loop() {
    let server = EvilServer::start();
    server.script(PRIMARY, vec![Reply::Redirect(server.url(PRIMARY))]);
    let sb = sandbox(&[server.url(PRIMARY)]);
    let lock = sb.lock_bytes();
    let (r, stderr) = run(&sb, &server, &[]);
    assert_failed(
        "redirect_loop",
        &sb,
        &lock,
        &r,
        &stderr,
        &refused("more than 10 redirects (a redirect loop?)"),
    );
    // The first request and 10 redirects, once: a loop is not worth a retry.
    assert_eq!(server.count(PRIMARY), 11);
}

/// A redirect to a `file://` URL must not be followed: not to `/etc/passwd`, and not to a
/// copy of the pinned archive in the sentinel directory (following that one would even
/// succeed).
#[test]
fn redirect_to_a_file_url() {
    let s = Sentinel::new();
    let copy = s.path().join("kubernetes-server-linux-amd64.tar.gz");
    std::fs::write(&copy, gz()).unwrap();
    let before = s.snapshot();
    for target in [
        "file:///etc/passwd".to_owned(),
        format!("file://{}", copy.display()),
    ] {
        let server = EvilServer::start();
        server.script(PRIMARY, vec![Reply::Redirect(target.clone())]);
        let sb = sandbox(&[server.url(PRIMARY)]);
        let lock = sb.lock_bytes();
        let (r, stderr) = run(&sb, &server, &[]);
        let stderr = s.mask(&stderr);
        // Not followed anywhere: neither read from the disk nor turned into another request
        // to the server, and the error names the refused location (as for `ftp://`, whose
        // redirect ends in `bad uri: unknown scheme: ftp`).
        assert_eq!(
            server.requests(),
            [format!("GET {PRIMARY}")],
            "redirect to {target}"
        );
        let head = format!(
            "{}{}",
            fetching(U),
            failed(&["cannot fetch input `kubernetes-server`"]).replace(FETCH_HELP, "")
        );
        assert_last_cause_names(&stderr, &head, &["file"], &format!("redirect to {target}"));
        assert_failed("redirect_to_a_file_url", &sb, &lock, &r, &stderr, &stderr);
    }
    s.assert_untouched(&before);
}

#[test]
fn redirect_to_an_ftp_url() {
    Served::primary(vec![Reply::Redirect(
        "ftp://127.0.0.1/kubernetes-server-linux-amd64.tar.gz".into(),
    )])
    .fails(
        "redirect_to_an_ftp_url",
        &refused(
            "refusing to follow a redirect to `ftp://127.0.0.1/kubernetes-server-linux-amd64.tar.gz`: only http:// and https:// are followed",
        ),
        (1, 0),
    );
}

#[test]
fn redirect_to_another_http_server() {
    let server = EvilServer::start();
    let other = EvilServer::start();
    other.script(MIRROR, vec![Reply::Body(gz())]);
    server.script(PRIMARY, vec![Reply::Redirect(other.url(MIRROR))]);
    let sb = sandbox(&[server.url(PRIMARY)]);
    let (r, stderr) = run(&sb, &server, &[]);
    assert_built(
        "redirect_to_another_http_server",
        &sb,
        &r,
        &stderr,
        &format!("{}{BUILT}", transfer(U, gz().len())),
    );
    assert_eq!((server.count(PRIMARY), other.count(MIRROR)), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// Mirrors
// ---------------------------------------------------------------------------------------------

fn mirrored() -> String {
    format!("    Mirrored kubernetes-server was served by {M}\n")
}

#[test]
fn first_mirror_not_found_second_serves() {
    Served::mirrored(vec![Reply::Status(404)], vec![Reply::Body(gz())]).builds(
        "first_mirror_not_found_second_serves",
        &format!(
            "{}{}{}{BUILT}",
            fetching(U),
            transfer(M, gz().len()),
            mirrored()
        ),
        (1, 1),
    );
}

#[test]
fn first_mirror_hangs_up_second_serves() {
    Served::mirrored(vec![Reply::HangUp], vec![Reply::Body(gz())]).builds(
        "first_mirror_hangs_up_second_serves",
        &format!(
            "{f}{}{f}{}{f}{}{}{BUILT}",
            retrying("io: Peer disconnected", 2),
            retrying("io: Peer disconnected", 3),
            transfer(M, gz().len()),
            mirrored(),
            f = fetching(U),
        ),
        (3, 1),
    );
}

#[test]
fn first_mirror_serves_another_file_second_serves() {
    let other = fixture()
        .tarball
        .clone()
        .with_changed("kubernetes/server/bin/kubectl", b"#!evil kubectl\n")
        .build(Compression::Gzip);
    Served::mirrored(vec![Reply::Body(other.clone())], vec![Reply::Body(gz())]).builds(
        "first_mirror_serves_another_file_second_serves",
        &format!(
            "{}{}{}{BUILT}",
            transfer(U, other.len()),
            transfer(M, gz().len()),
            mirrored()
        ),
        (1, 1),
    );
}

#[test]
fn every_mirror_fails() {
    Served::mirrored(vec![Reply::Status(404)], vec![Reply::Status(410)]).fails(
        "every_mirror_fails",
        &format!(
            "{}{}{}",
            fetching(U),
            fetching(M),
            failed(&[&format!(
                "input `kubernetes-server`: every source failed:\n  - `{U}`: HTTP status 404\n  - `{M}`: HTTP status 410"
            )])
        ),
        (1, 1),
    );
}

cases_tested!(NETWORK;
    not_found_is_not_retried,
    server_error_then_success_is_retried,
    too_many_requests_then_success_is_retried,
    persistent_server_error_gives_up_after_three_attempts,
    forbidden_is_not_retried,
    connection_closed_mid_body,
    body_shorter_than_content_length,
    body_longer_than_content_length,
    content_length_shorter_than_the_archive,
    connection_closed_before_the_response,
    connection_closed_once_then_success,
    body_cut_after_a_member_then_success,
    endless_body_is_cut_off,
    endless_file_is_cut_off,
    server_stalls_after_the_headers,
    server_stalls_before_the_headers,
    redirect_loop,
    redirect_to_a_file_url,
    redirect_to_an_ftp_url,
    redirect_to_another_http_server,
    first_mirror_not_found_second_serves,
    first_mirror_hangs_up_second_serves,
    first_mirror_serves_another_file_second_serves,
    every_mirror_fails,
);
