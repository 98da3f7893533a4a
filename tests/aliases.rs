//! `Alias=` links in a root: the same relative text as in the rootfs (`etc/systemd/system/A ->
//! X`), never through the flip point (systemd would load a second copy of the unit), created,
//! replaced and removed by the switch like kbuild's other links, at every crash point, and
//! reported by `verify` when changed by hand.

mod common;

use common::world::{Gen, Listing, World, assert_crashed_between, fault_step, toml_string};

const DIR: &str = "etc/systemd/system";

/// A unit running `name`, with `install` as its `[Install]` section.
fn unit(name: &str, install: &str) -> String {
    format!("[Service]\nExecStart=/usr/local/bin/{name}\n[Install]\n{install}")
}

/// Builds generation `number` from units `a.service` and `b.service` with these `[Install]`
/// sections.
fn build(w: &World, number: u64, a: &str, b: &str) -> Gen {
    let name = format!("g{number}");
    w.sb.write_recipe(
        &name,
        &format!(
            "[files.\"/{DIR}/a.service\"]\ntext = {}\n[files.\"/{DIR}/b.service\"]\ntext = {}\n",
            toml_string(&unit("a", a)),
            toml_string(&unit("b", b)),
        ),
    );
    w.build(&[&name], &[], number)
}

/// The three generations: 1 aliases `kv.service` to a, 2 has no alias, 3 aliases it to b.
fn world() -> (World, [Gen; 3]) {
    let w = World::new();
    let wanted = "WantedBy=multi-user.target\n";
    let g1 = build(&w, 1, &format!("{wanted}Alias=kv.service\n"), "");
    let g2 = build(&w, 2, wanted, "");
    let g3 = build(&w, 3, wanted, "Alias=kv.service\n");
    (w, [g1, g2, g3])
}

/// The exact root on `g`.
fn at(w: &World, base: &Listing, g: &Gen) -> Listing {
    w.expect(
        base,
        g,
        &[
            "/etc/systemd",
            "/etc/systemd/system",
            "/etc/systemd/system/multi-user.target.wants",
        ],
        &[],
    )
}

fn link(w: &World, rel: &str) -> Option<String> {
    std::fs::read_link(w.root.join(rel))
        .ok()
        .map(|t| t.display().to_string())
}

#[test]
fn an_alias_keeps_its_own_text_and_follows_the_generation() {
    let (w, [g1, g2, g3]) = world();
    let base = w.base();
    w.ok(&["switch", "1"]);
    let l1 = at(&w, &base, &g1);
    // Written out once, not only through `expect`: the alias's text is the rootfs's.
    assert_eq!(
        l1.0.get(&format!("{DIR}/kv.service"))
            .map(|i| i.to_string()),
        Some("-> a.service".to_owned())
    );
    assert_eq!(
        link(&w, &format!("{DIR}/a.service")).as_deref(),
        Some("../../../etc/.kbuild/current/etc/systemd/system/a.service")
    );
    w.assert_root(&l1, &g1, "on 1");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");

    // Without the alias: the link goes.
    w.ok(&["switch", "2"]);
    w.assert_root(&at(&w, &base, &g2), &g2, "on 2");
    assert_eq!(link(&w, &format!("{DIR}/kv.service")), None);
    // The alias names another unit: replaced.
    let r = w.ok(&["switch", "3"]);
    assert!(
        r.stdout
            .contains("  add     /etc/systemd/system/kv.service\n"),
        "{}",
        r.stdout
    );
    w.assert_root(&at(&w, &base, &g3), &g3, "on 3");
    assert_eq!(
        link(&w, &format!("{DIR}/kv.service")).as_deref(),
        Some("b.service")
    );
    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stdout
            .contains("  change  /etc/systemd/system/kv.service\n"),
        "{}",
        r.stdout
    );
    w.assert_root(&l1, &g1, "3 -> 1");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

#[test]
fn a_crash_at_every_step_leaves_an_alias_of_either_generation() {
    let (w, gens) = world();
    let base = w.base();
    let lists: Vec<Listing> = gens.iter().map(|g| at(&w, &base, g)).collect();
    // Added, replaced (another unit), removed.
    for (a, b) in [(1, 0), (0, 2), (2, 0), (0, 1)] {
        let (ga, gb, la, lb) = (&gens[a], &gens[b], &lists[a], &lists[b]);
        let (na, nb) = (ga.number.to_string(), gb.number.to_string());
        w.ok(&["switch", &na]);
        w.assert_root(la, ga, "before the crashes");
        let mut steps = Vec::new();
        for n in 1.. {
            let when = format!("{na} -> {nb}, crash at step {n}");
            let r = w.run_env(&["switch", &nb], &[("KBUILD_FAULT_AT", &n.to_string())]);
            if r.code == Some(0) {
                w.assert_root(lb, gb, &format!("{na} -> {nb} ran to the end"));
                w.ok(&["switch", &na]);
                break;
            }
            assert!(n <= 40, "still crashing at step {n}");
            assert_eq!(r.code, None, "{when}: {r:?}");
            steps.push(fault_step(&r, n));
            assert_crashed_between(&w, ga, gb, la, lb, &when);
            // Odd steps: completed; even ones: completed, then undone by going back.
            if n % 2 == 1 {
                w.ok(&["switch", &nb]);
                w.assert_root(lb, gb, &format!("{when}: completed"));
                w.ok(&["switch", &na]);
            } else {
                w.ok(&["switch", &na]);
            }
            w.assert_root(la, ga, &format!("{when}: back"));
        }
        // The alias's own step is among them (added, replaced or removed by one rename).
        let alias_step = if b == 1 { "unlink" } else { "link" };
        assert!(
            steps.iter().any(|s| s == alias_step),
            "{na} -> {nb}: {steps:?}"
        );
    }
}

#[test]
fn verify_reports_a_changed_alias_and_switch_repairs_it() {
    let (w, [g1, _, _]) = world();
    let base = w.base();
    w.ok(&["switch", "1"]);
    let alias = w.root.join(DIR).join("kv.service");
    std::fs::remove_file(&alias).unwrap();
    std::os::unix::fs::symlink("b.service", &alias).unwrap();
    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stdout(),
        "drift    $SANDBOX/host: link changed: /etc/systemd/system/kv.service -> b.service (`kbuild switch 1 --adopt` keeps it in /etc/.kbuild/adopted/etc/systemd/system/kv.service and puts kbuild's link back)\n"
    );
    // A hand-made alias is not kbuild's: the switch refuses to replace it without --adopt.
    let r = w.run(&["switch", "1"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("/etc/systemd/system/kv.service"),
        "{}",
        r.stderr
    );
    // Through the flip point (as an older kbuild linked it): kbuild's, put right by a switch.
    std::fs::remove_file(&alias).unwrap();
    std::os::unix::fs::symlink(
        "../../../etc/.kbuild/current/etc/systemd/system/kv.service",
        &alias,
    )
    .unwrap();
    let r = w.run(&["verify"]);
    assert_eq!(
        r.stdout(),
        "drift    $SANDBOX/host: link changed: /etc/systemd/system/kv.service -> ../../../etc/.kbuild/current/etc/systemd/system/kv.service (`kbuild switch 1` repairs it)\n"
    );
    let r = w.ok(&["switch", "1"]);
    assert!(
        r.stdout
            .contains("  repair  /etc/systemd/system/kv.service (changed or removed by hand)\n"),
        "{}",
        r.stdout
    );
    w.assert_root(&at(&w, &base, &g1), &g1, "repaired");
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}
