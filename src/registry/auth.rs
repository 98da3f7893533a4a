//! Registry credentials, read from the files docker, podman and skopeo already use, in
//! containers-auth.json(5)'s order: `--authfile`, else `$REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`, else `~/.config/containers/auth.json`, else
//! `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`, see [`candidates`]). Each is
//! `{"auths": {"<host[:port]>": {"auth": "<base64 user:password>"}}}` (keys may also be
//! written `https://host/v1/` as old docker did), optionally with docker's
//! `"credHelpers": {"<host[:port]>": "<name>"}` and `"credsStore": "<name>"`, which name a
//! program `docker-credential-<name>` that keeps the secrets (the docker-credential-helpers
//! protocol: `get` with the server on stdin, `{"ServerURL","Username","Secret"}` on stdout).
//!
//! Within one file: the registry's `credHelpers` entry, else the most specific `auths` entry
//! that holds credentials, else the `credsStore`. Docker itself asks the `credsStore` before
//! `auths`, but `docker login` with a store leaves only an empty `{}` in `auths`, so an entry
//! with credentials beside a `credsStore` was written by podman, skopeo or a person, and
//! podman and skopeo (containers/image) read it and never run a `credsStore`. A helper that
//! has no credentials for the registry sends the search on to the next file, as
//! containers/image does. Credentials are used for the request only: they never enter the
//! store, a log or an error message.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::RegistryError;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// docker's `identitytoken` (or a helper's secret for the user `<token>`): an OAuth2
    /// refresh token, exchanged at the registry's token realm for an access token
    /// (`grant_type=refresh_token`, see `oauth`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A credential helper named by a credentials file: `docker-credential-<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Helper {
    /// The program run, `docker-credential-<name>`.
    pub program: String,
    /// `credHelpers` or `credsStore`: the field of `file` that names it.
    pub field: &'static str,
    /// The credentials file that names it.
    pub file: PathBuf,
}

impl std::fmt::Display for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` (`{}` of `{}`)",
            self.program,
            self.field,
            self.file.display()
        )
    }
}

/// The credentials found for a registry, and where they were looked for (for a 401 message).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub credentials: Credentials,
    /// The files consulted, in order; the last one is where the credentials came from when
    /// there are any.
    pub consulted: Vec<PathBuf>,
    /// Every file looked for, found or not.
    pub looked: Vec<PathBuf>,
    /// The helper that gave the credentials, if one did.
    pub helper: Option<Helper>,
    /// Helpers asked that had no credentials for the registry.
    pub empty_helpers: Vec<Helper>,
}

impl Resolved {
    /// "user `u` from `FILE`", "user `u` from `docker-credential-pass` (`credHelpers` of
    /// `FILE`)", or "no credentials for `HOST` in `A`, `B`" (naming the helpers that had
    /// none).
    pub fn describe(&self, registry: &str) -> String {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let from = || match &self.helper {
            Some(h) => h.to_string(),
            None => format!(
                "`{}`",
                self.consulted
                    .last()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        };
        match &self.credentials {
            Credentials::Anonymous if self.consulted.is_empty() => format!(
                "no credentials for `{registry}`: no credentials file found, looked for {}",
                list(&self.looked)
            ),
            Credentials::Anonymous => {
                let mut s = format!(
                    "no credentials for `{registry}` in {}",
                    list(&self.consulted)
                );
                for h in &self.empty_helpers {
                    s.push_str(&format!("; {h} has none"));
                }
                s
            }
            Credentials::Basic { username, .. } => format!("user `{username}` from {}", from()),
            Credentials::IdentityToken(_) => format!("identity token from {}", from()),
        }
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// What a credential helper answers to `get` (docker-credential-helpers' `Credentials`).
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The message a helper prints (on stdout, exiting non-zero) when it has nothing for the
/// server: docker-credential-helpers' `errCredentialsNotFoundMessage`.
const HELPER_NOT_FOUND: &str = "credentials not found in native keychain";

/// The user name under which a helper returns an identity token (docker's convention).
const TOKEN_USER: &str = "<token>";

/// How long a helper may run before a status line says kbuild waits for it.
const HELPER_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// The environment variable that sets how long a helper may run before it is killed
/// (a duration, `humantime` syntax: `90s`, `5m`); `HELPER_TIMEOUT` by default.
pub const HELPER_TIMEOUT_VAR: &str = "KBUILD_CREDENTIAL_HELPER_TIMEOUT";

/// How long a helper may run by default: long enough to type a passphrase.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn helper_timeout() -> std::time::Duration {
    std::env::var(HELPER_TIMEOUT_VAR)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .unwrap_or(HELPER_TIMEOUT)
}

/// The most of a helper's output quoted in an error.
const HELPER_OUTPUT_QUOTED: usize = 2000;

/// The credentials files to consult, in order: `explicit` alone when given, else the
/// environment's: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json` (containers-auth.json(5)), then
/// docker's `$DOCKER_CONFIG/config.json`, or `~/.docker/config.json` without `DOCKER_CONFIG`.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    candidates_in(explicit, |name| std::env::var_os(name))
}

