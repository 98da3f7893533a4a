//! Health checks (`[[health]]`) in a temp root: recorded in the generation with their values
//! rendered, listed by `--dry-run` (text and JSON), reported as "not run" (never as passed)
//! after a switch and by `kbuild check` on a root that is not `/`, and recipe errors at
//! their `file:line:column`. The gate itself runs against a real systemd in
//! `tests/health_gate.rs`.

mod common;

use common::world::World;

/// The three checks of the seed master, rendered with its default `IP`.
const MASTER_CHECKS: &str = "  kube-apiserver.service  GET http://10.72.84.160:8080/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n  \
     kube-controller-manager.service  GET http://127.0.0.1:10252/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n  \
     kube-scheduler.service  GET http://127.0.0.1:10251/healthz → 200, body contains \"ok\" (timeout 1m, interval 1s, settle 3s)\n";

#[test]
fn master_checks_are_recorded_listed_and_not_run_off_slash() {
    let w = World::new();
    let g = w.build(&["master"], &["--set", "IP=10.72.84.160"], 1);
    // Recorded in the generation, rendered: check and rollback need no recipes.
    let manifest: serde_json::Value = serde_json::from_slice(&g.bytes("kbuild.json")).unwrap();
    assert_eq!(
        manifest["health"][0],
        serde_json::json!({
            "unit": "kube-apiserver.service",
            "probe": {"kind": "http", "url": "http://10.72.84.160:8080/healthz", "status": 200, "body": "ok"},
            "timeout_ms": 60000, "interval_ms": 1000, "settle_ms": 3000
        })
    );

    // --dry-run lists them, and says they would not run here.
    let r = w.ok(&["switch", "--dry-run"]);
    assert!(
        r.stdout.ends_with(&format!(
            "health checks (would not run: root is not `/`):\n{MASTER_CHECKS}"
        )),
        "{}",
        r.stdout
    );
    let r = w.ok(&["switch", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["health"]["run"], false);
    assert_eq!(plan["health"]["not_run"], "root is not `/`");
    assert_eq!(plan["health"]["checks"].as_array().unwrap().len(), 3);
    assert_eq!(
        plan["health"]["checks"][2]["probe"]["url"],
        "http://127.0.0.1:10251/healthz"
    );
    assert!(
        !w.root.join("etc/.kbuild").exists(),
        "a dry run writes nothing"
    );

    // A real switch on a root that is not `/`: not run, and never recorded as good.
    let r = w.ok(&["switch"]);
    assert!(
        r.stdout.ends_with(&format!(
            "health checks (not run: root is not `/`):\n{MASTER_CHECKS}"
        )),
        "{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("passed") && !r.stderr.contains("Healthy"),
        "{r:?}"
    );
    // Nothing is known of its health: the root gets no health record.
    assert!(!w.root.join("etc/.kbuild/health.json").exists());

    // Not run is not passed: exit code 5, never 0 (review 12, finding 4).
    let r = w.run(&["check"]);
    assert_eq!(r.code, Some(5), "{r:?}");
    assert_eq!(
        r.stderr(),
        "error: generation 1's health is not known\n  caused by: the health checks of generation 1 were not run: root is not `/`\nhelp: run `kbuild check` on the host itself (root `/`, systemd running)\n"
    );
    assert_eq!(
        r.stdout,
        format!(
            "health checks of generation 1 (not run: root is not `/`):\n{}",
            MASTER_CHECKS
                .replace("\n  ", "\n  not run  ")
                .replacen("  ", "  not run  ", 1)
        )
    );
    let r = w.run(&["check", "--json"]);
    assert_eq!(r.code, Some(5), "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["status"], "not run");
    assert_eq!(j["not_run"], "root is not `/`");
    assert_eq!(j["generation"], 1);
    assert_eq!(j["last_good"], serde_json::Value::Null);
    let statuses: Vec<&str> = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["not run", "not run", "not run"]);

    // A gate a killed kbuild left (as on a live host): the dry run of the switch that runs it
    // again says so and lists its checks, though nothing else changes (review 12, finding 9).
    std::fs::write(
        w.root.join("etc/.kbuild/health.json"),
        r#"{"version": 1, "last_good": null, "pending": {"profile": "default", "generation": 1, "units": ["kube-apiserver.service"]}}"#,
    )
    .unwrap();
    let r = w.ok(&["switch", "--dry-run"]);
    assert!(
        r.stderr.contains(
            "Pending the health gate of generation 1 (default) was interrupted (kbuild stopped while waiting): it is not marked good; a switch to it runs the gate again, another switch leaves it"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.ends_with(&format!(
            "health checks (would not run: root is not `/`):\n{MASTER_CHECKS}"
        )),
        "{}",
        r.stdout
    );
    let r = w.ok(&["switch", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["health"]["pending"]["generation"], 1);
    assert_eq!(plan["health"]["checks"].as_array().unwrap().len(), 3);

    // health.json from a newer kbuild, or damaged: refused, with its own help (review 12,
    // finding 14).
    let record = w.root.join("etc/.kbuild/health.json");
    std::fs::write(
        &record,
        r#"{"version": 7, "last_good": null, "pending": null}"#,
    )
    .unwrap();
    let r = w.run(&["check"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr()
            .contains("/etc/.kbuild/health.json` records health format version 7; this kbuild reads version 1\nhelp: a newer kbuild wrote it"),
        "{}",
        r.stderr()
    );
    std::fs::write(&record, "garbage").unwrap();
    let r = w.run(&["check"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr().contains("corrupt activation state")
            && r.stderr().contains("help: it records the last generation that passed its health gate (the rollback target) and a gate in progress"),
        "{}",
        r.stderr()
    );
    // `verify --root` finds it too: a problem with the path and the fix, exit code 1.
    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let root = w.root.display();
    let finding = format!(
        "drift    {root}: corrupt activation state `{root}/etc/.kbuild/health.json`: expected value at line 1 column 1 (it records the last generation that passed its health gate (the rollback target) and a gate in progress: move it away (`mv {root}/etc/.kbuild/health.json {root}/etc/.kbuild/health.json.bad`) and run `kbuild switch N`"
    );
    assert!(r.stdout.contains(&finding), "{}", r.stdout);
    assert!(
        r.stderr()
            .ends_with("error: verification found 1 problem(s)\n"),
        "{}",
        r.stderr()
    );
    let r = w.run(&["verify", "--json"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["problems"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["problems"][0]["kind"], "drift");
    assert!(
        j["problems"][0]["problem"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "corrupt activation state `{root}/etc/.kbuild/health.json`"
            )),
        "{j}"
    );
    std::fs::remove_file(&record).unwrap();

    // A damaged manifest is an error, never "no checks" (review 12, finding 6).
    let manifest = g.rootfs.join("kbuild.json");
    let mut perm = std::fs::metadata(&manifest).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&manifest, perm).unwrap();
    std::fs::write(&manifest, r#"{"health": [{"unit": 1}]"#).unwrap();
    let r = w.run(&["check"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr()
            .contains("kbuild.json` is damaged: its health checks cannot be read")
            && r.stderr()
                .contains("help: `kbuild verify --repair` re-creates the generation's rootfs"),
        "{}",
        r.stderr()
    );
}

#[test]
fn a_generation_without_checks_has_nothing_to_check() {
    let w = World::bare();
    w.sb.write_recipe("plain", "[files.\"/etc/plain\"]\ntext = \"x\\n\"\n");
    w.build(&["plain"], &[], 1);
    let r = w.ok(&["switch"]);
    assert!(!r.stdout.contains("health"), "{}", r.stdout);
    assert_eq!(
        w.ok(&["check"]).stdout,
        "generation 1 declares no health checks\n"
    );
    // A root with no active generation has nothing to check.
    let empty = World::bare();
    let r = empty.run(&["check"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr().contains("has no active generation")
            && r.stderr()
                .contains("help: `kbuild switch --root DIR` activates one"),
        "{}",
        r.stderr
    );
}

#[test]
fn recipe_errors_point_at_the_entry() {
    const HELP: &str = "help: a `[[health]]` entry has `unit`, one of `http = \"URL\"` (with `status`, default 200, `body`, and for https:// `ca`, `cert` and `key`), `tcp = \"HOST:PORT\"` or `command = [\"/path\", \"arg\"…]`, and optional `timeout`, `interval`, `settle` (docs/recipes.md, \"Health checks\")\n";
    let w = World::bare();
    let cases: &[(&str, &str)] = &[
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://x/\"\ntcp = \"x:1\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:1:1: a health check needs exactly one of `http`, `tcp` and `command`\n",
        ),
        (
            "[[health]]\nunit = \"a\"\ntcp = \"x:1\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:2:8: health check unit `a` is not a unit name: it has no unit type suffix",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\nstatus = 200\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:10: `status` and `body` belong to an `http` check\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://x/\"\nstatus = 700\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:10: `status = 700` is not an HTTP status (100 to 599)\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\ntimeout = \"5\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:11: `timeout`: `5` is not a duration",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://{{ NOPE }}:8080/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:8: health check of `a.service`: undefined variable `NOPE`\nhelp: declare `[variables.NOPE]` in a recipe",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"ftp://x/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:8: health check of `a.service`: `ftp://x/` is not an http:// or https:// URL\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"localhost\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:7: health check of `a.service`: `localhost` is not HOST:PORT: no port\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ncommand = [\"curl\", \"x\"]\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:11: health check of `a.service`: the command's program `curl` is not an absolute path\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\nretries = 3\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:1: unknown field `retries`",
        ),
        // Checks the gate could never pass, and a secret (review 12, findings 2 and 3).
        (
            "[[health]]\nunit = \"nothere.service\"\ntcp = \"127.0.0.1:1\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:2:8: health check unit `nothere.service` is not a unit of this generation\nhelp: name a unit the recipes install in /etc/systemd/system (`[files.\"/etc/systemd/system/NAME\"]`); a host's own unit is not gated\n",
        ),
        (
            "[[health]]\nunit = \"a@.service\"\ntcp = \"x:1\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:2:8: health check unit `a@.service` is a template: systemd never runs it as such\nhelp: name an instance of it, such as `etcd-member@a.service`\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\ntimeout = \"1s\"\nsettle = \"5s\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:5:10: `settle` (5s) is not shorter than `timeout` (1s): the unit could never settle in time\nhelp: a `[[health]]` entry has",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\ntimeout = \"5s\"\ninterval = \"6s\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:5:12: `interval` (6s) is longer than `timeout` (5s): the check would be tried once\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"127.0.0.1:0\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:7: health check of `a.service`: `127.0.0.1:0` is not HOST:PORT: port 0 is not a port a service listens on\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://x:99999/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:8: health check of `a.service`: `http://x:99999/`: port `99999` is not a number from 1 to 65535\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"::1:80\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:7: health check of `a.service`: `::1:80` is not HOST:PORT: an IPv6 address must be in brackets, such as `[::1]:8080`\n",
        ),
        // Values of the wrong type (serde's words), unknown keys and bad durations get the
        // entry's help like its other mistakes (issue 12 follow-up).
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\ntimeout = 5\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:11: invalid type: integer `5`, expected a string\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://x/\"\nstatus = \"x\"\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:10: invalid type: string \"x\", expected i64\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\ncommand = \"/bin/true\"\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:11: invalid type: string \"/bin/true\", expected a sequence\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\nretries = 3\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:1: unknown field `retries`, expected one of `unit`, `http`, `status`, `body`, `tcp`, `command`, `ca`, `cert`, `key`, `timeout`, `interval`, `settle`\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\ntimeout = \"x\"\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:11: `timeout`: `x` is not a duration (expected number at 0); write a number and a unit, such as \"30s\" or \"500ms\"\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://user:pw@x/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:3:8: health check of `a.service`: the URL carries a user and password (`USER:PASSWORD@`), which would be written into the world-readable store\nhelp: use a `command` check that reads the credentials from a file on the host",
        ),
        // The host files of an https:// check (issue 12 follow-up): paths, with an https URL.
        (
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\nca = \"/etc/ca.pem\"\n",
            &format!(
                "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: `ca` belongs to an `http` check of an https:// URL\n{HELP}"
            ),
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"http://x/\"\nca = \"/etc/ca.pem\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: `ca` is set but `http://x/` is not an https:// URL\nhelp: write the https:// URL the service answers on, or remove `ca`, `cert` and `key`\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nca = \"ssl/ca.pem\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: `ca` `ssl/ca.pem` is not an absolute path\nhelp: name the PEM file on the host by its absolute path, such as \"/etc/kubernetes/ssl/ca.pem\" (it is read at each check, never copied into the store)\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nkey = \"/etc/../k.pem\"\ncert = \"/etc/c.pem\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:7: health check of `a.service`: `key` `/etc/../k.pem` is not an absolute path without `..`\n",
        ),
        // review18 LOW-3: a newline (in TOML's escape) and a trailing `/` are refused.
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nca = \"/etc/ca.pem\\nx\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: `ca` \"/etc/ca.pem\\nx\" holds a control character (a newline?), which no file name of the host is meant to\nhelp: name the PEM file on the host by its absolute path",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nca = \"/etc/ssl/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: `ca` `/etc/ssl/` names a directory (it ends in `/`), not a file\nhelp: name the PEM file",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nca = \"/\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: `ca` `/` names a directory (it ends in `/`), not a file\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\nca = \"/etc/{{ NOPE }}/ca.pem\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:6: health check of `a.service`: undefined variable `NOPE`\n",
        ),
        (
            "[[health]]\nunit = \"a.service\"\nhttp = \"https://x/\"\ncert = \"/etc/c.pem\"\n",
            "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:4:8: `cert` is given without `key`: a client certificate needs both\nhelp: set `cert` to the PEM client certificate and `key` to its private key",
        ),
    ];
    // The unit the checks name, after them (the lines above keep their numbers).
    let unit = "[files.\"/etc/systemd/system/a.service\"]\ntext = \"[Service]\\nExecStart=/bin/true\\n\"\n";
    for (recipe, expected) in cases {
        let recipe = &format!("{recipe}{unit}");
        w.sb.write_recipe("bad", recipe);
        let r = w.run(&["build", "bad"]);
        assert_eq!(r.code, Some(1), "{recipe}\n{r:?}");
        assert!(
            r.stderr().starts_with(expected),
            "{recipe}\nexpected the start:\n{expected}\ngot:\n{}",
            r.stderr()
        );
        assert!(
            !w.sb.dir.join("store").exists()
                || std::fs::read_dir(w.sb.dir.join("store"))
                    .unwrap()
                    .flatten()
                    .all(|e| !e.file_name().to_string_lossy().contains("rootfs")),
            "nothing built"
        );
    }
    // A wrong type after a `[[health]]` entry, but not in it: not the entry's help.
    w.sb.write_recipe(
        "bad",
        &format!(
            "[[health]]\nunit = \"a.service\"\ntcp = \"x:1\"\n[files.\"/etc/x\"]\ntext = 5\n{unit}"
        ),
    );
    let r = w.run(&["build", "bad"]);
    assert_eq!(
        r.stderr(),
        "error: cannot build bad\n  caused by: $SANDBOX/recipes/bad.toml:5:8: invalid type: integer `5`, expected a string\n"
    );
}

#[test]
fn gc_keeps_the_last_good_generation_a_failed_gate_goes_back_to() {
    let w = World::bare();
    for n in 1..=3 {
        w.sb.write_recipe(
            "plain",
            &format!("[files.\"/etc/plain\"]\ntext = \"{n}\\n\"\n"),
        );
        w.build(&["plain"], &[], n);
    }
    w.ok(&["switch"]);
    // As a live switch records it: generation 1 passed its gate last.
    std::fs::write(
        w.root.join("etc/.kbuild/health.json"),
        r#"{"version": 1, "last_good": {"profile": "default", "generation": 1}, "pending": null}"#,
    )
    .unwrap();
    let r = w.ok(&["gc", "--keep", "1"]);
    assert!(r.stderr.contains("Removed generation 2\n"), "{}", r.stderr);
    assert!(!r.stderr.contains("Removed generation 1\n"), "{}", r.stderr);
    w.assert_generations(&[1, 3], Some(3));
}

/// Issue 12 follow-up: an https:// check against the cluster's CA, with a client certificate.
/// The paths are rendered and recorded; the files are the host's, read at check time: the
/// build neither needs nor copies them (they do not exist here).
#[test]
fn https_check_files_are_recorded_by_path_and_never_read_by_the_build() {
    let w = World::bare();
    w.sb.write_recipe(
        "etcd",
        "[variables.SSL]\ndefault = \"/etc/kubernetes/ssl\"\n\n\
         [[health]]\nunit = \"etcd.service\"\nhttp = \"https://127.0.0.1:2379/health\"\n\
         ca = \"{{ SSL }}/ca.pem\"\ncert = \"{{ SSL }}/etcd-client.pem\"\nkey = \"{{ SSL }}/etcd-client-key.pem\"\n\n\
         [files.\"/etc/systemd/system/etcd.service\"]\ntext = \"[Service]\\nExecStart=/bin/true\\n\"\n",
    );
    let g = w.build(&["etcd"], &[], 1);
    let manifest: serde_json::Value = serde_json::from_slice(&g.bytes("kbuild.json")).unwrap();
    let probe = serde_json::json!({
        "kind": "http", "url": "https://127.0.0.1:2379/health", "status": 200,
        "ca": "/etc/kubernetes/ssl/ca.pem",
        "cert": "/etc/kubernetes/ssl/etcd-client.pem",
        "key": "/etc/kubernetes/ssl/etcd-client-key.pem"
    });
    assert_eq!(manifest["health"][0]["probe"], probe);
    // The files are prerequisites: checked under the root before the switch changes anything.
    let files = [
        "/etc/kubernetes/ssl/ca.pem",
        "/etc/kubernetes/ssl/etcd-client-key.pem",
        "/etc/kubernetes/ssl/etcd-client.pem",
    ];
    assert_eq!(manifest["prerequisites"], serde_json::json!(files));
    let line = "  etcd.service  GET https://127.0.0.1:2379/health → 200, CA /etc/kubernetes/ssl/ca.pem, client certificate /etc/kubernetes/ssl/etcd-client.pem (timeout 1m, interval 1s, settle 3s)\n";
    let r = w.run(&["switch", "--dry-run"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let stdout = r.stdout();
    assert!(
        stdout.starts_with(
            "root $SANDBOX/host: nothing -> generation 1\n  prerequisite missing: /etc/kubernetes/ssl/ca.pem\n  prerequisite missing: /etc/kubernetes/ssl/etcd-client-key.pem\n  prerequisite missing: /etc/kubernetes/ssl/etcd-client.pem\n"
        ) && stdout.ends_with(&format!(
            "health checks (would not run: root is not `/`):\n{line}"
        )),
        "{stdout}"
    );
    let before = w.listing();
    w.run(&["switch"]).assert_error(
        "error: cannot switch root `$SANDBOX/host`\n  caused by: missing host prerequisites under `$SANDBOX/host`: /etc/kubernetes/ssl/ca.pem, /etc/kubernetes/ssl/etcd-client-key.pem, /etc/kubernetes/ssl/etcd-client.pem\nhelp: create them on the host first (kbuild never copies secrets such as tokens and TLS keys into the store)\n",
    );
    assert_eq!(w.listing(), before, "the refused switch changed the root");
    for f in files {
        let p = w.root.join(&f[1..]);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    // A key others can read is warned about, as any prerequisite key.
    let r = w.ok(&["switch"]);
    assert_eq!(
        r.stderr(),
        "warning: private key /etc/kubernetes/ssl/etcd-client-key.pem is readable by group or others (mode 0644); fix: chmod 600 $SANDBOX/host/etc/kubernetes/ssl/etcd-client-key.pem\n    Switched root `$SANDBOX/host` to generation 1\n"
    );
    let r = w.run(&["check", "--json"]);
    assert_eq!(r.code, Some(5), "{r:?}");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["checks"][0]["check"]["probe"], probe);
    let r = w.run(&["check"]);
    assert_eq!(
        r.stdout,
        format!(
            "health checks of generation 1 (not run: root is not `/`):\n{}",
            line.replacen("  ", "  not run  ", 1)
        )
    );
}

/// A check's `ca` the generation installs itself is no prerequisite (it exists once the switch
/// flips); a file that is both a recipe's prerequisite and a check's is listed once; an
/// installed `key`, and a path inside an installed file, are refused.
#[test]
fn https_check_files_the_generation_installs_are_no_prerequisites() {
    let w = World::bare();
    w.sb.write_recipe(
        "etcd",
        "prerequisites = [\"/etc/kubernetes/ssl/etcd-client.pem\"]\n\n\
         [[health]]\nunit = \"etcd.service\"\nhttp = \"https://127.0.0.1:2379/health\"\n\
         ca = \"/etc/kubernetes/ca.pem\"\ncert = \"/etc/kubernetes/ssl/etcd-client.pem\"\nkey = \"/etc/kubernetes/ssl/etcd-client-key.pem\"\n\n\
         [files.\"/etc/kubernetes/ca.pem\"]\ntext = \"-----BEGIN CERTIFICATE-----\\n\"\n\n\
         [files.\"/etc/systemd/system/etcd.service\"]\ntext = \"[Service]\\nExecStart=/bin/true\\n\"\n",
    );
    let g = w.build(&["etcd"], &[], 1);
    let manifest: serde_json::Value = serde_json::from_slice(&g.bytes("kbuild.json")).unwrap();
    let files = [
        "/etc/kubernetes/ssl/etcd-client-key.pem",
        "/etc/kubernetes/ssl/etcd-client.pem",
    ];
    assert_eq!(manifest["prerequisites"], serde_json::json!(files));
    for f in files {
        let p = w.root.join(&f[1..]);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = w.ok(&["switch"]);
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 1\n"
    );

    // A key the generation installs would be in the world-readable store, and a file inside
    // an installed file could never exist: both refused at the value (review19 MED-1, MED-2).
    let recipe = w.sb.recipes.join("etcd.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    for (from, to, expected) in [
        (
            "[files.\"/etc/kubernetes/ca.pem\"]",
            "[files.\"/etc/kubernetes/ssl/etcd-client-key.pem\"]",
            "error: cannot build etcd\n  caused by: $SANDBOX/recipes/etcd.toml:8:7: health check of `etcd.service`: `key` `/etc/kubernetes/ssl/etcd-client-key.pem` is a file this generation installs: the private key would be in the world-readable store\nhelp: a check's `ca`, `cert` and `key` are host files, checked before a switch and never copied into the store: keep a private key out of `[files]`, and name files the generation does not install over\n",
        ),
        (
            "cert = \"/etc/kubernetes/ssl/etcd-client.pem\"",
            "cert = \"/etc/kubernetes/ca.pem/client.pem\"",
            "error: cannot build etcd\n  caused by: $SANDBOX/recipes/etcd.toml:7:8: health check of `etcd.service`: `cert` `/etc/kubernetes/ca.pem/client.pem` is inside `/etc/kubernetes/ca.pem`, a file this generation installs, so it could never exist\nhelp: a check's `ca`, `cert` and `key` are host files, checked before a switch and never copied into the store: keep a private key out of `[files]`, and name files the generation does not install over\n",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&recipe, text.replace(from, to)).unwrap();
        w.run(&["build", "etcd"]).assert_error(expected);
    }
}

/// review18 MED-2: the `[[health]]` example of docs/recipes.md ("Health checks") builds when
/// pasted into the master's recipes as they ship: every unit it names is one the generation
/// installs, and its `https://` check with `ca`/`cert`/`key` is recorded as written.
#[test]
fn the_docs_health_example_builds_with_the_shipped_recipes() {
    let docs = std::fs::read_to_string(common::repo_dir().join("docs/recipes.md")).unwrap();
    let section = docs
        .split_once("## Health checks (`[[health]]`)")
        .expect("the Health checks section")
        .1;
    let example = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```\n"))
        .expect("a toml block in the Health checks section")
        .0;
    let w = World::bare();
    let recipe = w.sb.recipes.join("kube-apiserver.toml");
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(&recipe, format!("{text}\n{example}")).unwrap();
    let g = w.build(&["master"], &["--set", "IP=10.72.84.160"], 1);
    let manifest: serde_json::Value = serde_json::from_slice(&g.bytes("kbuild.json")).unwrap();
    let units: Vec<&str> = manifest["health"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units.len(), 3 + 4, "{units:?}");
    let https = manifest["health"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["probe"]["url"] == "https://10.72.84.160:6443/healthz")
        .expect("the docs' https check");
    assert_eq!(
        https["probe"],
        serde_json::json!({
            "kind": "http", "url": "https://10.72.84.160:6443/healthz", "status": 200,
            "ca": "/etc/kubernetes/ssl/ca.pem",
            "cert": "/etc/kubernetes/ssl/kubernetes.pem",
            "key": "/etc/kubernetes/ssl/kubernetes-key.pem"
        })
    );
}

/// review18 LOW-4: a URL's scheme is case-insensitive (RFC 3986 §3.1): `HTTPS://` with `ca`
/// builds, and is recorded (and shown) as `https://`.
#[test]
fn an_upper_case_scheme_is_an_https_url() {
    let w = World::bare();
    w.sb.write_recipe(
        "etcd",
        "[[health]]\nunit = \"etcd.service\"\nhttp = \"HTTPS://127.0.0.1:2379/health\"\n\
         ca = \"/etc/kubernetes/ssl/ca.pem\"\n\n\
         [files.\"/etc/systemd/system/etcd.service\"]\ntext = \"[Service]\\nExecStart=/bin/true\\n\"\n",
    );
    let g = w.build(&["etcd"], &[], 1);
    let manifest: serde_json::Value = serde_json::from_slice(&g.bytes("kbuild.json")).unwrap();
    assert_eq!(
        manifest["health"][0]["probe"],
        serde_json::json!({
            "kind": "http", "url": "https://127.0.0.1:2379/health", "status": 200,
            "ca": "/etc/kubernetes/ssl/ca.pem"
        })
    );
}
