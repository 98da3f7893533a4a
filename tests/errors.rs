//! Bad inputs: each failure is reported with its exact text and exit code 1, and leaves the
//! store and the lock file as they were (no new object, no `.tmp-*` left behind).

mod common;

use std::path::Path;

use common::*;

/// The store after a successful `build master` of the fixture.
fn built(server: &Server) -> Sandbox {
    let sb = Sandbox::pinned(server);
    sb.build_ok(&[]);
    sb
}

/// What must not change when a build fails: the store (names, kinds, modes, bytes) and the
/// lock file.
struct Snapshot {
    store: Vec<(String, Kind, u32, String)>,
    lock: Option<Vec<u8>>,
}

fn snapshot(sb: &Sandbox) -> Snapshot {
    Snapshot {
        store: if sb.store.exists() {
            shape(&listing(&sb.store))
        } else {
            vec![]
        },
        lock: sb.lock_bytes(),
    }
}

fn assert_unchanged(sb: &Sandbox, before: &Snapshot) {
    let now = snapshot(sb);
    let leftovers: Vec<String> = top_level(&sb.store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    assert_eq!(
        now.store, before.store,
        "the failed build changed the store"
    );
    assert_eq!(
        now.lock, before.lock,
        "the failed build changed the lock file"
    );
}

/// A store the failed build may have created, but holding nothing: bookkeeping only.
fn assert_store_empty(store: &Path) {
    if !store.exists() {
        return;
    }
    assert_bookkeeping_only(store, "after the failed build");
}

/// Serves `bytes` as the input and pins the lock file to their hash (so the bytes are as
/// pinned and only what they hold can be wrong); what must not change from then on.
fn serve_pinned(server: &Server, sb: &Sandbox, bytes: &[u8]) -> Snapshot {
    server.serve(TARBALL_PATH, bytes);
    let url = sb.input_url();
    sb.write_lock(&[(INPUT, &[&url], &sha256_hex(bytes), None)]);
    snapshot(sb)
}

/// The failed build kept nothing: the store holds bookkeeping only and the lock file is as
/// it was `before`.
#[track_caller]
fn assert_kept_nothing(sb: &Sandbox, before: &Snapshot) {
    assert_store_empty(&sb.store);
    assert_eq!(sb.lock_bytes(), before.lock);
}

/// The stderr of `build master` after fetching `len` bytes from `u` (`$SERVER` for the
/// server's address): the input is wrong as `cause` (what follows `from `URL``) says.
fn input_failed(u: &str, len: usize, cause: &str) -> String {
    format!(
        "{}error: cannot build master\n  caused by: input `kubernetes-server` from `{u}`{cause}\n",
        fetched(u, len)
    )
}

/// The stderr of `build master` after fetching `len` bytes from `u` whose sha256 is
/// `actual`, not the `expected` one pinned.
fn sha256_mismatch(u: &str, len: usize, expected: &str, actual: &str) -> String {
    format!(
        "{}error: cannot build master\n  caused by: sha256 mismatch for input `kubernetes-server` from `{u}`\n  expected: {expected}\n    actual: {actual}\nhelp: the file changed upstream or the mirror is wrong; if the new file is trusted, run `kbuild update kubernetes-server`\n",
        fetched(u, len)
    )
}

/// Serves `bytes` as the input of `sb` (nothing pinned): `build master` fetches them and
/// fails as `cause` (see [`input_failed`]) says, keeping nothing in the store.
#[track_caller]
fn local_build_refused(server: &Server, sb: &Sandbox, bytes: &[u8], cause: &str) {
    server.serve(TARBALL_PATH, bytes);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(&input_failed(&url_line(sb), bytes.len(), cause));
    assert_store_empty(&sb.store);
}

/// `build master` fails: the `len` bytes fetched are a truncated archive.
#[track_caller]
fn build_says_truncated(sb: &Sandbox, len: usize) {
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(&input_failed(
        &url_line(sb),
        len,
        ": the archive is truncated (unexpected end of data)",
    ));
}

fn url_line(sb: &Sandbox) -> String {
    sb.input_url()
        .replace(sb.server_base.as_deref().unwrap(), "$SERVER")
}

// ---------------------------------------------------------------------------------------------
// Inputs that are not what the lock says
// ---------------------------------------------------------------------------------------------

#[test]
fn sha256_mismatch_names_url_expected_and_actual() {
    let server = Server::start();
    let sb = built(&server);
    let wrong = "ab".repeat(32);
    let url = sb.input_url();
    sb.write_lock(&[(INPUT, &[&url], &wrong, None)]);
    let before = snapshot(&sb);

    let r = sb.kbuild(&["build", "master"]);
    let u = url_line(&sb);
    r.assert_error(&sha256_mismatch(
        &u,
        fixture().gz.len(),
        &wrong,
        &fixture().sha256,
    ));
    assert_unchanged(&sb, &before);
    assert_eq!(server.request_count(), 2);
}

#[test]
fn changed_upstream_file_is_refused() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let changed = fixture()
        .tarball
        .clone()
        .with_changed(&bin_member("kubectl"), b"#!evil kubectl\n")
        .build(Compression::Gzip);
    server.serve(TARBALL_PATH, &changed);
    let before = snapshot(&sb);

    let r = sb.kbuild(&["build", "master"]);
    let u = url_line(&sb);
    r.assert_error(&sha256_mismatch(
        &u,
        changed.len(),
        &fixture().sha256,
        &sha256_hex(&changed),
    ));
    assert_kept_nothing(&sb, &before);
}

