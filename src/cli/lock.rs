//! `kbuild lock` and `kbuild update`.

use anyhow::Context as _;
use kbuild::build::{Context, LockReport};

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild lock
  kbuild lock --override-input kubernetes-server=file:///srv/mirror/kubernetes-server-linux-amd64.tar.gz

Inputs already pinned are left alone (`kbuild update` re-resolves them).")]
pub struct LockArgs {
    /// Read an input from another URL (a local copy, a mirror); its pin is that of the file
    /// actually read, recorded under the recipe's URLs
    #[arg(long = "override-input", value_name = "NAME=URL", value_parser = parse_pair)]
    overrides: Vec<(String, String)>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild update                        # re-resolve every input
  kbuild update kubernetes-server
  kbuild update kubernetes-server --override-input \\
      kubernetes-server=file:///srv/mirror/kubernetes-server-linux-amd64.tar.gz")]
pub struct UpdateArgs {
    /// Inputs to re-resolve (default: all)
    #[arg(value_name = "INPUT")]
    inputs: Vec<String>,
    /// Read an input from another URL (a local copy, a mirror); its pin is that of the file
    /// actually read, recorded under the recipe's URLs
    #[arg(long = "override-input", value_name = "NAME=URL", value_parser = parse_pair)]
    overrides: Vec<(String, String)>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=URL, got `{s}`")),
    }
}

pub fn run_lock(ctx: &Context, args: LockArgs, term: &Terminal) -> anyhow::Result<()> {
    let overrides = args.overrides.into_iter().collect();
    let report = kbuild::build::lock(ctx, None, &overrides, term).context("cannot lock inputs")?;
    show(ctx, &report, term);
    Ok(())
}

pub fn run_update(ctx: &Context, args: UpdateArgs, term: &Terminal) -> anyhow::Result<()> {
    let overrides = args.overrides.into_iter().collect();
    let report = kbuild::build::lock(ctx, Some(&args.inputs), &overrides, term)
        .context("cannot update inputs")?;
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
