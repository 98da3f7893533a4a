//! Sources of input bytes: `https://`, `http://` and `file://` URLs, yielding a plain reader.
//!
//! Mirrors, retries and hash checking live with the consumer (`unpack`), because a retry must
//! restart the whole single-pass pipeline, not just the socket.

use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

/// How often each URL is tried before moving to the next mirror.
pub const ATTEMPTS_PER_URL: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("`{url}`: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("`{url}`: {message}")]
    Transport {
        url: String,
        message: String,
        transient: bool,
    },
    #[error("`{url}`: cannot read `{}`", path.display())]
    File {
        url: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{url}` needs the network, and `--offline` was given")]
    Offline { url: String },
}

impl FetchError {
    /// Worth another try: connection trouble, 5xx, 408 and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            FetchError::Transport { transient, .. } => *transient,
            FetchError::File { .. } | FetchError::Offline { .. } => false,
        }
    }
}

/// A source opened for reading.
pub struct Opened {
    pub reader: Box<dyn Read + Send>,
    /// Total size, when the source knows it (file size, Content-Length).
    pub len: Option<u64>,
}

/// Checks that a URL is one kbuild can fetch; the message says what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "`{url}`: a file URL needs an absolute path (`file:///…`)"
            ));
        }
        return Ok(());
    }
    if url.starts_with('/') {
        return Err(format!(
            "`{url}` is a path, not a URL: write `file://{url}`"
        ));
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err(format!(
            "`{url}`: only https://, http:// and file:// URLs are supported"
        ));
    };
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` is not a valid URL"));
    }
    Ok(())
}

/// Whether fetching `url` touches the network.
pub fn is_network(url: &str) -> bool {
    !url.starts_with("file://")
}

/// Opens `url` for reading.
pub fn open(url: &str, offline: bool) -> Result<Opened, FetchError> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(percent_decode(path));
        let file = std::fs::File::open(&path).map_err(|source| FetchError::File {
            url: url.to_owned(),
            path: path.clone(),
            source,
        })?;
        let len = file.metadata().ok().map(|m| m.len());
        return Ok(Opened {
            reader: Box::new(file),
            len,
        });
    }
    if offline {
        return Err(FetchError::Offline {
            url: url.to_owned(),
        });
    }
    let stall = stall_timeout();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(stall))
        .timeout_recv_response(Some(stall))
        // Per read, not per body: a 350 MB download may take long, but never stall long.
        .timeout_per_read(Some(stall))
        // Redirects are followed here, not by ureq, so that one to `file://` (or any other
        // scheme) is refused instead of being taken for a relative path.
        .max_redirects(0)
        .user_agent(concat!("kbuild/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let resp = agent.get(&current).call().map_err(|e| match e {
            ureq::Error::StatusCode(status) => FetchError::Status {
                url: current.clone(),
                status,
            },
            ureq::Error::Timeout(_) => FetchError::Transport {
                url: current.clone(),
                transient: true,
                message: format!(
                    "no answer for {} s (KBUILD_HTTP_TIMEOUT sets the limit, in seconds)",
                    stall.as_secs()
                ),
            },
            other => FetchError::Transport {
                url: current.clone(),
                transient: matches!(
                    other,
                    ureq::Error::Io(_)
                        | ureq::Error::ConnectionFailed
                        | ureq::Error::HostNotFound
                        | ureq::Error::Protocol(_)
                ),
                message: other.to_string(),
            },
        })?;
        if resp.status().is_redirection() {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| FetchError::Transport {
                    url: current.clone(),
                    transient: false,
                    message: format!("redirect ({}) without a Location", resp.status()),
                })?;
            current =
                resolve_redirect(&current, location).map_err(|message| FetchError::Transport {
                    url: current.clone(),
                    transient: false,
                    message,
                })?;
            continue;
        }
        let len = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        return Ok(Opened {
            reader: Box::new(resp.into_body().into_reader()),
            len,
        });
    }
    Err(FetchError::Transport {
        url: url.to_owned(),
        transient: false,
        message: format!("more than {MAX_REDIRECTS} redirects (a redirect loop?)"),
    })
}

const MAX_REDIRECTS: usize = 10;

/// Resolves a `Location` against the URL that sent it; only http(s) targets are followed.
fn resolve_redirect(base: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(location.to_owned());
    }
    let (scheme, rest) = base.split_once("://").ok_or("bad base URL")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..authority_end]);
    if let Some(r) = location.strip_prefix("//") {
        return Ok(format!("{scheme}://{r}"));
    }
    // `file:…`, `ftp:…`: a scheme before any `/`, `?` or `#`.
    let first_sep = location.find(['/', '?', '#']).unwrap_or(location.len());
    if location[..first_sep].contains(':') {
        return Err(format!(
            "refusing to follow a redirect to `{location}`: only http:// and https:// are followed"
        ));
    }
    if location.starts_with('/') {
        return Ok(format!("{origin}{location}"));
    }
    let path = &rest[authority_end..];
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
    Ok(format!("{origin}{dir}/{location}"))
}

/// How long a connection may stay silent: `KBUILD_HTTP_TIMEOUT` seconds, default 30.
pub fn stall_timeout() -> Duration {
    let secs = std::env::var("KBUILD_HTTP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// Decodes `%XX` escapes in a file URL path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects() {
        let base = "http://127.0.0.1:8080/k/a.tar.gz";
        assert_eq!(
            resolve_redirect(base, "/m/b.tar.gz").unwrap(),
            "http://127.0.0.1:8080/m/b.tar.gz"
        );
        assert_eq!(
            resolve_redirect(base, "b.tar.gz").unwrap(),
            "http://127.0.0.1:8080/k/b.tar.gz"
        );
        assert_eq!(
            resolve_redirect(base, "https://m/x").unwrap(),
            "https://m/x"
        );
        assert_eq!(resolve_redirect(base, "//m/x").unwrap(), "http://m/x");
        assert!(resolve_redirect(base, "file:///etc/passwd").is_err());
        assert!(resolve_redirect(base, "ftp://m/x").is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://dl.k8s.io/v1.6.0/x.tar.gz").is_ok());
        assert!(check_url("file:///srv/mirror/x.tar.gz").is_ok());
        assert!(check_url("file://relative").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
        assert_eq!(percent_decode("/a%20b/c"), "/a b/c");
        assert_eq!(percent_decode("/a%2"), "/a%2");
    }
}
