//! Hostile recipes: targets outside the managed prefixes, `..`, import cycles and missing
//! imports, values of the wrong type, templates leaving the recipes directory, oversized and
//! deeply nested files.
//!
//! Each case runs `kbuild build` in a sandbox whose recipes directory holds only the case's
//! recipes, and expects exit code 1, nothing on stdout, the exact error (with `file:line:column`
//! where there is one), no store created and no lock file written. The case table is
//! `hostile::RECIPES`.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::time::{Duration, Instant};

use common::*;
use hostile::*;

/// A sandbox whose recipes directory is empty and which has no lock file.
fn empty_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::remove_dir_all(&sb.recipes).unwrap();
    std::fs::create_dir(&sb.recipes).unwrap();
    std::fs::remove_file(&sb.lock).unwrap();
    sb
}

/// Writes `recipes` (name, text) and runs `kbuild ARGS`; the run must fail with exactly
/// `error: cannot build NAMES` and then `causes` (each a `caused by:` line, the `help:` line
/// last when given), and change nothing.
#[track_caller]
fn refused(case: &str, sb: &Sandbox, args: &[&str], causes: &[&str], help: Option<&str>) -> Run {
    let names: Vec<&str> = args[1..]
        .iter()
        .take_while(|a| !a.starts_with("--"))
        .copied()
        .collect();
    let r = sb.kbuild(args);
    let mut expected = format!("error: cannot build {}\n", names.join(" "));
    for c in causes {
        expected.push_str(&format!("  caused by: {c}\n"));
    }
    if let Some(h) = help {
        expected.push_str(&format!("help: {h}\n"));
    }
    r.assert_error(&expected);
    assert!(!sb.store.exists(), "the store was created");
    assert_eq!(sb.lock_bytes(), None, "a lock file was written");
    check_case(RECIPES, case, outcome_of(&r, false), &r.stderr());
    r
}

/// One recipe `evil` with `text`, built; must fail with `cause` (and `help`).
#[track_caller]
fn evil(case: &str, text: &str, cause: &str, help: Option<&str>) {
    let sb = empty_sandbox();
    sb.write_recipe("evil", text);
    refused(case, &sb, &["build", "evil"], &[cause], help);
}

