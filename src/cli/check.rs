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
Exit code 1 when a check fails.")]
pub struct Args {
    /// Print the result as JSON (schema: docs/json.md, "check")
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Root, args: Args, term: &Terminal) -> anyhow::Result<()> {
    let cannot = || format!("cannot check root `{}`", root.dir().display());
    let _lock = health::lock_root(root, term).with_context(cannot)?;
    let state = root.state().with_context(cannot)?;
    let (Some(generation), Some(rootfs)) = (state.generation, state.rootfs.as_deref()) else {
        return Err(super::Refused {
            message: format!("root `{}` has no active generation", root.dir().display()),
            help: "`kbuild switch --root DIR` activates one".to_owned(),
        })
        .with_context(cannot);
    };
    let profile = state.profile_name().to_owned();
    let checks = kbuild::health::of_rootfs(rootfs);
    let record = health::record(root)
        .with_context(cannot)?
        .unwrap_or_default();
    let pending = record
        .pending
        .clone()
        .filter(|p| p.generation == generation && p.profile == profile);
    if let Some(p) = &pending {
        term.status(
            "Pending",
            &format!(
                "the health gate of generation {} was interrupted (kbuild stopped while waiting); passing checks complete it",
                p.generation
            ),
        );
    }
    let live = activate::systemd_is_live(root);
    let outcomes = if live {
        health::run_checks(&checks)
    } else {
        Vec::new()
    };
    let passed = live && outcomes.iter().all(|o| o.passed);
    let status = match (checks.is_empty(), live, passed) {
        (true, _, _) => "none",
        (false, false, _) => "not run",
        (false, true, true) => "passed",
        (false, true, false) => "failed",
    };
    let me = health::GenerationRef {
        profile: profile.clone(),
        generation,
    };
    if pending.is_some() && live && passed {
        health::mark_good(root, &me).with_context(cannot)?;
    }
    if args.json {
        let results = checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let o = outcomes.get(i);
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
            profile,
            generation,
            status,
            not_run: (status == "not run").then(|| super::json::not_run_reason(root).to_owned()),
            pending: pending.clone(),
            last_good: health::record(root)
                .ok()
                .flatten()
                .and_then(|r| r.last_good),
            checks: results,
        });
    } else if checks.is_empty() {
        outln!("generation {generation} declares no health checks");
    } else if !live {
        outln!(
            "health checks of generation {generation} (not run: {}):",
            super::json::not_run_reason(root)
        );
        for c in &checks {
            outln!("  not run  {}  {} ({})", c.unit, c.describe(), c.times());
        }
    } else {
        outln!("health checks of generation {generation}:");
        for (c, o) in checks.iter().zip(&outcomes) {
            outln!(
                "  {:<7}  {}  {}: {}",
                if o.passed { "passed" } else { "failed" },
                c.unit,
                c.describe(),
                o.answer
            );
        }
    }
    if status == "failed" {
        let back = record
            .last_good
            .filter(|g| *g != me)
            .map(|g| format!("`kbuild switch --profile {} {}` goes back to generation {}, the last that passed its gate", g.profile, g.generation, g.generation))
            .unwrap_or_else(|| "`journalctl -u UNIT` says why a service does not answer".to_owned());
        return Err(super::Refused {
            message: format!("generation {generation} fails its health checks"),
            help: back,
        }
        .into());
    }
    if pending.is_some() && passed {
        term.status(
            "Healthy",
            &format!("generation {generation} passed its checks: its interrupted gate is complete"),
        );
    }
    Ok(())
}
