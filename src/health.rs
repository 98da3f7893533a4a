//! Health checks: what a recipe's `[[health]]` entries become once rendered, how a generation
//! records them, and how one check is tried.
//!
//! A check belongs to a systemd unit and probes it in one of three ways: an HTTP(S) GET that
//! must answer an expected status (and optionally contain a body substring), a TCP connect,
//! or a command that must exit 0. An `https://` check may name host files (see
//! [`TlsFiles`]): the cluster's CA that verifies the server, and a client certificate and key;
//! only their paths are recorded, the files are read at each check. Its `timeout` is how long
//! kbuild keeps trying before the check fails, `interval` the pause between attempts, `settle`
//! how long its unit must stay `active` without a restart before the check counts (see
//! `crate::activate::health`, the gate that uses them).
//!
//! The build renders the recipe's values with the variables and records the result in the
//! rootfs's `kbuild.json` (`"health": [...]`, absent when no recipe declares a check, so
//! rootfs without checks keep their digest): `kbuild check` and a rollback read the checks
//! from the generation itself and need no recipes. The recipe format is in
//! `docs/recipes.md` ("Health checks").

use std::io::Read as _;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Defaults of a check's times when the recipe leaves them out.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// See [`DEFAULT_TIMEOUT`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// See [`DEFAULT_TIMEOUT`].
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// The most of an HTTP body or a command's output kept as a check's answer.
const ANSWER_BYTES: usize = 512;
/// The most of an HTTP body read to look for the expected substring.
const BODY_LIMIT: u64 = 1 << 20;

/// One health check of a generation, as recorded in its `kbuild.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The systemd unit the check belongs to (`kube-apiserver.service`).
    pub unit: String,
    /// How the unit is probed.
    pub probe: Probe,
    /// How long kbuild keeps trying before the check fails, in milliseconds.
    pub timeout_ms: u64,
    /// The pause between two attempts, in milliseconds.
    pub interval_ms: u64,
    /// How long the unit must stay `active` with `NRestarts` unchanged first, in milliseconds.
    pub settle_ms: u64,
}

/// How a check probes its unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Probe {
    /// `GET url` must answer `status` (redirects are not followed) and, when `body` is set,
    /// a body containing it. `tls`: the host's files an `https://` check uses (none: the
    /// public roots ureq carries verify the server, and no client certificate is sent).
    Http {
        url: String,
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(flatten)]
        tls: TlsFiles,
    },
    /// A TCP connection to `address` (`HOST:PORT`) must be accepted.
    Tcp { address: String },
    /// `argv` (run directly, no shell) must exit 0.
    Command { argv: Vec<String> },
}

impl Probe {
    /// The host files the probe reads at each check (an `https://` check's `ca`, `cert` and
    /// `key`); none for other probes.
    pub fn tls_paths(&self) -> impl Iterator<Item = &str> {
        match self {
            Probe::Http { tls, .. } => Some(tls.paths()),
            _ => None,
        }
        .into_iter()
        .flatten()
    }
}

