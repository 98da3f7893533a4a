//! A world for activation tests: a sandbox whose kubernetes-server input is a pinned local
//! `file://` copy of the fixture, plus a temp root (`$SANDBOX/host`) holding the master's host
//! prerequisites, and exact root listings (every path with its type, a symlink's target text
//! and a file's bytes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

// ---------------------------------------------------------------------------------------------
// A world: sandbox + local pinned input + temp root
// ---------------------------------------------------------------------------------------------

pub const TARBALL: &str = "kubernetes-server-linux-amd64.tar.gz";

/// The master's host prerequisites, as the tests create them (relative to the root).
pub const PREREQS: [(&str, &[u8]); 5] = [
    (
        "etc/kubernetes/token.csv",
        b"0123456789abcdef,kubelet-bootstrap,10001\n",
    ),
    (
        "etc/kubernetes/ssl/ca.pem",
        b"-----BEGIN CERTIFICATE----- ca\n",
    ),
    (
        "etc/kubernetes/ssl/ca-key.pem",
        b"-----BEGIN RSA PRIVATE KEY----- ca\n",
    ),
    (
        "etc/kubernetes/ssl/kubernetes.pem",
        b"-----BEGIN CERTIFICATE----- kube\n",
    ),
    (
        "etc/kubernetes/ssl/kubernetes-key.pem",
        b"-----BEGIN RSA PRIVATE KEY----- kube\n",
    ),
];

/// Every path a `master` generation manages.
pub const MASTER_PATHS: [&str; 16] = [
    "/etc/kubernetes/apiserver",
    "/etc/kubernetes/config",
    "/etc/kubernetes/controller-manager",
    "/etc/kubernetes/scheduler",
    "/etc/systemd/system/kube-apiserver.service",
    "/etc/systemd/system/kube-controller-manager.service",
    "/etc/systemd/system/kube-scheduler.service",
    // Enablement links, written by the build from each unit's `WantedBy=multi-user.target`.
    "/etc/systemd/system/multi-user.target.wants/kube-apiserver.service",
    "/etc/systemd/system/multi-user.target.wants/kube-controller-manager.service",
    "/etc/systemd/system/multi-user.target.wants/kube-scheduler.service",
    "/usr/local/bin/kube-apiserver",
    "/usr/local/bin/kube-controller-manager",
    "/usr/local/bin/kube-proxy",
    "/usr/local/bin/kube-scheduler",
    "/usr/local/bin/kubectl",
    "/usr/local/bin/kubelet",
];

/// The directories kbuild creates for a master in a root that only holds the prerequisites.
pub const MASTER_DIRS: [&str; 6] = [
    "/etc/systemd",
    "/etc/systemd/system",
    "/etc/systemd/system/multi-user.target.wants",
    "/usr",
    "/usr/local",
    "/usr/local/bin",
];

pub const UNITS: [&str; 3] = [
    "kube-apiserver.service",
    "kube-controller-manager.service",
    "kube-scheduler.service",
];

/// One built generation.
#[derive(Clone, Debug)]
pub struct Gen {
    pub number: u64,
    pub rootfs: PathBuf,
}

impl Gen {
    /// The store object name of its rootfs.
    pub fn object(&self) -> String {
        self.rootfs
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The paths it manages: every file below the rootfs's `etc/` and `usr/`.
    pub fn managed(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for top in ["etc", "usr"] {
            let dir = self.rootfs.join(top);
            if !dir.exists() {
                continue;
            }
            for e in super::walk_any(&dir) {
                let e = e.unwrap();
                if !e.file_type().is_dir() {
                    let rel = e.path().strip_prefix(&self.rootfs).unwrap();
                    out.insert(format!("/{}", rel.display()));
                }
            }
        }
        out
    }

    /// The text of kbuild's link at `path` in a root on this generation: an alias keeps the
    /// rootfs's own text (`etc/systemd/system/A -> X`), any other path goes through the flip
    /// point.
    pub fn link_text(&self, path: &str) -> String {
        alias_text(&self.rootfs, path).unwrap_or_else(|| link_text(path))
    }

    /// The bytes of the file this generation provides at `path` (absolute, inside the root).
    pub fn bytes(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.rootfs.join(path.trim_start_matches('/'))).unwrap()
    }
}

