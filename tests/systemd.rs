//! The real-systemd tier: kbuild run with root `/` inside a Debian 12 container whose PID 1
//! is systemd 252, so every systemctl call runs for real, against a real daemon nobody here
//! wrote (etcd from Debian's `etcd-server` package). Every outcome is checked through systemd
//! itself (`systemctl show`, `is-enabled`), the daemon answering on its port, and the links.
//!
//! Without root or systemd-nspawn the tier says why it skipped and passes; with `CI` set
//! (`.ci/run` exports it) it must run. One container serves all scenarios, in sequence.
//! A separate test (always run) checks the enablement links a build writes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::container::{Container, Out};
use common::etcd::{self, EtcdTier};
use common::world::World;

const UNIT: &str = "etcd.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/etcd.service";

/// A template enabled as its `DefaultInstance=` (`kb-sleep@one.service`) by the generation's
/// links, never by `systemctl enable`.
const SLEEP_TEMPLATE: &str = "[Unit]\nDescription=sleeper %i\n\n[Service]\nExecStart=/bin/sleep infinity\n\n\
                              [Install]\nWantedBy=multi-user.target\nDefaultInstance=one\n";
const SLEEP: &str = "kb-sleep@one.service";

/// The recipe: etcd's binary from input `input`, its env file listening on `port`, the unit
/// (with `unit_extra` in `[Service]`, and the alias `kb-etcd.service`), a drop-in setting
/// `KB_DROPIN=dropin`, and the template [`SLEEP_TEMPLATE`].
fn etcd_recipe(input: &str, port: u16, unit_extra: &str, dropin: &str) -> String {
    format!(
        "{}[files.\"/etc/systemd/system/etcd.service.d/10-kb.conf\"]\ntext = {}\n\n\
         [files.\"/etc/systemd/system/kb-sleep@.service\"]\ntext = {}\n",
        etcd::etcd_recipe(
            input,
            &port.to_string(),
            etcd::PEER,
            unit_extra,
            "Alias=kb-etcd.service\n"
        ),
        toml(&format!("[Service]\nEnvironment=KB_DROPIN={dropin}\n")),
        toml(SLEEP_TEMPLATE),
    )
}

/// An env file with the forms systemd's reader treats specially (systemd.exec(5),
/// `EnvironmentFile=`; env-file.c): comments, blanks around `=`, single and double quotes,
/// escapes inside and outside quotes, a line continuation, joined quoted parts, an empty value.
const ENV_FILE: &str = "# a comment\n; another comment\n\
    KB_PLAIN=value\n\
    KB_SPACED = \"spaced value\"  \n\
    KB_SINGLE='single $kept \\ kept'\n\
    KB_DOUBLE=\"a=\\\"b\\\" \\\\ \\$d\"\n\
    KB_BARE=one\\ two\n\
    KB_CONT=\"first \\\nsecond\"\n\
    KB_JOINED=\"a\"'b'c\n\
    KB_EMPTY=\n\
    KB_TRAIL=trailing   \n";

/// kbuild's reading, as the `KB_` variables a unit gets.
fn kbuild_env_view(r: &kbuild::envfile::Reading) -> BTreeMap<String, String> {
    r.environment()
        .into_iter()
        .filter(|(k, _)| k.starts_with("KB_"))
        .collect()
}

fn toml(s: &str) -> String {
    format!("{s:?}")
}

/// `systemctl show` of the unit: ActiveState, SubState, MainPID, NRestarts, LoadState.
#[derive(Debug, PartialEq, Eq)]
struct Show {
    load: String,
    active: String,
    main_pid: u32,
    restarts: u32,
}

fn show(c: &Container) -> Show {
    let out = c.ok(&format!(
        "systemctl show -p LoadState,ActiveState,MainPID,NRestarts {UNIT}"
    ));
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in `systemctl show`:\n{out}"))
            .to_owned()
    };
    Show {
        load: get("LoadState"),
        active: get("ActiveState"),
        main_pid: get("MainPID").parse().unwrap(),
        restarts: get("NRestarts").parse().unwrap(),
    }
}