/// The host files an `https://` check reads at each check, by absolute path: the cluster's
/// CA, and a client certificate with its key (etcd with client-certificate auth). Only the
/// paths are recorded (`"ca"`, `"cert"`, `"key"` beside the probe's `url`, each absent when
/// not set, so a check without them keeps its recorded form): the files are the host's, and
/// a key is a secret that never enters the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// PEM certificate(s) of the CA(s) that verify the server, instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// PEM client certificate (chain), sent when the server asks for one; set with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl TlsFiles {
    /// The paths that are set: `ca`, `cert`, `key`, in that order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .filter_map(|p| p.as_deref())
    }

    /// Whether none is set (the check uses the public roots and sends no certificate).
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// Reads the files into ureq's TLS configuration; `None` when none is set. Errors (the
    /// answer of a check that cannot be tried): a file that cannot be read, or that holds no
    /// PEM certificate (`ca`, `cert`) or private key (`key`), named by path and key.
    fn load(&self) -> Result<Option<ureq::tls::TlsConfig>, String> {
        use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
        if self.is_empty() {
            return Ok(None);
        }
        let items = |key: &str, path: &str| -> Result<Vec<PemItem<'static>>, String> {
            let bytes =
                fs_err::read(path).map_err(|e| format!("cannot read the `{key}` file: {e}"))?;
            ureq::tls::parse_pem(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the `{key}` file `{path}` is not valid PEM: {e}"))
        };
        let certs = |key: &str, path: &str| -> Result<Vec<Certificate<'static>>, String> {
            let certs: Vec<_> = items(key, path)?
                .into_iter()
                .filter_map(|i| match i {
                    PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "the `{key}` file `{path}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
                ));
            }
            Ok(certs)
        };
        let mut config = TlsConfig::builder();
        if let Some(ca) = &self.ca {
            config = config.root_certs(RootCerts::new_with_certs(&certs("ca", ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let chain = certs("cert", cert)?;
            let private = items("key", key)?
                .into_iter()
                .find_map(|i| match i {
                    PemItem::PrivateKey(k) => Some(k),
                    _ => None,
                })
                .ok_or_else(|| {
                    format!("the `key` file `{key}` holds no PEM private key (`-----BEGIN PRIVATE KEY-----`)")
                })?;
            config = config.client_cert(Some(ClientCert::new_with_certs(&chain, private)));
        }
        Ok(Some(config.build()))
    }
}

impl Check {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    /// What the check does, in one line: `GET http://127.0.0.1:8080/healthz → 200`.
    pub fn describe(&self) -> String {
        match &self.probe {
            Probe::Http {
                url,
                status,
                body,
                tls,
            } => {
                let mut line = format!("GET {url} → {status}");
                if let Some(b) = body {
                    line.push_str(&format!(", body contains {b:?}"));
                }
                if let Some(ca) = &tls.ca {
                    line.push_str(&format!(", CA {ca}"));
                }
                if let Some(cert) = &tls.cert {
                    line.push_str(&format!(", client certificate {cert}"));
                }
                line
            }
            Probe::Tcp { address } => format!("TCP connect {address}"),
            Probe::Command { argv } => {
                format!("command `{}` exits 0", crate::unit_name::shell_line(argv))
            }
        }
    }

    /// The times, as a plan shows them: `timeout 30s, interval 1s, settle 3s`.
    pub fn times(&self) -> String {
        let h = |d: Duration| humantime::format_duration(d).to_string();
        format!(
            "timeout {}, interval {}, settle {}",
            h(self.timeout()),
            h(self.interval()),
            h(self.settle())
        )
    }

    /// One attempt, given at most `limit`.
    pub fn attempt(&self, limit: Duration) -> Answer {
        match self.tls() {
            Ok(tls) => self.attempt_with(tls.as_ref(), limit),
            Err(text) => Answer::fail(text),
        }
    }

    /// The TLS configuration of an `https://` check with host files (see [`TlsFiles`]);
    /// `None` for any other. Errors: the answer saying which file is wrong, and how.
    fn tls(&self) -> Result<Option<ureq::tls::TlsConfig>, String> {
        match &self.probe {
            Probe::Http { tls, .. } => tls.load(),
            _ => Ok(None),
        }
    }

    fn attempt_with(&self, tls: Option<&ureq::tls::TlsConfig>, limit: Duration) -> Answer {
        let limit = limit.max(Duration::from_millis(1));
        match &self.probe {
            Probe::Http {
                url,
                status,
                body,
                tls: files,
            } => http(
                url,
                *status,
                body.as_deref(),
                files.ca.as_deref(),
                tls,
                limit,
            ),
            Probe::Tcp { address } => tcp(address, limit),
            Probe::Command { argv } => command(argv, limit),
        }
    }

    /// Tries the check until it passes or its timeout has gone by (each attempt bounded by
    /// the time left, `interval` between attempts). A check whose host files (`ca`, `cert`,
    /// `key`) are missing or not PEM fails at once: no retry can fix them, and a gate that
    /// waited out the timeout would only delay the rollback.
    pub fn run(&self) -> Outcome {
        let start = Instant::now();
        let tls = match self.tls() {
            Ok(t) => t,
            Err(answer) => {
                return Outcome {
                    passed: false,
                    answer,
                    attempts: 1,
                    elapsed: start.elapsed(),
                };
            }
        };
        let deadline = start + self.timeout();
        let mut attempts = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.attempt_with(tls.as_ref(), left);
            attempts += 1;
            let now = Instant::now();
            // A pause that reaches the deadline ends the check: an attempt started with no
            // time left could only answer that it had none, hiding the real last answer.
            if answer.passed || now + self.interval() >= deadline {
                if !answer.passed {
                    std::thread::sleep(deadline.saturating_duration_since(now));
                }
                return Outcome {
                    passed: answer.passed,
                    answer: answer.text,
                    attempts,
                    elapsed: start.elapsed(),
                };
            }
            std::thread::sleep(self.interval());
        }
    }
}

