//! Shared helpers for the integration tests: a fixture tarball with the real layout of
//! `kubernetes-server-linux-amd64.tar.gz` v1.6.0, a tiny local HTTP server, a sandbox holding a
//! copy of the recipes, a store and a lock file in a temp dir, and store listings.
//!
//! Nothing here touches the network or anything outside temp dirs.

#![allow(dead_code)] // each test binary uses a different subset

pub mod container;
pub mod etcd;
pub mod registry;
pub mod world;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use assert_cmd::Command;
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------------------------------------
// Fixture tarball
// ---------------------------------------------------------------------------------------------

/// The upstream URL the repository's recipes declare.
pub const UPSTREAM_URL: &str = "https://dl.k8s.io/v1.6.0/kubernetes-server-linux-amd64.tar.gz";
/// The path the local server serves the fixture at.
pub const TARBALL_PATH: &str = "/kubernetes-server-linux-amd64.tar.gz";
pub const INPUT: &str = "kubernetes-server";

/// The server binaries in `kubernetes/server/bin/` of the real v1.6.0 tarball.
pub const SERVER_BINARIES: [&str; 9] = [
    "cloud-controller-manager",
    "hyperkube",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubeadm",
    "kubectl",
    "kubelet",
];

/// The binaries the `master` recipe installs in `/usr/local/bin`.
pub const MASTER_BINARIES: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
];

/// Components shipped as docker images next to the binaries.
const IMAGES: [&str; 4] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
];

/// Deterministic pseudo-random bytes (xorshift64*), seeded by a string.
pub fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in seed.bytes() {
        s = (s ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        out.extend_from_slice(&s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The contents of a fake server binary: a recognisable header, then incompressible bytes.
/// `kube-apiserver` is larger than the 1 MiB chunks kbuild reads and writes, so it spans
/// several of them even compressed.
pub fn binary_contents(name: &str) -> Vec<u8> {
    let len = match name {
        "kube-apiserver" => (1 << 20) + 300_001,
        "hyperkube" => 200_003,
        _ => 1_000 + 37 * name.len(),
    };
    let mut out = format!("#!fake {name}\n").into_bytes();
    out.extend(noise(name, len));
    out
}

/// One entry of a fixture tarball.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir(String),
    File {
        path: String,
        mode: u32,
        bytes: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir(p) => p,
            Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    None,
}

/// A fixture archive, described by its entries; variants are made by editing the entries.
#[derive(Clone, Debug)]
pub struct Tarball {
    pub entries: Vec<Entry>,
}

impl Tarball {
    /// The real layout of kubernetes-server-linux-amd64.tar.gz v1.6.0, with small contents.
    pub fn kubernetes_server() -> Tarball {
        let mut entries = vec![
            Entry::Dir("kubernetes/".into()),
            Entry::Dir("kubernetes/server/".into()),
            Entry::Dir("kubernetes/server/bin/".into()),
        ];
        for name in SERVER_BINARIES {
            entries.push(Entry::File {
                path: format!("kubernetes/server/bin/{name}"),
                mode: 0o755,
                bytes: binary_contents(name),
            });
            if IMAGES.contains(&name) {
                let mut image = format!("fake docker image of {name}\n").into_bytes();
                image.extend(noise(&format!("{name}.tar"), 3_000));
                entries.push(Entry::File {
                    path: format!("kubernetes/server/bin/{name}.tar"),
                    mode: 0o644,
                    bytes: image,
                });
                entries.push(Entry::File {
                    path: format!("kubernetes/server/bin/{name}.docker_tag"),
                    mode: 0o644,
                    bytes: b"v1.6.0\n".to_vec(),
                });
            }
        }
        entries.push(Entry::File {
            path: "kubernetes/LICENSES".into(),
            mode: 0o644,
            bytes: b"= vendor/github.com/fake licensed under: =\n\nApache License 2.0\n".to_vec(),
        });
        entries.push(Entry::File {
            path: "kubernetes/kubernetes-src.tar.gz".into(),
            mode: 0o644,
            bytes: nested_source_tarball(),
        });
        entries.push(Entry::Dir("kubernetes/addons/".into()));
        entries.push(Entry::File {
            path: "kubernetes/addons/README.md".into(),
            mode: 0o644,
            bytes: b"# Addons\n".to_vec(),
        });
        Tarball { entries }
    }

    /// The archive without the member at `path`.
    pub fn without(mut self, path: &str) -> Tarball {
        let before = self.entries.len();
        self.entries.retain(|e| e.path() != path);
        assert_eq!(self.entries.len() + 1, before, "no member `{path}`");
        self
    }

    /// The archive with the member at `path` holding `bytes` instead.
    pub fn with_changed(mut self, path: &str, new: &[u8]) -> Tarball {
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.path() == path)
            .unwrap_or_else(|| panic!("no member `{path}`"));
        match e {
            Entry::File { bytes, .. } => *bytes = new.to_vec(),
            _ => panic!("`{path}` is not a file"),
        }
        self
    }

    /// The archive with `path` replaced by another entry.
    pub fn with_entry(mut self, entry: Entry) -> Tarball {
        match self.entries.iter_mut().find(|e| e.path() == entry.path()) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
        self
    }

    /// The bytes of a member file.
    pub fn member(&self, path: &str) -> &[u8] {
        self.entries
            .iter()
            .find_map(|e| match e {
                Entry::File { path: p, bytes, .. } if p == path => Some(bytes.as_slice()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no member `{path}`"))
    }

    /// The plain tar stream (GNU headers, root owner, constant mtime).
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_490_900_000); // late March 2017, as the v1.6.0 release
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                Entry::File { path, mode, bytes } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, path, bytes.as_slice()).unwrap();
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, target).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// The compressed archive.
    pub fn build(&self, c: Compression) -> Vec<u8> {
        compress(&self.tar(), c)
    }
}

pub fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
        Compression::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(tar).unwrap();
            enc.finish().unwrap()
        }
        Compression::None => tar.to_vec(),
    }
}

