//! A real OCI registry for the push/pull tests: Debian's `docker-registry` (CNCF distribution
//! 2.8) started on 127.0.0.1 with a temp config and storage directory, optionally behind
//! htpasswd (basic) auth and/or TLS from a CA made here with the `openssl` CLI; a TCP proxy
//! that counts the bytes each way and can cut every connection after a byte budget (a
//! registry that dies mid-transfer, deterministically); `skopeo` with the matching flags;
//! writers for the credential files docker, podman and skopeo read; and the hosts the tests
//! play (a builder of master-1, a puller that never built) with what most tests start from,
//! generation 1 pushed ([`pushed_gen1`]).
//!
//! Facts this relies on (checked against distribution 2.8.2 and skopeo 1.9.3 on Debian 12):
//! the registry runs as any user without systemd (`docker-registry serve CONFIG`); it stores
//! every blob, manifests included, as `docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`
//! below its root directory and serves those bytes as they are on disk (so flipping a byte
//! there makes it serve a blob that does not match its digest); it builds upload `Location`
//! URLs from the request's `Host`, so a client talking through the proxy keeps talking to it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Run;
use super::world::{Gen, World};

/// The user and password of the registries started with auth.
pub const USER: &str = "kbuild-ci";
pub const PASSWORD: &str = "hunter2-not-a-secret";

/// Why registry tests cannot run here, if they cannot: a missing tool. Tests call
/// [`skip`], which turns this into a failure under CI or as root.
pub fn unavailable() -> Option<String> {
    for (tool, package) in [
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("htpasswd", "apache2-utils"),
        ("openssl", "openssl"),
    ] {
        if !super::container::on_path(tool) {
            return Some(format!(
                "`{tool}` is not installed (apt-get install {package})"
            ));
        }
    }
    None
}

/// `true` when the test must return early: the tools are missing, and we are neither in CI nor
/// root (where they must be installed: `.ci/run` installs them).
pub fn skip() -> bool {
    let Some(why) = unavailable() else {
        return false;
    };
    use std::os::unix::fs::MetadataExt as _;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    assert!(
        std::env::var_os("CI").is_none() && !root,
        "the registry tests must run in CI and as root, but: {why}"
    );
    eprintln!("skipped: no registry here: {why}");
    true
}

/// A header every answer of a [`Registry`] carries (distribution's `http.headers`), naming
/// which one it is: tests run in parallel, and two may be given the same free port.
const IDENTITY_HEADER: &str = "X-Kbuild-Test-Registry";

/// How a [`Registry`] is started.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// htpasswd (HTTP basic) auth with [`USER`] / [`PASSWORD`].
    pub auth: bool,
    /// HTTPS with a server certificate (SAN `IP:127.0.0.1`) from a CA made for this registry.
    pub tls: bool,
    /// Bearer-token auth: the registry sends clients to a [`TokenServer`] (plain HTTP on
    /// 127.0.0.1) that gives a signed token for [`USER`] / [`PASSWORD`] (instead of `auth`).
    pub token: bool,
}

impl Options {
    /// Plain HTTP, no auth.
    pub const PLAIN: Options = Options {
        auth: false,
        tls: false,
        token: false,
    };
    /// HTTPS, no auth.
    pub const TLS: Options = Options {
        tls: true,
        ..Options::PLAIN
    };
    /// HTTPS with htpasswd auth.
    pub const AUTH_TLS: Options = Options {
        auth: true,
        ..Options::TLS
    };
    /// Plain HTTP with bearer tokens.
    pub const TOKEN: Options = Options {
        token: true,
        ..Options::PLAIN
    };
    /// HTTPS with bearer tokens.
    pub const TOKEN_TLS: Options = Options {
        tls: true,
        ..Options::TOKEN
    };
}

/// A running `docker-registry`; killed (only this process) when dropped.
pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub options: Options,
    child: Option<Child>,
    /// The token server, with [`Options::token`].
    pub token_server: Option<TokenServer>,
}