pub struct World {
    pub sb: Sandbox,
    pub root: PathBuf,
}

impl World {
    /// A sandbox whose input is a pinned local copy of the fixture, and a root holding the
    /// master's prerequisites.
    pub fn new() -> World {
        let w = World::bare();
        w.write_prereqs();
        w
    }

    /// Like [`World::new`], with an empty root.
    pub fn bare() -> World {
        let sb = Sandbox::new();
        let f = fixture();
        let url = write_fixture(&sb, "pinned", &f.gz);
        let common = sb.recipes.join("kube-common.toml");
        let text = std::fs::read_to_string(&common).unwrap();
        assert!(text.contains(UPSTREAM_URL));
        std::fs::write(&common, text.replace(UPSTREAM_URL, &url)).unwrap();
        sb.write_lock(&[(INPUT, &[&url], &f.sha256, Some(f.gz.len() as u64))]);
        let root = sb.dir.join("host");
        std::fs::create_dir(&root).unwrap();
        World { sb, root }
    }

    /// Writes the prerequisites; the private keys readable by their owner only, as on a
    /// real host (a key others can read is warned about).
    pub fn write_prereqs(&self) {
        for (rel, bytes) in PREREQS {
            let p = self.root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            if rel.ends_with("-key.pem") {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
    }

    /// The absolute store directory, as kbuild records it.
    pub fn store(&self) -> PathBuf {
        std::path::absolute(&self.sb.store).unwrap()
    }

    /// `kbuild --store … --recipes … --lock-file … --root … ARGS` with a clean environment.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = self.cmd_without_root(&["--root", self.root.to_str().unwrap()]);
        c.args(args);
        c
    }

    /// `kbuild --store … --recipes … --lock-file … ARGS`: no `--root`, no KBUILD_ROOT.
    pub fn cmd_without_root(&self, args: &[&str]) -> assert_cmd::Command {
        self.cmd_store(&self.sb.store, args)
    }

    /// `kbuild --store STORE --recipes … --lock-file … ARGS`.
    pub fn cmd_store(&self, store: &Path, args: &[&str]) -> assert_cmd::Command {
        let mut c =
            assert_cmd::Command::from_std(self.command_line(&[], &kbuild_bin(), store, true, args));
        c.timeout(Duration::from_secs(60));
        c
    }

    /// `BIN --store … --recipes … --lock-file … --root … ARGS` as a `std::process::Command`
    /// (for what `assert_cmd` cannot do: spawn, redirect, change uid), with the clean
    /// environment of [`World::cmd`]. `bin` is [`kbuild_bin`] or a copy of it.
    pub fn std_command(&self, bin: &Path, args: &[&str]) -> std::process::Command {
        let mut c = self.command_line(
            &[],
            bin,
            &self.sb.store,
            true,
            &["--root", self.root.to_str().unwrap()],
        );
        c.args(args);
        c
    }

    /// The one place a kbuild command line is put together: `[WRAP…] BIN --store STORE
    /// [--recipes … --lock-file …] ARGS` with a clean environment (PATH, and HOME in the
    /// sandbox), run from the sandbox directory. `wrap` is a program (and its options) that
    /// runs kbuild, such as strace; without `recipes` the command has no `--recipes` and
    /// `--lock-file`.
    pub fn command_line(
        &self,
        wrap: &[&std::ffi::OsStr],
        bin: &Path,
        store: &Path,
        recipes: bool,
        args: &[&str],
    ) -> std::process::Command {
        let mut c = match wrap.split_first() {
            Some((program, options)) => {
                let mut c = std::process::Command::new(program);
                c.args(options).arg(bin);
                c
            }
            None => std::process::Command::new(bin),
        };
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.sb.home)
            .current_dir(&self.sb.dir)
            .arg("--store")
            .arg(store);
        if recipes {
            c.arg("--recipes")
                .arg(&self.sb.recipes)
                .arg("--lock-file")
                .arg(&self.sb.lock);
        }
        c.args(args);
        c
    }