/// Where to cut the fixture: in the middle, inside the compressed stream's last block, and
/// just the 8-byte gzip trailer (CRC32 and length) missing.
#[rstest::rstest]
#[case::half(|n: usize| n / 2)]
#[case::last_block(|n: usize| n - 100)]
#[case::no_trailer(|n: usize| n - 8)]
#[case::one_byte_short(|n: usize| n - 1)]
fn truncated_archive_is_an_archive_error(#[case] cut: fn(usize) -> usize) {
    let server = Server::start();
    let sb = built(&server);
    let full = &fixture().gz;
    let truncated = &full[..cut(full.len())];
    // Pinned to the truncated file's real hash: the bytes are as pinned, the archive is bad.
    let before = serve_pinned(&server, &sb, truncated);

    build_says_truncated(&sb, truncated.len());
    assert_unchanged(&sb, &before);
}

#[rstest::rstest]
#[case::zstd(Compression::Zstd)]
#[case::xz(Compression::Xz)]
fn truncated_archive_in_other_formats(#[case] c: Compression) {
    let server = Server::start();
    let sb = Sandbox::local(&server);
    let full = fixture().tarball.build(c);
    let truncated = &full[..full.len() - 1200];
    let before = serve_pinned(&server, &sb, truncated);

    build_says_truncated(&sb, truncated.len());
    assert_kept_nothing(&sb, &before);
}

/// A plain tar has no trailer to check: a cut inside a member kbuild keeps must still be
/// noticed, not give a shorter binary.
#[rstest::rstest]
#[case::inside_kube_apiserver("kubernetes/server/bin/kube-apiserver", 700_000)]
#[case::inside_an_unwanted_member("kubernetes/server/bin/hyperkube", 1_000)]
fn plain_tar_cut_inside_a_member(#[case] member: &str, #[case] keep: usize) {
    let server = Server::start();
    let sb = Sandbox::local(&server);
    let tar = fixture().tarball.tar();
    let name = member.as_bytes();
    let header = tar
        .windows(name.len())
        .position(|w| w == name)
        .expect("member header");
    let truncated = &tar[..header + 512 + keep];
    let before = serve_pinned(&server, &sb, truncated);

    // The user is told the archive is cut short...
    build_says_truncated(&sb, truncated.len());
    // ...and nothing half-extracted is kept.
    assert_kept_nothing(&sb, &before);
}

#[test]
fn truncated_archive_pinned_to_the_full_hash_is_a_hash_mismatch() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let full = &fixture().gz;
    let truncated = &full[..full.len() / 2];
    server.serve(TARBALL_PATH, truncated);
    let before = snapshot(&sb);

    let r = sb.kbuild(&["build", "master"]);
    let u = url_line(&sb);
    r.assert_error(&sha256_mismatch(
        &u,
        truncated.len(),
        &fixture().sha256,
        &sha256_hex(truncated),
    ));
    assert_kept_nothing(&sb, &before);
}