impl Registry {
    /// Plain HTTP, no auth.
    pub fn start() -> Registry {
        Registry::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("kbuild-registry-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("storage")).unwrap();
        if options.tls {
            make_certificates(dir.path());
        }
        if options.auth {
            let out = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
            std::fs::write(dir.path().join("htpasswd"), out).unwrap();
        }
        // A free port, then the registry on it; another process may take it in between, so
        // a failed start is retried on a new port. What answers on the port is known to be
        // this registry by a header only it sends (see `try_start`).
        let token_server = options.token.then(|| TokenServer::start(dir.path()));
        let mut r = Registry {
            dir,
            port: 0,
            options,
            child: None,
            token_server,
        };
        for _ in 0..5 {
            r.port = free_port();
            if r.try_start() {
                return r;
            }
        }
        panic!("docker-registry did not start on any of 5 free ports");
    }

    /// Writes the config and starts the registry; `false` when it exits before answering.
    fn try_start(&mut self) -> bool {
        let d = self.dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: 127.0.0.1:{}\n  secret: kbuild-test-secret\n  headers:\n    {IDENTITY_HEADER}: [\"{}\"]\n",
            d.join("storage").display(),
            self.port,
            self.identity()
        );
        if self.options.tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("server.pem").display(),
                d.join("server.key").display()
            ));
        }
        if self.options.auth {
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kbuild-test\n    path: {}\n",
                d.join("htpasswd").display()
            ));
        }
        if let Some(t) = &self.token_server {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                t.realm(),
                d.join("token.pem").display()
            ));
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!(
                    "docker-registry exited ({status}) on port {}:\n{}",
                    self.port,
                    self.log()
                );
                self.child = None;
                return false;
            }
            // `/v2/` answers 200, or 401 with auth: either way the registry serves. Only if it
            // is this one: a registry another test started on the same free port answers too,
            // until this one fails to bind it and exits.
            if let Some((code, identity)) = self.probe("/v2/")
                && identity.as_deref() == Some(self.identity().as_str())
                && (code == 200 || (self.authenticates() && code == 401))
            {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on /v2/ in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of [`IDENTITY_HEADER`] in this registry's answers: its temp dir, unique
    /// among the registries running on this machine.
    fn identity(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// `GET base+path` with this registry's credentials: the status and the
    /// [`IDENTITY_HEADER`] of the answer, `None` when nothing answers.
    fn probe(&self, path: &str) -> Option<(u16, Option<String>)> {
        let mut req = self.agent().get(format!("{}{path}", self.base()));
        if let Some(h) = self.authorization("registry:catalog:*") {
            req = req.header("Authorization", h);
        }
        let resp = req.call().ok()?;
        let identity = resp
            .headers()
            .get(IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Some((resp.status().as_u16(), identity))
    }

    /// Whether clients must authenticate (basic or bearer token).
    pub fn authenticates(&self) -> bool {
        self.options.auth || self.options.token
    }

    /// The registry's own log (warnings and errors only).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`, the host part of a reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http(s)://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// `127.0.0.1:PORT/REPOSITORY[:TAG]` (`tag` may also be `@sha256:…`).
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        match tag {
            "" => format!("{}/{repository}", self.host()),
            t if t.starts_with('@') => format!("{}/{repository}{t}", self.host()),
            t => format!("{}/{repository}:{t}", self.host()),
        }
    }

    /// The CA certificate (PEM) that signed the server's, when TLS is on.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.options.tls);
        self.dir.path().join("ca.pem")
    }

    /// A directory holding `ca.crt` (the docker `certs.d` form skopeo's `--cert-dir` reads).
    pub fn cert_dir(&self) -> PathBuf {
        assert!(self.options.tls);
        self.dir.path().join("certs.d")
    }

    /// Stops the registry (kills this process and waits for it). Its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same storage, and the same port (so a [`Proxy`] in front of it
    /// keeps working) unless another test was given that port meanwhile: then on a new one.
    pub fn restart(&mut self) {
        self.stop();
        if self.try_start() {
            return;
        }
        for _ in 0..5 {
            self.port = free_port();
            if self.try_start() {
                return;
            }
        }
        panic!("docker-registry did not restart");
    }

    /// A plain HTTP/HTTPS agent that trusts this registry's CA and reports every status.
    pub fn agent(&self) -> ureq::Agent {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)));
        if self.options.tls {
            let pem = std::fs::read(self.dir.path().join("ca.pem")).unwrap();
            let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        config.build().into()
    }

    /// The `Authorization` header for `scope`: basic, or a bearer token from the token server.
    fn authorization(&self, scope: &str) -> Option<String> {
        if self.options.auth {
            return Some(basic_header());
        }
        let t = self.token_server.as_ref()?;
        Some(format!("Bearer {}", t.token(&[scope])))
    }

    /// `GET base+path` with this registry's credentials; the status, `None` when nothing
    /// answers.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        self.probe(path).map(|(code, _)| code)
    }

    /// `GET` of a manifest (OCI and docker media types accepted); its bytes.
    pub fn manifest(&self, repository: &str, reference: &str) -> Vec<u8> {
        let mut req = self
            .agent()
            .get(format!(
                "{}/v2/{repository}/manifests/{reference}",
                self.base()
            ))
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            );
        if let Some(h) = self.authorization(&format!("repository:{repository}:pull")) {
            req = req.header("Authorization", h);
        }
        let mut resp = req.call().unwrap();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_vec().unwrap();
        assert_eq!(
            status,
            200,
            "GET manifest {repository}:{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Uploads `bytes` as a blob of `repository` (monolithic: `POST` then `PUT ?digest=`),
    /// as a hostile or hand-rolled client would; its digest. Plain HTTP without auth only.
    pub fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        assert!(!self.authenticates() && !self.options.tls);
        let digest = format!("sha256:{}", super::sha256_hex(bytes));
        let resp = self
            .agent()
            .post(format!("{}/v2/{repository}/blobs/uploads/", self.base()))
            .send_empty()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202, "POST blob upload");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base())
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .agent()
            .put(format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(bytes)
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "PUT blob {digest}");
        digest
    }

    /// Puts `bytes` as the OCI image manifest `repository:tag`; its digest.
    pub fn put_manifest(&self, repository: &str, tag: &str, bytes: &[u8]) -> String {
        assert!(!self.authenticates() && !self.options.tls);
        let mut resp = self
            .agent()
            .put(format!("{}/v2/{repository}/manifests/{tag}", self.base()))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .send(bytes)
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 201, "PUT manifest {repository}:{tag}: {body}");
        format!("sha256:{}", super::sha256_hex(bytes))
    }

    /// The bytes of blob `digest` of `repository`, as the registry serves them.
    pub fn blob(&self, repository: &str, digest: &str) -> Vec<u8> {
        assert!(!self.authenticates());
        let mut resp = self
            .agent()
            .get(format!("{}/v2/{repository}/blobs/{digest}", self.base()))
            .call()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "GET blob {digest}");
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap()
    }

    /// The directory holding every blob's `data` file.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
    }

    /// Every blob the registry stores (`sha256:HEX` → size in bytes), manifests included.
    pub fn blobs(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Ok(prefixes) = std::fs::read_dir(self.blobs_dir()) else {
            return out;
        };
        for p in prefixes {
            for b in std::fs::read_dir(p.unwrap().path()).unwrap() {
                let b = b.unwrap();
                let data = b.path().join("data");
                if let Ok(m) = std::fs::metadata(&data) {
                    let hex = b.file_name().into_string().unwrap();
                    out.insert(format!("sha256:{hex}"), m.len());
                }
            }
        }
        out
    }

    /// The `data` file of blob `digest` (`sha256:HEX`) in the registry's storage.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.blobs_dir().join(&hex[..2]).join(hex).join("data")
    }

    /// Flips one bit of blob `digest` in storage, keeping its size: the registry then serves
    /// bytes that do not match the digest it serves them under.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
    }

    /// `skopeo` with a clean environment (HOME in the registry's temp dir, so no credential
    /// file of the machine is read) and `--policy` accepting anything (tests copy unsigned
    /// artifacts; the machine may have no `/etc/containers/policy.json`).
    pub fn skopeo(&self, args: &[&str]) -> std::process::Output {
        let home = self.dir.path().join("skopeo-home");
        std::fs::create_dir_all(&home).unwrap();
        let policy = self.dir.path().join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        let (sub, rest) = args.split_first().expect("a skopeo subcommand");
        Command::new("skopeo")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &home)
            .arg("--policy")
            .arg(&policy)
            .arg(sub)
            .args(rest)
            .output()
            .unwrap()
    }

    /// `skopeo ARGS`, which must succeed; its stdout.
    #[track_caller]
    pub fn skopeo_ok(&self, args: &[&str]) -> String {
        let out = self.skopeo(args);
        assert!(
            out.status.success(),
            "skopeo {args:?} failed ({}):\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// skopeo's options to read from this registry as a source (`inspect`, or `copy --src-…`
    /// with `prefix` `"src-"`; `"dest-"` for a destination): credentials and TLS.
    pub fn skopeo_flags(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.authenticates() {
            let auth = self.dir.path().join("skopeo-auth.json");
            write_auth_file(&auth, &[(&self.host(), USER, PASSWORD)]);
            out.push(format!("--{prefix}authfile={}", auth.display()));
        }
        if self.options.tls {
            out.push(format!("--{prefix}cert-dir={}", self.cert_dir().display()));
        } else {
            out.push(format!("--{prefix}tls-verify=false"));
        }
        out
    }

    /// `skopeo inspect --raw docker://REF` (REF relative to this registry): the manifest bytes.
    pub fn skopeo_inspect_raw(&self, repository_and_tag: &str) -> String {
        let target = format!("docker://{}/{repository_and_tag}", self.host());
        let mut args: Vec<String> = vec!["inspect".into(), "--raw".into()];
        args.extend(self.skopeo_flags(""));
        args.push(target);
        self.skopeo_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `skopeo copy` between `from` and `to` (`docker://…` on this registry or `oci:DIR:TAG`),
    /// with this registry's flags on whichever side is a registry.
    pub fn skopeo_copy(&self, from: &str, to: &str) -> String {
        let mut args: Vec<String> = vec!["copy".into(), "--quiet".into()];
        if from.starts_with("docker://") {
            args.extend(self.skopeo_flags("src-"));
        }
        if to.starts_with("docker://") {
            args.extend(self.skopeo_flags("dest-"));
        }
        args.push(from.into());
        args.push(to.into());
        self.skopeo_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on right now (anyone may take it the next moment: see
/// [`Registry::start_with`]).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[track_caller]
fn run_ok(c: &mut Command) -> Vec<u8> {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A CA (`ca.pem`, `ca.key`) and a server certificate it signed for `IP:127.0.0.1`
/// (`server.pem`, `server.key`), EC P-256, valid two days; and `certs.d/ca.crt` for skopeo.
fn make_certificates(dir: &Path) {
    let p = |name: &str| dir.join(name).display().to_string();
    run_ok(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=kbuild test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]));
    run_ok(Command::new("openssl").args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
        "-subj",
        "/CN=127.0.0.1",
    ]));
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run_ok(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &p("server.pem"),
        "-days",
        "2",
        "-extfile",
        &p("server.ext"),
    ]));
    std::fs::create_dir(dir.join("certs.d")).unwrap();
    std::fs::copy(dir.join("ca.pem"), dir.join("certs.d/ca.crt")).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Credential files
// ---------------------------------------------------------------------------------------------

/// `Basic base64(USER:PASSWORD)`
pub fn basic_header() -> String {
    format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()))
}

