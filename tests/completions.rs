//! `kbuild completions` and `kbuild man`: scripts and pages generated from the clap
//! definitions, checked by the shells and formatters that read them.

mod common;

use std::path::Path;
use std::process::Command as Std;

use common::*;

/// Every command, as `kbuild --help` lists them (`help` is left out of scripts and pages).
const COMMANDS: &[&str] = &[
    "build",
    "lock",
    "update",
    "generations",
    "show",
    "switch",
    "rollback",
    "check",
    "diff",
    "inputs",
    "gc",
    "verify",
    "export",
    "import",
    "push",
    "pull",
    "completions",
    "man",
];

fn ok(sb: &Sandbox, args: &[&str]) -> String {
    let r = sb.kbuild(args);
    r.assert_success();
    assert_eq!(r.stderr, "", "stderr of `kbuild {}`", args.join(" "));
    r.stdout
}

fn installed(tool: &str) -> bool {
    Std::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `bash -c SCRIPT` with the completion script in the file `$1`; returns stdout.
fn bash(script_file: &Path, script: &str) -> String {
    let out = Std::new("bash")
        .args(["--norc", "--noprofile", "-c", script, "bash"])
        .arg(script_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_completion_parses_and_completes_subcommands() {
    let sb = Sandbox::new();
    let file = sb.dir.join("kbuild.bash");
    std::fs::write(&file, ok(&sb, &["completions", "bash"])).unwrap();

    let syntax = Std::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );

    // Sourcing registers `_kbuild` for `kbuild`; calling it as bash's completion would
    // (COMP_WORDS/COMP_CWORD set, arguments: command, current word, previous word).
    let registered = bash(&file, r#"source "$1" && complete -p kbuild"#);
    assert!(
        registered.contains("-F _kbuild") && registered.trim_end().ends_with(" kbuild"),
        "{registered}"
    );
    let complete = |words: &str| {
        let script = format!(
            r#"source "$1"
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
_kbuild kbuild "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
        );
        bash(&file, &script)
    };
    assert_eq!(complete("kbuild sw"), "switch\n");
    assert_eq!(complete("kbuild ge"), "generations\n");
    // Every command is offered after `kbuild `.
    let all = complete("kbuild ''");
    for c in COMMANDS {
        assert!(all.lines().any(|l| l == *c), "{c} not offered: {all}");
    }
    assert!(!all.lines().any(|l| l == "help"), "{all}");
    // A command's own options complete too.
    assert!(
        complete("kbuild switch --dr")
            .lines()
            .any(|l| l == "--dry-run")
    );
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    let sb = Sandbox::new();
    let zsh = ok(&sb, &["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef kbuild\n"), "{}", &zsh[..80]);
    let fish = ok(&sb, &["completions", "fish"]);
    for c in COMMANDS {
        assert!(zsh.contains(&format!("'{c}:")), "zsh lacks {c}");
        assert!(
            fish.contains(&format!("-f -a \"{c}\"")),
            "fish lacks {c}:\n{fish}"
        );
    }
    for (shell, text) in [("zsh", &zsh), ("fish", &fish)] {
        if installed(shell) {
            let file = sb.dir.join(format!("kbuild.{shell}"));
            std::fs::write(&file, text).unwrap();
            let out = Std::new(shell).arg("-n").arg(&file).output().unwrap();
            assert!(out.status.success(), "{shell} -n: {out:?}");
        } else {
            eprintln!("{shell} is not installed: its script's syntax is not checked");
        }
    }
}

#[test]
fn unknown_shell_is_a_usage_error_listing_the_valid_ones() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&["completions", "pwsh"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with(
            "error: invalid value 'pwsh' for '<SHELL>'\n  [possible values: bash, zsh, fish]\n"
        ),
        "{}",
        r.stderr
    );
    let r = sb.kbuild(&["completions"]);
    assert_eq!(r.code, Some(2), "{r:?}");
}

/// The lines clap_mangen writes before `.SH NAME`: a roff string for the apostrophe, then
/// the title line (name, section, empty date, source).
fn header(page: &str) -> String {
    format!(
        ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH {page} 1  \"kbuild {}\" \n.SH NAME\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[test]
fn man_prints_the_page_of_kbuild_naming_every_command() {
    let sb = Sandbox::new();
    let page = ok(&sb, &["man"]);
    assert!(page.starts_with(&header("kbuild")), "{}", &page[..200]);
    let subcommands = page
        .split_once(".SH SUBCOMMANDS\n")
        .expect("a SUBCOMMANDS section")
        .1;
    for c in COMMANDS {
        assert!(
            subcommands.contains(&format!("kbuild\\-{}(1)", c.replace('-', "\\-"))),
            "{c} missing:\n{subcommands}"
        );
    }
    // Environment variables are documented beside their options.
    assert!(page.contains("KBUILD_STORE"), "{page}");
    // Stdout that cannot be written is a failure.
    let out = Std::new(assert_cmd::cargo::cargo_bin("kbuild"))
        .arg("man")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot write to stdout: No space left on device (os error 28)\nhelp: the command ran to its end; only its output was lost\n"
    );
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let sb = Sandbox::new();
    let dir = sb.dir.join("share/man/man1");
    let printed = ok(&sb, &["man", "--dir", dir.to_str().unwrap()]);

    let mut expected: Vec<String> = COMMANDS.iter().map(|c| format!("kbuild-{c}.1")).collect();
    expected.push("kbuild.1".to_owned());
    expected.sort();
    let mut listing: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listing.sort();
    assert_eq!(
        listing, expected,
        "exactly one page per command, no temporary files"
    );
    let mut printed: Vec<&str> = printed.lines().collect();
    printed.sort();
    let paths: Vec<String> = expected
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    assert_eq!(printed, paths, "each page written is printed");

    assert_eq!(
        std::fs::read_to_string(dir.join("kbuild.1")).unwrap(),
        ok(&sb, &["man"]),
        "kbuild.1 is what `kbuild man` prints"
    );
    for c in COMMANDS {
        let page = std::fs::read_to_string(dir.join(format!("kbuild-{c}.1"))).unwrap();
        let name = format!("kbuild-{c}");
        assert!(page.starts_with(&header(&name)), "{name}: {}", &page[..200]);
    }
    // Examples reach the pages of the commands that have them.
    let switch = std::fs::read_to_string(dir.join("kbuild-switch.1")).unwrap();
    assert!(switch.contains("kbuild switch \\-\\-dry\\-run"), "{switch}");

    // Written again over existing pages: the same set, replaced in place.
    let again = sb.kbuild(&["man", "--dir", dir.to_str().unwrap()]);
    again.assert_success();
    let mut listing2: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listing2.sort();
    assert_eq!(listing2, expected);

    // The pages are valid roff for man(7), when a formatter is at hand.
    let mut checked = false;
    if installed("groff") {
        for f in &expected {
            // -Wbreak: a long example line that cannot be justified is not a defect.
            let out = Std::new("groff")
                .args(["-man", "-Tutf8", "-z", "-Wbreak"])
                .arg(dir.join(f))
                .output()
                .unwrap();
            assert!(
                out.status.success() && out.stderr.is_empty(),
                "groff {f}: {out:?}"
            );
        }
        checked = true;
    }
    if installed("mandoc") {
        for f in &expected {
            let out = Std::new("mandoc")
                .args(["-Tlint", "-Werror"])
                .arg(dir.join(f))
                .output()
                .unwrap();
            assert!(out.status.success(), "mandoc {f}: {out:?}");
        }
        checked = true;
    }
    if !checked {
        eprintln!("neither groff nor mandoc is installed: the pages are not formatted");
    }
}

#[test]
fn both_commands_have_examples_in_their_help() {
    let sb = Sandbox::new();
    let completions = ok(&sb, &["completions", "--help"]);
    assert!(
        completions
            .contains("Examples:\n  kbuild completions bash > /etc/bash_completion.d/kbuild"),
        "{completions}"
    );
    assert!(
        completions.contains(
            "Possible values:\n          - bash: Bash (bash-completion)\n          - zsh:  Zsh (compsys)\n          - fish: Fish\n"
        ),
        "{completions}"
    );
    let man = ok(&sb, &["man", "--help"]);
    assert!(man.contains("Examples:\n  kbuild man | man -l -"), "{man}");
    assert!(
        man.contains("kbuild man --dir /usr/local/share/man/man1"),
        "{man}"
    );
}