#[test]
fn missing_member_is_named() {
    let server = Server::start();
    let sb = built(&server);
    let without = fixture()
        .tarball
        .clone()
        .without(&bin_member("kube-scheduler"))
        .build(Compression::Gzip);
    let before = serve_pinned(&server, &sb, &without);

    let r = sb.kbuild(&["build", "master"]);
    let u = url_line(&sb);
    r.assert_error(&format!(
        "{fetch}error: cannot build master\n\
         \x20 caused by: input `kubernetes-server` from `{u}` lacks `kubernetes/server/bin/kube-scheduler`\n\
         \x20 `kubernetes/server/bin/kube-scheduler`: closest in the archive: `kubernetes/server/bin/kube-scheduler.tar`, `kubernetes/server/bin/kube-apiserver`, `kubernetes/server/bin/kube-proxy.tar`, `kubernetes/server/bin/kubectl`, `kubernetes/server/bin/kubelet`\n\
         help: fix the `member` paths in the recipe; `kbuild inputs kubernetes-server --members` lists the archive's members\n",
        fetch = fetched(&u, without.len()),
    ));
    assert_unchanged(&sb, &before);
}

#[test]
fn member_that_is_a_dangling_symlink_is_refused() {
    let server = Server::start();
    let sb = Sandbox::local(&server);
    let bad = fixture()
        .tarball
        .clone()
        .with_entry(Entry::Symlink {
            path: bin_member("kubectl"),
            target: "kubectl-gone".into(),
        })
        .build(Compression::Gzip);
    local_build_refused(
        &server,
        &sb,
        &bad,
        ": member `kubernetes/server/bin/kubectl` is a symbolic link to `kubectl-gone`, and the archive has no member `kubernetes/server/bin/kubectl-gone`",
    );
    assert_eq!(sb.lock_bytes(), None, "a failed build wrote a lock file");
}

#[test]
fn member_escaping_with_dotdot_is_refused() {
    let server = Server::start();
    let sb = Sandbox::local(&server);
    // A hostile archive: the tar crate refuses to write `..` names, so patch the header.
    let mut tar = fixture().tarball.tar();
    let name = b"kubernetes/LICENSES";
    let at = tar
        .windows(name.len())
        .position(|w| w == name)
        .expect("LICENSES header");
    tar[at..at + name.len()].copy_from_slice(b"kubernetes/../../xx");
    // Fix the header checksum.
    let header = &mut tar[at..at + 512];
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let bad = compress(&tar, Compression::Gzip);
    local_build_refused(
        &server,
        &sb,
        &bad,
        ": member `kubernetes/../../xx` contains `..`",
    );
}

#[test]
fn not_an_archive() {
    let server = Server::start();
    let sb = Sandbox::local(&server);
    local_build_refused(
        &server,
        &sb,
        b"<html><body>Moved</body></html>\n",
        ": is neither a tar archive (gzip, zstd, xz or plain) nor a Debian package (.deb)",
    );
}

#[test]
fn http_404_is_reported_once_without_retries() {
    let server = Server::start();
    let sb = Sandbox::local(&server); // nothing served
    let r = sb.kbuild(&["build", "master"]);
    let u = url_line(&sb);
    r.assert_error(&format!(
        "    Fetching kubernetes-server from {u}\n\
         error: cannot build master\n\
         \x20 caused by: cannot fetch input `kubernetes-server`\n\
         \x20 caused by: `{u}`: HTTP status 404\n\
         help: add a mirror to the input's `urls` in its recipe, or read a local copy: `kbuild build RECIPE --override-input kubernetes-server=file:///path/to/file` (add `--offline` to be sure nothing is fetched)\n",
    ));
    assert_eq!(server.request_count(), 1);
    assert_store_empty(&sb.store);
}

#[test]
fn decompression_bomb_stops_at_the_limit() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let mut c = sb.command(&["build", "master"]);
    c.env("KBUILD_MAX_UNPACKED_BYTES", "100000");
    let r = sb.run(c);
    let u = url_line(&sb);
    r.assert_error(&input_failed(&u, fixture().gz.len(), ": the archive is corrupt: unpacks to more than 100000 bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)"));
    assert_store_empty(&sb.store);
}