/// Writes a credential file in the form `~/.docker/config.json`, `REGISTRY_AUTH_FILE` and
/// `$XDG_RUNTIME_DIR/containers/auth.json` share: `{"auths": {"HOST": {"auth":
/// base64("USER:PASSWORD")}}}`, one entry per `(host, user, password)`.
pub fn write_auth_file(path: &Path, entries: &[(&str, &str, &str)]) {
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(host, user, password)| {
            (
                (*host).to_owned(),
                serde_json::json!({ "auth": base64(format!("{user}:{password}").as_bytes()) }),
            )
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        serde_json::to_string_pretty(&serde_json::json!({ "auths": auths })).unwrap(),
    )
    .unwrap();
}

/// Writes `HOME/.docker/config.json` with the credentials of `registry`.
pub fn write_docker_config(home: &Path, registry: &Registry) {
    write_auth_file(
        &home.join(".docker/config.json"),
        &[(&registry.host(), USER, PASSWORD)],
    );
}

/// Standard base64 with padding (RFC 4648 §4), for the `auth` fields.
pub fn base64(bytes: &[u8]) -> String {
    encode64(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        true,
    )
}

/// base64url without padding (RFC 4648 §5), for JSON Web Tokens.
pub fn base64url(bytes: &[u8]) -> String {
    encode64(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        false,
    )
}