/// A small `kubernetes-src.tar.gz` to nest inside the server tarball.
fn nested_source_tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let body = b"# Kubernetes (fake source)\n";
    let mut h = tar::Header::new_gnu();
    h.set_mtime(1_490_900_000);
    h.set_mode(0o644);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, "README.md", &body[..]).unwrap();
    compress(&b.into_inner().unwrap(), Compression::Gzip)
}

/// The standard fixture and its gzip bytes, built once per test binary.
pub struct Fixture {
    pub tarball: Tarball,
    pub gz: Vec<u8>,
    pub sha256: String,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tarball = Tarball::kubernetes_server();
        let gz = tarball.build(Compression::Gzip);
        let sha256 = sha256_hex(&gz);
        Fixture {
            tarball,
            gz,
            sha256,
        }
    })
}

/// The fixture's copy of a server binary.
pub fn bin_member(name: &str) -> String {
    format!("kubernetes/server/bin/{name}")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

// ---------------------------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP/1.1 server on 127.0.0.1: GET of a served path answers 200 with the bytes and a
/// Content-Length, anything else 404. Every request is recorded.
pub struct Server {
    base: String,
    routes: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<Mutex<Vec<String>>>,
    /// Bytes of bodies sent, requests in flight, and how bodies are paced.
    pub stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let stats: Arc<ServerStats> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (routes, requests, stop) = (routes.clone(), requests.clone(), stop.clone());
            let stats = stats.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (routes, requests) = (routes.clone(), requests.clone());
                    let stats = stats.clone();
                    std::thread::spawn(move || serve_one(stream, &routes, &requests, &stats));
                }
            });
        }
        Server {
            base: format!("http://{addr}"),
            routes,
            requests,
            stats,
            stop,
            addr,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Serves `bytes` at `path` (replacing what was served there).
    pub fn serve(&self, path: &str, bytes: &[u8]) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), bytes.to_vec());
    }

    /// The request lines received so far (`GET /path`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
    }
}