// ---------------------------------------------------------------------------------------------
// Offline and locked
// ---------------------------------------------------------------------------------------------

#[test]
fn offline_with_an_input_not_in_the_store_names_it() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let before = snapshot(&sb);
    let r = sb.kbuild(&["--offline", "build", "master"]);
    let u = url_line(&sb);
    // Offline, no "Fetching" line announces a fetch that cannot happen.
    r.assert_error(&format!(
        "error: cannot build master\n\
         \x20 caused by: cannot fetch input `kubernetes-server`\n\
         \x20 caused by: `{u}` needs the network, and `--offline` was given\n\
         help: build once with network access, or point the input at a local copy: `--override-input kubernetes-server=file:///path/to/file`\n",
    ));
    assert_eq!(server.request_count(), 0);
    assert_kept_nothing(&sb, &before);
}

#[test]
fn locked_without_a_pin_fails_before_fetching() {
    let server = Server::start();
    server.serve(TARBALL_PATH, &fixture().gz);
    let sb = Sandbox::local(&server);
    let r = sb.kbuild(&["build", "master", "--locked"]);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: the lock file `$SANDBOX/flake-like.lock.json` is missing, and `--locked` was given\n\
         help: point `--lock-file PATH` at the project's lock file, or pin the inputs from local copies without the network: `kbuild build RECIPE --override-input NAME=file:///path/to/file --write-lock`\n",
    );
    assert_eq!(server.request_count(), 0);
    assert_eq!(sb.lock_bytes(), None);
    assert!(!sb.store.exists(), "the store was created");
}

#[test]
fn locked_with_a_pin_for_other_urls_fails() {
    let server = Server::start();
    server.serve(TARBALL_PATH, &fixture().gz);
    // The repository's lock pins dl.k8s.io; the recipe now says the local server.
    let mut sb = Sandbox::new();
    sb.point_at(&server);
    let before = snapshot(&sb);
    let r = sb.kbuild(&["build", "master", "--locked"]);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: the lock file `$SANDBOX/flake-like.lock.json` would change (the URLs of input `kubernetes-server` changed in recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:5:9)), and `--locked` was given\n\
         help: run `kbuild lock` (or the build without `--locked`) and commit the lock file\n",
    );
    assert_eq!(server.request_count(), 0);
    assert_unchanged(&sb, &before);
}

#[test]
fn lock_disagreeing_with_the_recipe_pin() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let path = sb.recipes.join("kube-common.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let other = "cd".repeat(32);
    std::fs::write(
        &path,
        text.replace(
            "\n# The sha256 is pinned",
            &format!("\nsha256 = \"{other}\"\n# The sha256 is pinned"),
        ),
    )
    .unwrap();
    let before = snapshot(&sb);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(&format!(
        "error: cannot build master\n\
         \x20 caused by: input `kubernetes-server`: recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:5:9) pins sha256 {other}, but `$SANDBOX/flake-like.lock.json` pins {}\n\
         help: if the recipe is right, run `kbuild update kubernetes-server`; otherwise fix the recipe's `sha256`\n",
        fixture().sha256
    ));
    assert_eq!(server.request_count(), 0);
    assert_unchanged(&sb, &before);
}

#[test]
fn corrupt_lock_file_points_at_the_error() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    std::fs::write(
        &sb.lock,
        "{\n  \"version\": 1,\n  \"inputs\": {\n    oops\n}\n",
    )
    .unwrap();
    let before = snapshot(&sb);
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/flake-like.lock.json:4:5: invalid lock file: key must be a string\n\
         help: fix the file by hand at that line and column, or delete it and pin the inputs again: `kbuild lock` (without the network: `kbuild lock --override-input NAME=file:///path/to/file`)\n",
    );
    assert_unchanged(&sb, &before);
    assert!(!sb.store.exists());
}

#[test]
fn lock_file_of_a_future_version() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    std::fs::write(&sb.lock, "{\"version\": 2, \"inputs\": {}}\n").unwrap();
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: lock file `$SANDBOX/flake-like.lock.json` has version 2; this kbuild reads version 1\n",
    );
    assert_eq!(server.request_count(), 0);
}