fn encode64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let a = alphabet;
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(a[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A token server (bearer-token auth, as Harbor and the cloud registries do it)
// ---------------------------------------------------------------------------------------------

/// The `service` and `issuer` the registry and the token server agree on.
pub const TOKEN_SERVICE: &str = "kbuild-test-registry";
pub const TOKEN_ISSUER: &str = "kbuild-test-token-issuer";
/// The identity token (OAuth2 refresh token) the [`TokenServer`] exchanges for access tokens.
pub const REFRESH_TOKEN: &str = "kbuild-test-refresh-token";

/// The token half of the distribution auth protocol
/// (<https://distribution.github.io/distribution/spec/auth/token/>): `GET /token?service=…&
/// scope=…` with HTTP basic [`USER`] / [`PASSWORD`] answers `{"token": JWT}`, the JWT signed
/// RS256 with a key whose self-signed certificate (`token.pem`) is the registry's
/// `rootcertbundle` and travels in the header's `x5c`; it grants every action asked for.
/// Wrong or missing credentials: 401. Every request's query is recorded.
pub struct TokenServer {
    pub port: u16,
    dir: PathBuf,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start(dir: &Path) -> TokenServer {
        let p = |name: &str| dir.join(name).display().to_string();
        run_ok(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &p("token.key"),
            "-out",
            &p("token.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=kbuild test token issuer",
        ]));
        run_ok(Command::new("openssl").args([
            "x509",
            "-in",
            &p("token.pem"),
            "-outform",
            "DER",
            "-out",
            &p("token.der"),
        ]));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = TokenServer {
            port,
            dir: dir.to_owned(),
            requests: Arc::default(),
        };
        let (dir, requests) = (server.dir.clone(), server.requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (dir, requests) = (dir.clone(), requests.clone());
                std::thread::spawn(move || serve_token(stream, &dir, &requests));
            }
        });
        server
    }

    /// `http://127.0.0.1:PORT/token`
    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// A token granting `scopes` (`repository:NAME:pull,push`), as the server would issue.
    pub fn token(&self, scopes: &[&str]) -> String {
        sign_token(&self.dir, scopes)
    }
}