/// The result of one attempt: whether it passed, and what the probe saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub passed: bool,
    /// `HTTP 503: {"health":"false"}`, `connection refused`, `exit status: 1: …`.
    pub text: String,
}

impl Answer {
    fn fail(text: impl Into<String>) -> Answer {
        Answer {
            passed: false,
            text: text.into(),
        }
    }
}

/// The result of trying a check until it passed or timed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// The last attempt's answer.
    pub answer: String,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// `text` cut to [`ANSWER_BYTES`] on a character boundary, blanks at the ends trimmed.
fn clip(text: &str) -> String {
    let t = text.trim();
    if t.len() <= ANSWER_BYTES {
        return t.to_owned();
    }
    let mut end = ANSWER_BYTES;
    while !t.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &t[..end])
}

fn http(
    url: &str,
    expected: u16,
    body: Option<&str>,
    ca: Option<&str>,
    tls: Option<&ureq::tls::TlsConfig>,
    limit: Duration,
) -> Answer {
    let mut config = ureq::Agent::config_builder();
    if let Some(tls) = tls {
        config = config.tls_config(tls.clone());
    }
    let agent: ureq::Agent = config
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        // A health endpoint answers itself: a redirect is an answer, not a hop to follow,
        // and no proxy of the environment stands between kbuild and a local daemon.
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let mut response = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => {
            return Answer::fail(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            ));
        }
        Err(e) if let Some(why) = untrusted(&e) => {
            return Answer::fail(match ca {
                None => format!(
                    "{url}: the server's certificate is not trusted ({why}); set `ca = \"PATH\"` in the check's `[[health]]` entry to the PEM file of the CA that signed it (the cluster's, such as /etc/kubernetes/ssl/ca.pem)"
                ),
                Some(ca) => format!(
                    "{url}: the server's certificate is not signed by the CA in `{ca}` ({why}); set `ca` to the PEM file of the CA that signed it"
                ),
            });
        }
        // ureq words an I/O error `io: …`; the OS's words are the answer.
        Err(ureq::Error::Io(e)) => return Answer::fail(e.to_string()),
        Err(e) => return Answer::fail(e.to_string()),
    };
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_string()
        .unwrap_or_else(|e| format!("(body unreadable: {e})"));
    let passed = status == expected && body.is_none_or(|b| text.contains(b));
    let mut answer = format!("HTTP {status}");
    if !text.trim().is_empty() {
        answer.push_str(": ");
        answer.push_str(&clip(&text));
    }
    Answer {
        passed,
        text: answer,
    }
}

/// Why the server's certificate was refused, when that is what `e` is (rustls's words:
/// `invalid peer certificate: UnknownIssuer`); `None` for any other error.
fn untrusted(e: &ureq::Error) -> Option<String> {
    let tls = match e {
        ureq::Error::Rustls(r) => Some(r),
        // The handshake runs on the connection's first read or write: its error comes as I/O.
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls? {
        r @ rustls::Error::InvalidCertificate(_) => Some(r.to_string()),
        _ => None,
    }
}

fn tcp(address: &str, limit: Duration) -> Answer {
    let addrs = match address.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Answer::fail(format!("cannot resolve `{address}`: {e}")),
    };
    let mut last = format!("`{address}` resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, limit) {
            Ok(_) => {
                return Answer {
                    passed: true,
                    text: format!("connected to {a}"),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!(
                    "{a}: no answer within {}",
                    humantime::format_duration(limit)
                );
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Answer::fail(last)
}

fn command(argv: &[String], limit: Duration) -> Answer {
    let Some((program, args)) = argv.split_first() else {
        return Answer::fail("empty command");
    };
    // Its own process group, so that what it leaves behind (`daemon &`, a forking helper) can
    // be killed with it: otherwise such a child holds the output pipes open and the check
    // outlives its timeout, with the root's lock held.
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Answer::fail(format!("cannot run `{program}`: {e}")),
    };
    crate::interrupt::track_group(child.id());
    // Read both pipes while the command runs, so a chatty command cannot block on a full pipe.
    let reader = |p: Option<Box<dyn std::io::Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(p) = p {
                let _ = p.take(64 * 1024).read_to_end(&mut out);
            }
            let _ = tx.send(out);
        });
        rx
    };
    let pipes = [
        reader(child.stdout.take().map(|p| Box::new(p) as _)),
        reader(child.stderr.take().map(|p| Box::new(p) as _)),
    ];
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "still running after {}; killed",
                    humantime::format_duration(limit)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Err(e.to_string()),
        }
    };
    // The check is over: whatever it started goes with it. The group is the child's pid
    // (`process_group(0)`); it may be gone already (ESRCH), which is fine.
    crate::interrupt::kill_group(child.id());
    // A child that left the group (setsid) can still hold a pipe: its output is not waited
    // for beyond the attempt's deadline.
    let mut output = Vec::new();
    for rx in pipes {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        output.extend(rx.recv_timeout(wait).unwrap_or_default());
    }
    let output = String::from_utf8_lossy(&output).into_owned();
    match status {
        Ok(s) if s.success() => Answer {
            passed: true,
            text: clip(&format!("{s}: {output}"))
                .trim_end_matches(": ")
                .to_owned(),
        },
        Ok(s) => Answer::fail(clip(&format!("{s}: {output}")).trim_end_matches(": ")),
        Err(e) => Answer::fail(e),
    }
}