fn file_at(target: &str) -> String {
    format!("[files.{}]\ntext = \"x\\n\"\n", toml_str(target))
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

const OUTSIDE: &str = "is outside the paths kbuild manages (/etc/, /usr/local/bin/)";

#[test]
fn target_in_usr_bin() {
    evil(
        "target_in_usr_bin",
        &file_at("/usr/bin/kubectl"),
        &format!("$SANDBOX/recipes/evil.toml:1:8: target `/usr/bin/kubectl` {OUTSIDE}"),
        None,
    );
}

#[test]
fn target_in_root_home() {
    evil(
        "target_in_root_home",
        &file_at("/root/.ssh/authorized_keys"),
        &format!("$SANDBOX/recipes/evil.toml:1:8: target `/root/.ssh/authorized_keys` {OUTSIDE}"),
        None,
    );
}

#[test]
fn target_with_a_lookalike_prefix() {
    evil(
        "target_with_a_lookalike_prefix",
        &file_at("/usr/local/binx/kubectl"),
        &format!("$SANDBOX/recipes/evil.toml:1:8: target `/usr/local/binx/kubectl` {OUTSIDE}"),
        None,
    );
}

#[test]
fn target_relative() {
    evil(
        "target_relative",
        &file_at("etc/kubernetes/config"),
        "$SANDBOX/recipes/evil.toml:1:8: target `etc/kubernetes/config` is not an absolute path",
        None,
    );
}

#[test]
fn target_with_dotdot() {
    evil(
        "target_with_dotdot",
        &file_at("/etc/../root/.bashrc"),
        "$SANDBOX/recipes/evil.toml:1:8: target `/etc/../root/.bashrc` contains a `..` component",
        None,
    );
}

#[test]
fn target_with_deep_dotdot() {
    evil(
        "target_with_deep_dotdot",
        &format!("\n\n{}", file_at("/usr/local/bin/../../../etc/shadow")),
        "$SANDBOX/recipes/evil.toml:3:8: target `/usr/local/bin/../../../etc/shadow` contains a `..` component",
        None,
    );
}

#[test]
fn target_with_a_dot() {
    evil(
        "target_with_a_dot",
        &file_at("/etc/./kubernetes/config"),
        "$SANDBOX/recipes/evil.toml:1:8: target `/etc/./kubernetes/config` contains a `.` component",
        None,
    );
}

#[test]
fn target_in_the_state_directory() {
    evil(
        "target_in_the_state_directory",
        &file_at("/etc/.kbuild/current"),
        "$SANDBOX/recipes/evil.toml:1:8: target `/etc/.kbuild/current` is inside kbuild's own state directory",
        None,
    );
}

#[test]
fn target_with_a_trailing_slash() {
    evil(
        "target_with_a_trailing_slash",
        &file_at("/etc/kubernetes/"),
        "$SANDBOX/recipes/evil.toml:1:8: target `/etc/kubernetes/` has an empty component (`//` or a trailing `/`)",
        None,
    );
}

#[test]
fn target_with_a_control_character() {
    evil(
        "target_with_a_control_character",
        &file_at("/etc/kube\u{1b}[2Jrnetes/config"),
        "$SANDBOX/recipes/evil.toml:1:8: target `\"/etc/kube\\u{1b}[2Jrnetes/config\"` contains a control character",
        None,
    );
}

/// A target the recipe format accepts builds, whatever its file name: the store object
/// holding a rendered file is named after the target, but that name is kbuild's business
/// (members' object names are sanitized the same way).
#[test]
fn target_names_outside_the_store_alphabet() {
    let sb = empty_sandbox();
    sb.write_recipe(
        "odd",
        "[files.\"/etc/kubernetes/.env\"]\ntext = \"A=1\\n\"\n\n[files.\"/etc/kubernetes/my file@x\"]\ntext = \"B=2\\n\"\n",
    );
    let r = sb.kbuild(&["build", "odd"]);
    assert_eq!(
        (r.code, r.stderr()),
        (Some(0), "       Built generation 1\n".to_owned()),
        "{r:?}"
    );
    let rootfs = r.rootfs();
    assert_eq!(
        std::fs::read(rootfs.join("etc/kubernetes/.env")).unwrap(),
        b"A=1\n"
    );
    assert_eq!(
        std::fs::read(rootfs.join("etc/kubernetes/my file@x")).unwrap(),
        b"B=2\n"
    );
    check_case(
        RECIPES,
        "target_names_outside_the_store_alphabet",
        outcome_of(&r, false),
        &r.stderr,
    );
}

// ---------------------------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------------------------

#[test]
fn recipes_importing_each_other() {
    let sb = empty_sandbox();
    sb.write_recipe(
        "alpha",
        &format!("imports = [\"beta\"]\n{}", file_at("/etc/a")),
    );
    sb.write_recipe(
        "beta",
        &format!("imports = [\"alpha\"]\n{}", file_at("/etc/b")),
    );
    refused(
        "recipes_importing_each_other",
        &sb,
        &["build", "alpha"],
        &["$SANDBOX/recipes/beta.toml:1:12: import cycle: alpha → beta → alpha"],
        Some("remove one of these imports; shared parts belong in a recipe both import"),
    );
}

#[test]
fn recipe_importing_itself() {
    let sb = empty_sandbox();
    sb.write_recipe(
        "alpha",
        &format!("imports = [\"alpha\"]\n{}", file_at("/etc/a")),
    );
    refused(
        "recipe_importing_itself",
        &sb,
        &["build", "alpha"],
        &["$SANDBOX/recipes/alpha.toml:1:12: import cycle: alpha → alpha"],
        Some("remove one of these imports; shared parts belong in a recipe both import"),
    );
}

#[test]
fn import_of_a_missing_recipe() {
    let sb = empty_sandbox();
    sb.write_recipe(
        "alpha",
        &format!("imports = [\"beta\", \"gamma\"]\n{}", file_at("/etc/a")),
    );
    sb.write_recipe("beta", &file_at("/etc/b"));
    refused(
        "import_of_a_missing_recipe",
        &sb,
        &["build", "alpha"],
        &[
            "$SANDBOX/recipes/alpha.toml:1:20: imports `gamma`, which is not a recipe in `$SANDBOX/recipes`",
        ],
        Some("available recipes: alpha, beta"),
    );
}

#[test]
fn import_with_a_path() {
    let sb = empty_sandbox();
    // Something a path traversal would find.
    std::fs::write(sb.dir.join("secret.toml"), file_at("/etc/secret")).unwrap();
    sb.write_recipe(
        "alpha",
        &format!("imports = [\"../secret\"]\n{}", file_at("/etc/a")),
    );
    refused(
        "import_with_a_path",
        &sb,
        &["build", "alpha"],
        &[
            "$SANDBOX/recipes/alpha.toml:1:12: imports `../secret`, which is not a recipe in `$SANDBOX/recipes`",
        ],
        Some("available recipes: alpha"),
    );
}

#[test]
fn recipe_name_with_a_path() {
    let sb = empty_sandbox();
    std::fs::write(sb.dir.join("secret.toml"), file_at("/etc/secret")).unwrap();
    sb.write_recipe("alpha", &file_at("/etc/a"));
    refused(
        "recipe_name_with_a_path",
        &sb,
        &["build", "../secret"],
        &["no recipe `../secret` in `$SANDBOX/recipes`"],
        Some("available recipes: alpha"),
    );
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

/// A recipe declaring `[variables.NAME]` with `body`, used by a text file.
fn variable(name: &str, body: &str) -> String {
    format!(
        "[variables.{name}]\n{body}\n[files.\"/etc/kubernetes/config\"]\ntext = \"KUBE_X=\\\"{{{{ {name} }}}}\\\"\\n\"\n"
    )
}

#[test]
fn ip_default_out_of_range() {
    evil(
        "ip_default_out_of_range",
        &variable("IP", "type = \"ip\"\ndefault = \"300.1.1.1\"\n"),
        "$SANDBOX/recipes/evil.toml:3:11: default of `IP`: `300.1.1.1` is not an IP address (e.g. 10.72.84.160)",
        None,
    );
}

#[test]
fn cidr_default_with_host_bits() {
    evil(
        "cidr_default_with_host_bits",
        &variable(
            "SERVICE_CIDR",
            "type = \"cidr\"\ndefault = \"10.254.0.1/16\"\n",
        ),
        "$SANDBOX/recipes/evil.toml:3:11: default of `SERVICE_CIDR`: `10.254.0.1/16` has host bits set; the network is `10.254.0.0/16`",
        None,
    );
}

#[test]
fn cidr_default_with_a_long_prefix() {
    evil(
        "cidr_default_with_a_long_prefix",
        &variable(
            "SERVICE_CIDR",
            "type = \"cidr\"\ndefault = \"10.0.0.0/33\"\n",
        ),
        "$SANDBOX/recipes/evil.toml:3:11: default of `SERVICE_CIDR`: `10.0.0.0/33`: prefix length 33 is longer than 32",
        None,
    );
}

#[test]
fn port_default_out_of_range() {
    evil(
        "port_default_out_of_range",
        &variable("PORT", "type = \"port\"\ndefault = 65536\n"),
        "$SANDBOX/recipes/evil.toml:3:11: default of `PORT`: `65536` is not a port number (1-65535)",
        None,
    );
}

#[test]
fn string_default_with_a_newline() {
    // A newline would add a line of its own to an EnvironmentFile.
    evil(
        "string_default_with_a_newline",
        &variable("NAME", "default = \"x\\nKUBE_EVIL=1\"\n"),
        "$SANDBOX/recipes/evil.toml:2:11: default of `NAME`: a string variable may not contain a newline or NUL",
        None,
    );
}

#[test]
fn unknown_variable_type() {
    evil(
        "unknown_variable_type",
        &variable("IP", "type = \"ipv4\"\ndefault = \"10.0.0.1\"\n"),
        "$SANDBOX/recipes/evil.toml:2:8: unknown variable type `ipv4` (expected string, ip, cidr or port)",
        None,
    );
}

#[test]
fn set_ip_out_of_range() {
    let sb = empty_sandbox();
    sb.write_recipe(
        "evil",
        &variable("IP", "type = \"ip\"\ndefault = \"10.0.0.1\"\n"),
    );
    refused(
        "set_ip_out_of_range",
        &sb,
        &["build", "evil", "--set", "IP=300.1.1.1"],
        &["`--set IP=…`: `300.1.1.1` is not an IP address (e.g. 10.72.84.160)"],
        Some("`IP` is declared in recipe `evil` ($SANDBOX/recipes/evil.toml:1:12)"),
    );
}

#[test]
fn set_string_with_a_newline() {
    let sb = empty_sandbox();
    sb.write_recipe("evil", &variable("NAME", "default = \"x\"\n"));
    refused(
        "set_string_with_a_newline",
        &sb,
        &["build", "evil", "--set", "NAME=x\nKUBE_EVIL=1"],
        &["`--set NAME=…`: a string variable may not contain a newline or NUL"],
        Some("`NAME` is declared in recipe `evil` ($SANDBOX/recipes/evil.toml:1:12)"),
    );
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

fn template_at(rel: &str) -> String {
    format!(
        "[files.\"/etc/kubernetes/config\"]\ntemplate = {}\n",
        toml_str(rel)
    )
}

#[test]
fn template_with_dotdot() {
    let sb = empty_sandbox();
    std::fs::write(sb.dir.join("x.j2"), "outside\n").unwrap();
    sb.write_recipe("evil", &template_at("../x.j2"));
    refused(
        "template_with_dotdot",
        &sb,
        &["build", "evil"],
        &[
            "$SANDBOX/recipes/evil.toml:2:12: template `../x.j2` must be a relative path inside the recipes directory, without `..`",
        ],
        None,
    );
}

#[test]
fn template_absolute() {
    evil(
        "template_absolute",
        &template_at("/etc/passwd"),
        "$SANDBOX/recipes/evil.toml:2:12: template `/etc/passwd` must be a relative path inside the recipes directory, without `..`",
        None,
    );
}

#[test]
fn template_symlink_leading_outside() {
    let s = Sentinel::new();
    std::fs::write(s.path().join("secret.j2"), "SECRET={{ 1 }}\n").unwrap();
    let before = s.snapshot();
    let sb = empty_sandbox();
    std::fs::create_dir(sb.recipes.join("templates")).unwrap();
    std::os::unix::fs::symlink(
        s.path().join("secret.j2"),
        sb.recipes.join("templates/evil.j2"),
    )
    .unwrap();
    sb.write_recipe("evil", &template_at("templates/evil.j2"));
    refused(
        "template_symlink_leading_outside",
        &sb,
        &["build", "evil"],
        &[
            "$SANDBOX/recipes/evil.toml:2:12: template `templates/evil.j2` resolves outside the recipes directory",
        ],
        None,
    );
    s.assert_untouched(&before);
}

#[test]
fn template_directory_symlink_leading_outside() {
    let s = Sentinel::new();
    std::fs::write(s.path().join("secret.j2"), "SECRET={{ 1 }}\n").unwrap();
    let before = s.snapshot();
    let sb = empty_sandbox();
    std::os::unix::fs::symlink(s.path(), sb.recipes.join("templates")).unwrap();
    sb.write_recipe("evil", &template_at("templates/secret.j2"));
    refused(
        "template_directory_symlink_leading_outside",
        &sb,
        &["build", "evil"],
        &[
            "$SANDBOX/recipes/evil.toml:2:12: template `templates/secret.j2` resolves outside the recipes directory",
        ],
        None,
    );
    s.assert_untouched(&before);
}

#[test]
fn template_missing() {
    evil(
        "template_missing",
        &template_at("templates/nope.j2"),
        "$SANDBOX/recipes/evil.toml:2:12: template `$SANDBOX/recipes/templates/nope.j2` does not exist",
        None,
    );
}

/// A FIFO can be opened but never ends: kbuild must refuse it (only regular files are
/// templates), not block forever. Bounded: the run is killed after 5 s.
#[test]
fn template_that_is_a_fifo() {
    let sb = empty_sandbox();
    std::fs::create_dir(sb.recipes.join("templates")).unwrap();
    let fifo = sb.recipes.join("templates/fifo.j2");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    sb.write_recipe("evil", &template_at("templates/fifo.j2"));
    let started = Instant::now();
    let mut c = sb.command(&["build", "evil"]);
    // Refused at once; the limit only tells that from blocking on the FIFO forever.
    c.timeout(Duration::from_secs(60));
    let r = sb.run(c);
    let took = started.elapsed();
    assert_eq!(
        r.code,
        Some(1),
        "kbuild did not refuse the FIFO template (exit {:?} after {took:?}; a run killed by the 60 s timeout has no exit code)\n{}",
        r.code,
        r.stderr
    );
    let stderr = r.stderr();
    assert!(
        stderr.starts_with(
            "error: cannot build evil\n  caused by: $SANDBOX/recipes/evil.toml:2:12: "
        ) && stderr.contains("templates/fifo.j2")
            && stderr.contains("not a regular file"),
        "{stderr}"
    );
    assert!(!sb.store.exists());
    check_case(
        RECIPES,
        "template_that_is_a_fifo",
        outcome_of(&r, false),
        &stderr,
    );
}

fn template_error(case: &str, source: &str, cause: &str) {
    let sb = empty_sandbox();
    sb.write_template("templates/evil.j2", source);
    sb.write_recipe("evil", &template_at("templates/evil.j2"));
    refused(case, &sb, &["build", "evil"], &[cause], None);
}

#[test]
fn template_including_a_host_file() {
    template_error(
        "template_including_a_host_file",
        "KUBE_X=1\n{% include \"/etc/passwd\" %}\n",
        "$SANDBOX/recipes/templates/evil.j2:2:4: syntax error: unknown statement include",
    );
}

#[test]
fn template_range_bomb() {
    template_error(
        "template_range_bomb",
        "a\n{% for i in range(100000000) %}x{% endfor %}\n",
        "$SANDBOX/recipes/templates/evil.j2:2:13: invalid operation: range has too many elements",
    );
}

#[test]
fn template_string_bomb() {
    template_error(
        "template_string_bomb",
        "a\nb\n{{ \"x\" * 1000000000 }}\n",
        "$SANDBOX/recipes/templates/evil.j2:3:4: invalid operation: repeated string is too large",
    );
}

// ---------------------------------------------------------------------------------------------
// Sizes and nesting
// ---------------------------------------------------------------------------------------------

const MIB: usize = 1 << 20;

/// A valid recipe of exactly `len` bytes: one text file, padded with a comment.
fn padded_recipe(len: usize) -> String {
    let body = file_at("/etc/kubernetes/config");
    let pad = len - body.len() - 2;
    let s = format!("{body}#{}\n", "x".repeat(pad));
    assert_eq!(s.len(), len);
    s
}

#[test]
fn recipe_over_1_mib() {
    let sb = empty_sandbox();
    sb.write_recipe("evil", &padded_recipe(MIB + 1));
    refused(
        "recipe_over_1_mib",
        &sb,
        &["build", "evil"],
        &[
            "cannot read `$SANDBOX/recipes/evil.toml`",
            "`$SANDBOX/recipes/evil.toml` is 1048577 bytes; recipes and templates are limited to 1048576 bytes",
        ],
        None,
    );
}

#[test]
fn recipe_of_exactly_1_mib() {
    let sb = empty_sandbox();
    sb.write_recipe("big", &padded_recipe(MIB));
    let r = sb.kbuild(&["build", "big"]);
    r.assert_success();
    assert_eq!(r.stderr, "       Built generation 1\n");
    assert_eq!(
        std::fs::read(r.rootfs().join("etc/kubernetes/config")).unwrap(),
        b"x\n"
    );
    check_case(
        RECIPES,
        "recipe_of_exactly_1_mib",
        outcome_of(&r, false),
        &r.stderr,
    );
}

#[test]
fn template_over_1_mib() {
    let sb = empty_sandbox();
    let mut t = String::from("KUBE_X=1\n");
    t.push_str(&"#".repeat(MIB + 1 - t.len() - 1));
    t.push('\n');
    assert_eq!(t.len(), MIB + 1);
    sb.write_template("templates/huge.j2", &t);
    sb.write_recipe("evil", &template_at("templates/huge.j2"));
    refused(
        "template_over_1_mib",
        &sb,
        &["build", "evil"],
        &[
            "$SANDBOX/recipes/evil.toml:2:12: cannot read template: `$SANDBOX/recipes/templates/huge.j2` is 1048577 bytes; recipes and templates are limited to 1048576 bytes",
        ],
        None,
    );
}

#[test]
fn toml_nesting_bomb() {
    // 300 000 nested arrays: well under 1 MiB, far deeper than any parser's stack.
    let depth = 300_000;
    evil(
        "toml_nesting_bomb",
        &format!("description = {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        "$SANDBOX/recipes/evil.toml:1:95: cannot recurse further; max recursion depth met",
        None,
    );
}

cases_tested!(RECIPES;
    target_in_usr_bin,
    target_in_root_home,
    target_with_a_lookalike_prefix,
    target_relative,
    target_with_dotdot,
    target_with_deep_dotdot,
    target_with_a_dot,
    target_in_the_state_directory,
    target_with_a_trailing_slash,
    target_with_a_control_character,
    target_names_outside_the_store_alphabet,
    recipes_importing_each_other,
    recipe_importing_itself,
    import_of_a_missing_recipe,
    import_with_a_path,
    recipe_name_with_a_path,
    ip_default_out_of_range,
    cidr_default_with_host_bits,
    cidr_default_with_a_long_prefix,
    port_default_out_of_range,
    string_default_with_a_newline,
    unknown_variable_type,
    set_ip_out_of_range,
    set_string_with_a_newline,
    template_with_dotdot,
    template_absolute,
    template_symlink_leading_outside,
    template_directory_symlink_leading_outside,
    template_missing,
    template_that_is_a_fifo,
    template_including_a_host_file,
    template_range_bomb,
    template_string_bomb,
    recipe_over_1_mib,
    recipe_of_exactly_1_mib,
    template_over_1_mib,
    toml_nesting_bomb,
);