/// One request to the token server: `GET` with HTTP basic credentials, or `POST` of the OAuth2
/// form with `grant_type=refresh_token` and [`REFRESH_TOKEN`] (docker's identity-token
/// exchange). Recorded as the request target, and for a `POST` as `POST TARGET BODY`.
fn serve_token(stream: TcpStream, dir: &Path, requests: &Mutex<Vec<String>>) {
    use std::io::BufRead as _;
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut authorized = false;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == basic_header() {
                authorized = true;
            }
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let (query, record) = if method == "POST" {
        (body.clone(), format!("POST {target} {body}"))
    } else {
        let q = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        (q.to_owned(), target.clone())
    };
    requests.lock().unwrap().push(record);
    let field = |name: &str| -> Vec<String> {
        query
            .split('&')
            .filter_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(percent_decode)
            .collect()
    };
    if method == "POST" {
        authorized = field("grant_type") == ["refresh_token"]
            && field("refresh_token") == [REFRESH_TOKEN]
            && field("service") == [TOKEN_SERVICE];
    }
    // A POST's `scope` is space-separated (OAuth2), a GET's is repeated.
    let scopes: Vec<String> = field("scope")
        .iter()
        .flat_map(|s| s.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let (status, body) = if authorized {
        let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let token = sign_token(dir, &scopes);
        (
            "200 OK",
            serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                .to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"details":"bad credentials"}"#.to_owned(),
        )
    };
    let mut out = stream;
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = out.flush();
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// A JWT (RS256, `x5c` = the issuer's certificate) granting `scopes`, valid five minutes.
fn sign_token(dir: &Path, scopes: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // `TYPE:NAME:ACTIONS`; the name may itself hold `:` (a registry with a port).
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let der = std::fs::read(dir.join("token.der")).unwrap();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64(&der)]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": USER,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", super::noise(&format!("{scopes:?}{now}"), 4).iter().map(|b| format!("{b:02x}")).collect::<String>()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(dir.join("token.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", base64url(&out.stdout))
}

// ---------------------------------------------------------------------------------------------
// Hosts: the one that builds and pushes, the ones that only pull
// ---------------------------------------------------------------------------------------------

/// The repository kbuild pushes to in the registry tests.
pub const REPO: &str = "kbuild/master";

/// A registry started with `options`, or `None` when the registry tests are skipped here (see
/// [`skip`]): `let Some(reg) = registry(Options::PLAIN) else { return };`.
pub fn registry(options: Options) -> Option<Registry> {
    (!skip()).then(|| Registry::start_with(options))
}

/// The building host: a world (pinned local fixture, temp root with the prerequisites) with
/// the repository's `hosts.toml`, so generations are master-1's.
pub fn builder() -> World {
    let w = World::new();
    std::fs::write(
        w.sb.dir.join("hosts.toml"),
        include_str!("../../hosts.toml"),
    )
    .unwrap();
    w
}

/// `build --host master-1 EXTRA…`, which must record master-1's generation `n`.
#[track_caller]
pub fn build_gen(w: &World, n: u64, extra: &[&str]) -> Gen {
    let mut args = vec!["build", "--host", "master-1"];
    args.extend_from_slice(extra);
    let r = w.ok(&args);
    assert!(
        r.stderr
            .contains(&format!("Built generation {n} of master-1")),
        "stderr:\n{}",
        r.stderr
    );
    Gen {
        number: n,
        rootfs: r.rootfs(),
    }
}

/// A [`builder`] that has built master-1's generation 1.
pub fn built_gen1() -> World {
    let w = builder();
    build_gen(&w, 1, &[]);
    w
}

/// A host that never built: an empty store, a root with the prerequisites, and neither
/// recipes, lock file nor fixture, so nothing it has could come from anywhere but a pull.
pub fn puller() -> World {
    let w = World::new();
    std::fs::remove_dir_all(&w.sb.recipes).unwrap();
    std::fs::remove_file(&w.sb.lock).unwrap();
    std::fs::remove_dir_all(w.sb.dir.join("pinned")).unwrap();
    w
}

/// `kbuild push ARGS… --plain-http` (for the plain registries).
pub fn push_plain(w: &World, args: &[&str]) -> Run {
    let mut a = vec!["push"];
    a.extend_from_slice(args);
    a.push("--plain-http");
    w.run(&a)
}

/// `kbuild pull REF --plain-http`.
pub fn pull_plain(w: &World, reference: &str) -> Run {
    w.run(&["pull", reference, "--plain-http"])
}

/// `kbuild push 1 REF --host master-1 EXTRA…` with `env` added to the clean environment.
pub fn push1(w: &World, reference: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["push", "1", reference, "--host", "master-1"];
    args.extend_from_slice(extra);
    w.run_env(&args, env)
}

/// `kbuild push 1 REF --host master-1 --plain-http`, which must succeed; its digest.
#[track_caller]
pub fn push_gen1(w: &World, reference: &str) -> String {
    pushed_digest(&push1(w, reference, &["--plain-http"], &[]), reference)
}

/// The digest in push's stdout, which must be exactly `REF@sha256:HEX\n`.
#[track_caller]
pub fn pushed_digest(r: &Run, reference: &str) -> String {
    r.assert_success();
    let line = r.stdout.strip_suffix('\n').unwrap_or_else(|| {
        panic!("push's stdout is not one line: {:?}", r.stdout);
    });
    let (named, digest) = line
        .split_once('@')
        .unwrap_or_else(|| panic!("no `@digest` in push's stdout {line:?}"));
    assert_eq!(named, reference, "push's stdout: {line:?}");
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "push's digest {digest:?}"
    );
    digest.to_owned()
}

