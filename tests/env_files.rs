//! `format = "env"`: rendered files are read as systemd reads an `EnvironmentFile=`
//! (src/envfile.rs). Every file systemd reads as written builds; a value systemd would read
//! otherwise is refused, naming the variable and the template line.

mod common;

use common::{Run, Sandbox};

/// A sandbox with recipe `env`: variable `V` and `/etc/app/env` rendered from `template`.
fn sandbox(template: &str) -> Sandbox {
    let sb = Sandbox::new();
    sb.write_recipe(
        "env",
        "[variables.V]\ndefault = \"x\"\n\n[files.\"/etc/app/env\"]\ntemplate = \"templates/app.env.j2\"\nformat = \"env\"\n",
    );
    sb.write_template("templates/app.env.j2", template);
    sb
}

fn build(sb: &Sandbox, value: Option<&str>) -> Run {
    let set = value.map(|v| format!("V={v}"));
    let mut args = vec!["build", "env"];
    if let Some(s) = &set {
        args.extend(["--set", s.as_str()]);
    }
    sb.kbuild(&args)
}

/// Builds, which must succeed; the rendered file and what systemd reads from it.
fn built(sb: &Sandbox, value: Option<&str>) -> (String, Vec<(String, String)>) {
    let r = build(sb, value);
    r.assert_success();
    let text = std::fs::read_to_string(r.rootfs().join("etc/app/env")).unwrap();
    let reading = kbuild::envfile::read(&text);
    assert_eq!(reading.faults, vec![], "{text:?}");
    let env = reading
        .assignments
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect();
    (text, env)
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const QUOTE_HELP: &str = "help: let kbuild quote it: `KEY={{ V | env_quote }}` (double quotes, `\\` before `\"`, `\\`, `` ` `` and `$`), or pass a value systemd reads as it is: `kbuild build RECIPE --set V=VALUE`\n";
const FILE_HELP: &str = "help: write each line as `KEY=\"value\"` (a value on one line) or a `#` comment, as systemd.exec(5) reads an EnvironmentFile=, then run `kbuild build` again\n";

#[test]
fn files_systemd_reads_as_written_build() {
    // The issue's two examples, escapes inside double quotes (kept unless before `"\`$`),
    // single quotes, continuation lines, blanks around `=`, comments, CRLF.
    let sb = sandbox(concat!(
        "# the issue's examples\n",
        "KEY=\"a=\\\"b\\\"\"\n",
        "KEY2 = \"v\"\n",
        "  ; indented comment\n",
        "WIN=\"C:\\\\dir\\n\"\n",
        "SQ='a \\ \"b\"'\n",
        "JOINED=\"a\" 'b' c\n",
        "LONG=one \\\n two\n",
        "DOLLAR=\"\\$HOME `x`\"\n",
        "CRLF=1\r\n",
        "EMPTY=\n",
        "V={{ V }}\n",
    ));
    let (_, env) = built(&sb, Some("a#b;c"));
    assert_eq!(
        env,
        kv(&[
            ("KEY", "a=\"b\""),
            ("KEY2", "v"),
            ("WIN", "C:\\dir\\n"),
            ("SQ", "a \\ \"b\""),
            ("JOINED", "abc"),
            ("LONG", "one  two"),
            ("DOLLAR", "$HOME `x`"),
            ("CRLF", "1"),
            ("EMPTY", ""),
            ("V", "a#b;c"),
        ])
    );
}

#[test]
fn a_set_value_ending_in_a_backslash_inside_quotes_is_refused() {
    // The issue's case: systemd would read `\"` as a quote, fold the next line into A and
    // never set B. It built with exit 0 before.
    let sb = sandbox("# app\nA=\"{{ V }}\"\nB=\"y\"\n");
    build(&sb, Some("x\\")).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:2: `{{{{ V }}}}` = `x\\` is not read by systemd as written in `/etc/app/env`: systemd reads a backslash in it as an escape (systemd would read `A` as \"x\\\"\\nB=y\\\"\")\n{QUOTE_HELP}"
    ));
    // Nothing was recorded.
    assert!(!sb.store.join(".kbuild/profiles/default/1.json").exists());
    // A backslash systemd keeps as it is inside double quotes builds and reads back.
    let (_, env) = built(&sb, Some("a\\b"));
    assert_eq!(env, kv(&[("A", "a\\b"), ("B", "y")]));
}

#[test]
fn a_quote_in_a_value_is_refused() {
    let sb = sandbox("A=\"{{ V }}\"\n");
    build(&sb, Some("a\"b")).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:1: `{{{{ V }}}}` = `a\"b` is not read by systemd as written in `/etc/app/env`: systemd reads a quote in it as the start or end of a quoted part (systemd would read `A` as \"ab\\\"\")\n{QUOTE_HELP}"
    ));
}