/// What the server did: body bytes the kernel accepted, requests in flight (and the most at
/// once), and the knobs tests turn: a pause per 64 KiB body chunk and whether a
/// `Content-Length` is sent.
#[derive(Default)]
pub struct ServerStats {
    pub sent: AtomicU64,
    pub active: AtomicUsize,
    pub max_active: AtomicUsize,
    /// Microseconds to sleep after each 64 KiB of a body (0: as fast as possible).
    pub pause_us: AtomicU64,
    /// Answer without `Content-Length` (the body ends when the connection closes).
    pub no_length: AtomicBool,
    /// Hold every answer until this many requests have been in flight at once (at most a
    /// minute; 0: no hold): requests a client makes at once then overlap for sure, however
    /// late a loaded machine runs the second one, and a client that makes them one after
    /// the other shows a `max_active` of 1.
    pub gate: AtomicUsize,
}

impl ServerStats {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn max_active(&self) -> usize {
        self.max_active.load(Ordering::SeqCst)
    }

    /// Waits (at most a minute) until no body is being sent: each one begun has reached its
    /// last chunk, or stopped because its client went away. Once a client has exited, its
    /// requests are past their headers, so what [`ServerStats::sent`] says after this is all
    /// the server will ever send them.
    pub fn wait_idle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.active.load(Ordering::SeqCst) > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the server was still sending a minute later"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn serve_one(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Vec<u8>>>,
    requests: &Mutex<Vec<String>>,
    stats: &ServerStats,
) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    requests.lock().unwrap().push(format!("{method} {path}"));
    let body = if method == "GET" {
        routes.lock().unwrap().get(&path).cloned()
    } else {
        None
    };
    let mut out = stream;
    let _ = match body {
        Some(body) => {
            let length = if stats.no_length.load(Ordering::SeqCst) {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            };
            let now = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
            stats.max_active.fetch_max(now, Ordering::SeqCst);
            let gate = stats.gate.load(Ordering::SeqCst);
            let held = std::time::Instant::now();
            while stats.max_active() < gate && held.elapsed() < std::time::Duration::from_secs(60) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{length}Connection: close\r\n\r\n"
            );
            let mut r = out.write_all(head.as_bytes());
            // The request stops counting as active before its last bytes go out: once the
            // client has them it may start its next request, which must not overlap this one
            // in the count (the pause after a chunk would otherwise over-count).
            let mut active = true;
            let chunks = body.chunks(64 << 10);
            let last = chunks.len().saturating_sub(1);
            // In chunks, counting what the kernel accepted: a client that stops reading
            // stops the count (at most the socket buffers past what it read).
            for (i, chunk) in chunks.enumerate() {
                if r.is_err() {
                    break;
                }
                if i == last && active {
                    stats.active.fetch_sub(1, Ordering::SeqCst);
                    active = false;
                }
                r = out.write_all(chunk);
                if r.is_ok() {
                    stats.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                let pause = stats.pause_us.load(Ordering::SeqCst);
                if pause > 0 {
                    std::thread::sleep(std::time::Duration::from_micros(pause));
                }
            }
            if active {
                stats.active.fetch_sub(1, Ordering::SeqCst);
            }
            r
        }
        None => out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
        ),
    };
    let _ = out.flush();
    // Let the client close first, so the response is not cut by a reset.
    let _ = out.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 512];
    let _ = reader.get_mut().read(&mut sink);
}

// ---------------------------------------------------------------------------------------------
// Sandbox: recipes, store and lock file in a temp dir
// ---------------------------------------------------------------------------------------------