/// `ActiveState`, `SubState`, `Result` and `ExecMainStatus` of the unit, read together once
/// it is between runs: not starting or stopping (`ActiveState` neither `activating` nor
/// `deactivating`), or waiting to be restarted (`SubState=auto-restart`, which systemd 252
/// shows as `activating`). Polled every 50 ms for at most 30 s.
fn settled(c: &Container) -> BTreeMap<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o: BTreeMap<String, String> = c
            .ok(&format!(
                "systemctl show -p ActiveState,SubState,Result,ExecMainStatus {UNIT}"
            ))
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let between = !["activating", "deactivating"].contains(&o["ActiveState"].as_str())
            || o["SubState"] == "auto-restart";
        if between {
            return o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{UNIT} still starting or stopping after 30 s: {o:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The unit is loaded, active, has not crashed, and its main process differs from `not`.
#[track_caller]
fn assert_running(c: &Container, not: &[u32], when: &str) -> u32 {
    let s = show(c);
    assert_eq!(
        (s.load.as_str(), s.active.as_str(), s.restarts),
        ("loaded", "active", 0),
        "{when}: {s:?}"
    );
    assert!(
        s.main_pid != 0 && !not.contains(&s.main_pid),
        "{when}: MainPID {} (earlier: {not:?})",
        s.main_pid
    );
    assert_eq!(
        c.ok(&format!("systemctl is-enabled {UNIT}")).trim(),
        "enabled",
        "{when}"
    );
    s.main_pid
}

#[track_caller]
fn assert_serves(t: &EtcdTier, port: u16, closed: &[u16], when: &str) {
    assert_eq!(
        t.health(port).as_deref(),
        Some(r#"{"health":"true"}"#),
        "{when}: port {port}"
    );
    for p in closed {
        assert_eq!(t.health(*p), None, "{when}: port {p} should be closed");
    }
}

/// The running daemon's own environment variable `key` (from /proc/MAINPID/environ).
fn daemon_env(c: &Container, pid: u32, key: &str) -> Option<String> {
    let env = c.ok(&format!("tr '\\0' '\\n' < /proc/{pid}/environ"));
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

/// The unit-action lines of a plan (`start`, `stop`, `restart`), exactly.
#[track_caller]
fn assert_actions(o: &Out, expected: &[&str]) {
    let actions: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| {
            ["  start ", "  stop ", "  restart ", "  reload "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    assert_eq!(actions, expected, "{}", o.stdout);
    // systemctl ran for real: nothing is printed as not run.
    assert!(!o.stdout.contains("systemctl"), "{}", o.stdout);
}

#[track_caller]
fn kb_ok(t: &EtcdTier, args: &str) -> Out {
    let o = t.kb(args);
    assert_eq!(o.code, Some(0), "kbuild {args}: {o:?}");
    o
}

/// Symlinks under /etc (and /usr/local) whose target does not exist, sorted.
fn dangling(c: &Container) -> String {
    c.ok("find /etc /usr/local -xdev -xtype l | sort")
}

/// `readlink` of kbuild's link at `path` goes through the flip point; it resolves into the
/// active rootfs.
#[track_caller]
fn assert_through_flip_point(c: &Container, path: &str) {
    let depth = path.matches('/').count() - 1;
    let expected = format!("{}etc/.kbuild/current{path}", "../".repeat(depth));
    assert_eq!(c.ok(&format!("readlink {path}")).trim(), expected, "{path}");
    let current = c.ok("readlink /etc/.kbuild/current");
    let resolved = c.ok(&format!("readlink -f {path}"));
    assert!(
        resolved.starts_with(current.trim()),
        "{path} resolves to {resolved}, outside the active rootfs {current}"
    );
}

#[test]
fn etcd_under_real_systemd() {
    if etcd::skipped() {
        return;
    }
    let started = std::time::Instant::now();

    // /kb (bound into the container): recipes, store, lock, and two etcd inputs — the
    // package's data tar, and the same with the binary changed (bytes appended to the ELF
    // file, which still runs).
    let mut t = EtcdTier::boot(
        "kbuild-systemd-",
        "kbtest",
        "mkdir x; cd x; tar xf ../etcd.tar ./usr/bin/etcd; printf 'kbuild-test' >> usr/bin/etcd
         cp ../etcd.tar ../etcd-b.tar; tar --delete -f ../etcd-b.tar ./usr/bin/etcd
         tar rf ../etcd-b.tar ./usr/bin/etcd; cd ..; rm -rf x",
    );
    let booted = started.elapsed();
    let before = dangling(&t.c);

    // 1. The first switch starts etcd, enabled through the generation's own links.
    t.recipe("etcd", &etcd_recipe("etcd", 2379, "", "one"));
    t.build("etcd", 1);
    let o = kb_ok(&t, "switch");
    assert_actions(
        &o,
        &[
            "  start   etcd.service (new)",
            "  start   kb-sleep@one.service (new)",
        ],
    );
    let p1 = assert_running(&t.c, &[], "after the first switch");
    assert_serves(&t, 2379, &[], "after the first switch");
    assert_through_flip_point(&t.c, WANTS);
    assert_through_flip_point(&t.c, "/etc/systemd/system/etcd.service");
    // The template's default instance: enabled and started through the generation's link.
    assert_eq!(
        t.c.ok(&format!("systemctl is-enabled {SLEEP}")).trim(),
        "enabled"
    );
    assert_eq!(
        t.c.ok(&format!("systemctl is-active {SLEEP}")).trim(),
        "active"
    );
    assert_through_flip_point(
        &t.c,
        "/etc/systemd/system/multi-user.target.wants/kb-sleep@one.service",
    );
    assert_eq!(
        t.c.ok("readlink /etc/.kbuild/current/etc/systemd/system/multi-user.target.wants/kb-sleep@one.service").trim(),
        "../kb-sleep@.service"
    );
    assert_eq!(
        t.c.ok(&format!("readlink /etc/.kbuild/current{WANTS}"))
            .trim(),
        "../etcd.service"
    );
    // Nothing under /etc points straight into the store (what `systemctl enable` would do).
    assert_eq!(
        t.c.ok("find /etc -xdev -lname '/kb/store/*' ! -path /etc/.kbuild/current | sort"),
        ""
    );
    assert_eq!(daemon_env(&t.c, p1, "KB_DROPIN").as_deref(), Some("one"));
    // `Alias=`: the root's link has the rootfs's text, so systemd 252 takes it for another
    // name of etcd.service (through the flip point it loaded a second copy of the unit).
    assert_eq!(
        t.c.ok("readlink /etc/systemd/system/kb-etcd.service")
            .trim(),
        "etcd.service"
    );
    assert_eq!(
        t.c.ok("systemctl show -p Id kb-etcd.service").trim(),
        "Id=etcd.service"
    );
    assert!(
        t.c.ok("systemctl show -p Names etcd.service")
            .split_whitespace()
            .any(|n| n == "kb-etcd.service" || n == "Names=kb-etcd.service"),
        "kb-etcd.service is a name of etcd.service"
    );
    t.c.ok("systemctl start kb-etcd.service");
    assert_eq!(
        assert_running(&t.c, &[], "after starting the alias"),
        p1,
        "starting the alias starts no second copy"
    );

    // 2. An env-file change restarts it: a new process, on the new port; the old is closed.
    t.recipe("etcd", &etcd_recipe("etcd", 2479, "", "one"));
    t.build("etcd", 2);
    let o = kb_ok(&t, "switch");
    assert_actions(&o, &["  restart etcd.service (/etc/etcd/etcd.env changed)"]);
    let p2 = assert_running(&t.c, &[p1], "after the env-file change");
    assert_serves(&t, 2479, &[2379], "after the env-file change");

    // 3. A unit-file change restarts it.
    let extra = "Environment=KB_UNIT=two";
    t.recipe("etcd", &etcd_recipe("etcd", 2479, extra, "one"));
    t.build("etcd", 3);
    let o = kb_ok(&t, "switch");
    assert_actions(
        &o,
        &["  restart etcd.service (/etc/systemd/system/etcd.service changed)"],
    );
    let p3 = assert_running(&t.c, &[p1, p2], "after the unit-file change");
    assert_eq!(daemon_env(&t.c, p3, "KB_UNIT").as_deref(), Some("two"));
    assert_serves(&t, 2479, &[2379], "after the unit-file change");

    // 4. A change of the ExecStart binary restarts it.
    t.recipe("etcd", &etcd_recipe("etcd-b", 2479, extra, "one"));
    t.build("etcd", 4);
    let o = kb_ok(&t, "switch");
    assert_actions(
        &o,
        &["  restart etcd.service (/usr/local/bin/etcd changed)"],
    );
    let p4 = assert_running(&t.c, &[p1, p2, p3], "after the binary change");
    assert_eq!(
        t.c.ok(&format!("tail -c 11 /proc/{p4}/exe")),
        "kbuild-test",
        "the daemon runs the new binary"
    );
    assert_serves(&t, 2479, &[2379], "after the binary change");

    // 5. Rollback restores the previous daemon (generation 3: the package's binary).
    let o = kb_ok(&t, "rollback");
    assert!(o.stderr.contains("to generation 3"), "{o:?}");
    assert_actions(
        &o,
        &["  restart etcd.service (/usr/local/bin/etcd changed)"],
    );
    let p5 = assert_running(&t.c, &[p1, p2, p3, p4], "after rollback");
    assert_ne!(t.c.ok(&format!("tail -c 11 /proc/{p5}/exe")), "kbuild-test");
    assert_eq!(daemon_env(&t.c, p5, "KB_UNIT").as_deref(), Some("two"));
    assert_serves(&t, 2479, &[2379], "after rollback");

    // 6. A drop-in change restarts it.
    t.recipe("etcd", &etcd_recipe("etcd", 2479, extra, "two"));
    t.build("etcd", 5);
    let o = kb_ok(&t, "switch");
    assert_actions(
        &o,
        &["  restart etcd.service (drop-in etcd.service.d/10-kb.conf changed)"],
    );
    let p6 = assert_running(&t.c, &[p1, p2, p3, p4, p5], "after the drop-in change");
    assert_eq!(daemon_env(&t.c, p6, "KB_DROPIN").as_deref(), Some("two"));
    assert_serves(&t, 2479, &[2379], "after the drop-in change");

    // 7. A generation without the service stops it and leaves no unit, link or binary.
    t.recipe(
        "other",
        "[files.\"/etc/kb-note\"]\ntext = \"no etcd here\\n\"\n",
    );
    t.build("other", 6);
    let o = kb_ok(&t, "switch 6");
    assert_actions(
        &o,
        &[
            "  stop    etcd.service (removed)",
            "  stop    kb-sleep@one.service (removed)",
        ],
    );
    assert_eq!(
        t.c.sh(&format!("systemctl is-active {SLEEP}"))
            .stdout
            .trim(),
        "inactive"
    );
    let s = show(&t.c);
    assert_eq!(
        (s.load.as_str(), s.active.as_str(), s.main_pid),
        ("not-found", "inactive", 0)
    );
    assert_eq!(t.health(2479), None);
    assert_eq!(
        t.c.ok(
            "ls -d /etc/systemd/system/etcd.service /etc/systemd/system/etcd.service.d \
             /etc/systemd/system/multi-user.target.wants/etcd.service /usr/local/bin/etcd \
             /etc/systemd/system/kb-etcd.service /etc/etcd 2>/dev/null; true"
        ),
        ""
    );
    assert_eq!(
        t.c.sh(&format!("systemctl is-enabled {UNIT}")).code,
        Some(1),
        "not enabled any more"
    );

    // 8. A start that fails: its health gate fails (every live switch is gated on its
    // units); kept, as --no-rollback asks, exit 4, naming the unit and its journal.
    t.recipe(
        "etcd",
        &etcd_recipe("etcd", 2579, "", "one").replace(
            "ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380",
            "ETCD_LISTEN_PEER_URLS=bogus",
        ),
    );
    t.build("etcd", 7);
    let o = t.kb("switch 7 --no-rollback");
    assert_eq!(o.code, Some(4), "{o:?}");
    assert_actions(
        &o,
        &[
            "  start   etcd.service (new)",
            "  start   kb-sleep@one.service (new)",
        ],
    );
    assert!(
        o.stderr.contains(
            "error: generation 7 failed its health gate; kept, as --no-rollback asks\n  caused by: unit actions failed: `systemctl start etcd.service` exited with exit status: 1 (see `journalctl -u etcd.service`)\n"
        ),
        "{}",
        o.stderr
    );
    // Restart=on-failure retries it until the start limit fails it. systemd records why
    // (the daemon exited with an error) once a run has ended: `Result` is reset to `success`
    // when the next automatic start begins, so it is read with the state, once the unit is
    // between runs (regression: read while a retry was starting, it said `success`).
    let o = settled(&t.c);
    let state = (o["ActiveState"].as_str(), o["SubState"].as_str());
    assert!(
        [("failed", "failed"), ("activating", "auto-restart")].contains(&state),
        "{o:?}"
    );
    assert_eq!(
        (o["Result"].as_str(), o["ExecMainStatus"].as_str()),
        ("exit-code", "1"),
        "{o:?}"
    );

    // 9. Back on a good generation; after a reboot the active generation's services start.
    let o = kb_ok(&t, "switch 2");
    assert_actions(&o, &["  restart etcd.service (/etc/etcd/etcd.env changed)"]);
    // NRestarts keeps the automatic restarts of the failed generation when `systemctl
    // restart` came while one was pending (systemd resets it only on a start from rest).
    let s = show(&t.c);
    assert_eq!(
        (s.load.as_str(), s.active.as_str()),
        ("loaded", "active"),
        "after switching from the failed generation: {s:?}"
    );
    assert_serves(
        &t,
        2479,
        &[2579],
        "after switching from the failed generation",
    );
    let before_reboot = started.elapsed();
    t.c.reboot();
    let p9 = assert_running(&t.c, &[], "after a reboot");
    assert_eq!(
        t.c.ok(&format!("systemctl is-active {SLEEP}")).trim(),
        "active"
    );
    assert_eq!(daemon_env(&t.c, p9, "KB_DROPIN").as_deref(), Some("one"));
    assert_serves(&t, 2479, &[2379, 2579], "after a reboot");
    let reboot_time = started.elapsed() - before_reboot;

    // 10. After gc nothing dangles, and the links still go through the flip point.
    let o = kb_ok(&t, "gc --keep 1");
    for n in [1, 3, 4, 5, 6] {
        assert!(
            o.stderr.contains(&format!("Removed generation {n}\n")),
            "{o:?}"
        );
    }
    assert_eq!(
        t.c.ok("ls /kb/store | grep -c -- -rootfs-").trim(),
        "2",
        "gc keeps the rootfs of generations 2 (active) and 7 (newest) only: {}",
        t.c.ok("ls /kb/store")
    );
    assert_eq!(dangling(&t.c), before, "links dangling after gc");
    assert_through_flip_point(&t.c, WANTS);
    kb_ok(&t, "verify --root /");
    assert_running(&t.c, &[], "after gc");

    // 11. kbuild reads a rendered env file as systemd does: the environment systemd gives a
    // unit from it is exactly what kbuild's reader (the one `format = "env"` checks with)
    // finds in it.
    t.recipe(
        "envcheck",
        &format!(
            "[files.\"/etc/kb/env\"]\nformat = \"env\"\ntext = {}\n\n\
             [files.\"/etc/systemd/system/kb-env.service\"]\ntext = {}\n",
            toml(ENV_FILE),
            toml(
                "[Service]\nEnvironmentFile=/etc/kb/env\nExecStart=/bin/sleep infinity\n\n\
                 [Install]\nWantedBy=multi-user.target\n"
            ),
        ),
    );
    t.build("envcheck", 8);
    let o = kb_ok(&t, "switch 8");
    assert_actions(
        &o,
        &[
            "  start   kb-env.service (new)",
            "  stop    etcd.service (removed)",
            "  stop    kb-sleep@one.service (removed)",
        ],
    );
    let pid = t.c.ok("systemctl show -p MainPID --value kb-env.service");
    let environ = t.c.ok(&format!("cat /proc/{}/environ", pid.trim()));
    let systemd: BTreeMap<String, String> = environ
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("KB_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let rendered = t.c.ok("cat /etc/kb/env");
    assert_eq!(rendered, ENV_FILE);
    let reading = kbuild::envfile::read(&rendered);
    assert_eq!(
        reading.faults,
        vec![],
        "kbuild accepted the file: it reads it as written"
    );
    assert_eq!(kbuild_env_view(&reading), systemd);
    let expected: BTreeMap<String, String> = [
        ("KB_PLAIN", "value"),
        ("KB_SPACED", "spaced value"),
        ("KB_SINGLE", "single $kept \\ kept"),
        ("KB_DOUBLE", "a=\"b\" \\ $d"),
        ("KB_BARE", "one two"),
        ("KB_CONT", "first second"),
        ("KB_JOINED", "abc"),
        ("KB_EMPTY", ""),
        ("KB_TRAIL", "trailing"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(systemd, expected, "what systemd 252 gives the unit");

    t.c.poweroff();
    eprintln!(
        "real-systemd tier: booted in {booted:?}, reboot {reboot_time:?}, total {:?}",
        started.elapsed()
    );
}

/// The links a build writes for `[Install]`: in the rootfs, relative to the unit beside them,
/// and in the root through the flip point; the switch never prints `enable` or `disable`.
#[test]
fn enablement_links_are_part_of_the_generation() {
    let w = World::new();
    let unit =
        |install: &str| format!("[Service]\nExecStart=/usr/local/bin/x\n[Install]\n{install}");
    w.sb.write_recipe(
        "units",
        &format!(
            "[files.\"/etc/systemd/system/a.service\"]\ntext = {}\n\
             [files.\"/etc/systemd/system/m@.service\"]\ntext = {}\n\
             [files.\"/etc/systemd/system/b@.service\"]\ntext = {}\n",
            toml(&unit(
                "WantedBy=multi-user.target\nRequiredBy=x.target\nUpheldBy=y.target\nAlias=kv.service\nAlso=m@.service\n"
            )),
            toml(&unit("WantedBy=%p.target\nDefaultInstance=one\n")),
            toml(&unit("WantedBy=multi-user.target\n")),
        ),
    );
    let g = w.build(&["units"], &[], 1);
    let links: Vec<(String, String)> = common::walk_any(&g.rootfs)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_symlink())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(&g.rootfs)
                .unwrap()
                .display()
                .to_string();
            (
                rel,
                std::fs::read_link(e.path()).unwrap().display().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("etc/systemd/system/kv.service", "a.service"),
        (
            "etc/systemd/system/m.target.wants/m@one.service",
            "../m@.service",
        ),
        (
            "etc/systemd/system/multi-user.target.wants/a.service",
            "../a.service",
        ),
        (
            "etc/systemd/system/x.target.requires/a.service",
            "../a.service",
        ),
        (
            "etc/systemd/system/y.target.upholds/a.service",
            "../a.service",
        ),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(links, expected);
    let r = w.ok(&["switch"]);
    assert!(!r.stdout.contains("enable"), "{}", r.stdout);
    assert!(!r.stdout.contains("disable"), "{}", r.stdout);
    assert!(
        r.stdout.contains("  systemctl start a.service\n"),
        "{}",
        r.stdout
    );
    for (rel, text) in &expected {
        let link = std::fs::read_link(w.root.join(rel)).unwrap();
        let depth = rel.matches('/').count();
        // An alias keeps its own text (systemd sees another name of the unit beside it).
        let want = if rel.ends_with("kv.service") {
            text.clone()
        } else {
            format!("{}etc/.kbuild/current/{rel}", "../".repeat(depth))
        };
        assert_eq!(link, Path::new(&want), "{rel}");
    }
    // An [Install] line that would put a link outside the unit directory is refused.
    w.sb.write_recipe(
        "bad",
        &format!(
            "[files.\"/etc/systemd/system/a.service\"]\ntext = {}\n",
            toml(&unit("WantedBy=../../../usr/local/bin/evil.target\n"))
        ),
    );
    let r = w.run(&["build", "bad"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        "error: cannot build bad\n  caused by: unit `a.service`: `WantedBy=../../../usr/local/bin/evil.target` names no unit systemd can load: `/` is not allowed in a unit name (only letters, digits and `:-_.\\@`; `systemd-escape` makes a name from any text)\n\
         help: fix `WantedBy=` in the `[Install]` section of `a.service` (a unit name such as `multi-user.target`), then run `kbuild build` again\n"
    );
}