/// [`candidates`] with the environment read through `var` (tests give their own).
fn candidates_in(
    explicit: Option<&Path>,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    let mut out = Vec::new();
    out.extend(var("REGISTRY_AUTH_FILE"));
    out.extend(var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    out.extend(
        var("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
    );
    out.extend(
        var("DOCKER_CONFIG")
            .or_else(|| home.as_ref().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json")),
    );
    out
}

/// Finds credentials for `repository` on `registry` (`host[:port]`), file by file (see the
/// module doc for the order within a file). In `auths` the most specific key wins, as
/// containers-auth.json(5) says (`reg/ns1/repo` over `reg/ns1` over `reg`; a key with a
/// scheme, docker's `https://reg/v1/`, names the whole registry). An `explicit` file must
/// exist; the others are skipped when absent.
///
/// Errors: a file that exists but cannot be read or parsed ([`RegistryError::AuthFile`]); a
/// helper that is not installed ([`RegistryError::HelperMissing`]) or fails, or answers
/// something else than credentials or "not found" ([`RegistryError::HelperFailed`]).
pub fn resolve(
    registry: &str,
    repository: &str,
    explicit: Option<&Path>,
    observer: &dyn crate::observe::Observer,
) -> Result<Resolved, RegistryError> {
    let mut resolved = Resolved {
        credentials: Credentials::Anonymous,
        consulted: Vec::new(),
        looked: candidates(explicit),
        helper: None,
        empty_helpers: Vec::new(),
    };
    for path in resolved.looked.clone() {
        let text = match fs_err::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => continue,
            Err(source) => return Err(RegistryError::AuthFile { path, source }),
        };
        resolved.consulted.push(path.clone());
        let bad = |why: String| RegistryError::AuthFile {
            path: path.clone(),
            source: std::io::Error::other(why),
        };
        let file = parse_auth_file(&text).map_err(bad)?;
        // The helper to ask, if the file names one before (credHelpers) or after (credsStore)
        // its `auths`.
        let helper_of = |field: &'static str, name: &str| -> Result<Helper, RegistryError> {
            if name.is_empty() || name.contains('/') {
                return Err(bad(format!(
                    "`{field}` names `{name}`, which is not a helper name (`docker-credential-NAME` is run)"
                )));
            }
            Ok(Helper {
                program: format!("docker-credential-{name}"),
                field,
                file: path.clone(),
            })
        };
        let helper = match file
            .cred_helpers
            .iter()
            .find(|(k, _)| host_of_key(k) == registry)
        {
            Some((_, name)) => Some(helper_of("credHelpers", name)?),
            None => match lookup(&file, registry, repository).map_err(bad)? {
                Some(c) => {
                    resolved.credentials = c;
                    return Ok(resolved);
                }
                None => file
                    .creds_store
                    .as_deref()
                    .map(|name| helper_of("credsStore", name))
                    .transpose()?,
            },
        };
        if let Some(helper) = helper {
            match ask_helper(&helper, registry, observer)? {
                Some(c) => {
                    resolved.credentials = c;
                    resolved.helper = Some(helper);
                    return Ok(resolved);
                }
                None => resolved.empty_helpers.push(helper),
            }
        }
    }
    Ok(resolved)
}

/// The `host[:port]` a `credHelpers` key names: docker writes host names, but older files
/// and hand-written ones hold `https://host/v1/`.
fn host_of_key(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// Runs `helper get` with `registry` on stdin, as docker and containers/image do (the server
/// as written by `docker login`/`podman login`: `host[:port]`, no scheme). `None` when the
/// helper has no credentials for it.
fn ask_helper(
    helper: &Helper,
    registry: &str,
    observer: &dyn crate::observe::Observer,
) -> Result<Option<Credentials>, RegistryError> {
    let failed = |why: String| RegistryError::HelperFailed {
        helper: helper.clone(),
        registry: registry.to_owned(),
        source: std::io::Error::other(why),
    };
    // Its own process group, killed on a timeout or an interrupt with what it started (as
    // health checks are): a SIGINT sent to kbuild alone would otherwise leave it running.
    let mut child = match Command::new(&helper.program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RegistryError::HelperMissing {
                helper: helper.clone(),
                registry: registry.to_owned(),
            });
        }
        Err(e) => return Err(failed(format!("cannot run it: {e}"))),
    };
    // A helper that exits without reading its stdin makes this write fail (EPIPE); its exit
    // status and output below say more than that.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let pid = child.id();
    crate::interrupt::track_group(pid);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let limit = helper_timeout();
    let started = std::time::Instant::now();
    let out = match rx.recv_timeout(HELPER_QUIET.min(limit)) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            observer.status(
                "Waiting",
                &format!(
                    "for `{}` to answer for {registry} (a passphrase prompt?); it is killed after {}",
                    helper.program,
                    humantime::format_duration(limit)
                ),
            );
            rx.recv_timeout(limit.saturating_sub(started.elapsed()))
        }
        answer => answer,
    };
    crate::interrupt::kill_group(pid);
    let out = match out {
        Ok(out) => out.map_err(|e| failed(format!("cannot run it: {e}")))?,
        Err(_) => {
            return Err(failed(format!(
                "no answer after {}; killed (`{HELPER_TIMEOUT_VAR}` sets the limit, e.g. `5m`)",
                humantime::format_duration(limit)
            )));
        }
    };
    if !out.status.success() {
        // On failure a helper prints its error message on stdout (and a tool it runs, such
        // as `pass` or `gpg`, may print on stderr); no secret is in either.
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.trim() == HELPER_NOT_FOUND {
            return Ok(None);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = [stdout.trim(), stderr.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        let mut said = said.join("\n");
        if said.len() > HELPER_OUTPUT_QUOTED {
            said.truncate(said.floor_char_boundary(HELPER_OUTPUT_QUOTED));
            said.push('…');
        }
        return Err(failed(if said.is_empty() {
            format!("{} with no message", out.status)
        } else {
            format!("{}: {said}", out.status)
        }));
    }
    // The answer holds the secret: serde's message for a malformed one would quote it, so
    // only its position is said.
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| {
        failed(format!(
            "its answer to `get` is not docker-credential-helpers' JSON `{{\"ServerURL\", \"Username\", \"Secret\"}}` (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    Ok(match (answer.username.as_str(), answer.secret) {
        (_, s) if s.is_empty() => None,
        (TOKEN_USER, s) => Some(Credentials::IdentityToken(s)),
        (u, s) => Some(Credentials::Basic {
            username: u.to_owned(),
            password: s,
        }),
    })
}

/// Parses a credentials file. serde's message for a value of the wrong type quotes the
/// value (`invalid type: string "a2I6…"`), and the values here are secrets, so no serde
/// message is passed on: a syntax error says its position, a shape error its position and
/// the JSON path with the kind found and the kind expected.
fn parse_auth_file(text: &[u8]) -> Result<AuthFile, String> {
    let e = match serde_json::from_slice::<AuthFile>(text) {
        Ok(file) => return Ok(file),
        Err(e) => e,
    };
    let at = format!("line {}, column {}", e.line(), e.column());
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => Err(format!("it is not valid JSON (syntax error at {at})")),
        Category::Eof => Err(format!("it is not valid JSON (it ends early, at {at})")),
        Category::Io => Err(format!("it cannot be read as JSON (at {at})")),
        Category::Data => {
            let what = serde_json::from_slice::<serde_json::Value>(text)
                .ok()
                .and_then(|v| shape_error(&v))
                .unwrap_or_else(|| "a value has the wrong type".to_owned());
            Err(format!("{what} (at {at})"))
        }
    }
}

/// The first place where `v` departs from a credentials file's shape, as the JSON path, the
/// kind found and the kind expected: never a value (they hold secrets).
fn shape_error(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let wrong = |path: String, v: &Value, expected: &str| {
        Some(format!("`{path}` is {}, expected {expected}", kind(v)))
    };
    let Value::Object(top) = v else {
        return wrong("(the whole file)".to_owned(), v, "an object");
    };
    if let Some(auths) = top.get("auths") {
        let Value::Object(auths) = auths else {
            return wrong(
                "auths".to_owned(),
                auths,
                "an object of `\"HOST\": {…}` entries",
            );
        };
        for (host, entry) in auths {
            let Value::Object(fields) = entry else {
                return wrong(
                    format!("auths.\"{host}\""),
                    entry,
                    "an object such as `{\"auth\": \"…\"}`",
                );
            };
            for name in ["auth", "username", "password", "identitytoken"] {
                match fields.get(name) {
                    None | Some(Value::String(_) | Value::Null) => {}
                    Some(other) => {
                        return wrong(format!("auths.\"{host}\".{name}"), other, "a string");
                    }
                }
            }
        }
    }
    if let Some(helpers) = top.get("credHelpers") {
        let Value::Object(helpers) = helpers else {
            return wrong(
                "credHelpers".to_owned(),
                helpers,
                "an object of `\"HOST\": \"NAME\"` entries",
            );
        };
        for (host, name) in helpers {
            if !name.is_string() {
                return wrong(format!("credHelpers.\"{host}\""), name, "a string");
            }
        }
    }
    match top.get("credsStore") {
        None | Some(Value::String(_) | Value::Null) => None,
        Some(other) => wrong("credsStore".to_owned(), other, "a string"),
    }
}

fn lookup(
    file: &AuthFile,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, String> {
    // How specific `key` is for `registry/repository` (the length of its path), if it applies.
    let specificity = |key: &str| -> Option<usize> {
        if let Some(rest) = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
        {
            let host = rest.split('/').next().unwrap_or(rest);
            return (host == registry).then_some(0);
        }
        let (host, path) = key.split_once('/').unwrap_or((key, ""));
        let path = path.trim_end_matches('/');
        let inside = path.is_empty()
            || repository == path
            || repository
                .strip_prefix(path)
                .is_some_and(|r| r.starts_with('/'));
        (host == registry && inside).then_some(path.len())
    };
    let Some((key, e)) = file
        .auths
        .iter()
        .filter_map(|(k, e)| specificity(k).map(|n| (n, k, e)))
        .max_by_key(|(n, _, _)| *n)
        .map(|(_, k, e)| (k, e))
    else {
        return Ok(None);
    };
    if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credentials::IdentityToken(token.clone())));
    }
    if let Some(auth) = e.auth.as_ref().filter(|a| !a.is_empty()) {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("`auths.\"{key}\".auth` is not base64"))?;
        let text = String::from_utf8(raw)
            .map_err(|_| format!("`auths.\"{key}\".auth` is not UTF-8 `user:password`"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| format!("`auths.\"{key}\".auth` is not `user:password`"))?;
        return Ok(Some(Credentials::Basic {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auths_entry_of_the_registry_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        // base64("kb:s3cret")
        std::fs::write(
            &path,
            r#"{"auths":{"other:5000":{"auth":"eDp5"},"https://127.0.0.1:5000/v1/":{"auth":"a2I6czNjcmV0"}}}"#,
        )
        .unwrap();
        let r = resolve(
            "127.0.0.1:5000",
            "kb/m",
            Some(&path),
            &crate::observe::Quiet,
        )
        .unwrap();
        assert_eq!(
            r.credentials,
            Credentials::Basic {
                username: "kb".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            r.describe("127.0.0.1:5000"),
            format!("user `kb` from `{}`", path.display())
        );
        assert!(!format!("{:?}", r.credentials).contains("s3cret"));
        let none = resolve("elsewhere", "kb/m", Some(&path), &crate::observe::Quiet).unwrap();
        assert_eq!(none.credentials, Credentials::Anonymous);
        assert!(
            none.describe("elsewhere")
                .contains(&path.display().to_string())
        );
    }

    /// containers-auth.json(5): the most specific key wins (review 11 finding 8: the first
    /// key of the registry in sorted order did, so `reg/a`'s credentials went to `reg/b/x`).
    #[test]
    fn the_most_specific_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        std::fs::write(
            &path,
            r#"{"auths":{
                "reg:5000/a":{"username":"a","password":"p"},
                "reg:5000/b":{"username":"b","password":"p"},
                "reg:5000/b/x":{"username":"bx","password":"p"},
                "reg:5000":{"username":"any","password":"p"}}}"#,
        )
        .unwrap();
        for (repository, user) in [
            ("b/y", "b"),
            ("b", "b"),
            ("b/x", "bx"),
            ("b/x/deeper", "bx"),
            ("a", "a"),
            ("ab/x", "any"),
            ("c", "any"),
        ] {
            let r = resolve("reg:5000", repository, Some(&path), &crate::observe::Quiet).unwrap();
            assert_eq!(
                r.credentials,
                Credentials::Basic {
                    username: user.into(),
                    password: "p".into()
                },
                "{repository}"
            );
        }
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_naming_it() {
        let err = resolve(
            "h",
            "r",
            Some(Path::new("/nonexistent/auth.json")),
            &crate::observe::Quiet,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/auth.json"), "{err}");
    }
    /// Within a file: an `auths` entry that holds credentials wins over the `credsStore`
    /// (which is not run: it does not exist here), an empty one (docker's placeholder) does
    /// not; a `credHelpers` entry wins over both, also when written as a URL.
    #[test]
    fn cred_helpers_then_auths_then_creds_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write(r#"{"auths":{"reg:5000":{"identitytoken":"t0k3n"}},"credsStore":"kbuild-absent"}"#);
        let r = resolve("reg:5000", "a/b", Some(&path), &crate::observe::Quiet).unwrap();
        assert_eq!(r.credentials, Credentials::IdentityToken("t0k3n".into()));
        assert_eq!(
            r.describe("reg:5000"),
            format!("identity token from `{}`", path.display())
        );
        assert!(!format!("{:?}", r.credentials).contains("t0k3n"));

        let missing = |field: &str| {
            let err = resolve("reg:5000", "a/b", Some(&path), &crate::observe::Quiet).unwrap_err();
            let RegistryError::HelperMissing { helper, registry } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(
                (helper.program.as_str(), helper.field, helper.file.as_path()),
                ("docker-credential-kbuild-absent", field, path.as_path())
            );
            assert_eq!(registry, "reg:5000");
            assert_eq!(
                err.help().unwrap(),
                format!(
                    "install `docker-credential-kbuild-absent` on the PATH, or remove the `{field}` entry for `reg:5000` from `{}`",
                    path.display()
                )
            );
        };
        write(r#"{"auths":{"reg:5000":{}},"credsStore":"kbuild-absent"}"#);
        missing("credsStore");
        write(
            r#"{"auths":{"reg:5000":{"auth":"a2I6czNjcmV0"}},"credHelpers":{"https://reg:5000/v1/":"kbuild-absent"}}"#,
        );
        missing("credHelpers");
        // Another registry's helper is not run.
        write(
            r#"{"auths":{"reg:5000":{"auth":"a2I6czNjcmV0"}},"credHelpers":{"other:5000":"kbuild-absent"}}"#,
        );
        assert_eq!(
            resolve("reg:5000", "a/b", Some(&path), &crate::observe::Quiet)
                .unwrap()
                .credentials,
            Credentials::Basic {
                username: "kb".into(),
                password: "s3cret".into()
            }
        );
    }

    /// A helper name is a suffix of a program name found on the PATH, never a path.
    #[test]
    fn a_helper_name_that_is_a_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg":"../../tmp/x"}}"#).unwrap();
        let err = resolve("reg", "a", Some(&path), &crate::observe::Quiet).unwrap_err();
        assert!(matches!(err, RegistryError::AuthFile { .. }), "{err:?}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            cause,
            "`credHelpers` names `../../tmp/x`, which is not a helper name (`docker-credential-NAME` is run)"
        );
    }
    /// containers-auth.json(5)'s files, then docker's, which `DOCKER_CONFIG` moves.
    #[test]
    fn the_files_looked_for_follow_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let paths = |v: Vec<PathBuf>| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            paths(candidates_in(None, env(&[("HOME", "/h")]))),
            ["/h/.config/containers/auth.json", "/h/.docker/config.json"]
        );
        assert_eq!(
            paths(candidates_in(
                None,
                env(&[
                    ("HOME", "/h"),
                    ("REGISTRY_AUTH_FILE", "/a.json"),
                    ("XDG_RUNTIME_DIR", "/run/user/7"),
                    ("XDG_CONFIG_HOME", "/cfg"),
                    ("DOCKER_CONFIG", "/d"),
                ])
            )),
            [
                "/a.json",
                "/run/user/7/containers/auth.json",
                "/cfg/containers/auth.json",
                "/d/config.json"
            ]
        );
        assert_eq!(
            paths(candidates_in(
                Some(Path::new("/x.json")),
                env(&[("HOME", "/h"), ("DOCKER_CONFIG", "/d")])
            )),
            ["/x.json"]
        );
        assert!(candidates_in(None, env(&[("HOME", "")])).is_empty());
    }
}