pub fn repo_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A temp dir holding `recipes/` (a copy of the repository's), `store/`,
/// `flake-like.lock.json` (a copy of the repository's) and `home/`.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub recipes: PathBuf,
    pub store: PathBuf,
    pub lock: PathBuf,
    pub home: PathBuf,
    /// The local server's base URL, when the recipes were pointed at it.
    pub server_base: Option<String>,
}

impl Sandbox {
    /// The repository's recipes and lock file, unchanged.
    pub fn new() -> Sandbox {
        let tmp = tempfile::Builder::new()
            .prefix("kbuild-test-")
            .tempdir()
            .unwrap();
        let dir = tmp.path().to_owned();
        let recipes = dir.join("recipes");
        copy_tree(&repo_dir().join("recipes"), &recipes);
        let lock = dir.join("flake-like.lock.json");
        std::fs::copy(repo_dir().join("flake-like.lock.json"), &lock).unwrap();
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap();
        Sandbox {
            store: dir.join("store"),
            tmp,
            dir,
            recipes,
            lock,
            home,
            server_base: None,
        }
    }

    /// The recipes with the kubernetes-server URL pointing at `server`, and no lock file.
    pub fn local(server: &Server) -> Sandbox {
        let mut sb = Sandbox::new();
        sb.point_at(server);
        std::fs::remove_file(&sb.lock).unwrap();
        sb
    }

    /// [`Sandbox::local`] with the fixture served and pinned (with its size) in the lock file.
    pub fn pinned(server: &Server) -> Sandbox {
        let f = fixture();
        server.serve(TARBALL_PATH, &f.gz);
        let sb = Sandbox::local(server);
        sb.write_lock(&[(
            INPUT,
            &[&server.url(TARBALL_PATH)],
            &f.sha256,
            Some(f.gz.len() as u64),
        )]);
        sb
    }

    /// Rewrites the kubernetes-server URL in `kube-common.toml` to the local server's.
    pub fn point_at(&mut self, server: &Server) {
        let path = self.recipes.join("kube-common.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(UPSTREAM_URL));
        std::fs::write(&path, text.replace(UPSTREAM_URL, &server.url(TARBALL_PATH))).unwrap();
        self.server_base = Some(server.base().to_owned());
    }

    /// The URL the sandbox's recipes fetch the kubernetes-server input from.
    pub fn input_url(&self) -> String {
        match &self.server_base {
            Some(b) => format!("{b}{TARBALL_PATH}"),
            None => UPSTREAM_URL.to_owned(),
        }
    }

    /// Writes a lock file with `(input, urls, sha256, size)` entries.
    pub fn write_lock(&self, entries: &[(&str, &[&str], &str, Option<u64>)]) {
        std::fs::write(&self.lock, lock_json(entries)).unwrap();
    }

    pub fn write_recipe(&self, name: &str, text: &str) -> PathBuf {
        let path = self.recipes.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn write_template(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.recipes.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn lock_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.lock).ok()
    }

    /// The binary with a clean environment (PATH, and HOME and KBUILD_ROOT in the sandbox),
    /// run from the sandbox directory, without any option.
    pub fn bare(&self) -> Command {
        let mut c = Command::cargo_bin("kbuild").unwrap();
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            // `generations` reads the root's state: never the host's `/`.
            .env("KBUILD_ROOT", self.dir.join("root"))
            .current_dir(&self.dir)
            .timeout(std::time::Duration::from_secs(60));
        c
    }

    /// The command `kbuild --store … --recipes … --lock-file … ARGS` of this sandbox, not run
    /// yet (for a test that sets more of its environment or its timeout first).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = self.bare();
        c.arg("--store")
            .arg(&self.store)
            .arg("--recipes")
            .arg(&self.recipes)
            .arg("--lock-file")
            .arg(&self.lock)
            .args(args);
        c
    }

    /// `kbuild --store … --recipes … --lock-file … ARGS`
    pub fn kbuild(&self, args: &[&str]) -> Run {
        self.run(self.command(args))
    }

