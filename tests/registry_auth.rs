//! Registry credentials as docker and podman keep them (issue 11, point 5): credential
//! helpers named by `credHelpers` and `credsStore`, run as docker runs them, and docker's
//! `identitytoken` exchanged at the token realm (`grant_type=refresh_token`).
//!
//! Real components only: Debian's `docker-credential-pass` over `pass` and `gnupg` (a key made
//! here without a passphrase, in a temp `GNUPGHOME`), Debian's `docker-credential-secretservice`
//! (which fails without a D-Bus session, as it does in these clean environments), and the
//! registries of `tests/common/registry.rs` (htpasswd + TLS, and one behind a token server).
//!
//! Needs what `tests/registry.rs` needs plus `golang-docker-credential-helpers`, `pass` and
//! `gnupg`: `.ci/run` installs them; a test skips only when one is missing and neither `CI` is
//! set nor the user is root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::registry::*;
use common::world::*;
use common::*;

/// `true` when the test must return early (see `common::registry::skip`): the registry's
/// tools or the credential helpers' are missing, and we are neither in CI nor root.
fn skip_helpers() -> bool {
    if skip() {
        return true;
    }
    for (tool, package) in [
        ("docker-credential-pass", "golang-docker-credential-helpers"),
        (
            "docker-credential-secretservice",
            "golang-docker-credential-helpers",
        ),
        ("pass", "pass"),
        ("gpg", "gnupg"),
    ] {
        if !common::container::on_path(tool) {
            use std::os::unix::fs::MetadataExt as _;
            let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
            assert!(
                std::env::var_os("CI").is_none() && !root,
                "the credential helper tests must run in CI and as root, but `{tool}` is not installed (apt-get install {package})"
            );
            eprintln!("skipped: `{tool}` is not installed (apt-get install {package})");
            return true;
        }
    }
    false
}

/// A password store for `docker-credential-pass`: a temp `GNUPGHOME` with a key made without
/// a passphrase, and a `pass` store encrypted to it. Its gpg-agent is stopped when dropped.
struct PassStore {
    dir: tempfile::TempDir,
}

