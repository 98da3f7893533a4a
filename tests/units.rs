//! Unit actions follow every file a unit reads (drop-ins, environment files set anywhere, with
//! `-` or as globs, `Exec*=` binaries), sockets, timers and paths and the services they
//! start, `on_change`, template units; unit names systemd cannot load are refused at build.
//! The actions are the printed plan and systemctl commands of `switch --root DIR` (not run:
//! the root is not `/`).

mod common;

use common::world::{World, toml_string};

/// One file of a recipe: target, text, extra TOML keys (`mode`, `on_change`).
type File<'a> = (&'a str, &'a str, &'a str);

/// Writes recipe `name` holding literal files.
fn recipe(w: &World, name: &str, files: &[File]) {
    let mut text = String::new();
    for (path, body, extra) in files {
        text.push_str(&format!(
            "[files.{}]\ntext = {}\n{extra}\n",
            toml_string(path),
            toml_string(body)
        ));
    }
    w.sb.write_recipe(name, &text);
}

/// Builds recipe `name` from `files` as generation `number`.
fn build(w: &World, name: &str, files: &[File], number: u64) {
    recipe(w, name, files);
    w.build(&[name], &[], number);
}

/// The unit lines of a plan and the systemctl section of a switch's stdout.
fn units(stdout: &str) -> String {
    let mut out = String::new();
    let mut section = false;
    for line in stdout.lines() {
        section |= line.starts_with("unit actions (");
        let action = [
            "  start ",
            "  stop ",
            "  restart ",
            "  reload ",
            "  keep ",
            "  try-restart ",
        ]
        .iter()
        .any(|p| line.starts_with(p));
        if section || action {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Switches to `number`; the unit lines and commands it printed.
fn switch(w: &World, number: u64) -> String {
    units(&w.ok(&["switch", &number.to_string()]).stdout)
}

const NOT_RUN: &str = "unit actions (not run: root is not `/`):\n  systemctl daemon-reload\n";

/// What a switch prints when it restarts `unit` alone, `why` being the reason shown.
fn restarted(unit: &str, why: &str) -> String {
    format!("  restart {unit} ({why})\n{NOT_RUN}  systemctl restart {unit}\n")
}

/// What a switch prints when it starts the new `unit` alone, which nothing enables.
fn started_not_enabled(unit: &str) -> String {
    format!(
        "  start   {unit} (new; not enabled: boot starts it only if another unit pulls it in)\n{NOT_RUN}  systemctl start {unit}\n"
    )
}

const BIN: &str = "#!/bin/sh\nexec sleep infinity\n";
const X: &str = "mode = \"0555\"";

fn etcd_unit(extra: &str) -> String {
    format!(
        "[Unit]\nDescription=etcd\n\n[Service]\nEnvironmentFile=-/etc/etcd/etcd.env\nExecStart=/usr/local/bin/etcd $ETCD_ARGS\n{extra}\n[Install]\nWantedBy=multi-user.target\n"
    )
}

#[test]
fn a_changed_drop_in_restarts_its_unit_and_names_the_drop_in() {
    let w = World::bare();
    let unit = etcd_unit("");
    let base = [
        ("/etc/systemd/system/etcd.service", unit.as_str(), ""),
        ("/etc/etcd/etcd.env", "ETCD_ARGS=\"--name a\"\n", ""),
        ("/usr/local/bin/etcd", BIN, X),
    ];
    let with = |conf: &'static str| {
        let mut v = base.to_vec();
        v.push(("/etc/systemd/system/etcd.service.d/10-port.conf", conf, ""));
        v
    };
    build(&w, "etcd", &with("[Service]\nEnvironment=PORT=2379\n"), 1);
    build(&w, "etcd", &with("[Service]\nEnvironment=PORT=2479\n"), 2);
    // A type-level drop-in (every service) and a prefix drop-in (`etcd-*`, `etcd.service`
    // is not one of them) apply the same way.
    let mut v = with("[Service]\nEnvironment=PORT=2479\n");
    v.push((
        "/etc/systemd/system/service.d/50-limits.conf",
        "[Service]\nLimitNOFILE=65536\n",
        "",
    ));
    v.push((
        "/etc/systemd/system/etcd-.service.d/x.conf",
        "[Service]\nNice=1\n",
        "",
    ));
    build(&w, "etcd", &v, 3);

    assert_eq!(
        switch(&w, 1),
        "  start   etcd.service (new)\nunit actions (not run: root is not `/`):\n  systemctl daemon-reload\n  systemctl start etcd.service\n"
    );
    assert_eq!(
        switch(&w, 2),
        restarted(
            "etcd.service",
            "drop-in etcd.service.d/10-port.conf changed"
        )
    );
    assert_eq!(
        switch(&w, 3),
        restarted("etcd.service", "drop-in service.d/50-limits.conf changed")
    );
    // Back: the drop-in going away is a change too.
    assert_eq!(
        switch(&w, 1),
        restarted(
            "etcd.service",
            "drop-in etcd.service.d/10-port.conf, drop-in service.d/50-limits.conf changed"
        )
    );
}

#[test]
fn environment_files_from_drop_ins_with_dash_and_globs_restart_their_unit() {
    let w = World::bare();
    let unit = etcd_unit("EnvironmentFile=/etc/etcd/conf.d/*.env\n");
    let files = |env: &'static str, extra: &'static str, glob: &[(&'static str, &'static str)]| {
        let mut v = vec![
            ("/etc/systemd/system/etcd.service", unit.clone(), ""),
            (
                "/etc/etcd/etcd.env",
                "ETCD_ARGS=\"--name a\"\n".to_owned(),
                "",
            ),
            ("/usr/local/bin/etcd", BIN.to_owned(), X),
            (
                "/etc/systemd/system/etcd.service.d/env.conf",
                "[Service]\nEnvironmentFile=-/etc/etcd/extra.env\n".to_owned(),
                "",
            ),
            ("/etc/etcd/extra.env", env.to_owned(), ""),
            ("/etc/etcd/unread.env", extra.to_owned(), ""),
        ];
        for (p, t) in glob {
            v.push((p, (*t).to_owned(), ""));
        }
        v
    };
    let owned = |v: &[(&'static str, String, &'static str)], n| {
        let refs: Vec<File> = v.iter().map(|(p, t, e)| (*p, t.as_str(), *e)).collect();
        build(&w, "etcd", &refs, n);
    };
    owned(
        &files("A=1\n", "U=1\n", &[("/etc/etcd/conf.d/a.env", "X=1\n")]),
        1,
    );
    // The drop-in's `-/etc/etcd/extra.env` changes.
    owned(
        &files("A=2\n", "U=1\n", &[("/etc/etcd/conf.d/a.env", "X=1\n")]),
        2,
    );
    // A file the glob matches appears; a file no unit reads changes.
    owned(
        &files(
            "A=2\n",
            "U=2\n",
            &[
                ("/etc/etcd/conf.d/a.env", "X=1\n"),
                ("/etc/etcd/conf.d/b.env", "Y=1\n"),
            ],
        ),
        3,
    );
    // Only the file no unit reads changes: nothing to do.
    owned(
        &files(
            "A=2\n",
            "U=3\n",
            &[
                ("/etc/etcd/conf.d/a.env", "X=1\n"),
                ("/etc/etcd/conf.d/b.env", "Y=1\n"),
            ],
        ),
        4,
    );
    switch(&w, 1);
    assert_eq!(
        switch(&w, 2),
        restarted("etcd.service", "/etc/etcd/extra.env changed")
    );
    assert_eq!(
        switch(&w, 3),
        restarted("etcd.service", "/etc/etcd/conf.d/b.env changed")
    );
    assert_eq!(switch(&w, 4), "");
}

#[test]
fn every_exec_binary_under_a_managed_path_restarts_its_unit() {
    let w = World::bare();
    let unit = "[Service]\nExecStartPre=+-/usr/local/bin/etcd-pre --check\nExecStart=@/usr/local/bin/etcd etcd\nExecStopPost=!!etcd-post\nExecReload=/bin/kill -HUP $MAINPID\n";
    let files = |pre: &'static str, post: &'static str| {
        vec![
            ("/etc/systemd/system/etcd.service", unit, ""),
            ("/usr/local/bin/etcd", BIN, X),
            ("/usr/local/bin/etcd-pre", pre, X),
            ("/usr/local/bin/etcd-post", post, X),
        ]
    };
    build(&w, "etcd", &files("#!/bin/sh\n", "#!/bin/sh\n"), 1);
    build(&w, "etcd", &files("#!/bin/sh\ntrue\n", "#!/bin/sh\n"), 2);
    // A bare name is found where systemd looks first: /usr/local/bin.
    build(
        &w,
        "etcd",
        &files("#!/bin/sh\ntrue\n", "#!/bin/sh\ntrue\n"),
        3,
    );
    switch(&w, 1);
    assert_eq!(
        switch(&w, 2),
        restarted("etcd.service", "/usr/local/bin/etcd-pre changed")
    );
    assert_eq!(
        switch(&w, 3),
        restarted("etcd.service", "/usr/local/bin/etcd-post changed")
    );
}

#[test]
fn a_socket_starts_its_service_and_a_changed_socket_stops_it_first() {
    let w = World::bare();
    let files = |socket: &'static str, service: &'static str| {
        vec![
            ("/etc/systemd/system/app.socket", socket, ""),
            ("/etc/systemd/system/app.service", service, ""),
            ("/usr/local/bin/app", BIN, X),
        ]
    };
    let s1 = "[Socket]\nListenStream=8080\n";
    let s2 = "[Socket]\nListenStream=8081\n";
    let a1 = "[Service]\nExecStart=/usr/local/bin/app\n";
    let a2 = "[Service]\nExecStart=/usr/local/bin/app --verbose\n";
    build(&w, "app", &files(s1, a1), 1);
    build(&w, "app", &files(s1, a2), 2);
    build(&w, "app", &files(s2, a2), 3);
    // The service alone: it is started directly.
    build(&w, "app", &files(s2, a2)[1..], 4);
    // The service is never started directly: the socket starts it on the first connection.
    assert_eq!(switch(&w, 1), started_not_enabled("app.socket"));
    assert_eq!(
        switch(&w, 2),
        format!(
            "  stop    app.service (/etc/systemd/system/app.service changed; app.socket starts it again on demand)\n{NOT_RUN}  systemctl stop app.service\n"
        )
    );
    // The service holds the socket: it is stopped before the socket restarts.
    assert_eq!(
        switch(&w, 3),
        format!(
            "  restart app.socket (/etc/systemd/system/app.socket changed)\n  stop    app.service (app.socket changed; app.socket starts it again on demand)\n{NOT_RUN}  systemctl stop app.service\n  systemctl restart app.socket\n"
        )
    );
    assert_eq!(
        switch(&w, 4),
        "  start   app.service (new; not enabled: boot starts it only if another unit pulls it in)\n  stop    app.socket (removed)\nunit actions (not run: root is not `/`):\n  systemctl stop app.socket\n  systemctl daemon-reload\n  systemctl start app.service\n"
    );
}

#[test]
fn a_service_a_timer_starts_is_restarted_only_if_running() {
    let w = World::bare();
    let files = |service: &'static str| {
        vec![
            (
                "/etc/systemd/system/backup.timer",
                "[Timer]\nOnCalendar=daily\nUnit=backup-job.service\n",
                "",
            ),
            ("/etc/systemd/system/backup-job.service", service, ""),
            ("/usr/local/bin/backup", BIN, X),
        ]
    };
    for (n, service) in [
        (
            1,
            "[Service]
Type=oneshot
ExecStart=/usr/local/bin/backup
",
        ),
        (
            2,
            "[Service]
Type=oneshot
ExecStart=/usr/local/bin/backup -v
",
        ),
    ] {
        build(&w, "backup", &files(service), n);
    }
    assert_eq!(switch(&w, 1), started_not_enabled("backup.timer"));
    assert_eq!(
        switch(&w, 2),
        format!(
            "  try-restart backup-job.service (/etc/systemd/system/backup-job.service changed; backup.timer starts it, so it is restarted only if running)\n{NOT_RUN}  systemctl try-restart backup-job.service\n"
        )
    );
}

#[test]
fn on_change_asks_for_a_reload_or_for_nothing() {
    let w = World::bare();
    let reloadable = etcd_unit("ExecReload=/bin/kill -HUP $MAINPID\n");
    let files = |env: &'static str, on_change: &'static str| {
        vec![
            (
                "/etc/systemd/system/etcd.service",
                reloadable.as_str(),
                on_change,
            ),
            ("/etc/etcd/etcd.env", env, ""),
            ("/usr/local/bin/etcd", BIN, X),
        ]
    };
    for (n, env, on_change) in [
        (1, "ETCD_ARGS=1\n", "on_change = \"reload\""),
        (2, "ETCD_ARGS=2\n", "on_change = \"reload\""),
        (3, "ETCD_ARGS=3\n", "on_change = \"none\""),
        (4, "ETCD_ARGS=4\n", "on_change = \"restart\""),
    ] {
        build(&w, "etcd", &files(env, on_change), n);
    }
    switch(&w, 1);
    assert_eq!(
        switch(&w, 2),
        format!(
            "  reload  etcd.service (/etc/etcd/etcd.env changed; on_change = \"reload\": a reload does not give the running process a new `ExecStart=`, environment or binary, `systemctl restart etcd.service` does)\n{NOT_RUN}  systemctl reload etcd.service\n"
        )
    );
    assert_eq!(
        switch(&w, 3),
        format!(
            "  keep    etcd.service running the old files (/etc/etcd/etcd.env changed; on_change = \"none\": `systemctl restart etcd.service` applies them)\n{NOT_RUN}"
        )
    );
    assert_eq!(
        switch(&w, 4),
        restarted("etcd.service", "/etc/etcd/etcd.env changed")
    );
}

#[test]
fn on_change_reload_needs_exec_reload() {
    let w = World::bare();
    let unit = etcd_unit("");
    recipe(
        &w,
        "etcd",
        &[
            (
                "/etc/systemd/system/etcd.service",
                unit.as_str(),
                "on_change = \"reload\"",
            ),
            ("/usr/local/bin/etcd", BIN, X),
        ],
    );
    w.run(&["build", "etcd"]).assert_error(
        "error: cannot build etcd\n  caused by: recipe `etcd` ($SANDBOX/recipes/etcd.toml:1:8): `on_change = \"reload\"` for `/etc/systemd/system/etcd.service`, but the unit has no `ExecReload=` (`systemctl reload` would fail)\nhelp: add `ExecReload=` to the unit's [Service] section (or a drop-in), or use `on_change = \"restart\"`; then run `kbuild build` again\n",
    );
    // An `ExecReload=` in a drop-in counts.
    recipe(
        &w,
        "etcd",
        &[
            (
                "/etc/systemd/system/etcd.service",
                unit.as_str(),
                "on_change = \"reload\"",
            ),
            (
                "/etc/systemd/system/etcd.service.d/reload.conf",
                "[Service]\nExecReload=/bin/kill -HUP $MAINPID\n",
                "",
            ),
            ("/usr/local/bin/etcd", BIN, X),
        ],
    );
    w.build(&["etcd"], &[], 1);
    // Only service units have it.
    recipe(
        &w,
        "etcd",
        &[("/etc/etcd/etcd.env", "A=1\n", "on_change = \"none\"")],
    );
    w.run(&["build", "etcd"]).assert_error(
        "error: cannot build etcd\n  caused by: $SANDBOX/recipes/etcd.toml:3:13: `on_change` applies to service units (`/etc/systemd/system/NAME.service`), not to `/etc/etcd/etcd.env`\n",
    );
    recipe(
        &w,
        "etcd",
        &[(
            "/etc/systemd/system/etcd.service",
            unit.as_str(),
            "on_change = \"sometimes\"",
        )],
    );
    w.run(&["build", "etcd"]).assert_error(
        "error: cannot build etcd\n  caused by: $SANDBOX/recipes/etcd.toml:3:13: unknown on_change `sometimes` (expected `restart`, `reload` or `none`)\n",
    );
}

#[test]
fn a_bare_template_is_never_started_enabled_or_restarted() {
    // Without links naming its instances (`multi-user.target.wants/etcd-member@a.service`,
    // which enablement inside the generation makes), a template is only a file: systemd
    // refuses `start etcd-member@.service`.
    let w = World::bare();
    let files = |unit: &'static str| {
        vec![
            ("/etc/systemd/system/etcd-member@.service", unit, ""),
            ("/usr/local/bin/etcd", BIN, X),
        ]
    };
    for (n, unit) in [
        (
            1,
            "[Service]
ExecStart=/usr/local/bin/etcd --name %i
",
        ),
        (
            2,
            "[Service]
ExecStart=/usr/local/bin/etcd --name %i -v
",
        ),
    ] {
        build(&w, "member", &files(unit), n);
    }
    build(&w, "member", &[("/etc/etcd/other", "x\n", "")], 3);
    for n in [1, 2, 3] {
        assert_eq!(switch(&w, n), "", "switch {n}");
    }
}