    /// Runs `kbuild --store STORE --recipes … --lock-file … --root … ARGS`: this world's
    /// root with another store (or this one, moved).
    pub fn run_store(&self, store: &Path, args: &[&str]) -> Run {
        let mut with_root = vec!["--root", self.root.to_str().unwrap()];
        with_root.extend_from_slice(args);
        self.sb.run(self.cmd_store(store, &with_root))
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.sb.run(self.cmd(args))
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        self.sb.run(c)
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        r.assert_success();
        r
    }

    /// Runs `kbuild --store STORE ARGS…` (no recipes, no lock file: an air-gapped host) with
    /// `store` read-only. As root (CI): in a private mount namespace (`unshare -m`) where the
    /// store is a read-only bind mount of itself, so the kernel refuses every write with
    /// `EROFS` and nothing outlives the command. Otherwise with every mode of the store made
    /// read-only (`EACCES`; root ignores modes), put back afterwards.
    #[allow(dead_code)] // not every test binary uses it
    pub fn run_read_only_store(&self, store: &Path, args: &[&str]) -> Run {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            let script =
                r#"mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@""#;
            let wrap: Vec<&std::ffi::OsStr> = vec![
                "unshare".as_ref(),
                "--mount".as_ref(),
                "--propagation".as_ref(),
                "private".as_ref(),
                "sh".as_ref(),
                "-c".as_ref(),
                script.as_ref(),
                store.as_os_str(),
            ];
            let c = self.command_line(&wrap, &kbuild_bin(), store, false, args);
            return self.sb.run(assert_cmd::Command::from_std(c));
        }
        let modes: Vec<(PathBuf, u32)> = super::walk_any(store)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_type().is_symlink())
            .map(|e| (e.path().to_owned(), e.metadata().unwrap().mode() & 0o7777))
            .collect();
        for (p, mode) in modes.iter().rev() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode & !0o222)).unwrap();
        }
        let c = self.command_line(&[], &kbuild_bin(), store, false, args);
        let r = self.sb.run(assert_cmd::Command::from_std(c));
        for (p, mode) in &modes {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        r
    }

    /// Starts a command without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.std_command(&kbuild_bin(), args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `kbuild build RECIPES… EXTRA…`, which must record generation `number`.
    pub fn build(&self, recipes: &[&str], extra: &[&str], number: u64) -> Gen {
        let mut args = vec!["build"];
        args.extend_from_slice(recipes);
        args.extend_from_slice(extra);
        let r = self.ok(&args);
        assert!(
            r.stderr
                .lines()
                .any(|l| l.trim_start() == format!("Built generation {number}")),
            "expected generation {number} to be recorded; stderr:\n{}",
            r.stderr
        );
        let rootfs = r.rootfs();
        assert!(rootfs.is_dir(), "{}", rootfs.display());
        Gen { number, rootfs }
    }

    /// A recipe importing `master` and adding literal files.
    pub fn master_plus(&self, name: &str, files: &[(&str, &str)]) {
        let mut text = String::from("imports = [\"master\"]\n");
        for (path, body) in files {
            text.push_str(&format!(
                "\n[files.\"{path}\"]\ntext = {}\n",
                toml_string(body)
            ));
        }
        self.sb.write_recipe(name, &text);
    }

    pub fn listing(&self) -> Listing {
        root_listing(&self.root)
    }

    /// The listing before any switch: the prerequisites (and what the test added).
    pub fn base(&self) -> Listing {
        self.listing()
    }

    /// The exact root after switching to `g` from `base`: see [`expect_in`] (this world's
    /// store).
    pub fn expect(
        &self,
        base: &Listing,
        g: &Gen,
        created: &[&str],
        adopted: &[(&str, &[u8])],
    ) -> Listing {
        expect_in(&self.store(), base, g, created, adopted)
    }

    /// Asserts the root is exactly `expected`, and that every managed path of `g` resolves
    /// into `g`'s rootfs.
    pub fn assert_root(&self, expected: &Listing, g: &Gen, when: &str) {
        assert_listing(&self.listing(), expected, when);
        self.assert_resolves(g, when);
    }

    /// Asserts the root is exactly what switching to `g` from `base` makes of it, with
    /// `created` the directories kbuild made and nothing adopted: [`World::expect`], then
    /// [`World::assert_root`].
    pub fn assert_at(&self, base: &Listing, g: &Gen, created: &[&str], when: &str) {
        self.assert_root(&self.expect(base, g, created, &[]), g, when);
    }

    /// Every path `g` manages resolves, in this world's root, into `g`'s rootfs.
    pub fn assert_resolves(&self, g: &Gen, when: &str) {
        assert_resolves_in(&self.root, g, when);
    }

    /// `generations` (text) must list exactly `numbers`, marking `active` with `*`.
    pub fn assert_generations(&self, numbers: &[u64], active: Option<u64>) {
        let r = self.ok(&["generations"]);
        let mut lines = r.stdout.lines();
        assert_eq!(
            lines.next(),
            Some("  GEN  CREATED                     SIZE  RECIPES           ROOTFS")
        );
        let mut seen = Vec::new();
        let mut marked = Vec::new();
        // Below a generation, the variables it changed (`       changed: …`).
        for line in lines.filter(|l| !l.starts_with("       changed: ")) {
            let n: u64 = line[1..5].trim().parse().unwrap();
            match &line[..1] {
                "*" => marked.push(n),
                " " => {}
                other => panic!("bad mark `{other}` in {line:?}"),
            }
            seen.push(n);
        }
        assert_eq!(seen, numbers, "generations:\n{}", r.stdout);
        assert_eq!(
            marked,
            active.into_iter().collect::<Vec<_>>(),
            "generations:\n{}",
            r.stdout
        );
    }
}

