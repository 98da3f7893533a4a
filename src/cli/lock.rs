//! `kbuild lock` and `kbuild update`.

use anyhow::Context as _;
use kbuild::build::{Context, LockReport};

use super::Terminal;

#[derive(clap::Args, Debug)]
pub struct LockArgs {}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Inputs to re-resolve (default: all)
    #[arg(value_name = "INPUT")]
    inputs: Vec<String>,
}

pub fn run_lock(ctx: &Context, _args: LockArgs, term: &Terminal) -> anyhow::Result<()> {
    let report = kbuild::build::lock(ctx, None, term).context("cannot lock inputs")?;
    show(ctx, &report, term);
    Ok(())
}

pub fn run_update(ctx: &Context, args: UpdateArgs, term: &Terminal) -> anyhow::Result<()> {
    let report =
        kbuild::build::lock(ctx, Some(&args.inputs), term).context("cannot update inputs")?;
    show(ctx, &report, term);
    Ok(())
}

fn show(ctx: &Context, report: &LockReport, term: &Terminal) {
    for (name, (old, new)) in &report.changed {
        match old {
            Some(old) => term.status("Updating", &kbuild::lockfile::update_line(name, old, new)),
            None => term.status("Locking", &format!("{name} {new}")),
        }
    }
    for name in &report.removed {
        term.status("Removing", &format!("{name} (no recipe declares it)"));
    }
    if report.written {
        term.status("Wrote", &format!("`{}`", ctx.lock_path.display()));
    } else {
        term.status(
            "Fresh",
            &format!("`{}` is up to date", ctx.lock_path.display()),
        );
    }
}