/// What most registry tests start from: a [`builder`] that built master-1's generation 1
/// and pushed it (plain HTTP) to `reference`, and the digest push printed.
pub struct Pushed {
    pub w: World,
    pub reference: String,
    pub digest: String,
}

impl Pushed {
    /// Generation 1 built by a new builder and pushed to `reference` (a plain registry's or
    /// a [`Proxy`]'s).
    #[track_caller]
    pub fn to(reference: String) -> Pushed {
        let w = built_gen1();
        let digest = push_gen1(&w, &reference);
        Pushed {
            w,
            reference,
            digest,
        }
    }
}

/// Generation 1 pushed to `reg` (plain HTTP) as `REPO:gen1`.
#[track_caller]
pub fn pushed_gen1(reg: &Registry) -> Pushed {
    Pushed::to(reg.reference(REPO, "gen1"))
}

// ---------------------------------------------------------------------------------------------
// A proxy that counts and cuts
// ---------------------------------------------------------------------------------------------

/// Which way bytes go through the [`Proxy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Client → registry (request bodies: uploads).
    Up,
    /// Registry → client (response bodies: downloads).
    Down,
}

/// A TCP proxy on 127.0.0.1 in front of a registry. It counts the bytes each way (headers
/// included) and, when [`Proxy::cut_after`] set a budget, stops forwarding the moment that
/// many bytes went one way since the budget was set: every open connection is shut down and
/// new ones are closed at once, as when the registry dies. Byte-exact, so deterministic.
pub struct Proxy {
    pub port: u16,
    state: Arc<ProxyState>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct ProxyState {
    up: AtomicU64,
    down: AtomicU64,
    /// `(way, bytes that way at which to cut)`.
    cut: Mutex<Option<(Way, u64)>>,
    dead: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    /// `(way, bytes that way at which to stall)`: see [`Proxy::stall_after`].
    stall: Mutex<Option<(Way, u64)>>,
    /// Whether a connection is stalled right now.
    stalled: AtomicBool,
}

impl ProxyState {
    fn counter(&self, way: Way) -> &AtomicU64 {
        match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        }
    }

