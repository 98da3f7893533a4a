//! `kbuild switch` and `kbuild rollback`.

use anyhow::Context as _;
use kbuild::activate::{self, Plan, Root, Target, health};
use kbuild::build::Context;
use kbuild::store::Store;

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild switch --dry-run            # the plan: files, prerequisites, unit actions
  kbuild switch                      # the newest generation, on /
  kbuild switch 3 --root /srv/m1     # generation 3, on another root
  kbuild switch --host master-1 --root /srv/m1   # a root's first switch: it follows master-1

A root belongs to one profile, recorded at its first switch (`--host NAME` or `--profile NAME`;
`default` otherwise): numbers are read in it, `kbuild switch` takes its newest generation and
`kbuild rollback` stays in it. Moving a root to another profile takes `--profile NAME`.

An interrupted switch (crash, kill -9, power loss) is completed by the next switch or rollback,
or undone when it cannot be completed (its generation gone from the store, a file made by hand in
the way). `kbuild verify --root DIR` names the command that repairs whatever it finds.
A store that moved keeps its roots (it is known by its id, store/.kbuild/id): one switch from
its new place re-points the root's flip point (`kbuild verify --root DIR` names it).
Unit actions are run when the root is `/` and systemd is running; otherwise they are printed
as \"not run\" (after a switch) or \"would run\" (with --dry-run).
Health gate (a generation whose recipes declare [[health]] checks, on a live root): after the
unit actions, kbuild waits for the units to be active and settled and for the checks to pass;
if one fails it switches back to the last generation that passed its gate and exits 3 (4: the
root is left on a generation that failed its gate, e.g. with --no-rollback). Elsewhere the
checks are reported as not run.")]
pub struct SwitchArgs {
    /// Generation to activate, in the root's profile [default: its newest]
    #[arg(value_name = "GENERATION")]
    generation: Option<u64>,
    #[command(flatten)]
    profile: super::ProfileArgs,
    /// Print the plan (files, prerequisites, unit actions as "would run") and change nothing
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print the plan as JSON (schema: docs/json.md, "plan")
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// Move unmanaged files that are in the way into /etc/.kbuild/adopted (restored when
    /// kbuild stops managing the path) instead of refusing; also takes over a root managed
    /// from another store
    #[arg(long)]
    adopt: bool,
    /// When the health gate fails, keep the new generation (exit code 4) instead of rolling
    /// back to the last generation that passed its gate
    #[arg(long)]
    no_rollback: bool,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild rollback --dry-run          # the plan: files, prerequisites, unit actions
  kbuild rollback                    # back to the generation before the active one, on /
  kbuild rollback --root /srv/m1

Unit actions are run when the root is `/` and systemd is running; otherwise they are printed
as \"not run\" (after a switch) or \"would run\" (with --dry-run). The generation rolled back
to is health-gated as `kbuild switch` describes (exit code 3 or 4 when its gate fails).")]
pub struct RollbackArgs {
    /// Print the plan (files, prerequisites, unit actions as "would run") and change nothing
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print the plan as JSON (schema: docs/json.md, "plan")
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// As for `switch`: move unmanaged files in the way into /etc/.kbuild/adopted (restored
    /// when kbuild stops managing the path); also takes over a root managed from another store
    #[arg(long)]
    adopt: bool,
    /// As for `switch`: when the health gate fails, stay (exit code 4) instead of going back
    /// to the last generation that passed its gate
    #[arg(long)]
    no_rollback: bool,
}

/// A real switch, or a dry run printing the plan as text or as JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dry {
    No,
    Text,
    Json,
}

impl Dry {
    fn of(dry_run: bool, json: bool) -> Dry {
        match (dry_run, json) {
            (false, _) => Dry::No,
            (true, false) => Dry::Text,
            (true, true) => Dry::Json,
        }
    }
}

fn open(ctx: &Context) -> anyhow::Result<Store> {
    Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))
}

pub fn run_switch(
    ctx: &Context,
    root: &Root,
    args: SwitchArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let target = args.generation.map_or(Target::Newest, Target::Number);
    run(
        ctx,
        root,
        target,
        &args.profile.choice(),
        Dry::of(args.dry_run, args.json),
        args.adopt,
        args.no_rollback,
        term,
    )
}