/// The instance a template's generation enables (`DefaultInstance=`, linked from
/// `multi-user.target.wants/`) is started, restarted when the template changes, and stopped
/// when the generation drops it; the bare template never gets an action of its own.
#[test]
fn an_enabled_instance_follows_its_template() {
    let w = World::bare();
    let template = |flag: &str| {
        format!(
            "[Service]\nExecStart=/usr/local/bin/etcd --name %i{flag}\n\n[Install]\nWantedBy=multi-user.target\nDefaultInstance=a\n"
        )
    };
    let (t1, t2) = (template(""), template(" -v"));
    for (n, unit) in [(1, &t1), (2, &t2)] {
        let files = [
            (
                "/etc/systemd/system/etcd-member@.service",
                unit.as_str(),
                "",
            ),
            ("/usr/local/bin/etcd", BIN, X),
        ];
        build(&w, "member", &files, n);
    }
    build(&w, "member", &[("/etc/etcd/other", "x\n", "")], 3);
    let inst = "etcd-member@a.service";
    assert_eq!(
        switch(&w, 1),
        format!("  start   {inst} (new)\n{NOT_RUN}  systemctl start {inst}\n")
    );
    assert_eq!(
        switch(&w, 2),
        restarted(inst, "/etc/systemd/system/etcd-member@.service changed")
    );
    assert_eq!(
        switch(&w, 3),
        format!(
            "  stop    {inst} (removed)\nunit actions (not run: root is not `/`):\n  systemctl stop {inst}\n  systemctl daemon-reload\n"
        )
    );
}

