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
        if dry == Dry::Json {
            let refusal = refused.as_ref().err().map(|e| super::json::Refusal {
                error: e
                    .chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": "),
                help: super::help_for(e),
            });
            let health = super::json::Health::new(root, &plan.health_checks());
            super::json::print(&super::json::Plan::new(&plan, refusal, health));
        } else {
            warn_prerequisites(&plan);
            out!("{plan}");
            print_units(root, &plan, false);
            // As after the switch: listed when the switch would change something.
            if !plan.is_noop() {
                print_checks(root, &plan.health_checks(), false);
            }
        }
        return refused;
    }
    let live = activate::systemd_is_live(root);
    let failures = std::cell::RefCell::new(Vec::new());
    // An interrupted switch completed (or undone) first still owes its unit actions; they
    // are reported and run at once, whatever the requested switch does next.
    let recovered = |r: &activate::Recovered| {
        let now = match r.generation {
            Some(n) => format!("generation {n}"),
            None => "no generation (unmanaged again)".to_owned(),
        };
        match &r.undone {
            None => term.status(
                "Completed",
                "an interrupted switch; running its unit actions",
            ),
            Some(why) => term.status(
                "Undone",
                &format!(
                    "an interrupted switch, which could not be completed ({why}); the root is back on {now}"
                ),
            ),
        }
        if r.units.is_empty() {
            return;
        }
        if live {
            let mut f = failures.borrow_mut();
            f.extend(activate::run_systemctl(&r.units, true));
            f.extend(activate::run_systemctl(&r.units, false));
        } else {
            print_commands(root, &r.units, true);
        }
    };
    let before = |plan: &Plan| {
        if live {
            failures
                .borrow_mut()
                .extend(activate::run_systemctl(&plan.units, true));
        }
    };
    let session = activate::Session::open(&store, root, term)
        .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?;
    let pending = health::record(root)
        .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?
        .and_then(|r| r.pending);
    if let Some(p) = &pending {
        term.status(
            "Pending",
            &format!(
                "the health gate of generation {} ({}) was interrupted (kbuild stopped while waiting): it is not marked good; {}",
                p.generation,
                p.profile,
                "a switch to it runs the gate again, another switch leaves it"
            ),
        );
    }
    let (plan, applied) = session
        .switch(target, choice, adopt, &recovered, &before)
        .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?;
    warn_prerequisites(&plan);
    let failures_cell = &failures;
    let mut failures = failures.take();
    finish(root, &plan, &applied, live, &mut failures, term);
    let to = health::GenerationRef {
        profile: plan.to.profile_name().to_owned(),
        generation: applied.generation,
    };
    let before_ref = plan.from.generation.map(|n| health::GenerationRef {
        profile: plan.from.profile_name().to_owned(),
        generation: n,
    });
    let checks = plan.health_checks();
    if !live {
        // Nothing was run here, so nothing is known about the generation's health: the
        // checks are listed as not run (after a switch that changed something, as its unit
        // actions are), and the root's health record is left as it is.
        if applied.changed_anything {
            print_checks(root, &checks, true);
        }
        return unit_failures(failures);
    }
    let good = health::last_good(root, before_ref)?;
    if checks.is_empty() {
        if failures.is_empty() {
            // No checks and a switch that succeeded: the generation counts as good.
            health::mark_good(root, &to)?;
        } else {
            health::end_pending(root, good)?;
        }
        return unit_failures(failures);
    }
    // A gate of this generation that a killed kbuild left: run again (its units included).
    let pending = pending.filter(|p| p.generation == to.generation && p.profile == to.profile);
    if !applied.changed_anything && pending.is_none() && good.as_ref() == Some(&to) {
        // Already active and already passed its gate; a gate of another generation left
        // pending is dropped (the root is not on it).
        health::end_pending(root, good)?;
        return unit_failures(failures);
    }
    let acted = health::acted_units(&plan.units, pending.as_ref());
    match gate(root, &to, good.clone(), &acted, &checks, failures, term)? {
        None => Ok(()),
        Some(failure) if no_rollback => {
            health::end_pending(root, good.clone())?;
            Err(gate_error(
                4,
                format!(
                    "generation {} failed its health gate; kept, as --no-rollback asks",
                    to.generation
                ),
                good.map(|g| {
                    format!(
                        "`kbuild switch --profile {} {}` goes back to the last generation that passed its gate",
                        g.profile, g.generation
                    )
                }),
                &failure,
            ))
        }
        Some(failure) => {
            let hooks = Hooks {
                recovered: &recovered,
                before: &before,
                failures: failures_cell,
                live,
                term,
            };
            roll_back(&session, root, &to, good, &failure, &hooks)
        }
    }
}