#[test]
fn override_of_an_undeclared_input() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&[
        "build",
        "master",
        "--override-input",
        "etcd=file:///nonexistent/etcd.tar.gz",
    ]);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: `--override-input etcd=…`: no loaded recipe declares an input `etcd`\n\
         help: declared inputs: kubernetes-server\n",
    );
    assert!(!sb.store.exists());
}

#[test]
fn override_with_an_unsupported_url() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&[
        "build",
        "master",
        "--override-input",
        "kubernetes-server=ftp://mirror.example/k.tar.gz",
    ]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("error: cannot build master\n"),
        "{}",
        r.stderr
    );
    r.assert_stderr_has(
        "`ftp://mirror.example/k.tar.gz`: only https://, http:// and file:// URLs are supported",
    );
    // The input is declared; only its URL is bad.
    assert!(
        !r.stderr.contains("no loaded recipe declares"),
        "the error says the declared input `kubernetes-server` is unknown:\n{}",
        r.stderr
    );
    assert!(
        !r.stderr.contains("help: declared inputs: \n"),
        "empty help line:\n{}",
        r.stderr
    );
    assert!(!sb.store.exists());
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

#[rstest::rstest]
#[case::unknown(
    "FOO=1",
    "`--set FOO=…`: no loaded recipe declares a variable `FOO`",
    "known variables: ETCD2, ETCD3, IP, SERVICE_CIDR"
)]
#[case::ip_out_of_range(
    "IP=300.1.1.1",
    "`--set IP=…`: `300.1.1.1` is not an IP address (e.g. 10.72.84.160)",
    "`IP` is declared in recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:9:12)"
)]
#[case::ip_hostname(
    "ETCD2=etcd2.example.com",
    "`--set ETCD2=…`: `etcd2.example.com` is not an IP address (e.g. 10.72.84.160)",
    "`ETCD2` is declared in recipe `kube-apiserver` ($SANDBOX/recipes/kube-apiserver.toml:12:12)"
)]
#[case::cidr_host_bits(
    "SERVICE_CIDR=10.254.0.1/16",
    "`--set SERVICE_CIDR=…`: `10.254.0.1/16` has host bits set; the network is `10.254.0.0/16`",
    "`SERVICE_CIDR` is declared in recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:14:12)"
)]
#[case::cidr_without_length(
    "SERVICE_CIDR=10.254.0.0",
    "`--set SERVICE_CIDR=…`: `10.254.0.0` is not a CIDR block (e.g. 10.254.0.0/16)",
    "`SERVICE_CIDR` is declared in recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:14:12)"
)]
fn bad_set_is_refused_before_any_work(
    #[case] set: &str,
    #[case] message: &str,
    #[case] help: &str,
) {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let r = sb.kbuild(&["build", "master", "--set", set]);
    r.assert_error(&format!(
        "error: cannot build master\n  caused by: {message}\nhelp: {help}\n"
    ));
    assert_eq!(server.request_count(), 0);
    assert!(!sb.store.exists(), "the store was created");
}

#[test]
fn the_same_variable_set_twice_is_refused() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let r = sb.kbuild(&[
        "build",
        "master",
        "--set",
        "IP=10.0.0.1",
        "--set",
        "IP=10.0.0.2",
    ]);
    r.assert_error(
        "error: cannot build master\n  caused by: `--set IP=…` is given twice\nhelp: keep one `--set IP=…`\n",
    );
    assert_eq!(server.request_count(), 0);
}

#[test]
fn set_without_equals_is_a_usage_error() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&["build", "master", "--set", "IP"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with(
            "error: invalid value 'IP' for '--set <KEY=VALUE>': expected KEY=VALUE, got `IP`\n"
        ),
        "{}",
        r.stderr
    );
    assert!(!sb.store.exists());
}

// ---------------------------------------------------------------------------------------------
// Recipes
// ---------------------------------------------------------------------------------------------

/// Runs `build master` on a sandbox whose recipes were broken by `edit`, expecting `stderr`.
fn broken_recipes(edit: impl FnOnce(&Sandbox), stderr: &str) {
    let server = Server::start();
    let sb = built(&server);
    edit(&sb);
    let before = snapshot(&sb);
    let requests = server.request_count();
    let r = sb.kbuild(&["build", "master"]);
    r.assert_error(stderr);
    assert_unchanged(&sb, &before);
    assert_eq!(
        server.request_count(),
        requests,
        "a broken recipe was fetched for"
    );
}