/// The kbuild binary under test.
pub fn kbuild_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("kbuild")
}

/// Writes `bytes` as `$SANDBOX/<dir>/kubernetes-server-linux-amd64.tar.gz`; its `file://` URL.
pub fn write_fixture(sb: &Sandbox, dir: &str, bytes: &[u8]) -> String {
    let path = sb.dir.join(dir).join(TARBALL);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    format!("file://{}", path.display().to_string().replace(' ', "%20"))
}

pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The text of the link kbuild makes at `path`: relative, through the flip point.
pub fn link_text(path: &str) -> String {
    let rel = path.trim_start_matches('/');
    format!(
        "{}etc/.kbuild/current/{rel}",
        "../".repeat(rel.matches('/').count())
    )
}

/// The text of `path`'s link in `rootfs` when it is an alias: directly in
/// `etc/systemd/system`, naming a unit beside it (a bare name of the same type).
pub fn alias_text(rootfs: &Path, path: &str) -> Option<String> {
    let name = path.strip_prefix("/etc/systemd/system/")?;
    let text = std::fs::read_link(rootfs.join(path.trim_start_matches('/'))).ok()?;
    let text = text.to_str()?.to_owned();
    let suffix = |n: &str| n.rsplit_once('.').map(|(_, s)| s.to_owned());
    let bare = !name.contains('/') && !text.contains('/') && !text.starts_with('.');
    (bare && suffix(&text).is_some() && suffix(&text) == suffix(name)).then_some(text)
}

/// The id of the store at `store` (`.kbuild/id`, made when the store was created).
pub fn store_id(store: &Path) -> String {
    let id = std::fs::read_to_string(store.join(".kbuild/id")).unwrap();
    assert!(id.len() == 33 && id.ends_with('\n'), "store id {id:?}");
    id.trim_end().to_owned()
}