impl PassStore {
    fn new() -> PassStore {
        // Short: gpg-agent's socket lives in GNUPGHOME and a socket path has at most 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("kb-pass-")
            .tempdir()
            .unwrap();
        let s = PassStore { dir };
        std::fs::create_dir(s.gnupg()).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(s.gnupg(), std::fs::Permissions::from_mode(0o700)).unwrap();
        s.run(
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-generate-key",
                "kbuild-test",
                "futuredefault",
                "default",
                "never",
            ],
            None,
        );
        s.run("pass", &["init", "kbuild-test"], None);
        s
    }

    fn gnupg(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    /// GNUPGHOME and PASSWORD_STORE_DIR, for kbuild's runs.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GNUPGHOME", self.gnupg().display().to_string()),
            (
                "PASSWORD_STORE_DIR",
                self.dir.path().join("store").display().to_string(),
            ),
        ]
    }

    /// Runs `program ARGS` (stdin `input`) in a clean environment with this store; it must
    /// succeed.
    fn run(&self, program: &str, args: &[&str], input: Option<&str>) {
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            stdin
                .write_all(input.unwrap_or_default().as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker-credential-pass store` of `user` / `secret` for `server`, as `docker login`
    /// does with a `pass` credential store.
    fn store(&self, server: &str, user: &str, secret: &str) {
        let creds = serde_json::json!({"ServerURL": server, "Username": user, "Secret": secret})
            .to_string();
        self.run("docker-credential-pass", &["store"], Some(&creds));
    }

    /// `docker-credential-pass erase` of `server`.
    fn erase(&self, server: &str) {
        self.run("docker-credential-pass", &["erase"], Some(server));
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        // The agent gpg started for this GNUPGHOME (only that one).
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.gnupg())
            .status();
    }
}

/// What both helper tests start from: a registry (with TLS) started with `options`, its CA
/// file, host and `REPO:gen1` reference, and a builder that has built generation 1. `None`
/// when the tests are skipped here (see [`skip_helpers`]).
struct Setup {
    reg: Registry,
    ca: String,
    host: String,
    reference: String,
    w: World,
}

fn setup(options: Options) -> Option<Setup> {
    if skip_helpers() {
        return None;
    }
    let reg = Registry::start_with(options);
    Some(Setup {
        ca: reg.ca_file().display().to_string(),
        host: reg.host(),
        reference: reg.reference(REPO, "gen1"),
        w: built_gen1(),
        reg,
    })
}

/// Writes `value` as JSON to `path`.
fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

/// Runs `w`'s kbuild with `ARGS` and the pass store's environment.
fn run_with(w: &World, args: &[&str], pass: &PassStore) -> Run {
    let env = pass.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    w.run_env(args, &env)
}

/// No secret in what `r` printed.
#[track_caller]
fn assert_no_secret(r: &Run) {
    for secret in [PASSWORD, REFRESH_TOKEN] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "a secret in:\n{}{}",
            r.stdout,
            r.stderr
        );
    }
}

/// `stderr` without the status line a credential helper that takes more than 2 s to answer
/// gets (`Waiting for `docker-credential-…``): `pass` and gpg can be that slow on a loaded
/// machine, and the line is right then.
fn without_helper_wait(stderr: &str) -> String {
    stderr
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("     Waiting for `docker-credential-"))
        .collect()
}

/// A failed registry command: exit 1, nothing on stdout, `error:` naming each of `needles`,
/// and no secret anywhere.
#[track_caller]
fn assert_refused(r: &Run, needles: &[&str]) {
    assert_eq!(
        r.code,
        Some(1),
        "expected exit code 1\n--- stdout\n{}--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "stdout of a failed run");
    let stderr = without_helper_wait(&r.stderr);
    assert!(stderr.starts_with("error: "), "stderr:\n{}", r.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not name `{needle}`:\n{}",
            r.stderr
        );
    }
    assert_no_secret(r);
}

/// With htpasswd auth and TLS, credentials from `docker-credential-pass`: named by
/// `credHelpers` (which wins over a wrong `auths` entry of the same file) for a push, by
/// `credsStore` (beside docker's empty `auths` placeholder, in `$DOCKER_CONFIG/config.json`)
/// for a pull that then switches;
/// a helper with no credentials is the 401 naming the file and the helper; a helper not
/// installed, and one that fails, are errors naming the helper, the registry and the file,
/// with what the failing one said, and a `help:` line.
#[test]
fn credential_helpers_named_by_cred_helpers_and_creds_store_give_the_credentials() {
    let Some(Setup {
        reg: _reg,
        ca,
        host,
        reference,
        w,
    }) = setup(Options::AUTH_TLS)
    else {
        return;
    };
    let ca = ca.as_str();
    let pass = PassStore::new();
    pass.store(&host, USER, PASSWORD);

    // Push: credHelpers over a wrong `auths` entry for the same registry.
    let authfile = w.sb.dir.join("auth.json");
    write_json(
        &authfile,
        serde_json::json!({
            "auths": {&host: {"auth": base64(format!("{USER}:not-the-password").as_bytes())}},
            "credHelpers": {&host: "pass"},
        }),
    );
    let authfile = authfile.to_str().unwrap();
    let r = run_with(
        &w,
        &[
            "push",
            "1",
            &reference,
            "--host",
            "master-1",
            "--ca-file",
            ca,
            "--authfile",
            authfile,
        ],
        &pass,
    );
    r.assert_success();
    assert_no_secret(&r);
    assert!(
        r.stdout.starts_with(&format!("{reference}@sha256:")),
        "{}",
        r.stdout
    );

    // Pull: docker's config.json as `docker login` writes it with a credential store, in the
    // directory `DOCKER_CONFIG` names.
    let h = puller();
    let docker_dir = h.sb.dir.join("docker-config");
    write_json(
        &docker_dir.join("config.json"),
        serde_json::json!({"auths": {&host: {}}, "credsStore": "pass"}),
    );
    let mut env = pass.env();
    env.push(("DOCKER_CONFIG", docker_dir.display().to_string()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = h.run_env(&["pull", &reference, "--ca-file", ca], &env);
    r.assert_success();
    assert_no_secret(&r);
    assert!(
        r.stderr.contains("profile master-1, generation 1"),
        "{}",
        r.stderr
    );
    h.ok(&["switch", "--profile", "master-1"]);

    // The helper has nothing for the registry: anonymous, hence the 401 naming the file and
    // the helper that had none.
    pass.erase(&host);
    let h = puller();
    let r = run_with(
        &h,
        &["pull", &reference, "--ca-file", ca, "--authfile", authfile],
        &pass,
    );
    assert_refused(
        &r,
        &[
            &reference,
            "requires credentials",
            &format!(
                "(no credentials for `{host}` in `{authfile}`; `docker-credential-pass` (`credHelpers` of `{authfile}`) has none)"
            ),
            "Not authorized",
            &format!(
                "help: log in with `podman login {host}`, `skopeo login {host}` or `docker login {host}`, or name a credentials file with `--authfile`\n"
            ),
        ],
    );
    assert_eq!(store_objects(&h.sb.store), Default::default());

    // A helper that is not installed.
    let absent = h.sb.dir.join("absent.json");
    write_json(
        &absent,
        serde_json::json!({"credHelpers": {&host: "kbuild-absent"}}),
    );
    let absent = absent.to_str().unwrap();
    let r = h.run(&["pull", &reference, "--ca-file", ca, "--authfile", absent]);
    assert_refused(
        &r,
        &[&format!(
            "error: cannot pull `{reference}`\n  caused by: credential helper `docker-credential-kbuild-absent` (`credHelpers` of `{absent}`) for `{host}` is not installed\n"
        )],
    );
    assert!(
        r.stderr.contains(&format!(
            "help: install `docker-credential-kbuild-absent` on the PATH, or remove the `credHelpers` entry for `{host}` from `{absent}`"
        )),
        "{}",
        r.stderr
    );

    // A helper that fails (secretservice without a D-Bus session): its words are the cause.
    let failing = h.sb.dir.join("failing.json");
    write_json(&failing, serde_json::json!({"credsStore": "secretservice"}));
    let failing = failing.to_str().unwrap();
    let r = h.run(&["pull", &reference, "--ca-file", ca, "--authfile", failing]);
    assert_refused(
        &r,
        &[
            &format!(
                "error: cannot pull `{reference}`\n  caused by: credential helper `docker-credential-secretservice` (`credsStore` of `{failing}`) failed to give the credentials for `{host}`\n"
            ),
            "caused by: exit status: 1: ",
            "D-Bus",
            &format!(
                "help: check the helper with `echo {host} | docker-credential-secretservice get`"
            ),
        ],
    );
    assert_eq!(store_objects(&h.sb.store), Default::default());
}

/// Behind a token server, docker's `identitytoken` is exchanged for an access token with a
/// `POST` of `grant_type=refresh_token` (not sent to the registry as it is): push with it from
/// `auths`, pull with it from a helper (user `<token>`, docker's convention); a token the
/// server does not know is a 401 naming the reference and where the token came from. The
/// registry speaks HTTPS from the test's CA: the exchange's own requests trust `--ca-file`.
#[test]
fn an_identity_token_is_exchanged_at_the_token_realm() {
    let Some(Setup {
        reg,
        ca,
        host,
        reference,
        w,
    }) = setup(Options::TOKEN_TLS)
    else {
        return;
    };
    let ca = ca.as_str();
    let requests = || {
        reg.token_server
            .as_ref()
            .unwrap()
            .requests
            .lock()
            .unwrap()
            .clone()
    };

    let authfile = w.sb.dir.join("auth.json");
    write_json(
        &authfile,
        serde_json::json!({"auths": {&host: {"identitytoken": REFRESH_TOKEN}}}),
    );
    let authfile = authfile.to_str().unwrap();
    let r = push1(
        &w,
        &reference,
        &["--ca-file", ca, "--authfile", authfile],
        &[],
    );
    r.assert_success();
    assert_no_secret(&r);
    let asked = requests();
    assert!(
        asked.iter().any(|q| q.starts_with("POST /token ")
            && q.contains("grant_type=refresh_token")
            && q.contains("scope=repository%3Akbuild%2Fmaster%3Apull%2Cpush")),
        "{asked:?}"
    );

    // Pulled with the token from a helper, under docker's user `<token>`.
    let pass = PassStore::new();
    pass.store(&host, "<token>", REFRESH_TOKEN);
    let helper_file = w.sb.dir.join("helper.json");
    write_json(
        &helper_file,
        serde_json::json!({"credHelpers": {&host: "pass"}}),
    );
    let h = puller();
    let before = requests().len();
    run_with(
        &h,
        &[
            "pull",
            &reference,
            "--ca-file",
            ca,
            "--authfile",
            helper_file.to_str().unwrap(),
        ],
        &pass,
    )
    .assert_success();
    let asked = requests();
    assert!(
        asked[before..].iter().any(|q| q.starts_with("POST /token ")
            && q.contains("scope=repository%3Akbuild%2Fmaster%3Apull&")),
        "{asked:?}"
    );
    h.ok(&["switch", "--profile", "master-1"]);

    // An identity token the token server does not know.
    let wrong = w.sb.dir.join("wrong.json");
    write_json(
        &wrong,
        serde_json::json!({"auths": {&host: {"identitytoken": "not-the-token"}}}),
    );
    let wrong = wrong.to_str().unwrap();
    let h = puller();
    let r = h.run(&["pull", &reference, "--ca-file", ca, "--authfile", wrong]);
    assert_refused(
        &r,
        &[
            &format!(
                "error: cannot pull `{reference}`\n  caused by: pull: the registry refused the credentials for `{reference}` (identity token from `{wrong}`)"
            ),
            "caused by: the token server `http://127.0.0.1:",
            "/token` refused the identity token: 401 ",
        ],
    );
    assert!(!r.stderr.contains("not-the-token"), "{}", r.stderr);
    assert_eq!(store_objects(&h.sb.store), Default::default());
}

/// A credentials file of the wrong shape or not JSON at all is refused before any request,
/// naming the file, the JSON path and the position, with the shape expected; never a value of
/// it: serde's own message would quote the base64 `user:password` (review13 HIGH-6).
#[test]
fn a_malformed_credentials_file_is_refused_without_quoting_its_values() {
    let sb = Sandbox::new();
    // base64("kb:S3cretPW99"), given where an object is expected.
    let secret = "a2I6UzNjcmV0UFc5OQ==";
    let help = "help: fix or remove `$SANDBOX/auth.json`: it should look like `{\"auths\": {\"HOST\": {\"auth\": \"BASE64 of user:password\"}}}` (containers-auth.json(5))\n";
    let file = sb.dir.join("auth.json");
    let authfile = file.to_str().unwrap();
    for (text, cause) in [
        (
            format!(r#"{{"auths":{{"127.0.0.1:9":"{secret}"}}}}"#),
            "`auths.\"127.0.0.1:9\"` is a string, expected an object such as `{\"auth\": \"…\"}` (at line 1, column 46)",
        ),
        (
            format!(r#"{{"auths":"{secret}"}}"#),
            "`auths` is a string, expected an object of `\"HOST\": {…}` entries (at line 1, column 31)",
        ),
        (
            format!(r#"{{"auths":{{"127.0.0.1:9":{{"password":{{"p":"{secret}"}}}}}}}}"#),
            "`auths.\"127.0.0.1:9\".password` is an object, expected a string (at line 1, column 36)",
        ),
        (
            format!(r#"{{"auths":{{"127.0.0.1:9":{{"auth":"{secret}"}}"#),
            "it is not valid JSON (it ends early, at line 1, column 55)",
        ),
    ] {
        std::fs::write(&file, &text).unwrap();
        let r = sb.kbuild(&["pull", "127.0.0.1:9/k/m:t", "--authfile", authfile]);
        r.assert_error(&format!(
            "error: cannot pull `127.0.0.1:9/k/m:t`\n  caused by: cannot read credentials file `$SANDBOX/auth.json`\n  caused by: {cause}\n{help}"
        ));
        assert!(!r.stderr.contains(secret), "{}", r.stderr);
    }
}

/// A credential helper that never answers: after 2 s a status line says what kbuild waits
/// for, and at the limit (`KBUILD_CREDENTIAL_HELPER_TIMEOUT`, 60 s by default) it is killed,
/// with what it started, and the pull fails naming it (review13 MED-7).
#[test]
fn a_credential_helper_that_hangs_is_announced_then_killed_at_the_limit() {
    let sb = Sandbox::new();
    let bin = sb.dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-kbhang");
    let pids = sb.dir.join("pids");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nsleep 600 &\necho $! >> {0}\necho $$ >> {0}\nwait\n",
            pids.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = sb.dir.join("auth.json");
    std::fs::write(&file, r#"{"credHelpers":{"127.0.0.1:9":"kbhang"}}"#).unwrap();
    let mut c = sb.bare();
    c.env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("KBUILD_CREDENTIAL_HELPER_TIMEOUT", "3s")
        .args(["--store", sb.store.to_str().unwrap()])
        .args(["pull", "127.0.0.1:9/k/m:t", "--authfile"])
        .arg(&file);
    let r = sb.run(c);
    r.assert_error(
        "     Waiting for `docker-credential-kbhang` to answer for 127.0.0.1:9 (a passphrase prompt?); it is killed after 3s\nerror: cannot pull `127.0.0.1:9/k/m:t`\n  caused by: credential helper `docker-credential-kbhang` (`credHelpers` of `$SANDBOX/auth.json`) failed to give the credentials for `127.0.0.1:9`\n  caused by: no answer after 3s; killed (`KBUILD_CREDENTIAL_HELPER_TIMEOUT` sets the limit, e.g. `5m`)\nhelp: check the helper with `echo 127.0.0.1:9 | docker-credential-kbhang get`, or remove the `credHelpers` entry from `$SANDBOX/auth.json`\n",
    );
    // The helper and the `sleep` it started are gone (killed with their process group).
    assert_gone(&pids);

    // A SIGINT sent to kbuild alone (`timeout -s INT`, a service stop) kills them too.
    std::fs::remove_file(&pids).unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kbuild"))
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("HOME", &sb.home)
        .args(["--store", sb.store.to_str().unwrap()])
        .args(["pull", "127.0.0.1:9/k/m:t", "--authfile"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&pids).map_or(0, |p| p.lines().count()) < 2 {
        assert!(started.elapsed().as_secs() < 30, "the helper never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kbuild = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(kbuild, rustix::process::Signal::INT).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert_gone(&pids);
}

/// Every pid listed in `pids` is gone (or a zombie, dead and not yet reaped) within 30 s: a
/// SIGKILL is delivered asynchronously, so a loaded machine may show it dying for a while.
fn assert_gone(pids: &Path) {
    let pids = std::fs::read_to_string(pids).unwrap();
    assert_eq!(pids.lines().count(), 2, "{pids}");
    for pid in pids.lines() {
        let started = std::time::Instant::now();
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(
                started.elapsed().as_secs() < 30,
                "helper process {pid} still running: {stat}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