/// [`broken_recipes`] with one edit: the first `from` in recipe `name` becomes `to`.
fn recipe_edit_refused(name: &str, from: &str, to: &str, stderr: &str) {
    broken_recipes(|sb| edit_recipe(sb, name, from, to), stderr);
}

/// [`broken_recipes`] with one edit: every `from` in template `templates/NAME` becomes `to`.
fn template_edit_refused(name: &str, from: &str, to: &str, stderr: &str) {
    broken_recipes(
        |sb| {
            let path = sb.recipes.join("templates").join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "templates/{name} lacks {from:?}");
            std::fs::write(&path, text.replace(from, to)).unwrap();
        },
        stderr,
    );
}

fn edit_recipe(sb: &Sandbox, name: &str, from: &str, to: &str) {
    let path = sb.recipes.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{name}.toml lacks {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn toml_syntax_error_has_file_line_column() {
    recipe_edit_refused(
        "kube-scheduler",
        "mode = \"0555\"",
        "mode = \"0555\nformat = \"text\"",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-scheduler.toml:7:13: invalid basic string, expected `\"`\n",
    );
}

#[test]
fn unknown_field_is_named_with_its_location() {
    recipe_edit_refused(
        "kube-scheduler",
        "template = \"templates/scheduler.j2\"\n",
        "template = \"templates/scheduler.j2\"\nowner = \"root\"\n",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-scheduler.toml:11:1: unknown field `owner`, expected one of `input`, `member`, `template`, `text`, `mode`, `format`, `on_change`\n",
    );
}

#[test]
fn undefined_template_variable_names_template_and_line() {
    template_edit_refused(
        "apiserver.j2",
        "https://{{ ETCD3 | host }}:2379{% endif %}\"",
        "https://{{ ETCD3 | host }}:2379,https://{{ ETCD4 }}:2379{% endif %}\"",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/templates/apiserver.j2:18: undefined variable `ETCD4`\n\
         help: declare `[variables.ETCD4]` in a recipe, or use one of: ETCD2, ETCD3, IP, SERVICE_CIDR\n",
    );
}

#[test]
fn template_syntax_error_names_template_and_line() {
    template_edit_refused(
        "scheduler.j2",
        "# Add your own!",
        "# Add {{ your own!",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/templates/scheduler.j2:6:15: syntax error: unexpected identifier, expected end of variable block\n",
    );
}

#[test]
fn environment_file_broken_across_lines_is_caught() {
    // The seed's defect: a path broken by a line break inside KUBE_API_ARGS.
    template_edit_refused(
        "apiserver.j2",
        "--tls-cert-file=/etc/kubernetes/",
        "--tls-cert-file=/etc/ku\nbernetes/",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/templates/apiserver.j2:26: rendered `/etc/kubernetes/apiserver` is not a valid environment file: the quoted value of `KUBE_API_ARGS` does not close on its line (systemd would read the line break into it)\n\
         help: write each line as `KEY=\"value\"` (a value on one line) or a `#` comment, as systemd.exec(5) reads an EnvironmentFile=, then run `kbuild build` again\n",
    );
}

#[test]
fn conflicting_targets_name_both_recipes() {
    broken_recipes(
        |sb| {
            sb.write_recipe(
                "kube-extra",
                "description = \"a second opinion on /etc/kubernetes/config\"\n\n\
                 [files.\"/etc/kubernetes/config\"]\n\
                 text = \"KUBE_MASTER=\\\"--master=http://127.0.0.1:8080\\\"\\n\"\n",
            );
            edit_recipe(
                sb,
                "master",
                "\"kube-scheduler\"]",
                "\"kube-scheduler\", \"kube-extra\"]",
            );
        },
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-extra.toml:3:8: target `/etc/kubernetes/config` is given different contents by recipe `kube-common` ($SANDBOX/recipes/kube-common.toml:19:8) and recipe `kube-extra` ($SANDBOX/recipes/kube-extra.toml:3:8)\n\
         help: declare the file in one recipe only, or make both declarations identical\n",
    );
}

#[test]
fn target_outside_managed_paths() {
    recipe_edit_refused(
        "kube-common",
        "[files.\"/usr/local/bin/kubectl\"]",
        "[files.\"/usr/bin/kubectl\"]",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-common.toml:23:8: target `/usr/bin/kubectl` is outside the paths kbuild manages (/etc/, /usr/local/bin/)\n",
    );
}

#[test]
fn target_escaping_with_dotdot() {
    recipe_edit_refused(
        "kube-scheduler",
        "[files.\"/etc/kubernetes/scheduler\"]",
        "[files.\"/etc/../root/.ssh/authorized_keys\"]",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-scheduler.toml:9:8: target `/etc/../root/.ssh/authorized_keys` contains a `..` component\n",
    );
}

#[test]
fn import_cycle_is_shown_whole() {
    recipe_edit_refused(
        "kube-common",
        "description = ",
        "imports = [\"master\"]\ndescription = ",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-common.toml:3:12: import cycle: master → kube-apiserver → kube-common → master\n\
         help: remove one of these imports; shared parts belong in a recipe both import\n",
    );
}

#[test]
fn import_of_a_missing_recipe() {
    recipe_edit_refused(
        "master",
        "\"kube-scheduler\"]",
        "\"kube-shceduler\"]",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/master.toml:4:57: imports `kube-shceduler`, which is not a recipe in `$SANDBOX/recipes`\n\
         help: available recipes: kube-apiserver, kube-common, kube-controller-manager, kube-scheduler, master\n",
    );
}

#[test]
fn member_of_an_undeclared_input() {
    recipe_edit_refused(
        "kube-scheduler",
        "input = \"kubernetes-server\"",
        "input = \"kubernetes-node\"",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-scheduler.toml:4:8: file `/usr/local/bin/kube-scheduler` takes a member of input `kubernetes-node`, which no loaded recipe declares\n\
         help: declared inputs: kubernetes-server\n",
    );
}

#[test]
fn writable_mode_is_refused() {
    recipe_edit_refused(
        "kube-scheduler",
        "mode = \"0555\"",
        "mode = \"0755\"",
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-scheduler.toml:7:8: `mode` must be \"0444\" or \"0555\"\n\
         help: store files are read-only; only the executable bit is kept\n",
    );
}

#[test]
fn unknown_recipe_lists_the_available_ones() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&["build", "mastr"]);
    r.assert_error(
        "error: cannot build mastr\n\
         \x20 caused by: no recipe `mastr` in `$SANDBOX/recipes`\n\
         help: available recipes: kube-apiserver, kube-common, kube-controller-manager, kube-scheduler, master\n",
    );
    assert!(!sb.store.exists());
}

