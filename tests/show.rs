//! `kbuild show` (issue 13 point 5): a generation's profile, recipes, variables and files with
//! their origins; `generations` with each generation's closure size.

mod common;

use common::world::World;

/// The `created` line's timestamp replaced (it is the build's wall-clock time).
fn masked(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| {
            if l.starts_with("created    ") {
                "created    <created>".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn world_with_extra() -> World {
    let w = World::new();
    w.master_plus("extra", &[("/etc/motd", "hello\n")]);
    w
}

#[test]
fn show_lists_the_newest_generation_with_origins() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    let r = w.ok(&["show"]);
    let out = masked(&r.stdout());
    println!("{out}");
    assert_eq!(out, EXPECTED_SHOW);
    assert_eq!(r.stderr, "");
}

const EXPECTED_SHOW: &str = "";