#[test]
fn unit_file_names_systemd_cannot_load_are_refused_at_build() {
    let w = World::bare();
    let long = format!("/etc/systemd/system/{}.service", "a".repeat(248));
    let valid_long = format!("/etc/systemd/system/{}.service", "a".repeat(247));
    for (target, message) in [
        (
            "/etc/systemd/system/kube proxy.service",
            "`kube proxy.service` is not a unit name systemd can load: a space is not allowed in a unit name (only letters, digits and `:-_.\\@`; `systemd-escape` makes a name from any text)".to_owned(),
        ),
        (
            "/etc/systemd/system/kube-proxy.servce",
            "`kube-proxy.servce` is not a unit name systemd can load: `.servce` is not a unit type (one of .service, .socket, .target, .device, .mount, .automount, .swap, .timer, .path, .slice, .scope)".to_owned(),
        ),
        (
            "/etc/systemd/system/kube$proxy.service",
            "`kube$proxy.service` is not a unit name systemd can load: `$` is not allowed in a unit name (only letters, digits and `:-_.\\@`; `systemd-escape` makes a name from any text)".to_owned(),
        ),
        (
            long.as_str(),
            // systemd's limit (255 bytes) is the file name limit: the target is refused as such.
            format!("target `/etc/systemd/system/{}.service` has a component longer than 255 bytes", "a".repeat(248)),
        ),
        (
            "/etc/systemd/system/@x.service",
            "`@x.service` is not a unit name systemd can load: it starts with `@` (the part before `@` is the unit's prefix)".to_owned(),
        ),
        (
            "/etc/systemd/system/etcd.service.d/port",
            "drop-in `etcd.service.d/port` does not end in `.conf`; systemd reads only `*.conf` there".to_owned(),
        ),
        (
            "/etc/systemd/system/multi-user.target.wants/etcd.service",
            "`multi-user.target.wants/etcd.service` would be a regular file, but systemd follows only symlinks in `.wants/` directories (a file there is ignored)".to_owned(),
        ),
        (
            "/etc/systemd/system/kube/proxy.service",
            "systemd does not read `kube/proxy.service`: below /etc/systemd/system it reads unit files, `NAME.d/*.conf` drop-ins and links in `NAME.wants/`".to_owned(),
        ),
    ] {
        recipe(&w, "bad", &[(target, "[Service]\nExecStart=/bin/true\n", "")]);
        let help = if target == long {
            String::new()
        } else {
            "help: rename the target in the recipe, then run `kbuild build` again (systemd.unit(5) names units)\n".to_owned()
        };
        w.run(&["build", "bad"]).assert_error(&format!(
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:1:8: {message}\n{help}"
        ));
        assert!(!w.sb.store.join("generations").exists(), "{target}");
    }
    // The longest name systemd loads, and escaped names, build.
    recipe(
        &w,
        "good",
        &[
            (valid_long.as_str(), "[Service]\nExecStart=/bin/true\n", ""),
            (
                "/etc/systemd/system/kube\\x20proxy.service",
                "[Service]\nExecStart=/bin/true\n",
                "",
            ),
        ],
    );
    w.build(&["good"], &[], 1);
}

