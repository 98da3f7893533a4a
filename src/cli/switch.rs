//! `kbuild switch` and `kbuild rollback`.

use anyhow::Context as _;
use kbuild::activate::{self, Plan, Root, UnitAction};
use kbuild::build::Context;
use kbuild::store::Store;

use super::Terminal;

#[derive(clap::Args, Debug)]
pub struct SwitchArgs {
    /// Generation to activate [default: the newest]
    #[arg(value_name = "GENERATION")]
    generation: Option<u64>,
    /// Print the full plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Move unmanaged files that are in the way into /etc/.kbuild/adopted (restored when
    /// kbuild stops managing the path) instead of refusing
    #[arg(long)]
    adopt: bool,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
}

fn open(ctx: &Context) -> anyhow::Result<Store> {
    Store::open(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))
}

pub fn run_switch(
    ctx: &Context,
    root: &Root,
    args: SwitchArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let store = open(ctx)?;
    if args.dry_run {
        let n = match args.generation {
            Some(n) => n,
            None => activate::newest(&store)?,
        };
        let plan = activate::plan(&store, root, n, args.adopt).context("cannot plan the switch")?;
        print!("{plan}");
        print_units(root, &plan, false);
        return Ok(());
    }
    let live = activate::systemd_is_live(root);
    let stop_failures = std::cell::RefCell::new(Vec::new());
    let before = |plan: &Plan| {
        if live {
            *stop_failures.borrow_mut() = activate::run_systemctl(&plan.units, true);
        }
    };
    let (plan, applied) =
        activate::switch(&store, root, args.generation, args.adopt, term, &before)
            .with_context(|| format!("cannot switch root `{}`", root.dir().display()))?;
    finish(root, &plan, applied, live, stop_failures.into_inner(), term)
}

pub fn run_rollback(
    ctx: &Context,
    root: &Root,
    args: RollbackArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let store = open(ctx)?;
    if args.dry_run {
        let previous = activate::previous(&store, root)?;
        let plan = activate::plan(&store, root, previous, false)?;
        print!("{plan}");
        print_units(root, &plan, false);
        return Ok(());
    }
    let live = activate::systemd_is_live(root);
    let stop_failures = std::cell::RefCell::new(Vec::new());
    let before = |plan: &Plan| {
        if live {
            *stop_failures.borrow_mut() = activate::run_systemctl(&plan.units, true);
        }
    };
    let (plan, applied) = activate::rollback(&store, root, term, &before)
        .with_context(|| format!("cannot roll back root `{}`", root.dir().display()))?;
    finish(root, &plan, applied, live, stop_failures.into_inner(), term)
}

fn finish(
    root: &Root,
    plan: &Plan,
    applied: activate::Applied,
    live: bool,
    mut failures: Vec<String>,
    term: &Terminal,
) -> anyhow::Result<()> {
    if !applied.changed_anything {
        term.status(
            "Fresh",
            &format!("generation {} is already active", applied.generation),
        );
        return Ok(());
    }
    print!("{plan}");
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
        if !failures.is_empty() {
            anyhow::bail!(
                "the switch is done, but unit actions failed:\n  {}",
                failures.join("\n  ")
            );
        }
    } else {
        print_units(root, plan, true);
    }
    Ok(())
}

/// Prints the systemctl commands a switch implies when they are not run.
fn print_units(root: &Root, plan: &Plan, switched: bool) {
    if plan.units.is_empty() {
        return;
    }
    let why = if root.dir() != std::path::Path::new("/") {
        "root is not `/`"
    } else {
        "systemd is not running"
    };
    let verb = if switched { "not run" } else { "would run" };
    println!("unit actions ({verb}: {why}):");
    let actions: Vec<UnitAction> = plan.units.clone();
    for cmd in activate::systemctl_commands(&actions) {
        println!("  systemctl {}", cmd.join(" "));
    }
}