pub fn run_rollback(
    ctx: &Context,
    root: &Root,
    args: RollbackArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    run(
        ctx,
        root,
        Target::Previous,
        &activate::Choice::Root,
        Dry::of(args.dry_run, args.json),
        args.adopt,
        args.no_rollback,
        term,
    )
}

// The flags of a switch, as the command line gives them.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Context,
    root: &Root,
    target: Target,
    choice: &activate::Choice,
    dry: Dry,
    adopt: bool,
    no_rollback: bool,
    term: &Terminal,
) -> anyhow::Result<()> {
    warn_store_place(ctx, root);
    let store = open(ctx)?;
    if let activate::Choice::Host(h) = choice {
        super::check_host(ctx, &store, h)?;
    }
    let what = if target == Target::Previous {
        "roll back"
    } else {
        "switch"
    };
    if dry != Dry::No {
        let plan = activate::dry_run(&store, root, target, choice, adopt)
            .with_context(|| format!("cannot plan to {what} root `{}`", root.dir().display()))?;
        // The dry run fails where the switch would, with the same message.
        let refused = plan
            .check()
            .and_then(|()| activate::check_registry(&store, root))
            .with_context(|| {
                format!(
                    "a {what} of root `{}` would be refused",
                    root.dir().display()
                )
            });
        // A gate a killed kbuild left: a switch to its generation runs it again, even when
        // nothing else changes, so the dry run says so and lists the checks.
        let pending = health::record(root)
            .with_context(|| format!("cannot plan to {what} root `{}`", root.dir().display()))?
            .and_then(|r| r.pending);
        let regated = pending.as_ref().is_some_and(|p| {
            plan.to.generation == Some(p.generation) && plan.to.profile_name() == p.profile
        });
        if dry == Dry::Json {
            let refusal = refused.as_ref().err().map(|e| super::json::Refusal {
                error: e
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": "),
                help: super::help_for(e),
            });
            let mut health = super::json::Health::new(root, &plan.health_checks()?);
            health.pending = pending;
            super::json::print(&super::json::Plan::new(&plan, refusal, health));
        } else {
            if let Some(p) = &pending {
                term.status("Pending", &health::pending_message(p));
            }
            warn_prerequisites(&plan);
            out!("{plan}");
            print_units(root, &plan, false);
            // As after the switch: listed when the switch would change something, or run
            // an interrupted gate again.
            if !plan.is_noop() || regated {
                print_checks(root, &plan.health_checks()?, false);
            }
        }
        return refused;
    }
    let live = activate::systemd_is_live(root);
    let session = activate::Session::open(&store, root, term)
        .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?;
    let driver = Driver {
        root,
        term,
        live,
        failures: std::cell::RefCell::new(Vec::new()),
        started: std::time::SystemTime::now(),
    };
    let (plan, _, gated) =
        health::switch(&session, target, choice, adopt, live, no_rollback, &driver)
            .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?;
    let (to, failure, end) = match gated {
        health::Gated::Ungated { failures, not_run } => {
            if not_run {
                print_checks(root, &plan.health_checks()?, true);
            }
            return unit_failures(failures);
        }
        health::Gated::Passed => return Ok(()),
        health::Gated::Failed { to, failure, end } => (to, failure, end),
    };
    let n = to.generation;
    let back = |g: &health::GenerationRef| {
        format!(
            "`kbuild switch --profile {} {}` goes back to the last generation that passed its gate",
            g.profile, g.generation
        )
    };
    let (code, message, help) = match *end {
        health::End::RolledBack { good } => (
            3,
            format!(
                "generation {n} failed its health gate; rolled back to generation {}, which passed its gate again",
                good.generation
            ),
            Some(format!(
                "fix what made generation {n} fail (the cause above; its units' journal is printed before), build and switch again; `kbuild switch --profile {} {n} --no-rollback` keeps it to look into",
                to.profile
            )),
        ),
        health::End::Kept { good } => (
            4,
            format!("generation {n} failed its health gate; kept, as --no-rollback asks"),
            good.as_ref().map(back),
        ),
        health::End::NoGood => (
            4,
            format!(
                "generation {n} failed its health gate, and the root has no other generation that passed one to go back to; it stays on generation {n}"
            ),
            Some("fix the generation and switch again, or switch to a generation that works (`kbuild generations` lists them)".to_owned()),
        ),
        health::End::BackFailed { good, error } => (
            4,
            format!(
                "generation {n} failed its health gate, and the switch back to generation {} failed ({error}); the root stays on generation {n}",
                good.generation
            ),
            error.help(),
        ),
        health::End::BackUnhealthy { good, failure } => (
            4,
            format!(
                "generation {n} failed its health gate, and generation {} it rolled back to failed its gate too ({failure})",
                good.generation
            ),
            Some(format!(
                "`kbuild generations --profile {}` lists the others: switch to one that works, or fix the recipe, build and switch again",
                good.profile
            )),
        ),
    };
    Err(
        anyhow::Error::msg(failure.to_string()).context(super::Coded {
            code,
            message,
            help,
        }),
    )
}