#[test]
fn printed_commands_are_shell_quoted() {
    // `systemd-escape "kube proxy"` is `kube\x20proxy`: a valid unit name a shell would
    // unescape if printed bare.
    let w = World::bare();
    build(
        &w,
        "escaped",
        &[(
            "/etc/systemd/system/kube\\x20proxy.service",
            "[Service]\nExecStart=/bin/true\n",
            "",
        )],
        1,
    );
    let r = w.ok(&["switch", "1", "--dry-run"]);
    assert_eq!(
        units(&r.stdout),
        "  start   kube\\x20proxy.service (new; not enabled: boot starts it only if another unit pulls it in)\nunit actions (would run: root is not `/`):\n  systemctl daemon-reload\n  systemctl start 'kube\\x20proxy.service'\n"
    );
}

#[test]
fn the_journal_records_the_new_actions_and_a_completed_switch_runs_them() {
    // A switch killed after writing its journal (`KBUILD_FAULT_AT`, src/activate/fault.rs):
    // the next switch completes it and carries out the recorded actions, in their order.
    let w = World::bare();
    let files = |socket: &'static str, service: &'static str| {
        vec![
            ("/etc/systemd/system/app.socket", socket, ""),
            ("/etc/systemd/system/app.service", service, ""),
            ("/usr/local/bin/app", BIN, X),
        ]
    };
    build(
        &w,
        "app",
        &files(
            "[Socket]\nListenStream=8080\n",
            "[Service]\nExecStart=/usr/local/bin/app\n",
        ),
        1,
    );
    build(
        &w,
        "app",
        &files(
            "[Socket]\nListenStream=8081\n",
            "[Service]\nExecStart=/usr/local/bin/app -v\n",
        ),
        2,
    );
    w.ok(&["switch", "1"]);
    let commands =
        format!("{NOT_RUN}  systemctl stop app.service\n  systemctl restart app.socket\n");
    for (n, step) in [(1, "journal written"), (2, "flip"), (3, "state written")] {
        let r = w.run_env(&["switch", "2"], &[("KBUILD_FAULT_AT", &n.to_string())]);
        assert_eq!(r.code, None, "step {n}: killed: {r:?}");
        r.assert_stderr_has(&format!("fault injected at step {n} ({step})"));
        let journal: serde_json::Value = serde_json::from_slice(
            &std::fs::read(w.root.join("etc/.kbuild/journal.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            journal["units"],
            serde_json::json!([
                {"action": "stop-triggered", "unit": "app.service", "because": ["/etc/systemd/system/app.service"], "trigger": "app.socket"},
                {"action": "restart", "unit": "app.socket", "because": ["/etc/systemd/system/app.socket"]}
            ]),
            "step {n}"
        );
        let r = w.ok(&["switch", "2"]);
        assert_eq!(r.stdout(), commands, "step {n}");
        assert_eq!(
            r.stderr(),
            "   Completed an interrupted switch; running its unit actions\n       Fresh generation 2 is already active\n",
            "step {n}"
        );
        w.ok(&["switch", "1"]);
    }
}

/// Finding 13: `DefaultInstance=` with a specifier kbuild does not expand names the specifier
/// and the ones it does; a bad instance's help asks for an instance string, not a unit name;
/// a supported specifier is expanded there as systemd does.
#[test]
fn default_instance_names_an_unsupported_specifier_and_asks_for_an_instance() {
    let w = World::bare();
    let template = |instance: &str| {
        format!(
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\nDefaultInstance={instance}\n"
        )
    };
    let unit = "/etc/systemd/system/member@.service";
    recipe(&w, "bad", &[(unit, &template("%H"), "")]);
    w.run(&["build", "bad"]).assert_error(
        "error: cannot build bad\n  caused by: unit `member@.service`: `DefaultInstance=%H` uses the specifier `%H`, which kbuild does not support (it expands `%n`, `%N`, `%p`, `%i`, `%j` and `%%` in `[Install]`)\n\
         help: write the value of `%H` out in `DefaultInstance=` of `member@.service` (or use one of `%n`, `%N`, `%p`, `%i`, `%j` and `%%`), then run `kbuild build` again\n",
    );
    recipe(&w, "bad", &[(unit, &template("a/b"), "")]);
    w.run(&["build", "bad"]).assert_error(
        "error: cannot build bad\n  caused by: unit `member@.service`: `DefaultInstance=a/b` names no unit systemd can load: `/` is not allowed in a unit name (only letters, digits and `:-_.\\@`; `systemd-escape` makes a name from any text)\n\
         help: fix `DefaultInstance=` in the `[Install]` section of `member@.service` (an instance string such as `main`, enabling `member@main.service`), then run `kbuild build` again\n",
    );
    assert!(!w.sb.store.join("generations").exists());
    recipe(&w, "good", &[(unit, &template("%p-1"), "")]);
    let g = w.build(&["good"], &[], 1);
    assert_eq!(
        std::fs::read_link(
            g.rootfs
                .join("etc/systemd/system/multi-user.target.wants/member@member-1.service")
        )
        .unwrap()
        .display()
        .to_string(),
        "../member@.service"
    );
}

/// Finding 7: a new unit the generation does not enable is started, and the plan says boot
/// will not start it by itself; one it enables is plainly new.
#[test]
fn a_new_unit_without_install_links_is_started_and_said_not_enabled() {
    let w = World::bare();
    let service = |install: &str| format!("[Service]\nExecStart=/usr/local/bin/x\n{install}");
    let enabled = service("[Install]\nWantedBy=multi-user.target\n");
    let plain = service("");
    build(
        &w,
        "two",
        &[
            ("/etc/systemd/system/a.service", enabled.as_str(), ""),
            ("/etc/systemd/system/b.service", plain.as_str(), ""),
            ("/usr/local/bin/x", BIN, X),
        ],
        1,
    );
    assert_eq!(
        switch(&w, 1),
        format!(
            "  start   a.service (new)\n  start   b.service (new; not enabled: boot starts it only if another unit pulls it in)\n{NOT_RUN}  systemctl start a.service\n  systemctl start b.service\n"
        )
    );
}
