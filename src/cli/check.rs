//! `kbuild check`: the active generation's health checks, run on the root alone.

use anyhow::Context as _;
use kbuild::activate::{self, Root, health};

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild check                       # the active generation's checks, on /
  kbuild check --json

The checks are the generation's own (recorded in its rootfs at build time): no recipes are
read. They run only on root `/` with systemd running; elsewhere they are listed as \"not run\"
(never as passed). When a switch was killed during its health gate, `check` says so, and
checks that pass complete that gate (the generation is then recorded as the last good one).
Exit code 1 when a check fails, 5 when the checks were not run (root not `/`, or systemd not
running): never 0 unless every check ran and passed, or the generation declares none.")]
pub struct Args {
    /// Print the result as JSON (schema: docs/json.md, "check")
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Root, args: Args, term: &Terminal) -> anyhow::Result<()> {
    let live = activate::systemd_is_live(root);
    let checked = health::check(root, live, term)
        .with_context(|| format!("cannot check root `{}`", root.dir().display()))?
        .ok_or_else(|| super::Refused {
            message: format!("root `{}` has no active generation", root.dir().display()),
            help: "`kbuild switch --root DIR` activates one".to_owned(),
        })?;
    let generation = checked.active.generation;
    let status = match (checked.checks.is_empty(), live, checked.passed()) {
        (true, _, _) => "none",
        (false, false, _) => "not run",
        (false, true, true) => "passed",
        (false, true, false) => "failed",
    };
    let not_run = super::json::not_run_reason(root);
    if args.json {
        let results = checked
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let o = checked.outcomes.get(i);
                super::json::CheckResult {
                    check: c.clone(),
                    status: match o {
                        None => "not run",
                        Some(o) if o.passed => "passed",
                        Some(_) => "failed",
                    },
                    answer: o.map(|o| o.answer.clone()),
                    attempts: o.map_or(0, |o| o.attempts),
                    elapsed_ms: o.map_or(0, |o| {
                        u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX)
                    }),
                }
            })
            .collect();
        super::json::print(&super::json::Check {
            version: super::json::VERSION,
            root: root.dir().display().to_string(),
            profile: checked.active.profile.clone(),
            generation,
            status,
            not_run: (status == "not run").then(|| not_run.to_owned()),
            pending: checked.pending.clone(),
            last_good: checked.last_good.clone(),
            checks: results,
        });
    } else if checked.checks.is_empty() {
        outln!("generation {generation} declares no health checks");
    } else if !live {
        outln!("health checks of generation {generation} (not run: {not_run}):");
        for c in &checked.checks {
            outln!("  not run  {}  {} ({})", c.unit, c.describe(), c.times());
        }
    } else {
        outln!("health checks of generation {generation}:");
        for (c, o) in checked.checks.iter().zip(&checked.outcomes) {
            outln!(
                "  {:<7}  {}  {}: {}",
                if o.passed { "passed" } else { "failed" },
                c.unit,
                c.describe(),
                o.answer
            );
        }
    }
    if status == "not run" {
        // Exit 0 would read as "passed" to every script (`kbuild check && …`).
        return Err(anyhow::Error::msg(format!(
            "the health checks of generation {generation} were not run: {not_run}"
        ))
        .context(super::Coded {
            code: 5,
            message: format!("generation {generation}'s health is not known"),
            help: Some(
                "run `kbuild check` on the host itself (root `/`, systemd running)".to_owned(),
            ),
        }));
    }
    if status == "failed" {
        let help = checked
            .last_good
            .filter(|g| *g != checked.active)
            .map(|g| {
                format!(
                    "`kbuild switch --profile {} {}` goes back to generation {}, the last that passed its gate",
                    g.profile, g.generation, g.generation
                )
            })
            .unwrap_or_else(|| "`journalctl -u UNIT` says why a service does not answer".to_owned());
        return Err(super::Refused {
            message: format!("generation {generation} fails its health checks"),
            help,
        }
        .into());
    }
    Ok(())
}