    fn kill_all(&self) {
        self.dead.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// A proxy forwarding to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<ProxyState> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if state.dead.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                        continue;
                    };
                    {
                        let mut conns = state.conns.lock().unwrap();
                        conns.push(client.try_clone().unwrap());
                        conns.push(server.try_clone().unwrap());
                    }
                    for (from, to, way) in [
                        (
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            Way::Up,
                        ),
                        (server, client, Way::Down),
                    ] {
                        let state = state.clone();
                        std::thread::spawn(move || pump(from, to, way, &state));
                    }
                }
            });
        }
        Proxy { port, state, stop }
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPOSITORY:TAG`: a reference to the registry behind the proxy.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.host())
    }

    /// Bytes forwarded `way` since the start (or the last [`Proxy::reset`]).
    pub fn bytes(&self, way: Way) -> u64 {
        self.state.counter(way).load(Ordering::SeqCst)
    }

    /// Zeroes the counters, forgets any cut and forwards again.
    pub fn reset(&self) {
        *self.state.cut.lock().unwrap() = None;
        self.state.up.store(0, Ordering::SeqCst);
        self.state.down.store(0, Ordering::SeqCst);
        self.state.dead.store(false, Ordering::SeqCst);
    }

    /// From now on, after `n` more bytes have gone `way`, the registry "dies": every
    /// connection is cut and new ones are refused until [`Proxy::reset`].
    pub fn cut_after(&self, way: Way, n: u64) {
        let at = self.bytes(way) + n;
        *self.state.cut.lock().unwrap() = Some((way, at));
    }

    /// Whether a cut happened.
    pub fn has_cut(&self) -> bool {
        self.state.dead.load(Ordering::SeqCst)
    }

    /// From now on, after `n` more bytes have gone `way`, stops forwarding that way (the
    /// connections stay open, as with a registry gone silent) until [`Proxy::release`]: a
    /// transfer held mid-way, for as long as a test needs, with no timing guesses.
    pub fn stall_after(&self, way: Way, n: u64) {
        let at = self.bytes(way) + n;
        *self.state.stall.lock().unwrap() = Some((way, at));
    }

    /// Waits (at most a minute) until a transfer is stalled by [`Proxy::stall_after`].
    pub fn wait_stalled(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !self.state.stalled.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "no transfer reached the stall"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Forwards again what [`Proxy::stall_after`] held.
    pub fn release(&self) {
        *self.state.stall.lock().unwrap() = None;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.state.kill_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

/// Copies `from` → `to`, counting; stops forwarding at the cut, to the byte.
fn pump(mut from: TcpStream, mut to: TcpStream, way: Way, state: &ProxyState) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.dead.load(Ordering::SeqCst) {
            break;
        }
        let mut send = n;
        let mut cut_now = false;
        let stall_at = match *state.stall.lock().unwrap() {
            Some((w, at)) if w == way => Some(at),
            _ => None,
        };
        if let Some(at) = stall_at {
            let before = state.counter(way).load(Ordering::SeqCst);
            if before + n as u64 >= at {
                // Up to the stall point, then nothing until released (or killed).
                let first = at.saturating_sub(before) as usize;
                if to.write_all(&buf[..first]).is_err() {
                    break;
                }
                state.counter(way).fetch_add(first as u64, Ordering::SeqCst);
                state.stalled.store(true, Ordering::SeqCst);
                while state.stall.lock().unwrap().is_some() && !state.dead.load(Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                state.stalled.store(false, Ordering::SeqCst);
                if to.write_all(&buf[first..n]).is_err() {
                    break;
                }
                state
                    .counter(way)
                    .fetch_add((n - first) as u64, Ordering::SeqCst);
                continue;
            }
        }
        let counted = {
            let cut = state.cut.lock().unwrap();
            match *cut {
                Some((w, at)) if w == way => {
                    let before = state.counter(way).load(Ordering::SeqCst);
                    if before + n as u64 >= at {
                        send = at.saturating_sub(before) as usize;
                        cut_now = true;
                    }
                    // Counted under the lock, before the write: two connections racing to
                    // the cut must not each send up to it (200 bytes through a cut at 100).
                    state.counter(way).fetch_add(send as u64, Ordering::SeqCst);
                    true
                }
                _ => false,
            }
        };
        if to.write_all(&buf[..send]).is_err() {
            break;
        }
        if !counted {
            state.counter(way).fetch_add(send as u64, Ordering::SeqCst);
        }
        if cut_now {
            state.kill_all();
            break;
        }
    }
    // Half-close: the other side sees the end of this direction (a normal close when the
    // peer is done, a cut when the proxy killed everything).
    let _ = to.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// A tiny OCI image layout, written by hand
// ---------------------------------------------------------------------------------------------

/// Writes a one-layer OCI image layout at `dir` (tag `latest`), independently of kbuild's
/// writer: `oci-layout`, `index.json` and three blobs (a gzip layer holding `hello`, an image
/// config, the manifest). Returns the manifest's digest and bytes.
pub fn write_tiny_layout(dir: &Path, seed: &str) -> (String, Vec<u8>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = super::sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let body = format!("hello from {seed}\n");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(body.len() as u64);
    tar.append_data(&mut h, "hello", body.as_bytes()).unwrap();
    let tar = tar.into_inner().unwrap();
    let (layer, layer_size) = put(&super::compress(&tar, super::Compression::Gzip));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", super::sha256_hex(&tar))]},
    });
    let (config, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
    })
    .to_string()
    .into_bytes();
    let (digest, size) = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    (digest, manifest)
}
