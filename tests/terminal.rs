//! Colour and terminals (issue 13, point 3): `NO_COLOR` and `--color` are honoured by every
//! command, and Ctrl-C during a build clears the progress line, removes the build's own
//! temporary entries and exits 130.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// Whether `text` holds an SGR (colour) escape sequence: ESC `[` parameters `m`.
fn has_sgr(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("\x1b[") {
        let mut j = i + at + 2;
        while j < b.len() && (b[j].is_ascii_digit() || b[j] == b';') {
            j += 1;
        }
        if j < b.len() && b[j] == b'm' {
            return true;
        }
        i = i + at + 2;
    }
    false
}

/// Runs `kbuild ARGS` in the sandbox under a pseudo-terminal (`script`), with `env` added;
/// returns the exit code and everything the terminal showed (stdout and stderr).
fn under_pty(sb: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let mut line = format!(
        "exec {} --store {} --recipes {} --lock-file {}",
        assert_cmd::cargo::cargo_bin("kbuild").display(),
        sb.store.display(),
        sb.recipes.display(),
        sb.lock.display()
    );
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &sb.home)
        .env("KBUILD_ROOT", sb.dir.join("root"))
        .env("TERM", "xterm-256color")
        .current_dir(&sb.dir)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn no_color_on_a_terminal_means_no_colour_codes_in_any_command() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    // Slow enough that the progress bar is drawn.
    server.stats.pause_us.store(20_000, Ordering::SeqCst);
    // Coloured on a terminal by default: the test can see colour when there is some.
    let (code, shown) = under_pty(&sb, &[], &["build", "master"]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        has_sgr(&shown),
        "a terminal is coloured by default:\n{shown:?}"
    );

    let never: [&[&str]; 6] = [
        &["build", "master"],
        &["generations"],
        &["verify"],
        &["gc"],
        &["build", "--help"],
        &["no-such-command"],
    ];
    for args in never {
        for env in [&[("NO_COLOR", "1")][..], &[("NO_COLOR", "yes")][..]] {
            let (_, shown) = under_pty(&sb, env, args);
            assert!(!has_sgr(&shown), "{env:?} kbuild {args:?}:\n{shown:?}");
        }
        let mut with_flag = args.to_vec();
        with_flag.push("--color=never");
        if args[0] != "no-such-command" {
            let (_, shown) = under_pty(&sb, &[], &with_flag);
            assert!(!has_sgr(&shown), "kbuild {with_flag:?}:\n{shown:?}");
        }
    }
    // An empty NO_COLOR is not set (no-color.org).
    let (_, shown) = under_pty(&sb, &[("NO_COLOR", "")], &["build", "master"]);
    assert!(has_sgr(&shown), "{shown:?}");
}

#[test]
fn color_always_colours_a_pipe_and_beats_no_color_never_does_not() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let r = sb.kbuild(&["build", "master", "--color", "always"]);
    r.assert_success();
    assert!(
        r.stderr
            .contains("\x1b[1;32m       Built\x1b[0m generation 1"),
        "{}",
        r.stderr
    );
    let mut c = sb.bare();
    c.env("NO_COLOR", "1").args([
        "--store",
        sb.store.to_str().unwrap(),
        "--recipes",
        sb.recipes.to_str().unwrap(),
        "--lock-file",
        sb.lock.to_str().unwrap(),
        "build",
        "master",
    ]);
    let r = sb.run(c);
    r.assert_success();
    assert!(!r.stderr.contains("\x1b[") && !r.stdout.contains("\x1b["));
    assert_eq!(r.stderr, "       Fresh generation 1 is up to date\n");
    let r = sb.kbuild(&["--color", "never", "build", "master"]);
    assert!(!r.stderr.contains("\x1b["), "{}", r.stderr);
    let r = sb.kbuild(&["build", "master", "--color", "sometimes"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("invalid value 'sometimes' for '--color <WHEN>'"),
        "{}",
        r.stderr
    );
}

/// Temporary entries (`.tmp-*`) at the top of the store.
fn temp_entries(store: &std::path::Path) -> Vec<String> {
    top_level(store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// Waits until the build is reading (some body bytes sent) and has a scratch directory.
fn wait_reading(server: &Server, store: &std::path::Path) {
    let start = Instant::now();
    while server.stats.sent() < (256 << 10) || temp_entries(store).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the build never started reading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_during_a_build_removes_its_temporary_entries_and_exits_130() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    server.stats.pause_us.store(200_000, Ordering::SeqCst);
    let child = sb.spawn(&["build", "master"]);
    wait_reading(&server, &sb.store);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(temp_entries(&sb.store), Vec::<String>::new());
    assert!(
        stderr.ends_with("error: interrupted; removed 1 temporary entry this command had made\n"),
        "{stderr}"
    );
    // No generation was recorded; the next build starts over and succeeds.
    server.stats.pause_us.store(0, Ordering::SeqCst);
    sb.build_ok(&[]);
    assert_eq!(temp_entries(&sb.store), Vec::<String>::new());
}

#[test]
fn ctrl_c_on_a_terminal_clears_the_progress_line() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    server.stats.pause_us.store(200_000, Ordering::SeqCst);
    let pidfile = sb.dir.join("pid");
    // The shell writes its pid, then becomes kbuild (exec): that pid gets the SIGINT.
    let line = format!(
        "echo $$ > {}; exec {} --store {} --recipes {} --lock-file {} build master",
        pidfile.display(),
        assert_cmd::cargo::cargo_bin("kbuild").display(),
        sb.store.display(),
        sb.recipes.display(),
        sb.lock.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &sb.home)
        .env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .current_dir(&sb.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_reading(&server, &sb.store);
    // The terminal's output as it comes, to see the bar drawn before the interrupt.
    let mut tty = child.stdout.take().unwrap();
    let output: Arc<Mutex<Vec<u8>>> = Arc::default();
    let reader = {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = tty.read(&mut buf) {
                output.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let start = Instant::now();
    while !String::from_utf8_lossy(&output.lock().unwrap()).contains("Reading") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the bar was never drawn: {:?}",
            String::from_utf8_lossy(&output.lock().unwrap())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    Command::new("kill")
        .args(["-INT", pid.trim()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let shown = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    assert_eq!(status.code(), Some(130), "{shown:?}");
    assert_eq!(temp_entries(&sb.store), Vec::<String>::new());
    // The bar was drawn, then erased (ESC [2K: erase the line) before the last message,
    // which starts at the beginning of a clean line.
    let bar = shown.rfind("Reading").expect("the bar was drawn");
    let end = shown
        .rfind("error: interrupted; removed 1 temporary entry this command had made")
        .expect("the message");
    assert!(bar < end, "{shown:?}");
    assert!(shown[bar..end].contains("\x1b[2K"), "{shown:?}");
    // Every line the bar used is erased after its last drawing.
    let last_draw = shown[..end].rfind("kubernetes-server").unwrap();
    assert!(
        shown[last_draw..end].matches("\x1b[2K").count() >= 2,
        "{shown:?}"
    );
    assert!(!has_sgr(&shown), "{shown:?}");
}