/// The exact root after switching to `g` (a generation of the store at `store`) from `base`:
/// kbuild's state directory, the flip point, one relative link per managed path, `state.json`
/// recording `created` (the directories kbuild made and still needs) and `adopted` (original
/// bytes kept aside).
pub fn expect_in(
    store: &Path,
    base: &Listing,
    g: &Gen,
    created: &[&str],
    adopted: &[(&str, &[u8])],
) -> Listing {
    let mut l = base.clone();
    l.dir("etc/.kbuild/adopted");
    l.link("etc/.kbuild/current", &g.rootfs.display().to_string());
    let managed = g.managed();
    for p in &managed {
        l.link(p.trim_start_matches('/'), &g.link_text(p));
    }
    for d in created {
        l.dir(d.trim_start_matches('/'));
    }
    for (p, bytes) in adopted {
        l.file(&format!("etc/.kbuild/adopted{p}"), bytes);
        l.remove(p.trim_start_matches('/'));
        l.link(p.trim_start_matches('/'), &link_text(p));
    }
    let adopted: Vec<&str> = adopted.iter().map(|(p, _)| *p).collect();
    l.file(
        "etc/.kbuild/state.json",
        state_json(store, g, &managed, created, &adopted).as_bytes(),
    );
    l
}

/// Every path `g` manages resolves, in `root`, into `g`'s rootfs (so it has `g`'s bytes):
/// where the rootfs has a link (an enablement link), to what that link resolves to there.
pub fn assert_resolves_in(root: &Path, g: &Gen, when: &str) {
    let rootfs = std::fs::canonicalize(&g.rootfs).unwrap();
    for p in g.managed() {
        let rel = p.trim_start_matches('/');
        let resolved = std::fs::canonicalize(root.join(rel))
            .unwrap_or_else(|e| panic!("{when}: {p} does not resolve in {}: {e}", root.display()));
        let expected = std::fs::canonicalize(rootfs.join(rel)).unwrap();
        assert!(expected.starts_with(&rootfs), "{when}: {p}");
        assert_eq!(resolved, expected, "{when}: {p}");
    }
}

/// The exact bytes of `state.json` for generation `g`.
pub fn state_json(
    store: &Path,
    g: &Gen,
    managed: &BTreeSet<String>,
    created: &[&str],
    adopted: &[&str],
) -> String {
    fn array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
        let items: BTreeSet<&str> = items.into_iter().collect();
        if items.is_empty() {
            return "[]".into();
        }
        let body: Vec<String> = items
            .iter()
            .map(|s| format!("    {}", toml_string(s)))
            .collect();
        format!("[\n{}\n  ]", body.join(",\n"))
    }
    format!(
        "{{\n  \"version\": 2,\n  \"store\": {},\n  \"store_id\": {},\n  \"generation\": {},\n  \"rootfs\": {},\n  \"managed\": {},\n  \"created_dirs\": {},\n  \"adopted\": {}\n}}\n",
        toml_string(&store.display().to_string()),
        toml_string(&store_id(store)),
        g.number,
        toml_string(&g.rootfs.display().to_string()),
        array(managed.iter().map(String::as_str)),
        array(created.iter().copied()),
        array(adopted.iter().copied()),
    )
}

// ---------------------------------------------------------------------------------------------
// Crashed switches
// ---------------------------------------------------------------------------------------------

/// The name of step `n`, where a run with `KBUILD_FAULT_AT=n` was stopped (from its line
/// `kbuild: fault injected at step N (NAME)`).
#[track_caller]
pub fn fault_step(r: &Run, n: u64) -> String {
    let prefix = format!("kbuild: fault injected at step {n} (");
    r.stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("crash at step {n}: {}", r.stderr))
        .trim_end_matches(')')
        .to_owned()
}