#[test]
fn blanks_at_the_end_of_an_unquoted_value_are_refused() {
    // Own case: systemd drops them; inside quotes they are kept.
    let sb = sandbox("A={{ V }}\n");
    build(&sb, Some("a ")).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:1: `{{{{ V }}}}` = `a ` is not read by systemd as written in `/etc/app/env`: systemd drops blanks at the start or end of an unquoted value (systemd would read `A` as \"a\")\n{QUOTE_HELP}"
    ));
    let (_, env) = built(&sb, Some("a b"));
    assert_eq!(env, kv(&[("A", "a b")]));
    let sb = sandbox("A=\"{{ V }}\"\n");
    let (_, env) = built(&sb, Some(" a "));
    assert_eq!(env, kv(&[("A", " a ")]));
}

#[test]
fn env_quote_writes_any_value_so_that_systemd_reads_it_back() {
    let sb = sandbox("A={{ V | env_quote }}\nB=\"y\"\n");
    let value = "x\\ \"q\" $HOME `c` 'single'\\";
    let (text, env) = built(&sb, Some(value));
    assert_eq!(
        text,
        "A=\"x\\\\ \\\"q\\\" \\$HOME \\`c\\` 'single'\\\\\"\nB=\"y\"\n"
    );
    assert_eq!(env, kv(&[("A", value), ("B", "y")]));
}

#[test]
fn a_comment_ending_in_a_backslash_is_refused() {
    // systemd 252 (Debian 12) reads the next line as part of the comment; 254 and later
    // do not: the file means different things to them.
    let sb = sandbox("# listen on \\\nA=1\n");
    build(&sb, None).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:1: rendered `/etc/app/env` is not a valid environment file: a comment ends in a backslash (systemd 252 reads the next line as part of the comment, systemd 254 and later do not)\n{FILE_HELP}"
    ));
}

#[test]
fn lines_systemd_ignores_or_drops_are_refused() {
    for (template, line, message) in [
        (
            "A=1\nnot an assignment\n",
            2,
            "line `not an assignment` is not KEY=VALUE (systemd ignores it)",
        ),
        (
            "A=1\n2B=x\n",
            2,
            "`2B` is not a variable name (systemd drops the line)",
        ),
        (
            "A=\"--tls-cert-file=/etc/ku\nbernetes/ssl/kubernetes.pem\"\n",
            1,
            "the quoted value of `A` does not close on its line (systemd would read the line break into it)",
        ),
        (
            "A='open\n",
            1,
            "the quoted value of `A` does not close on its line (systemd would read the line break into it)",
        ),
        (
            "A=\"x\u{7}\"\n",
            1,
            "the value of `A` holds a control character (systemd drops the line)",
        ),
    ] {
        let sb = sandbox(template);
        build(&sb, None).assert_error(&format!(
            "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:{line}: rendered `/etc/app/env` is not a valid environment file: {message}\n{FILE_HELP}"
        ));
    }
}

#[test]
fn a_value_in_a_text_file_is_checked_the_same_way() {
    let sb = Sandbox::new();
    sb.write_recipe(
        "env",
        "[variables.V]\ndefault = \"x\"\n\n[files.\"/etc/app/env\"]\ntext = \"A='{{ V }}'\\n\"\nformat = \"env\"\n",
    );
    // Inside single quotes a backslash is literal; a single quote ends the value.
    let (_, env) = built(&sb, Some("a\\b\"c"));
    assert_eq!(env, kv(&[("A", "a\\b\"c")]));
    build(&sb, Some("it's")).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/env.toml:4:8: `text` of `/etc/app/env`, line 1: `{{{{ V }}}}` = `it's` is not read by systemd as written in `/etc/app/env`: systemd reads a quote in it as the start or end of a quoted part (systemd would read `A` as \"its'\")\n{QUOTE_HELP}"
    ));
}

#[test]
fn a_value_in_a_comment_is_ignored_unless_it_ends_the_comment_in_a_backslash() {
    let sb = sandbox("# for {{ V }}\nA=1\n");
    let (_, env) = built(&sb, Some("a \"quoted\" \\ value"));
    assert_eq!(env, kv(&[("A", "1")]));
    // systemd 252 would read `A=1` as part of the comment.
    build(&sb, Some("x\\")).assert_error(&format!(
        "error: cannot build env\n  caused by: $SANDBOX/recipes/templates/app.env.j2:1: rendered `/etc/app/env` is not a valid environment file: a comment ends in a backslash (systemd 252 reads the next line as part of the comment, systemd 254 and later do not)\n{FILE_HELP}"
    ));
}