/// The command line's side of a gated switch: status lines, plans and check results on the
/// terminal, and the unit actions run (live) or printed as not run.
struct Driver<'a> {
    root: &'a Root,
    term: &'a Terminal,
    live: bool,
    /// Unit actions that failed since the last [`health::Driver::applied`].
    failures: std::cell::RefCell<Vec<activate::ActionFailure>>,
    /// When the command started: a failed gate's journal tail begins there.
    started: std::time::SystemTime,
}

impl health::Driver for Driver<'_> {
    fn status(&self, verb: &str, message: &str) {
        self.term.status(verb, message);
    }

    /// An interrupted switch completed (or undone) first still owes its unit actions; they
    /// are reported and run at once, whatever the requested switch does next.
    fn recovered(&self, r: &activate::Recovered) {
        let now = match r.generation {
            Some(n) => format!("generation {n}"),
            None => "no generation (unmanaged again)".to_owned(),
        };
        match &r.undone {
            None => self.term.status(
                "Completed",
                "an interrupted switch; running its unit actions",
            ),
            Some(why) => self.term.status(
                "Undone",
                &format!(
                    "an interrupted switch, which could not be completed ({why}); the root is back on {now}"
                ),
            ),
        }
        if r.units.is_empty() {
            return;
        }
        if self.live {
            let mut f = self.failures.borrow_mut();
            f.extend(activate::run_systemctl(&r.units, true));
            f.extend(activate::run_systemctl(&r.units, false));
        } else {
            print_commands(self.root, &r.units, true);
        }
    }

    fn before_flip(&self, plan: &Plan) {
        if self.live {
            self.failures
                .borrow_mut()
                .extend(activate::run_systemctl(&plan.units, true));
        }
    }

    fn applied(&self, plan: &Plan, applied: &activate::Applied) -> Vec<activate::ActionFailure> {
        warn_prerequisites(plan);
        let mut failures = self.failures.take();
        finish(
            self.root,
            plan,
            applied,
            self.live,
            &mut failures,
            self.term,
        );
        failures
    }

    /// Every check's result on stdout; a failure on stderr with the journal of its units.
    fn gated(&self, to: &health::GenerationRef, report: &health::Report) {
        if !report.checks.is_empty() {
            outln!("health gate of generation {}:", to.generation);
        }
        for (c, o) in &report.checks {
            outln!(
                "  {:<7} {}  {}: {} ({} attempt{}, {})",
                if o.passed { "passed" } else { "failed" },
                c.unit,
                c.describe(),
                o.answer,
                o.attempts,
                if o.attempts == 1 { "" } else { "s" },
                humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(o.elapsed.as_millis()).unwrap_or(u64::MAX)
                ))
            );
        }
        // Why it failed is the command's error (its `caused by:` line), said once at the end,
        // after the way back; here only that it failed, and what the journal said meanwhile.
        if let Some(f) = &report.failure {
            self.term.status(
                "Unhealthy",
                &format!("generation {} failed its health gate", to.generation),
            );
            for unit in f.units() {
                errln!("journalctl -u {unit} --no-pager -n 20:");
                for line in health::journal_tail(&unit, self.started).lines() {
                    errln!("  {line}");
                }
            }
        }
    }
}