/// What a crashed switch from `a` (root listing `la`) to `b` (`lb`) may leave: the flip point
/// names one of them; every path both manage is kbuild's link and resolves into that
/// generation (so never a mix); a path only one manages is absent, kbuild's link (resolving
/// into the flip point's generation, or dangling after the flip when only `a` has it) or a
/// directory (when it is a directory of the other: paths that change type); kbuild's state is
/// `a`'s or `b`'s; nothing appears that neither root has; every host file, and every
/// directory both roots have, is still there.
#[track_caller]
pub fn assert_crashed_between(w: &World, a: &Gen, b: &Gen, la: &Listing, lb: &Listing, when: &str) {
    let current = std::fs::read_link(w.root.join("etc/.kbuild/current"))
        .unwrap_or_else(|e| panic!("{when}: no flip point: {e}"));
    let cur = if current == a.rootfs {
        a
    } else if current == b.rootfs {
        b
    } else {
        panic!("{when}: current -> {}", current.display())
    };
    let (ma, mb) = (a.managed(), b.managed());
    for p in ma.union(&mb) {
        let rel = p.trim_start_matches('/');
        let host = w.root.join(rel);
        let both = ma.contains(p) && mb.contains(p);
        let Ok(m) = host.symlink_metadata() else {
            assert!(!both, "{when}: {p}, managed by both, is missing");
            continue;
        };
        if m.is_dir() {
            assert!(!both, "{when}: {p} is a directory");
            let dir_of_other =
                la.0.get(rel) == Some(&Item::Dir) || lb.0.get(rel) == Some(&Item::Dir);
            assert!(dir_of_other, "{when}: {p} is a directory neither root has");
            continue;
        }
        assert!(m.file_type().is_symlink(), "{when}: {p} is not a link");
        let text = std::fs::read_link(&host).unwrap().display().to_string();
        // An alias has either generation's text (replaced after the flip, by one rename), and
        // reads as the unit it names in the root, which is the flip point's generation's.
        let texts = [a, b].map(|g| alias_text(&g.rootfs, p));
        if let Some(t) = texts.iter().flatten().find(|t| **t == text) {
            let named = format!("/etc/systemd/system/{t}");
            if let Ok(bytes) = std::fs::read(&host) {
                assert!(cur.managed().contains(&named), "{when}: {p} -> {t}");
                assert_eq!(bytes, cur.bytes(&named), "{when}: {p} -> {t}");
            }
            continue;
        }
        assert_eq!(text, link_text(p), "{when}: {p}");
        match std::fs::read(&host) {
            Ok(bytes) => {
                assert!(
                    cur.managed().contains(p),
                    "{when}: {p} resolves but generation {} lacks it",
                    cur.number
                );
                assert_eq!(
                    bytes,
                    cur.bytes(p),
                    "{when}: {p} is not generation {}'s",
                    cur.number
                );
            }
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{when}: {p}");
                assert!(
                    ma.contains(p) && !mb.contains(p) && cur.number == b.number,
                    "{when}: {p} dangles"
                );
            }
        }
    }
    // Nothing but paths of the two listings, the flip point and the journal.
    let actual = w.listing();
    for (p, item) in &actual.0 {
        if p == "etc/.kbuild/journal.json" || p == "etc/.kbuild/current" {
            continue;
        }
        if p.starts_with("etc/.kbuild/adopted/") && *item == Item::Dir {
            continue; // emptied directories that held a kept original
        }
        let ok = la.0.get(p) == Some(item) || lb.0.get(p) == Some(item);
        assert!(ok, "{when}: unexpected {p} {item}");
    }
    // Every host file is still there, and so is every directory both listings have.
    for (p, item) in &la.0 {
        if matches!(item, Item::File(_)) && !p.starts_with("etc/.kbuild/") {
            assert_eq!(actual.0.get(p), Some(item), "{when}: host file {p}");
        }
        if *item == Item::Dir && lb.0.get(p) == Some(&Item::Dir) {
            assert_eq!(actual.0.get(p), Some(item), "{when}: directory {p}");
        }
    }
    assert!(
        w.root.join("etc/.kbuild/journal.json").is_file(),
        "{when}: no journal"
    );
}

// ---------------------------------------------------------------------------------------------
// Root listings
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Dir,
    File(Vec<u8>),
    Link(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Dir => write!(f, "dir"),
            Item::Link(t) => write!(f, "-> {t}"),
            Item::File(b) if b.len() <= 4096 => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "file {s:?}"),
                Err(_) => write!(f, "file ({} bytes, blake3 {})", b.len(), blake3_hex(b)),
            },
            Item::File(b) => write!(f, "file ({} bytes, blake3 {})", b.len(), blake3_hex(b)),
        }
    }
}

/// Every path below a root (relative, without the root itself) and what it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing(pub BTreeMap<String, Item>);