/// A generation's `kbuild.json` that cannot be read for its health checks.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read the manifest of rootfs `{}`", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the manifest `{}` is damaged: its health checks cannot be read", path.display())]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The health checks a rootfs records (its `kbuild.json`); none when it records none (a
/// rootfs without checks, or built before checks existed, or without a manifest at all).
/// Errors: the manifest exists and cannot be read or parsed (never read as "no checks": a
/// damaged generation would pass its gate unchecked).
pub fn of_rootfs(rootfs: &Path) -> Result<Vec<Check>, ManifestError> {
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(default)]
        health: Vec<Check>,
    }
    let path = rootfs.join("kbuild.json");
    let bytes = match fs_err::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ManifestError::Read { path, source }),
    };
    serde_json::from_slice::<Manifest>(&bytes)
        .map(|m| m.health)
        .map_err(|source| ManifestError::Parse { path, source })
}

/// Parses a recipe's duration (`"30s"`, `"500ms"`, `"2m"`; humantime's syntax).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| {
        format!(
            "`{s}` is not a duration ({e}); write a number and a unit, such as \"30s\" or \"500ms\""
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::TcpListener;

    fn check(probe: Probe, timeout_ms: u64) -> Check {
        Check {
            unit: "x.service".into(),
            probe,
            timeout_ms,
            interval_ms: 50,
            settle_ms: 0,
        }
    }

    /// A server on 127.0.0.1 that answers every connection with `response`, for `n`
    /// connections; its address.
    fn serve(response: &'static str, n: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(response.as_bytes());
            }
        });
        addr
    }

    /// An address on 127.0.0.1 where a connection is refused for as long as the value lives.
    ///
    /// The port is bound without `SO_REUSEADDR` and never listened on: the kernel answers a
    /// SYN with RST, and no other test can be given the port meanwhile. A port bound and then
    /// closed was not enough: a test running in parallel was given it and answered
    /// ("Connection reset by peer" instead of refused, seen in CI).
    struct ClosedPort(socket2::Socket);

    impl ClosedPort {
        fn new() -> Self {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
                .unwrap();
            ClosedPort(s)
        }

        fn addr(&self) -> String {
            self.0
                .local_addr()
                .unwrap()
                .as_socket()
                .unwrap()
                .to_string()
        }
    }

    fn http_check(addr: &str, status: u16, body: Option<&str>) -> Check {
        check(
            Probe::Http {
                url: format!("http://{addr}/health"),
                status,
                body: body.map(str::to_owned),
                tls: TlsFiles::default(),
            },
            2000,
        )
    }

    const OK: &str =
        "HTTP/1.1 200 OK\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"health\":\"true\"}";
    const UNAVAILABLE: &str = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"health\":\"false\"}";

    /// The limit of an attempt whose server answers at once: far above what it takes, so
    /// that a loaded machine slow to schedule the server's thread fails no test.
    const GENEROUS: Duration = Duration::from_secs(30);

    #[test]
    fn http_status_and_body() {
        let a = http_check(&serve(OK, 1), 200, Some("\"true\"")).attempt(GENEROUS);
        assert_eq!(
            a,
            Answer {
                passed: true,
                text: "HTTP 200: {\"health\":\"true\"}".into()
            }
        );
        let a = http_check(&serve(OK, 1), 200, Some("ok")).attempt(GENEROUS);
        assert!(!a.passed, "{a:?}");
        let a = http_check(&serve(UNAVAILABLE, 1), 200, None).attempt(GENEROUS);
        assert_eq!(
            a,
            Answer {
                passed: false,
                text: "HTTP 503: {\"health\":\"false\"}".into()
            }
        );
        // The expected status may be another one than 200.
        let a = http_check(&serve(UNAVAILABLE, 1), 503, None).attempt(GENEROUS);
        assert!(a.passed, "{a:?}");
    }

    #[test]
    fn http_refused_and_silent() {
        let closed = ClosedPort::new();
        let a = http_check(&closed.addr(), 200, None).attempt(GENEROUS);
        assert!(!a.passed);
        assert!(a.text.starts_with("Connection refused"), "{a:?}");
        // A server that accepts and never answers: the attempt ends at its limit (300 ms;
        // the bound only tells that from waiting for an answer that never comes, and is
        // generous for a loaded machine).
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let start = Instant::now();
        let a = http_check(&addr, 200, None).attempt(Duration::from_millis(300));
        assert!(!a.passed);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        drop(l);
    }

    #[test]
    fn run_retries_until_it_passes_and_gives_up_at_the_timeout() {
        // The first two connections get 503, the third 200.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for (i, s) in l.incoming().take(3).enumerate() {
                let mut s = s.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let r = if i < 2 { UNAVAILABLE } else { OK };
                let _ = s.write_all(r.as_bytes());
            }
        });
        // The timeout is far above the three answers' time: a loaded machine slow to
        // schedule the server must not end the check before its third answer.
        let mut c = http_check(&addr, 200, None);
        c.timeout_ms = 30_000;
        let o = c.run();
        assert!(o.passed, "{o:?}");
        assert_eq!(o.attempts, 3);

        // Refused at once, every 20 ms for a second: a second attempt comes unless the
        // thread is kept from running for the whole second. The upper bound only tells
        // giving up at the timeout from retrying forever.
        let closed = ClosedPort::new();
        let mut c = http_check(&closed.addr(), 200, None);
        c.timeout_ms = 1000;
        c.interval_ms = 20;
        let o = c.run();
        assert!(!o.passed);
        assert!(o.attempts >= 2, "{o:?}");
        assert!(o.elapsed >= Duration::from_millis(1000), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(10), "{o:?}");
        // The last answer is the probe's, never an attempt started with no time left.
        assert!(o.answer.contains("refused"), "{o:?}");
    }

    #[test]
    fn tcp_connect() {
        let closed = ClosedPort::new();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let a = check(
            Probe::Tcp {
                address: addr.clone(),
            },
            1000,
        )
        .attempt(Duration::from_secs(1));
        assert_eq!(a.text, format!("connected to {addr}"));
        assert!(a.passed);
        let a = check(
            Probe::Tcp {
                address: closed.addr(),
            },
            1000,
        )
        .attempt(Duration::from_secs(1));
        assert!(!a.passed);
        assert!(a.text.contains("refused"), "{a:?}");
        let a = check(
            Probe::Tcp {
                address: "no-port".into(),
            },
            1000,
        )
        .attempt(Duration::from_secs(1));
        assert!(a.text.starts_with("cannot resolve `no-port`"), "{a:?}");
    }

    #[test]
    fn command_exit_output_and_timeout() {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let a = check(
            Probe::Command {
                argv: argv(&["/bin/sh", "-c", "echo fine"]),
            },
            1000,
        )
        .attempt(GENEROUS);
        assert_eq!(
            a,
            Answer {
                passed: true,
                text: "exit status: 0: fine".into()
            }
        );
        let a = check(
            Probe::Command {
                argv: argv(&["/bin/sh", "-c", "echo broken >&2; exit 3"]),
            },
            1000,
        )
        .attempt(GENEROUS);
        assert_eq!(
            a,
            Answer {
                passed: false,
                text: "exit status: 3: broken".into()
            }
        );
        let start = Instant::now();
        let a = check(
            Probe::Command {
                argv: argv(&["/bin/sleep", "30"]),
            },
            1000,
        )
        .attempt(Duration::from_millis(200));
        assert_eq!(a.text, "still running after 200ms; killed");
        assert!(start.elapsed() < Duration::from_secs(5));
        // What the command leaves running is killed with it, not waited for (review 16):
        // were it not, its pipe would be read until the attempt's deadline, 30 s.
        let start = Instant::now();
        let a = check(
            Probe::Command {
                argv: argv(&["/bin/sh", "-c", "sleep 60 & echo hi"]),
            },
            1000,
        )
        .attempt(GENEROUS);
        assert_eq!(a.text, "exit status: 0: hi");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // One that left the group (setsid) is not waited for past the attempt's deadline
        // (2 s; waiting for it would take 60 s).
        let start = Instant::now();
        let a = check(
            Probe::Command {
                argv: argv(&["/bin/sh", "-c", "setsid sleep 60 & echo hi"]),
            },
            1000,
        )
        .attempt(Duration::from_secs(2));
        assert!(a.passed, "{a:?}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
        let a = check(
            Probe::Command {
                argv: argv(&["/nonexistent/probe"]),
            },
            1000,
        )
        .attempt(Duration::from_secs(1));
        assert!(
            a.text.starts_with("cannot run `/nonexistent/probe`"),
            "{a:?}"
        );
    }

    /// Makes, with the `openssl` CLI in `dir`: a CA (`ca.pem`), a server certificate it signs
    /// for 127.0.0.1 (`server.pem`, `server.key`), a client certificate it signs
    /// (`client.pem`, `client.key`) and another CA that signed neither (`other.pem`). `false`
    /// when openssl is missing here (allowed only outside CI and not as root).
    fn certificates(dir: &Path) -> bool {
        let openssl = |args: &[&str]| {
            let o = Command::new("openssl").args(args).current_dir(dir).output();
            match o {
                Ok(o) if o.status.success() => true,
                Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
                Err(e) => {
                    use std::os::unix::fs::MetadataExt as _;
                    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
                    assert!(
                        std::env::var_os("CI").is_none() && !root,
                        "openssl must be installed in CI and as root: {e}"
                    );
                    false
                }
            }
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for (name, subject) in [("ca", "/CN=kbuild test CA"), ("other", "/CN=another CA")] {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout", &key, "-out", &pem, "-days", "2", "-subj", subject,
            ]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            if !openssl(&args) {
                return false;
            }
        }
        for (name, usage) in [
            ("server", "serverAuth\nsubjectAltName=IP:127.0.0.1"),
            ("client", "clientAuth"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let mut args = vec!["req"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
            openssl(&args);
            std::fs::write(
                dir.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
                ),
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        true
    }

    /// A TLS server on 127.0.0.1 with `dir`'s server certificate, answering [`OK`] to `n`
    /// connections; with `clients`, it requires a client certificate signed by `dir`'s CA.
    /// Its address.
    fn serve_tls(dir: &Path, clients: bool, n: usize) -> String {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if clients {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        let config = std::sync::Arc::new(builder.with_single_cert(chain, key).unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming().take(n) {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, s.unwrap());
                let mut buf = [0u8; 4096];
                // A client that refuses the certificate ends the handshake here.
                if tls.read(&mut buf).is_ok() {
                    let _ = tls.write_all(OK.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                }
            }
        });
        addr
    }

    fn https_check(addr: &str, tls: TlsFiles) -> Check {
        check(
            Probe::Http {
                url: format!("https://{addr}/healthz"),
                status: 200,
                body: None,
                tls,
            },
            2000,
        )
    }

    /// Issue 12 follow-up: an `https://` check verified only against the public roots, so a
    /// server of the cluster's own CA (kube-apiserver, etcd) could never pass. With `ca` it
    /// passes; without, or with another CA, the answer names the URL and says to set `ca`.
    #[test]
    fn https_against_a_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        if !certificates(dir.path()) {
            return;
        }
        let file = |n: &str| Some(dir.path().join(n).display().to_string());
        let with_ca = |n: &str| TlsFiles {
            ca: file(n),
            ..TlsFiles::default()
        };
        let addr = serve_tls(dir.path(), false, 3);
        let url = format!("https://{addr}/healthz");
        let a = https_check(&addr, with_ca("ca.pem")).attempt(GENEROUS);
        assert_eq!(
            a,
            Answer {
                passed: true,
                text: "HTTP 200: {\"health\":\"true\"}".into()
            }
        );
        let a = https_check(&addr, TlsFiles::default()).attempt(GENEROUS);
        assert_eq!(
            a,
            Answer::fail(format!(
                "{url}: the server's certificate is not trusted (invalid peer certificate: UnknownIssuer); set `ca = \"PATH\"` in the check's `[[health]]` entry to the PEM file of the CA that signed it (the cluster's, such as /etc/kubernetes/ssl/ca.pem)"
            ))
        );
        let other = file("other.pem").unwrap();
        let a = https_check(&addr, with_ca("other.pem")).attempt(GENEROUS);
        assert_eq!(
            a,
            Answer::fail(format!(
                "{url}: the server's certificate is not signed by the CA in `{other}` (invalid peer certificate: UnknownIssuer); set `ca` to the PEM file of the CA that signed it"
            ))
        );
    }

    #[test]
    fn https_with_a_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        if !certificates(dir.path()) {
            return;
        }
        let file = |n: &str| Some(dir.path().join(n).display().to_string());
        let addr = serve_tls(dir.path(), true, 2);
        let mut c = https_check(
            &addr,
            TlsFiles {
                ca: file("ca.pem"),
                cert: file("client.pem"),
                key: file("client.key"),
            },
        );
        let a = c.attempt(GENEROUS);
        assert!(a.passed, "{a:?}");
        // Without it, the server refuses the connection.
        if let Probe::Http { tls, .. } = &mut c.probe {
            (tls.cert, tls.key) = (None, None);
        }
        let a = c.attempt(GENEROUS);
        assert!(!a.passed, "{a:?}");
    }

    /// A CA file that is missing or not PEM fails the check at once, naming the file.
    #[test]
    fn a_missing_or_bad_ca_file_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ca.pem").display().to_string();
        let mut c = https_check(
            "127.0.0.1:1",
            TlsFiles {
                ca: Some(missing.clone()),
                ..TlsFiles::default()
            },
        );
        c.timeout_ms = 60_000;
        let o = c.run();
        let answer = format!(
            "cannot read the `ca` file: failed to open file `{missing}`: No such file or directory (os error 2)"
        );
        assert_eq!((o.passed, o.attempts, &o.answer), (false, 1, &answer));
        // As the gate's failure says it (the `caused by:` line of its error).
        let failure = crate::activate::health::Failure::Check {
            check: c.clone(),
            outcome: o,
        };
        assert_eq!(
            failure.to_string(),
            format!(
                "health check of `x.service` failed: GET https://127.0.0.1:1/healthz → 200, CA {missing} could not be tried: {answer}"
            )
        );
        std::fs::write(&missing, "not a certificate\n").unwrap();
        let o = c.run();
        assert_eq!(
            o.answer,
            format!(
                "the `ca` file `{missing}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
            )
        );
        let key = dir.path().join("k.pem").display().to_string();
        std::fs::write(
            &key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        if let Probe::Http { tls, .. } = &mut c.probe {
            *tls = TlsFiles {
                ca: None,
                cert: Some(key.clone()),
                key: Some(key.clone()),
            };
        }
        assert_eq!(
            c.run().answer,
            format!(
                "the `key` file `{key}` holds no PEM private key (`-----BEGIN PRIVATE KEY-----`)"
            )
        );
    }

    #[test]
    fn recorded_form() {
        let c = Check {
            unit: "kube-apiserver.service".into(),
            probe: Probe::Http {
                url: "http://10.0.0.1:8080/healthz".into(),
                status: 200,
                body: None,
                tls: TlsFiles::default(),
            },
            timeout_ms: 60000,
            interval_ms: 1000,
            settle_ms: 3000,
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"unit":"kube-apiserver.service","probe":{"kind":"http","url":"http://10.0.0.1:8080/healthz","status":200},"timeout_ms":60000,"interval_ms":1000,"settle_ms":3000}"#
        );
        assert_eq!(
            c.describe(),
            "GET http://10.0.0.1:8080/healthz → 200".to_owned()
        );
        assert_eq!(c.times(), "timeout 1m, interval 1s, settle 3s");
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5").unwrap_err().contains("not a duration"));
    }
}