/// The unit actions that failed, as the command's error.
fn unit_failures(failures: Vec<activate::ActionFailure>) -> anyhow::Result<()> {
    if !failures.is_empty() {
        let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "the switch is done, but unit actions failed:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// Lists the checks a generation declares when they are not run here (or, for a dry run,
/// whether they would be).
fn print_checks(root: &Root, checks: &[kbuild::health::Check], switched: bool) {
    if checks.is_empty() {
        return;
    }
    let live = activate::systemd_is_live(root);
    let head = match (live, switched) {
        (true, false) => "would run after the unit actions".to_owned(),
        _ => format!(
            "{}: {}",
            if switched { "not run" } else { "would not run" },
            if root.dir() != std::path::Path::new("/") {
                "root is not `/`"
            } else {
                "systemd is not running"
            }
        ),
    };
    outln!("health checks ({head}):");
    for c in checks {
        outln!("  {}  {} ({})", c.unit, c.describe(), c.times());
    }
}

fn finish(
    root: &Root,
    plan: &Plan,
    applied: &activate::Applied,
    live: bool,
    failures: &mut Vec<activate::ActionFailure>,
    term: &Terminal,
) {
    if !applied.changed_anything && plan.from.generation != Some(applied.generation) {
        // Same rootfs under another number: nothing in the root changed but the record.
        term.status(
            "Switched",
            &format!(
                "root `{}` to generation {} (the same files as generation {}: only the record changed)",
                root.dir().display(),
                applied.generation,
                plan.from.generation.map_or("?".to_owned(), |n| n.to_string())
            ),
        );
    } else if !applied.changed_anything {
        term.status(
            "Fresh",
            &format!("generation {} is already active", applied.generation),
        );
    } else {
        out!("{plan}");
        term.status(
            "Switched",
            &format!(
                "root `{}` to generation {}",
                root.dir().display(),
                applied.generation
            ),
        );
        if live {
            failures.extend(activate::run_systemctl(&plan.units, false));
        } else {
            print_units(root, plan, true);
        }
    }
}

/// Warns when the host's `/` is switched to a store inside a home directory or a git
/// checkout: the host's /etc would then hang on links into a place that is easily moved,
/// cleaned or deleted (README, "Production layout").
fn warn_store_place(ctx: &Context, root: &Root) {
    if root.dir().canonicalize().ok().as_deref() != Some(std::path::Path::new("/")) {
        return;
    }
    let store = std::path::absolute(&ctx.store_dir).unwrap_or_else(|_| ctx.store_dir.clone());
    let store = store.canonicalize().unwrap_or(store);
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty() && h != "/")
        .map(std::path::PathBuf::from)
        .map(|h| h.canonicalize().unwrap_or(h));
    let place = if let Some(h) = home.filter(|h| store.starts_with(h)) {
        format!("inside the home directory `{}`", h.display())
    } else if let Some(checkout) = store.ancestors().find(|a| a.join(".git").exists()) {
        format!("inside the git checkout `{}`", checkout.display())
    } else {
        return;
    };
    errln!(
        "warning: `/` is switched to store `{}`, {place}: the host's /etc and /usr/local/bin will link into it, so moving or cleaning it breaks the host; use a store under /var/lib/kbuild/store (`KBUILD_STORE=/var/lib/kbuild/store`, see README \"Production layout\")",
        store.display()
    );
}

/// Warns on stderr about prerequisites that are present but unsafe (a private key group or
/// others can read); the switch goes ahead.
fn warn_prerequisites(plan: &Plan) {
    for w in plan.prerequisites.warnings() {
        errln!("warning: {w}");
    }
}

/// Prints the systemctl commands a switch implies when they are not run.
fn print_units(root: &Root, plan: &Plan, switched: bool) {
    print_commands(root, &plan.units, switched);
}

fn print_commands(root: &Root, units: &[activate::UnitAction], switched: bool) {
    if units.is_empty() {
        return;
    }
    let why = if root.dir() != std::path::Path::new("/") {
        "root is not `/`"
    } else {
        "systemd is not running"
    };
    let verb = if switched { "not run" } else { "would run" };
    outln!("unit actions ({verb}: {why}):");
    let (before, after) = activate::systemctl_commands(units);
    for cmd in before.iter().chain(&after) {
        outln!("  systemctl {}", kbuild::unit_name::shell_line(cmd));
    }
}