impl Listing {
    /// A directory and its missing ancestors.
    pub fn dir(&mut self, rel: &str) {
        let mut p = String::new();
        for c in rel.split('/') {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(c);
            self.0.entry(p.clone()).or_insert(Item::Dir);
        }
    }

    pub fn parent(&mut self, rel: &str) {
        if let Some((parent, _)) = rel.rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, rel: &str, bytes: &[u8]) {
        self.parent(rel);
        self.0.insert(rel.to_owned(), Item::File(bytes.to_vec()));
    }

    pub fn link(&mut self, rel: &str, target: &str) {
        self.parent(rel);
        self.0.insert(rel.to_owned(), Item::Link(target.to_owned()));
    }

    pub fn remove(&mut self, rel: &str) {
        self.0.remove(rel);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(|(p, i)| format!("{p} {i}")).collect()
    }
}

pub fn root_listing(root: &Path) -> Listing {
    let mut l = Listing::default();
    for e in super::walk_any(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type();
        let item = if ft.is_symlink() {
            Item::Link(std::fs::read_link(e.path()).unwrap().display().to_string())
        } else if ft.is_dir() {
            Item::Dir
        } else {
            Item::File(std::fs::read(e.path()).unwrap())
        };
        l.0.insert(rel, item);
    }
    l
}

#[track_caller]
pub fn assert_listing(actual: &Listing, expected: &Listing, when: &str) {
    if actual == expected {
        return;
    }
    let (a, e): (BTreeSet<String>, BTreeSet<String>) = (
        actual.lines().into_iter().collect(),
        expected.lines().into_iter().collect(),
    );
    let mut msg = format!("{when}: the root differs from the expected listing\n");
    for l in e.difference(&a) {
        msg.push_str(&format!("  missing:    {l}\n"));
    }
    for l in a.difference(&e) {
        msg.push_str(&format!("  unexpected: {l}\n"));
    }
    msg.push_str("--- actual\n");
    for l in actual.lines() {
        msg.push_str(&format!("  {l}\n"));
    }
    panic!("{msg}");
}

/// A listing that also notices mtimes, modes and inodes (for "changes nothing").
pub fn full_listing(dir: &Path) -> Vec<Listed> {
    if dir.exists() { listing(dir) } else { vec![] }
}

/// Whether the object `name` is a kept input archive (its metadata's deriver is
/// `fixed:<algorithm>:<hex>`).
pub fn is_kept_archive(store: &Path, name: &str) -> bool {
    std::fs::read(store.join(".kbuild/meta").join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["deriver"].as_str().map(|d| d.starts_with("fixed:")))
        .unwrap_or(false)
}

pub fn store_objects(store: &Path) -> BTreeSet<String> {
    top_level(store)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The store objects a rootfs reaches: itself, and every object whose inode one of its files
/// shares (found by inode, independently of kbuild's metadata).
pub fn reachable(store: &Path, g: &Gen) -> BTreeSet<String> {
    use std::os::unix::fs::MetadataExt;
    let mut inodes = BTreeSet::new();
    for e in super::walk_any(&g.rootfs) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            inodes.insert(e.metadata().unwrap().ino());
        }
    }
    let mut out = BTreeSet::from([g.object()]);
    // The input archive the generation pins, kept by gc with it (every World generation pins
    // the one fixture input).
    if store.join(super::kept_fixture()).exists() {
        out.insert(super::kept_fixture());
    }
    for o in store_objects(store) {
        let m = std::fs::symlink_metadata(store.join(&o)).unwrap();
        if m.is_file() && inodes.contains(&m.ino()) {
            out.insert(o);
        }
    }
    out
}

/// What a switch of the seed master prints after its plan on a root that is not `/`: its
/// three health checks, `verb` being "not run" after a switch and "would not run" in a dry
/// run (never "passed": nothing was checked).
pub fn master_checks(verb: &str) -> String {
    format!(
        "health checks ({verb}: root is not `/`):\n  \
         kube-apiserver.service  GET http://10.72.84.160:8080/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n  \
         kube-controller-manager.service  GET http://127.0.0.1:10252/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n  \
         kube-scheduler.service  GET http://127.0.0.1:10251/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n"
    )
}