    /// Starts `kbuild --store … --recipes … --lock-file … ARGS` without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("kbuild"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.home)
            .env("KBUILD_ROOT", self.dir.join("root"))
            .current_dir(&self.dir)
            .arg("--store")
            .arg(&self.store)
            .arg("--recipes")
            .arg(&self.recipes)
            .arg("--lock-file")
            .arg(&self.lock)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn run(&self, mut c: Command) -> Run {
        let out = c.output().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            sandbox: self.dir.display().to_string(),
            server: self.server_base.clone(),
        }
    }

    /// `kbuild build master`, which must succeed; returns the rootfs path printed.
    pub fn build_ok(&self, extra: &[&str]) -> PathBuf {
        let mut args = vec!["build", "master"];
        args.extend_from_slice(extra);
        let r = self.kbuild(&args);
        r.assert_success();
        r.rootfs()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Store objects are read-only; make them removable when not running as root.
        if self.store.exists() {
            for e in walk_any(&self.dir).into_iter().flatten() {
                if e.file_type().is_dir() {
                    let _ =
                        std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755));
                }
            }
        }
    }
}

/// The lines a spawned command writes on stderr, as they come: a thread reads the pipe, so a
/// test can wait for the line that says the command reached a point (`Blocking waiting for
/// file lock on …`) instead of sleeping and hoping it did.
pub struct StderrLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    /// Takes `child`'s stderr (which must be piped).
    pub fn of(child: &mut std::process::Child) -> StderrLines {
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most a minute) for a line starting with `prefix` (after the indentation of
    /// status lines); that line. Panics with the
    /// lines seen when the command closes stderr first or the minute goes by.
    #[track_caller]
    pub fn wait_for(&mut self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.trim_start().starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line `{prefix}…` on stderr ({e}); seen:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Every line, the ones already seen first, once the command has closed stderr.
    pub fn all(mut self) -> String {
        self.seen.extend(self.rx.iter());
        self.seen.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The exact bytes kbuild writes for a lock file: 2-space indent, every key sorted (input
/// names, and `sha256` < `size` < `urls` inside an entry; `inputs` < `version`).
pub fn lock_json(entries: &[(&str, &[&str], &str, Option<u64>)]) -> String {
    let mut sorted: Vec<_> = entries.to_vec();
    sorted.sort_by_key(|e| e.0);
    let mut s = String::from("{\n  \"inputs\": {");
    if sorted.is_empty() {
        s.push_str("},\n  \"version\": 1\n}\n");
        return s;
    }
    for (i, (name, urls, sha, size)) in sorted.iter().enumerate() {
        s.push_str(if i == 0 { "\n" } else { ",\n" });
        s.push_str(&format!(
            "    \"{name}\": {{\n      \"sha256\": \"{sha}\",\n"
        ));
        if let Some(n) = size {
            s.push_str(&format!("      \"size\": {n},\n"));
        }
        s.push_str("      \"urls\": [");
        for (j, u) in urls.iter().enumerate() {
            s.push_str(if j == 0 { "\n" } else { ",\n" });
            s.push_str(&format!("        \"{u}\""));
        }
        s.push_str("\n      ]\n    }");
    }
    s.push_str("\n  },\n  \"version\": 1\n}\n");
    s
}

/// A walk over a tree the test made, following `path` itself when it is a symlink (walkdir's
/// default). kbuild's own code walks with `kbuild::fs::walk`, which never does: clippy.toml
/// disallows `WalkDir::new` everywhere else.
#[allow(clippy::disallowed_methods)]
pub fn walk_any(path: impl AsRef<Path>) -> walkdir::WalkDir {
    walkdir::WalkDir::new(path)
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walk_any(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    sandbox: String,
    server: Option<String>,
}

impl Run {
    pub fn assert_success(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "kbuild failed\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
    }

    /// Exit code 1, nothing on stdout, and exactly `expected` on stderr (after replacing the
    /// sandbox path by `$SANDBOX` and the server's base URL by `$SERVER`).
    pub fn assert_error(&self, expected: &str) {
        assert_eq!(
            self.code,
            Some(1),
            "expected exit code 1\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "", "stdout of a failed run");
        assert_eq!(self.stderr(), expected);
    }

    /// Asserts the raw stderr (no `$SANDBOX` or `$SERVER` in it) holds `needle`; the message
    /// shows the whole stderr.
    #[track_caller]
    pub fn assert_stderr_has(&self, needle: &str) {
        assert!(self.stderr.contains(needle), "{}", self.stderr);
    }

    /// stderr with the sandbox path and the server URL replaced by `$SANDBOX` and `$SERVER`.
    pub fn stderr(&self) -> String {
        self.filter(&self.stderr)
    }

    pub fn stdout(&self) -> String {
        self.filter(&self.stdout)
    }

    fn filter(&self, s: &str) -> String {
        let mut s = s.replace(&self.sandbox, "$SANDBOX");
        if let Some(b) = &self.server {
            s = s.replace(b, "$SERVER");
        }
        s.split_inclusive('\n').map(timing_free).collect()
    }

    /// The last line of stdout, as a path.
    pub fn rootfs(&self) -> PathBuf {
        PathBuf::from(
            self.stdout
                .lines()
                .last()
                .unwrap_or_else(|| panic!("no stdout; stderr:\n{}", self.stderr)),
        )
    }
}

/// `        Read NAME: 1.6 MiB in 0.02s (80 MiB/s)` → `        Read NAME: 1.6 MiB in $TIME`:
/// the transfer summary's size is exact, its timing is not.
fn timing_free(line: &str) -> String {
    if line.trim_start().starts_with("Read ")
        && let Some(i) = line.find(" MiB in ")
        && line.trim_end().ends_with(" MiB/s)")
    {
        let nl = if line.ends_with('\n') { "\n" } else { "" };
        return format!("{} MiB in $TIME{nl}", &line[..i]);
    }
    line.to_owned()
}

// ---------------------------------------------------------------------------------------------
// Listings of store directories
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// One entry of a directory tree, as a user (or `ls -l`) would notice it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the listed root; the root itself is `.`.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    /// BLAKE3 of a file's bytes, a symlink's target, empty for directories.
    pub content: String,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
}

/// Every entry below `root` (and `root` itself), sorted by path.
pub fn listing(root: &Path) -> Vec<Listed> {
    let mut out = Vec::new();
    for e in walk_any(root).sort_by_file_name() {
        let e = e.unwrap();
        let meta = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap();
        let path = if rel.as_os_str().is_empty() {
            ".".to_owned()
        } else {
            rel.display().to_string()
        };
        let (kind, content) = if meta.file_type().is_symlink() {
            (
                Kind::Symlink,
                std::fs::read_link(e.path()).unwrap().display().to_string(),
            )
        } else if meta.is_dir() {
            (Kind::Dir, String::new())
        } else {
            (Kind::File, blake3_hex(&std::fs::read(e.path()).unwrap()))
        };
        out.push(Listed {
            path,
            kind,
            mode: meta.mode() & 0o7777,
            content,
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ino: meta.ino(),
            nlink: meta.nlink(),
        });
    }
    out
}

/// Asserts `store` holds its bookkeeping only (the layout of `docs/store-format.md` with no
/// object, metadata, index entry, generation or `.tmp-*` entry), as after a failed first
/// build; `when` names the case in the message.
#[track_caller]
pub fn assert_bookkeeping_only(store: &Path, when: &str) {
    let paths: Vec<String> = listing(store).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            ".",
            ".kbuild",
            ".kbuild/id",
            ".kbuild/index",
            ".kbuild/lock",
            ".kbuild/meta",
            ".kbuild/version"
        ],
        "{when}: the store kept something"
    );
}

/// A listing without what differs between two equal trees on disk: (path, kind, mode, content).
pub fn shape(l: &[Listed]) -> Vec<(String, Kind, u32, String)> {
    l.iter()
        .map(|e| (e.path.clone(), e.kind, e.mode, e.content.clone()))
        .collect()
}

/// Names of the top-level entries of a store (objects, and `.kbuild`, `.tmp-*`).
pub fn top_level(store: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(store) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect(),
        Err(_) => vec![],
    };
    names.sort();
    names
}

/// Flips one bit of the byte at `at` in a file of the store (made writable for that, then
/// given back its mode): damage that keeps the file's size.
pub fn flip_byte(path: &Path, at: u64) {
    use std::io::{Seek, SeekFrom};
    let mode = std::fs::metadata(path).unwrap().mode() & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x20]).unwrap();
    f.sync_all().unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The canonical node of a tree on disk, computed independently of kbuild's writer.
pub fn tree_node(path: &Path) -> kbuild::store::Node {
    use kbuild::store::Node;
    let meta = path.symlink_metadata().unwrap();
    if meta.file_type().is_symlink() {
        Node::Symlink {
            target: std::fs::read_link(path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes(),
        }
    } else if meta.is_dir() {
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(path).unwrap() {
            let e = e.unwrap();
            entries.insert(e.file_name().into_encoded_bytes(), tree_node(&e.path()));
        }
        Node::Directory(entries)
    } else {
        Node::file(&std::fs::read(path).unwrap(), meta.mode() & 0o111 != 0)
    }
}

/// The store object name kbuild gives `node` called `name`.
pub fn object_name(node: &kbuild::store::Node, name: &str) -> String {
    format!("{}-{name}", node.digest().store_hash())
}

/// The stderr lines of one download of `bytes` bytes for the kubernetes-server input from
/// `url` (with the timing masked, see [`Run::stderr`]).
pub fn fetched(url: &str, bytes: usize) -> String {
    let verb = if url.starts_with("file://") {
        "Reading"
    } else {
        "Fetching"
    };
    format!(
        "{verb:>12} {INPUT} from {url}\n        Read {INPUT}: {:.1} MiB in $TIME\n",
        bytes as f64 / (1u64 << 20) as f64
    )
}

/// The store name kbuild gives the archive it keeps for a pin (`algo` `sha256` or `sha512`,
/// `hex` its digest), called `file`: computed here from the fixed-output encoding in
/// docs/store-format.md, independently of kbuild's code.
pub fn kept_name(algo: &str, hex: &str, file: &str) -> String {
    let field = |b: &[u8]| {
        let mut v = (b.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let mut e = field(b"kbuild-drv-v1");
    e.extend(field(b"fixed"));
    e.extend(field(algo.as_bytes()));
    e.extend(field(hex.as_bytes()));
    format!("{}-{file}", &blake3::hash(&e).to_hex()[..32])
}

/// The name of the kept archive of the (gzip) fixture tarball, as the recipes name it.
pub fn kept_fixture() -> String {
    kept_name(
        "sha256",
        &fixture().sha256,
        "kubernetes-server-linux-amd64.tar.gz",
    )
}

/// The line `kbuild gc` adds about kept input archives: `count` of them, `bytes` in all.
pub fn gc_archives_line(count: usize, bytes: usize) -> String {
    if count == 0 {
        return "0 input archives kept for offline builds (builds fetch them again)\n".into();
    }
    format!(
        "{count} input archive{} kept for offline builds ({}, pinned by the remaining generations; `kbuild gc --drop-archives` deletes them)\n",
        if count == 1 { "" } else { "s" },
        human_bytes(bytes as u64)
    )
}

/// `bytes` as kbuild's status lines give sizes: plain bytes below 1 KiB, else binary units
/// with one decimal (`512 B`, `3.5 KiB`, `12.3 MiB`).
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < 4 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", ["KiB", "MiB", "GiB", "TiB", "PiB"][unit])
}
