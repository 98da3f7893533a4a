//! Registry credentials, read from the files docker, podman and skopeo already use, in
//! containers-auth.json(5)'s order: `--authfile`, else `$REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`, else `~/.docker/config.json`. Each is
//! `{"auths": {"<host[:port]>": {"auth": "<base64 user:password>"}}}` (keys may also be
//! written `https://host/v1/` as old docker did). Credentials are used for the request only:
//! they never enter the store or an error message.

use std::path::{Path, PathBuf};

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
    /// An identity token (docker's `identitytoken`), sent as a bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
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
}

impl Resolved {
    /// "credentials of `user` from `FILE`" / "no credentials for HOST in `A`, `B`".
    pub fn describe(&self, registry: &str) -> String {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.credentials {
            Credentials::Anonymous if self.consulted.is_empty() => format!(
                "no credentials for `{registry}`: no credentials file found, looked for {}",
                list(&self.looked)
            ),
            Credentials::Anonymous => format!(
                "no credentials for `{registry}` in {}",
                list(&self.consulted)
            ),
            Credentials::Basic { username, .. } => format!(
                "user `{username}` from `{}`",
                self.consulted
                    .last()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Credentials::Bearer(_) => format!(
                "identity token from `{}`",
                self.consulted
                    .last()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
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

/// The credentials files to consult, in order: `explicit` alone when given, else the
/// environment's.
pub fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(d).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(h).join(".docker/config.json"));
    }
    out
}

/// Finds credentials for `repository` on `registry` (`host[:port]`): in each file the most
/// specific `auths` key wins, as containers-auth.json(5) says (`reg/ns1/repo` over `reg/ns1`
/// over `reg`; a key with a scheme, docker's `https://reg/v1/`, names the whole registry). An
/// `explicit` file must exist; the others are skipped when absent. A file that exists but cannot be read or parsed is an
/// error naming it.
pub fn resolve(
    registry: &str,
    repository: &str,
    explicit: Option<&Path>,
) -> Result<Resolved, RegistryError> {
    let mut consulted = Vec::new();
    let looked = candidates(explicit);
    for path in looked.clone() {
        let text = match fs_err::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => continue,
            Err(source) => return Err(RegistryError::AuthFile { path, source }),
        };
        consulted.push(path.clone());
        let file: AuthFile =
            serde_json::from_slice(&text).map_err(|e| RegistryError::AuthFile {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        if let Some(c) =
            lookup(&file, registry, repository).map_err(|why| RegistryError::AuthFile {
                path: path.clone(),
                source: std::io::Error::other(why),
            })?
        {
            return Ok(Resolved {
                credentials: c,
                consulted,
                looked,
            });
        }
    }
    Ok(Resolved {
        credentials: Credentials::Anonymous,
        consulted,
        looked,
    })
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
        return Ok(Some(Credentials::Bearer(token.clone())));
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
        let r = resolve("127.0.0.1:5000", "kb/m", Some(&path)).unwrap();
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
        let none = resolve("elsewhere", "kb/m", Some(&path)).unwrap();
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
            let r = resolve("reg:5000", repository, Some(&path)).unwrap();
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
        let err = resolve("h", "r", Some(Path::new("/nonexistent/auth.json"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/auth.json"), "{err}");
    }
}
