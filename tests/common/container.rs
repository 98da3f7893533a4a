//! A Debian 12 container with systemd as PID 1, for the real-systemd tier (`tests/systemd.rs`).
//!
//! Facts this relies on (measured on the CI machines): PID 1 of the host is not systemd and
//! there is no host D-Bus, so `systemd-nspawn --boot` needs `--register=no --keep-unit`;
//! `SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1` gives the container a clean cgroup v2; `machinectl`
//! cannot reach the container, `nsenter -t <its PID 1> -a` can; `--private-network` keeps its
//! ports apart from the host's.
//!
//! The base tree (debootstrap, 40–100 s) and Debian packages are cached outside the
//! repository, in `$KBUILD_TEST_CACHE` (default `/var/cache/kbuild-test`), created once under
//! a lock into a temp name and renamed, so concurrent or killed runs never see half a tree.
//! Each run copies the tree (about 2 s) and boots its own container; the [`Container`] guard
//! powers it off (and kills it if that does not work) even when the test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the base tree and packages are cached.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kbuild-test"))
}

/// Why the tier cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    // `/proc/self` belongs to the effective uid.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        return Some("not running as root (systemd-nspawn needs root)".into());
    }
    for tool in [
        "systemd-nspawn",
        "nsenter",
        "debootstrap",
        "dpkg-deb",
        "apt-get",
    ] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` is not installed (apt-get install systemd-container debootstrap)"
            ));
        }
    }
    None
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Runs a shell script on the host; panics with its output when it fails.
pub fn host_sh(script: &str) -> String {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "host script failed ({}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The cached base tree (made now if missing) and the cached `.deb` of `package`.
pub fn prepare(package: &str) -> (PathBuf, PathBuf) {
    let cache = cache_dir();
    let script = format!(
        r#"set -eu
C='{cache}'
mkdir -p "$C/debs"
exec 9>"$C/.lock"
flock 9
if [ ! -x "$C/bookworm/usr/lib/systemd/systemd" ]; then
    MIRROR=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
    [ -n "$MIRROR" ] || MIRROR=$(awk '$1=="deb" && $2 !~ /\[/ && $2 !~ /security/ {{print $2; exit}}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
    rm -rf "$C"/bookworm.tmp.* "$C/bookworm"
    T=$(mktemp -d "$C/bookworm.tmp.XXXXXX")
    # mktemp makes it 0700: the container's `/` would shut out every user but root (dbus).
    chmod 755 "$T"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl bookworm "$T" "$MIRROR" >"$C/debootstrap.log" 2>&1 \
        || {{ tail -n 30 "$C/debootstrap.log" >&2; exit 1; }}
    mv -T "$T" "$C/bookworm"
fi
cd "$C/debs"
if ! ls {package}_*.deb >/dev/null 2>&1; then
    T=$(mktemp -d "$C/debs/.tmp.XXXXXX")
    (cd "$T" && apt-get download {package} >/dev/null 2>&1 || {{ apt-get update -qq && apt-get download {package}; }})
    mv "$T"/{package}_*.deb . && rmdir "$T"
fi
ls "$C/debs"/{package}_*.deb | head -n1
"#,
        cache = cache.display()
    );
    let deb = host_sh(&script).trim().to_owned();
    (cache.join("bookworm"), PathBuf::from(deb))
}

/// A booted container; powered off (or killed) when dropped.
pub struct Container {
    pub tree: PathBuf,
    pub name: String,
    binds: Vec<String>,
    nspawn: Option<Child>,
    pid1: u32,
    log: PathBuf,
}

/// The outcome of a command run in the container.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Container {
    /// Boots `tree` (a copy of the base tree, owned by the caller) with `binds`
    /// (`--bind=`/`--bind-ro=` arguments), and waits until systemd says `running`.
    pub fn boot(tree: &Path, name: &str, binds: &[String]) -> Container {
        let mut c = Container {
            tree: tree.to_owned(),
            name: name.to_owned(),
            binds: binds.to_vec(),
            nspawn: None,
            pid1: 0,
            log: tree.with_extension("nspawn.log"),
        };
        c.start();
        c
    }

    fn start(&mut self) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new("systemd-nspawn")
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
            ])
            .arg("-D")
            .arg(&self.tree)
            .arg("-M")
            .arg(&self.name)
            .args(&self.binds)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let nspawn_pid = child.id();
        self.nspawn = Some(child);
        // PID 1 of the container: the child of nspawn once it runs systemd (nspawn's first
        // child may be its short-lived intermediate process, in other namespaces).
        let deadline = Instant::now() + Duration::from_secs(30);
        self.pid1 = loop {
            if let Some(p) = child_of(nspawn_pid).filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "systemd")
            }) {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "the container did not start; nspawn log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // `--wait` returns once boot is over (or systemd is not reachable yet: retried).
        let deadline = Instant::now() + Duration::from_secs(120);
        let state = loop {
            let o = self.sh("timeout 60 systemctl is-system-running --wait");
            let s = o.stdout.trim().to_owned();
            if ["running", "degraded", "maintenance", "stopping"].contains(&s.as_str())
                || Instant::now() > deadline
            {
                break s;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if state != "running" {
            let why = self.sh(
                "systemctl --failed --no-legend --plain; systemctl list-jobs --no-legend --plain",
            );
            panic!(
                "the container's systemd is `{state}`, not `running`; failed units and jobs:\n{}{}\nnspawn log:\n{}",
                why.stdout,
                why.stderr,
                self.log_text()
            );
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `script` with `/bin/sh` inside the container (all its namespaces, its root).
    pub fn sh(&self, script: &str) -> Out {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.pid1.to_string())
            .args(["-a", "--", "/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `script`, which must succeed; its stdout.
    #[track_caller]
    pub fn ok(&self, script: &str) -> String {
        let o = self.sh(script);
        assert_eq!(
            o.code,
            Some(0),
            "in the container: `{script}` failed\nstdout:\n{}\nstderr:\n{}",
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Powers the container off and waits for nspawn to exit (killing it after 30 s).
    pub fn poweroff(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        let _ = self.sh("systemctl poweroff");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                // Only the nspawn process this guard started (and its container with it).
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Powers off, then boots the same tree again.
    pub fn reboot(&mut self) {
        self.poweroff();
        self.start();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.poweroff();
    }
}

/// The first child of `pid` (from `/proc/PID/task/*/children`).
fn child_of(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().ok();
        }
    }
    None
}
