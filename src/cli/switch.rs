//! `kbuild switch` and `kbuild rollback`.

use anyhow::Context as _;
use kbuild::activate::{self, Plan, Root, Target};
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
as \"not run\" (after a switch) or \"would run\" (with --dry-run).")]
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
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild rollback --dry-run          # the plan: files, prerequisites, unit actions
  kbuild rollback                    # back to the generation before the active one, on /
  kbuild rollback --root /srv/m1

Unit actions are run when the root is `/` and systemd is running; otherwise they are printed
as \"not run\" (after a switch) or \"would run\" (with --dry-run).")]
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
        term,
    )
}

fn run(
    ctx: &Context,
    root: &Root,
    target: Target,
    choice: &activate::Choice,
    dry: Dry,
    adopt: bool,
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
            super::json::print(&super::json::Plan::new(&plan, refusal));
        } else {
            warn_prerequisites(&plan);
            out!("{plan}");
            print_units(root, &plan, false);
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
    let (plan, applied) = activate::switch(
        &store, root, target, choice, adopt, term, &recovered, &before,
    )
    .with_context(|| format!("cannot {what} root `{}`", root.dir().display()))?;
    warn_prerequisites(&plan);
    finish(root, &plan, applied, live, failures.into_inner(), term)
}

fn finish(
    root: &Root,
    plan: &Plan,
    applied: activate::Applied,
    live: bool,
    mut failures: Vec<String>,
    term: &Terminal,
) -> anyhow::Result<()> {
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
    if !failures.is_empty() {
        anyhow::bail!(
            "the switch is done, but unit actions failed:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(())
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