/// Runs the health gate of `to` (recorded as pending first) and records the outcome: good
/// when it passed. Prints every check's result; on failure the failure, and the journal of
/// the units concerned. `failures`: unit actions that failed (the gate fails at once).
fn gate(
    root: &Root,
    to: &health::GenerationRef,
    good: Option<health::GenerationRef>,
    acted: &[String],
    checks: &[kbuild::health::Check],
    failures: Vec<String>,
    term: &Terminal,
) -> anyhow::Result<Option<health::Failure>> {
    let units = health::gate_units(acted, checks);
    health::begin(root, to, &units, good)?;
    let report = if failures.is_empty() {
        health::gate(&units, checks, &|m| term.status("Waiting", m))
    } else {
        let failed: Vec<String> = units
            .iter()
            .filter(|u| failures.iter().any(|f| f.contains(&format!(" {u}`"))))
            .cloned()
            .collect();
        health::Report {
            failure: Some(health::Failure::Actions {
                messages: failures,
                units: failed,
            }),
            ..Default::default()
        }
    };
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
    match report.failure {
        None => {
            health::mark_good(root, to)?;
            term.status(
                "Healthy",
                &format!(
                    "generation {} passed its health gate ({} check{})",
                    to.generation,
                    checks.len(),
                    if checks.len() == 1 { "" } else { "s" }
                ),
            );
            Ok(None)
        }
        Some(f) => {
            errln!(
                "error: the health gate of generation {} failed: {f}",
                to.generation
            );
            for unit in f.units() {
                errln!("journalctl -u {unit} --no-pager -n 20:");
                for line in health::journal_tail(&unit).lines() {
                    errln!("  {line}");
                }
            }
            Ok(Some(f))
        }
    }
}

/// What a switch of the session calls back (see [`activate::Session::switch`]), and where
/// the unit actions it runs record their failures.
struct Hooks<'a> {
    recovered: &'a dyn Fn(&activate::Recovered),
    before: &'a dyn Fn(&Plan),
    failures: &'a std::cell::RefCell<Vec<String>>,
    /// Whether unit actions and gates run (root `/`, systemd running).
    live: bool,
    term: &'a Terminal,
}

/// After a failed gate: switches back to `good` (the last generation that passed its gate),
/// runs its unit actions and gates it again. Exit code 3 when it passed, 4 otherwise.
fn roll_back(
    session: &activate::Session,
    root: &Root,
    to: &health::GenerationRef,
    good: Option<health::GenerationRef>,
    failure: &health::Failure,
    hooks: &Hooks,
) -> anyhow::Result<()> {
    let (live, term) = (hooks.live, hooks.term);
    let Some(good) = good.filter(|g| g != to) else {
        health::end_pending(root, None)?;
        return Err(gate_error(
            4,
            format!(
                "generation {} failed its health gate, and the root has no other generation that passed one to go back to; it stays on generation {}",
                to.generation, to.generation
            ),
            Some("fix the generation and switch again, or switch to a generation that works (`kbuild generations` lists them)".to_owned()),
            failure,
        ));
    };
    term.status(
        "Rolling back",
        &format!(
            "to generation {} ({}), the last that passed its health gate",
            good.generation, good.profile
        ),
    );
    let switched = session.switch(
        Target::Number(good.generation),
        &activate::Choice::Profile(good.profile.clone()),
        false,
        hooks.recovered,
        hooks.before,
    );
    let (plan, applied) = match switched {
        Ok(s) => s,
        Err(e) => {
            health::end_pending(root, Some(good.clone()))?;
            return Err(gate_error(
                4,
                format!(
                    "generation {} failed its health gate, and the switch back to generation {} failed ({e}); the root stays on generation {}",
                    to.generation, good.generation, to.generation
                ),
                None,
                failure,
            ));
        }
    };
    let mut failures = hooks.failures.take();
    finish(root, &plan, &applied, live, &mut failures, term);
    let checks = plan.health_checks();
    let again = if checks.is_empty() {
        if failures.is_empty() {
            health::mark_good(root, &good)?;
            None
        } else {
            Some(health::Failure::Actions {
                messages: failures,
                units: Vec::new(),
            })
        }
    } else {
        let acted = health::acted_units(&plan.units, None);
        gate(
            root,
            &good,
            Some(good.clone()),
            &acted,
            &checks,
            failures,
            term,
        )?
    };
    match again {
        None => Err(gate_error(
            3,
            format!(
                "generation {} failed its health gate; rolled back to generation {}, which passed its gate again",
                to.generation, good.generation
            ),
            None,
            failure,
        )),
        Some(f) => {
            health::end_pending(root, Some(good.clone()))?;
            Err(gate_error(
                4,
                format!(
                    "generation {} failed its health gate, and generation {} it rolled back to failed its gate too ({f})",
                    to.generation, good.generation
                ),
                None,
                failure,
            ))
        }
    }
}

/// A failed gate as the command's error: its exit code and message, the failure as cause.
fn gate_error(
    code: i32,
    message: String,
    help: Option<String>,
    failure: &health::Failure,
) -> anyhow::Error {
    anyhow::Error::msg(failure.to_string()).context(super::Coded {
        code,
        message,
        help,
    })
}

/// The unit actions that failed, as the command's error.
fn unit_failures(failures: Vec<String>) -> anyhow::Result<()> {
    if !failures.is_empty() {
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
    failures: &mut Vec<String>,
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