#[test]
fn empty_recipes_directory() {
    let sb = Sandbox::new();
    let empty = sb.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut c = sb.bare();
    c.arg("--store")
        .arg(&sb.store)
        .arg("--recipes")
        .arg(&empty)
        .arg("--lock-file")
        .arg(&sb.lock)
        .args(["build", "master"]);
    let r = sb.run(c);
    r.assert_error(
        "error: cannot build master\n\
         \x20 caused by: no recipe `master` in `$SANDBOX/empty`\n\
         help: the recipes directory has no `*.toml` files; pass `--recipes DIR`\n",
    );
}

#[test]
fn text_file_with_a_broken_environment_value() {
    broken_recipes(
        |sb| {
            sb.write_recipe(
                "kube-extra",
                "[files.\"/etc/kubernetes/extra\"]\n\
                 format = \"env\"\n\
                 text = \"\"\"\nA=\\\"ok\\\"\nB=\\\"--x=/etc/ku\nbernetes\\\"\n\"\"\"\n",
            );
            edit_recipe(
                sb,
                "master",
                "\"kube-scheduler\"]",
                "\"kube-scheduler\", \"kube-extra\"]",
            );
        },
        "error: cannot build master\n\
         \x20 caused by: $SANDBOX/recipes/kube-extra.toml:1:8: `text` of `/etc/kubernetes/extra`, line 2: rendered `/etc/kubernetes/extra` is not a valid environment file: the quoted value of `B` does not close on its line (systemd would read the line break into it)\n\
         help: write each line as `KEY=\"value\"` (a value on one line) or a `#` comment, as systemd.exec(5) reads an EnvironmentFile=, then run `kbuild build` again\n",
    );
}
